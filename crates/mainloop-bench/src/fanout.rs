//! Event fan-out: 100 SSE clients on `/api/events` while a producer appends events
//! through `Tx::append_event` as fast as it can. Every client must see every event of
//! its user exactly once, in order; the figures are throughput and delivery lag.

use crate::harness::{Server, client};
use crate::sse::{self, json_int};
use crate::stats::{Summary, percentile, round3};
use anyhow::{Context, Result, bail};
use mainloop_domain::UserId;
use mainloop_domain::event::EventName;
use mainloop_engine::{EngineConfig, now};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Barrier, watch};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// SSE clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Seconds the producer appends, per variant.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Also run the variants with one user per client.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub many_users: bool,
    /// Seconds the producer appends in the one-user-per-client variants.
    #[arg(long, default_value_t = 5)]
    pub many_users_seconds: u64,
    /// Events/s of the paced variant (one user, 50 per tx), to see the lag below
    /// saturation; 0 skips it.
    #[arg(long, default_value_t = 1_000)]
    pub paced_rate: u64,
    /// Every 100 ms, time a 500-event log read and a ping (diagnoses stalls).
    #[arg(long)]
    pub probe: bool,
    /// Run only the variants whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// How long clients may take to catch up after the producer stops.
    #[arg(long, default_value_t = 60)]
    pub drain_seconds: u64,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            clients: 100,
            seconds: 10,
            many_users: true,
            many_users_seconds: 5,
            paced_rate: 1_000,
            only: None,
            probe: false,
            drain_seconds: 60,
        }
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientReport {
    received: u64,
    /// Events whose `seq` was not the next expected one, or whose id did not increase.
    out_of_order: u64,
    /// Receipt minus the producer's append call, µs.
    lags_us: Vec<u32>,
    /// Since the producer started.
    last_at: Duration,
    /// Events received in each second since the producer started.
    per_second: Vec<u64>,
    completed: bool,
    error: Option<String>,
}

/// What the producer did.
#[derive(Debug)]
struct Produced {
    per_user: Vec<u64>,
    total: u64,
    elapsed: Duration,
    txs: u64,
    /// Events appended in each second of the run.
    per_second: Vec<u64>,
    /// `Store::begin` (write lock + pool connection) wait per transaction.
    begin: Summary,
    /// Appends and commit per transaction, after `begin`.
    write: Summary,
}

struct Variant {
    name: String,
    batch: usize,
    users: usize,
    seconds: u64,
    /// Events per second to aim at; `None` is as fast as possible.
    rate: Option<u64>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    http: reqwest::Client,
    base: String,
    token: String,
    after: i64,
    epoch: Instant,
    ready: Arc<Barrier>,
    mut expected: watch::Receiver<Option<u64>>,
    start: Arc<tokio::sync::OnceCell<Instant>>,
) -> ClientReport {
    let mut report = ClientReport::default();
    let mut reader = match sse::connect(&http, &base, &token, Some(after)).await {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(format!("{e:#}"));
            ready.wait().await;
            return report;
        }
    };
    ready.wait().await;
    let mut last_id = after;
    let mut next_seq: i64 = 0;
    report.lags_us.reserve(1 << 16);
    loop {
        let target = *expected.borrow();
        if target.is_some_and(|n| report.received >= n) {
            report.completed = true;
            return report;
        }
        tokio::select! {
            changed = expected.changed() => {
                if changed.is_err() {
                    return report;
                }
            }
            ev = reader.next() => match ev {
                Ok(Some(ev)) => {
                    let at = epoch.elapsed();
                    let Some(seq) = json_int(&ev.data, "seq") else { continue };
                    report.received += 1;
                    let id = ev.id.unwrap_or_default();
                    if seq != next_seq || id <= last_id {
                        report.out_of_order += 1;
                    }
                    next_seq = seq + 1;
                    last_id = id;
                    if let Some(t) = json_int(&ev.data, "t").and_then(|t| u64::try_from(t).ok()) {
                        let lag = micros(at).saturating_sub(t);
                        report.lags_us.push(u32::try_from(lag).unwrap_or(u32::MAX));
                    }
                    if let Some(s) = start.get() {
                        report.last_at = at.saturating_sub(s.duration_since(epoch));
                        let sec = usize::try_from(report.last_at.as_secs()).unwrap_or(usize::MAX);
                        if report.per_second.len() <= sec {
                            report.per_second.resize(sec + 1, 0);
                        }
                        report.per_second[sec] += 1;
                    }
                }
                Ok(None) => {
                    report.error = Some("the server closed the event stream".into());
                    return report;
                }
                Err(e) => {
                    report.error = Some(format!("{e:#}"));
                    return report;
                }
            }
        }
    }
}

async fn produce(
    server: &Server,
    users: &[UserId],
    batch: usize,
    duration: Duration,
    rate: Option<u64>,
    epoch: Instant,
) -> Result<Produced> {
    let store = server.engine().store_for_tests();
    let mut per_user = vec![0_u64; users.len()];
    let mut total = 0_u64;
    let mut txs = 0_u64;
    let mut rr = 0_usize;
    let started = Instant::now();
    let mut per_second = Vec::new();
    let (mut begin, mut write) = (Vec::new(), Vec::new());
    while started.elapsed() < duration {
        if let Some(rate) = rate.filter(|r| *r > 0) {
            // Paced: the next transaction is due when `total` events fit the rate.
            let due = started + Duration::from_secs_f64(total as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let sec = usize::try_from(started.elapsed().as_secs()).unwrap_or(usize::MAX);
        if per_second.len() <= sec {
            per_second.resize(sec + 1, 0);
        }
        per_second[sec] += u64::try_from(batch).unwrap_or(0);
        let t_begin = Instant::now();
        let mut tx = store.begin().await?;
        let t_write = Instant::now();
        begin.push(t_write - t_begin);
        for _ in 0..batch {
            let u = rr % users.len();
            rr += 1;
            let payload = json!({
                "seq": per_user[u],
                "t": micros(epoch.elapsed()),
                "line": "compiling mainloop-engine v0.1.0",
            });
            tx.append_event(users[u], EventName::TaskOutput, &payload, now())
                .await?;
            per_user[u] += 1;
            total += 1;
        }
        tx.commit().await?;
        write.push(t_write.elapsed());
        txs += 1;
    }
    Ok(Produced {
        per_user,
        total,
        elapsed: started.elapsed(),
        txs,
        per_second,
        begin: Summary::of(begin),
        write: Summary::of(write),
    })
}

fn percentile_us(sorted: &[u32], p: f64) -> f64 {
    f64::from(percentile(sorted, p)) / 1000.0
}

#[allow(clippy::cast_precision_loss)]
async fn run_variant(args: &Args, v: &Variant) -> Result<Value> {
    let server = Server::start(None, EngineConfig::default()).await?;
    // One user per client, or everyone the owner.
    let mut users = vec![(server.user(), server.token().to_owned())];
    for i in 1..v.users {
        let (u, token) = server
            .engine()
            .create_user(&format!("bench-user-{i}"), false)
            .await?;
        users.push((u.id, token));
    }
    let after = server.engine().latest_event_id().await?.0;
    let http = client()?;
    let epoch = Instant::now();
    let ready = Arc::new(Barrier::new(args.clients + 1));
    let (expected_tx, _) = watch::channel(None::<u64>);
    let start = Arc::new(tokio::sync::OnceCell::new());
    let mut handles = Vec::with_capacity(args.clients);
    let mut client_user = Vec::with_capacity(args.clients);
    let mut expected_senders = Vec::new();
    for c in 0..args.clients {
        let u = c % users.len();
        client_user.push(u);
        let (tx, rx) = watch::channel(None::<u64>);
        expected_senders.push(tx);
        handles.push(tokio::spawn(run_client(
            http.clone(),
            server.base.clone(),
            users[u].1.clone(),
            after,
            epoch,
            Arc::clone(&ready),
            rx,
            Arc::clone(&start),
        )));
    }
    drop(expected_tx);
    ready.wait().await;
    // Let the last connections finish subscribing.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let user_ids: Vec<UserId> = users.iter().map(|(u, _)| *u).collect();
    let t0 = Instant::now();
    start.set(t0).ok();
    let probe = args.probe.then(|| {
        let store = server.engine().store_for_tests().clone();
        let user = user_ids[0];
        let seconds = v.seconds;
        tokio::spawn(async move {
            let mut rows = Vec::new();
            while t0.elapsed() < Duration::from_secs(seconds + 3) {
                let a = Instant::now();
                let ok = store
                    .events_after(user, mainloop_domain::EventId(after), 500)
                    .await
                    .is_ok();
                let b = Instant::now();
                let pinged = store.ping().await.is_ok();
                rows.push((a.duration_since(t0), b - a, b.elapsed(), ok && pinged));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            rows
        })
    });
    let produced = produce(
        &server,
        &user_ids,
        v.batch,
        Duration::from_secs(v.seconds),
        v.rate,
        epoch,
    )
    .await?;
    let producer_done = t0.elapsed();
    if let Some(probe) = probe
        && let Ok(rows) = probe.await
    {
        for (at, read, ping, ok) in rows {
            println!(
                "    probe t={:.1}s events_after(500) {:.1} ms, ping {:.1} ms{}",
                at.as_secs_f64(),
                read.as_secs_f64() * 1000.0,
                ping.as_secs_f64() * 1000.0,
                if ok { "" } else { " (error)" }
            );
        }
    }
    for (c, tx) in expected_senders.iter().enumerate() {
        tx.send_replace(Some(produced.per_user[client_user[c]]));
    }
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_seconds);
    let mut reports = Vec::with_capacity(handles.len());
    for h in handles {
        let abort = h.abort_handle();
        let left = drain_deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, h).await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => bail!("a client task failed: {e}"),
            Err(_) => {
                abort.abort();
                reports.push(ClientReport {
                    error: Some("did not catch up before the drain deadline".into()),
                    ..ClientReport::default()
                });
            }
        }
    }
    let all_done = t0.elapsed();
    server.stop().await;

    let received: u64 = reports.iter().map(|r| r.received).sum();
    let expected_total: u64 = client_user.iter().map(|&u| produced.per_user[u]).sum();
    let lost = expected_total.saturating_sub(received);
    let out_of_order: u64 = reports.iter().map(|r| r.out_of_order).sum();
    let incomplete = reports.iter().filter(|r| !r.completed).count();
    let errors: Vec<String> = reports.iter().filter_map(|r| r.error.clone()).collect();
    let last_delivery = reports
        .iter()
        .map(|r| r.last_at)
        .max()
        .unwrap_or_default()
        .max(producer_done);
    let mut lags: Vec<u32> = Vec::with_capacity(usize::try_from(received).unwrap_or(0));
    for r in &mut reports {
        lags.append(&mut r.lags_us);
    }
    lags.sort_unstable();
    let appended_per_s = produced.total as f64 / produced.elapsed.as_secs_f64();
    let delivered_total_per_s = received as f64 / last_delivery.as_secs_f64();
    let per_client_per_s = delivered_total_per_s / args.clients as f64;
    let drain = last_delivery.saturating_sub(producer_done);
    let (p50, p99, max) = (
        percentile_us(&lags, 50.0),
        percentile_us(&lags, 99.0),
        percentile_us(&lags, 100.0),
    );

    println!(
        "  {}: appended {} events in {} txs over {:.1} s = {:.0} events/s",
        v.name,
        produced.total,
        produced.txs,
        produced.elapsed.as_secs_f64(),
        appended_per_s
    );
    println!(
        "    delivered {received}/{expected_total} (lost {lost}, out of order {out_of_order}, incomplete clients {incomplete}); {delivered_total_per_s:.0} events/s total, {per_client_per_s:.0} per client; caught up {:.2} s after the producer stopped",
        drain.as_secs_f64()
    );
    println!(
        "    delivery lag (append → client): p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
    );
    println!("    appended per second: {:?}", produced.per_second);
    println!(
        "    producer per tx: Store::begin {}; appends+commit {}",
        produced.begin.line(),
        produced.write.line()
    );
    if let Some(first) = reports.first() {
        println!("    client 0 received per second: {:?}", first.per_second);
    }
    if let Some(e) = errors.first() {
        println!("    client errors ({}): {e}", errors.len());
    }
    Ok(json!({
        "variant": v.name,
        "users": v.users,
        "clients": args.clients,
        "events_per_tx": v.batch,
        "target_rate_per_s": v.rate,
        "seconds": v.seconds,
        "appended": produced.total,
        "appended_per_s": round3(appended_per_s),
        "delivered": received,
        "expected": expected_total,
        "lost": lost,
        "out_of_order": out_of_order,
        "incomplete_clients": incomplete,
        "delivered_total_per_s": round3(delivered_total_per_s),
        "delivered_per_client_per_s": round3(per_client_per_s),
        "drain_s": round3(drain.as_secs_f64()),
        "total_s": round3(all_done.as_secs_f64()),
        "lag_p50_ms": round3(p50),
        "lag_p99_ms": round3(p99),
        "lag_max_ms": round3(max),
        "appended_per_second": produced.per_second,
        "producer_begin_ms": produced.begin.json(),
        "producer_append_commit_ms": produced.write.json(),
    }))
}

pub async fn run(args: &Args) -> Result<()> {
    println!(
        "== fanout: {} SSE clients on /api/events, producer appending as fast as it can (SQLite)",
        args.clients
    );
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let mut variants = vec![
        Variant {
            name: "one_user_1_per_tx".into(),
            batch: 1,
            users: 1,
            seconds: args.seconds,
            rate: None,
        },
        Variant {
            name: "one_user_50_per_tx".into(),
            batch: 50,
            users: 1,
            seconds: args.seconds,
            rate: None,
        },
    ];
    if args.paced_rate > 0 {
        variants.push(Variant {
            name: format!("one_user_50_per_tx_paced_{}_per_s", args.paced_rate),
            batch: 50,
            users: 1,
            seconds: args.many_users_seconds,
            rate: Some(args.paced_rate),
        });
    }
    if args.many_users {
        for batch in [1, 50] {
            variants.push(Variant {
                name: format!("{}_users_{batch}_per_tx", args.clients),
                batch,
                users: args.clients,
                seconds: args.many_users_seconds,
                rate: None,
            });
        }
    }
    if let Some(only) = &args.only {
        variants.retain(|v| v.name.contains(only.as_str()));
    }
    let mut results = Vec::new();
    for v in &variants {
        results.push(
            run_variant(args, v)
                .await
                .with_context(|| format!("variant {}", v.name))?,
        );
    }
    let lost: u64 = results
        .iter()
        .filter_map(|r| r.get("lost").and_then(Value::as_u64))
        .sum();
    println!(
        "  lost events over all variants: {lost} {}",
        if lost == 0 { "(ok)" } else { "(MUST BE 0)" }
    );
    println!(
        "{}",
        json!({"bench": "fanout", "lost_total": lost, "variants": results})
    );
    Ok(())
}

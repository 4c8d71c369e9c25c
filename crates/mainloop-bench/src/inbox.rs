//! `GET /api/inbox` latency over a large inbox: 100,000 items of one user, (a) mostly
//! resolved with ~1,000 open, as after months of use, and (b) all open.

use crate::harness::{Server, client};
use crate::stats::{Summary, round3};
use anyhow::{Context, Result, bail};
use mainloop_domain::inbox::InboxKind;
use mainloop_domain::{Timestamp, UserId};
use mainloop_engine::{EngineConfig, now};
use mainloop_store::{NewTask, Store};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Inbox items to seed.
    #[arg(long, default_value_t = 100_000)]
    pub items: usize,
    /// Items left open in the mostly-resolved inbox.
    #[arg(long, default_value_t = 1_000)]
    pub open: usize,
    /// Sequential `GET /api/inbox` requests per scenario.
    #[arg(long, default_value_t = 2_000)]
    pub requests: usize,
    /// Items per seeding transaction.
    #[arg(long, default_value_t = 5_000)]
    pub batch: usize,
    /// Stop a scenario's requests after this many seconds even if fewer were made.
    #[arg(long, default_value_t = 15)]
    pub max_seconds: u64,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            items: 100_000,
            open: 1_000,
            requests: 2_000,
            batch: 5_000,
            max_seconds: 15,
        }
    }
}

/// Items per task in the mostly-resolved inbox (question, plan, review, sometimes failure).
const ITEMS_PER_TASK: usize = 4;
const SPACING_MS: i64 = 30_000;
const WARMUP: usize = 50;

fn ms(i: usize) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

fn kind_for(i: usize) -> InboxKind {
    InboxKind::ALL[i % InboxKind::ALL.len()]
}

/// `items` items in tasks of four; every task but the newest `open / 4` is resolved
/// ten minutes after its last item, so resolution times are spread like real use.
async fn seed_mostly_resolved(store: &Store, user: UserId, args: &Args) -> Result<()> {
    let tasks = args.items / ITEMS_PER_TASK;
    let open_tasks = args.open.div_ceil(ITEMS_PER_TASK);
    let base = now().as_millis() - ms(args.items) * SPACING_MS - 3_600_000;
    let tasks_per_tx = (args.batch / ITEMS_PER_TASK).max(1);
    let mut t = 0;
    while t < tasks {
        let mut tx = store.begin().await?;
        let project = tx
            .upsert_project(user, "/src/app", Timestamp::from_millis(base))
            .await?;
        for task_no in t..(t + tasks_per_tx).min(tasks) {
            let first = task_no * ITEMS_PER_TASK;
            let created = Timestamp::from_millis(base + ms(first) * SPACING_MS);
            let (task, _) = tx
                .insert_task(
                    user,
                    project.id,
                    &NewTask {
                        description: format!("Task {task_no}: fix something in the app"),
                        repo: "/src/app".into(),
                        workplace: mainloop_domain::records::Workplace::Local,
                        skip_plan: false,
                        max_check_rounds: 3,
                        model: None,
                        agent: mainloop_domain::agents::AgentName::default(),
                        origin_key: None,
                        budget_usd: None,
                    },
                    created,
                )
                .await?;
            for j in first..first + ITEMS_PER_TASK {
                let kind = kind_for(j);
                tx.open_inbox_item(
                    user,
                    Some(task.id),
                    kind,
                    &kind.title(&task.description),
                    "Some details the human needs to decide.",
                    Timestamp::from_millis(base + ms(j) * SPACING_MS),
                )
                .await?;
            }
            if task_no < tasks - open_tasks {
                let resolved = base + ms(first + ITEMS_PER_TASK) * SPACING_MS + 600_000;
                tx.resolve_task_inbox(task.id, Timestamp::from_millis(resolved))
                    .await?;
            }
        }
        tx.commit().await?;
        t += tasks_per_tx;
    }
    Ok(())
}

/// `items` open items without tasks.
async fn seed_all_open(store: &Store, user: UserId, args: &Args) -> Result<()> {
    let base = now().as_millis() - ms(args.items) * SPACING_MS;
    let mut i = 0;
    while i < args.items {
        let mut tx = store.begin().await?;
        for j in i..(i + args.batch).min(args.items) {
            let kind = kind_for(j);
            tx.open_inbox_item(
                user,
                None,
                kind,
                &kind.title(&format!("item {j}: something needs a decision")),
                "Some details the human needs to decide.",
                Timestamp::from_millis(base + ms(j) * SPACING_MS),
            )
            .await?;
        }
        tx.commit().await?;
        i += args.batch;
    }
    Ok(())
}

/// How many items a `GET /api/inbox` body lists (top-level array or any array field).
fn count_items(body: &Value) -> usize {
    match body {
        Value::Array(a) => a.len(),
        Value::Object(m) => m.values().filter_map(Value::as_array).map(Vec::len).sum(),
        _ => 0,
    }
}

struct Scenario {
    name: &'static str,
    seed: Duration,
    http: Summary,
    store: Summary,
    count: Summary,
    items: usize,
    bytes: usize,
}

async fn measure(name: &'static str, args: &Args, resolved: bool) -> Result<Scenario> {
    let server = Server::start(None, EngineConfig::default()).await?;
    let store = server.engine().store_for_tests().clone();
    let t = Instant::now();
    if resolved {
        seed_mostly_resolved(&store, server.user(), args).await?;
    } else {
        seed_all_open(&store, server.user(), args).await?;
    }
    let seed = t.elapsed();

    let http = client()?;
    let url = format!("{}/api/inbox", server.base);
    let mut sample = Vec::with_capacity(args.requests);
    let (mut items, mut bytes) = (0, 0);
    let cap = Instant::now() + Duration::from_secs(args.max_seconds);
    for i in 0..args.requests + WARMUP {
        if Instant::now() > cap {
            break;
        }
        let t0 = Instant::now();
        let resp = http.get(&url).bearer_auth(server.token()).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let took = t0.elapsed();
        if !status.is_success() {
            bail!(
                "GET /api/inbox answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        if i == 0 {
            let v: Value = serde_json::from_slice(&body).context("the inbox is not JSON")?;
            items = count_items(&v);
            bytes = body.len();
        }
        if i >= WARMUP {
            sample.push(took);
        }
    }
    // The handler's two queries alone, to separate SQL from HTTP/JSON/auth.
    let (mut store_sample, mut count_sample) = (Vec::new(), Vec::new());
    let cap = Instant::now() + Duration::from_secs(5);
    for i in 0..200 + 10 {
        if Instant::now() > cap {
            break;
        }
        let t0 = Instant::now();
        store.inbox(server.user(), 100, 20).await?;
        let t1 = Instant::now();
        store
            .count_needs_you(server.user(), mainloop_api::NEEDS_YOU_CAP)
            .await?;
        if i >= 10 {
            store_sample.push(t1 - t0);
            count_sample.push(t1.elapsed());
        }
    }
    server.stop().await;
    Ok(Scenario {
        name,
        seed,
        http: Summary::of(sample),
        store: Summary::of(store_sample),
        count: Summary::of(count_sample),
        items,
        bytes,
    })
}

pub async fn run(args: &Args) -> Result<()> {
    println!(
        "== inbox-p99: {} sequential GET /api/inbox over {} items (SQLite)",
        args.requests, args.items
    );
    let mut out = Vec::new();
    for (name, resolved) in [("mostly_resolved", true), ("all_open", false)] {
        let s = measure(name, args, resolved).await?;
        let open = if resolved { args.open } else { args.items };
        println!(
            "  {name} ({open} open): seeded in {:.1} s; response {} items, {} bytes",
            s.seed.as_secs_f64(),
            s.items,
            s.bytes
        );
        println!("    GET /api/inbox:                {}", s.http.line());
        println!("    Store::inbox(100, 20) alone:   {}", s.store.line());
        println!("    Store::count_needs_you alone:  {}", s.count.line());
        println!(
            "    target p99 < 10 ms: {}",
            if s.http.p99 < 10.0 { "met" } else { "MISSED" }
        );
        out.push(s);
    }
    let mut figures = serde_json::Map::new();
    figures.insert("bench".into(), json!("inbox-p99"));
    figures.insert("items".into(), json!(args.items));
    figures.insert("requests".into(), json!(args.requests));
    for s in &out {
        figures.insert(
            s.name.into(),
            json!({
                "seed_s": round3(s.seed.as_secs_f64()),
                "response_items": s.items,
                "response_bytes": s.bytes,
                "http_ms": s.http.json(),
                "store_inbox_query_ms": s.store.json(),
                "store_count_needs_you_ms": s.count.json(),
            }),
        );
    }
    println!("{}", Value::Object(figures));
    Ok(())
}

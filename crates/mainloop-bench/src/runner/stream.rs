//! `runner-stream`: what a runner adds to each transcript event. The same probe agent
//! stream runs in a task placed here and in a task placed on a real `mainloop runner`
//! over loopback, at the same time (on a shared machine, one after the other would
//! compare two moments' loads rather than two paths); each line's latency is from the
//! agent's write (its own stamp) to the stored `task.output` event reaching a
//! subscriber of the engine's hub (so it includes the commit and the fan-out, the same
//! both ways). Then the placements alone, without the worker (`relay.rs`).

use super::probe::now_us;
use super::relay;
use super::world::{Site, World, marks, settled};
use crate::stats::{Summary, round3};
use anyhow::{Result, bail};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The `mainloop` binary whose `runner` runs the remote tasks.
    #[arg(long, default_value = "target/release/mainloop")]
    pub bin: PathBuf,
    /// Lines each task's agent writes.
    #[arg(long, default_value_t = 600)]
    pub events: u64,
    /// Lines a second: paced, so each line is measured on its own, not behind a queue.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Rounds, each a task here and one on the runner streaming at the same time.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Seconds a task may take to reach review.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// One task's stream as the bench saw it.
#[derive(Debug, Default)]
struct Streamed {
    /// Write → event received, per line.
    latencies: Vec<Duration>,
    /// Lines seen, by number (a line seen twice counts once, and is a fault).
    seen: std::collections::BTreeSet<i64>,
    repeated: usize,
    /// Task created → its first line received.
    start: Option<Duration>,
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// Runs a task here and one on the runner at the same time (so that both meet the same
/// load from the rest of the machine), to their ends; what their lines took.
async fn pair(world: &mut World, round: usize, args: &Args) -> Result<[Streamed; 2]> {
    let sites = [Site::Local, Site::Runner];
    let created = now_us();
    let mut ids = Vec::new();
    for site in sites {
        ids.push(world.create(site, round).await?);
    }
    let names: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut got = [Streamed::default(), Streamed::default()];
    let mut done = [false, false];
    while done.contains(&false) {
        let Some(seen) = world.next(deadline).await else {
            let mut why = Vec::new();
            for id in &ids {
                why.push(world.describe(*id).await);
            }
            bail!(
                "round {round}'s tasks did not finish within {} s: {}",
                args.timeout,
                why.join("; ")
            );
        };
        if let Some(i) = seen
            .output_task()
            .and_then(|t| names.iter().position(|n| n == t))
        {
            let got = &mut got[i];
            for mark in marks(&seen.event.payload, "probe") {
                let [line, written] = mark[..] else { continue };
                if !got.seen.insert(line) {
                    got.repeated += 1;
                    continue;
                }
                got.start.get_or_insert(micros(seen.at_us - created));
                got.latencies.push(micros(seen.at_us - written));
            }
        }
        let Some((t, state)) = seen.task_state() else {
            continue;
        };
        let Some(i) = names.iter().position(|n| *n == t) else {
            continue;
        };
        if settled(state) && !done[i] {
            if state != "review" {
                let error = world.error(ids[i]).await.unwrap_or_default();
                bail!("task {round} ({}) ended {state}: {error}", sites[i].name());
            }
            world.check_site(ids[i], sites[i]).await?;
            done[i] = true;
        }
    }
    Ok(got)
}

fn summary_json(s: &Summary) -> serde_json::Value {
    json!({"n": s.n, "p50_ms": round3(s.p50), "p99_ms": round3(s.p99), "max_ms": round3(s.max)})
}

pub async fn run(args: &Args) -> Result<()> {
    println!(
        "== runner-stream: {} lines at {}/s per task; {} rounds of a task here and one on a runner ({}) at the same time",
        args.events,
        args.rate,
        args.rounds,
        args.bin.display()
    );
    let probe = [
        "--events".to_owned(),
        args.events.to_string(),
        "--rate".to_owned(),
        args.rate.to_string(),
    ];
    let load_before = super::load();
    let mut world = World::start(&args.bin, &probe).await?;
    println!(
        "  runner connected {:.0} ms after it started",
        world.runner.connected_after.as_secs_f64() * 1000.0
    );
    let mut local = Vec::new();
    let mut remote = Vec::new();
    let mut starts = (Vec::new(), Vec::new());
    let mut faults = 0;
    let mut result = Ok(());
    for round in 0..args.rounds {
        let streamed = match pair(&mut world, round, args).await {
            Ok(s) => s,
            Err(e) => {
                println!("  runner said: {}", world.runner.log().trim());
                result = Err(e);
                break;
            }
        };
        for (site, s) in [Site::Local, Site::Runner].into_iter().zip(streamed) {
            let missing = usize::try_from(args.events)
                .unwrap_or(usize::MAX)
                .saturating_sub(s.seen.len());
            faults += missing + s.repeated;
            let start = s.start.unwrap_or_default();
            println!(
                "  {} task {round}: {} lines, {missing} missing, {} repeated; first line {:.0} ms after the tasks were created; {}",
                site.name(),
                s.seen.len(),
                s.repeated,
                start.as_secs_f64() * 1000.0,
                Summary::of(s.latencies.clone()).line()
            );
            let (all, start_list) = match site {
                Site::Local => (&mut local, &mut starts.0),
                Site::Runner => (&mut remote, &mut starts.1),
            };
            all.extend(s.latencies);
            start_list.push(start);
        }
    }
    // The placement alone, the same stream read straight from the agent's stdout.
    let (mut relay_local, mut relay_remote) = (Vec::new(), Vec::new());
    if result.is_ok() {
        for _ in 0..args.rounds {
            let (l, r) = tokio::join!(
                relay::latencies(&world, Site::Local, args.events, args.rate),
                relay::latencies(&world, Site::Runner, args.events, args.rate)
            );
            match (l, r) {
                (Ok(l), Ok(r)) => {
                    relay_local.extend(l);
                    relay_remote.extend(r);
                }
                (Err(e), _) | (_, Err(e)) => result = Err(e),
            }
        }
    }
    world.stop().await;
    result?;
    let load_after = super::load();
    println!("  load average (1 min) {load_before:.1} before, {load_after:.1} after");
    let (rl, rr) = (Summary::of(relay_local), Summary::of(relay_remote));
    println!(
        "  the placement alone (agent write → the server reads the line): local p50 {:.2} ms / p99 {:.2} ms; runner p50 {:.2} ms / p99 {:.2} ms",
        rl.p50, rl.p99, rr.p50, rr.p99
    );
    let (l, r) = (Summary::of(local), Summary::of(remote));
    let (sl, sr) = (Summary::of(starts.0), Summary::of(starts.1));
    println!(
        "  run start (task created → first line received): local p50 {:.0} ms, runner p50 {:.0} ms",
        sl.p50, sr.p50
    );
    println!(
        "runner-stream: per event, agent write → stored event: local p50 {:.2} ms / p99 {:.2} ms; via runner p50 {:.2} ms / p99 {:.2} ms; the runner adds {:+.2} ms p50, {:+.2} ms p99 ({} events each, {faults} lost or repeated)",
        l.p50,
        l.p99,
        r.p50,
        r.p99,
        r.p50 - l.p50,
        r.p99 - l.p99,
        l.n.min(r.n)
    );
    println!(
        "{}",
        json!({
            "bench": "runner-stream",
            "events_per_task": args.events,
            "rate": args.rate,
            "rounds": args.rounds,
            "load_before": load_before,
            "load_after": load_after,
            "local": summary_json(&l),
            "runner": summary_json(&r),
            "added_p50_ms": round3(r.p50 - l.p50),
            "added_p99_ms": round3(r.p99 - l.p99),
            "placement_alone": {"local": summary_json(&rl), "runner": summary_json(&rr)},
            "start_local_p50_ms": round3(sl.p50),
            "start_runner_p50_ms": round3(sr.p50),
            "lost_or_repeated": faults,
        })
    );
    if faults > 0 {
        bail!("{faults} lines were lost or repeated");
    }
    Ok(())
}

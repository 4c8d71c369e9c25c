//! 50 concurrent agent runs, each streaming 100 events/s: the worker runtime with the
//! protocol-speaking fake agent (`mainloop-fake-agent`) in real git worktrees, on the
//! in-process server. Measures lost events (transcript and SSE), the server's CPU and
//! memory per running task, the agents' CPU and memory, and `GET /api/tasks` /
//! `GET /api/inbox` latency while they stream.

mod ceiling;
mod claude;
mod clients;
mod config;
mod figures;
mod procfs;
mod report;
mod sampler;
mod stream;
mod transcripts;

pub use config::Args;
pub(crate) use stream::runtime_config;

use anyhow::{Result, bail};
use figures::Figures;
use procfs::Machine;
use serde_json::json;
use std::time::Duration;

pub async fn run(args: &Args) -> Result<()> {
    let n = args.agents;
    let events = args.rate * args.seconds;
    println!(
        "== agents: {n} concurrent fake agents × {} events/s for {} s ({events} events each) through the worker runtime (SQLite, git worktrees)",
        args.rate, args.seconds
    );
    if n == 0 {
        bail!("--agents must be at least 1");
    }
    let fake = args.fake_agent()?;
    let machine = Machine::read();
    let measured = stream::measure(args, &fake, events).await?;
    let figures = Figures::of(&measured, &machine, n, events)?;

    let ceiling = if args.ceiling_seconds > 0 {
        println!(
            "  (measuring the store's write ceiling without agents, {} s per variant…)",
            args.ceiling_seconds
        );
        Some(
            ceiling::write_ceiling(
                n,
                Duration::from_secs(args.ceiling_seconds),
                machine.tick_hz,
            )
            .await?,
        )
    } else {
        None
    };
    let claude = if let Ok(path) = std::fs::canonicalize(&args.claude) {
        match claude::claude_idle_rss(&path).await {
            Ok(v) => Some(v),
            Err(e) => Some(json!({"error": format!("{e:#}")})),
        }
    } else {
        None
    };
    report::print(
        args,
        &machine,
        &measured,
        &figures,
        ceiling.as_ref(),
        claude.as_ref(),
    );
    Ok(())
}

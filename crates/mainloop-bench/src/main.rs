//! `mainloop-bench`: measures the core's performance figures (idle memory, chat latency,
//! inbox latency, event fan-out, concurrent agents, what a runner adds) and prints each as
//! text plus one JSON line.
// A benchmark binary: printing results is its job, and setup failures may abort it.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

mod agents;
mod chat_latency;
mod fanout;
mod github;
mod harness;
mod idle_postgres;
mod idle_rss;
mod inbox;
mod runner;
mod search;
mod sse;
mod stats;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Instant;

/// Measures mainloop's performance figures.
#[derive(Debug, Parser)]
#[command(name = "mainloop-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Resident memory of an idle `mainloop serve`.
    IdleRss(idle_rss::Args),
    /// What an idle `mainloop serve` costs its PostgreSQL: backends, transactions, memory.
    IdlePostgres(idle_postgres::Args),
    /// Chat message → first streamed delta / stored reply, through the HTTP API.
    ChatLatency(chat_latency::Args),
    /// `GET /api/inbox` latency with 100,000 inbox items.
    InboxP99(inbox::Args),
    /// Event fan-out to 100 SSE clients.
    Fanout(fanout::Args),
    /// 50 concurrent fake agents streaming 100 events/s each through the worker runtime.
    Agents(agents::Args),
    /// GitHub API calls of one idle pull request under review.
    GithubIdle(github::Args),
    /// Full-text search over 1,000,000 transcript entries and 100,000 messages.
    Search(search::Args),
    /// Per transcript event: agent write → stored, a task here against one on a runner.
    RunnerStream(runner::stream::Args),
    /// Per question: agent asks → answer on its stdin, here against on a runner.
    RunnerQuestions(runner::questions::Args),
    /// Memory of an idle connected `mainloop runner`, release and debug builds.
    RunnerIdle(runner::idle::Args),
    /// Everything above, with default settings.
    All {
        /// The `mainloop` binary for idle-rss.
        #[arg(long, default_value = "target/release/mainloop")]
        bin: PathBuf,
    },
}

fn main() -> Result<()> {
    // The probe agent the runner benches run (as `claude`, on a runner too): the claude
    // flags after it are its own to skip, so it is not a clap subcommand.
    if std::env::args().nth(1).as_deref() == Some(runner::probe::SUBCOMMAND) {
        return runner::probe::main(std::env::args().skip(2));
    }
    let cli = Cli::parse();
    // Logs only on request (`RUST_LOG=warn`, `RUST_LOG=sqlx=debug`), to stderr.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::IdleRss(args) => idle_rss::run(&args).await,
        Command::IdlePostgres(args) => idle_postgres::run(&args).await,
        Command::ChatLatency(args) => chat_latency::run(&args).await,
        Command::InboxP99(args) => inbox::run(&args).await,
        Command::Fanout(args) => fanout::run(&args).await,
        Command::Agents(args) => agents::run(&args).await,
        Command::GithubIdle(args) => github::run(&args).await,
        Command::Search(args) => search::run(&args).await,
        Command::RunnerStream(args) => runner::stream::run(&args).await,
        Command::RunnerQuestions(args) => runner::questions::run(&args).await,
        Command::RunnerIdle(args) => runner::idle::run(&args).await,
        Command::All { bin } => {
            let started = Instant::now();
            let mut failures = Vec::new();
            if let Err(e) = idle_rss::run(&idle_rss::Args { bin }).await {
                println!("idle-rss failed: {e:#}");
                failures.push("idle-rss");
            }
            // Before the in-process benchmarks grow the heap: it measures this process's RSS.
            if let Err(e) = agents::run(&agents::Args::default()).await {
                println!("agents failed: {e:#}");
                failures.push("agents");
            }
            if let Err(e) = chat_latency::run(&chat_latency::Args::default()).await {
                println!("chat-latency failed: {e:#}");
                failures.push("chat-latency");
            }
            if let Err(e) = inbox::run(&inbox::Args::default()).await {
                println!("inbox-p99 failed: {e:#}");
                failures.push("inbox-p99");
            }
            if let Err(e) = fanout::run(&fanout::Args::default()).await {
                println!("fanout failed: {e:#}");
                failures.push("fanout");
            }
            if let Err(e) = github::run(&github::Args::default()).await {
                println!("github-idle failed: {e:#}");
                failures.push("github-idle");
            }
            println!(
                "\nall benchmarks finished in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            if failures.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("failed: {}", failures.join(", "))
            }
        }
    }
}

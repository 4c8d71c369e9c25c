//! What an idle `mainloop serve` costs its PostgreSQL: backends held, transactions a
//! second, and the backends' memory, sampled once a second after it has settled.

use anyhow::{Context, Result, bail};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `mainloop` binary (build it with `cargo build --release -p mainloop`).
    #[arg(long, default_value = "target/release/mainloop")]
    pub bin: PathBuf,
    /// Seconds to let it settle (its start-up work done) before sampling.
    #[arg(long, default_value_t = 30)]
    pub settle_secs: u64,
    /// Seconds to sample.
    #[arg(long, default_value_t = 20)]
    pub samples: u32,
}

const LISTENING: &str = "mainloop listening on http://";

/// One look at the database's backends (but the one looking) and its transactions.
struct Sample {
    backends: Vec<u32>,
    transactions: i64,
}

async fn sample(conn: &mut PgConnection) -> Result<Sample> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut *conn)
    .await?;
    // Counters are per transaction snapshot: a fresh one each time.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    let transactions: i64 = sqlx::query_scalar(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Sample {
        backends: pids
            .into_iter()
            .filter_map(|p| u32::try_from(p).ok())
            .collect(),
        transactions,
    })
}

/// A process's proportional set size in kB (0 when it is gone or unreadable).
fn pss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub async fn run(args: &Args) -> Result<()> {
    println!(
        "== idle-postgres: {} serve on PostgreSQL, idle",
        args.bin.display()
    );
    if !args.bin.exists() {
        bail!(
            "{} not found; run `cargo build --release -p mainloop` first (or pass --bin)",
            args.bin.display()
        );
    }
    let url = mainloop_testpg::fresh_database_url()
        .await
        .context("starting a throwaway PostgreSQL (needs initdb, see mainloop-testpg)")?;
    let data = tempfile::Builder::new()
        .prefix("mainloop-bench-pg-")
        .tempdir()?;
    let mut child = Command::new(&args.bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MAINLOOP_DATA_DIR", data.path())
        .env("DATABASE_URL", &url)
        .env("MAINLOOP_MODEL__PROVIDER", "none")
        .env_remove("MAINLOOP_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with(LISTENING) {
                return Ok(());
            }
        }
        bail!("the server ended its output without announcing its address")
    })
    .await
    .context("the server did not start listening within 60 s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;

    let mut conn = PgConnection::connect(&url).await?;
    let first = sample(&mut conn).await?;
    let (mut least, mut most, mut pss_max) = (usize::MAX, 0, 0);
    let mut last = first.transactions;
    for _ in 0..args.samples {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = sample(&mut conn).await?;
        least = least.min(s.backends.len());
        most = most.max(s.backends.len());
        pss_max = pss_max.max(s.backends.iter().map(|p| pss_kb(*p)).sum::<u64>());
        last = s.transactions;
    }
    child.kill().await.ok();
    #[allow(clippy::cast_precision_loss)]
    let per_sec = (last - first.transactions) as f64 / f64::from(args.samples.max(1));
    #[allow(clippy::cast_precision_loss)]
    let pss_mib = crate::stats::round3(pss_max as f64 / 1024.0);
    println!(
        "  after {} s idle, over {} s: {least}–{most} backends, {per_sec:.1} transactions/s, \
         backends' PSS at most {pss_mib:.1} MiB",
        args.settle_secs, args.samples
    );
    println!(
        "{}",
        json!({
            "bench": "idle-postgres",
            "backends_min": least,
            "backends_max": most,
            "transactions_per_sec": crate::stats::round3(per_sec),
            "backends_pss_mib_max": pss_mib,
        })
    );
    Ok(())
}

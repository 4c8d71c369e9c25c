//! Resident memory of an idle `mainloop serve` (a separate process, release build).

use crate::harness::client;
use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `mainloop` binary (build it with `cargo build --release -p mainloop`).
    #[arg(long, default_value = "target/release/mainloop")]
    pub bin: PathBuf,
}

const LISTENING: &str = "mainloop listening on http://";
const SETTLE: Duration = Duration::from_secs(3);

/// A `/proc/PID/status` field in kB.
fn status_kb(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unreadable {line}"))
}

fn mib(kb: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let v = kb as f64 / 1024.0;
    crate::stats::round3(v)
}

pub async fn run(args: &Args) -> Result<()> {
    println!("== idle-rss: {} serve, idle", args.bin.display());
    if !args.bin.exists() {
        bail!(
            "{} not found; run `cargo build --release -p mainloop` first (or pass --bin)",
            args.bin.display()
        );
    }
    let data = tempfile::Builder::new()
        .prefix("mainloop-bench-rss-")
        .tempdir()?;
    let started = Instant::now();
    let mut child = Command::new(&args.bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MAINLOOP_DATA_DIR", data.path())
        .env_remove("MAINLOOP_CONFIG")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.bin.display()))?;
    let pid = child.id().context("the server exited at once")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix(LISTENING) {
                return Ok(addr.trim().to_owned());
            }
        }
        bail!("the server ended its output without announcing its address")
    })
    .await
    .context("the server did not announce its address within 30 s")??;
    // Keep draining stdout (the token lines) so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let listening_after = started.elapsed();

    let http = client()?;
    let health = format!("http://{addr}/api/health");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http.get(&health).send().await {
            Ok(r) if r.status().is_success() => break,
            _ if Instant::now() > deadline => bail!("{health} did not answer 200 within 10 s"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let healthy_after = started.elapsed();
    drop(http);
    tokio::time::sleep(SETTLE).await;
    let rss = status_kb(pid, "VmRSS:")?;
    let hwm = status_kb(pid, "VmHWM:")?;
    let threads = status_kb(pid, "Threads:")?;

    let pid_i32 = i32::try_from(pid)?;
    kill(Pid::from_raw(pid_i32), Signal::SIGTERM).context("sending SIGTERM")?;
    let stop_started = Instant::now();
    let exit = match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
        Ok(status) => Some(status?),
        Err(_) => {
            child.kill().await.ok();
            None
        }
    };
    let stop_took = stop_started.elapsed();

    println!(
        "  started listening in {:.0} ms, healthy in {:.0} ms",
        listening_after.as_secs_f64() * 1000.0,
        healthy_after.as_secs_f64() * 1000.0
    );
    println!(
        "  idle RSS after {} s: {:.1} MiB (peak {:.1} MiB, {threads} threads)",
        SETTLE.as_secs(),
        mib(rss),
        mib(hwm)
    );
    match &exit {
        Some(status) => println!(
            "  SIGTERM → exit {status} in {:.0} ms",
            stop_took.as_secs_f64() * 1000.0
        ),
        None => println!("  SIGTERM ignored for 15 s; killed"),
    }
    println!(
        "{}",
        json!({
            "bench": "idle-rss",
            "rss_mib": mib(rss),
            "peak_rss_mib": mib(hwm),
            "threads": threads,
            "listening_ms": listening_after.as_millis(),
            "healthy_ms": healthy_after.as_millis(),
            "sigterm_exit_ok": exit.is_some_and(|s| s.success()),
            "sigterm_stop_ms": stop_took.as_millis(),
        })
    );
    Ok(())
}

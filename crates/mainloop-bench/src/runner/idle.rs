//! `runner-idle`: the memory of a `mainloop runner` connected to the server and idle
//! (no process, no workspace), read from `/proc/PID/smaps_rollup` after it has sat for
//! `--settle` seconds: RSS, and PSS (shared pages split among the processes mapping
//! them, which is what the runner costs the machine when other `mainloop` processes run
//! the same binary). Release and debug builds.

use super::process::RunnerProcess;
use crate::harness::Server;
use crate::stats::round3;
use anyhow::{Context, Result};
use mainloop_engine::EngineConfig;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The release build's `mainloop`.
    #[arg(long, default_value = "target/release/mainloop")]
    pub bin: PathBuf,
    /// The debug build's `mainloop` (skipped when missing).
    #[arg(long, default_value = "target/debug/mainloop")]
    pub debug_bin: PathBuf,
    /// Seconds the runner sits connected before it is read.
    #[arg(long, default_value_t = 5)]
    pub settle: u64,
}

/// The `kB` fields of a `/proc` file of `key: value kB` lines.
fn kib_fields(path: &str) -> Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (key, rest) = l.split_once(':')?;
            let mut words = rest.split_whitespace();
            let value = words.next()?.parse().ok()?;
            // `Threads:` has no unit; kB fields do.
            (words.next().is_none_or(|u| u == "kB")).then(|| (key.to_owned(), value))
        })
        .collect())
}

fn mib(kib: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let v = kib as f64 / 1024.0;
    round3(v)
}

/// One build's figures, or why there are none.
async fn measure(server: &Server, name: &str, bin: &Path, settle: Duration) -> Result<Value> {
    let runner = RunnerProcess::start(bin, server, name, &[]).await?;
    tokio::time::sleep(settle).await;
    let rollup = kib_fields(&format!("/proc/{}/smaps_rollup", runner.pid));
    let status = kib_fields(&format!("/proc/{}/status", runner.pid));
    let connected_ms = runner.connected_after.as_millis();
    let (exit, stop) = runner.stop().await?;
    let (rollup, status) = (rollup?, status?);
    let field = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or_default();
    let uss = field(&rollup, "Private_Clean") + field(&rollup, "Private_Dirty");
    Ok(json!({
        "build": name,
        "rss_mib": mib(field(&rollup, "Rss")),
        "pss_mib": mib(field(&rollup, "Pss")),
        "pss_anon_mib": mib(field(&rollup, "Pss_Anon")),
        "pss_file_mib": mib(field(&rollup, "Pss_File")),
        "uss_mib": mib(uss),
        "peak_rss_mib": mib(field(&status, "VmHWM")),
        "threads": field(&status, "Threads"),
        "connected_ms": connected_ms,
        "sigterm_exit_ok": exit.is_some_and(|s| s.success()),
        "sigterm_stop_ms": stop.as_millis(),
    }))
}

pub async fn run(args: &Args) -> Result<()> {
    println!(
        "== runner-idle: a `mainloop runner` connected and idle for {} s (release {}, debug {})",
        args.settle,
        args.bin.display(),
        args.debug_bin.display()
    );
    let server = Server::start(None, EngineConfig::default()).await?;
    let settle = Duration::from_secs(args.settle);
    let mut figures = Vec::new();
    let mut summary = Vec::new();
    for (name, bin) in [("release", &args.bin), ("debug", &args.debug_bin)] {
        if name == "debug" && !bin.exists() {
            println!(
                "  (no {}: `cargo build -p mainloop --bins` builds it)",
                bin.display()
            );
            continue;
        }
        let f = match measure(&server, name, bin, settle).await {
            Ok(f) => f,
            Err(e) => {
                server.stop().await;
                return Err(e.context(format!("the {name} runner")));
            }
        };
        let m = |k: &str| f[k].as_f64().unwrap_or_default();
        println!(
            "  {name}: RSS {:.1} MiB (peak {:.1}), PSS {:.1} MiB (anonymous {:.1}, file {:.1}), private {:.1} MiB, {} threads; connected in {} ms; SIGTERM → stopped in {} ms",
            m("rss_mib"),
            m("peak_rss_mib"),
            m("pss_mib"),
            m("pss_anon_mib"),
            m("pss_file_mib"),
            m("uss_mib"),
            f["threads"],
            f["connected_ms"],
            f["sigterm_stop_ms"]
        );
        summary.push(format!(
            "{name} RSS {:.1} MiB / PSS {:.1} MiB",
            m("rss_mib"),
            m("pss_mib")
        ));
        figures.push(f);
    }
    server.stop().await;
    println!(
        "runner-idle: an idle connected runner after {} s: {}",
        args.settle,
        summary.join("; ")
    );
    println!("{}", json!({"bench": "runner-idle", "builds": figures}));
    Ok(())
}

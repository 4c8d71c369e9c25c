//! The real `claude` CLI's resident memory when idle in stream-json mode: the per-task
//! cost of a real agent, next to the server's.

use super::procfs::{mib, status_kib};
use crate::stats::round3;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Starts the real `claude` CLI idle in stream-json mode (no network: the API URL is a
/// closed loopback port), sends `initialize`, waits for the answer and 3 s more, and
/// reads its RSS (with any child processes).
pub(super) async fn claude_idle_rss(claude: &Path) -> Result<Value> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let home = tempfile::Builder::new()
        .prefix("mainloop-bench-claude-")
        .tempdir()?;
    let mut child = tokio::process::Command::new(claude)
        .args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-prompt-tool",
            "stdio",
        ])
        .current_dir(home.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("ANTHROPIC_API_KEY", "sk-bench")
        .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", claude.display()))?;
    let pid = child.id().context("claude has no pid")?;
    let started = Instant::now();
    let mut stdin = child.stdin.take().context("no stdin")?;
    let stdout = child.stdout.take().context("no stdout")?;
    stdin
        .write_all(
            b"{\"type\":\"control_request\",\"request_id\":\"init-1\",\"request\":{\"subtype\":\"initialize\"}}\n",
        )
        .await?;
    stdin.flush().await?;
    let mut lines = BufReader::new(stdout).lines();
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("control_response") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid_s = pid.to_string();
    let rss = status_kib(&pid_s, "VmRSS").unwrap_or_default();
    let hwm = status_kib(&pid_s, "VmHWM").unwrap_or_default();
    // Any processes it started (none expected).
    let children: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|c| {
                    c.split_whitespace()
                        .filter_map(|p| status_kib(p, "VmRSS"))
                        .collect::<Vec<_>>()
                })
                .sum()
        })
        .unwrap_or_default();
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    Ok(json!({
        "answered_initialize": answered,
        "ready_ms": round3(ready_ms),
        "rss_mib": round3(mib(rss as f64)),
        "hwm_mib": round3(mib(hwm as f64)),
        "children_rss_mib": round3(mib(children as f64)),
    }))
}

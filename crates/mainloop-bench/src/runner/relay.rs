//! The placement alone, without the worker: the probe agent started through
//! `LocalProcess` and through `RemotePlacement` on the runner (as a program by path, so
//! the same executable), its lines read straight from the placement's stdout. What a
//! line takes from the agent's write to the server's read separates the relay's own
//! cost from what the run does with each event.

use super::probe::{self, now_us};
use super::world::{Site, World, marks};
use anyhow::{Context, Result, bail};
use mainloop_agent::{Launch, LocalProcess, Placed, Placement};
use mainloop_domain::{TaskId, Timestamp};
use mainloop_worker::RemotePlacement;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Where the server pretends the task's worktree is; on the runner it is its own copy.
const REMOTE_ROOT: &str = "/srv/mainloop-bench/worktree";

/// Runs the probe (`events` lines at `rate`) through `site`'s placement; each line's
/// write → read.
pub async fn latencies(world: &World, site: Site, events: u64, rate: u64) -> Result<Vec<Duration>> {
    let exe = std::env::current_exe()?.display().to_string();
    let args = vec![
        probe::SUBCOMMAND.to_owned(),
        "--events".to_owned(),
        events.to_string(),
        "--rate".to_owned(),
        rate.to_string(),
    ];
    let here = tempfile::tempdir()?;
    let (placement, cwd): (Box<dyn Placement>, PathBuf) = match site {
        Site::Local => (Box::new(LocalProcess::new()), here.path().to_owned()),
        Site::Runner => (
            Box::new(RemotePlacement {
                engine: world.server.engine().clone(),
                runner: world.runner.id,
                task: TaskId::new_v7(Timestamp::from_millis(probe::now_us() / 1000)),
                workspace_root: PathBuf::from(REMOTE_ROOT),
                agent: None,
            }),
            PathBuf::from(REMOTE_ROOT),
        ),
    };
    let Placed {
        mut stdin,
        stdout,
        mut process,
        ..
    } = placement
        .spawn(Launch {
            program: exe,
            args,
            cwd,
            env: vec![],
        })
        .context("starting the probe")?;
    // What the adapter would send: `initialize`, then the prompt.
    stdin
        .write_all(
            b"{\"type\":\"control_request\",\"request_id\":\"init\",\"request\":{\"subtype\":\"initialize\"}}\n\
              {\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"go\"}}\n",
        )
        .await?;
    stdin.flush().await?;
    let mut lines = BufReader::new(stdout).lines();
    let mut got = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let at = now_us();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        for mark in marks(&v, "probe") {
            if let [_, written] = mark[..] {
                got.push(Duration::from_micros(
                    u64::try_from(at - written).unwrap_or(0),
                ));
            }
        }
    }
    drop(stdin);
    let code = process.wait().await?;
    if code != 0 {
        bail!("the probe exited {code} ({})", site.name());
    }
    Ok(got)
}

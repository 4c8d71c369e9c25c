//! A real `mainloop runner` process on this machine, connected to the in-process server
//! over loopback: its own home and data directory, and a `claude` on its `PATH` that is
//! this executable (its `probe-agent`), so that an agent run placed there runs the probe.

use crate::harness::Server;
use anyhow::{Context, Result, bail};
use mainloop_domain::RunnerId;
use mainloop_engine::RunnerState;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long a runner may take to connect; a debug build starts slower.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

/// A runner process, killed when dropped if [`RunnerProcess::stop`] was not called.
#[derive(Debug)]
pub struct RunnerProcess {
    pub id: RunnerId,
    pub pid: u32,
    /// When it was started, and when the server first listed it connected.
    pub connected_after: Duration,
    child: Child,
    dir: tempfile::TempDir,
}

impl RunnerProcess {
    /// Starts `bin runner` with a new token of the server's owner named `name`, offering
    /// `claude` with `labels`, and waits until the server lists it connected.
    pub async fn start(bin: &Path, server: &Server, name: &str, labels: &[&str]) -> Result<Self> {
        if !bin.exists() {
            bail!(
                "{} not found; build it with `cargo build --release -p mainloop --bins` (or pass --bin)",
                bin.display()
            );
        }
        let engine = server.engine();
        let (info, token) = engine.create_runner(server.user(), name).await?;
        let dir = tempfile::Builder::new()
            .prefix("mainloop-bench-runner-")
            .tempdir()?;
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir_all(&bin_dir)?;
        std::fs::create_dir_all(dir.path().join("home"))?;
        // The runner runs its own program for an agent, found on its PATH: the probe.
        let exe = std::env::current_exe().context("finding this executable")?;
        std::os::unix::fs::symlink(&exe, bin_dir.join("claude"))?;
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(dir.path().join("runner.log"))?;
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", path)
            .env("HOME", dir.path().join("home"))
            .env("MAINLOOP_RUNNER_TOKEN", token)
            .env("RUST_LOG", "warn")
            .args(["runner", "--server", &server.base, "--slots", "1"])
            .args(["--agent", "claude"])
            // Unconfined, as the bench's local agents are: a sandbox costs at a process's
            // start, not per line or per answer, and would hide a `TMPDIR=/dev/shm` link.
            .args(["--sandbox", "off"])
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        for label in labels {
            cmd.args(["--label", label]);
        }
        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} runner", bin.display()))?;
        let pid = child.id().context("the runner exited at once")?;
        let mut runner = Self {
            id: info.id,
            pid,
            connected_after: Duration::ZERO,
            child,
            dir,
        };
        loop {
            let listed = engine.runners(server.user()).await?;
            if listed
                .iter()
                .any(|r| r.id == runner.id && r.state == RunnerState::Connected)
            {
                break;
            }
            if let Some(status) = runner.child.try_wait()? {
                bail!("the runner exited ({status}): {}", runner.log());
            }
            if started.elapsed() > CONNECT_WITHIN {
                bail!(
                    "the runner did not connect within {} s: {}",
                    CONNECT_WITHIN.as_secs(),
                    runner.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        runner.connected_after = started.elapsed();
        Ok(runner)
    }

    /// What the runner said on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("runner.log")).unwrap_or_default()
    }

    /// SIGTERM (it closes its socket and exits 0), then SIGKILL after 10 s; how it ended
    /// and how long that took.
    pub async fn stop(mut self) -> Result<(Option<ExitStatus>, Duration)> {
        let pid = i32::try_from(self.pid)?;
        let asked = Instant::now();
        kill(Pid::from_raw(pid), Signal::SIGTERM).context("sending SIGTERM to the runner")?;
        let status = match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => Some(status?),
            Err(_) => {
                self.child.kill().await.ok();
                None
            }
        };
        Ok((status, asked.elapsed()))
    }
}

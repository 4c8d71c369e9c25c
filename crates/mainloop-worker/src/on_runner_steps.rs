//! A task's own commands on its runner — its setup in a copy there before the agent's
//! first run in it, its checks after the agent's work — each a `sh -c` process relayed
//! like the agent's, confined there as the agent is, its output's tail kept, killed at
//! its deadline. Where a task holds a run lease its steps follow its agent to the
//! runner: the toolchain the checks need is the one the agent built with.

use crate::Runtime;
use crate::on_runner::{OnRunner, Site};
use mainloop_domain::UserId;
use mainloop_domain::records::Task;
use mainloop_engine::JobError;
use mainloop_git::{CheckOutcome, OutputTail, Worktree};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Where setup has passed in a copy on a runner: in the task's home there, which goes
/// with the copy, so a copy made afresh (on another runner, or after a release) runs
/// setup again.
const SETUP_DONE: &str = ".mainloop-setup-done";

/// The runner was lost while a command ran there.
#[derive(Debug)]
pub(crate) struct Lost(pub String);

impl From<Lost> for JobError {
    fn from(Lost(why): Lost) -> Self {
        Self::retry(format!("the task's runner was lost: {why}"))
    }
}

impl Runtime {
    /// Where a step of `task` (its checks) runs: when the task's agent runs on runners
    /// (it holds a run lease) or runners are launched for it, on the runner placement
    /// gives it, its copy there prepared again from `wt`; else here (`None`). Waits as
    /// an agent run would. A launched runner is the caller's to end
    /// ([`Runtime::end_step_site`]).
    pub(crate) async fn step_site(
        &self,
        user: UserId,
        task: &Task,
        wt: &Worktree,
    ) -> Result<Option<OnRunner>, JobError> {
        let leased = self
            .inner
            .engine
            .run_lease(task.id)
            .await
            .map_err(crate::task::retry)?
            .is_some();
        // With a launcher nothing runs here: the step gets a runner launched for it.
        if !leased && self.launcher().is_none() {
            return Ok(None);
        }
        match self
            .site_for(user, task, wt, &CancellationToken::new())
            .await?
        {
            Some(Site::Runner(on)) => Ok(Some(on)),
            // Placed here: the step needs no slot of this machine's agents.
            Some(Site::Here(_)) | None => Ok(None),
        }
    }

    /// Ends a step's site: a runner launched for the step goes with it.
    pub(crate) async fn end_step_site(&self, task: &Task, on: &OnRunner) {
        if let Some(launched) = &on.launched {
            self.end_launched(task, on.runner, launched.run.as_deref())
                .await;
        }
    }

    /// Whether setup has passed in the task's copy on `on`.
    pub(crate) async fn setup_done_on(
        &self,
        user: UserId,
        task: &Task,
        on: &OnRunner,
    ) -> Result<bool, Lost> {
        let probe = format!("test -e \"$HOME/{SETUP_DONE}\"");
        let outcome = self
            .run_on_runner(user, task, on, &probe, Vec::new(), Duration::from_secs(60))
            .await?;
        Ok(outcome.passed)
    }

    /// Records that setup passed in the task's copy on `on`.
    pub(crate) async fn mark_setup_done_on(
        &self,
        user: UserId,
        task: &Task,
        on: &OnRunner,
    ) -> Result<(), Lost> {
        let mark = format!(": > \"$HOME/{SETUP_DONE}\"");
        let outcome = self
            .run_on_runner(user, task, on, &mark, Vec::new(), Duration::from_secs(60))
            .await?;
        if outcome.passed {
            Ok(())
        } else {
            Err(Lost(format!(
                "could not record that setup passed: {}",
                outcome.output_tail.trim()
            )))
        }
    }

    /// Runs `command` with `sh -c` in the task's copy on `on`, with `env` (the runner
    /// sets `HOME`, `TMPDIR` and `PATH`), stdout and stderr as one stream in the order
    /// written; killed, with everything it started, after `timeout`. `Err` only when
    /// the runner went away: a command that cannot start there is a failed outcome.
    pub(crate) async fn run_on_runner(
        &self,
        user: UserId,
        task: &Task,
        on: &OnRunner,
        command: &str,
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<CheckOutcome, Lost> {
        let started = Instant::now();
        let max = self.inner.config.check_output_bytes;
        // One stream, as a terminal shows it (the relay keeps each stream's order, not
        // their interleaving).
        let mut placed = match on.shell(self, task, format!("exec 2>&1\n{command}"), env) {
            Ok(p) => p,
            Err(e) if !self.is_connected(user, on.runner).await => return Err(Lost(e.to_string())),
            Err(e) => {
                let mut tail = OutputTail::new(max);
                tail.push(format!("mainloop: cannot start `sh -c` on the runner: {e}").as_bytes());
                return Ok(CheckOutcome {
                    passed: false,
                    exit_code: None,
                    timed_out: false,
                    output_tail: tail.finish(),
                    duration: started.elapsed(),
                });
            }
        };
        drop(placed.stdin); // as `Stdio::null()`: the command reads nothing
        let mut tail = OutputTail::new(max);
        let mut stderr = Vec::new();
        let read = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match placed.stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => tail.push(&buf[..n]),
                }
            }
            // Empty but for what the runner's sandbox says before `exec 2>&1`.
            let _ = placed.stderr.read_to_end(&mut stderr).await;
        };
        let timed_out = tokio::time::timeout(timeout, read).await.is_err();
        if timed_out {
            placed.process.kill_tree();
        }
        let exited = placed.process.wait().await;
        tail.push(&stderr);
        let exit_code = match exited {
            Ok(code) => Some(code),
            Err(e) if !self.is_connected(user, on.runner).await => return Err(Lost(e.to_string())),
            Err(e) => {
                tail.push(format!("\nmainloop: {e}").as_bytes());
                None
            }
        };
        Ok(CheckOutcome {
            passed: !timed_out && exit_code == Some(0),
            exit_code: if timed_out { None } else { exit_code },
            timed_out,
            output_tail: tail.finish(),
            duration: started.elapsed(),
        })
    }
}

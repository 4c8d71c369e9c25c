//! Runs launched elsewhere. With a launcher (`workers.runtime = "kubernetes"`) this
//! machine runs no agent itself: a run placed here gets a one-shot runner of its own,
//! launched for it (a Kubernetes Job in the task's namespace) and connecting with the
//! token of the runner bound to the task; the run then goes on as on any runner. When
//! the run ends the runner is released (it exits), the lease ends and the launch is
//! stopped, so a task waiting for the human holds nothing there; what a task's runs
//! need there goes when the task ends, and what outlived its task is collected.

use crate::Runtime;
use crate::confine::REPLACED;
use mainloop_domain::records::Task;
use mainloop_domain::task::TaskState;
use mainloop_domain::{RunnerId, TaskId, UserId};
use mainloop_engine::{JobError, RunnerState};
use mainloop_launch::{LaunchError, Launcher, RunState, TaskLaunch};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often a launch is looked at while it starts.
const POLL: Duration = Duration::from_millis(500);
/// How long a launched runner may take to connect (an image pulled, a node found).
const CONNECT_WITHIN: Duration = Duration::from_secs(600);
/// How often launches whose task has ended are looked for.
pub(crate) const COLLECT_EVERY: Duration = Duration::from_secs(30);

/// What starting a launched run came to.
pub(crate) enum Launched {
    /// Its runner connected: the run goes on there.
    Connected { runner: RunnerId, run: String },
    /// Cancelled while it waited, or the task failed (the launcher refused).
    Stopped,
}

impl Runtime {
    pub(crate) fn launcher(&self) -> Option<&Arc<dyn Launcher>> {
        self.inner.config.launcher.as_ref()
    }

    /// Launches a one-shot runner for this run of `task` and waits until it connects.
    /// A launcher that is unavailable is waited for (the task says so); one that
    /// refuses fails the task; a runner that cannot start or does not connect in time
    /// fails this attempt of the job.
    pub(crate) async fn launch_run(
        &self,
        launcher: &Arc<dyn Launcher>,
        user: UserId,
        task: &Task,
        cancel: &CancellationToken,
    ) -> Result<Launched, JobError> {
        let token = self
            .inner
            .engine
            .task_runner_token(user, task.id)
            .await
            .map_err(crate::task::retry)?;
        let launch = TaskLaunch {
            task: task.id,
            agent: task.agent.clone(),
            runner_token: SecretString::from(token),
            credentials: self.credentials(),
        };
        let run = run_name();
        crate::task::status(self, user, task.id, "launching a runner for this run").await;
        let steps = || async {
            launcher.prepare_task(&launch).await?;
            launcher.start_run(&launch, &run).await
        };
        match self.patiently(user, task, cancel, steps).await {
            Some(Ok(())) => {}
            Some(Err(refused)) => {
                let why = format!("the launcher refused this task's runner: {refused}");
                crate::task::fail(self, task.id, why).await?;
                return Ok(Launched::Stopped);
            }
            None => return Ok(Launched::Stopped),
        }
        let since = Instant::now();
        loop {
            if let Some(runner) = self.bound_runner(user, task.id).await {
                self.forget_waiting(task.id);
                return Ok(Launched::Connected { runner, run });
            }
            let failed = match launcher.run_state(task.id, &run).await {
                Ok(RunState::Failed(why)) => Some(format!("its runner could not start: {why}")),
                Ok(RunState::Succeeded | RunState::Gone) => {
                    Some("its runner ended before it connected".to_owned())
                }
                Ok(RunState::Pending | RunState::Running) => None,
                Err(e) => {
                    self.say_waiting(user, task.id, &format!("waiting for its launcher: {e}"))
                        .await;
                    None
                }
            };
            let late = since.elapsed() > CONNECT_WITHIN;
            if failed.is_some() || late {
                let _ = launcher.stop_run(task.id, &run).await;
                let why = failed.unwrap_or_else(|| {
                    format!(
                        "its runner did not connect within {} s",
                        CONNECT_WITHIN.as_secs()
                    )
                });
                return Err(JobError::retry(why));
            }
            tokio::select! {
                () = cancel.cancelled() => {
                    let _ = launcher.stop_run(task.id, &run).await;
                    return Ok(Launched::Stopped);
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Runs `steps` until they are done or refused, waiting out an unavailable
    /// launcher (the task says so; the steps are idempotent, so they start over);
    /// `None` when cancelled.
    async fn patiently<F, Fut>(
        &self,
        user: UserId,
        task: &Task,
        cancel: &CancellationToken,
        mut steps: F,
    ) -> Option<Result<(), LaunchError>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), LaunchError>>,
    {
        let mut wait = Duration::from_secs(1);
        loop {
            match steps().await {
                Ok(()) => return Some(Ok(())),
                Err(refused @ LaunchError::Refused(_)) => return Some(Err(refused)),
                Err(LaunchError::Unavailable(why)) => {
                    let said = format!("waiting for its launcher: {why}");
                    self.say_waiting(user, task.id, &said).await;
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    /// The connected runner bound to `task`, if any.
    async fn bound_runner(&self, user: UserId, task: TaskId) -> Option<RunnerId> {
        let runners = self.inner.engine.runners(user).await.ok()?;
        runners
            .into_iter()
            .find(|r| r.task_id == Some(task) && r.state == RunnerState::Connected)
            .map(|r| r.id)
    }

    /// The agent's variables a launched runner's processes get: the configured agent
    /// environment but this machine's paths.
    fn credentials(&self) -> Vec<(String, SecretString)> {
        self.inner
            .config
            .agent_env
            .iter()
            .filter(|(k, _)| !REPLACED.contains(&k.as_str()) && k != "PATH")
            .map(|(k, v)| (k.clone(), SecretString::from(v.clone())))
            .collect()
    }

    /// Ends a launched run, whatever became of it: its runner releases the task's copy
    /// and exits, the lease ends (the next run launches anew) and the launch is stopped.
    pub(crate) async fn end_launched(&self, task: &Task, runner: RunnerId, run: Option<&str>) {
        let engine = &self.inner.engine;
        engine.runner_release(runner, task.id);
        if let Ok(Some(lease)) = engine.run_lease(task.id).await
            && lease.runner_id == runner
            && let Err(error) = engine.release_run(task.id, lease.epoch).await
        {
            tracing::warn!(task = %task.id, %error, "could not end a launched run's lease");
        }
        if let Some(launcher) = self.launcher()
            && let Some(run) = run
            && let Err(error) = launcher.stop_run(task.id, run).await
        {
            tracing::warn!(task = %task.id, %run, %error, "could not stop a launched run; the next collection will");
        }
    }

    /// Removes what was launched for tasks that have ended (or are unknown), and
    /// revokes their runners.
    pub(crate) async fn collect_launches(&self) {
        let Some(launcher) = self.launcher() else {
            return;
        };
        let launched = match launcher.launched_tasks().await {
            Ok(tasks) => tasks,
            Err(error) => {
                tracing::warn!(%error, "could not list what was launched for tasks");
                return;
            }
        };
        for id in launched {
            let ended = match self.inner.engine.task_any_user(id).await {
                Ok(Some((user, task))) if !task.state.is_final() => {
                    self.end_stray_pod(user, &task).await;
                    false
                }
                Ok(Some(_) | None) => true,
                Err(_) => continue,
            };
            if !ended {
                continue;
            }
            match launcher.forget_task(id).await {
                Ok(()) => {
                    if let Err(error) = self.inner.engine.revoke_task_runner(id).await {
                        tracing::warn!(task = %id, %error, "could not revoke an ended task's runner");
                    }
                }
                Err(error) => {
                    tracing::warn!(task = %id, %error, "could not remove what was launched for an ended task");
                }
            }
        }
    }
}

impl Runtime {
    /// Ends the launched runner of a task that waits for the human while nothing here
    /// uses it: a preview's pod that outlived its server (killed), or a run's whose end
    /// was not seen. A waiting task holds no pod.
    async fn end_stray_pod(&self, user: UserId, task: &Task) {
        let waiting = matches!(
            task.state,
            TaskState::WaitingAnswers
                | TaskState::WaitingPlanReview
                | TaskState::Review
                | TaskState::Failed
                | TaskState::OnHold
        );
        let used = self
            .inner
            .running
            .lock()
            .map_or(true, |r| r.contains_key(&task.id))
            || self
                .inner
                .previewing
                .lock()
                .map_or(true, |p| p.contains(&task.id));
        if !waiting || used {
            return;
        }
        let engine = &self.inner.engine;
        let Ok(runners) = engine.runners(user).await else {
            return;
        };
        let Some(bound) = runners.iter().find(|r| r.task_id == Some(task.id)) else {
            return;
        };
        let lease = engine.run_lease(task.id).await.ok().flatten();
        let leased = lease.as_ref().is_some_and(|l| l.runner_id == bound.id);
        if !leased && bound.state != RunnerState::Connected {
            return;
        }
        tracing::info!(task = %task.id, "ending the pod of a task that waits for the human");
        // A `--once` runner exits once it has released the task.
        engine.runner_release(bound.id, task.id);
        if let Some(lease) = lease.filter(|_| leased)
            && let Err(error) = engine.release_run(task.id, lease.epoch).await
        {
            tracing::warn!(task = %task.id, %error, "could not end a waiting task's lease");
        }
    }
}

/// A name for one run's launch, unique among the task's runs: `run-` and the time in
/// milliseconds, base 36.
fn run_name() -> String {
    let mut n = mainloop_engine::now().as_millis().unsigned_abs();
    let mut digits = Vec::new();
    loop {
        let d = u8::try_from(n % 36).unwrap_or(0);
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    format!("run-{}", String::from_utf8_lossy(&digits))
}

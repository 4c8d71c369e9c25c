//! Where one agent run happens, and a run on a runner's part of it: the site is chosen
//! at the run's start (the runner holding the task's lease, waited for a while when it
//! dropped — a restart — else this machine when it can take the task, else another of
//! the user's runners that can), the runner's copy of the workspace is prepared from
//! the server's worktree before the agent starts and its work taken back after (and
//! now and then while the agent works, with the agent's session).
//! Everything else about the run — the agent's protocol, questions, plans, transcript,
//! cost — is the same code as a local run's, over a [`RemotePlacement`].

use crate::launched::Launched;
use crate::remote::RemotePlacement;
use crate::{Runtime, slots};
use mainloop_agent::{LocalProcess, Placement};
use mainloop_domain::placement::{self, Place};
use mainloop_domain::records::Task;
use mainloop_domain::{RunnerId, UserId};
use mainloop_engine::{JobError, snapshot_ref};
use mainloop_git::Worktree;
use mainloop_launch::Launcher;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// How often a waiting run looks again.
const POLL: Duration = Duration::from_millis(500);
/// A run on a runner first sends its work and the agent's session back this long after
/// the agent starts: by then the agent holds its input, so a run moved elsewhere resumes
/// a session that has it.
const FIRST_SAVE: Duration = Duration::from_secs(5);
/// Then this often, so that a runner lost mid-run costs little of either...
const SAVE_EVERY: Duration = Duration::from_secs(30);
/// ...but a run spends at most a tenth of its time saving (a large repository's snapshot
/// takes long): the next save waits at least this many times the last one's duration.
const SAVE_SHARE: u32 = 10;

/// Where a run happens.
pub(crate) enum Site {
    /// This machine, holding one of its slots for as long as the run lasts.
    Here(#[allow(dead_code)] OwnedSemaphorePermit),
    Runner(OnRunner),
}

/// What choosing a site came to.
enum Chosen {
    Cancelled,
    Here(OwnedSemaphorePermit),
    Runner(RunnerId),
    /// This machine's turn, taken by a runner `launcher` launches for the run.
    Launch(OwnedSemaphorePermit, Arc<dyn Launcher>),
}

/// A run's launched runner: its launch's name, and this machine's slot, held for as
/// long as the run lasts (launches count against `max_agents`).
#[derive(Debug)]
pub(crate) struct LaunchedRun {
    /// `None` for a launched runner found connected (after a restart of this server):
    /// its launch's name was this server's memory, and its Job ends with it.
    pub run: Option<String>,
    _slot: Option<OwnedSemaphorePermit>,
}

/// A run on a runner: which one, and where the task's copy and home are there.
#[derive(Clone, Debug)]
pub(crate) struct OnRunner {
    pub runner: RunnerId,
    pub work: PathBuf,
    pub home: PathBuf,
    /// One send-back at a time; none after the one that ended the run (the server's
    /// own steps have the worktree then).
    back: Arc<tokio::sync::Mutex<bool>>,
    /// Set when the runner was launched for this run: it is ended with the run.
    pub launched: Option<Arc<LaunchedRun>>,
}

impl OnRunner {
    /// The placement that starts processes in the task's copy there and relays their
    /// streams: the task's agent (the runner's own program for it) or, with `agent`
    /// unset, the program named.
    pub(crate) fn placement(&self, rt: &Runtime, task: &Task) -> RemotePlacement {
        RemotePlacement {
            engine: rt.inner.engine.clone(),
            runner: self.runner,
            task: task.id,
            workspace_root: self.work.clone(),
            agent: Some(task.agent.clone()),
        }
    }

    /// Starts `sh -c script` in the task's copy there, with `env` (no agent: the
    /// task's setup, checks and preview).
    pub(crate) fn shell(
        &self,
        rt: &Runtime,
        task: &Task,
        script: String,
        env: Vec<(String, String)>,
    ) -> Result<mainloop_agent::Placed, mainloop_agent::AgentError> {
        let placement = RemotePlacement {
            agent: None,
            ..self.placement(rt, task)
        };
        placement.spawn(mainloop_agent::Launch {
            program: "sh".to_owned(),
            args: vec!["-c".to_owned(), script],
            cwd: self.work.clone(),
            env,
        })
    }
}

impl Site {
    pub(crate) fn placement(
        &self,
        rt: &Runtime,
        task: &Task,
        here: LocalProcess,
    ) -> Box<dyn Placement> {
        match self {
            Self::Here(_) => Box::new(here),
            Self::Runner(on) => Box::new(on.placement(rt, task)),
        }
    }
}

impl Runtime {
    /// Chooses where this run of `task` happens and, on a runner, prepares its copy of
    /// `wt` there. `None` when the run was cancelled while it waited.
    pub(crate) async fn site_for(
        &self,
        user: UserId,
        task: &Task,
        wt: &Worktree,
        cancel: &CancellationToken,
    ) -> Result<Option<Site>, JobError> {
        loop {
            let (runner, launched) = match self.choose_site(user, task, cancel).await? {
                Chosen::Cancelled => return Ok(None),
                Chosen::Here(permit) => return Ok(Some(Site::Here(permit))),
                Chosen::Runner(runner) => {
                    // The task's own launched runner, still there after a restart: the
                    // run goes on there, and the runner goes with it.
                    let bound = self.inner.engine.runners(user).await.is_ok_and(|all| {
                        all.iter()
                            .any(|r| r.id == runner && r.task_id == Some(task.id))
                    });
                    let launched = bound.then(|| {
                        Arc::new(LaunchedRun {
                            run: None,
                            _slot: None,
                        })
                    });
                    (runner, launched)
                }
                Chosen::Launch(slot, launcher) => {
                    match self.launch_run(&launcher, user, task, cancel).await? {
                        Launched::Stopped => return Ok(None),
                        Launched::Connected { runner, run } => {
                            self.inner
                                .engine
                                .lease_run(task.id, runner)
                                .await
                                .map_err(crate::task::retry)?;
                            let launched = LaunchedRun {
                                run: Some(run),
                                _slot: Some(slot),
                            };
                            (runner, Some(Arc::new(launched)))
                        }
                    }
                }
            };
            match self.on_runner(user, task, wt, runner).await {
                Ok(Site::Runner(mut on)) if launched.is_some() => {
                    on.launched = launched;
                    return Ok(Some(Site::Runner(on)));
                }
                Ok(site) => return Ok(Some(site)),
                // Lost or refused while preparing: that launch is over; another is
                // made for the run.
                Err(_) if let Some(l) = &launched => {
                    self.end_launched(task, runner, l.run.as_deref()).await;
                }
                // Lost while preparing: placed again, not a failed attempt of the job.
                Err(_) if !self.is_connected(user, runner).await => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The site for this run: the runner holding the lease (waited for a while), else
    /// what placement says now, waiting until it says somewhere.
    async fn choose_site(
        &self,
        user: UserId,
        task: &Task,
        cancel: &CancellationToken,
    ) -> Result<Chosen, JobError> {
        let engine = &self.inner.engine;
        let needs = slots::needs(task);
        let lease = engine
            .run_lease(task.id)
            .await
            .map_err(crate::task::retry)?;
        if let Some(lease) = lease {
            let since = Instant::now();
            // The runner holding the lease may be restarting (or the server was): it
            // has the workspace and the agent's session, so it is worth a wait.
            while since.elapsed() < self.inner.config.runner_grace {
                if self.is_connected(user, lease.runner_id).await {
                    return Ok(Chosen::Runner(lease.runner_id));
                }
                self.say_waiting(user, task.id, "waiting for its runner to reconnect")
                    .await;
                tokio::select! {
                    () = cancel.cancelled() => return Ok(Chosen::Cancelled),
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            // Gone for good, it seems: the run goes elsewhere (a later lease fences the
            // old runner off should it come back).
            let _ = engine.release_run(task.id, lease.epoch).await;
        }
        loop {
            let here = self.local_site(0, Default::default(), BTreeSet::new());
            let running = self.running_tasks().await.map_err(crate::task::retry)?;
            let runners = self
                .connected_runners(user, &running)
                .await
                .map_err(crate::task::retry)?;
            match placement::place(&needs, self.warm(task.id), &here, &runners) {
                Place::Local => {
                    self.forget_waiting(task.id);
                    let permit = tokio::select! {
                        () = cancel.cancelled() => return Ok(Chosen::Cancelled),
                        p = self.inner.local_slots.clone().acquire_owned() => p,
                    };
                    let launcher = self.launcher().cloned();
                    return permit
                        .map(|p| match launcher {
                            Some(launcher) => Chosen::Launch(p, launcher),
                            None => Chosen::Here(p),
                        })
                        .map_err(|_| JobError::retry("the worker is shutting down"));
                }
                Place::Runner(runner) => {
                    engine
                        .lease_run(task.id, runner)
                        .await
                        .map_err(crate::task::retry)?;
                    self.remember_runner(task.id, runner);
                    return Ok(Chosen::Runner(runner));
                }
                Place::Wait(why) => self.say_waiting(user, task.id, &why.to_string()).await,
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(Chosen::Cancelled),
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    pub(crate) async fn is_connected(&self, user: UserId, runner: RunnerId) -> bool {
        self.inner.engine.runners(user).await.is_ok_and(|all| {
            all.iter()
                .any(|r| r.id == runner && r.state == mainloop_engine::RunnerState::Connected)
        })
    }

    /// Prepares the runner's copy: the branch, plus what the server's worktree holds
    /// uncommitted (published as the task's snapshot).
    async fn on_runner(
        &self,
        user: UserId,
        task: &Task,
        wt: &Worktree,
        runner: RunnerId,
    ) -> Result<Site, JobError> {
        self.forget_waiting(task.id);
        let refname = snapshot_ref(task.id);
        let published = self
            .inner
            .git
            .publish_snapshot(&wt.path, &refname)
            .await
            .map_err(|e| JobError::retry(format!("could not snapshot the worktree: {e}")))?;
        crate::task::status(self, user, task.id, "preparing the workspace on its runner").await;
        let prepared = self
            .inner
            .engine
            .runner_prepare(
                runner,
                task.id,
                &wt.branch,
                published.as_ref().map(|_| refname.as_str()),
            )
            .await
            .map_err(|e| {
                JobError::retry(format!("the runner could not prepare the workspace: {e}"))
            })?;
        Ok(Site::Runner(OnRunner {
            runner,
            work: PathBuf::from(prepared.work),
            home: PathBuf::from(prepared.home),
            back: Arc::new(tokio::sync::Mutex::new(false)),
            launched: None,
        }))
    }

    /// Runs `run`, a run on the runner `on`, taking its work and the agent's session
    /// back now and then while it lasts. A save under way when the run ends is finished
    /// first, so the last send-back is the one after the run.
    pub(crate) async fn saving<T>(
        &self,
        task: &Task,
        wt: &Worktree,
        on: &OnRunner,
        run: impl Future<Output = T>,
    ) -> T {
        let ended = CancellationToken::new();
        let saves = async {
            let mut wait = FIRST_SAVE;
            loop {
                tokio::select! {
                    () = ended.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                let started = Instant::now();
                self.take_back(task, wt, on).await;
                wait = SAVE_EVERY.max(started.elapsed() * SAVE_SHARE);
            }
        };
        let run = async {
            let out = run.await;
            ended.cancel();
            out
        };
        tokio::join!(run, saves).0
    }

    /// Brings the work of a run on a runner back into the server's worktree (and the
    /// runner keeps the agent's session on the server). When the runner is gone, what it
    /// did since its last send-back is lost; the branch and the server's worktree are as
    /// that send-back left them.
    pub(crate) async fn take_back(&self, task: &Task, wt: &Worktree, on: &OnRunner) -> bool {
        self.send_back(task, wt, on, false).await
    }

    /// The send-back that ends the run: after it, the worktree is the server's steps'
    /// (commit, checks), so no later send-back touches it.
    pub(crate) async fn take_back_last(&self, task: &Task, wt: &Worktree, on: &OnRunner) -> bool {
        self.send_back(task, wt, on, true).await
    }

    async fn send_back(&self, task: &Task, wt: &Worktree, on: &OnRunner, last: bool) -> bool {
        let mut ended = on.back.lock().await;
        if *ended {
            return true;
        }
        let asked = Instant::now();
        let saved = self.inner.engine.runner_save(on.runner, task.id).await;
        if saved.is_ok()
            && let Ok(mut at) = self.inner.saved.lock()
        {
            at.insert(task.id, asked);
        }
        let result = match saved {
            Ok(_) => self
                .inner
                .git
                .take_back(&wt.path, &snapshot_ref(task.id))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                *ended = last;
                true
            }
            Err(error) => {
                tracing::warn!(task = %task.id, runner = %on.runner, %error, "could not take back the work of a run on a runner");
                false
            }
        }
    }

    /// After its runner was lost: unless the agent's session was kept on the server
    /// after the run's input reached it (`delivered`), the session resumed elsewhere has
    /// not seen that input, so it is marked undelivered and the next run sends it again.
    pub(crate) async fn undeliver_unless_saved(&self, task: &Task, delivered: Instant) {
        let kept = self
            .inner
            .saved
            .lock()
            .ok()
            .and_then(|at| at.get(&task.id).copied())
            .is_some_and(|at| at >= delivered);
        if kept {
            return;
        }
        let Ok(Some((_, now))) = self.inner.engine.task_any_user(task.id).await else {
            return;
        };
        if let Some(session) = &now.session_id
            && let Err(error) = self
                .inner
                .engine
                .set_task_session(task.id, session, None)
                .await
        {
            tracing::warn!(task = %task.id, %error, "could not mark the run's input undelivered");
        }
    }
}

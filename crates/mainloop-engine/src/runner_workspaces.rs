//! Task workspaces on runners: `Engine::runner_prepare` and `Engine::runner_save` send a
//! numbered request through the runner's connection and wait for the answer that names
//! it; `Engine::runner_release` tells the runner a task is done there. Each connection
//! keeps its unanswered requests; an answer is taken only for one of them, and only
//! once, and all of them end with the connection.

use crate::runner_processes::{Connection, send_soon};
use crate::{Engine, EngineError, Result};
use mainloop_domain::runner::{
    Prepare, RunnerMessage, Save, ServerMessage, check_prepare, check_save, git_path,
};
use mainloop_domain::{RunnerId, TaskId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a runner may take to prepare a workspace: a first fetch of a large
/// repository is slow.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a runner may take to save a workspace.
pub const SAVE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Ignored answers logged per connection as warnings; the rest only at debug.
const WARNINGS: usize = 20;

/// A task's workspace made ready on a runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedWorkspace {
    /// The work directory on the runner's machine (absolute): the task branch with the
    /// server's uncommitted work on top.
    pub work: String,
    /// The task's `HOME` there (absolute).
    pub home: String,
}

/// A runner's workspace sent back to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedWorkspace {
    /// The snapshot commit, now under the task's snapshot ref in its repository.
    pub commit: String,
    /// Whether the workspace had no uncommitted work.
    pub clean: bool,
}

/// What a request was answered with.
#[derive(Debug)]
enum Answer {
    Prepared { work: String, home: String },
    Saved { commit: String, clean: bool },
    Failed(String),
    Lost(String),
}

#[derive(Default)]
struct State {
    closed: bool,
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    ignored: usize,
}

/// One connection's requests sent and not yet answered.
#[derive(Default)]
pub(crate) struct Requests {
    state: Mutex<State>,
}

impl Requests {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the answer to `request`; `None` once the connection is closed.
    fn register(&self, request: u64) -> Option<oneshot::Receiver<Answer>> {
        let mut state = self.state();
        if state.closed {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        state.waiting.insert(request, tx);
        Some(rx)
    }

    fn forget(&self, request: u64) {
        self.state().waiting.remove(&request);
    }

    /// Hands a runner's answer to the request it names, if that one is still waiting;
    /// anything else (a request never sent, or already answered) is ignored.
    pub(crate) fn deliver(&self, runner: RunnerId, msg: RunnerMessage) {
        let (request, answer) = match msg {
            RunnerMessage::Prepared {
                request,
                workspace,
                home,
            } => (
                request,
                Answer::Prepared {
                    work: workspace,
                    home,
                },
            ),
            RunnerMessage::Saved {
                request,
                commit,
                clean,
            } => (request, Answer::Saved { commit, clean }),
            RunnerMessage::RequestFailed { request, reason } => (request, Answer::Failed(reason)),
            _ => return,
        };
        let mut state = self.state();
        if let Some(waiting) = state.waiting.remove(&request) {
            // A caller that gave up meanwhile no longer listens; nothing to do then.
            let _ = waiting.send(answer);
            return;
        }
        state.ignored += 1;
        if state.ignored <= WARNINGS {
            tracing::warn!(%runner, request, "ignored a runner's answer to a request it was not sent or that was already answered");
        } else {
            tracing::debug!(%runner, request, "ignored a runner's answer");
        }
    }

    /// Ends every waiting request with `lost`; later ones are refused.
    pub(crate) fn close(&self, lost: &str) {
        let mut state = self.state();
        state.closed = true;
        for (_, waiting) in state.waiting.drain() {
            let _ = waiting.send(Answer::Lost(lost.to_owned()));
        }
    }
}

/// Forgets a request when its caller stops waiting (answered, timed out or dropped), so
/// that a late answer is ignored like any other.
struct Forget<'a> {
    requests: &'a Requests,
    request: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.requests.forget(self.request);
    }
}

impl Connection {
    /// Sends `msg` (request number `request`) and waits up to `limit` for its answer.
    async fn ask(
        &self,
        request: u64,
        msg: ServerMessage,
        limit: Duration,
        late: impl FnOnce() -> String,
    ) -> Result<Answer> {
        let rx = self
            .requests
            .register(request)
            .ok_or_else(|| EngineError::RunnerLost(self.lost()))?;
        let _forget = Forget {
            requests: &self.requests,
            request,
        };
        let exchange = async {
            // Waits for room: a request is rare and may queue behind a process's input.
            if self.outbox.send(msg).await.is_err() {
                return Answer::Lost(self.lost());
            }
            rx.await.unwrap_or_else(|_| Answer::Lost(self.lost()))
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(Answer::Lost(m)) => Err(EngineError::RunnerLost(m)),
            Ok(answer) => Ok(answer),
            // Treated like a lost runner: the work goes elsewhere.
            Err(_) => Err(EngineError::RunnerLost(late())),
        }
    }

    async fn prepare(&self, msg: Prepare, limit: Duration) -> Result<PreparedWorkspace> {
        check_prepare(&msg).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let (runner, task) = (self.runner, msg.task);
        let late = || {
            format!(
                "runner {runner} did not prepare task {task}'s workspace within {}",
                minutes(limit)
            )
        };
        match self
            .ask(msg.request, ServerMessage::Prepare(msg), limit, late)
            .await?
        {
            Answer::Prepared { work, home } => Ok(PreparedWorkspace { work, home }),
            Answer::Failed(reason) => Err(EngineError::Invalid(format!(
                "runner {runner} could not prepare task {task}'s workspace: {reason}"
            ))),
            other => Err(wrong(runner, "prepare", &other)),
        }
    }

    async fn save(&self, msg: Save, limit: Duration) -> Result<SavedWorkspace> {
        check_save(&msg).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let (runner, task) = (self.runner, msg.task);
        let late = || {
            format!(
                "runner {runner} did not save task {task}'s workspace within {}",
                minutes(limit)
            )
        };
        match self
            .ask(msg.request, ServerMessage::Save(msg), limit, late)
            .await?
        {
            Answer::Saved { commit, clean } => Ok(SavedWorkspace { commit, clean }),
            Answer::Failed(reason) => Err(EngineError::Invalid(format!(
                "runner {runner} could not save task {task}'s workspace: {reason}"
            ))),
            other => Err(wrong(runner, "save", &other)),
        }
    }
}

/// A runner that answers a request with the other request's answer is broken or
/// hostile; the request fails rather than wait out its time.
fn wrong(runner: RunnerId, asked: &str, answer: &Answer) -> EngineError {
    tracing::warn!(%runner, asked, ?answer, "a runner answered a request with the wrong message");
    EngineError::Invalid(format!(
        "runner {runner} answered {asked} with another request's answer"
    ))
}

fn minutes(d: Duration) -> String {
    match d.as_secs() {
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

impl Engine {
    fn runner_connection(&self, runner: RunnerId) -> Result<std::sync::Arc<Connection>> {
        self.inner
            .runners
            .connection(runner)
            .ok_or_else(|| EngineError::RunnerLost(format!("runner {runner} is not connected")))
    }

    /// Makes `task`'s workspace on `runner` the tip of `branch` with the work of
    /// `snapshot` (a ref in the task's repository, e.g. [`crate::snapshot_ref`], as
    /// published from the server's worktree) uncommitted on top, fetched by the runner
    /// over git from this server. The runner must hold the task's run lease.
    ///
    /// # Errors
    /// [`EngineError::RunnerLost`] when the runner is not connected, its connection
    /// ends first, or it takes longer than [`PREPARE_TIMEOUT`];
    /// [`EngineError::Invalid`] when the runner could not (its reason: no lease, a
    /// missing branch, no `git` there) or a name is out of the protocol's bounds.
    pub async fn runner_prepare(
        &self,
        runner: RunnerId,
        task: TaskId,
        branch: &str,
        snapshot: Option<&str>,
    ) -> Result<PreparedWorkspace> {
        let conn = self.runner_connection(runner)?;
        let msg = Prepare {
            request: self.inner.runners.next_request(),
            task,
            git_path: git_path(task),
            branch: branch.to_owned(),
            snapshot: snapshot.map(str::to_owned),
        };
        conn.prepare(msg, PREPARE_TIMEOUT).await
    }

    /// Has `runner` send `task`'s workspace back as a snapshot commit under
    /// [`crate::snapshot_ref`] in the task's repository (`Git::restore_snapshot` brings
    /// it into the server's worktree).
    ///
    /// # Errors
    /// As [`Engine::runner_prepare`], with [`SAVE_TIMEOUT`].
    pub async fn runner_save(&self, runner: RunnerId, task: TaskId) -> Result<SavedWorkspace> {
        let conn = self.runner_connection(runner)?;
        let msg = Save {
            request: self.inner.runners.next_request(),
            task,
            git_path: git_path(task),
            snapshot_ref: crate::snapshot_ref(task),
        };
        conn.save(msg, SAVE_TIMEOUT).await
    }

    /// Tells `runner` that `task` is done there: it kills the task's processes and
    /// removes its directory. Nothing is answered; a runner that is not connected has
    /// nothing running, and removes nothing.
    pub fn runner_release(&self, runner: RunnerId, task: TaskId) {
        if let Some(conn) = self.inner.runners.connection(runner) {
            send_soon(&conn.outbox, ServerMessage::Release { task });
        }
    }
}

#[cfg(test)]
#[path = "runner_workspaces_tests.rs"]
mod tests;

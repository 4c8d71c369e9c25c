//! The launcher port. With a launcher, this machine runs no agent itself: each agent run
//! of a task gets a one-shot `mainloop runner` launched for it elsewhere (a Kubernetes
//! Job in the task's own namespace), which connects back with a runner token bound to
//! that task, takes the run like any runner, and exits when the run is released. What a
//! task's runs need there (a namespace, its network policy and quota, the credentials)
//! is made before its first run and removed when the task ends; nothing is held while
//! the task waits. Implementations: `mainloop-kube`.

use futures::future::BoxFuture;
use mainloop_domain::TaskId;
use mainloop_domain::agents::AgentName;
use secrecy::SecretString;
use std::fmt;
use std::net::IpAddr;

/// What a launcher needs to know of a task.
pub struct TaskLaunch {
    pub task: TaskId,
    /// The agent its runs start (the runner's own program for it).
    pub agent: AgentName,
    /// The token the task's runners connect with: a runner bound to this task alone.
    pub runner_token: SecretString,
    /// Variables the runner's processes get besides their own (the agent's credentials:
    /// `ANTHROPIC_API_KEY`, `CLAUDE_CODE_OAUTH_TOKEN`, …), kept as secrets there.
    pub credentials: Vec<(String, SecretString)>,
}

// Hand-written: the token and the credentials' values must not reach logs.
impl fmt::Debug for TaskLaunch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.credentials.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("TaskLaunch")
            .field("task", &self.task)
            .field("agent", &self.agent)
            .field("credentials", &names)
            .finish_non_exhaustive()
    }
}

/// Where one run's runner is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Launched, not started yet (an image pulled, a node found).
    Pending,
    Running,
    /// It ended by itself (its run released).
    Succeeded,
    /// It ended otherwise, or cannot start (an image that does not exist): why.
    Failed(String),
    /// Nothing of that run exists.
    Gone,
}

/// A task's own PostgreSQL database, made beside its runs by the platform.
#[derive(Clone, Debug)]
pub enum TaskDatabase {
    /// The platform makes none (CloudNativePG is not installed there): the task's
    /// database comes from the server configured for task databases.
    NotOffered,
    /// Asked for, not ready yet: what it is waiting for.
    Starting(String),
    /// Ready: the URL the task's processes connect with (`DATABASE_URL`).
    Ready(SecretString),
}

/// Why a launcher could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The platform did not answer, or answered that it is busy: try again later;
    /// nothing is lost meanwhile.
    #[error("the launcher's platform is unavailable: {0}")]
    Unavailable(String),
    /// The platform refused (no permission, an invalid object): trying again will not
    /// help until someone changes something.
    #[error("the launcher's platform refused: {0}")]
    Refused(String),
}

/// Launches one-shot runners for a task's runs. Every call is idempotent: asked again
/// after a crash, it finds what it made before.
pub trait Launcher: Send + Sync + fmt::Debug {
    /// Makes what the task's runs need, unless it is there (and brings its credentials
    /// and token up to date).
    fn prepare_task<'a>(&'a self, task: &'a TaskLaunch) -> BoxFuture<'a, Result<(), LaunchError>>;

    /// Launches the runner of one run of the task, named `run` (unique per run of the
    /// task: lowercase letters, digits and `-`, at most 40), unless it exists.
    fn start_run<'a>(
        &'a self,
        task: &'a TaskLaunch,
        run: &'a str,
    ) -> BoxFuture<'a, Result<(), LaunchError>>;

    /// Where the run's runner is.
    fn run_state<'a>(
        &'a self,
        task: TaskId,
        run: &'a str,
    ) -> BoxFuture<'a, Result<RunState, LaunchError>>;

    /// Stops the run's runner and removes what is left of it.
    fn stop_run<'a>(&'a self, task: TaskId, run: &'a str)
    -> BoxFuture<'a, Result<(), LaunchError>>;

    /// The task's own database, asked for unless it was (the task's namespace prepared
    /// first): ready, still starting, or not offered here. It goes with the task.
    fn task_database(&self, task: TaskId) -> BoxFuture<'_, Result<TaskDatabase, LaunchError>>;

    /// Where this server reaches the task's running runner (its pod's address), so a
    /// preview it serves can be proxied to; `None` while none runs.
    fn task_address(&self, task: TaskId) -> BoxFuture<'_, Result<Option<IpAddr>, LaunchError>>;

    /// Removes everything launched for the task (it has ended).
    fn forget_task(&self, task: TaskId) -> BoxFuture<'_, Result<(), LaunchError>>;

    /// The tasks something is launched for: what outlived its task is found here and
    /// forgotten.
    fn launched_tasks(&self) -> BoxFuture<'_, Result<Vec<TaskId>, LaunchError>>;
}

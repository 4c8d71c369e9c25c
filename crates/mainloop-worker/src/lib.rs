//! The local worker runtime. It runs the `task.*` jobs the engine's task transitions
//! enqueue: agent runs (in their own dispatcher pool, whose size is the agent slot
//! count), commits, checks, merges and stops; it grants slots to queued tasks in order,
//! and keeps an agent that waits for the human parked without a slot until an idle
//! timeout, after which the session is resumed from disk when the answer comes.

mod cleanup;
mod confine;
mod convention;
mod delivery;
mod environment;
mod environment_launched;
mod forge;
mod launched;
mod local;
mod on_runner;
mod on_runner_steps;
mod policy;
mod preview;
mod preview_pod;
mod prompts;
mod react;
mod remote;
mod retry;
mod run;
mod slots;
mod steps;
mod task;
mod task_postgres;

pub use cleanup::{Leftovers, SweepReport};
pub use confine::WorkerSandbox;
pub use convention::{Lifecycle, QUESTIONS_TAG};
pub use environment::{DEFAULT_PORT_RANGE, TaskDatabaseUrl};
pub use forge::{ForgeSettings, MARKER as FORGE_MARKER, wake as wake_forge_watch};
pub use policy::{Decision, decide};
pub use preview::{PreviewSettings, Previews};
pub use prompts::{BY_TURN_INSTRUCTIONS, WORKER_INSTRUCTIONS};
pub use remote::RemotePlacement;
pub use slots::{AgentRegistry, unavailable};
pub use task_postgres::{LocalPostgres, TaskDatabaseServer};

use mainloop_agent::{Agent, AgentSession};
use mainloop_domain::TaskId;
use mainloop_domain::agents::{AgentName, Protocol};
use mainloop_domain::records::{Task, TaskDiff};
use mainloop_engine::{
    CommitWork, Engine, ForgeSync, ForgeWatch, Handler, JobContext, JobError, Merge, Pool,
    RunAgent, RunChecks, StopAgent, Workspaces,
};
use mainloop_git::Git;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Runs on runners at once, beyond the local slots: each is a relay, not a process here.
const REMOTE_RUNS: usize = 256;

/// The runtime's settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub max_agents: usize,
    /// This machine's own runner labels (`workers.labels`): tasks requiring labels run
    /// here only when it has them all.
    pub labels: std::collections::BTreeSet<String>,
    /// How long a run whose runner dropped waits for it before it goes elsewhere.
    pub runner_grace: Duration,
    pub idle_timeout: Duration,
    pub inactivity_timeout: Duration,
    /// How many times a run whose agent gave up on a failing model API (overloaded,
    /// rate limited, 5xx) is resumed before the task fails.
    pub api_retries: u32,
    /// The wait before the first such resume; each later one waits twice as long.
    pub api_retry_delay: Duration,
    pub check_timeout: Duration,
    pub check_output_bytes: usize,
    pub model: Option<String>,
    /// The exact environment agents and checks get (`HOME` and the temporary directory
    /// are replaced when sandboxed).
    pub agent_env: Vec<(String, String)>,
    /// Where the agent writes plans (`$HOME/.claude/plans` of the agent's home) when
    /// not sandboxed; a sandboxed agent's are in its private home.
    pub plans_dir: PathBuf,
    /// Runs agents and checks confined (bubblewrap); `None` runs them as the server user.
    pub sandbox: Option<WorkerSandbox>,
    /// Where each task's agent process is recorded, so one left running by a server that
    /// was killed can be found and stopped at the next start.
    pub pid_dir: PathBuf,
    /// The forge (GitHub) tasks on it are mirrored to; `None`: local work only.
    pub forge: Option<ForgeSettings>,
    /// Where task ports (`ports` in `.mainloop.toml`) come from.
    pub port_range: std::ops::RangeInclusive<u16>,
    /// Where task databases (`database = "postgres"`) are made: the configured server
    /// or mainloop's own cluster; `None`: such tasks fail, naming the setting.
    pub task_databases: Option<TaskDatabaseServer>,
    /// How long finished tasks keep their worktree, private home and environment.
    pub retention: mainloop_engine::Retention,
    /// Launches a one-shot runner for each run instead of running agents here
    /// (`workers.runtime = "kubernetes"`); `None`: agents run here or on runners.
    pub launcher: Option<Arc<dyn mainloop_launch::Launcher>>,
}

/// A session waiting for the human, its process kept until the idle timeout.
#[derive(Debug)]
pub(crate) struct Parked {
    pub session: Box<dyn AgentSession>,
    pub request_id: String,
    pub input: serde_json::Value,
    pub waiting_for: Waiting,
    /// The mode the session is in.
    pub mode: mainloop_agent::AgentMode,
    pub since: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waiting {
    Answers,
    PlanReview,
    /// The agent's turn ended with what it handed over; the answer is its next message.
    NextTurn,
}

/// The worker runtime. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub engine: Engine,
    pub agents: AgentRegistry,
    /// One per capped agent: a run holds a permit while its agent works.
    pub agent_permits: HashMap<AgentName, Arc<tokio::sync::Semaphore>>,
    pub git: Git,
    pub config: WorkerConfig,
    pub parked: Mutex<HashMap<TaskId, Parked>>,
    /// Idle parked sessions being stopped: the agent may still be saving its session,
    /// so a resume of the same session waits for the stop to finish.
    pub stopping: Mutex<HashMap<TaskId, tokio::task::JoinHandle<()>>>,
    /// Cancels the live run of a task (cancel, failure elsewhere).
    pub running: Mutex<HashMap<TaskId, CancellationToken>>,
    /// Tasks whose preview runs in a pod launched for it (with a launcher).
    pub previewing: Mutex<std::collections::HashSet<TaskId>>,
    /// One lock per forge task: its mirror bookkeeping is read, changed and written
    /// under it by the sync, watch, commit and checks jobs.
    pub forge_locks: Mutex<HashMap<TaskId, Arc<tokio::sync::Mutex<()>>>>,
    /// The login the forge token acts as, asked once.
    pub forge_login: tokio::sync::OnceCell<String>,
    /// The last walk of the workspaces' directories.
    pub disk: cleanup::DiskCache,
    /// The runner each task last ran on (placement prefers it: its workspace and the
    /// agent's session are there).
    pub warm: Mutex<HashMap<TaskId, mainloop_domain::RunnerId>>,
    /// The reason each waiting task last showed, so it is said once.
    pub waiting: Mutex<HashMap<TaskId, String>>,
    /// When each task's run on a runner was last sent back whole (its work and the
    /// agent's session kept on the server).
    pub saved: Mutex<HashMap<TaskId, Instant>>,
    /// Local agent runs at once (`max_agents`): runs on runners do not take these.
    pub local_slots: Arc<tokio::sync::Semaphore>,
}

impl Runtime {
    /// A runtime whose every task runs `agent` (as `claude`, the default agent).
    #[must_use]
    pub fn new(engine: Engine, agent: Arc<dyn Agent>, git: Git, config: WorkerConfig) -> Self {
        Self::with_agents(
            engine,
            AgentRegistry::new().with(AgentName::default(), agent, Protocol::ClaudeCode, None),
            git,
            config,
        )
    }

    /// A runtime that runs each task's agent from `agents`.
    #[must_use]
    pub fn with_agents(
        engine: Engine,
        agents: AgentRegistry,
        git: Git,
        config: WorkerConfig,
    ) -> Self {
        let local_slots = Arc::new(tokio::sync::Semaphore::new(config.max_agents.max(1)));
        Self {
            inner: Arc::new(Inner {
                engine,
                agent_permits: agents.permits(),
                agents,
                git,
                config,
                parked: Mutex::new(HashMap::new()),
                stopping: Mutex::new(HashMap::new()),
                running: Mutex::new(HashMap::new()),
                previewing: Mutex::default(),
                forge_locks: Mutex::new(HashMap::new()),
                forge_login: tokio::sync::OnceCell::new(),
                disk: cleanup::DiskCache::default(),
                warm: Mutex::new(HashMap::new()),
                waiting: Mutex::new(HashMap::new()),
                saved: Mutex::new(HashMap::new()),
                local_slots,
            }),
        }
    }

    /// Where task databases are made, for starting and stopping mainloop's own cluster
    /// with the server.
    #[must_use]
    pub fn task_database_server(&self) -> Option<&TaskDatabaseServer> {
        self.inner.config.task_databases.as_ref()
    }

    /// The lock serialising a forge task's mirror updates.
    pub(crate) fn forge_lock(&self, id: TaskId) -> Arc<tokio::sync::Mutex<()>> {
        match self.inner.forge_locks.lock() {
            Ok(mut map) => map.entry(id).or_default().clone(),
            // A poisoned map only loses sharing; a fresh lock keeps the job going.
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Registers the `task.*` job handlers and the diff reader with the engine, and
    /// stops the agents a previous server process left running. Call before
    /// [`Engine::start`]: a relaunched run must not meet its predecessor still holding
    /// the session, nor have its own pid record read as an orphan's.
    pub fn install(&self) {
        self.reap_orphans();
        let engine = &self.inner.engine;
        // Local runs are held to `max_agents` by `local_slots`; runs on runners only
        // relay, so the pool leaves room for them too.
        engine.set_pool_size(
            Pool::Agents,
            self.inner.config.max_agents.saturating_add(REMOTE_RUNS),
        );
        engine.set_pool_size(Pool::Effects, 2);
        let handler = Arc::new(self.clone());
        engine.register::<RunAgent>(handler.clone());
        engine.register::<StopAgent>(handler.clone());
        engine.register::<CommitWork>(handler.clone());
        engine.register::<RunChecks>(handler.clone());
        engine.register::<Merge>(handler.clone());
        if self.inner.config.forge.is_some() {
            engine.set_pool_size(Pool::Forge, 2);
            engine.register::<ForgeSync>(handler.clone());
            engine.register::<ForgeWatch>(handler);
        }
        engine.set_workspaces(Arc::new(self.clone()));
    }

    /// Starts the slot scheduler, the idle reaper and the cleanup.
    #[must_use]
    pub fn spawn(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        self.spawn_cleanup(shutdown.clone());
        if self.launcher().is_some() {
            let rt = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(launched::COLLECT_EVERY);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        _ = tick.tick() => rt.collect_launches().await,
                    }
                }
            });
        }
        let rt = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(e) = rt.place_queued().await {
                    tracing::warn!(error = %e, "could not schedule queued tasks");
                }
                rt.reap_idle();
            }
            rt.stop_all();
        })
    }

    /// Stops agents recorded by a previous server process. The data directory is locked
    /// by this process, so every recorded agent still alive is an orphan.
    fn reap_orphans(&self) {
        let Ok(entries) = std::fs::read_dir(&self.inner.config.pid_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let record = std::fs::read_to_string(&path).unwrap_or_default();
            let mut parts = record.split_whitespace().map(str::parse::<u64>);
            if let (Some(Ok(pid)), Some(Ok(start))) = (parts.next(), parts.next()) {
                let pid = u32::try_from(pid).unwrap_or(0);
                if pid != 0 && mainloop_agent::kill_stale_agent(pid, start) {
                    tracing::info!(pid, file = %path.display(), "stopped an agent left running by a previous server");
                }
            }
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Records a task's live agent process (see [`Runtime::reap_orphans`]).
    pub(crate) fn record_pid(&self, task: TaskId, pid: Option<u32>) {
        let Some(pid) = pid else { return };
        let Some(start) = mainloop_agent::process_start_time(pid) else {
            return;
        };
        let dir = &self.inner.config.pid_dir;
        if let Err(e) = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(dir.join(task.to_string()), format!("{pid} {start}\n")))
        {
            tracing::warn!(error = %e, "could not record an agent's pid");
        }
    }

    fn reap_idle(&self) {
        let idle = self.inner.config.idle_timeout;
        let expired: Vec<(TaskId, Parked)> = match self.inner.parked.lock() {
            Ok(mut parked) => {
                let ids: Vec<TaskId> = parked
                    .iter()
                    .filter(|(_, p)| p.since.elapsed() >= idle)
                    .map(|(id, _)| *id)
                    .collect();
                ids.into_iter()
                    .filter_map(|id| parked.remove(&id).map(|p| (id, p)))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        let Ok(mut stopping) = self.inner.stopping.lock() else {
            return;
        };
        stopping.retain(|_, stop| !stop.is_finished());
        for (id, mut p) in expired {
            stopping.insert(
                id,
                tokio::spawn(async move { p.session.stop(run::STOP_GRACE).await }),
            );
        }
    }

    /// Waits until an idle session of `task` that is being stopped has stopped.
    pub(crate) async fn stopped(&self, task: TaskId) {
        let stop = self
            .inner
            .stopping
            .lock()
            .ok()
            .and_then(|mut s| s.remove(&task));
        if let Some(stop) = stop {
            let _ = stop.await;
        }
    }

    fn stop_all(&self) {
        if let Ok(running) = self.inner.running.lock() {
            for token in running.values() {
                token.cancel();
            }
        }
        let parked: Vec<Parked> = self
            .inner
            .parked
            .lock()
            .map(|mut p| p.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        for mut p in parked {
            tokio::spawn(async move { p.session.stop(run::STOP_GRACE).await });
        }
    }

    /// Whether a task has a parked session, or one still stopping after its idle
    /// timeout (for tests and status).
    #[must_use]
    pub fn is_parked(&self, task: TaskId) -> bool {
        self.inner
            .parked
            .lock()
            .is_ok_and(|p| p.contains_key(&task))
            || self
                .inner
                .stopping
                .lock()
                .is_ok_and(|s| s.get(&task).is_some_and(|stop| !stop.is_finished()))
    }

    pub(crate) fn take_parked(&self, task: TaskId) -> Option<Parked> {
        self.inner.parked.lock().ok()?.remove(&task)
    }

    pub(crate) fn park(&self, task: TaskId, parked: Parked) {
        if let Ok(mut p) = self.inner.parked.lock() {
            p.insert(task, parked);
        }
    }
}

impl Workspaces for Runtime {
    fn diff(&self, task: Task) -> futures::future::BoxFuture<'static, Result<TaskDiff, String>> {
        let rt = self.clone();
        Box::pin(async move { steps::diff(&rt, &task).await.map_err(|e| e.to_string()) })
    }

    fn wake_forge(&self, task: TaskId) -> futures::future::BoxFuture<'static, Result<(), String>> {
        let rt = self.clone();
        Box::pin(async move { forge::wake(&rt, task).await.map_err(|e| e.message) })
    }

    fn check_repo(&self, repo: &str) -> Result<(), String> {
        self.inner
            .git
            .validate_repo_name(repo)
            .map_err(|e| e.to_string())
    }

    fn disk_usage(&self) -> futures::future::BoxFuture<'static, mainloop_engine::DiskUsage> {
        let rt = self.clone();
        Box::pin(async move { rt.disk_usage().await })
    }
}

/// Each job kind the runtime handles, and the step that carries it out.
macro_rules! handles {
    ($($job:ty => $step:path),* $(,)?) => {
        $(
            impl Handler<$job> for Runtime {
                fn run(
                    &self,
                    job: $job,
                    ctx: JobContext,
                ) -> futures::future::BoxFuture<'static, Result<(), JobError>> {
                    let rt = self.clone();
                    Box::pin(async move { $step(&rt, &ctx, job).await })
                }
            }
        )*
    };
}

handles!(
    RunAgent => run::run_agent,
    StopAgent => steps::stop,
    CommitWork => steps::commit,
    RunChecks => steps::checks,
    Merge => steps::merge,
    ForgeSync => forge::sync,
    ForgeWatch => forge::watch,
);

//! mainloop's services, between the HTTP API and the store: the main-thread chat (turns
//! run as durable jobs), task transitions with their transactional outbox, the job
//! dispatcher, the per-user event fan-out, and the notification settings with the
//! durable `notify` job each new inbox item enqueues.
//!
//! The engine never picks adapters itself: the binary passes in the store and the model
//! provider, and registers job handlers (agents, forges) from other crates.

mod agent_state;
mod agents;
mod auth;
mod chat;
mod chat_session;
mod cleanup;
mod digests;
mod dispatcher;
mod environment;
mod error;
mod holds;
mod hub;
mod jobs;
mod leases;
mod main_thread;
mod notes;
mod notifications;
mod previews;
mod reads;
mod runner_processes;
mod runner_workspaces;
mod runners;
mod runtime;
mod search;
mod spending;
mod task_labels;
mod tasks;
mod tools;

pub use agent_state::{AgentStateUpload, MAX_RUNNER_STATE};
pub use auth::{API_TOKEN_PREFIX, hash_token};
pub use chat::SYSTEM_PROMPT;
pub use cleanup::{DiskUsage, Retention, SystemReport, due_for_cleanup};
pub use digests::MAX_DIGESTS;
use dispatcher::JobHandler;
pub use dispatcher::{JobContext, JobError};
pub use environment::{TaskDatabaseInfo, TaskEnv, task_database_name};
pub use error::{EngineError, Result};
pub use holds::{UNKNOWN_RESET_WAIT_MS, held_agents, hold_over, wake_time};
pub use jobs::{
    BackgroundJob, ChatTurn, CommitWork, ForgeSync, ForgeWatch, Handler, MakeDigest, Merge, Pool,
    RunAgent, RunChecks, Step, StopAgent, TaskJob, WakeTask, enqueue,
};
pub use leases::{LeaseRow, RepoAccess, repo_access, snapshot_ref};
pub use main_thread::{HELP as MAIN_THREAD_HELP, MainChoice, MainStatus};
pub use mainloop_store::{
    NotificationSettings, PlanRevision, PushSubscription, TaskCounts, TaskFootprint, TaskForge,
    VapidKeys,
};
pub use notifications::{
    Notification, NotificationKind, NotificationOverview, RegisterPush, validate_ntfy_url,
    validate_push_endpoint, validate_push_subscription,
};
pub use previews::{
    PREVIEW_CODE_TTL, PREVIEW_COOKIE_TTL, PreviewHost, PreviewLink, PreviewPort, PreviewTarget,
    preview_host_label, preview_label,
};
pub use runner_processes::{
    MAX_UNREAD_OUTPUT, OUTBOX_CAPACITY, RemoteHandle, RemoteOutput, RemoteProcess, RemoteStdin,
};
pub use runner_workspaces::{PREPARE_TIMEOUT, PreparedWorkspace, SAVE_TIMEOUT, SavedWorkspace};
pub use runners::{
    Ending, LAST_SEEN_WRITE_EVERY, RUNNER_TOKEN_PREFIX, RunnerInfo, RunnerLease, RunnerRow,
    RunnerState, last_seen_due, runner_state,
};
pub use runtime::{ForgeSummary, Workspaces};
pub use search::{DEFAULT_SEARCH_LIMIT, parse_search};
pub use spending::{Gate, MAX_USAGE_DAYS};
pub use tasks::{CreateTask, PlanAction, ReviewAction};
pub use tools::tool_specs;

use dispatcher::Dispatcher;
use hub::Hub;
use mainloop_domain::Timestamp;
use mainloop_domain::agents::AgentCatalog;
use mainloop_model::ModelProvider;
use mainloop_store::Store;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The engine's settings (a slice of the binary's config).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub max_check_rounds: u32,
    /// Context budget for the main thread, in estimated tokens.
    pub context_budget_tokens: usize,
    /// Tokens of notes and decisions every main-thread context carries.
    pub notes_budget_tokens: usize,
    /// Tokens of day, week and month digests every main-thread context carries.
    pub memory_budget_tokens: usize,
    /// The zone whose midnights end users' days, unless they set their own.
    pub time_zone: mainloop_domain::digest::Zone,
    /// The time the memory reads: when spans end, and which digests a context carries.
    pub clock: Clock,
    pub max_tokens: u32,
    pub max_chat_chars: usize,
    pub session_ttl: Duration,
    pub dispatcher_concurrency: usize,
    pub lease: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Reclaim every running job at start (single-process deployments).
    pub reclaim_all_at_start: bool,
    /// Tool-call rounds one chat turn may take before it is cut off.
    pub max_tool_rounds: usize,
    /// The forge's web host (`github.com`) when a forge is configured: tasks whose
    /// repository names a repository there are mirrored to it.
    pub forge_host: Option<String>,
    /// CI rounds for forge tasks (their checks are the forge's CI).
    pub forge_max_ci_rounds: u32,
    /// Verifies forge webhook deliveries; `None` turns the webhook endpoint off.
    pub forge_webhook_secret: Option<WebhookSecret>,
    /// The configured coding agents and the default one.
    pub agents: AgentCatalog,
    /// Where the agent state runners keep here lives (`<data dir>/runner-state`);
    /// `None` keeps none, and a runner's attempt to store one fails.
    pub runner_state_dir: Option<std::path::PathBuf>,
    /// The largest agent state a runner may keep here ([`MAX_RUNNER_STATE`]).
    pub runner_state_max_bytes: u64,
}

/// A source of the current time: the system's, or one a test moves through simulated
/// weeks in seconds.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    #[must_use]
    pub fn system() -> Self {
        Self(Arc::new(now))
    }

    /// A clock that reads `f`.
    pub fn from_fn(f: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    #[must_use]
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// The shared secret of forge webhooks. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(pub String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_check_rounds: 3,
            context_budget_tokens: 60_000,
            notes_budget_tokens: 2000,
            memory_budget_tokens: 3000,
            time_zone: mainloop_domain::digest::Zone::utc(),
            clock: Clock::system(),
            max_tokens: 4096,
            max_chat_chars: 100_000,
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            dispatcher_concurrency: 4,
            lease: Duration::from_secs(60),
            max_attempts: 8,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            reclaim_all_at_start: true,
            max_tool_rounds: 16,
            forge_host: None,
            forge_max_ci_rounds: 5,
            forge_webhook_secret: None,
            agents: AgentCatalog::default(),
            runner_state_dir: None,
            runner_state_max_bytes: MAX_RUNNER_STATE,
        }
    }
}

/// The current wall-clock time.
#[must_use]
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    Timestamp::from_millis(ms)
}

/// The service layer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    model: Option<Arc<dyn ModelProvider>>,
    config: EngineConfig,
    hub: Hub,
    /// Wakes idle dispatcher workers when a job is enqueued in this process.
    /// Per pool: wakes one idle worker when a job may be ready (waking every worker for
    /// every job costs a claim transaction each).
    jobs_ready: std::sync::RwLock<HashMap<String, Arc<Notify>>>,
    handlers: std::sync::RwLock<HashMap<String, Registered>>,
    /// Pool → number of dispatcher workers. Long jobs (agent runs) get a pool of their
    /// own so they never starve chat turns.
    pools: std::sync::RwLock<BTreeMap<String, usize>>,
    workspaces: std::sync::RwLock<Option<Arc<dyn Workspaces>>>,
    /// The forge the projects view reads, with its web host.
    forge: std::sync::RwLock<Option<(Arc<dyn mainloop_forge::Forge>, String)>>,
    /// The preview runner, its domain, and who may enter which preview.
    previews: previews::Previews,
    main: main_thread::MainThread,
    /// What this server found of each configured agent's program, asked once.
    agent_probes: tokio::sync::OnceCell<Vec<agents::Probe>>,
    runners: runners::Registry,
}

/// A job kind's handler and the dispatcher pool that runs it.
type Registered = (Arc<dyn JobHandler>, String);

/// How long streamed chat deltas stay in the event log.
const DELTA_RETENTION_MS: i64 = 24 * 3600 * 1000;

impl Engine {
    #[must_use]
    pub fn new(store: Store, model: Option<Arc<dyn ModelProvider>>, config: EngineConfig) -> Self {
        let default_pool = config.dispatcher_concurrency.max(1);
        let engine = Self {
            inner: Arc::new(Inner {
                hub: Hub::new(store.clone()),
                store,
                model,
                config,
                jobs_ready: std::sync::RwLock::new(HashMap::new()),
                handlers: std::sync::RwLock::new(HashMap::new()),
                pools: std::sync::RwLock::new(BTreeMap::from([(
                    Pool::Default.name().to_owned(),
                    default_pool,
                )])),
                workspaces: std::sync::RwLock::new(None),
                forge: std::sync::RwLock::new(None),
                previews: previews::Previews::default(),
                main: main_thread::MainThread::default(),
                agent_probes: tokio::sync::OnceCell::new(),
                runners: runners::Registry::default(),
            }),
        };
        engine.register::<ChatTurn>(Arc::new(chat::ChatTurnHandler));
        engine.register::<WakeTask>(Arc::new(holds::WakeHandler));
        engine.register::<MakeDigest>(Arc::new(digests::DigestHandler));
        engine
    }

    /// The store: the engine's alone (other crates call the engine's methods).
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The store itself, for tests and benchmarks that set up or inspect what no engine
    /// method exposes. Only with the `test-support` feature, which no server crate enables.
    #[cfg(feature = "test-support")]
    #[must_use]
    pub fn store_for_tests(&self) -> &Store {
        &self.inner.store
    }

    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The configured model provider, if any.
    #[must_use]
    pub fn model(&self) -> Option<&Arc<dyn ModelProvider>> {
        self.inner.model.as_ref()
    }

    /// Registers the untyped handler of a job kind in a pool; [`Engine::register`] is
    /// the way in for every kind of job.
    pub(crate) fn register_raw(&self, kind: &str, handler: Arc<dyn JobHandler>, pool: Pool) {
        if let Ok(mut map) = self.inner.handlers.write() {
            map.insert(kind.to_owned(), (handler, pool.name().to_owned()));
        }
        self.pool_notify(pool.name()).notify_waiters();
    }

    /// Sets how many dispatcher workers serve a pool. Takes effect at [`Engine::start`].
    pub fn set_pool_size(&self, pool: Pool, workers: usize) {
        if let Ok(mut pools) = self.inner.pools.write() {
            pools.insert(pool.name().to_owned(), workers.max(1));
        }
    }

    pub(crate) fn pools(&self) -> Vec<(String, usize)> {
        self.inner
            .pools
            .read()
            .map(|p| p.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    pub(crate) fn handler(&self, kind: &str) -> Option<Arc<dyn JobHandler>> {
        self.inner
            .handlers
            .read()
            .ok()?
            .get(kind)
            .map(|(h, _)| Arc::clone(h))
    }

    pub(crate) fn handler_kinds(&self, pool: &str) -> Vec<String> {
        self.inner
            .handlers
            .read()
            .map(|m| {
                m.iter()
                    .filter(|(_, (_, p))| p == pool)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Tells idle dispatcher workers that a job may be ready.
    pub fn wake_dispatcher(&self) {
        let pools: Vec<Arc<Notify>> = self
            .inner
            .jobs_ready
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for notify in pools {
            notify.notify_one();
        }
    }

    pub(crate) fn pool_notify(&self, pool: &str) -> Arc<Notify> {
        if let Some(n) = self
            .inner
            .jobs_ready
            .read()
            .ok()
            .and_then(|m| m.get(pool).cloned())
        {
            return n;
        }
        match self.inner.jobs_ready.write() {
            Ok(mut m) => Arc::clone(m.entry(pool.to_owned()).or_default()),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// Starts the background work: event fan-out and the job dispatcher. Runs until
    /// `shutdown` is cancelled; the returned handle finishes when everything stopped.
    ///
    /// # Errors
    /// When reclaiming jobs left by a previous process fails.
    pub async fn start(&self, shutdown: CancellationToken) -> Result<tokio::task::JoinHandle<()>> {
        let reclaimed = if self.config().reclaim_all_at_start {
            self.store().reclaim_all_running().await?
        } else {
            self.store().reclaim_expired(now()).await?
        };
        if reclaimed > 0 {
            tracing::info!(
                reclaimed,
                "resuming jobs left running by a previous process"
            );
        }
        let hub = self.hub().spawn(shutdown.clone());
        let dispatcher = Dispatcher::new(self.clone()).spawn(&shutdown);
        let digests = self.spawn_digest_sweep(shutdown.clone());
        let housekeeping = self.spawn_housekeeping(shutdown);
        Ok(tokio::spawn(async move {
            if let Err(e) = digests.await {
                tracing::error!(error = %e, "digest sweep stopped abnormally");
            }
            if let Err(e) = hub.await {
                tracing::error!(error = %e, "event fan-out stopped abnormally");
            }
            if let Err(e) = dispatcher.await {
                tracing::error!(error = %e, "dispatcher stopped abnormally");
            }
            if let Err(e) = housekeeping.await {
                tracing::error!(error = %e, "housekeeping stopped abnormally");
            }
        }))
    }

    /// Hourly: drops streamed chat deltas older than a day (the stored messages hold the
    /// full text; only a client a day behind could still want them) and expired sessions.
    fn spawn_housekeeping(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let at = now();
                match engine
                    .store()
                    .prune_deltas(at.plus_millis(-DELTA_RETENTION_MS))
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!(pruned = n, "dropped old chat deltas"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not prune chat deltas"),
                }
                if let Err(e) = engine.store().purge_expired_tokens(at).await {
                    tracing::warn!(error = %e, "could not purge expired sessions");
                }
            }
        })
    }
}

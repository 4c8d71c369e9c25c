//! The composition root: builds the store, the model provider, the engine and the HTTP
//! server from the configuration. The only place that picks adapter implementations.

use crate::main_thread;
use anyhow::{Context, Result, bail};
use mainloop_anthropic::{AnthropicConfig, AnthropicProvider};
use mainloop_api::ApiConfig;
use mainloop_config::{Config, ModelProviderKind};
use mainloop_domain::records::User;
use mainloop_engine::{Engine, EngineConfig};
use mainloop_git::Git;
use mainloop_model::ModelProvider;
use mainloop_store::{Backend, Store, StoreOptions};
use mainloop_worker::{ForgeSettings, Runtime, WorkerConfig, WorkerSandbox};
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::data_dir::{ensure_data_dir, lock_data_dir, restrict};

const OWNER_NAME: &str = "owner";
const TOKEN_FILE: &str = "owner.token";

/// Sets up logging to stderr as configured (`RUST_LOG` wins over the config file).
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless; ignore it.
    let _ = if config.log.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Opens the database (creating it and applying migrations as needed).
pub async fn open_store(config: &Config) -> Result<Store> {
    ensure_data_dir(config)?;
    let url = config.database_url();
    let options = StoreOptions {
        min_connections: config.database.min_connections,
        max_connections: config.database.max_connections,
        ..StoreOptions::default()
    };
    Store::connect(&url, &options)
        .await
        .context("opening the database")
}

fn engine_config(config: &Config, single_process: bool) -> Result<EngineConfig> {
    Ok(EngineConfig {
        context_budget_tokens: config.model.context_budget_tokens,
        notes_budget_tokens: config.chat.notes_budget_tokens,
        memory_budget_tokens: config.chat.memory_budget_tokens,
        time_zone: mainloop_domain::digest::Zone::parse(&config.chat.time_zone)
            .map_err(|e| anyhow::anyhow!("chat.time_zone: {e}"))?,
        max_tokens: config.model.max_tokens,
        max_chat_chars: config.limits.max_chat_chars,
        session_ttl: Duration::from_secs(config.auth.session_ttl_hours.saturating_mul(3600)),
        dispatcher_concurrency: config.dispatcher.concurrency,
        lease: Duration::from_secs(config.dispatcher.lease_secs),
        max_attempts: config.dispatcher.max_attempts,
        backoff_base: Duration::from_millis(config.dispatcher.backoff_base_ms),
        backoff_max: Duration::from_millis(config.dispatcher.backoff_max_ms),
        reclaim_all_at_start: single_process,
        max_check_rounds: config.workers.max_check_rounds,
        forge_host: config
            .github
            .token
            .is_some()
            .then(|| config.github.web_host.clone()),
        forge_max_ci_rounds: config.github.max_ci_rounds,
        forge_webhook_secret: config
            .github
            .webhook_secret
            .as_ref()
            .map(|s| mainloop_engine::WebhookSecret(s.expose().to_owned())),
        agents: crate::agents::catalog(config)?,
        runner_state_dir: Some(config.data_dir.join("runner-state")),
        ..EngineConfig::default()
    })
}

fn model_provider(config: &Config) -> Result<Option<Arc<dyn ModelProvider>>> {
    let Some(key) = &config.model.api_key else {
        return Ok(None);
    };
    let mut anthropic = AnthropicConfig::new(key.expose().to_owned().into(), &config.model.name);
    anthropic.base_url.clone_from(&config.model.base_url);
    anthropic.timeout = Some(Duration::from_secs(config.model.request_timeout_secs));
    let provider = AnthropicProvider::new(anthropic).context("setting up the Anthropic client")?;
    Ok(Some(Arc::new(provider)))
}

/// Environment variables agents and check commands inherit: what a shell needs, and the
/// agent's own credentials and settings. Nothing else of the server's environment (its
/// database URL, for one) reaches them.
fn agent_environment() -> Vec<(String, String)> {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "TERM",
        "TMPDIR",
        "TZ",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "XDG_DATA_HOME",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "DISABLE_TELEMETRY",
        "DISABLE_AUTOUPDATER",
        "DISABLE_ERROR_REPORTING",
    ];
    const PREFIXES: &[&str] = &["ANTHROPIC_", "CLAUDE_", "LC_", "CARGO_HOME", "RUSTUP_HOME"];
    std::env::vars()
        .filter(|(k, _)| EXACT.contains(&k.as_str()) || PREFIXES.iter().any(|p| k.starts_with(p)))
        .collect()
}

/// GitHub, when a token is configured: the forge client, and git set up to authenticate
/// through an askpass helper (the token never enters a URL or a git config).
fn forge_settings(config: &Config, mut git: Git) -> Result<(Git, Option<ForgeSettings>)> {
    let gh = &config.github;
    let Some(token) = gh.token.clone() else {
        return Ok((git, None));
    };
    let client = mainloop_github::GithubConfig::from_config(gh).context("GitHub settings")?;
    let forge = mainloop_github::GithubForge::new(&client).context("GitHub client")?;
    let askpass =
        mainloop_github::install_askpass(&config.data_dir).context("git askpass helper")?;
    let env = mainloop_github::GitEnv::new(askpass, token);
    for (key, value) in env.vars() {
        git = git.with_env(key, value.to_owned());
    }
    let settings = ForgeSettings {
        forge: Arc::new(forge),
        web_host: gh.web_host.clone(),
        git_url: gh.git_url.clone(),
        label: gh.label.clone(),
        mention: "mainloop".to_owned(),
        poll_interval: Duration::from_secs(gh.poll_interval_secs),
        ci_pending_timeout: Duration::from_secs(gh.ci_pending_timeout_secs),
        ci_appear_timeout: Duration::from_secs(gh.ci_appear_timeout_secs),
        log_tail_bytes: 8 * 1024,
        trusted_users: gh
            .trusted_users
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    Ok((git, Some(settings)))
}

/// Which provider answers the chat with `config`, and why (for `print-config`).
#[must_use]
pub fn main_thread_choice(config: &Config) -> (Option<ModelProviderKind>, String) {
    let launch = AgentLaunch::new(config);
    let claude = main_thread::find_claude(&launch.command, &launch.env);
    main_thread::choose(config, claude.as_deref())
}

/// What agents are started with: their environment and command line.
struct AgentLaunch {
    env: Vec<(String, String)>,
    command: Vec<String>,
}

impl AgentLaunch {
    fn new(config: &Config) -> Self {
        let env = agent_environment();
        let command = agent_command(&config.workers.claude_command, &env);
        Self { env, command }
    }
}

/// This machine's runner labels (`workers.labels`), each checked.
fn machine_labels(config: &Config) -> Result<std::collections::BTreeSet<String>> {
    let labels = config.workers.label_set();
    if let Some(bad) = labels
        .iter()
        .find(|l| !mainloop_domain::runner::is_label(l))
    {
        bail!(
            "workers.labels: {bad:?} is not a label (1 to {} lowercase letters, digits, '-', '_' or '.')",
            mainloop_domain::runner::MAX_LABEL_LEN
        );
    }
    Ok(labels)
}

fn worker_runtime(
    engine: &Engine,
    config: &Config,
    config_file: Option<&Path>,
    launch: &AgentLaunch,
    launcher: Option<Arc<dyn mainloop_launch::Launcher>>,
) -> Result<(Runtime, Option<WorkerSandbox>)> {
    let w = &config.workers;
    let labels = machine_labels(config)?;
    let git = Git::new(
        config.data_dir.join("repos"),
        config.data_dir.join("worktrees"),
    )
    .with_allow_file_urls(w.allow_file_urls)
    .with_repo_roots(w.repo_root_paths(std::env::var_os("HOME").map(PathBuf::from).as_deref()));
    let (git, forge) = forge_settings(config, git)?;
    if let Some(f) = &forge {
        engine.set_forge(f.forge.clone(), &f.web_host);
    }
    let (env, command) = (launch.env.clone(), launch.command.clone());
    let others: Vec<String> = config
        .agents()
        .into_iter()
        .filter_map(|a| a.command.first().cloned())
        .collect();
    let programs: Vec<&str> = command
        .first()
        .into_iter()
        .chain(&others)
        .map(String::as_str)
        .collect();
    let sandbox = crate::sandbox::worker_sandbox(config, &env, &programs, config_file)?;
    let home = env
        .iter()
        .find(|(k, _)| k == "HOME")
        .map_or_else(|| config.data_dir.clone(), |(_, v)| PathBuf::from(v));
    let runtime = Runtime::with_agents(
        engine.clone(),
        crate::agents::registry(config, &command)?,
        git,
        WorkerConfig {
            max_agents: w.max_agents,
            labels,
            runner_grace: Duration::from_secs(w.runner_reconnect_secs),
            idle_timeout: Duration::from_secs(w.idle_timeout_secs),
            inactivity_timeout: Duration::from_secs(w.inactivity_timeout_secs),
            api_retries: w.api_retries,
            api_retry_delay: Duration::from_secs(w.api_retry_delay_secs),
            check_timeout: Duration::from_secs(w.check_timeout_secs),
            check_output_bytes: 64 * 1024,
            model: w.model.clone(),
            agent_env: env,
            plans_dir: home.join(".claude").join("plans"),
            sandbox: sandbox.clone(),
            pid_dir: config.data_dir.join("agents"),
            forge,
            port_range: {
                let (lo, hi) = w
                    .port_range_bounds()
                    .map_err(|e| anyhow::anyhow!("workers.port_range {e}"))?;
                lo..=hi
            },
            // Without a configured server, mainloop runs its own cluster (started on need).
            task_databases: Some(w.task_database_url.as_ref().map_or_else(
                || mainloop_worker::TaskDatabaseServer::local_for(&config.data_dir),
                |url| {
                    mainloop_worker::TaskDatabaseServer::Configured(
                        mainloop_worker::TaskDatabaseUrl::new(url.expose()),
                    )
                },
            )),
            retention: mainloop_engine::Retention::from_config(
                w.retention_merged_hours,
                w.retention_failed_days,
                w.retention_cancelled_days,
            ),
            launcher,
        },
    );
    Ok((runtime, sandbox))
}

/// An engine for one-off commands (`token`, `user add`): no background work.
pub async fn offline_engine(config: &Config) -> Result<Engine> {
    let store = open_store(config).await?;
    Ok(Engine::new(store, None, engine_config(config, false)?))
}

fn token_path(config: &Config) -> PathBuf {
    config.data_dir.join(TOKEN_FILE)
}

fn save_token(config: &Config, token: &str) -> Result<()> {
    let path = token_path(config);
    let mut file = File::create(&path).with_context(|| format!("writing {}", path.display()))?;
    restrict(&path, 0o600);
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}

/// Creates the owner on first start; returns the owner and, when just created, their
/// token (also kept in the data directory for `mainloop token`).
pub async fn ensure_owner(engine: &Engine, config: &Config) -> Result<(User, Option<String>)> {
    let (owner, token) = engine.ensure_owner(OWNER_NAME).await?;
    if let Some(token) = &token {
        save_token(config, token)?;
    }
    Ok((owner, token))
}

/// The owner's API token: the one on file, or a new one.
pub async fn owner_token(engine: &Engine, config: &Config, new: bool) -> Result<String> {
    let (owner, created) = ensure_owner(engine, config).await?;
    if let Some(token) = created {
        return Ok(token);
    }
    let saved = if new {
        None
    } else {
        std::fs::read_to_string(token_path(config)).ok()
    };
    if let Some(saved) = saved {
        let saved = saved.trim();
        if engine
            .authenticate_token(saved)
            .await?
            .is_some_and(|u| u.id == owner.id)
        {
            return Ok(saved.to_owned());
        }
    }
    let token = engine.issue_api_token(&owner).await?;
    save_token(config, &token)?;
    Ok(token)
}

#[allow(clippy::print_stdout)]
fn announce(line: &str) {
    println!("{line}");
}

/// One running server: the database, the engine with its background work, the worker
/// runtime and the HTTP listener, wired from a [`Config`]. `mainloop serve` is this
/// plus announcing the address and waiting for a signal; tests build it in-process.
#[derive(Debug)]
pub struct App {
    addr: SocketAddr,
    engine: Engine,
    runtime: Runtime,
    created_token: Option<String>,
    token_file: PathBuf,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    workers: JoinHandle<()>,
    background: JoinHandle<()>,
    /// Held for the app's lifetime: one server per data directory.
    _lock: File,
}

impl App {
    /// Builds and starts the server from `config` (`config.listen` may name port 0).
    ///
    /// # Errors
    /// When the configuration is refused, the data directory is locked by another
    /// server, the database cannot be opened or the address cannot be bound.
    pub async fn build(config: Config) -> Result<Self> {
        Self::build_with_config_file(config, None).await
    }

    /// Like [`App::build`]; `config_file` is the `--config` the server was started with
    /// (the sandbox hides it from agents).
    ///
    /// # Errors
    /// As [`App::build`].
    pub async fn build_with_config_file(
        config: Config,
        config_file: Option<&Path>,
    ) -> Result<Self> {
        if !config.listen.ip().is_loopback() && !config.auth.enabled {
            bail!(
                "refusing to listen on {} with authentication off; turn auth on or listen on 127.0.0.1",
                config.listen
            );
        }
        // A mistake in the configuration stops the start before anything is made.
        machine_labels(&config)?;
        ensure_data_dir(&config)?;
        let lock = lock_data_dir(&config).await?;
        let store = open_store(&config).await?;
        let single_process = store.backend() == Backend::Sqlite;
        let launch = AgentLaunch::new(&config);
        let claude = main_thread::find_claude(&launch.command, &launch.env);
        let (kind, reason) = main_thread::choose(&config, claude.as_deref());
        let anthropic = match kind {
            Some(ModelProviderKind::Anthropic) => model_provider(&config)?,
            _ => None,
        };
        let engine = Engine::new(store, anthropic, engine_config(&config, single_process)?);
        tracing::info!(provider = kind.map_or("none", ModelProviderKind::as_str), %reason, "main thread");
        engine.set_main_thread(main_thread::record(kind, reason.clone()), None);
        let (_, created_token) = ensure_owner(&engine, &config).await?;

        let shutdown = CancellationToken::new();
        let launcher = crate::launcher::launcher(&config).await?;
        let (runtime, sandbox) = worker_runtime(&engine, &config, config_file, &launch, launcher)?;
        runtime.install();
        mainloop_push::install(
            &engine,
            mainloop_push::PushConfig::new(
                config.notifications.vapid_subject.clone(),
                config.public_url.clone(),
            ),
        )
        .context("setting up notification delivery")?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr()?;
        if kind == Some(ModelProviderKind::ClaudeCode) {
            let provider = main_thread::claude_code(
                &config,
                launch.command,
                claude,
                launch.env,
                sandbox.as_ref(),
                addr,
            );
            engine.set_main_thread(main_thread::record(kind, reason), Some(provider));
        }
        let background = engine.start(shutdown.clone()).await?;
        let workers = runtime.spawn(shutdown.clone());
        if let Some(databases) = runtime.task_database_server().cloned() {
            // In the background: the server answers while its own cluster starts.
            tokio::spawn(async move { databases.start_if_in_use().await });
        }
        let previews = runtime.previews(
            mainloop_worker::PreviewSettings {
                idle_timeout: Duration::from_secs(config.previews.idle_timeout_secs),
                start_timeout: Duration::from_secs(config.previews.start_timeout_secs),
            },
            shutdown.clone(),
        );
        engine.set_previews(Arc::new(previews), &config.previews.domain);
        let secure_cookies = config
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        let router = mainloop_api::router_with_shutdown(
            engine.clone(),
            ApiConfig {
                auth_enabled: config.auth.enabled,
                max_body_bytes: config.limits.max_body_bytes,
                secure_cookies,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                runner_timeouts: mainloop_api::RunnerTimeouts::default(),
            },
            shutdown.clone(),
        )
        .route("/api/docs", mainloop_web::docs_page())
        // The web app answers every path outside `/api` (the API keeps its own JSON 404).
        .merge(mainloop_web::router());
        // Preview hosts reach their task's preview, never the API or the web app.
        let router = mainloop_api::preview::route_previews(router, engine.clone(), secure_cookies);
        let stop = shutdown.clone();
        // Connection addresses let sign-in attempts be limited per client.
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        });
        tracing::info!(%addr, database = ?engine.database_backend(), "serving");
        Ok(Self {
            addr,
            engine,
            runtime,
            created_token,
            token_file: token_path(&config),
            shutdown,
            server,
            workers,
            background,
            _lock: lock,
        })
    }

    /// The address the server listens on (the real port when the config named port 0).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The worker runtime (agents, git, checks).
    #[must_use]
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The owner's API token when this start created the owner (it is also on file).
    #[must_use]
    pub fn created_token(&self) -> Option<&str> {
        self.created_token.as_deref()
    }

    /// The file the owner's token is kept in.
    #[must_use]
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// Cancelled when the app shuts down; cancelling it starts a graceful shutdown.
    #[must_use]
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops taking requests, lets the workers and background work finish (each within
    /// 10 s) and closes the database.
    ///
    /// # Errors
    /// When the HTTP server failed.
    pub async fn shutdown(self) -> Result<()> {
        self.shutdown.cancel();
        let served = self.server.await;
        if tokio::time::timeout(Duration::from_secs(10), self.workers)
            .await
            .is_err()
        {
            tracing::warn!("workers did not stop within 10 s");
        }
        if tokio::time::timeout(Duration::from_secs(10), self.background)
            .await
            .is_err()
        {
            tracing::warn!("background work did not stop within 10 s");
        }
        if let Some(databases) = self.runtime.task_database_server() {
            databases.stop().await;
        }
        self.engine.close().await;
        served
            .context("the HTTP server panicked")?
            .context("serving HTTP")
    }

    /// Serves until `stop` completes (or the app shuts itself down), then shuts down.
    ///
    /// # Errors
    /// As [`App::shutdown`].
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<()> {
        tokio::select! {
            () = stop => tracing::info!("shutting down"),
            () = self.shutdown.cancelled() => {}
        }
        self.shutdown().await
    }
}

/// Runs the server until SIGINT/SIGTERM.
pub async fn serve(config: Config, config_file: Option<&Path>) -> Result<()> {
    let (auth, public_url) = (config.auth.enabled, config.public_url.clone());
    let app = App::build_with_config_file(config, config_file).await?;
    if let Some(token) = app.created_token() {
        announce(&format!(
            "created the owner account. API token (also in {}; `mainloop token` prints it):",
            app.token_file().display()
        ));
        announce(token);
    }
    // Last, so whoever watches stdout knows everything before it has been said.
    announce(&format!("mainloop listening on http://{}", app.addr()));
    if auth && let Some(owner) = app.engine().owner().await? {
        let base = crate::signin_link::base_url(public_url.as_deref(), app.addr());
        crate::signin_link::print_new(app.engine(), &owner, &base).await?;
    }
    app.run_until(wait_for_signal()).await
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The agent's command line, its program by a path that also resolves inside the
/// sandbox (see [`mainloop_sandbox::program_path`]); a program that cannot be found is
/// left as written, for the agent's start to report.
fn agent_command(configured: &str, env: &[(String, String)]) -> Vec<String> {
    let mut command: Vec<String> = configured.split_whitespace().map(str::to_owned).collect();
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| std::ffi::OsStr::new(v.as_str()));
    if let Some(program) = command.first_mut()
        && program.contains('/')
        && let Some(resolved) = mainloop_sandbox::program_path(program, path_var)
    {
        *program = resolved.to_string_lossy().into_owned();
    }
    command
}

#[cfg(test)]
mod tests {
    use super::agent_command;

    /// The agent is named by a path that also resolves inside the sandbox: directories
    /// resolved, no `..` (the sandbox hides the directories such a path walks through),
    /// its arguments kept; a bare name is left for the `PATH` lookup.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_agent_command_names_its_program_by_a_resolved_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("node_modules/.bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("crates/mainloop")).unwrap();
        std::fs::write(bin.join("claude"), "#!/bin/sh\n").unwrap();
        let written = dir
            .path()
            .join("crates/mainloop/../../node_modules/.bin/claude");
        let command = agent_command(&format!("{} --verbose", written.display()), &[]);
        let resolved = std::fs::canonicalize(&bin).unwrap().join("claude");
        assert_eq!(
            command,
            [resolved.display().to_string(), "--verbose".to_owned()]
        );
        assert_eq!(agent_command("claude", &[]), ["claude"]);
    }
}

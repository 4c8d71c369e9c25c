//! An in-process server: the test-support crate's world (SQLite in a temp dir, the
//! engine and its owner), with the API router served on an ephemeral loopback port.

use anyhow::{Context, Result};
use mainloop_api::ApiConfig;
use mainloop_domain::UserId;
use mainloop_engine::{Engine, EngineConfig};
use mainloop_model::ModelProvider;
use mainloop_test_support::{Database, EngineWorld};
use mainloop_worker::Runtime;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A running in-process server. Stops when dropped (best effort) or by [`Server::stop`].
#[derive(Debug)]
pub struct Server {
    pub base: String,
    world: EngineWorld,
    running: Running,
}

/// The server's tasks; dropping it stops them (best effort).
#[derive(Debug)]
struct Running {
    shutdown: CancellationToken,
    http: Option<tokio::task::JoinHandle<()>>,
    background: Option<tokio::task::JoinHandle<()>>,
}

/// An HTTP client for loopback benchmarking (no proxies).
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()
        .context("building the HTTP client")
}

impl Server {
    /// The engine on a fresh SQLite database, with its owner, its background work
    /// started and the API served.
    pub async fn start(
        model: Option<Arc<dyn ModelProvider>>,
        config: EngineConfig,
    ) -> Result<Self> {
        Self::start_with(model, config, |_| {}).await
    }

    /// Like [`Server::start`] without a model, with the worker runtime `runtime` builds
    /// from the engine: its job handlers are installed before the engine's background
    /// work starts. The caller spawns it.
    pub async fn start_with_runtime(
        config: EngineConfig,
        runtime: impl FnOnce(Engine) -> Runtime,
    ) -> Result<(Self, Runtime)> {
        let mut built = None;
        let server = Self::start_with(None, config, |engine| {
            let rt = runtime(engine.clone());
            rt.install();
            built = Some(rt);
        })
        .await?;
        let runtime = built.context("the runtime was not installed")?;
        Ok((server, runtime))
    }

    /// Like [`Server::start`], calling `setup` with the engine before its background
    /// work starts.
    async fn start_with(
        model: Option<Arc<dyn ModelProvider>>,
        config: EngineConfig,
        setup: impl FnOnce(&Engine),
    ) -> Result<Self> {
        let database = Database::try_sqlite().context("creating a temp dir")?;
        let world = EngineWorld::try_new(database, model, config)
            .await
            .context("building the engine")?;
        setup(&world.engine);
        let background = world.try_start().await?;
        // `router_with_shutdown` (rather than `router`) so open event streams end on stop.
        let router = mainloop_api::router_with_shutdown(
            world.engine.clone(),
            ApiConfig {
                auth_enabled: true,
                max_body_bytes: 1 << 20,
                secure_cookies: false,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                runner_timeouts: mainloop_api::RunnerTimeouts::default(),
            },
            world.shutdown.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = world.shutdown.clone();
        let http = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                println!("bench server failed: {e}");
            }
        });
        Ok(Self {
            base: format!("http://{addr}"),
            running: Running {
                shutdown: world.shutdown.clone(),
                http: Some(http),
                background: Some(background),
            },
            world,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.world.engine
    }

    /// The owner, whose data every benchmark works on.
    pub fn user(&self) -> UserId {
        self.world.owner.id
    }

    /// The owner's API token.
    pub fn token(&self) -> &str {
        &self.world.token
    }

    /// The token that stops the server; other background work can stop with it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.world.shutdown.clone()
    }

    /// Stops serving and the engine's background work (waiting a little for both).
    pub async fn stop(self) {
        let Self {
            world, mut running, ..
        } = self;
        world.shutdown.cancel();
        for handle in [running.http.take(), running.background.take()]
            .into_iter()
            .flatten()
        {
            let abort = handle.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), handle)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        world.engine.close().await;
        // MAINLOOP_BENCH_KEEP=1 keeps the database for inspection (sqlite3, EXPLAIN).
        if std::env::var_os("MAINLOOP_BENCH_KEEP").is_some() {
            println!("  (kept {})", world.database.keep().display());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.http.take() {
            h.abort();
        }
    }
}

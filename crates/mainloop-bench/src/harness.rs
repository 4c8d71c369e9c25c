//! An in-process server: SQLite store in a temp dir, the engine, and the API router on
//! an ephemeral loopback port.

use anyhow::{Context, Result};
use mainloop_api::ApiConfig;
use mainloop_domain::UserId;
use mainloop_engine::{Engine, EngineConfig};
use mainloop_model::ModelProvider;
use mainloop_store::{Store, StoreOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A running in-process server. Stops when dropped (best effort) or by [`Server::stop`].
#[derive(Debug)]
pub struct Server {
    pub base: String,
    pub token: String,
    pub user: UserId,
    pub engine: Engine,
    shutdown: CancellationToken,
    http: Option<tokio::task::JoinHandle<()>>,
    background: Option<tokio::task::JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
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

/// Opens a fresh SQLite store in a new temp dir.
pub async fn fresh_store() -> Result<(Store, tempfile::TempDir)> {
    let dir = tempfile::Builder::new()
        .prefix("mainloop-bench-")
        .tempdir()
        .context("creating a temp dir")?;
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .context("opening the store")?;
    Ok((store, dir))
}

impl Server {
    /// Builds the engine on a fresh store, creates the owner, starts the engine's
    /// background work and serves the API.
    pub async fn start(
        model: Option<Arc<dyn ModelProvider>>,
        config: EngineConfig,
    ) -> Result<Self> {
        let (store, dir) = fresh_store().await?;
        Self::start_on(store, Some(dir), model, config).await
    }

    pub async fn start_on(
        store: Store,
        dir: Option<tempfile::TempDir>,
        model: Option<Arc<dyn ModelProvider>>,
        config: EngineConfig,
    ) -> Result<Self> {
        Self::start_with(store, dir, model, config, |_| {}).await
    }

    /// Like [`Server::start_on`], calling `setup` with the engine before its background
    /// work starts (where a worker runtime registers its job handlers).
    pub async fn start_with(
        store: Store,
        dir: Option<tempfile::TempDir>,
        model: Option<Arc<dyn ModelProvider>>,
        config: EngineConfig,
        setup: impl FnOnce(&Engine),
    ) -> Result<Self> {
        let engine = Engine::new(store, model, config);
        setup(&engine);
        let (user, token) = engine.ensure_owner("owner").await?;
        let token = match token {
            Some(t) => t,
            None => engine.issue_api_token(&user).await?,
        };
        let shutdown = CancellationToken::new();
        let background = engine.start(shutdown.clone()).await?;
        // `router_with_shutdown` (rather than `router`) so open event streams end on stop.
        let router = mainloop_api::router_with_shutdown(
            engine.clone(),
            ApiConfig {
                auth_enabled: true,
                max_body_bytes: 1 << 20,
                secure_cookies: false,
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            shutdown.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = shutdown.clone();
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
            token,
            user: user.id,
            engine,
            shutdown,
            http: Some(http),
            background: Some(background),
            dir,
        })
    }

    /// The token that stops the server; other background work can stop with it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops serving and the engine's background work (waiting a little for both).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for handle in [self.http.take(), self.background.take()]
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
        self.engine.store().close().await;
        if let Some(dir) = self.dir.take() {
            // MAINLOOP_BENCH_KEEP=1 keeps the database for inspection (sqlite3, EXPLAIN).
            if std::env::var_os("MAINLOOP_BENCH_KEEP").is_some() {
                println!("  (kept {})", dir.keep().display());
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.http.take() {
            h.abort();
        }
    }
}

//! The engine on a real store, with its owner: for tests of the engine and of what sits
//! directly on it (the API router, the worker runtime) without the whole app.

use crate::{Database, FakeModel};
use mainloop_anthropic::{AnthropicConfig, AnthropicProvider};
use mainloop_domain::records::User;
use mainloop_engine::{Engine, EngineConfig};
use mainloop_model::ModelProvider;
use mainloop_store::{Store, StoreOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A store and an engine over a [`Database`]. Its background work runs until `shutdown`
/// is cancelled (the fixtures that hold one cancel it when dropped).
#[derive(Debug)]
pub struct EngineWorld {
    pub engine: Engine,
    pub owner: User,
    /// An API token of the owner (created with the owner, or issued afresh when the
    /// database already had one).
    pub token: String,
    /// Cancels the engine's background work (and whatever a test ties to it).
    pub shutdown: CancellationToken,
    pub database: Database,
}

impl EngineWorld {
    /// Quick retries, so that tests of failures do not wait out production backoffs.
    #[must_use]
    pub fn fast_config() -> EngineConfig {
        EngineConfig {
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
            ..EngineConfig::default()
        }
    }

    /// The engine over `database`, answering chat through `model` when given, not yet
    /// started: a test registers handlers first, then calls [`EngineWorld::start`].
    pub async fn new(database: Database, model: Option<&FakeModel>, config: EngineConfig) -> Self {
        Self::try_new(database, model.map(model_provider), config)
            .await
            .unwrap()
    }

    /// [`EngineWorld::new`] answering chat through any `model` (a wrapper around the
    /// fake, say), or the error that stopped it.
    pub async fn try_new(
        database: Database,
        model: Option<Arc<dyn ModelProvider>>,
        config: EngineConfig,
    ) -> anyhow::Result<Self> {
        let store = Store::connect(database.url(), &StoreOptions::default()).await?;
        let engine = Engine::new(store, model, config);
        let (owner, token) = engine.ensure_owner("owner").await?;
        let token = match token {
            Some(token) => token,
            None => engine.issue_api_token(&owner).await?,
        };
        Ok(Self {
            engine,
            owner,
            token,
            shutdown: CancellationToken::new(),
            database,
        })
    }

    /// Starts the engine's background work (event fan-out, dispatcher, housekeeping).
    pub async fn start(&self) {
        self.try_start().await.unwrap();
    }

    /// [`EngineWorld::start`]; the handle of the background work, which ends after
    /// `shutdown` is cancelled.
    pub async fn try_start(&self) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        Ok(self.engine.start(self.shutdown.clone()).await?)
    }

    /// [`EngineWorld::new`] and [`EngineWorld::start`].
    pub async fn started(
        database: Database,
        model: Option<&FakeModel>,
        config: EngineConfig,
    ) -> Self {
        let world = Self::new(database, model, config).await;
        world.start().await;
        world
    }

    /// Whether the job queue is idle (see [`crate::jobs_idle`]).
    pub async fn jobs_idle(&self) -> bool {
        self.database.jobs_idle(Duration::ZERO).await
    }

    /// Waits until the job queue is idle.
    pub async fn wait_idle(&self) {
        crate::wait_for("the job queue to be idle", || async {
            self.jobs_idle().await.then_some(())
        })
        .await;
    }
}

/// The real Anthropic client, pointed at the fake model.
#[must_use]
pub fn model_provider(fake: &FakeModel) -> Arc<dyn ModelProvider> {
    try_model_provider(fake).unwrap()
}

/// [`model_provider`], or the error setting up the client.
pub fn try_model_provider(fake: &FakeModel) -> anyhow::Result<Arc<dyn ModelProvider>> {
    let mut cfg = AnthropicConfig::new("sk-test".to_owned().into(), "claude-test");
    cfg.base_url = fake.base_url();
    Ok(Arc::new(AnthropicProvider::new(cfg)?))
}

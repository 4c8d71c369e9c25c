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
        let store = Store::connect(database.url(), &StoreOptions::default())
            .await
            .unwrap();
        let engine = Engine::new(store, model.map(model_provider), config);
        let (owner, token) = engine.ensure_owner("owner").await.unwrap();
        let token = match token {
            Some(token) => token,
            None => engine.issue_api_token(&owner).await.unwrap(),
        };
        Self {
            engine,
            owner,
            token,
            shutdown: CancellationToken::new(),
            database,
        }
    }

    /// Starts the engine's background work (event fan-out, dispatcher, housekeeping).
    pub async fn start(&self) {
        self.engine.start(self.shutdown.clone()).await.unwrap();
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
    let mut cfg = AnthropicConfig::new("sk-test".to_owned().into(), "claude-test");
    cfg.base_url = fake.base_url();
    Arc::new(AnthropicProvider::new(cfg).unwrap())
}

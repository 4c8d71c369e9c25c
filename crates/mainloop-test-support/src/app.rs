//! The whole app, built in-process on port 0 by [`mainloop::App::build`] (the wiring
//! `mainloop serve` runs, not a copy), with an HTTP client holding the owner's token.

use crate::{Database, FakeModel};
use mainloop::App;
use mainloop_config::{Config, Secret};
use mainloop_engine::Engine;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A configuration for tests: data in `data_dir`, port 0, quick job retries, quiet logs,
/// no model until [`with_model`] gives it one.
#[must_use]
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::defaults_in(data_dir.to_path_buf());
    config.listen = ([127, 0, 0, 1], 0).into();
    config.log.filter = "warn".to_owned();
    config.dispatcher.backoff_base_ms = 50;
    config.dispatcher.backoff_max_ms = 200;
    config
}

/// `config` with the fake model as its model API (the key is planted, never real).
#[must_use]
pub fn with_model(mut config: Config, fake: &FakeModel) -> Config {
    config.model.api_key = Some(Secret::new("sk-test-key"));
    config.model.base_url = fake.base_url();
    config
}

/// A running app and a client for it as the owner; shut down on drop.
#[derive(Debug)]
pub struct TestApp {
    app: Option<App>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The owner's API token.
    pub token: String,
    pub client: reqwest::Client,
    database_url: String,
    _database: Option<Database>,
}

impl TestApp {
    /// The app on SQLite in a fresh data directory, with `fake` as its model if given.
    pub async fn sqlite(fake: Option<&FakeModel>) -> Self {
        Self::on(Database::sqlite(), fake, |c| c).await
    }

    /// The app with its data in `database`; `adjust` changes the test configuration.
    pub async fn on(
        database: Database,
        fake: Option<&FakeModel>,
        adjust: impl FnOnce(Config) -> Config,
    ) -> Self {
        let mut config = test_config(database.dir());
        if !database.is_sqlite() {
            config.database_url = Some(Secret::new(database.url()));
        }
        if let Some(fake) = fake {
            config = with_model(config, fake);
        }
        let mut app = Self::start(adjust(config)).await;
        app._database = Some(database);
        app
    }

    /// Builds the app from `config` (its `listen` should name port 0).
    pub async fn start(config: Config) -> Self {
        let database_url = config.database_url();
        let app = App::build(config).await.unwrap();
        let token = match app.created_token() {
            Some(t) => t.to_owned(),
            None => std::fs::read_to_string(app.token_file())
                .unwrap()
                .trim()
                .to_owned(),
        };
        Self {
            base: format!("http://{}", app.addr()),
            app: Some(app),
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            database_url,
            _database: None,
        }
    }

    #[must_use]
    pub fn app(&self) -> &App {
        self.app.as_ref().expect("the app is running")
    }

    #[must_use]
    pub fn engine(&self) -> &Engine {
        self.app().engine()
    }

    #[must_use]
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request as the owner; the status and the JSON body (null if none).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GETs `path`, failing the test unless it succeeds.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.request(Method::GET, path, None).await;
        assert!(status.is_success(), "GET {path}: {status} {body}");
        body
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(body)).await
    }

    /// Whether the job queue is idle (see [`crate::jobs_idle`]).
    pub async fn jobs_idle(&self) -> bool {
        crate::jobs_idle(&self.database_url, Duration::ZERO).await
    }

    /// Waits until the job queue is idle.
    pub async fn wait_idle(&self) {
        crate::wait_for("the job queue to be idle", || async {
            self.jobs_idle().await.then_some(())
        })
        .await;
    }

    /// Shuts the app down gracefully (as on SIGTERM).
    pub async fn shutdown(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(app) = &self.app {
            app.shutdown_token().cancel();
        }
    }
}

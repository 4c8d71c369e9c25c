//! Helpers: a fake with a kube-rs client on it, objects to create, and waiting on
//! conditions.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::{Client, Config as KubeConfig};
use mainloop_fake_kube::{Config, FakeKube};
use std::future::Future;
use std::time::Duration;

pub struct Env {
    pub fake: FakeKube,
    pub client: Client,
}

pub fn client_for(fake: &FakeKube) -> Client {
    let config = KubeConfig::new(fake.base_url().parse().unwrap());
    Client::try_from(config).unwrap()
}

/// A client without kube-rs's default retries of 429, 503 and 504 (which otherwise
/// hide those answers behind up to 15 retries with exponential backoff).
pub fn client_without_retries(fake: &FakeKube) -> Client {
    let mut config = KubeConfig::new(fake.base_url().parse().unwrap());
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

/// A fake with short delays, so tests run quickly.
pub async fn env() -> Env {
    env_with(Config {
        namespace_termination_delay: Duration::from_millis(100),
        bookmark_interval: Duration::from_millis(100),
        ..Config::default()
    })
    .await
}

pub async fn env_with(config: Config) -> Env {
    let fake = FakeKube::start(config).await.unwrap();
    let client = client_for(&fake);
    Env { fake, client }
}

impl Env {
    pub async fn namespace(&self, name: &str) -> Namespace {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "mainloop"}}
        }))
        .unwrap();
        api.create(&PostParams::default(), &ns).await.unwrap()
    }
}

/// The API error a call failed with.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `f` until it gives `Some`, for up to 10 s.
pub async fn eventually<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits a future for up to 10 s.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn obj<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> K {
    serde_json::from_value(v).unwrap()
}

/// RFC 7386 merge, for building test objects.
pub fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

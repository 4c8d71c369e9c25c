//! Helpers: a fake Kubernetes API with a launcher on it, tasks to launch, the objects
//! as the fake stores them (read from its store, so the request log holds only the
//! launcher's calls), and waiting on conditions.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Client, Config as KubeConfig};
use mainloop_domain::TaskId;
use mainloop_domain::agents::AgentName;
use mainloop_fake_kube::{Config, FakeKube, PodHandle};
use mainloop_kube::{CidrEgress, KubeLauncher, KubeSettings};
use mainloop_launch::{LaunchError, TaskLaunch};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

pub struct Env {
    pub fake: FakeKube,
    pub launcher: KubeLauncher,
}

/// Settings as a deployment would give them.
pub fn settings() -> KubeSettings {
    KubeSettings {
        image: "registry.example/mainloop-agent:1.2.3".to_owned(),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        server_url: "http://mainloop.mainloop.svc".to_owned(),
        runner_args: vec!["--label".to_owned(), "k8s".to_owned()],
        allowed_egress: vec![
            CidrEgress {
                cidr: "0.0.0.0/0".to_owned(),
                except: vec!["10.0.0.0/8".to_owned(), "169.254.169.254/32".to_owned()],
                port: Some(443),
            },
            CidrEgress::new("192.0.2.10/32", None),
        ],
        job_ttl_secs: Some(600),
        ..KubeSettings::default()
    }
}

/// A kube-rs client on the fake without kube-rs's own retries of 429/503/504, so that
/// an injected one reaches the launcher.
pub fn client(fake: &FakeKube) -> Client {
    let mut config = KubeConfig::new(fake.base_url().parse().unwrap());
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

/// A fake whose namespaces take `termination` to go.
pub async fn env_with(termination: Duration, settings: KubeSettings) -> Env {
    env_on(
        Config {
            namespace_termination_delay: termination,
            ..Config::default()
        },
        settings,
    )
    .await
}

/// A fake started with `config`.
pub async fn env_on(config: Config, settings: KubeSettings) -> Env {
    let fake = FakeKube::start(config).await.unwrap();
    let launcher = KubeLauncher::new(client(&fake), settings);
    Env { fake, launcher }
}

/// A fake with CloudNativePG's CRDs installed (no operator hook yet).
pub async fn env_with_cloudnativepg() -> Env {
    env_on(
        Config {
            namespace_termination_delay: Duration::from_millis(100),
            cloudnativepg: true,
            ..Config::default()
        },
        settings(),
    )
    .await
}

pub async fn env() -> Env {
    env_with(Duration::from_millis(100), settings()).await
}

/// A new task with a token and two credentials.
pub fn task() -> TaskLaunch {
    task_with(
        "mlr_first",
        &[("ANTHROPIC_API_KEY", "sk-1"), ("GH_TOKEN", "gh-1")],
    )
}

pub fn task_with(token: &str, credentials: &[(&str, &str)]) -> TaskLaunch {
    TaskLaunch {
        task: TaskId(uuid::Uuid::new_v4()),
        agent: AgentName::parse("claude").unwrap(),
        runner_token: SecretString::from(token.to_owned()),
        credentials: credentials
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretString::from((*v).to_owned())))
            .collect(),
    }
}

/// The same task, its token and credentials changed.
pub fn rotated(t: &TaskLaunch, token: &str, credentials: &[(&str, &str)]) -> TaskLaunch {
    TaskLaunch {
        task: t.task,
        ..task_with(token, credentials)
    }
}

impl Env {
    pub fn ns(&self, t: &TaskLaunch) -> String {
        self.launcher.namespace(t.task)
    }

    fn typed<K: DeserializeOwned>(&self, api: &str, kind: &str, ns: &str, name: &str) -> Option<K> {
        self.fake
            .object(api, kind, ns, name)
            .map(|v| serde_json::from_value(v).unwrap())
    }

    pub fn namespace(&self, t: &TaskLaunch) -> Option<Namespace> {
        self.typed("v1", "Namespace", "", &self.ns(t))
    }

    pub fn secret(&self, t: &TaskLaunch) -> Option<Secret> {
        self.typed("v1", "Secret", &self.ns(t), "runner")
    }

    pub fn policy(&self, t: &TaskLaunch) -> Option<NetworkPolicy> {
        self.typed(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            &self.ns(t),
            "runner",
        )
    }

    pub fn quota(&self, t: &TaskLaunch) -> Option<ResourceQuota> {
        self.typed("v1", "ResourceQuota", &self.ns(t), "runner")
    }

    pub fn limits(&self, t: &TaskLaunch) -> Option<LimitRange> {
        self.typed("v1", "LimitRange", &self.ns(t), "runner")
    }

    pub fn job(&self, t: &TaskLaunch, run: &str) -> Option<Job> {
        self.typed("batch/v1", "Job", &self.ns(t), run)
    }

    /// The task's CloudNativePG Cluster, as stored.
    pub fn cluster(&self, t: &TaskLaunch) -> Option<serde_json::Value> {
        self.fake
            .object("postgresql.cnpg.io/v1", "Cluster", &self.ns(t), "database")
    }

    pub fn database_policy(&self, t: &TaskLaunch) -> Option<NetworkPolicy> {
        self.typed(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            &self.ns(t),
            "database",
        )
    }

    /// The pods the fake's runner hook is handed, as they start.
    pub fn pods(&self) -> mpsc::UnboundedReceiver<PodHandle> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.fake.set_pod_runner(move |pod: PodHandle| {
            let _ = tx.send(pod);
        });
        rx
    }
}

/// The Secret's data as text, sorted by key.
pub fn secret_data(s: &Secret) -> Vec<(String, String)> {
    s.data
        .as_ref()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
        .collect()
}

pub fn unavailable<T: std::fmt::Debug>(r: Result<T, LaunchError>) -> String {
    match r {
        Err(LaunchError::Unavailable(why)) => why,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

pub fn refused<T: std::fmt::Debug>(r: Result<T, LaunchError>) -> String {
    match r {
        Err(LaunchError::Refused(why)) => why,
        other => panic!("expected Refused, got {other:?}"),
    }
}

/// A label selector in words: its labels, then each expression (`key Exists`).
pub fn selector(sel: &LabelSelector) -> String {
    let mut words = format!("{:?}", sel.match_labels.clone().unwrap_or_default());
    for e in sel.match_expressions.iter().flatten() {
        words.push_str(&format!(" {} {}", e.key, e.operator));
    }
    words
}

/// A peer in words: `cidr X except [..]`, `pods {namespace} {pods}`, `namespace {..}`,
/// or `here {pods}` (this namespace's pods).
pub fn peer(peer: &NetworkPolicyPeer) -> String {
    if let Some(b) = &peer.ip_block {
        return format!(
            "cidr {} except {:?}",
            b.cidr,
            b.except.clone().unwrap_or_default()
        );
    }
    match (&peer.namespace_selector, &peer.pod_selector) {
        (Some(ns), Some(pods)) => format!("pods {} {}", selector(ns), selector(pods)),
        (Some(ns), None) => format!("namespace {}", selector(ns)),
        (None, Some(pods)) => format!("here {}", selector(pods)),
        (None, None) => panic!("an empty peer: {peer:?}"),
    }
}

/// Ports in words: `PROTO/port`, `PROTO/*` for every port.
pub fn ports(ports: Option<&Vec<NetworkPolicyPort>>) -> Vec<String> {
    ports
        .into_iter()
        .flatten()
        .map(|p| {
            let port = match &p.port {
                Some(IntOrString::Int(i)) => i.to_string(),
                Some(IntOrString::String(s)) => s.clone(),
                None => "*".to_owned(),
            };
            format!("{}/{port}", p.protocol.as_deref().unwrap())
        })
        .collect()
}

/// One egress rule as `(peer, ports)` in words.
pub fn egress(rule: &NetworkPolicyEgressRule) -> (String, Vec<String>) {
    let to = rule.to.as_ref().unwrap();
    assert_eq!(to.len(), 1);
    (peer(&to[0]), ports(rule.ports.as_ref()))
}

/// One ingress rule as `(peer, ports)` in words.
pub fn ingress(rule: &NetworkPolicyIngressRule) -> (String, Vec<String>) {
    let from = rule.from.as_ref().unwrap();
    assert_eq!(from.len(), 1);
    (peer(&from[0]), ports(rule.ports.as_ref()))
}

/// Strings, owned.
pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// The selector of the task's runner pods, in words.
pub fn runner_pods(t: &TaskLaunch) -> String {
    format!(
        r#"{{"app.kubernetes.io/managed-by": "mainloop", "mainloop.dev/task": "{}"}} mainloop.dev/run Exists"#,
        t.task
    )
}

/// Polls `f` until it gives `Some`, every 10 ms for up to 10 s.
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

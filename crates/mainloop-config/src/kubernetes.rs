//! The `[kubernetes]` table: where and how agent runs are launched when
//! `workers.runtime = "kubernetes"` — the agent image, the URL its runners connect to,
//! the network its pods may reach, their resources and the namespace quota.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkersRuntime {
    /// On this machine, or on the user's connected runners.
    #[default]
    Local,
    /// Each run on a one-shot runner launched as a Kubernetes Job in its task's
    /// namespace (see `[kubernetes]`); this machine runs no agent.
    Kubernetes,
}

/// The Kubernetes launcher's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// A kubeconfig file; default: the pod's service account in a cluster, else
    /// `$KUBECONFIG` or `~/.kube/config`. Env: `MAINLOOP_KUBERNETES__KUBECONFIG`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Each task's namespace is this and the task's id (at most 31 characters).
    /// Default `"mainloop-task-"`.
    pub namespace_prefix: String,
    /// The agent image (`deploy/agent.Containerfile`); required with the runtime.
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`; default: the cluster's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// The server's URL as the pods reach it (e.g. `http://mainloop.mainloop.svc`);
    /// required with the runtime.
    pub server_url: String,
    /// The server's namespace and port, which the pods' network policy lets them reach
    /// (pods labelled `app.kubernetes.io/name=mainloop`). Defaults `"mainloop"`, `8080`.
    pub server_namespace: String,
    pub server_port: u16,
    /// Other destinations the pods may reach — the model APIs, the forge — as CIDRs,
    /// each with an optional port (`"203.0.113.0/24:443"`); a network policy cannot
    /// name hosts. Default none.
    pub egress: Vec<String>,
    /// Each agent container's requests and limits (`cpu`, `memory`,
    /// `ephemeral-storage`); empty: the launcher's (500m/1Gi/2Gi and 2/4Gi/10Gi).
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
    /// The task namespace's ResourceQuota (`pods`, `requests.cpu`, …); empty: the
    /// launcher's, room for a run and the one stopping before it.
    pub quota: BTreeMap<String, String>,
    /// Seconds a finished Job is kept. Default `3600`.
    pub job_ttl_secs: u32,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            namespace_prefix: "mainloop-task-".to_owned(),
            image: String::new(),
            image_pull_policy: None,
            server_url: String::new(),
            server_namespace: "mainloop".to_owned(),
            server_port: 8080,
            egress: Vec::new(),
            requests: BTreeMap::new(),
            limits: BTreeMap::new(),
            quota: BTreeMap::new(),
            job_ttl_secs: 3600,
        }
    }
}

impl KubernetesConfig {
    /// `egress` as (CIDR, port) pairs, or the entry that is not one.
    ///
    /// # Errors
    /// An entry that is not `CIDR` or `CIDR:port`.
    pub fn egress_rules(&self) -> Result<Vec<(String, Option<u16>)>, String> {
        self.egress
            .iter()
            .map(|entry| {
                let (cidr, port) = match entry.rsplit_once(':') {
                    Some((cidr, port)) if !cidr.contains(':') || cidr.contains('/') => {
                        let port = port
                            .parse::<u16>()
                            .map_err(|_| format!("{entry:?}: the port is not a number"))?;
                        (cidr, Some(port))
                    }
                    _ => (entry.as_str(), None),
                };
                if !cidr.contains('/') {
                    return Err(format!("{entry:?} is not a CIDR (e.g. 203.0.113.0/24)"));
                }
                Ok((cidr.trim().to_owned(), port))
            })
            .collect()
    }
}

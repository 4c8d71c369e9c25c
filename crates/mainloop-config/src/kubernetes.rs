//! The `[kubernetes]` table: where and how agent runs are launched when
//! `workers.runtime = "kubernetes"` — the agent image, the URL its runners connect to,
//! the network its pods may reach, their resources and the namespace quota — and
//! `[kubernetes.database]`, the task's own database where CloudNativePG is installed.

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
    /// launcher's, room for a run, the one stopping before it and the task's database.
    pub quota: BTreeMap<String, String>,
    /// Seconds a finished Job is kept. Default `3600`.
    pub job_ttl_secs: u32,
    /// A task's database, where CloudNativePG is installed.
    pub database: KubernetesDatabaseConfig,
}

/// `[kubernetes.database]`: where the cluster runs CloudNativePG, a task that asks for a
/// database gets a `Cluster` of one instance in its own namespace (deleted with it);
/// elsewhere it gets one from `workers.task_database_url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesDatabaseConfig {
    /// The database volume's size. Default `"1Gi"`.
    /// Env: `MAINLOOP_KUBERNETES__DATABASE__STORAGE_SIZE`.
    pub storage_size: String,
    /// The volume's StorageClass; default: the cluster's default class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The PostgreSQL image (CloudNativePG's `imageName`); default: the operator's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The namespace the operator runs in, whose pods may reach the database's. Default
    /// `"cnpg-system"`.
    pub operator_namespace: String,
    /// The database container's requests and limits (`cpu`, `memory`,
    /// `ephemeral-storage`); empty: the launcher's (100m/512Mi/512Mi and 1/1Gi/1Gi).
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

impl Default for KubernetesDatabaseConfig {
    fn default() -> Self {
        Self {
            storage_size: "1Gi".to_owned(),
            storage_class: None,
            image: None,
            operator_namespace: "cnpg-system".to_owned(),
            requests: BTreeMap::new(),
            limits: BTreeMap::new(),
        }
    }
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
            database: KubernetesDatabaseConfig::default(),
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

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};
    use std::collections::BTreeMap;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mainloop.toml");
        std::fs::write(&path, file).unwrap();
        let mut vars = vec![(
            "MAINLOOP_DATA_DIR".to_owned(),
            dir.path().to_string_lossy().into_owned(),
        )];
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Config::load_from(Some(&path), &vars)
    }

    #[test]
    fn the_database_table_layers_defaults_file_and_environment() {
        let d = load("", &[]).unwrap().kubernetes.database;
        assert_eq!(d.storage_size, "1Gi");
        assert_eq!(d.operator_namespace, "cnpg-system");
        assert_eq!((d.storage_class, d.image), (None, None));
        assert!(d.requests.is_empty() && d.limits.is_empty());

        let file = "[kubernetes.database]\nstorage_size = \"5Gi\"\nstorage_class = \"fast\"\n\
                    image = \"ghcr.io/cloudnative-pg/postgresql:17\"\n\
                    requests = { cpu = \"250m\" }\n";
        let d = load(file, &[]).unwrap().kubernetes.database;
        assert_eq!(d.storage_size, "5Gi");
        assert_eq!(d.storage_class.as_deref(), Some("fast"));
        assert_eq!(
            d.image.as_deref(),
            Some("ghcr.io/cloudnative-pg/postgresql:17")
        );
        assert_eq!(
            d.requests,
            BTreeMap::from([("cpu".to_owned(), "250m".to_owned())])
        );
        let d = load(
            file,
            &[
                ("MAINLOOP_KUBERNETES__DATABASE__STORAGE_SIZE", "10Gi"),
                (
                    "MAINLOOP_KUBERNETES__DATABASE__OPERATOR_NAMESPACE",
                    "postgres-operator",
                ),
            ],
        )
        .unwrap()
        .kubernetes
        .database;
        assert_eq!(d.storage_size, "10Gi", "the environment wins");
        assert_eq!(d.operator_namespace, "postgres-operator");
        assert_eq!(d.storage_class.as_deref(), Some("fast"), "the file's stays");
    }

    #[test]
    fn an_unknown_database_key_is_refused() {
        let err = load("[kubernetes.database]\nsize = \"1Gi\"\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("kubernetes.database.size"),
            "{err}"
        );
        let err = load("", &[("MAINLOOP_KUBERNETES__DATABASE__INSTANCES", "3")]).unwrap_err();
        assert!(err.to_string().contains("instances"), "{err}");
    }
}

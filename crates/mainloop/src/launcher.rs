//! The launcher the composition root picks: none with `workers.runtime = "local"`; with
//! `"kubernetes"`, the Kubernetes launcher, its client from `kubernetes.kubeconfig`, else
//! the pod's service account in a cluster, else `$KUBECONFIG` or `~/.kube/config`.

use anyhow::{Context, Result, anyhow};
use mainloop_config::{Config, WorkersRuntime};
use mainloop_kube::{
    CidrEgress, DatabaseSettings, KubeLauncher, KubeSettings, Resources, ServerEgress,
};
use mainloop_launch::Launcher;
use std::sync::Arc;

/// The configured launcher, if agents run launched.
///
/// # Errors
/// No cluster configuration to be found, or settings the launcher refuses.
pub async fn launcher(config: &Config) -> Result<Option<Arc<dyn Launcher>>> {
    if config.workers.runtime != WorkersRuntime::Kubernetes {
        return Ok(None);
    }
    let k = &config.kubernetes;
    let client_config = match &k.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("kubernetes.kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubernetes.kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes cluster configuration (set kubernetes.kubeconfig)")?,
    };
    let client = kube::Client::try_from(client_config).context("the Kubernetes client")?;
    let settings = settings(config)?;
    settings
        .validate()
        .map_err(|e| anyhow!("[kubernetes]: {e}"))?;
    tracing::info!(
        image = %settings.image,
        server_url = %settings.server_url,
        "agent runs are launched as Kubernetes Jobs"
    );
    Ok(Some(Arc::new(KubeLauncher::new(client, settings))))
}

/// `[kubernetes]` as the launcher's settings.
fn settings(config: &Config) -> Result<KubeSettings> {
    let k = &config.kubernetes;
    let defaults = KubeSettings::default();
    let server = match defaults.server {
        ServerEgress::Pods { mut peer, .. } => {
            peer.namespace.clone_from(&k.server_namespace);
            ServerEgress::Pods {
                peer,
                port: k.server_port,
            }
        }
        other @ ServerEgress::Cidr { .. } => other,
    };
    let allowed_egress = k
        .egress_rules()
        .map_err(|e| anyhow!("kubernetes.egress: {e}"))?
        .iter()
        .map(|(cidr, port)| CidrEgress::new(cidr, *port))
        .collect();
    Ok(KubeSettings {
        namespace_prefix: k.namespace_prefix.clone(),
        image: k.image.clone(),
        image_pull_policy: k.image_pull_policy.clone(),
        server_url: k.server_url.clone(),
        server,
        allowed_egress,
        resources: Resources {
            requests: or_default(&k.requests, &defaults.resources.requests),
            limits: or_default(&k.limits, &defaults.resources.limits),
        },
        quota: or_default(&k.quota, &defaults.quota),
        job_ttl_secs: i32::try_from(k.job_ttl_secs).ok(),
        database: database(&k.database, &defaults.database),
        ..defaults
    })
}

/// `[kubernetes.database]` as the launcher's database settings.
fn database(
    d: &mainloop_config::KubernetesDatabaseConfig,
    defaults: &DatabaseSettings,
) -> DatabaseSettings {
    DatabaseSettings {
        storage_size: d.storage_size.clone(),
        storage_class: d.storage_class.clone(),
        image: d.image.clone(),
        operator_namespace: d.operator_namespace.clone(),
        resources: Resources {
            requests: or_default(&d.requests, &defaults.resources.requests),
            limits: or_default(&d.limits, &defaults.resources.limits),
        },
    }
}

/// The configured table, or the launcher's own when none is configured.
fn or_default(
    configured: &std::collections::BTreeMap<String, String>,
    default: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    if configured.is_empty() {
        default.clone()
    } else {
        configured.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_database_table_maps_onto_the_launchers_settings() {
        let mut config = Config::defaults_in(std::env::temp_dir());
        let s = settings(&config).unwrap();
        assert_eq!(s.database, KubeSettings::default().database);
        let d = &mut config.kubernetes.database;
        d.storage_size = "5Gi".to_owned();
        d.storage_class = Some("fast".to_owned());
        d.image = Some("ghcr.io/cloudnative-pg/postgresql:17".to_owned());
        d.operator_namespace = "postgres-operator".to_owned();
        d.requests = BTreeMap::from([("cpu".to_owned(), "250m".to_owned())]);
        let s = settings(&config).unwrap().database;
        assert_eq!(
            (
                s.storage_size.as_str(),
                s.storage_class.as_deref(),
                s.image.as_deref()
            ),
            (
                "5Gi",
                Some("fast"),
                Some("ghcr.io/cloudnative-pg/postgresql:17")
            )
        );
        assert_eq!(s.operator_namespace, "postgres-operator");
        assert_eq!(s.resources.requests, config.kubernetes.database.requests);
        // A table left empty is the launcher's own.
        assert_eq!(
            s.resources.limits,
            DatabaseSettings::default().resources.limits
        );
    }
}

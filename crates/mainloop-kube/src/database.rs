//! A task's database, from CloudNativePG where its operator is installed: the Cluster
//! `database` in the task's namespace (one instance, the database `app` owned by `app`)
//! behind the NetworkPolicy `database`, ready once an instance is, its URL then read from
//! the Secret `database-app` the operator writes. Whether the operator is installed is
//! asked by discovery on every call (`GET /apis/postgresql.cnpg.io/v1`: a 404 means it is
//! not, and the server falls back to its own database server), so one installed later is
//! used from then on. Nothing here deletes: the database goes with the task's namespace
//! (`forget_task`), its volume with it.

use crate::error::{code, launch_error};
use crate::names::{DATABASE, DATABASE_SECRET, DATABASE_URI_KEY};
use crate::{KubeLauncher, create, objects};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject};
use mainloop_domain::TaskId;
use mainloop_launch::{LaunchError, TaskDatabase};
use secrecy::SecretString;

/// What a Cluster not ready yet is said to wait for when CloudNativePG says nothing.
pub const WAITING: &str = "waiting for CloudNativePG";

/// The API group version discovery is asked for.
const CNPG_VERSION: &str = "postgresql.cnpg.io/v1";

/// Whether the Cluster has a ready instance: `Ok(())`, or what it is waiting for (the
/// phase CloudNativePG gives it, e.g. "Setting up primary").
///
/// # Errors
/// Not ready: what it waits for, in CloudNativePG's words.
pub fn cluster_ready(cluster: &DynamicObject) -> Result<(), String> {
    let status = &cluster.data["status"];
    if status["readyInstances"].as_i64().is_some_and(|n| n >= 1) {
        return Ok(());
    }
    Err(status["phase"]
        .as_str()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or(WAITING)
        .to_owned())
}

/// The URL in the operator's Secret.
fn uri(secret: &Secret, ns: &str) -> Result<SecretString, LaunchError> {
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DATABASE_URI_KEY))
        .ok_or_else(|| {
            LaunchError::Refused(format!(
                "the Secret {DATABASE_SECRET} in {ns} has no key {DATABASE_URI_KEY} \
                 (it is CloudNativePG's, for the Cluster {DATABASE})"
            ))
        })?;
    String::from_utf8(value.0.clone())
        .map(SecretString::from)
        .map_err(|_| {
            LaunchError::Refused(format!(
                "the Secret {DATABASE_SECRET} in {ns}: its {DATABASE_URI_KEY} is not UTF-8"
            ))
        })
}

/// A failed create in the task's namespace: one that does not exist was never prepared
/// (or was forgotten), which asking again will not change.
fn creating(doing: &str, ns: &str, e: &kube::Error) -> LaunchError {
    if code(e) == Some(404) {
        LaunchError::Refused(format!(
            "{doing}: the task's namespace {ns} does not exist (prepare the task first)"
        ))
    } else {
        launch_error(doing, e)
    }
}

impl KubeLauncher {
    /// Whether CloudNativePG's API is served here. Only a 404 says no; any other failure
    /// is `Unavailable`, since answering "not offered" would send the task to another
    /// database for good.
    async fn cloudnativepg(&self) -> Result<bool, LaunchError> {
        match self.client.list_api_group_resources(CNPG_VERSION).await {
            Ok(list) => Ok(list.resources.iter().any(|r| r.name == "clusters")),
            Err(e) if code(&e) == Some(404) => Ok(false),
            Err(e) => {
                let doing = format!("asking whether CloudNativePG is installed ({CNPG_VERSION})");
                Err(match launch_error(&doing, &e) {
                    LaunchError::Refused(why) | LaunchError::Unavailable(why) => {
                        LaunchError::Unavailable(why)
                    }
                })
            }
        }
    }

    fn clusters(&self, task: TaskId) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace(task),
            &objects::cluster_resource(),
        )
    }

    /// The task's database, asked for unless it was; see the module's docs.
    pub(crate) async fn database(&self, task: TaskId) -> Result<TaskDatabase, LaunchError> {
        self.settings.validate()?;
        if !self.cloudnativepg().await? {
            return Ok(TaskDatabase::NotOffered);
        }
        let ns = self.namespace(task);
        let clusters = self.clusters(task);
        let found = clusters
            .get_opt(DATABASE)
            .await
            .map_err(|e| launch_error(&format!("reading the Cluster {DATABASE} in {ns}"), &e))?;
        let Some(cluster) = found else {
            // The policy first, so that the database's pods are fenced in from the start.
            let doing = format!("creating the NetworkPolicy {DATABASE} in {ns}");
            let policy = objects::database_policy(&self.settings, task);
            create(&self.in_task(task), &policy)
                .await
                .map_err(|e| creating(&doing, &ns, &e))?;
            let doing = format!("creating the Cluster {DATABASE} in {ns}");
            create(&clusters, &objects::cluster(&self.settings, task))
                .await
                .map_err(|e| creating(&doing, &ns, &e))?;
            // Made just now (or by a call racing this one): nothing can be ready yet.
            return Ok(TaskDatabase::Starting(WAITING.to_owned()));
        };
        if let Err(waiting) = cluster_ready(&cluster) {
            return Ok(TaskDatabase::Starting(waiting));
        }
        let secrets: Api<Secret> = self.in_task(task);
        let secret = secrets.get_opt(DATABASE_SECRET).await.map_err(|e| {
            launch_error(&format!("reading the Secret {DATABASE_SECRET} in {ns}"), &e)
        })?;
        match secret {
            Some(secret) => uri(&secret, &ns).map(TaskDatabase::Ready),
            // The operator writes it while bootstrapping; an instance ready before it is
            // seen is a moment's race, not a fault.
            None => Ok(TaskDatabase::Starting(format!(
                "waiting for CloudNativePG's Secret {DATABASE_SECRET}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use secrecy::ExposeSecret;
    use serde_json::json;

    fn cluster(status: &serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": CNPG_VERSION, "kind": "Cluster",
            "metadata": {"name": DATABASE}, "spec": {"instances": 1}, "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn ready_once_an_instance_is() {
        assert_eq!(
            cluster_ready(&cluster(&json!(null))),
            Err(WAITING.to_owned())
        );
        assert_eq!(cluster_ready(&cluster(&json!({}))), Err(WAITING.to_owned()));
        assert_eq!(
            cluster_ready(&cluster(
                &json!({"phase": "Setting up primary", "readyInstances": 0})
            )),
            Err("Setting up primary".to_owned())
        );
        assert_eq!(
            cluster_ready(&cluster(&json!({"phase": " ", "readyInstances": "1"}))),
            Err(WAITING.to_owned())
        );
        assert_eq!(
            cluster_ready(&cluster(&json!({"phase": "Cluster in healthy state",
                "readyInstances": 1}))),
            Ok(())
        );
        // Ready is ready, whatever the phase says meanwhile (a switchover, an upgrade).
        assert_eq!(
            cluster_ready(&cluster(
                &json!({"phase": "Upgrading cluster", "readyInstances": 2})
            )),
            Ok(())
        );
    }

    #[test]
    fn the_url_is_the_secrets_uri() {
        let secret = |data: &[(&str, &[u8])]| Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        let url = b"postgresql://app:pw@database-rw.ns:5432/app";
        let got = uri(&secret(&[("uri", url), ("password", b"pw")]), "ns").unwrap();
        assert_eq!(got.expose_secret().as_bytes(), url);
        let Err(LaunchError::Refused(why)) = uri(&secret(&[("password", b"pw")]), "ns") else {
            panic!("no uri is a refusal")
        };
        assert!(why.contains("has no key uri"), "{why}");
        assert!(matches!(
            uri(&secret(&[("uri", &[0xff, 0xfe])]), "ns"),
            Err(LaunchError::Refused(_))
        ));
        assert!(uri(&Secret::default(), "ns").is_err());
    }
}

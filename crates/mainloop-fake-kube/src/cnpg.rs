//! CloudNativePG in place of its operator: the [`ClusterOperator`] hook a test supplies
//! to make each new `postgresql.cnpg.io/v1` `Cluster`'s database (say, on a local
//! PostgreSQL), the Cluster's status as the operator writes it (setting up, healthy, or
//! unable to create its objects), the `<cluster>-app` Secret holding the credentials the
//! hook returned, the checks the CRD's schema makes, and telling the hook when a
//! Cluster it was given is gone.

use crate::meta;
use crate::resources::{CLUSTERS, SECRETS};
use crate::state::{Effect, Shared, State};
use crate::status::Cause;
use crate::store::Key;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;

/// The application user and database the operator made for a Cluster: what goes in
/// its `<cluster>-app` Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterCredentials {
    pub username: String,
    pub password: String,
    pub dbname: String,
    /// Where the database listens. It goes into the Secret's `host`, `uri` and the
    /// rest as given (not `<cluster>-rw`), so that a test can really connect.
    pub host: String,
    pub port: u16,
}

/// Makes the databases of Clusters, in place of CloudNativePG's operator.
pub trait ClusterOperator: Send + Sync + 'static {
    /// Called once for each new Cluster, outside the fake's lock, while its status says
    /// `Setting up primary`; the fake awaits the future on its runtime. `Ok` makes the
    /// Secret `<name>-app` and then a healthy status; `Err(message)` makes the phase
    /// `Unable to create required cluster objects` with the message as `phaseReason`.
    fn create(
        &self,
        namespace: String,
        name: String,
        cluster: Value,
    ) -> BoxFuture<'static, Result<ClusterCredentials, String>>;

    /// Called once a Cluster given to [`ClusterOperator::create`] is gone (deleted, by
    /// a client or with its namespace), and not before that `create` finished; the
    /// fake spawns the future.
    fn remove(&self, namespace: String, name: String) -> BoxFuture<'static, ()> {
        let _ = (namespace, name);
        Box::pin(async {})
    }
}

impl<F, Fut> ClusterOperator for F
where
    F: Fn(String, String, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ClusterCredentials, String>> + Send + 'static,
{
    fn create(
        &self,
        namespace: String,
        name: String,
        cluster: Value,
    ) -> BoxFuture<'static, Result<ClusterCredentials, String>> {
        Box::pin(self(namespace, name, cluster))
    }
}

/// A Cluster handed to the operator hook.
#[derive(Debug)]
pub(crate) struct ClusterRun {
    pub ns: String,
    pub name: String,
    /// The hook's `create` finished.
    pub done: bool,
    /// The Cluster went while `create` ran: `remove` waits for it.
    pub deleted: bool,
}

/// The checks of the CRD's structural schema the launcher could trip over: `spec` and
/// `spec.instances` (an integer of at least 1) are required.
pub(crate) fn check(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    if !spec.is_object() {
        causes.push(Cause::required("spec", ""));
        return;
    }
    let instances = &spec["instances"];
    let field = "spec.instances";
    let message = match instances {
        Value::Null => {
            causes.push(Cause::required(field, ""));
            return;
        }
        Value::Number(n) if n.as_u64().is_some_and(|n| n >= 1) => return,
        Value::Number(n) if n.is_i64() => {
            format!("Invalid value: {n}: {field} in body should be greater than or equal to 1")
        }
        other => format!(
            "Invalid value: {other}: {field} in body must be of type integer: {:?}",
            json_type(other)
        ),
    };
    causes.push(Cause {
        kind: "FieldValueInvalid",
        field: field.to_owned(),
        message,
    });
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Shared {
    /// Hands a new Cluster to the operator hook (or keeps it until one is set) and
    /// applies what the hook answers.
    pub(crate) fn start_cluster(self: &Arc<Self>, ns: String, name: String, uid: String) {
        let Some(operator) = self.operator() else {
            self.with(|st| st.unstarted_clusters.push((ns, name, uid)));
            return;
        };
        let Some(cluster) = self.with(|st| st.hand_over_cluster(&ns, &name, &uid)) else {
            return;
        };
        let made = operator.create(ns.clone(), name.clone(), cluster);
        let shared = Arc::downgrade(self);
        self.spawn(async move {
            let result = made.await;
            if let Some(shared) = shared.upgrade() {
                shared.with(|st| st.cluster_made(&ns, &name, &uid, result));
            }
        });
    }

    pub(crate) fn remove_cluster(&self, ns: String, name: String) {
        if let Some(operator) = self.operator() {
            self.spawn(operator.remove(ns, name));
        }
    }
}

fn uid_of(v: &Value) -> &str {
    v["metadata"]["uid"].as_str().unwrap_or("")
}

impl State {
    /// The Cluster becomes the operator's: its status says it is being set up. `None`
    /// when it is gone or was handed over already.
    fn hand_over_cluster(&mut self, ns: &str, name: &str, uid: &str) -> Option<Value> {
        let key = Key::new(CLUSTERS, ns, name);
        let mut cluster = self.store.get(&key).filter(|c| uid_of(c) == uid).cloned()?;
        if self.clusters.contains_key(uid) {
            return None;
        }
        self.clusters.insert(
            uid.to_owned(),
            ClusterRun {
                ns: ns.to_owned(),
                name: name.to_owned(),
                done: false,
                deleted: false,
            },
        );
        cluster["status"] = json!({
            "instances": instances(&cluster),
            "readyInstances": 0,
            "phase": "Setting up primary",
            "phaseReason": format!("Creating primary instance {name}-1"),
            "latestGeneratedNode": 1,
            "conditions": [ready_condition(&cluster, false)],
        });
        Some(self.store.update(key, cluster))
    }

    /// The hook answered for a Cluster.
    fn cluster_made(
        &mut self,
        ns: &str,
        name: &str,
        uid: &str,
        result: Result<ClusterCredentials, String>,
    ) {
        let Some(run) = self.clusters.get_mut(uid) else {
            return;
        };
        run.done = true;
        if run.deleted {
            self.clusters.remove(uid);
            self.effects.push(Effect::RemoveCluster {
                ns: ns.to_owned(),
                name: name.to_owned(),
            });
            return;
        }
        let key = Key::new(CLUSTERS, ns, name);
        let Some(mut cluster) = self.store.get(&key).filter(|c| uid_of(c) == uid).cloned() else {
            return;
        };
        // The Secret comes first: whoever sees the Cluster ready may read it at once.
        cluster["status"] = match result.and_then(|c| self.write_app_secret(&cluster, &c)) {
            Ok(()) => healthy(&cluster, name),
            Err(message) => json!({
                "instances": instances(&cluster),
                "readyInstances": 0,
                "phase": "Unable to create required cluster objects",
                "phaseReason": message,
                "conditions": [ready_condition(&cluster, false)],
            }),
        };
        self.store.update(key, cluster);
    }

    /// Writes `<cluster>-app` as the operator does, owned by the Cluster.
    fn write_app_secret(&mut self, cluster: &Value, c: &ClusterCredentials) -> Result<(), String> {
        let ns = cluster["metadata"]["namespace"].as_str().unwrap_or("");
        let cluster_name = cluster["metadata"]["name"].as_str().unwrap_or("");
        let name = format!("{cluster_name}-app");
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "labels": {
                    "cnpg.io/cluster": cluster_name,
                    "cnpg.io/reload": "true",
                    "cnpg.io/userType": "app",
                    "app.kubernetes.io/managed-by": "cloudnative-pg",
                },
                "ownerReferences": [{
                    "apiVersion": "postgresql.cnpg.io/v1",
                    "kind": "Cluster",
                    "name": cluster_name,
                    "uid": uid_of(cluster),
                    "controller": true,
                }],
            },
            "type": "kubernetes.io/basic-auth",
            "stringData": app_secret_data(c)?,
        });
        let written = if self.store.get(&Key::new(SECRETS, ns, &name)).is_some() {
            self.replace(SECRETS, ns, &name, secret, false, false)
        } else {
            self.create(SECRETS, ns, secret, false)
        };
        written
            .map(|_| ())
            .map_err(|e| format!("cannot write the Secret {name}: {e}"))
    }

    /// A Cluster was removed: what it owns goes (as the garbage collector would take
    /// it), and the hook hears of it once its `create` is over.
    pub(crate) fn on_cluster_removed(&mut self, gone: &Value) {
        let uid = uid_of(gone).to_owned();
        let ns = gone["metadata"]["namespace"].as_str().unwrap_or("");
        let owned: Vec<Key> = self
            .store
            .list(SECRETS, Some(ns))
            .into_iter()
            .filter(|(_, s)| {
                s["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid.as_str()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in owned {
            self.remove(&k);
        }
        match self.clusters.get_mut(&uid) {
            Some(run) if run.done => {
                let (ns, name) = (run.ns.clone(), run.name.clone());
                self.clusters.remove(&uid);
                self.effects.push(Effect::RemoveCluster { ns, name });
            }
            Some(run) => run.deleted = true,
            None => {}
        }
    }
}

fn instances(cluster: &Value) -> i64 {
    cluster["spec"]["instances"].as_i64().unwrap_or(1)
}

fn ready_condition(cluster: &Value, ready: bool) -> Value {
    let (status, reason, message) = if ready {
        ("True", "ClusterIsReady", "Cluster is Ready")
    } else {
        ("False", "ClusterIsNotReady", "Cluster Is Not Ready")
    };
    json!({
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": meta::now(),
        "observedGeneration": cluster["metadata"]["generation"],
    })
}

fn healthy(cluster: &Value, name: &str) -> Value {
    let n = instances(cluster);
    let names: Vec<String> = (1..=n).map(|i| format!("{name}-{i}")).collect();
    json!({
        "instances": n,
        "readyInstances": n,
        "phase": "Cluster in healthy state",
        "conditions": [ready_condition(cluster, true)],
        "currentPrimary": format!("{name}-1"),
        "targetPrimary": format!("{name}-1"),
        "instanceNames": names,
        "instancesStatus": {"healthy": names},
        "latestGeneratedNode": n,
        "writeService": format!("{name}-rw"),
        "readService": format!("{name}-r"),
    })
}

/// The keys of CloudNativePG's app Secret, built as the operator builds them
/// (`url.URL` strings, `pgpass` unescaped), from where the hook's database really is.
fn app_secret_data(c: &ClusterCredentials) -> Result<Value, String> {
    let host_port = if c.host.contains(':') && !c.host.starts_with('[') {
        format!("[{}]:{}", c.host, c.port)
    } else {
        format!("{}:{}", c.host, c.port)
    };
    let unusable = |what: &str| format!("the operator returned an unusable {what}");
    let mut uri = url::Url::parse(&format!("postgresql://{host_port}"))
        .map_err(|e| format!("{}: {e}", unusable("host")))?;
    uri.set_path(&c.dbname);
    let mut jdbc = uri.clone();
    uri.set_username(&c.username)
        .map_err(|()| unusable("username"))?;
    uri.set_password(Some(&c.password))
        .map_err(|()| unusable("password"))?;
    jdbc.query_pairs_mut()
        .append_pair("password", &c.password)
        .append_pair("user", &c.username);
    let (uri, jdbc) = (uri.to_string(), format!("jdbc:{jdbc}"));
    Ok(json!({
        "username": c.username,
        "user": c.username,
        "password": c.password,
        "dbname": c.dbname,
        "host": c.host,
        "port": c.port.to_string(),
        "uri": uri,
        "fqdn-uri": uri,
        "jdbc-uri": jdbc,
        "fqdn-jdbc-uri": jdbc,
        "pgpass": format!("{}:{}:{}:{}:{}\n", c.host, c.port, c.dbname, c.username, c.password),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(host: &str, password: &str) -> ClusterCredentials {
        ClusterCredentials {
            username: "app".into(),
            password: password.into(),
            dbname: "task_1".into(),
            host: host.into(),
            port: 54321,
        }
    }

    #[test]
    fn the_secret_points_at_the_hooks_database() {
        let d = app_secret_data(&creds("127.0.0.1", "p@ss:/word")).unwrap_or_default();
        assert_eq!(
            d["uri"],
            "postgresql://app:p%40ss%3A%2Fword@127.0.0.1:54321/task_1"
        );
        assert_eq!(
            d["jdbc-uri"],
            "jdbc:postgresql://127.0.0.1:54321/task_1?password=p%40ss%3A%2Fword&user=app"
        );
        assert_eq!(d["pgpass"], "127.0.0.1:54321:task_1:app:p@ss:/word\n");
        assert_eq!(
            (&d["host"], &d["port"]),
            (&json!("127.0.0.1"), &json!("54321"))
        );
        let d = app_secret_data(&creds("::1", "x")).unwrap_or_default();
        assert_eq!(d["uri"], "postgresql://app:x@[::1]:54321/task_1");
        assert!(app_secret_data(&creds("a b", "x")).is_err());
    }

    #[test]
    fn the_schema_requires_instances() {
        let msgs = |v: Value| {
            let mut causes = Vec::new();
            check(&v, &mut causes);
            causes
                .iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>()
        };
        assert_eq!(msgs(json!({})), ["spec: Required value"]);
        assert_eq!(
            msgs(json!({"spec": {}})),
            ["spec.instances: Required value"]
        );
        assert_eq!(
            msgs(json!({"spec": {"instances": 0}})),
            [
                "spec.instances: Invalid value: 0: spec.instances in body should be greater than or equal to 1"
            ]
        );
        assert_eq!(
            msgs(json!({"spec": {"instances": "1"}})),
            [
                "spec.instances: Invalid value: \"1\": spec.instances in body must be of type integer: \"string\""
            ]
        );
        assert!(msgs(json!({"spec": {"instances": 1}})).is_empty());
    }
}

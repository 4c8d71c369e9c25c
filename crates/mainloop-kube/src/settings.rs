//! What the launcher is told: the agent image and how its runners reach the server, the
//! network a task's pods may use (NetworkPolicy), their resources (container requests and
//! limits, the namespace's ResourceQuota and LimitRange), how long Jobs live, and the
//! task's database where CloudNativePG makes one ([`DatabaseSettings`]). The server's
//! configuration maps onto [`KubeSettings`]; [`KubeSettings::validate`] says what is
//! wrong with it in words.

use crate::names;
use mainloop_launch::LaunchError;
use std::collections::BTreeMap;

/// How the launcher launches. `Default` matches `deploy/kubernetes` (the server as the
/// Deployment `mainloop` in the namespace `mainloop`, port 8080) and
/// `deploy/agent.Containerfile` (uid 10001, `mainloop` on PATH); the image and the
/// allowed egress are what a deployment must set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSettings {
    /// A task's namespace is this followed by the task id's 32 hex digits: lowercase
    /// letters, digits and `-`, at most 31 characters.
    pub namespace_prefix: String,
    /// The agent image (`deploy/agent.Containerfile`).
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`; `None` leaves Kubernetes' default (`Always`
    /// for `:latest`, else `IfNotPresent`).
    pub image_pull_policy: Option<String>,
    /// The container's command; empty keeps the image's entrypoint (the agent image's is
    /// `tini -- mainloop-entrypoint`, which runs `mainloop` with the arguments, tini
    /// reaping what the agents leave). For an image without it: `["mainloop"]`.
    pub command: Vec<String>,
    /// The server's URL as the pods reach it (`--server`).
    pub server_url: String,
    /// More arguments for `mainloop runner` (e.g. `--label`, `--sandbox`), after the
    /// launcher's own.
    pub runner_args: Vec<String>,
    /// The pods' ServiceAccount; `None` is the namespace's `default`. Its token is
    /// never mounted either way.
    pub service_account_name: Option<String>,
    /// Where the pods may ask DNS (UDP and TCP 53); `None` allows no DNS at all.
    pub dns: Option<PodPeer>,
    /// How the pods reach the server.
    pub server: ServerEgress,
    /// Whatever else the pods may reach: the model APIs, the forge. NetworkPolicy cannot
    /// name hosts, so these are CIDRs (TCP, to one port or every port).
    pub allowed_egress: Vec<CidrEgress>,
    /// The runner container's requests and limits, also the LimitRange's defaults for
    /// any other container in the namespace.
    pub resources: Resources,
    /// The namespace's ResourceQuota (`spec.hard`): `pods`, `requests.cpu`,
    /// `limits.memory`, … An empty map makes no ResourceQuota.
    pub quota: BTreeMap<String, String>,
    /// A finished Job (and its pod) is deleted this long after it ended; after that its
    /// run reads as `Gone`. `None` keeps it until `stop_run` or `forget_task`.
    pub job_ttl_secs: Option<i32>,
    /// A run's pod is stopped (the run `Failed`, `DeadlineExceeded`) after this long.
    pub active_deadline_secs: Option<i64>,
    /// The task's database, where CloudNativePG is installed.
    pub database: DatabaseSettings,
}

/// The CloudNativePG `Cluster` a task's database is: one instance in the task's
/// namespace, gone with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// Its volume's size (`storage.size`), a Kubernetes quantity (`1Gi`).
    pub storage_size: String,
    /// Its volume's StorageClass; `None` is the cluster's default.
    pub storage_class: Option<String>,
    /// The PostgreSQL image (`imageName`); `None` is the operator's default.
    pub image: Option<String>,
    /// Where the operator runs: its pods may reach the database's (TCP 5432 and the
    /// instance manager's 8000).
    pub operator_namespace: String,
    /// The database container's requests and limits. They count against the namespace's
    /// quota beside a run's; a resource left out takes the LimitRange's default (the
    /// runner's), so an empty map makes the database as big as a run.
    pub resources: Resources,
}

/// Pods in one namespace, by labels: an in-cluster peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPeer {
    /// The namespace's name (matched by its `kubernetes.io/metadata.name` label).
    pub namespace: String,
    /// The pods' labels; empty matches every pod in the namespace.
    pub pod_labels: BTreeMap<String, String>,
}

/// How a task's pods reach the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEgress {
    /// The server runs in the cluster: its pods, on the port they listen on (policies
    /// see the pod's port, not a Service's).
    Pods { peer: PodPeer, port: u16 },
    /// The server is elsewhere: its address range, on one port.
    Cidr { cidr: String, port: u16 },
}

/// Egress to an address range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrEgress {
    /// `203.0.113.0/24`, `0.0.0.0/0`, `2001:db8::/32`.
    pub cidr: String,
    /// Ranges inside `cidr` that stay closed (`10.0.0.0/8`, `169.254.169.254/32`).
    pub except: Vec<String>,
    /// One TCP port, or `None` for every port and protocol.
    pub port: Option<u16>,
}

impl CidrEgress {
    /// `cidr` on TCP `port` (`None`: any).
    #[must_use]
    pub fn new(cidr: &str, port: Option<u16>) -> Self {
        Self {
            cidr: cidr.to_owned(),
            except: Vec::new(),
            port,
        }
    }
}

/// Resource quantities by name (`cpu`, `memory`, `ephemeral-storage`), as Kubernetes
/// writes them (`500m`, `2Gi`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            namespace_prefix: "mainloop-task-".to_owned(),
            image: "localhost/mainloop-agent:dev".to_owned(),
            image_pull_policy: None,
            command: Vec::new(),
            server_url: "http://mainloop.mainloop.svc".to_owned(),
            runner_args: Vec::new(),
            service_account_name: None,
            dns: Some(PodPeer {
                namespace: "kube-system".to_owned(),
                pod_labels: map(&[("k8s-app", "kube-dns")]),
            }),
            server: ServerEgress::Pods {
                peer: PodPeer {
                    namespace: "mainloop".to_owned(),
                    pod_labels: map(&[
                        ("app.kubernetes.io/name", "mainloop"),
                        ("app.kubernetes.io/component", "server"),
                    ]),
                },
                port: 8080,
            },
            allowed_egress: Vec::new(),
            resources: Resources {
                requests: map(&[
                    ("cpu", "500m"),
                    ("memory", "1Gi"),
                    ("ephemeral-storage", "2Gi"),
                ]),
                limits: map(&[
                    ("cpu", "2"),
                    ("memory", "4Gi"),
                    ("ephemeral-storage", "10Gi"),
                ]),
            },
            // Room for one run, the one stopping before it and the task's database: twice
            // `resources` plus `database.resources` (the pods of a database and of its
            // bootstrap Job never run at once).
            quota: map(&[
                ("pods", "3"),
                ("requests.cpu", "1100m"),
                ("requests.memory", "2560Mi"),
                ("requests.ephemeral-storage", "4608Mi"),
                ("limits.cpu", "5"),
                ("limits.memory", "9Gi"),
                ("limits.ephemeral-storage", "21Gi"),
            ]),
            job_ttl_secs: Some(3600),
            active_deadline_secs: None,
            database: DatabaseSettings::default(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            storage_size: "1Gi".to_owned(),
            storage_class: None,
            image: None,
            operator_namespace: "cnpg-system".to_owned(),
            // A task's test database: small, and every resource given, so the LimitRange's
            // defaults (a run's) do not apply.
            resources: Resources {
                requests: map(&[
                    ("cpu", "100m"),
                    ("memory", "512Mi"),
                    ("ephemeral-storage", "512Mi"),
                ]),
                limits: map(&[
                    ("cpu", "1"),
                    ("memory", "1Gi"),
                    ("ephemeral-storage", "1Gi"),
                ]),
            },
        }
    }
}

/// A Kubernetes quantity as written in a manifest: a number (digits, at most one `.`,
/// an optional sign) and an optional suffix (`Ki`…`Ei`, `m`, `k`, `M`…`E`, or an
/// exponent `e3`/`E3`). Only the shape is checked; the API server has the last word.
fn quantity(q: &str) -> bool {
    let q = q.strip_prefix(['+', '-']).unwrap_or(q);
    let digits = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(digits);
    let exponent = suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    number.bytes().any(|b| b.is_ascii_digit())
        && number.matches('.').count() <= 1
        && (exponent
            || [
                "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
            ]
            .contains(&suffix))
}

/// A DNS label (RFC 1123): a namespace's name.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS subdomain (RFC 1123): a StorageClass's name.
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

impl KubeSettings {
    /// What is wrong with these settings, if anything (checked again by every call that
    /// creates something, so a mistake is a refusal, never a half-made task).
    ///
    /// # Errors
    /// `LaunchError::Refused` naming the setting.
    pub fn validate(&self) -> Result<(), LaunchError> {
        let bad = |why: String| Err(LaunchError::Refused(format!("kubernetes launcher: {why}")));
        let p = &self.namespace_prefix;
        if p.len() > names::MAX_PREFIX
            || !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || p.starts_with('-')
        {
            return bad(format!(
                "namespace_prefix {p:?} must be lowercase letters, digits and '-', not \
                 starting with '-', at most {} characters",
                names::MAX_PREFIX
            ));
        }
        if self.image.trim().is_empty() {
            return bad("image is empty".to_owned());
        }
        if let Some(policy) = &self.image_pull_policy
            && !["Always", "IfNotPresent", "Never"].contains(&policy.as_str())
        {
            return bad(format!(
                "image_pull_policy {policy:?} is not Always, IfNotPresent or Never"
            ));
        }
        let url = self.server_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return bad(format!("server_url {url:?} is not an http(s) URL"));
        }
        if let ServerEgress::Pods { port: 0, .. } | ServerEgress::Cidr { port: 0, .. } = self.server
        {
            return bad("the server's port is 0".to_owned());
        }
        if self.allowed_egress.iter().any(|e| e.port == Some(0)) {
            return bad("an allowed_egress port is 0".to_owned());
        }
        if self.job_ttl_secs.is_some_and(|t| t < 0) {
            return bad("job_ttl_secs is negative".to_owned());
        }
        if self.active_deadline_secs.is_some_and(|t| t <= 0) {
            return bad("active_deadline_secs must be positive".to_owned());
        }
        self.database.validate().or_else(bad)
    }
}

impl DatabaseSettings {
    /// What is wrong, in words naming the setting.
    fn validate(&self) -> Result<(), String> {
        if !quantity(&self.storage_size) {
            return Err(format!(
                "database.storage_size {:?} is not a quantity (e.g. 1Gi)",
                self.storage_size
            ));
        }
        if let Some(class) = &self.storage_class
            && !dns_subdomain(class)
        {
            return Err(format!(
                "database.storage_class {class:?} is not a StorageClass name (lowercase \
                 letters, digits, '-' and '.')"
            ));
        }
        if let Some(image) = &self.image
            && (image.trim().is_empty() || image.contains(char::is_whitespace))
        {
            return Err(format!(
                "database.image {image:?} is not an image reference"
            ));
        }
        if !dns_label(&self.operator_namespace) {
            return Err(format!(
                "database.operator_namespace {:?} is not a namespace name",
                self.operator_namespace
            ));
        }
        let r = &self.resources;
        for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
            if let Some((name, q)) = map.iter().find(|(_, q)| !quantity(q)) {
                return Err(format!(
                    "database.{kind}.{name} {q:?} is not a quantity (e.g. 500m, 1Gi)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_mistakes_are_named() {
        assert!(KubeSettings::default().validate().is_ok());
        let refused = |s: KubeSettings| match s.validate() {
            Err(LaunchError::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let why = refused(KubeSettings {
            namespace_prefix: "Task_".to_owned(),
            ..KubeSettings::default()
        });
        assert!(why.contains("namespace_prefix"), "{why}");
        let why = refused(KubeSettings {
            namespace_prefix: "x".repeat(32),
            ..KubeSettings::default()
        });
        assert!(why.contains("at most 31"), "{why}");
        let why = refused(KubeSettings {
            server_url: "mainloop:8080".to_owned(),
            ..KubeSettings::default()
        });
        assert!(why.contains("server_url"), "{why}");
        let why = refused(KubeSettings {
            image_pull_policy: Some("Sometimes".to_owned()),
            ..KubeSettings::default()
        });
        assert!(why.contains("image_pull_policy"), "{why}");
        let why = refused(KubeSettings {
            active_deadline_secs: Some(0),
            ..KubeSettings::default()
        });
        assert!(why.contains("active_deadline_secs"), "{why}");
        let database = |d: DatabaseSettings| {
            refused(KubeSettings {
                database: d,
                ..KubeSettings::default()
            })
        };
        let d = DatabaseSettings::default;
        let why = database(DatabaseSettings {
            storage_size: "lots".to_owned(),
            ..d()
        });
        assert!(why.contains("database.storage_size \"lots\""), "{why}");
        let why = database(DatabaseSettings {
            storage_class: Some("Fast_SSD".to_owned()),
            ..d()
        });
        assert!(why.contains("database.storage_class"), "{why}");
        let why = database(DatabaseSettings {
            image: Some(" ".to_owned()),
            ..d()
        });
        assert!(why.contains("database.image"), "{why}");
        let why = database(DatabaseSettings {
            operator_namespace: "CNPG".to_owned(),
            ..d()
        });
        assert!(why.contains("database.operator_namespace"), "{why}");
        let mut r = d();
        r.resources
            .limits
            .insert("memory".to_owned(), "1 GB".to_owned());
        let why = database(r);
        assert!(why.contains("database.limits.memory"), "{why}");
        assert!(
            KubeSettings {
                database: DatabaseSettings {
                    storage_class: Some("fast.ssd-1".to_owned()),
                    image: Some("ghcr.io/cloudnative-pg/postgresql:17.5".to_owned()),
                    resources: Resources::default(),
                    ..d()
                },
                ..KubeSettings::default()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn quantities_as_kubernetes_writes_them() {
        for ok in [
            "1Gi",
            "500m",
            "2",
            "0.5",
            "1.5Gi",
            "1e3",
            "2E+2",
            "128974848",
            "+1k",
        ] {
            assert!(quantity(ok), "{ok}");
        }
        for bad in ["", "Gi", "1GB", "1 Gi", "1..5", "e3", "1e", "1Gi2", "-"] {
            assert!(!quantity(bad), "{bad}");
        }
    }

    #[test]
    fn the_default_quota_holds_two_runs_and_the_database() {
        // pods: two runs and the database's; each total twice a run's plus the
        // database's (in the units the defaults are written in).
        let s = KubeSettings::default();
        let in_units = |q: &str| -> u64 {
            let (n, unit) = q
                .find(|c: char| !c.is_ascii_digit())
                .map_or((q, ""), |i| q.split_at(i));
            let n: u64 = n.parse().unwrap();
            match unit {
                "" => n * 1000,
                "m" => n,
                "Gi" => n * 1024,
                "Mi" => n,
                other => panic!("unit {other}"),
            }
        };
        assert_eq!(s.quota["pods"], "3");
        for (kind, run, db) in [
            (
                "requests",
                &s.resources.requests,
                &s.database.resources.requests,
            ),
            ("limits", &s.resources.limits, &s.database.resources.limits),
        ] {
            for (name, q) in run {
                let want = 2 * in_units(q) + in_units(&db[name]);
                assert_eq!(
                    in_units(&s.quota[&format!("{kind}.{name}")]),
                    want,
                    "{kind}.{name}"
                );
            }
        }
    }
}

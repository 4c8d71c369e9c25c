//! A fake Kubernetes API server for the Kubernetes launcher's tests, speaking the real
//! wire format over plain HTTP on loopback: discovery, core/v1 (namespaces, pods,
//! secrets, configmaps, serviceaccounts, services, resourcequotas, limitranges, events),
//! batch/v1 Jobs, networking.k8s.io/v1 NetworkPolicies and Ingresses, and
//! coordination.k8s.io/v1 Leases, and (with [`Config::cloudnativepg`]) CloudNativePG's
//! postgresql.cnpg.io/v1 Clusters; every verb kube-rs uses (list with selectors and
//! paging, watch with bookmarks and `410 Expired`, create, replace with optimistic
//! concurrency, merge/JSON/apply patches, delete, deletecollection), namespaces that
//! terminate, a Job controller whose pods a test "runs" through [`PodRunner`] (at
//! [`Config::pod_ip`] if it wants to reach them), and a Cluster's database made by the
//! test's [`ClusterOperator`], its credentials in the `<cluster>-app` Secret.
//! Faults (failed requests, outages, ended watches, compacted history) and a request
//! log with the RBAC permission each request needed are driven from Rust or from
//! `/_fake/...` HTTP endpoints.

mod api;
mod cnpg;
mod control;
mod faults;
mod jobs;
mod kinds;
mod meta;
mod namespaces;
mod ops;
mod patch;
mod pods;
mod resources;
mod select;
mod server;
mod state;
mod status;
mod store;
mod watch;

pub use cnpg::{ClusterCredentials, ClusterOperator};
pub use faults::{Fault, Outage, Permission, RequestRecord, permissions};
pub use pods::{PodHandle, PodRunner};

use axum::Router;
use resources::Served;
use serde_json::Value;
use state::{Options, Shared};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use store::Key;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Everything that can go wrong: in the fake itself, or as an answer to a client (the
/// `Api` variant is answered as the API's `Status` object).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{code} {reason}: {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
        /// The Status's `details`.
        details: Option<Value>,
    },
}

/// How to run the fake.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How long a deleted namespace stays `Terminating` before its contents and then
    /// itself are removed.
    pub namespace_termination_delay: Duration,
    /// How often an open watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// How many watch events are kept; a watch from a resourceVersion older than the
    /// oldest kept gets `410 Expired`.
    pub history_window: usize,
    /// CloudNativePG's CRDs are installed: `clusters.postgresql.cnpg.io` is served and
    /// discovered. Without them every request to the group is a 404, as from a real
    /// API server, and discovery does not list it.
    pub cloudnativepg: bool,
    /// Every running pod's `status.podIP`/`podIPs` (say `127.0.0.1`, where a test runs
    /// pods as local processes); `None` gives each its own address in `10.244.0.0/24`.
    pub pod_ip: Option<IpAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            namespace_termination_delay: Duration::from_millis(200),
            bookmark_interval: Duration::from_secs(1),
            history_window: 1000,
            cloudnativepg: false,
            pod_ip: None,
        }
    }
}

/// A running fake. Dropping it stops the server; [`FakeKube::shutdown`] also waits.
#[derive(Debug)]
pub struct FakeKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Binds and starts serving, with the namespaces every cluster has (`default`,
    /// `kube-system`, `kube-public`).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(config: Config) -> Result<Self, Error> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let opts = Options {
            termination_delay: config.namespace_termination_delay,
            bookmark_interval: config.bookmark_interval,
            base_url: format!("http://{addr}"),
            served: Served {
                cloudnativepg: config.cloudnativepg,
            },
            pod_ip: config.pod_ip,
        };
        let shared = Shared::new(
            opts,
            config.history_window,
            tokio::runtime::Handle::current(),
        );
        shared.with(|st| {
            for ns in ["default", "kube-system", "kube-public"] {
                let obj = serde_json::json!({"metadata": {"name": ns}});
                if let Err(e) = st.create(resources::NAMESPACES, "", obj, false) {
                    tracing::error!(error = %e, "fake kube could not create namespace {ns}");
                }
            }
        });
        let api_router: Router = Router::new()
            .fallback(api::handle)
            .with_state(shared.clone());
        let app: Router = control::router(shared.clone()).fallback_service(api_router);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(server::run(
            listener,
            addr,
            app,
            shared.clone(),
            shutdown.clone(),
        ));
        Ok(Self {
            addr,
            shared,
            shutdown,
            server: Some(server),
        })
    }

    #[must_use]
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the cluster URL (`kube::Config::new(url)`).
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the hook that runs pods; pods created while none was set start now.
    pub fn set_pod_runner(&self, runner: impl PodRunner) {
        self.shared.set_runner(Some(Arc::new(runner)));
    }

    /// Pods created from now on stay `Pending` until driven through [`FakeKube::pod`].
    pub fn clear_pod_runner(&self) {
        self.shared.set_runner(None);
    }

    /// Sets the hook that makes Clusters' databases; Clusters created while none was
    /// set are handed to it now.
    pub fn set_cluster_operator(&self, operator: impl ClusterOperator) {
        self.shared.set_operator(Some(Arc::new(operator)));
    }

    /// Clusters created from now on get no status, as when no operator runs; a removal
    /// while no hook is set is told to no one.
    pub fn clear_cluster_operator(&self) {
        self.shared.set_operator(None);
    }

    /// A live (not finished, not deleted) pod.
    #[must_use]
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodHandle> {
        PodHandle::new(&self.shared, namespace, name)
    }

    /// Every live pod.
    #[must_use]
    pub fn pods(&self) -> Vec<PodHandle> {
        let names: Vec<(String, String)> = self.shared.read(|st| {
            st.pods
                .values()
                .map(|r| (r.ns.clone(), r.name.clone()))
                .collect()
        });
        names.iter().filter_map(|(ns, n)| self.pod(ns, n)).collect()
    }

    /// Kills a live pod (see [`PodHandle::kill`]).
    ///
    /// # Errors
    /// When there is no such live pod.
    pub fn kill_pod(&self, namespace: &str, name: &str) -> Result<(), Error> {
        self.pod(namespace, name)
            .ok_or_else(|| Error::not_found(&resources::TYPES[resources::PODS], name))?
            .kill()
    }

    /// Deletes a pod as a client's DELETE would.
    ///
    /// # Errors
    /// When there is no such pod.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), Error> {
        self.shared
            .with(|st| {
                st.delete(
                    resources::PODS,
                    namespace,
                    name,
                    &ops::DeleteOpts::default(),
                )
            })
            .map(|_| ())
    }

    /// Queues a fault: the next `count` matching requests fail.
    pub fn fail_next(&self, fault: Fault) {
        self.shared.with(|st| st.faults.queue.push_back(fault));
    }

    pub fn clear_faults(&self) {
        self.shared.with(|st| st.faults.queue.clear());
    }

    /// Starts (`Some`) or ends (`None`) an outage. Either kind ends the open watches.
    /// Returns once it is in force: for [`Outage::Refuse`], when the port is closed and
    /// the open connections are cut; after it, when the port is open again.
    pub async fn set_outage(&self, outage: Option<Outage>) {
        Self::outage_on(&self.shared, outage).await;
    }

    pub(crate) async fn outage_on(shared: &Arc<Shared>, outage: Option<Outage>) {
        shared.with(|st| st.faults.outage = outage);
        if outage.is_some() {
            shared.end_watches();
        }
        let refuse = outage == Some(Outage::Refuse);
        shared.refusing.send_replace(refuse);
        let mut listening = shared.listening.subscribe();
        let acknowledged = listening.wait_for(|l| *l != refuse);
        if tokio::time::timeout(Duration::from_secs(5), acknowledged)
            .await
            .is_err()
        {
            tracing::warn!("fake kube server did not acknowledge the outage change");
        }
    }

    /// Ends every open watch now, cleanly (as an apiserver restart or a load balancer
    /// timeout would); clients resume from their last resourceVersion.
    pub fn close_watches(&self) {
        self.shared.end_watches();
    }

    #[must_use]
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Drops the event history: a watch from any resourceVersion before now gets
    /// `410 Expired`.
    pub fn compact_history(&self) {
        self.shared.with(|st| st.store.compact());
    }

    /// The current (latest written) resourceVersion.
    #[must_use]
    pub fn resource_version(&self) -> u64 {
        self.shared.read(|st| st.store.rv())
    }

    /// Every API request served so far (control requests excluded), oldest first.
    #[must_use]
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.read(|st| st.log.clone())
    }

    pub fn clear_requests(&self) {
        self.shared.with(|st| st.log.clear());
    }

    /// The RBAC permissions the logged requests needed.
    #[must_use]
    pub fn permissions(&self) -> BTreeSet<Permission> {
        self.shared.read(|st| permissions(&st.log))
    }

    /// An object as stored, by `apiVersion` and `kind` (`"batch/v1"`, `"Job"`);
    /// `namespace` is ignored for cluster-scoped kinds.
    #[must_use]
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let rt = resources::find_kind(self.shared.opts.served, api_version, kind)?;
        let ns = if resources::TYPES[rt].namespaced {
            namespace
        } else {
            ""
        };
        self.shared
            .read(|st| st.store.get(&Key::new(rt, ns, name)).cloned())
    }

    /// Every object of a kind, in a namespace or (`None`) all of them.
    #[must_use]
    pub fn objects(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(rt) = resources::find_kind(self.shared.opts.served, api_version, kind) else {
            return Vec::new();
        };
        self.shared.read(|st| {
            st.store
                .list(rt, namespace)
                .into_iter()
                .map(|(_, v)| v.clone())
                .collect()
        })
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        self.shared.end_watches();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.shared.end_watches();
    }
}

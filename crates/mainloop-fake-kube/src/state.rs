//! The fake's shared state behind one lock: the store, the faults, the request log,
//! the pods' stop signals, the Jobs' and the CloudNativePG Clusters' bookkeeping; and
//! the effects a change leaves to run once the lock is released (starting a pod through
//! the runner hook, handing a Cluster to the operator hook or telling it one is gone,
//! timers for namespace purges, Job deadlines and TTLs).

use crate::cnpg::{ClusterOperator, ClusterRun};
use crate::faults::{Faults, RequestRecord};
use crate::jobs::JobTrack;
use crate::pods::{PodHandle, PodRunner};
use crate::resources::Served;
use crate::store::Store;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// What the server does on its own schedule.
#[derive(Clone, Debug)]
pub(crate) enum Timer {
    /// Removes a terminating namespace's contents, then the namespace.
    PurgeNamespace { name: String, uid: String },
    /// Re-examines a Job (its active deadline passed).
    ReconcileJob { ns: String, name: String },
    /// Deletes a finished Job whose `ttlSecondsAfterFinished` passed.
    DeleteJob {
        ns: String,
        name: String,
        uid: String,
    },
}

/// Work a change leaves for after the lock.
#[derive(Debug)]
pub(crate) enum Effect {
    StartPod {
        ns: String,
        name: String,
    },
    /// Hands a new Cluster (by uid, as a namesake may follow) to the operator hook.
    StartCluster {
        ns: String,
        name: String,
        uid: String,
    },
    /// Tells the operator hook a Cluster it was given is gone.
    RemoveCluster {
        ns: String,
        name: String,
    },
    After(Duration, Timer),
}

/// A pod the fake is "running": the signal that tells its runner to stop.
#[derive(Debug, Clone)]
pub(crate) struct PodRun {
    pub ns: String,
    pub name: String,
    pub stop: CancellationToken,
}

#[derive(Debug)]
pub(crate) struct State {
    pub store: Store,
    pub faults: Faults,
    pub log: Vec<RequestRecord>,
    /// Live pods by uid.
    pub pods: HashMap<String, PodRun>,
    /// Jobs' counts by Job uid.
    pub jobs: HashMap<String, JobTrack>,
    /// Pods created while no runner was set, started when one is.
    pub unstarted: Vec<(String, String)>,
    /// Clusters handed to the operator hook, by uid.
    pub clusters: HashMap<String, ClusterRun>,
    /// Clusters (namespace, name, uid) created while no operator was set, handed to
    /// it when one is.
    pub unstarted_clusters: Vec<(String, String, String)>,
    pub effects: Vec<Effect>,
    /// How long a deleted namespace stays `Terminating` before its purge.
    pub termination_delay: Duration,
    /// Every pod's IP when set (else one of `10.244.0.0/24`).
    pub pod_ip: Option<IpAddr>,
}

/// Settings fixed at start.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub termination_delay: Duration,
    pub bookmark_interval: Duration,
    pub base_url: String,
    pub served: Served,
    pub pod_ip: Option<IpAddr>,
}

/// The state and what reaches it: the runner hook, the signals to watches and to the
/// listener.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub opts: Options,
    runner: Mutex<Option<Arc<dyn PodRunner>>>,
    operator: Mutex<Option<Arc<dyn ClusterOperator>>>,
    /// Bumped to end every open watch.
    pub watch_epoch: tokio::sync::watch::Sender<u64>,
    /// Open watches, for the control API.
    pub open_watches: std::sync::atomic::AtomicUsize,
    /// True while connections are refused.
    pub refusing: tokio::sync::watch::Sender<bool>,
    /// True while the server accepts connections (it acknowledges `refusing` here).
    pub listening: tokio::sync::watch::Sender<bool>,
    rt: Handle,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(opts: Options, history_window: usize, rt: Handle) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                store: Store::new(history_window),
                faults: Faults::default(),
                log: Vec::new(),
                pods: HashMap::new(),
                jobs: HashMap::new(),
                unstarted: Vec::new(),
                clusters: HashMap::new(),
                unstarted_clusters: Vec::new(),
                effects: Vec::new(),
                termination_delay: opts.termination_delay,
                pod_ip: opts.pod_ip,
            }),
            opts,
            runner: Mutex::new(None),
            operator: Mutex::new(None),
            watch_epoch: tokio::sync::watch::Sender::new(0),
            open_watches: std::sync::atomic::AtomicUsize::new(0),
            refusing: tokio::sync::watch::Sender::new(false),
            listening: tokio::sync::watch::Sender::new(true),
            rt,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock, then the effects it left.
    pub(crate) fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
        let (r, effects) = {
            let mut st = self.lock();
            let r = f(&mut st);
            (r, std::mem::take(&mut st.effects))
        };
        self.run_effects(effects);
        r
    }

    /// Reads under the lock; `f` must leave no effects.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    pub(crate) fn set_runner(self: &Arc<Self>, runner: Option<Arc<dyn PodRunner>>) {
        *self.runner.lock().unwrap_or_else(PoisonError::into_inner) = runner;
        let waiting = self.with(|st| std::mem::take(&mut st.unstarted));
        self.run_effects(
            waiting
                .into_iter()
                .map(|(ns, name)| Effect::StartPod { ns, name })
                .collect(),
        );
    }

    pub(crate) fn set_operator(self: &Arc<Self>, operator: Option<Arc<dyn ClusterOperator>>) {
        *self.operator.lock().unwrap_or_else(PoisonError::into_inner) = operator;
        let waiting = self.with(|st| std::mem::take(&mut st.unstarted_clusters));
        self.run_effects(
            waiting
                .into_iter()
                .map(|(ns, name, uid)| Effect::StartCluster { ns, name, uid })
                .collect(),
        );
    }

    pub(crate) fn operator(&self) -> Option<Arc<dyn ClusterOperator>> {
        self.operator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs a task on the fake's runtime (effects may run on threads outside it).
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.rt.spawn(fut);
    }

    pub(crate) fn end_watches(&self) {
        self.watch_epoch.send_modify(|e| *e += 1);
    }

    fn run_effects(self: &Arc<Self>, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::StartPod { ns, name } => self.start_pod(ns, name),
                Effect::StartCluster { ns, name, uid } => self.start_cluster(ns, name, uid),
                Effect::RemoveCluster { ns, name } => self.remove_cluster(ns, name),
                Effect::After(delay, timer) => {
                    let shared = Arc::downgrade(self);
                    self.rt.spawn(async move {
                        tokio::time::sleep(delay).await;
                        if let Some(shared) = shared.upgrade() {
                            shared.with(|st| st.fire(timer));
                        }
                    });
                }
            }
        }
    }

    fn start_pod(self: &Arc<Self>, ns: String, name: String) {
        let runner = self
            .runner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(runner) = runner else {
            self.lock().unstarted.push((ns, name));
            return;
        };
        if let Some(handle) = PodHandle::new(self, &ns, &name) {
            runner.start(handle);
        }
    }
}

impl State {
    fn fire(&mut self, timer: Timer) {
        match timer {
            Timer::PurgeNamespace { name, uid } => self.purge_namespace(&name, &uid),
            Timer::ReconcileJob { ns, name } => self.reconcile_job(&ns, &name),
            Timer::DeleteJob { ns, name, uid } => self.expire_job(&ns, &name, &uid),
        }
    }
}

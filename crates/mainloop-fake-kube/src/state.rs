//! The fake's shared state behind one lock: the store, the faults, the request log,
//! the pods' stop signals and the Jobs' bookkeeping; and the effects a change leaves to
//! run once the lock is released (starting a pod through the runner hook, timers for
//! namespace purges, Job deadlines and TTLs).

use crate::faults::{Faults, RequestRecord};
use crate::jobs::JobTrack;
use crate::pods::{PodHandle, PodRunner};
use crate::store::Store;
use std::collections::HashMap;
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
    StartPod { ns: String, name: String },
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
    pub effects: Vec<Effect>,
    /// How long a deleted namespace stays `Terminating` before its purge.
    pub termination_delay: Duration,
}

/// Settings fixed at start.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub termination_delay: Duration,
    pub bookmark_interval: Duration,
    pub base_url: String,
}

/// The state and what reaches it: the runner hook, the signals to watches and to the
/// listener.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub opts: Options,
    runner: Mutex<Option<Arc<dyn PodRunner>>>,
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
                effects: Vec::new(),
                termination_delay: opts.termination_delay,
            }),
            opts,
            runner: Mutex::new(None),
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

    pub(crate) fn end_watches(&self) {
        self.watch_epoch.send_modify(|e| *e += 1);
    }

    fn run_effects(self: &Arc<Self>, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::StartPod { ns, name } => self.start_pod(ns, name),
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

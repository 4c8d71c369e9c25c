//! The Kubernetes launcher: `mainloop_launch::Launcher` through kube-rs. Each task gets a
//! namespace of its own (`<prefix><task id's hex>`, labelled as the launcher's) with a
//! NetworkPolicy fencing in its runner pods (ingress only from the server, on any TCP
//! port, for previews; egress to DNS, the server, the task's database and the allowed
//! CIDRs), a ResourceQuota and a LimitRange, with the runner's token and the agent's
//! credentials in the Secret `runner`; each agent run of it is a Job (`backoffLimit: 0`)
//! whose one pod runs `mainloop runner --once` as the agent image's unprivileged user.
//! Where CloudNativePG is installed, a task's database is a `Cluster` in its namespace
//! behind a NetworkPolicy of its own (`database.rs`); the server reaches a running
//! runner at its pod's address. Every call is idempotent: what exists is found (a 409 on
//! create is success, the Secret's data is replaced so a rotated token lands), what is
//! gone is success to delete; everything goes with the namespace. What the objects look
//! like is `objects.rs`; a run's state and the runner's address, `state.rs`; errors,
//! `error.rs`.

mod database;
mod error;
pub mod names;
mod objects;
mod settings;
mod state;

pub use settings::{CidrEgress, DatabaseSettings, KubeSettings, PodPeer, Resources, ServerEgress};

use error::{code, launch_error};
use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Client, Resource};
use mainloop_domain::TaskId;
use mainloop_launch::{LaunchError, Launcher, RunState, TaskDatabase, TaskLaunch};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

/// How many namespaces one list call asks for.
const PAGE: u32 = 500;

/// Launches each agent run of a task as a Job in the task's own namespace.
#[derive(Clone)]
pub struct KubeLauncher {
    client: Client,
    settings: KubeSettings,
}

impl fmt::Debug for KubeLauncher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeLauncher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A namespace that is being deleted.
fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Creates `obj` unless it exists: `Ok(true)` made, `Ok(false)` found.
async fn create<K>(api: &Api<K>, obj: &K) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(e) if code(&e) == Some(409) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A failed write into a task's namespace while preparing it. The namespace can go
/// between the calls (a `forget_task` racing): its contents then answer 404, and
/// preparing again makes it afresh.
fn preparing(doing: &str, ns: &str, e: &kube::Error) -> LaunchError {
    if code(e) == Some(404) {
        LaunchError::Unavailable(format!(
            "{doing}: the namespace {ns} went away while it was prepared"
        ))
    } else {
        launch_error(doing, e)
    }
}

impl KubeLauncher {
    /// A launcher on `client` (in a pod, `kube::Client::try_default()` or one from
    /// `kube::Config::incluster()`). The settings are checked by each call that creates
    /// something; check them at start with [`KubeSettings::validate`].
    #[must_use]
    pub const fn new(client: Client, settings: KubeSettings) -> Self {
        Self { client, settings }
    }

    #[must_use]
    pub const fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    /// The task's namespace.
    #[must_use]
    pub fn namespace(&self, task: TaskId) -> String {
        names::namespace(&self.settings.namespace_prefix, task)
    }

    fn in_task<K>(&self, task: TaskId) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace(task))
    }

    /// The task's namespace, made or found: it must be this launcher's for this task and
    /// not being deleted.
    async fn ensure_namespace(&self, task: TaskId) -> Result<(), LaunchError> {
        let name = self.namespace(task);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let doing = format!("creating the namespace {name}");
        let ns = objects::namespace(&self.settings, task);
        if create(&api, &ns)
            .await
            .map_err(|e| launch_error(&doing, &e))?
        {
            return Ok(());
        }
        let found = api
            .get_opt(&name)
            .await
            .map_err(|e| launch_error(&format!("reading the namespace {name}"), &e))?;
        let Some(found) = found else {
            // Deleted between the two calls: it was terminating.
            return Err(LaunchError::Unavailable(format!(
                "the namespace {name} was being deleted; prepare the task again"
            )));
        };
        if names::task_of(&found, &self.settings.namespace_prefix) != Some(task) {
            return Err(LaunchError::Refused(format!(
                "the namespace {name} exists and is not the launcher's for task {task} \
                 (labels {}={}, {}={task})",
                names::MANAGED_BY,
                names::MANAGER,
                names::TASK_LABEL
            )));
        }
        if terminating(&found) {
            return Err(LaunchError::Unavailable(format!(
                "the namespace {name} is still being deleted (Terminating); try again when it is gone"
            )));
        }
        Ok(())
    }

    async fn prepare(&self, task: &TaskLaunch) -> Result<(), LaunchError> {
        self.settings.validate()?;
        let mut seen = BTreeSet::new();
        for (name, _) in &task.credentials {
            names::check_credential(name)?;
            if !seen.insert(name.as_str()) {
                return Err(LaunchError::Refused(format!(
                    "the credential {name} is given twice"
                )));
            }
        }
        self.ensure_namespace(task.task).await?;
        let ns = self.namespace(task.task);
        let s = &self.settings;
        let doing = format!("creating the NetworkPolicy runner in {ns}");
        let policy = objects::network_policy(s, task.task);
        create(&self.in_task(task.task), &policy)
            .await
            .map_err(|e| preparing(&doing, &ns, &e))?;
        if let Some(quota) = objects::resource_quota(s, task.task) {
            let doing = format!("creating the ResourceQuota runner in {ns}");
            create(&self.in_task(task.task), &quota)
                .await
                .map_err(|e| preparing(&doing, &ns, &e))?;
        }
        if let Some(limits) = objects::limit_range(s, task.task) {
            let doing = format!("creating the LimitRange runner in {ns}");
            create(&self.in_task(task.task), &limits)
                .await
                .map_err(|e| preparing(&doing, &ns, &e))?;
        }
        let secret = objects::secret(task);
        let secrets: Api<Secret> = self.in_task(task.task);
        let doing = format!("creating the Secret runner in {ns}");
        let made = create(&secrets, &secret)
            .await
            .map_err(|e| preparing(&doing, &ns, &e))?;
        if !made {
            // Found: its data replaced whole (no resourceVersion: unconditionally), so a
            // rotated token or a changed credential lands and a removed one goes.
            let doing = format!("updating the Secret runner in {ns}");
            secrets
                .replace(names::RUNNER, &PostParams::default(), &secret)
                .await
                .map_err(|e| preparing(&doing, &ns, &e))?;
        }
        Ok(())
    }

    async fn start(&self, task: &TaskLaunch, run: &str) -> Result<(), LaunchError> {
        self.settings.validate()?;
        names::check_run(run)?;
        let ns = self.namespace(task.task);
        let jobs: Api<Job> = self.in_task(task.task);
        let job = objects::job(&self.settings, task, run);
        match jobs.create(&PostParams::default(), &job).await {
            // Made, or made before (run names are unique per run of a task).
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some(409) => Ok(()),
            Err(e) if code(&e) == Some(404) => Err(LaunchError::Refused(format!(
                "starting the run {run}: the task's namespace {ns} does not exist (prepare the task first)"
            ))),
            Err(e) => Err(launch_error(&format!("creating the Job {run} in {ns}"), &e)),
        }
    }

    async fn state(&self, task: TaskId, run: &str) -> Result<RunState, LaunchError> {
        names::check_run(run)?;
        let ns = self.namespace(task);
        let jobs: Api<Job> = self.in_task(task);
        let job = jobs
            .get_opt(run)
            .await
            .map_err(|e| launch_error(&format!("reading the Job {run} in {ns}"), &e))?;
        let Some(job) = job else {
            return Ok(RunState::Gone);
        };
        if !state::needs_pods(&job) {
            return Ok(state::run_state(&job, &[]));
        }
        let pods = match job.metadata.uid.as_deref() {
            Some(uid) => {
                let pods: Api<Pod> = self.in_task(task);
                let lp = ListParams::default().labels(&format!("{}={uid}", names::CONTROLLER_UID));
                pods.list(&lp)
                    .await
                    .map_err(|e| {
                        launch_error(&format!("listing the pods of the Job {run} in {ns}"), &e)
                    })?
                    .items
            }
            None => Vec::new(),
        };
        Ok(state::run_state(&job, &pods))
    }

    async fn stop(&self, task: TaskId, run: &str) -> Result<(), LaunchError> {
        names::check_run(run)?;
        let jobs: Api<Job> = self.in_task(task);
        // Background: the Job goes now and the garbage collector takes its pod (the
        // default for batch/v1, Orphan, would leave the pod running).
        match jobs.delete(run, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some(404) => Ok(()),
            Err(e) => Err(launch_error(
                &format!("deleting the Job {run} in {}", self.namespace(task)),
                &e,
            )),
        }
    }

    async fn address(&self, task: TaskId) -> Result<Option<IpAddr>, LaunchError> {
        let pods: Api<Pod> = self.in_task(task);
        let lp = ListParams::default().labels(&names::runner_pods(task));
        match pods.list(&lp).await {
            Ok(list) => Ok(state::running_address(&list.items)),
            // No namespace (never prepared, or forgotten): no runner either.
            Err(e) if code(&e) == Some(404) => Ok(None),
            Err(e) => Err(launch_error(
                &format!("listing the runner pods in {}", self.namespace(task)),
                &e,
            )),
        }
    }

    async fn forget(&self, task: TaskId) -> Result<(), LaunchError> {
        let name = self.namespace(task);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let found = api
            .get_opt(&name)
            .await
            .map_err(|e| launch_error(&format!("reading the namespace {name}"), &e))?;
        let Some(found) = found else {
            return Ok(());
        };
        if names::task_of(&found, &self.settings.namespace_prefix) != Some(task) {
            return Err(LaunchError::Refused(format!(
                "the namespace {name} is not the launcher's for task {task}: left alone"
            )));
        }
        if terminating(&found) {
            return Ok(());
        }
        // Only the namespace just read: not one made again since under the same name.
        let dp = DeleteParams::default().preconditions(Preconditions {
            uid: found.metadata.uid.clone(),
            resource_version: None,
        });
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some(404) => Ok(()),
            Err(e) => Err(launch_error(&format!("deleting the namespace {name}"), &e)),
        }
    }

    async fn launched(&self) -> Result<Vec<TaskId>, LaunchError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut lp = ListParams::default()
            .labels(&names::managed_selector())
            .limit(PAGE);
        let mut tasks = BTreeSet::new();
        loop {
            let page = api
                .list(&lp)
                .await
                .map_err(|e| launch_error("listing the launcher's namespaces", &e))?;
            tasks.extend(
                page.items
                    .iter()
                    .filter(|ns| !terminating(ns))
                    .filter_map(|ns| names::task_of(ns, &self.settings.namespace_prefix)),
            );
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = lp.continue_token(&token),
                None => break,
            }
        }
        Ok(tasks.into_iter().collect())
    }
}

impl Launcher for KubeLauncher {
    fn prepare_task<'a>(&'a self, task: &'a TaskLaunch) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(self.prepare(task))
    }

    fn start_run<'a>(
        &'a self,
        task: &'a TaskLaunch,
        run: &'a str,
    ) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(self.start(task, run))
    }

    fn run_state<'a>(
        &'a self,
        task: TaskId,
        run: &'a str,
    ) -> BoxFuture<'a, Result<RunState, LaunchError>> {
        Box::pin(self.state(task, run))
    }

    fn stop_run<'a>(
        &'a self,
        task: TaskId,
        run: &'a str,
    ) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(self.stop(task, run))
    }

    fn task_database(&self, task: TaskId) -> BoxFuture<'_, Result<TaskDatabase, LaunchError>> {
        Box::pin(self.database(task))
    }

    fn task_address(&self, task: TaskId) -> BoxFuture<'_, Result<Option<IpAddr>, LaunchError>> {
        Box::pin(self.address(task))
    }

    fn forget_task(&self, task: TaskId) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(self.forget(task))
    }

    fn launched_tasks(&self) -> BoxFuture<'_, Result<Vec<TaskId>, LaunchError>> {
        Box::pin(self.launched())
    }
}

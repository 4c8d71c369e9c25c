//! Previews with a launcher: the task's preview runs in a pod of its own namespace — a
//! runner launched for it like a run's (the workspace prepared from this machine's
//! worktree, the task's ports, database and setup there) — and the proxy reaches it at
//! the pod's address. While the task's agent works in its pod the preview waits for
//! that run to end (the run's copy is the agent's); an agent run that starts while the
//! preview's pod is up works in that pod, and the pod — with the preview — ends with it.

use std::net::SocketAddr;
use std::time::Duration;

use mainloop_domain::TaskId;
use mainloop_domain::records::Task;
use tokio_util::sync::CancellationToken;

use crate::Runtime;
use crate::confine::{Confined, with_vars};
use crate::environment::Stop;
use crate::on_runner::{OnRunner, Site};
use crate::preview::{Plan, Started};

/// How long a preview's pod may take to be launched, connect and be prepared.
const POD_WITHIN: Duration = Duration::from_secs(600);

impl Runtime {
    /// Launches a pod for task `id`'s preview and starts `plan` there. The task counts
    /// as previewing from the start, so the collection of stray pods leaves it alone.
    pub(crate) async fn preview_in_pod(&self, id: TaskId, plan: &Plan) -> Result<Started, String> {
        if let Ok(mut p) = self.inner.previewing.lock() {
            p.insert(id);
        }
        let started = self.launch_preview(id, plan).await;
        if started.is_err()
            && let Ok(mut p) = self.inner.previewing.lock()
        {
            p.remove(&id);
        }
        started
    }

    async fn launch_preview(&self, id: TaskId, plan: &Plan) -> Result<Started, String> {
        let engine = &self.inner.engine;
        let (user, task) = engine
            .task_any_user(id)
            .await
            .map_err(|e| format!("could not read the task: {e}"))?
            .ok_or("the task no longer exists")?;
        let busy = self.inner.running.lock().is_ok_and(|r| r.contains_key(&id));
        let leased = engine
            .run_lease(id)
            .await
            .map_err(|e| format!("could not read the task's lease: {e}"))?;
        if busy || leased.is_some() {
            return Err(
                "the task's agent is at work in its pod; open its preview when this run ends"
                    .to_owned(),
            );
        }
        let cancel = CancellationToken::new();
        let site =
            tokio::time::timeout(POD_WITHIN, self.site_for(user, &task, &plan.wt, &cancel)).await;
        let on = match site {
            Ok(Ok(Some(Site::Runner(on)))) if on.launched.is_some() => on,
            Ok(Ok(Some(Site::Runner(on)))) => {
                // One of the user's own runners, leased for this: let it go again.
                self.end_launched(&task, on.runner, None).await;
                return Err("the task was placed on a runner, where previews do not run".to_owned());
            }
            Ok(Ok(_)) => return Err("no pod could be launched for the preview".to_owned()),
            Ok(Err(e)) => return Err(format!("could not launch the preview's pod: {e}")),
            Err(_) => {
                return Err(format!(
                    "the preview's pod was not ready within {} s",
                    POD_WITHIN.as_secs()
                ));
            }
        };
        let epoch = engine.run_lease(id).await.ok().flatten().map(|l| l.epoch);
        match self.start_in_pod(user, &task, plan, &on, &cancel).await {
            Ok((placed, addr)) => {
                let rt = self.clone();
                let on_exit = Box::pin(async move {
                    if let Ok(mut p) = rt.inner.previewing.lock() {
                        p.remove(&task.id);
                    }
                    rt.end_preview_pod(&task, &on, epoch).await;
                });
                Ok(Started {
                    placed,
                    addr,
                    on_exit,
                })
            }
            Err(why) => {
                self.end_preview_pod(&task, &on, epoch).await;
                Err(why)
            }
        }
    }

    async fn start_in_pod(
        &self,
        user: mainloop_domain::UserId,
        task: &Task,
        plan: &Plan,
        on: &OnRunner,
        cancel: &CancellationToken,
    ) -> Result<(mainloop_agent::Placed, SocketAddr), String> {
        let vars = match self.prepare_on(user, task, &plan.wt, on, cancel).await {
            Ok(vars) => vars,
            // A preview that cannot start fails itself, never the task.
            Err(Stop::Fail(why)) => return Err(why),
            Err(Stop::Retry(e)) => return Err(e.to_string()),
            Err(Stop::Cancelled) => return Err("cancelled".to_owned()),
        };
        let env = with_vars(self.inner.config.agent_env.clone(), vars);
        let confined = Confined::on_runner(env, &on.home);
        let placed = on
            .shell(self, task, plan.command.clone(), confined.env)
            .map_err(|e| format!("could not start the preview `{}`: {e}", plan.command))?;
        let launcher = self.launcher().ok_or("no launcher")?;
        let ip = launcher
            .task_address(task.id)
            .await
            .map_err(|e| format!("could not find the preview's pod: {e}"))?
            .ok_or("the preview's pod has no address")?;
        Ok((placed, SocketAddr::new(ip, plan.port)))
    }

    /// Ends the preview's pod, unless a run of the task took it over (that run ends it)
    /// or the task's lease is another's now.
    async fn end_preview_pod(&self, task: &Task, on: &OnRunner, epoch: Option<i64>) {
        if self
            .inner
            .running
            .lock()
            .is_ok_and(|r| r.contains_key(&task.id))
        {
            return;
        }
        let lease = self.inner.engine.run_lease(task.id).await.ok().flatten();
        if lease.is_some_and(|l| Some(l.epoch) != epoch) {
            return;
        }
        let run = on.launched.as_ref().and_then(|l| l.run.as_deref());
        self.end_launched(task, on.runner, run).await;
    }
}

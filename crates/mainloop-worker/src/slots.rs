//! Which agents run and where: the registry of agents by name, each with its own
//! concurrency cap, and the scheduler tick that gathers every site's offer and load
//! (this machine's slots, the queued tasks' users' connected runners and their leases)
//! for the domain's pure `place_queue`, then carries out what it decides: a slot here,
//! a lease on a runner, or the sentence a waiting task shows.

use mainloop_agent::Agent;
use mainloop_domain::agents::{AgentName, Protocol};
use mainloop_domain::placement::{self, Needs, Place, Queued};
use mainloop_domain::task::{TaskEvent, TaskState};
use mainloop_domain::{RunnerId, TaskId, UserId};
use mainloop_engine::{EngineError, RunAgent, RunnerState};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::convention::Lifecycle;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The agents the runtime runs, by their configured name.
#[derive(Clone, Debug, Default)]
pub struct AgentRegistry {
    agents: BTreeMap<AgentName, Arc<dyn Agent>>,
    lifecycles: BTreeMap<AgentName, Lifecycle>,
    caps: BTreeMap<AgentName, usize>,
}

impl AgentRegistry {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `agent`, which speaks `protocol`, under `name`, at most `max_concurrent`
    /// runs of it at once (`None`: only the global cap).
    #[must_use]
    pub fn with(
        mut self,
        name: AgentName,
        agent: Arc<dyn Agent>,
        protocol: Protocol,
        max_concurrent: Option<usize>,
    ) -> Self {
        if let Some(cap) = max_concurrent {
            self.caps.insert(name.clone(), cap.max(1));
        }
        self.lifecycles
            .insert(name.clone(), Lifecycle::of(protocol.capabilities()));
        self.agents.insert(name, agent);
        self
    }

    /// How the agent `name` plans and asks.
    #[must_use]
    pub fn lifecycle(&self, name: &AgentName) -> Lifecycle {
        self.lifecycles.get(name).copied().unwrap_or_default()
    }

    #[must_use]
    pub fn get(&self, name: &AgentName) -> Option<&Arc<dyn Agent>> {
        self.agents.get(name)
    }

    #[must_use]
    pub fn caps(&self) -> &BTreeMap<AgentName, usize> {
        &self.caps
    }

    /// The names of every agent this server runs.
    pub fn names(&self) -> BTreeSet<AgentName> {
        self.agents.keys().cloned().collect()
    }

    /// One semaphore per capped agent: a run holds a permit while its agent works.
    pub(crate) fn permits(&self) -> HashMap<AgentName, Arc<Semaphore>> {
        self.caps
            .iter()
            .map(|(name, cap)| (name.clone(), Arc::new(Semaphore::new(*cap))))
            .collect()
    }
}

/// The plain words for a task whose agent this build has no adapter for.
#[must_use]
pub fn unavailable(agent: &AgentName) -> String {
    format!("The {agent} agent is not available in this build yet.")
}

/// Moves a queued task into work; one that moved on meanwhile is left alone.
async fn grant_slot(engine: &mainloop_engine::Engine, id: TaskId) -> mainloop_engine::Result<()> {
    match engine
        .apply_task_event(None, id, TaskEvent::SlotGranted)
        .await
    {
        Ok(_) | Err(EngineError::WrongState(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What a run of `task` needs of its site. A runner reaches a task's repository over
/// the server's git: a local repository by its path, a forge task's through its
/// worktree of the server's clone.
pub(crate) fn needs(task: &mainloop_domain::records::Task) -> Needs {
    use mainloop_domain::records::Workplace;
    Needs {
        agent: task.agent.clone(),
        labels: task.runner_labels.clone(),
        on_runner: match task.workplace {
            Workplace::Local => std::path::Path::new(&task.repo).is_absolute(),
            Workplace::Forge => true,
        },
    }
}

/// Queued tasks looked at per tick: beyond the free slots, so that a capped agent's or
/// a labelled backlog does not hide the tasks behind it.
const QUEUE_LOOKAHEAD: i64 = 200;
/// Tasks whose agent runs now, at most (a lease counts as busy while its task is one).
const RUNNING_LIMIT: i64 = 10_000;

impl crate::Runtime {
    /// Places queued tasks, oldest first: each where `placement::place_queue` puts it
    /// (here, within the global and per-agent caps; or on one of its user's connected
    /// runners with the labels and agent it needs, under a lease), or leaves it queued
    /// with the reason on its status line, said once.
    pub(crate) async fn place_queued(&self) -> mainloop_engine::Result<()> {
        let engine = &self.inner.engine;
        let paused = engine.paused_users().await?;
        let queued: Vec<(UserId, mainloop_domain::records::Task)> = engine
            .tasks_in_states(&[TaskState::Queued], QUEUE_LOOKAHEAD)
            .await?
            .into_iter()
            .filter(|(user, _)| !paused.contains(user))
            .collect();
        if queued.is_empty() {
            return Ok(());
        }
        let running = self.running_tasks().await?;
        let mut remote_running = 0usize;
        for id in &running {
            if engine.run_lease(*id).await?.is_some() {
                remote_running += 1;
            }
        }
        let mut runners = Vec::new();
        let owners: BTreeSet<UserId> = queued.iter().map(|(u, _)| *u).collect();
        for owner in owners {
            runners.extend(self.connected_runners(owner, &running).await?);
        }
        let unfinished = usize::try_from(engine.count_unfinished::<RunAgent>().await?).unwrap_or(0);
        let caps = self.inner.agents.caps().clone();
        let busy_by_agent = if caps.is_empty() {
            BTreeMap::new()
        } else {
            engine
                .unfinished_by_agent::<RunAgent>()
                .await?
                .into_iter()
                .map(|(agent, n)| (agent, usize::try_from(n).unwrap_or(0)))
                .collect()
        };
        let local = self.local_site(
            unfinished.saturating_sub(remote_running),
            busy_by_agent,
            engine.held_agents().await?,
        );
        // A task whose agent this build has no adapter for gets no site anywhere: its
        // run starts at once and fails saying so.
        let (unavailable, queued): (Vec<_>, Vec<_>) = queued
            .into_iter()
            .partition(|(_, t)| self.inner.agents.get(&t.agent).is_none());
        for (_, t) in &unavailable {
            grant_slot(engine, t.id).await?;
        }
        let queue: Vec<Queued> = queued
            .iter()
            .map(|(owner, t)| Queued {
                task: t.id,
                owner: *owner,
                needs: needs(t),
                warm: self.warm(t.id),
            })
            .collect();
        let owner_of: HashMap<TaskId, UserId> = queued.iter().map(|(u, t)| (t.id, *u)).collect();
        for (id, place) in placement::place_queue(&queue, &local, &runners) {
            let runner = match place {
                Place::Local => None,
                Place::Runner(runner) => Some(runner),
                Place::Wait(why) => {
                    if let Some(user) = owner_of.get(&id) {
                        self.say_waiting(*user, id, &why.to_string()).await;
                    }
                    continue;
                }
            };
            if let Some(runner) = runner {
                match engine.lease_run(id, runner).await {
                    Ok(_) => self.remember_runner(id, runner),
                    Err(EngineError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            self.forget_waiting(id);
            grant_slot(engine, id).await?;
        }
        Ok(())
    }

    /// The connected runners of `owner`, each busy with the leased tasks of `running`.
    pub(crate) async fn connected_runners(
        &self,
        owner: UserId,
        running: &HashSet<TaskId>,
    ) -> mainloop_engine::Result<Vec<placement::Runner>> {
        let engine = &self.inner.engine;
        let mut runners = Vec::new();
        for info in engine.runners(owner).await? {
            let (RunnerState::Connected, Some(offer)) = (info.state, info.offer) else {
                continue;
            };
            // A task's own launched runner takes that task's runs, leased to it
            // directly; it is never offered to another task.
            if info.task_id.is_some() {
                continue;
            }
            let busy = engine
                .runner_leases(info.id)
                .await?
                .iter()
                .filter(|l| running.contains(&l.task_id))
                .count();
            runners.push(placement::Runner {
                id: info.id,
                owner,
                name: info.name,
                labels: offer.labels,
                agents: offer.agents,
                slots: usize::from(offer.slots),
                busy,
            });
        }
        Ok(runners)
    }

    /// The tasks whose agent runs now.
    pub(crate) async fn running_tasks(&self) -> mainloop_engine::Result<HashSet<TaskId>> {
        Ok(self
            .inner
            .engine
            .tasks_in_states(
                &[TaskState::Planning, TaskState::Implementing],
                RUNNING_LIMIT,
            )
            .await?
            .into_iter()
            .map(|(_, t)| t.id)
            .collect())
    }

    /// This machine as a placement site, with `busy` runs going here now.
    pub(crate) fn local_site(
        &self,
        busy: usize,
        busy_by_agent: BTreeMap<AgentName, usize>,
        held: BTreeSet<AgentName>,
    ) -> placement::Local {
        placement::Local {
            agents: self.inner.agents.names(),
            labels: self.inner.config.labels.clone(),
            slots: self.inner.config.max_agents,
            busy,
            busy_by_agent,
            caps: self.inner.agents.caps().clone(),
            held,
        }
    }

    /// The runner that last ran `task` in this process: it holds its workspace and the
    /// agent's saved session, so placement prefers it.
    pub(crate) fn warm(&self, task: TaskId) -> Option<RunnerId> {
        self.inner.warm.lock().ok()?.get(&task).copied()
    }

    pub(crate) fn remember_runner(&self, task: TaskId, runner: RunnerId) {
        if let Ok(mut warm) = self.inner.warm.lock() {
            warm.insert(task, runner);
        }
    }

    /// Says why `task` waits on its status line, once per reason.
    pub(crate) async fn say_waiting(&self, user: UserId, task: TaskId, why: &str) {
        let new = self.inner.waiting.lock().is_ok_and(|mut said| {
            said.get(&task).is_none_or(|s| s != why) && {
                said.insert(task, why.to_owned());
                true
            }
        });
        if new {
            crate::task::status(self, user, task, why).await;
        }
    }

    pub(crate) fn forget_waiting(&self, task: TaskId) {
        if let Ok(mut said) = self.inner.waiting.lock() {
            said.remove(&task);
        }
    }
}

//! Which agents run: the registry of agents by name, each with its own concurrency cap,
//! and the pure choice of the queued tasks that get a slot (the global cap, then each
//! agent's).

use mainloop_agent::Agent;
use mainloop_domain::TaskId;
use mainloop_domain::agents::{AgentName, Protocol};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// The queued tasks (oldest first) that get a slot now: at most `free` of them, none of
/// an agent whose usage limit holds its work (`held`), and no agent past its cap
/// counting the runs it already has (`busy`).
#[must_use]
pub fn grant(
    queued: &[(TaskId, AgentName)],
    free: usize,
    busy: &HashMap<AgentName, usize>,
    caps: &BTreeMap<AgentName, usize>,
    held: &BTreeSet<AgentName>,
) -> Vec<TaskId> {
    let mut taken: HashMap<&AgentName, usize> = HashMap::new();
    let mut granted = Vec::new();
    for (id, agent) in queued {
        if granted.len() >= free {
            break;
        }
        if held.contains(agent) {
            continue;
        }
        let running =
            busy.get(agent).copied().unwrap_or(0) + taken.get(agent).copied().unwrap_or(0);
        if caps.get(agent).is_some_and(|cap| running >= *cap) {
            continue;
        }
        *taken.entry(agent).or_default() += 1;
        granted.push(*id);
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> AgentName {
        AgentName::parse(s).unwrap()
    }

    fn queue(agents: &[&str]) -> Vec<(TaskId, AgentName)> {
        agents
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    TaskId::new_v7(mainloop_domain::Timestamp::from_millis(i as i64)),
                    name(a),
                )
            })
            .collect()
    }

    #[test]
    fn the_global_cap_counts_first_then_each_agents_own() {
        let q = queue(&["codex", "codex", "claude", "codex", "gemini"]);
        let caps = BTreeMap::from([(name("codex"), 1)]);
        // One codex slot, so the second and third codex tasks wait and later ones pass.
        let got = grant(&q, 3, &HashMap::new(), &caps, &BTreeSet::new());
        assert_eq!(got, vec![q[0].0, q[2].0, q[4].0]);
        // A codex run already going: no codex task now.
        let busy = HashMap::from([(name("codex"), 1)]);
        assert_eq!(
            grant(&q, 5, &busy, &caps, &BTreeSet::new()),
            vec![q[2].0, q[4].0]
        );
        // The global cap still rules.
        assert_eq!(
            grant(&q, 1, &HashMap::new(), &caps, &BTreeSet::new()),
            vec![q[0].0]
        );
        assert!(grant(&q, 0, &HashMap::new(), &caps, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn two_agents_with_caps_share_the_slots() {
        let q = queue(&["claude", "claude", "claude", "codex", "codex", "codex"]);
        let caps = BTreeMap::from([(name("claude"), 2), (name("codex"), 1)]);
        let got = grant(&q, 10, &HashMap::new(), &caps, &BTreeSet::new());
        assert_eq!(got, vec![q[0].0, q[1].0, q[3].0]);
        let busy = HashMap::from([(name("claude"), 2), (name("codex"), 0)]);
        assert_eq!(grant(&q, 10, &busy, &caps, &BTreeSet::new()), vec![q[3].0]);
    }

    #[test]
    fn uncapped_agents_take_what_is_free() {
        let q = queue(&["claude", "claude", "claude"]);
        assert_eq!(
            grant(&q, 2, &HashMap::new(), &BTreeMap::new(), &BTreeSet::new()).len(),
            2
        );
    }

    #[test]
    fn an_agent_held_at_its_usage_limit_starts_nothing_and_the_others_go_ahead() {
        let q = queue(&["claude", "codex", "claude", "gemini"]);
        let held = BTreeSet::from([name("claude")]);
        let got = grant(&q, 2, &HashMap::new(), &BTreeMap::new(), &held);
        assert_eq!(got, vec![q[1].0, q[3].0]);
    }

    proptest::proptest! {
        /// The domain's placement, with no runner and no label, starts here exactly what
        /// `grant` starts: it can replace it.
        #[test]
        fn place_queue_starts_here_what_grant_starts(
            agents in proptest::collection::vec(0..3usize, 0..12),
            free in 0..6usize,
            busy in proptest::collection::vec(0..3usize, 3),
            caps in proptest::collection::btree_map(0..3usize, 0..3usize, 0..3),
            held in proptest::collection::btree_set(0..3usize, 0..3),
        ) {
            use mainloop_domain::placement::{Local, Needs, Place, Queued, place_queue};
            const NAMES: [&str; 3] = ["claude", "codex", "gemini"];
            let q = queue(&agents.iter().map(|a| NAMES[*a]).collect::<Vec<_>>());
            let busy: HashMap<AgentName, usize> =
                NAMES.iter().zip(&busy).map(|(a, n)| (name(a), *n)).collect();
            let caps: BTreeMap<AgentName, usize> =
                caps.into_iter().map(|(a, c)| (name(NAMES[a]), c)).collect();
            let held: BTreeSet<AgentName> = held.into_iter().map(|a| name(NAMES[a])).collect();
            let granted = grant(&q, free, &busy, &caps, &held);
            let local = Local {
                agents: NAMES.iter().map(|a| name(a)).collect(),
                slots: free,
                busy_by_agent: busy.into_iter().collect(),
                caps,
                held,
                ..Local::default()
            };
            let queued: Vec<Queued> = q
                .iter()
                .map(|(task, agent)| Queued {
                    task: *task,
                    needs: Needs { agent: agent.clone(), labels: BTreeSet::new() },
                    warm: None,
                })
                .collect();
            let placed: Vec<TaskId> = place_queue(&queued, &local, &[])
                .into_iter()
                .filter(|(_, p)| *p == Place::Local)
                .map(|(id, _)| id)
                .collect();
            proptest::prop_assert_eq!(placed, granted);
        }
    }
}

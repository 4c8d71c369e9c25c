//! Where an agent run goes — this machine, a connected runner, or nowhere yet and why,
//! in one sentence for the task's status line — and the runner labels a task or a
//! project may require. Pure: the caller passes in every site's offer and load.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::agents::AgentName;
use crate::runner::{MAX_LABEL_LEN, is_label};
use crate::{RunnerId, TaskId, UserId};

/// The most labels one task, or one project's setting, may require.
pub const MAX_REQUIRED_LABELS: usize = 8;
/// The project settings key whose labels every new task of the project requires.
pub const PROJECT_SETTING: &str = "runner_labels";

/// What a run needs of the site it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Needs {
    pub agent: AgentName,
    /// Every one of these must be among the site's labels.
    pub labels: BTreeSet<String>,
    /// Whether a runner may take it (false: this machine only — a task whose work a
    /// runner cannot reach yet).
    pub on_runner: bool,
}

/// The server's own machine: what it offers and what it is doing. The per-agent caps
/// and usage-limit holds apply here only; a runner's slots are its own cap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Local {
    /// The agents this build and configuration can run.
    pub agents: BTreeSet<AgentName>,
    /// The server's own labels (`workers.labels`; default none).
    pub labels: BTreeSet<String>,
    /// Agent runs at once (the global cap).
    pub slots: usize,
    /// Runs going now.
    pub busy: usize,
    /// Runs going now, by agent (read against `caps`).
    pub busy_by_agent: BTreeMap<AgentName, usize>,
    /// Each capped agent's most runs at once.
    pub caps: BTreeMap<AgentName, usize>,
    /// Agents whose usage limit holds their work: none of theirs starts here.
    pub held: BTreeSet<AgentName>,
}

/// A connected runner, as its last `hello` and heartbeat describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runner {
    pub id: RunnerId,
    /// The user whose token it connected with: it only ever runs that user's tasks.
    pub owner: UserId,
    pub name: String,
    pub labels: BTreeSet<String>,
    pub agents: BTreeSet<AgentName>,
    pub slots: usize,
    pub busy: usize,
}

impl Runner {
    fn free(&self) -> usize {
        self.slots.saturating_sub(self.busy)
    }

    fn offers(&self, needs: &Needs) -> bool {
        needs.on_runner
            && self.agents.contains(&needs.agent)
            && needs.labels.is_subset(&self.labels)
    }
}

impl Local {
    fn offers(&self, needs: &Needs) -> bool {
        self.agents.contains(&needs.agent) && needs.labels.is_subset(&self.labels)
    }

    /// What keeps `agent` from starting here now, if anything.
    fn blocked(&self, agent: &AgentName) -> Option<LocalBlock> {
        if self.held.contains(agent) {
            return Some(LocalBlock::Held);
        }
        if self.busy >= self.slots {
            return Some(LocalBlock::Slots);
        }
        let running = self.busy_by_agent.get(agent).copied().unwrap_or(0);
        match self.caps.get(agent) {
            Some(&cap) if running >= cap => Some(LocalBlock::Cap(cap)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LocalBlock {
    Held,
    Slots,
    Cap(usize),
}

/// A queued task to place: what it needs and the runner, if any, that already holds its
/// session and worktree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    pub task: TaskId,
    /// The task's user: only their runners are considered.
    pub owner: UserId,
    pub needs: Needs,
    pub warm: Option<RunnerId>,
}

/// Where a run goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// On the server's own machine (no hop).
    Local,
    Runner(RunnerId),
    /// Nowhere yet; the task stays queued.
    Wait(Waiting),
}

/// Why a run waits. Each says what is missing in one sentence (its `Display`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// No site, connected runner or this machine, carries every required label.
    NoLabelledRunner { labels: BTreeSet<String> },
    /// Sites carry the labels, but none has the agent.
    NoAgent {
        agent: AgentName,
        labels: BTreeSet<String>,
    },
    /// Every eligible runner (and this machine, when it is eligible) is full.
    Busy {
        labels: BTreeSet<String>,
        runners: usize,
        local: bool,
        busy: usize,
        slots: usize,
    },
    /// Only this machine is eligible, and its slots are taken.
    LocalBusy,
    /// Only this machine is eligible, and the agent's own cap there is reached.
    AgentCap { agent: AgentName, cap: usize },
    /// Only this machine is eligible, and the agent is held at its usage limit.
    AgentHeld { agent: AgentName },
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLabelledRunner { labels } => write!(
                f,
                "waiting for a runner labelled {}: none is connected",
                words(labels)
            ),
            Self::NoAgent { agent, labels } if labels.is_empty() => write!(
                f,
                "no connected runner offers the {agent} agent, and this machine does not have it"
            ),
            Self::NoAgent { agent, labels } => write!(
                f,
                "no connected runner offers the {agent} agent with labels {}",
                words(labels)
            ),
            Self::Busy {
                labels,
                runners,
                local,
                busy,
                slots,
            } => {
                let (which, labelled) = if labels.is_empty() {
                    ("connected ", String::new())
                } else {
                    ("", format!(" labelled {}", words(labels)))
                };
                let group = match runners {
                    1 => format!("the {which}runner{labelled}"),
                    n => format!("the {n} {which}runners{labelled}"),
                };
                let who = if *local {
                    format!("this machine and {group}")
                } else {
                    group
                };
                let verb = if *local || *runners != 1 { "are" } else { "is" };
                let unit = if *slots == 1 { "slot" } else { "slots" };
                write!(
                    f,
                    "waiting for a free slot: {who} {verb} busy ({busy} of {slots} {unit})"
                )
            }
            Self::LocalBusy => f.write_str("waiting for a free slot on this machine"),
            Self::AgentCap { agent, cap } => write!(
                f,
                "waiting for a free {agent} slot on this machine ({cap} of {cap} in use)"
            ),
            Self::AgentHeld { agent } => write!(
                f,
                "waiting for the {agent} agent's usage limit to reset on this machine"
            ),
        }
    }
}

/// `gpu`, `gpu and big`, `big, gpu and linux-x64`.
fn words(labels: &BTreeSet<String>) -> String {
    let all: Vec<&str> = labels.iter().map(String::as_str).collect();
    match all.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Where one run goes: among the sites that carry every required label and have the
/// agent and a free slot, the runner already holding the task's session (`warm`), else
/// this machine, else the runner with the most free slots (ties by name, then id).
#[must_use]
pub fn place(needs: &Needs, warm: Option<RunnerId>, local: &Local, runners: &[Runner]) -> Place {
    let eligible: Vec<&Runner> = runners.iter().filter(|r| r.offers(needs)).collect();
    let free = || eligible.iter().copied().filter(|r| r.free() > 0);
    if let Some(id) = warm.filter(|id| free().any(|r| r.id == *id)) {
        return Place::Runner(id);
    }
    let here = local.offers(needs);
    let block = here.then(|| local.blocked(&needs.agent)).flatten();
    if here && block.is_none() {
        return Place::Local;
    }
    let best = free().min_by(|a, b| {
        b.free()
            .cmp(&a.free())
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.id.cmp(&b.id))
    });
    if let Some(r) = best {
        return Place::Runner(r.id);
    }
    Place::Wait(why(needs, here, block, &eligible, local, runners))
}

/// Why a run that no site can take now waits.
fn why(
    needs: &Needs,
    here: bool,
    block: Option<LocalBlock>,
    eligible: &[&Runner],
    local: &Local,
    runners: &[Runner],
) -> Waiting {
    let labels = needs.labels.clone();
    if !here && eligible.is_empty() {
        let labelled = needs.labels.is_subset(&local.labels)
            || runners.iter().any(|r| needs.labels.is_subset(&r.labels));
        return if labelled {
            Waiting::NoAgent {
                agent: needs.agent.clone(),
                labels,
            }
        } else {
            Waiting::NoLabelledRunner { labels }
        };
    }
    if eligible.is_empty() {
        return match block {
            Some(LocalBlock::Held) => Waiting::AgentHeld {
                agent: needs.agent.clone(),
            },
            Some(LocalBlock::Cap(cap)) => Waiting::AgentCap {
                agent: needs.agent.clone(),
                cap,
            },
            Some(LocalBlock::Slots) | None => Waiting::LocalBusy,
        };
    }
    // This machine counts among the busy only when its slots are what it lacks.
    let local_full = block == Some(LocalBlock::Slots);
    let (mut busy, mut slots) = eligible
        .iter()
        .fold((0, 0), |(b, s), r| (b + r.busy.min(r.slots), s + r.slots));
    if local_full {
        busy += local.busy.min(local.slots);
        slots += local.slots;
    }
    Waiting::Busy {
        labels,
        runners: eligible.len(),
        local: local_full,
        busy,
        slots,
    }
}

/// Places a whole queue at once, in queue order (oldest first), each placement taking
/// its slot before the next task is placed; a task goes only to its own user's runners. On this machine a run also counts against
/// its agent's cap, and a held agent starts nothing; with no runners, no labels and
/// every agent local, the tasks placed `Local` are exactly those the worker's `grant`
/// starts.
#[must_use]
pub fn place_queue(queue: &[Queued], local: &Local, runners: &[Runner]) -> Vec<(TaskId, Place)> {
    let mut local = local.clone();
    let mut runners = runners.to_vec();
    queue
        .iter()
        .map(|q| {
            let mine: Vec<Runner> = runners
                .iter()
                .filter(|r| r.owner == q.owner)
                .cloned()
                .collect();
            let place = place(&q.needs, q.warm, &local, &mine);
            match &place {
                Place::Local => {
                    local.busy += 1;
                    *local
                        .busy_by_agent
                        .entry(q.needs.agent.clone())
                        .or_default() += 1;
                }
                Place::Runner(id) => {
                    if let Some(r) = runners.iter_mut().find(|r| r.id == *id) {
                        r.busy += 1;
                    }
                }
                Place::Wait(_) => {}
            }
            (q.task, place)
        })
        .collect()
}

/// Why a set of required labels is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("at most {MAX_REQUIRED_LABELS} labels, got {0}")]
    TooMany(usize),
    #[error("label {0:?} is not 1 to {MAX_LABEL_LEN} lowercase letters, digits, '-', '_' or '.'")]
    Bad(String),
    #[error("must be a list of labels such as [\"gpu\"]")]
    NotAList,
}

/// Checks the labels a task requires.
///
/// # Errors
/// The first rule they break, naming the label.
pub fn check_labels(labels: &BTreeSet<String>) -> Result<(), LabelError> {
    if let Some(bad) = labels.iter().find(|l| !is_label(l)) {
        // Quoted back shortened: it may be anything a client sent.
        return Err(LabelError::Bad(bad.chars().take(40).collect()));
    }
    if labels.len() > MAX_REQUIRED_LABELS {
        return Err(LabelError::TooMany(labels.len()));
    }
    Ok(())
}

/// The labels a project's settings require of its tasks (`runner_labels`: a list of
/// labels; absent or null: none).
///
/// # Errors
/// When the setting is not a list of valid labels.
pub fn project_labels(settings: &Value) -> Result<BTreeSet<String>, LabelError> {
    let labels = match settings.get(PROJECT_SETTING) {
        None | Some(Value::Null) => return Ok(BTreeSet::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(LabelError::NotAList))
            .collect::<Result<BTreeSet<_>, _>>()?,
        Some(_) => return Err(LabelError::NotAList),
    };
    check_labels(&labels)?;
    Ok(labels)
}

/// What a new task requires: its own labels and its project's, fixed at creation so a
/// later change to the project does not move work already under way.
#[must_use]
pub fn requirement(task: &BTreeSet<String>, project: &BTreeSet<String>) -> BTreeSet<String> {
    task.union(project).cloned().collect()
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;

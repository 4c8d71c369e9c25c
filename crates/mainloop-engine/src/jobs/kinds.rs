//! Every kind of job mainloop queues, each declared once: the chat turn, notification
//! delivery, a digest of the user's past, the task steps a transition causes (handled by the worker runtime) and the
//! forge mirror's sync and watch.

use super::{BackgroundJob, Pool};
use crate::notifications::Notification;
use mainloop_domain::digest::Period;
use mainloop_domain::task::{AgentInput, AgentPhase, Effect};
use mainloop_domain::{MessageId, TaskId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

/// A main-thread turn answering one user message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTurn {
    pub user_id: UserId,
    pub message_id: MessageId,
}

impl BackgroundJob for ChatTurn {
    const KIND: &'static str = "chat.turn";
    const POOL: Pool = Pool::Default;
    fn key(&self) -> String {
        format!("chat:{}", self.message_id)
    }
    fn lane(&self) -> Option<String> {
        Some(format!("chat:{}", self.user_id))
    }
    fn user(&self) -> Option<UserId> {
        Some(self.user_id)
    }
}

/// The digest of one span of a user's time (a day, a week or a month). Its key is the
/// span, so each is queued once; the user's digests run in order in one lane, so a week
/// is made after its days and a month after its weeks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MakeDigest {
    pub user_id: UserId,
    pub period: Period,
    pub start: jiff::civil::Date,
}

impl BackgroundJob for MakeDigest {
    const KIND: &'static str = "memory.digest";
    const POOL: Pool = Pool::Default;
    fn key(&self) -> String {
        format!("digest:{}:{}:{}", self.user_id, self.period, self.start)
    }
    fn lane(&self) -> Option<String> {
        Some(format!("digests:{}", self.user_id))
    }
    fn user(&self) -> Option<UserId> {
        Some(self.user_id)
    }
}

/// Delivery of one notification to every channel of its user (`notify`).
impl BackgroundJob for Notification {
    const KIND: &'static str = "notify";
    const POOL: Pool = Pool::Notify;
    fn key(&self) -> String {
        format!("notify:{}", self.item_id)
    }
    // Notifications are independent of each other: no lane.
    fn user(&self) -> Option<UserId> {
        self.user_id
    }
}

/// Which transition caused a task step: the task, the version that transition saved,
/// and the effect's position in it. It names the step's job, so a replayed transition
/// enqueues nothing twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub task_id: TaskId,
    pub version: i64,
    pub index: usize,
}

impl Step {
    fn key(self) -> String {
        format!("task:{}:v{}:{}", self.task_id, self.version, self.index)
    }

    /// A task's steps run one at a time, in order.
    fn lane(self) -> String {
        format!("task:{}", self.task_id)
    }
}

/// The stored shape of every task step's payload (`{"task_id", "effect"}`), kept so
/// that jobs queued by earlier versions still run.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StepWire {
    task_id: TaskId,
    effect: Effect,
    #[serde(default)]
    version: i64,
    #[serde(default)]
    index: usize,
}

impl StepWire {
    fn new(step: Step, effect: Effect) -> Self {
        Self {
            task_id: step.task_id,
            effect,
            version: step.version,
            index: step.index,
        }
    }

    fn step(&self) -> Step {
        Step {
            task_id: self.task_id,
            version: self.version,
            index: self.index,
        }
    }
}

/// Declares a task step's job: its struct's fields besides the step, the effect it
/// carries out, and its kind and pool.
macro_rules! task_step {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* } = $variant:ident, $kind:literal, $pool:expr, lane: $lane:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(into = "StepWire", try_from = "StepWire")]
        pub struct $name {
            pub step: Step,
            $(pub $field: $ty,)*
        }

        impl From<$name> for StepWire {
            fn from(job: $name) -> Self {
                StepWire::new(job.step, Effect::$variant { $($field: job.$field),* })
            }
        }

        impl TryFrom<StepWire> for $name {
            type Error = String;
            fn try_from(wire: StepWire) -> Result<Self, String> {
                let step = wire.step();
                match wire.effect {
                    Effect::$variant { $($field),* } => Ok(Self { step, $($field),* }),
                    other => Err(format!("a {} job carrying {other:?}", $kind)),
                }
            }
        }

        impl BackgroundJob for $name {
            const KIND: &'static str = $kind;
            const POOL: Pool = $pool;
            fn key(&self) -> String {
                self.step.key()
            }
            fn lane(&self) -> Option<String> {
                $lane.then(|| self.step.lane())
            }
        }
    };
}

task_step!(
    /// Starts or resumes the task's agent with an input; holds an agent slot.
    RunAgent { phase: AgentPhase, input: AgentInput } = RunAgent, "task.run_agent", Pool::Agents, lane: true
);
task_step!(
    /// Ends the task's live or parked agent. Not in the task's lane: stopping must not
    /// queue behind the run it stops.
    StopAgent {} = StopAgent, "task.stop_agent", Pool::Default, lane: false
);
task_step!(
    /// Commits (and, on a forge, publishes) what the agent left.
    CommitWork {} = CommitWork, "task.commit", Pool::Effects, lane: true
);
task_step!(
    /// Checks one round of work.
    RunChecks { round: u32 } = RunChecks, "task.checks", Pool::Effects, lane: true
);
task_step!(
    /// Merges the approved work.
    Merge {} = Merge, "task.merge", Pool::Effects, lane: true
);

task_step!(
    /// Ends the task's hold once its usage limit reset (scheduled for then). The engine
    /// handles it; not in the task's lane, which a cancel may be using.
    WakeTask { at: Option<Timestamp> } = WakeAt, "task.wake", Pool::Default, lane: false
);

/// The job a transition's effect becomes; `None` for the effects the transition's own
/// transaction carries out (inbox items, announcements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskJob {
    RunAgent(RunAgent),
    StopAgent(StopAgent),
    CommitWork(CommitWork),
    RunChecks(RunChecks),
    Merge(Merge),
    WakeTask(WakeTask),
}

impl TaskJob {
    #[must_use]
    pub fn for_effect(step: Step, effect: &Effect) -> Option<Self> {
        Some(match effect.clone() {
            Effect::RunAgent { phase, input } => Self::RunAgent(RunAgent { step, phase, input }),
            Effect::StopAgent => Self::StopAgent(StopAgent { step }),
            Effect::CommitWork => Self::CommitWork(CommitWork { step }),
            Effect::RunChecks { round } => Self::RunChecks(RunChecks { step, round }),
            Effect::Merge => Self::Merge(Merge { step }),
            Effect::WakeAt { at } => Self::WakeTask(WakeTask { step, at }),
            Effect::ResolveInbox | Effect::OpenInbox { .. } | Effect::Announce(_) => return None,
        })
    }
}

/// Brings a forge task's mirror up to date with the state `version` saved; one per
/// transition of a forge task, in the task's forge lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeSync {
    pub task_id: TaskId,
    #[serde(default)]
    pub version: i64,
}

impl BackgroundJob for ForgeSync {
    const KIND: &'static str = "forge.sync";
    const POOL: Pool = Pool::Forge;
    fn key(&self) -> String {
        format!("{}:{}:v{}", Self::KIND, self.task_id, self.version)
    }
    fn lane(&self) -> Option<String> {
        Some(format!("forge:{}", self.task_id))
    }
}

/// Polls the forge for what a task waits on; reschedules itself. `generation` names
/// the current watch (an older generation's job ends at once) and `seq` its round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeWatch {
    pub task_id: TaskId,
    pub generation: u64,
    #[serde(default)]
    pub seq: u64,
}

impl BackgroundJob for ForgeWatch {
    const KIND: &'static str = "forge.watch";
    const POOL: Pool = Pool::Forge;
    fn key(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            Self::KIND,
            self.task_id,
            self.generation,
            self.seq
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step() -> Step {
        Step {
            task_id: TaskId::new_v7(mainloop_domain::Timestamp::from_millis(1_000)),
            version: 7,
            index: 2,
        }
    }

    #[test]
    fn task_steps_keep_the_stored_payload_shape() {
        let s = step();
        let job = RunChecks { step: s, round: 3 };
        let value = serde_json::to_value(&job).unwrap_or_default();
        assert_eq!(
            value,
            json!({"task_id": s.task_id, "effect": {"effect": "run_checks", "round": 3}, "version": 7, "index": 2})
        );
        assert_eq!(job.key(), format!("task:{}:v7:2", s.task_id));
        // A payload queued before the version and index were stored still reads.
        let old = json!({"task_id": s.task_id, "effect": {"effect": "run_checks", "round": 3}});
        let read: Result<RunChecks, _> = serde_json::from_value(old);
        assert!(read.is_ok_and(|r| r.round == 3 && r.step.task_id == s.task_id));
    }

    #[test]
    fn a_payload_of_another_step_is_refused() {
        let value = json!({"task_id": step().task_id, "effect": {"effect": "merge"}});
        assert!(serde_json::from_value::<RunChecks>(value.clone()).is_err());
        assert!(serde_json::from_value::<Merge>(value).is_ok());
    }

    #[test]
    fn every_outside_effect_becomes_its_job_and_the_rest_none() {
        let s = step();
        assert!(matches!(
            TaskJob::for_effect(s, &Effect::StopAgent),
            Some(TaskJob::StopAgent(StopAgent { step })) if step == s
        ));
        assert!(StopAgent { step: s }.lane().is_none());
        assert_eq!(
            Merge { step: s }.lane(),
            Some(format!("task:{}", s.task_id))
        );
        assert_eq!(TaskJob::for_effect(s, &Effect::ResolveInbox), None);
    }
}

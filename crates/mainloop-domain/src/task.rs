//! The task lifecycle as a pure function: `(core, event) -> (core', effects)`.
//!
//! The engine persists the new state and the effects in one transaction (the outbox),
//! then carries the effects out. Nothing here knows about processes, git or databases.

use crate::Timestamp;
use crate::inbox::InboxKind;
use crate::question::{Answers, Question};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

mod holds;
pub use holds::{Hold, HoldKind};

/// Where a task is in its lifecycle. The snake_case names are part of the public API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for an agent slot.
    Queued,
    /// The agent explores read-only and writes a plan.
    Planning,
    /// The agent asked questions; the human answers in the inbox.
    WaitingAnswers,
    /// A plan is ready; the human approves, asks for changes or cancels.
    WaitingPlanReview,
    /// The agent edits files on the task's branch.
    Implementing,
    /// The agent's usage limit is reached: the task waits, holding no slot and no
    /// process, until the limit resets, then goes on by itself.
    OnHold,
    /// The project's checks run against the agent's work.
    Checking,
    /// Checks passed; the human reviews the diff.
    Review,
    /// The work reached the base branch. Final.
    Merged,
    /// Something went wrong; the human may retry (which resumes, not restarts).
    Failed,
    /// Stopped by the human or closed upstream. Final.
    Cancelled,
}

impl TaskState {
    pub const ALL: [Self; 11] = [
        Self::Queued,
        Self::Planning,
        Self::WaitingAnswers,
        Self::WaitingPlanReview,
        Self::Implementing,
        Self::OnHold,
        Self::Checking,
        Self::Review,
        Self::Merged,
        Self::Failed,
        Self::Cancelled,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Planning => "planning",
            Self::WaitingAnswers => "waiting_answers",
            Self::WaitingPlanReview => "waiting_plan_review",
            Self::Implementing => "implementing",
            Self::OnHold => "on_hold",
            Self::Checking => "checking",
            Self::Review => "review",
            Self::Merged => "merged",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// No event moves a task out of a final state.
    #[must_use]
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Merged | Self::Cancelled)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown state name (e.g. a row written by a newer version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task state '{0}'")]
pub struct UnknownState(pub String);

impl FromStr for TaskState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// The mode an agent session runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentPhase {
    /// Read-only exploration ending in a plan.
    Plan,
    /// Edits and commands inside the task's worktree.
    Implement,
}

/// What an agent is told when its session starts or resumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum AgentInput {
    /// A new session: the task description.
    Start,
    /// The human answered the pending questions.
    Answers(Answers),
    /// The plan was approved: implement it.
    PlanApproved,
    /// The human asked for changes to the plan.
    PlanFeedback(String),
    /// The project's checks failed with this output.
    CheckFailure(String),
    /// The human reviewed the work and asked for changes.
    ReviewFeedback(String),
    /// Merging into the base branch conflicted.
    MergeConflict(String),
    /// The human retried a failed task: continue where it stopped.
    Retry,
    /// The same, with more to say than that: why it failed, what to do differently.
    RetryWith(RetryNote),
}

/// What a retry tells the agent beyond "continue".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryNote {
    /// What the human said the worker should do differently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// The failed run left no change.
    #[serde(default)]
    pub no_changes: bool,
}

impl AgentInput {
    /// The input for a retry: plain when there is nothing more to say.
    #[must_use]
    pub fn retry(feedback: Option<String>, no_changes: bool) -> Self {
        let feedback = feedback
            .map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty());
        if feedback.is_none() && !no_changes {
            Self::Retry
        } else {
            Self::RetryWith(RetryNote {
                feedback,
                no_changes,
            })
        }
    }
}

/// Why a task fails whose work, committed, does not differ from its base.
pub const NO_CHANGES: &str = "The worker made no changes.";

/// A worker update worth a line in the main thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Announcement {
    Started,
    QuestionsAsked {
        count: usize,
    },
    Answered,
    PlanApproved,
    RevisingPlan,
    Checking,
    Merging,
    ChangesRequested,
    MergeConflict,
    PlanReady,
    ReadyForReview,
    ChecksFailed {
        round: u32,
    },
    Merged,
    Failed {
        reason: String,
    },
    Cancelled,
    Retrying,
    /// The agent's usage limit is reached; the task goes on after `until` (when known).
    OnHold {
        until: Option<Timestamp>,
    },
    /// The limit reset: the agent goes on.
    Resumed,
    /// A budget is reached: the task waits for the human.
    BudgetReached {
        reason: String,
    },
    /// The user paused all work.
    Paused,
    /// A budget or pause hold ended: the agent goes on.
    Continued {
        after: HoldKind,
    },
}

/// Something the engine must do because of a transition. Effects that touch the
/// outside world run as keyed jobs; inbox and announcements are rows written in the
/// transition's own transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    RunAgent {
        phase: AgentPhase,
        input: AgentInput,
    },
    StopAgent,
    CommitWork,
    RunChecks {
        round: u32,
    },
    Merge,
    /// Resolve every open inbox item of the task.
    ResolveInbox,
    OpenInbox {
        kind: InboxKind,
    },
    Announce(Announcement),
    /// End the task's hold at `at`; when the reset time is unknown, the engine picks a
    /// wait.
    WakeAt {
        at: Option<Timestamp>,
    },
}

/// The part of a task the lifecycle reads and writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCore {
    pub state: TaskState,
    pub skip_plan: bool,
    /// Check rounds used so far in this implementation cycle.
    pub check_round: u32,
    pub max_check_rounds: u32,
    /// The working state to return to once the pending questions are answered.
    pub asked_in: Option<TaskState>,
    /// The state a failed task failed in; retry resumes there.
    pub failed_in: Option<TaskState>,
    /// The human approved the review and a merge is under way.
    pub merge_requested: bool,
    /// The task failed because its work changed nothing ([`NO_CHANGES`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed_unchanged: bool,
    /// Set while the task is on hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// What the run stopped by a budget or a pause had not yet told the agent: the run
    /// after the hold tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_input: Option<AgentInput>,
    /// The human said "continue once" at a budget: the run that follows goes past it.
    /// Any later event ends the waiver.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub budget_waived: bool,
}

impl TaskCore {
    #[must_use]
    pub const fn new(skip_plan: bool, max_check_rounds: u32) -> Self {
        Self {
            state: TaskState::Queued,
            skip_plan,
            check_round: 0,
            max_check_rounds,
            asked_in: None,
            failed_in: None,
            merge_requested: false,
            failed_unchanged: false,
            hold: None,
            held_input: None,
            budget_waived: false,
        }
    }
}

/// Something that happened to a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum TaskEvent {
    /// An agent slot became free for a queued task.
    SlotGranted,
    QuestionsAsked(Vec<Question>),
    Answered(Answers),
    PlanProposed(String),
    PlanApproved,
    PlanRevisionRequested(String),
    /// The agent ended its turn normally.
    AgentFinished,
    ChecksPassed,
    ChecksFailed(String),
    ReviewApproved,
    ChangesRequested(String),
    MergeConflict(String),
    /// The forge would not merge the approved work as it stood (its base moved on); the
    /// base was merged into the task branch cleanly, so the work is checked again.
    BranchUpdated,
    Merged,
    /// The forge closed the work without merging it.
    ClosedUnmerged,
    /// The agent crashed, reported an error, or setup failed.
    AgentFailed(String),
    CancelRequested,
    /// The human retried a failed task, perhaps saying what to do differently.
    RetryRequested(Option<String>),
    /// The agent's usage limit is reached.
    LimitReached {
        reason: String,
        until: Option<Timestamp>,
    },
    /// The hold's time is up, the budget was raised, or the user resumed.
    HoldEnded,
    /// A run would go past a budget; `input` is what it had not told the agent yet.
    BudgetReached {
        scope: crate::usage::BudgetScope,
        reason: String,
        input: Option<AgentInput>,
    },
    /// The user paused all work; `input` is what the run had not told the agent yet.
    Paused {
        input: Option<AgentInput>,
    },
    /// The human let a task on a budget hold continue once, past the budget.
    BudgetWaived,
}

impl TaskEvent {
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::SlotGranted => "slot_granted",
            Self::QuestionsAsked(_) => "questions_asked",
            Self::Answered(_) => "answered",
            Self::PlanProposed(_) => "plan_proposed",
            Self::PlanApproved => "plan_approved",
            Self::PlanRevisionRequested(_) => "plan_revision_requested",
            Self::AgentFinished => "agent_finished",
            Self::ChecksPassed => "checks_passed",
            Self::ChecksFailed(_) => "checks_failed",
            Self::ReviewApproved => "review_approved",
            Self::ChangesRequested(_) => "changes_requested",
            Self::MergeConflict(_) => "merge_conflict",
            Self::BranchUpdated => "branch_updated",
            Self::Merged => "merged",
            Self::ClosedUnmerged => "closed_unmerged",
            Self::AgentFailed(_) => "agent_failed",
            Self::CancelRequested => "cancel_requested",
            Self::RetryRequested(_) => "retry_requested",
            Self::LimitReached { .. } => "limit_reached",
            Self::HoldEnded => "hold_ended",
            Self::BudgetReached { .. } => "budget_reached",
            Self::Paused { .. } => "paused",
            Self::BudgetWaived => "budget_waived",
        }
    }
}

/// The event does not apply in the task's current state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{event} is not allowed while the task is {state}")]
pub struct TransitionError {
    pub state: TaskState,
    pub event: &'static str,
}

/// The outcome of a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub core: TaskCore,
    pub effects: Vec<Effect>,
}

/// Applies `event` to a task.
///
/// # Errors
/// [`TransitionError`] when the event is not allowed in the current state; the caller
/// must then change nothing.
pub fn transition(core: &TaskCore, event: TaskEvent) -> Result<Transition, TransitionError> {
    use Effect as E;
    use TaskState as S;
    let mut next = core.clone();
    next.budget_waived = matches!(event, TaskEvent::BudgetWaived);
    let refuse = |event: &TaskEvent| TransitionError {
        state: core.state,
        event: event.name(),
    };
    let effects = match (core.state, event) {
        (S::Queued, TaskEvent::SlotGranted) => {
            let phase = if core.skip_plan {
                next.state = S::Implementing;
                AgentPhase::Implement
            } else {
                next.state = S::Planning;
                AgentPhase::Plan
            };
            vec![
                E::RunAgent {
                    phase,
                    input: AgentInput::Start,
                },
                E::Announce(Announcement::Started),
            ]
        }
        (S::Planning | S::Implementing, TaskEvent::QuestionsAsked(qs)) if !qs.is_empty() => {
            next.asked_in = Some(core.state);
            next.state = S::WaitingAnswers;
            vec![
                E::OpenInbox {
                    kind: InboxKind::Question,
                },
                E::Announce(Announcement::QuestionsAsked { count: qs.len() }),
            ]
        }
        (S::WaitingAnswers, TaskEvent::Answered(answers)) => {
            let back = core.asked_in.unwrap_or(S::Planning);
            next.state = back;
            next.asked_in = None;
            vec![
                E::ResolveInbox,
                E::RunAgent {
                    phase: phase_of(back),
                    input: AgentInput::Answers(answers),
                },
                E::Announce(Announcement::Answered),
            ]
        }
        (S::Planning, TaskEvent::PlanProposed(_)) => {
            next.state = S::WaitingPlanReview;
            vec![
                E::OpenInbox {
                    kind: InboxKind::PlanReview,
                },
                E::Announce(Announcement::PlanReady),
            ]
        }
        (S::WaitingPlanReview, TaskEvent::PlanApproved) => {
            next.state = S::Implementing;
            next.check_round = 0;
            vec![
                E::ResolveInbox,
                E::RunAgent {
                    phase: AgentPhase::Implement,
                    input: AgentInput::PlanApproved,
                },
                E::Announce(Announcement::PlanApproved),
            ]
        }
        (S::WaitingPlanReview, TaskEvent::PlanRevisionRequested(feedback)) => {
            next.state = S::Planning;
            vec![
                E::ResolveInbox,
                E::RunAgent {
                    phase: AgentPhase::Plan,
                    input: AgentInput::PlanFeedback(feedback),
                },
                E::Announce(Announcement::RevisingPlan),
            ]
        }
        (S::Implementing, TaskEvent::AgentFinished) => {
            next.state = S::Checking;
            vec![
                E::CommitWork,
                E::RunChecks {
                    round: core.check_round,
                },
                E::Announce(Announcement::Checking),
            ]
        }
        (S::Planning, TaskEvent::AgentFinished) => fail(
            &mut next,
            "the agent stopped planning without proposing a plan",
        ),
        (S::Checking, TaskEvent::ChecksPassed) => {
            next.state = S::Review;
            next.merge_requested = false;
            vec![
                E::OpenInbox {
                    kind: InboxKind::Review,
                },
                E::Announce(Announcement::ReadyForReview),
            ]
        }
        (S::Checking, TaskEvent::ChecksFailed(output)) => {
            if core.check_round < core.max_check_rounds {
                next.state = S::Implementing;
                next.check_round = core.check_round + 1;
                vec![
                    E::Announce(Announcement::ChecksFailed {
                        round: next.check_round,
                    }),
                    E::RunAgent {
                        phase: AgentPhase::Implement,
                        input: AgentInput::CheckFailure(output),
                    },
                ]
            } else {
                fail(
                    &mut next,
                    &format!(
                        "checks still failing after {} fix rounds",
                        core.max_check_rounds
                    ),
                )
            }
        }
        (S::Review, TaskEvent::ReviewApproved) if !core.merge_requested => {
            next.merge_requested = true;
            vec![
                E::ResolveInbox,
                E::Merge,
                E::Announce(Announcement::Merging),
            ]
        }
        (S::Review, TaskEvent::ChangesRequested(feedback)) if !core.merge_requested => {
            next.state = S::Implementing;
            next.check_round = 0;
            vec![
                E::ResolveInbox,
                E::RunAgent {
                    phase: AgentPhase::Implement,
                    input: AgentInput::ReviewFeedback(feedback),
                },
                E::Announce(Announcement::ChangesRequested),
            ]
        }
        (S::Review, TaskEvent::MergeConflict(details)) => {
            next.state = S::Implementing;
            next.merge_requested = false;
            next.check_round = 0;
            vec![
                E::RunAgent {
                    phase: AgentPhase::Implement,
                    input: AgentInput::MergeConflict(details),
                },
                E::Announce(Announcement::MergeConflict),
            ]
        }
        (S::Review, TaskEvent::BranchUpdated) if core.merge_requested => {
            next.state = S::Checking;
            next.merge_requested = false;
            next.check_round = 0;
            vec![
                E::RunChecks { round: 0 },
                E::Announce(Announcement::Checking),
            ]
        }
        (S::Review, TaskEvent::Merged) => {
            next.state = S::Merged;
            vec![E::ResolveInbox, E::Announce(Announcement::Merged)]
        }
        (S::Review, TaskEvent::ClosedUnmerged) => {
            next.state = S::Cancelled;
            vec![E::ResolveInbox, E::Announce(Announcement::Cancelled)]
        }
        (
            _,
            event @ (TaskEvent::LimitReached { .. }
            | TaskEvent::BudgetReached { .. }
            | TaskEvent::Paused { .. }
            | TaskEvent::HoldEnded
            | TaskEvent::BudgetWaived),
        ) => holds::transition(core, &mut next, event).map_err(|e| refuse(&e))?,
        (state, TaskEvent::AgentFailed(reason)) if !state.is_final() && state != S::Failed => {
            let mut effects = vec![E::StopAgent];
            effects.extend(fail(&mut next, &reason));
            effects
        }
        (state, TaskEvent::CancelRequested) if !state.is_final() => {
            next.state = S::Cancelled;
            next.hold = None;
            next.held_input = None;
            vec![
                E::StopAgent,
                E::ResolveInbox,
                E::Announce(Announcement::Cancelled),
            ]
        }
        (S::Failed, TaskEvent::RetryRequested(feedback)) => {
            let resume_in = core.failed_in.unwrap_or(S::Queued);
            next.failed_in = None;
            next.failed_unchanged = false;
            next.check_round = 0;
            let input = AgentInput::retry(feedback, core.failed_unchanged);
            let mut effects = vec![E::ResolveInbox, E::Announce(Announcement::Retrying)];
            match resume_in {
                S::Queued => next.state = S::Queued,
                S::Planning | S::WaitingAnswers | S::WaitingPlanReview => {
                    next.state = S::Planning;
                    effects.push(E::RunAgent {
                        phase: AgentPhase::Plan,
                        input,
                    });
                }
                S::Review if core.merge_requested => {
                    // The merge itself failed: try it again rather than re-running the agent.
                    next.state = S::Review;
                    effects.push(E::Merge);
                }
                _ => {
                    next.state = S::Implementing;
                    next.merge_requested = false;
                    effects.push(E::RunAgent {
                        phase: AgentPhase::Implement,
                        input,
                    });
                }
            }
            effects
        }
        (_, event) => return Err(refuse(&event)),
    };
    Ok(Transition {
        core: next,
        effects,
    })
}

pub(crate) fn phase_of(state: TaskState) -> AgentPhase {
    if state == TaskState::Implementing {
        AgentPhase::Implement
    } else {
        AgentPhase::Plan
    }
}

fn fail(next: &mut TaskCore, reason: &str) -> Vec<Effect> {
    next.failed_in = Some(next.hold.take().map_or(next.state, |h| h.resume_in));
    next.held_input = None;
    next.failed_unchanged = reason == NO_CHANGES;
    next.state = TaskState::Failed;
    vec![
        Effect::ResolveInbox,
        Effect::OpenInbox {
            kind: InboxKind::Failed,
        },
        Effect::Announce(Announcement::Failed {
            reason: reason.to_owned(),
        }),
    ]
}

#[cfg(test)]
mod tests;

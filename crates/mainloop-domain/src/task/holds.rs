//! Holds: a task waits, holding no slot and no process, at its agent's usage limit (until
//! the reset), at a budget (until the human raises it or lets it continue once), or while
//! the user has paused all work (until they resume).

use super::{AgentInput, Announcement, Effect, TaskCore, TaskEvent, TaskState, phase_of};
use crate::Timestamp;
use crate::inbox::InboxKind;
use crate::usage::BudgetScope;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why a task is on hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// The agent's usage limit: it goes on by itself at the reset.
    #[default]
    UsageLimit,
    /// A budget is reached: the human raises it or lets the task continue once.
    Budget,
    /// The user paused all work: it goes on when they resume.
    Paused,
}

/// Why and until when a task is on hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Hold {
    /// What holds the task, in words (for a usage limit, the agent's own).
    pub reason: String,
    /// When the limit resets, if the agent said.
    pub until: Option<Timestamp>,
    /// The working state the task returns to.
    #[schema(value_type = String)]
    pub resume_in: TaskState,
    #[serde(default)]
    pub kind: HoldKind,
    /// The budget reached, for a budget hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetScope>,
}

/// The words of a paused task's hold.
pub const PAUSED: &str = "All work is paused; it goes on when you resume.";

/// A hold event applied to `core` (into `next`); the event back when it does not apply.
pub(super) fn transition(
    core: &TaskCore,
    next: &mut TaskCore,
    event: TaskEvent,
) -> Result<Vec<Effect>, TaskEvent> {
    use Effect as E;
    use TaskState as S;
    let working = matches!(core.state, S::Planning | S::Implementing);
    let held_by = core.hold.as_ref().map(|h| h.kind);
    let mut hold = |reason, until, kind, budget, input| {
        next.state = S::OnHold;
        next.held_input = input;
        next.hold = Some(Hold {
            reason,
            until,
            resume_in: core.state,
            kind,
            budget,
        });
    };
    Ok(match event {
        TaskEvent::LimitReached { reason, until } if working => {
            hold(reason, until, HoldKind::UsageLimit, None, None);
            vec![
                E::WakeAt { at: until },
                E::Announce(Announcement::OnHold { until }),
            ]
        }
        TaskEvent::BudgetReached {
            scope,
            reason,
            input,
        } if working => {
            hold(reason.clone(), None, HoldKind::Budget, Some(scope), input);
            vec![
                E::OpenInbox {
                    kind: InboxKind::Budget,
                },
                E::Announce(Announcement::BudgetReached { reason }),
            ]
        }
        TaskEvent::Paused { input } if working => {
            hold(PAUSED.to_owned(), None, HoldKind::Paused, None, input);
            vec![E::Announce(Announcement::Paused)]
        }
        TaskEvent::HoldEnded if core.state == S::OnHold => resume(core, next),
        TaskEvent::BudgetWaived if held_by == Some(HoldKind::Budget) => {
            let effects = resume(core, next);
            next.budget_waived = true;
            effects
        }
        other => return Err(other),
    })
}

/// The task goes back to work where it was held, telling the agent what it had not told
/// it yet (else to continue).
fn resume(core: &TaskCore, next: &mut TaskCore) -> Vec<Effect> {
    let hold = core.hold.as_ref();
    let back = hold.map_or(TaskState::Implementing, |h| h.resume_in);
    let kind = hold.map_or(HoldKind::UsageLimit, |h| h.kind);
    next.state = back;
    next.hold = None;
    let input = next.held_input.take().unwrap_or(AgentInput::Retry);
    let announce = match kind {
        HoldKind::UsageLimit => Announcement::Resumed,
        after => Announcement::Continued { after },
    };
    vec![
        Effect::ResolveInbox,
        Effect::RunAgent {
            phase: phase_of(back),
            input,
        },
        Effect::Announce(announce),
    ]
}

#[cfg(test)]
mod tests;

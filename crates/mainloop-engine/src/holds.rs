//! Tasks on hold at an agent's usage limit: the scheduled `task.wake` job that ends a
//! hold once the limit reset, and which agents are held (their queued work waits).

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use mainloop_domain::Timestamp;
use mainloop_domain::agents::AgentName;
use mainloop_domain::task::{Hold, HoldKind, TaskEvent, TaskState};

use crate::dispatcher::{JobContext, JobError};
use crate::jobs::{Handler, WakeTask};
use crate::{Engine, EngineError, Result, now};

/// When an agent did not say when its limit resets, its tasks try again after this.
pub const UNKNOWN_RESET_WAIT_MS: i64 = 15 * 60 * 1000;

/// When a hold with reset time `until` ends, its wake job scheduled at `at`.
#[must_use]
pub fn wake_time(until: Option<Timestamp>, at: Timestamp) -> Timestamp {
    until.unwrap_or_else(|| at.plus_millis(UNKNOWN_RESET_WAIT_MS))
}

/// Whether a task in `state` with `hold` is over its hold at `now`: it is on hold at a
/// usage limit, and its reset time (if it has one) has come. A wake job of an earlier
/// hold finds a later one not over, and never ends a budget's or a pause's.
#[must_use]
pub fn hold_over(state: TaskState, hold: Option<&Hold>, now: Timestamp) -> bool {
    state == TaskState::OnHold
        && hold.is_none_or(|h| {
            h.kind == HoldKind::UsageLimit && h.until.is_none_or(|until| until <= now)
        })
}

/// How long past its reset a task still on hold keeps its agent's queued work waiting:
/// the wake job is due at the reset, and the held task, older, goes on first.
pub const WAKE_GRACE_MS: i64 = 60 * 1000;

/// The agents whose work is held at `now`, from each task's agent, state and hold: by a
/// limit not yet reset, or just reset with the held task not yet gone on.
#[must_use]
pub fn held_agents<'a>(
    tasks: impl IntoIterator<Item = (&'a AgentName, TaskState, Option<&'a Hold>)>,
    now: Timestamp,
) -> BTreeSet<AgentName> {
    tasks
        .into_iter()
        .filter(|(_, state, hold)| {
            *state == TaskState::OnHold
                && hold
                    .filter(|h| h.kind == HoldKind::UsageLimit)
                    .and_then(|h| h.until)
                    .is_some_and(|until| now < until.plus_millis(WAKE_GRACE_MS))
        })
        .map(|(agent, _, _)| agent.clone())
        .collect()
}

impl Engine {
    /// The agents whose usage limit has not reset yet: new work for them waits.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn held_agents(&self) -> Result<BTreeSet<AgentName>> {
        let on_hold = self.tasks_in_states(&[TaskState::OnHold], 10_000).await?;
        let tasks = on_hold
            .iter()
            .map(|(_, t)| (&t.agent, t.state, t.hold.as_ref()));
        Ok(held_agents(tasks, now()))
    }
}

/// Runs `task.wake` jobs.
#[derive(Debug)]
pub(crate) struct WakeHandler;

impl Handler<WakeTask> for WakeHandler {
    fn run(
        &self,
        job: WakeTask,
        ctx: JobContext,
    ) -> BoxFuture<'static, std::result::Result<(), JobError>> {
        Box::pin(async move {
            let engine = &ctx.engine;
            let id = job.step.task_id;
            let task = engine
                .task_any_user(id)
                .await
                .map_err(|e| JobError::retry(e.to_string()))?;
            let Some((_, task)) = task else {
                return Ok(());
            };
            if !hold_over(task.state, task.hold.as_ref(), now()) {
                return Ok(());
            }
            match engine
                .apply_task_event(None, id, TaskEvent::HoldEnded)
                .await
            {
                Ok(_) | Err(EngineError::WrongState(_) | EngineError::NotFound(_)) => Ok(()),
                Err(e) => Err(JobError::retry(e.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(until: Option<i64>) -> Hold {
        Hold {
            reason: "limit".into(),
            until: until.map(Timestamp::from_millis),
            resume_in: TaskState::Implementing,
            kind: HoldKind::UsageLimit,
            budget: None,
        }
    }

    #[test]
    fn a_hold_is_over_at_its_reset_and_an_unknown_reset_waits_a_while() {
        let now = Timestamp::from_millis(10_000);
        let on_hold = |until| hold_over(TaskState::OnHold, Some(&hold(until)), now);
        assert!(!on_hold(Some(10_001)));
        assert!(on_hold(Some(10_000)));
        assert!(on_hold(None));
        assert!(!hold_over(
            TaskState::Implementing,
            Some(&hold(Some(0))),
            now
        ));
        // A budget's or a pause's hold waits for the human, whatever wakes it.
        for kind in [HoldKind::Budget, HoldKind::Paused] {
            let h = Hold { kind, ..hold(None) };
            assert!(!hold_over(TaskState::OnHold, Some(&h), now));
        }
        assert_eq!(
            wake_time(Some(Timestamp::from_millis(5)), now),
            Timestamp::from_millis(5)
        );
        assert_eq!(
            wake_time(None, now),
            Timestamp::from_millis(10_000 + UNKNOWN_RESET_WAIT_MS)
        );
    }

    #[test]
    fn only_agents_whose_limit_has_not_reset_are_held() {
        let now = Timestamp::from_millis(10_000);
        let name = |s| AgentName::parse(s).unwrap();
        let (claude, codex, gemini) = (name("claude"), name("codex"), name("gemini"));
        let (later, earlier, unknown) = (hold(Some(20_000)), hold(Some(5_000)), hold(None));
        let tasks = [
            (&claude, TaskState::OnHold, Some(&later)),
            (&codex, TaskState::OnHold, Some(&earlier)),
            (&gemini, TaskState::OnHold, Some(&unknown)),
            (&gemini, TaskState::Implementing, None),
        ];
        // Codex's reset has just passed: its held task, not gone on yet, goes first.
        let held = BTreeSet::from([claude.clone(), codex.clone()]);
        assert_eq!(held_agents(tasks, now), held);
        // Long past the reset (the wake did not come), its queued work goes ahead.
        let much_later = now.plus_millis(WAKE_GRACE_MS);
        let tasks = [(&codex, TaskState::OnHold, Some(&earlier))];
        assert!(held_agents(tasks, much_later).is_empty());
    }
}

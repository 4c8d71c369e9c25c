use super::super::{TaskState as S, transition};
use super::*;
use crate::question::Answers;

fn working(state: S) -> TaskCore {
    TaskCore {
        state,
        ..TaskCore::new(false, 3)
    }
}

fn step(c: &TaskCore, e: TaskEvent) -> super::super::Transition {
    transition(c, e).unwrap()
}

fn budget(input: Option<AgentInput>) -> TaskEvent {
    TaskEvent::BudgetReached {
        scope: BudgetScope::Task,
        reason: "This task's budget of $0.05 is reached".into(),
        input,
    }
}

#[test]
fn a_budget_holds_the_task_with_a_needs_you_item_and_the_answer_it_had_not_delivered() {
    let answers = AgentInput::Answers(Answers::default());
    let held = step(&working(S::Planning), budget(Some(answers.clone())));
    assert_eq!(held.core.state, S::OnHold);
    let hold = held.core.hold.clone().unwrap();
    assert_eq!(
        (hold.kind, hold.budget),
        (HoldKind::Budget, Some(BudgetScope::Task))
    );
    assert_eq!(hold.until, None);
    assert_eq!(
        held.effects[0],
        Effect::OpenInbox {
            kind: InboxKind::Budget
        }
    );
    // Raised: the run after the hold tells the agent the answers it never got.
    let raised = step(&held.core, TaskEvent::HoldEnded);
    assert_eq!(raised.core.state, S::Planning);
    assert!(!raised.core.budget_waived);
    assert_eq!(raised.effects[0], Effect::ResolveInbox);
    assert_eq!(
        raised.effects[1],
        Effect::RunAgent {
            phase: super::super::AgentPhase::Plan,
            input: answers,
        }
    );
    assert_eq!(raised.core.held_input, None);
}

#[test]
fn continue_once_lasts_one_run_and_only_a_budget_hold_takes_it() {
    let held = step(&working(S::Implementing), budget(None));
    let once = step(&held.core, TaskEvent::BudgetWaived);
    assert!(once.core.budget_waived);
    assert_eq!(once.core.state, S::Implementing);
    assert_eq!(
        once.effects[1],
        Effect::RunAgent {
            phase: super::super::AgentPhase::Implement,
            input: AgentInput::Retry,
        }
    );
    // The run's end, whatever it is, ends the waiver.
    let finished = step(&once.core, TaskEvent::AgentFinished);
    assert!(!finished.core.budget_waived);
    // A pause or a usage limit is not waived.
    let paused = step(&working(S::Implementing), TaskEvent::Paused { input: None });
    assert!(transition(&paused.core, TaskEvent::BudgetWaived).is_err());
    let limit = TaskEvent::LimitReached {
        reason: "limit".into(),
        until: None,
    };
    let limited = step(&working(S::Implementing), limit);
    assert!(transition(&limited.core, TaskEvent::BudgetWaived).is_err());
}

#[test]
fn a_pause_holds_working_tasks_without_an_inbox_item_and_resume_goes_on() {
    for state in S::ALL {
        let paused = transition(&working(state), TaskEvent::Paused { input: None });
        let ok = matches!(state, S::Planning | S::Implementing);
        assert_eq!(paused.is_ok(), ok, "{state}");
        assert_eq!(
            transition(&working(state), budget(None)).is_ok(),
            ok,
            "{state}"
        );
    }
    let paused = step(&working(S::Planning), TaskEvent::Paused { input: None });
    let hold = paused.core.hold.clone().unwrap();
    assert_eq!(hold.kind, HoldKind::Paused);
    assert_eq!(paused.effects, [Effect::Announce(Announcement::Paused)]);
    let back = step(&paused.core, TaskEvent::HoldEnded);
    assert_eq!(back.core.state, S::Planning);
    assert_eq!(
        back.effects[2],
        Effect::Announce(Announcement::Continued {
            after: HoldKind::Paused
        })
    );
    // A cancelled hold forgets its input.
    let held = step(&working(S::Planning), budget(Some(AgentInput::Start)));
    let cancelled = step(&held.core, TaskEvent::CancelRequested);
    assert_eq!(cancelled.core.held_input, None);
    assert_eq!(cancelled.core.hold, None);
}

#[test]
fn holds_stored_before_kinds_existed_read_as_usage_limits() {
    let old = serde_json::json!({"reason": "limit", "until": null, "resume_in": "implementing"});
    let hold: Hold = serde_json::from_value(old).unwrap();
    assert_eq!(hold.kind, HoldKind::UsageLimit);
    assert_eq!(hold.budget, None);
}

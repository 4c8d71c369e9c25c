//! The task state machine, transition by transition.

use super::*;
use crate::question::{Answer, QuestionOption};
use TaskState as S;
use std::collections::BTreeSet;

fn question() -> Question {
    Question {
        id: "q1".into(),
        header: "Color".into(),
        question: "Which color?".into(),
        options: vec![QuestionOption {
            label: "Red".into(),
            description: "warm".into(),
        }],
        multi_select: false,
    }
}

fn answers() -> Answers {
    [("q1".to_owned(), Answer::Choices(vec!["Red".into()]))]
        .into_iter()
        .collect()
}

fn all_events() -> Vec<TaskEvent> {
    vec![
        TaskEvent::SlotGranted,
        TaskEvent::QuestionsAsked(vec![question()]),
        TaskEvent::Answered(answers()),
        TaskEvent::PlanProposed("# plan".into()),
        TaskEvent::PlanApproved,
        TaskEvent::PlanRevisionRequested("shorter".into()),
        TaskEvent::AgentFinished,
        TaskEvent::ChecksPassed,
        TaskEvent::ChecksFailed("boom".into()),
        TaskEvent::ReviewApproved,
        TaskEvent::ChangesRequested("rename".into()),
        TaskEvent::MergeConflict("conflict".into()),
        TaskEvent::BranchUpdated,
        TaskEvent::Merged,
        TaskEvent::ClosedUnmerged,
        TaskEvent::AgentFailed("crash".into()),
        TaskEvent::CancelRequested,
        TaskEvent::RetryRequested(None),
        TaskEvent::LimitReached {
            reason: "limit".into(),
            until: None,
        },
        TaskEvent::HoldEnded,
    ]
}

fn core(state: TaskState) -> TaskCore {
    TaskCore {
        state,
        ..TaskCore::new(false, 3)
    }
}

fn step(c: &TaskCore, e: TaskEvent) -> Transition {
    transition(c, e).unwrap()
}

/// Every (state, event) pair, checked against the table of allowed pairs, so adding a
/// state or event forces a decision here.
#[test]
fn allowed_pairs_match_the_table() {
    let allowed: BTreeSet<(&str, &str)> = [
        ("queued", "slot_granted"),
        ("planning", "questions_asked"),
        ("implementing", "questions_asked"),
        ("waiting_answers", "answered"),
        ("planning", "plan_proposed"),
        ("waiting_plan_review", "plan_approved"),
        ("waiting_plan_review", "plan_revision_requested"),
        ("implementing", "agent_finished"),
        ("planning", "agent_finished"),
        ("checking", "checks_passed"),
        ("checking", "checks_failed"),
        ("review", "review_approved"),
        ("review", "changes_requested"),
        ("review", "merge_conflict"),
        ("review", "merged"),
        ("review", "closed_unmerged"),
        ("failed", "retry_requested"),
        ("planning", "limit_reached"),
        ("implementing", "limit_reached"),
        ("on_hold", "hold_ended"),
    ]
    .into_iter()
    .chain(
        [
            "queued",
            "planning",
            "waiting_answers",
            "waiting_plan_review",
            "implementing",
            "on_hold",
            "checking",
            "review",
        ]
        .into_iter()
        .flat_map(|s| [(s, "agent_failed"), (s, "cancel_requested")]),
    )
    .chain([("failed", "cancel_requested")])
    .collect();

    for state in S::ALL {
        for event in all_events() {
            let name = event.name();
            let got = transition(&core(state), event);
            let want = allowed.contains(&(state.as_str(), name));
            assert_eq!(got.is_ok(), want, "{state} + {name}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.state, state);
                assert_eq!(
                    e.to_string(),
                    format!("{name} is not allowed while the task is {state}")
                );
            }
        }
    }
}

/// The main thread shows every step: each allowed transition announces itself.
#[test]
fn every_transition_is_announced() {
    for state in S::ALL {
        for event in all_events() {
            let name = event.name();
            if let Ok(t) = transition(&core(state), event) {
                assert!(
                    t.effects.iter().any(|e| matches!(e, Effect::Announce(_))),
                    "{state} + {name} is silent"
                );
            }
        }
    }
}

#[test]
fn final_states_accept_nothing() {
    for state in [S::Merged, S::Cancelled] {
        assert!(state.is_final());
        for event in all_events() {
            assert!(transition(&core(state), event).is_err());
        }
    }
}

#[test]
fn happy_path_with_questions_revision_and_a_failed_check() {
    let c = TaskCore::new(false, 3);
    let t = step(&c, TaskEvent::SlotGranted);
    assert_eq!(t.core.state, S::Planning);
    assert_eq!(
        t.effects[0],
        Effect::RunAgent {
            phase: AgentPhase::Plan,
            input: AgentInput::Start
        }
    );

    let t = step(&t.core, TaskEvent::QuestionsAsked(vec![question()]));
    assert_eq!(t.core.state, S::WaitingAnswers);
    assert!(t.effects.contains(&Effect::OpenInbox {
        kind: InboxKind::Question
    }));

    let t = step(&t.core, TaskEvent::Answered(answers()));
    assert_eq!(t.core.state, S::Planning);
    assert_eq!(t.effects[0], Effect::ResolveInbox);
    assert_eq!(
        t.effects[1],
        Effect::RunAgent {
            phase: AgentPhase::Plan,
            input: AgentInput::Answers(answers())
        }
    );

    let t = step(&t.core, TaskEvent::PlanProposed("# v1".into()));
    assert_eq!(t.core.state, S::WaitingPlanReview);
    let t = step(
        &t.core,
        TaskEvent::PlanRevisionRequested("add tests".into()),
    );
    assert_eq!(t.core.state, S::Planning);
    assert!(t.effects.contains(&Effect::RunAgent {
        phase: AgentPhase::Plan,
        input: AgentInput::PlanFeedback("add tests".into())
    }));
    let t = step(&t.core, TaskEvent::PlanProposed("# v2".into()));
    let t = step(&t.core, TaskEvent::PlanApproved);
    assert_eq!(t.core.state, S::Implementing);

    let t = step(&t.core, TaskEvent::AgentFinished);
    assert_eq!(t.core.state, S::Checking);
    assert_eq!(
        t.effects,
        vec![
            Effect::CommitWork,
            Effect::RunChecks { round: 0 },
            Effect::Announce(Announcement::Checking)
        ]
    );

    let t = step(&t.core, TaskEvent::ChecksFailed("1 test failed".into()));
    assert_eq!(t.core.state, S::Implementing);
    assert_eq!(t.core.check_round, 1);
    let t = step(&t.core, TaskEvent::AgentFinished);
    assert_eq!(t.effects[1], Effect::RunChecks { round: 1 });
    let t = step(&t.core, TaskEvent::ChecksPassed);
    assert_eq!(t.core.state, S::Review);

    let t = step(&t.core, TaskEvent::ReviewApproved);
    assert_eq!(t.core.state, S::Review);
    assert!(t.core.merge_requested);
    assert_eq!(
        t.effects,
        vec![
            Effect::ResolveInbox,
            Effect::Merge,
            Effect::Announce(Announcement::Merging)
        ]
    );
    // A second approval while the merge runs is refused rather than merging twice.
    assert!(transition(&t.core, TaskEvent::ReviewApproved).is_err());
    assert!(transition(&t.core, TaskEvent::ChangesRequested("x".into())).is_err());

    let t = step(&t.core, TaskEvent::Merged);
    assert_eq!(t.core.state, S::Merged);
}

#[test]
fn skip_plan_starts_implementing() {
    let t = step(&TaskCore::new(true, 3), TaskEvent::SlotGranted);
    assert_eq!(t.core.state, S::Implementing);
    assert_eq!(
        t.effects[0],
        Effect::RunAgent {
            phase: AgentPhase::Implement,
            input: AgentInput::Start
        }
    );
}

#[test]
fn questions_while_implementing_return_to_implementing() {
    let t = step(
        &core(S::Implementing),
        TaskEvent::QuestionsAsked(vec![question()]),
    );
    assert_eq!(t.core.asked_in, Some(S::Implementing));
    let t = step(&t.core, TaskEvent::Answered(answers()));
    assert_eq!(t.core.state, S::Implementing);
    assert!(matches!(
        t.effects[1],
        Effect::RunAgent {
            phase: AgentPhase::Implement,
            ..
        }
    ));
}

#[test]
fn no_questions_is_not_a_question() {
    assert!(transition(&core(S::Planning), TaskEvent::QuestionsAsked(vec![])).is_err());
}

#[test]
fn check_rounds_are_bounded() {
    let mut c = core(S::Checking);
    c.max_check_rounds = 2;
    for round in 1..=2 {
        let t = step(&c, TaskEvent::ChecksFailed("red".into()));
        assert_eq!(t.core.state, S::Implementing);
        assert_eq!(t.core.check_round, round);
        c = step(&t.core, TaskEvent::AgentFinished).core;
    }
    let t = step(&c, TaskEvent::ChecksFailed("still red".into()));
    assert_eq!(t.core.state, S::Failed);
    assert_eq!(t.core.failed_in, Some(S::Checking));
    assert!(t.effects.contains(&Effect::OpenInbox {
        kind: InboxKind::Failed
    }));
}

#[test]
fn failure_then_retry_resumes_where_it_stopped() {
    for (failed_in, resumed, phase) in [
        (S::Planning, S::Planning, Some(AgentPhase::Plan)),
        (S::WaitingAnswers, S::Planning, Some(AgentPhase::Plan)),
        (
            S::Implementing,
            S::Implementing,
            Some(AgentPhase::Implement),
        ),
        (S::Checking, S::Implementing, Some(AgentPhase::Implement)),
        (S::Queued, S::Queued, None),
    ] {
        let t = step(&core(failed_in), TaskEvent::AgentFailed("oops".into()));
        assert_eq!(t.core.state, S::Failed);
        assert_eq!(t.effects[0], Effect::StopAgent);
        assert!(t.effects.contains(&Effect::Announce(Announcement::Failed {
            reason: "oops".into()
        })));
        let r = step(&t.core, TaskEvent::RetryRequested(None));
        assert_eq!(r.core.state, resumed, "retry after failing in {failed_in}");
        assert_eq!(r.core.failed_in, None);
        let run = r.effects.iter().find_map(|e| match e {
            Effect::RunAgent { phase, input } => {
                assert_eq!(*input, AgentInput::Retry);
                Some(*phase)
            }
            _ => None,
        });
        assert_eq!(run, phase);
    }
}

/// A run that changed nothing fails; its retry tells the agent so, with what the human
/// said, and a later failure for another reason does not.
#[test]
fn a_retry_after_no_changes_carries_that_and_the_feedback_to_the_agent() {
    let t = step(
        &core(S::Checking),
        TaskEvent::AgentFailed(NO_CHANGES.into()),
    );
    assert!(t.core.failed_unchanged);
    let r = step(
        &t.core,
        TaskEvent::RetryRequested(Some("write the file this time".into())),
    );
    assert_eq!(r.core.state, S::Implementing);
    assert!(!r.core.failed_unchanged);
    assert!(r.effects.contains(&Effect::RunAgent {
        phase: AgentPhase::Implement,
        input: AgentInput::RetryWith(RetryNote {
            feedback: Some("write the file this time".into()),
            no_changes: true,
        }),
    }));

    let t = step(&r.core, TaskEvent::AgentFailed("crash".into()));
    assert!(!t.core.failed_unchanged);
    // Blank feedback is no feedback: a plain retry.
    let r = step(&t.core, TaskEvent::RetryRequested(Some("  \n".into())));
    assert!(r.effects.contains(&Effect::RunAgent {
        phase: AgentPhase::Implement,
        input: AgentInput::Retry,
    }));
}

/// A task stored before it could fail for changing nothing still reads.
#[test]
fn a_task_core_stored_without_the_no_changes_flag_still_reads() {
    let mut stored = serde_json::to_value(TaskCore::new(true, 3)).unwrap();
    stored.as_object_mut().unwrap().remove("failed_unchanged");
    let core: TaskCore = serde_json::from_value(stored).unwrap();
    assert!(!core.failed_unchanged);
}

#[test]
fn a_failed_merge_retries_the_merge() {
    let mut c = core(S::Review);
    c.merge_requested = true;
    let t = step(&c, TaskEvent::AgentFailed("push rejected".into()));
    let r = step(&t.core, TaskEvent::RetryRequested(None));
    assert_eq!(r.core.state, S::Review);
    assert!(r.effects.contains(&Effect::Merge));
}

#[test]
fn merge_conflict_sends_the_agent_back() {
    let mut c = core(S::Review);
    c.merge_requested = true;
    let t = step(&c, TaskEvent::MergeConflict("src/lib.rs".into()));
    assert_eq!(t.core.state, S::Implementing);
    assert!(!t.core.merge_requested);
}

#[test]
fn an_approved_branch_updated_with_its_base_is_checked_again() {
    let mut c = core(S::Review);
    c.merge_requested = true;
    c.check_round = 2;
    let t = step(&c, TaskEvent::BranchUpdated);
    assert_eq!(t.core.state, S::Checking);
    assert!(!t.core.merge_requested);
    assert!(t.effects.contains(&Effect::RunChecks { round: 0 }));
    // Only an approved merge updates the branch.
    assert!(transition(&core(S::Review), TaskEvent::BranchUpdated).is_err());
}

#[test]
fn cancel_stops_the_agent_and_clears_the_inbox() {
    for state in S::ALL.into_iter().filter(|s| !s.is_final()) {
        let t = step(&core(state), TaskEvent::CancelRequested);
        assert_eq!(t.core.state, S::Cancelled);
        assert_eq!(t.effects[0], Effect::StopAgent);
        assert_eq!(t.effects[1], Effect::ResolveInbox);
    }
}

#[test]
fn state_names_round_trip() {
    for s in S::ALL {
        assert_eq!(s.as_str().parse::<TaskState>().unwrap(), s);
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
    assert!("sleeping".parse::<TaskState>().is_err());
}

#[test]
fn a_usage_limit_holds_the_task_until_it_resets_then_it_goes_on_where_it_was() {
    let until = Some(Timestamp::from_millis(1_800_000_000_000));
    for working in [S::Planning, S::Implementing] {
        let held = step(
            &core(working),
            TaskEvent::LimitReached {
                reason: "You've hit your limit".into(),
                until,
            },
        );
        assert_eq!(held.core.state, S::OnHold);
        assert_eq!(
            held.core.hold,
            Some(Hold {
                reason: "You've hit your limit".into(),
                until,
                resume_in: working,
                kind: HoldKind::UsageLimit,
                budget: None,
            })
        );
        // No inbox item: nobody needs to act.
        assert_eq!(
            held.effects,
            [
                Effect::WakeAt { at: until },
                Effect::Announce(Announcement::OnHold { until })
            ]
        );
        let back = step(&held.core, TaskEvent::HoldEnded);
        assert_eq!(back.core.state, working);
        assert_eq!(back.core.hold, None);
        assert_eq!(
            back.effects[1],
            Effect::RunAgent {
                phase: phase_of(working),
                input: AgentInput::Retry
            }
        );
    }
    // Only working tasks meet a limit; only held ones end a hold.
    for state in TaskState::ALL {
        let limit = TaskEvent::LimitReached {
            reason: "x".into(),
            until: None,
        };
        let allowed = matches!(state, S::Planning | S::Implementing);
        assert_eq!(transition(&core(state), limit).is_ok(), allowed, "{state}");
        let ended = transition(&core(state), TaskEvent::HoldEnded).is_ok();
        assert_eq!(ended, state == S::OnHold, "{state}");
    }
}

#[test]
fn a_held_task_cancels_or_fails_without_its_hold() {
    let held = step(
        &core(S::Implementing),
        TaskEvent::LimitReached {
            reason: "x".into(),
            until: None,
        },
    )
    .core;
    let cancelled = step(&held, TaskEvent::CancelRequested);
    assert_eq!(cancelled.core.state, S::Cancelled);
    assert_eq!(cancelled.core.hold, None);
    let failed = step(&held, TaskEvent::AgentFailed("gone".into()));
    assert_eq!(failed.core.state, S::Failed);
    assert_eq!(failed.core.hold, None);
    // A retry resumes where the work was, not "on hold".
    assert_eq!(failed.core.failed_in, Some(S::Implementing));
}

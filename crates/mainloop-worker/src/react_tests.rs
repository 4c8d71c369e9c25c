//! What `react` makes of each kind of agent event.

use super::*;
use mainloop_agent::AgentOption;
use serde_json::json;

fn cx(phase: AgentPhase) -> Context<'static> {
    Context {
        phase,
        cwd: Path::new("/w"),
        plans_dir: Path::new("/h/.claude/plans"),
        session_id: Some("s1"),
        stderr: "last words",
        lifecycle: Lifecycle::Native,
    }
}

fn by_turn(phase: AgentPhase) -> Context<'static> {
    Context {
        lifecycle: Lifecycle::ByTurn,
        ..cx(phase)
    }
}

fn finished_with(end: TurnEnd, result: Option<&str>) -> AgentEvent {
    AgentEvent::Finished {
        end,
        result: result.map(str::to_owned),
        session_id: Some("s1".into()),
        cost_usd: 0.5,
        input_tokens: 10,
        output_tokens: u64::MAX,
    }
}

#[test]
fn a_new_session_id_is_stored_and_the_same_one_is_not() {
    let started = |id: &str| AgentEvent::SessionStarted {
        session_id: id.into(),
        model: "m".into(),
    };
    let steps = react(started("s2"), &cx(AgentPhase::Plan));
    assert_eq!(steps[0], Step::SetSession("s2".into()));
    assert_eq!(steps.len(), 2);
    assert!(matches!(
        react(started("s1"), &cx(AgentPhase::Plan)).as_slice(),
        [Step::Record(TranscriptEntry::Session(_))]
    ));
}

#[test]
fn questions_park_and_an_empty_question_is_refused() {
    let question = AgentQuestion {
        question: "Which?".into(),
        header: "H".into(),
        options: vec![],
        multi_select: false,
    };
    let asked = |questions| AgentEvent::Question {
        request_id: "r".into(),
        questions,
        input: json!({}),
    };
    let steps = react(asked(vec![question]), &cx(AgentPhase::Plan));
    assert!(matches!(
        &steps[1],
        Step::Park { event: TaskEvent::QuestionsAsked(qs), waiting: Waiting::Answers, .. }
            if qs[0].id == "q1"
    ));
    let steps = react(asked(vec![]), &cx(AgentPhase::Plan));
    assert!(matches!(
        &steps[1],
        Step::Reply {
            reply: ControlReply::Deny { .. },
            ..
        }
    ));
}

#[test]
fn a_plan_parks_when_planning_and_goes_on_when_implementing() {
    let plan = || AgentEvent::Plan {
        request_id: "r".into(),
        plan: "# P".into(),
        input: json!({"plan": "# P"}),
    };
    assert!(matches!(
        &react(plan(), &cx(AgentPhase::Plan))[1],
        Step::Park {
            waiting: Waiting::PlanReview,
            ..
        }
    ));
    assert!(matches!(
        &react(plan(), &cx(AgentPhase::Implement))[1],
        Step::Reply { reply: ControlReply::Allow { updated_input }, .. } if updated_input["plan"] == "# P"
    ));
}

#[test]
fn a_finished_turn_adds_usage_records_and_ends() {
    let steps = react(
        finished_with(TurnEnd::Done, Some("ok")),
        &cx(AgentPhase::Implement),
    );
    assert!(matches!(
        steps[0],
        Step::AddUsage {
            input_tokens: 10,
            output_tokens: i64::MAX,
            ..
        }
    ));
    assert!(matches!(&steps[1], Step::Record(TranscriptEntry::Finished(f)) if !f.is_error));
    assert_eq!(steps[2], Step::Finish);
}

#[test]
fn a_turn_that_meets_the_usage_limit_is_recorded_as_such_not_as_a_failure_of_the_work() {
    let limit = AgentFailure::UsageLimit {
        resets_at: Some(1_800_000_000),
        reason: "You've hit your 5-hour limit".into(),
    };
    let steps = react(
        finished_with(
            TurnEnd::Failed { failure: limit },
            Some("You've hit your 5-hour limit"),
        ),
        &cx(AgentPhase::Implement),
    );
    assert!(matches!(
        &steps[1],
        Step::Record(TranscriptEntry::Finished(f)) if f.is_error && f.usage_limit
    ));
    let other = AgentFailure::Other { reason: "x".into() };
    let steps = react(
        finished_with(TurnEnd::Failed { failure: other }, Some("x")),
        &cx(AgentPhase::Implement),
    );
    assert!(matches!(
        &steps[1],
        Step::Record(TranscriptEntry::Finished(f)) if !f.usage_limit
    ));
}

#[test]
fn a_failed_turn_says_why_in_the_agents_words_or_its_stderr() {
    let failed = |result| {
        let failure = AgentFailure::Other {
            reason: String::new(),
        };
        let steps = react(
            finished_with(TurnEnd::Failed { failure }, result),
            &cx(AgentPhase::Implement),
        );
        match steps.last() {
            Some(Step::Fail { why, .. }) => why.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        failed(Some("bad key")),
        "the agent reported an error: bad key"
    );
    assert_eq!(
        failed(Some("  ")),
        "the agent reported an error: last words"
    );
    assert_eq!(failed(None), "the agent reported an error: last words");
}

#[test]
fn an_exit_mid_run_fails_with_its_status_and_stderr() {
    let steps = react(
        AgentEvent::Exited {
            code: Some(1),
            failure: None,
        },
        &cx(AgentPhase::Implement),
    );
    assert!(
        matches!(&steps[0], Step::Record(TranscriptEntry::Error(e)) if e.text == "agent exited (1)")
    );
    assert_eq!(
        steps[1],
        Step::Fail {
            failure: AgentFailure::Other {
                reason: "last words".into()
            },
            why: "the agent exited unexpectedly (status 1): last words".into()
        }
    );
    let in_use = react(
        AgentEvent::Exited {
            code: None,
            failure: Some(AgentFailure::SessionInUse),
        },
        &cx(AgentPhase::Implement),
    );
    assert!(matches!(
        &in_use[1],
        Step::Fail { failure: AgentFailure::SessionInUse, why } if why.contains("status ?")
    ));
}

#[test]
fn permissions_follow_the_policy_and_malformed_lines_are_cut_safely() {
    let steps = react(
        AgentEvent::Permission {
            request_id: "p".into(),
            tool: "Write".into(),
            input: json!({"file_path": "/etc/passwd", "content": "x"}),
        },
        &cx(AgentPhase::Plan),
    );
    assert!(matches!(&steps[0], Step::Record(TranscriptEntry::Permission(p)) if !p.allowed));
    assert!(matches!(
        &steps[1],
        Step::Reply {
            reply: ControlReply::Deny { .. },
            ..
        }
    ));
    let line = "é".repeat(400);
    let steps = react(
        AgentEvent::Malformed {
            line,
            error: "e".into(),
        },
        &cx(AgentPhase::Plan),
    );
    assert!(
        matches!(&steps[0], Step::Record(TranscriptEntry::Malformed(m)) if m.line.len() == 500)
    );
}

/// Each entry a run records is stored and streamed as exactly the JSON the worker
/// wrote before entries were typed.
#[test]
fn recorded_entries_keep_the_json_written_before_they_were_typed() {
    let question = AgentQuestion {
        question: "Which?".into(),
        header: "DB".into(),
        options: vec![AgentOption {
            label: "SQLite".into(),
            description: "small".into(),
        }],
        multi_select: true,
    };
    let failed = TurnEnd::Failed {
        failure: AgentFailure::Other {
            reason: String::new(),
        },
    };
    let cases = [
        (
            AgentEvent::SessionStarted {
                session_id: "s2".into(),
                model: "claude-sonnet-4-5".into(),
            },
            "session",
            json!({"session_id": "s2", "model": "claude-sonnet-4-5"}),
        ),
        (
            AgentEvent::Text {
                text: "Hello".into(),
            },
            "text",
            json!({"text": "Hello"}),
        ),
        (
            AgentEvent::ToolCall {
                id: "t1".into(),
                name: "Write".into(),
                summary: "hello.txt".into(),
            },
            "tool_call",
            json!({"id": "t1", "name": "Write", "summary": "hello.txt"}),
        ),
        (
            AgentEvent::ToolResult {
                tool_use_id: "t1".into(),
                summary: "denied".into(),
                is_error: true,
            },
            "tool_result",
            json!({"tool_use_id": "t1", "summary": "denied", "is_error": true}),
        ),
        (
            AgentEvent::Permission {
                request_id: "p".into(),
                tool: "Write".into(),
                input: json!({"file_path": "/etc/passwd", "content": "x"}),
            },
            "permission",
            json!({"tool": "Write", "allowed": false}),
        ),
        (
            AgentEvent::Question {
                request_id: "r".into(),
                questions: vec![question],
                input: json!({}),
            },
            "question",
            json!({"questions": [{"id": "q1", "header": "DB", "question": "Which?",
                "options": [{"label": "SQLite", "description": "small"}],
                "multi_select": true}]}),
        ),
        (
            AgentEvent::Plan {
                request_id: "r".into(),
                plan: "# P".into(),
                input: json!({"plan": "# P"}),
            },
            "plan",
            json!({"plan": "# P"}),
        ),
        (
            finished_with(TurnEnd::Done, Some("ok")),
            "finished",
            json!({"is_error": false, "result": "ok", "session_id": "s1", "cost_usd": 0.5}),
        ),
        (
            AgentEvent::Finished {
                end: failed,
                result: None,
                session_id: None,
                cost_usd: 0.0,
                input_tokens: 0,
                output_tokens: 0,
            },
            "finished",
            json!({"is_error": true, "result": null, "session_id": null, "cost_usd": 0.0}),
        ),
        (
            AgentEvent::Malformed {
                line: "{oops".into(),
                error: "EOF".into(),
            },
            "malformed",
            json!({"line": "{oops", "error": "EOF"}),
        ),
        (
            AgentEvent::Exited {
                code: Some(2),
                failure: None,
            },
            "error",
            json!({"text": "agent exited (2)", "stderr": "last words"}),
        ),
    ];
    for (event, kind, before) in cases {
        let steps = react(event, &cx(AgentPhase::Plan));
        let recorded: Vec<&TranscriptEntry> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Record(entry) => Some(entry),
                _ => None,
            })
            .collect();
        let [entry] = recorded.as_slice() else {
            panic!("{kind}: {steps:?}")
        };
        assert_eq!(entry.kind(), kind);
        // Stored: the payload's text, byte for byte.
        assert_eq!(
            serde_json::to_string(&entry.payload()).unwrap(),
            serde_json::to_string(&before).unwrap(),
            "{kind}"
        );
        // Streamed: the entry in the record, as the untyped entry read back.
        assert_eq!(
            serde_json::to_value(entry).unwrap(),
            json!({"kind": kind, "payload": before}),
            "{kind}"
        );
        assert_eq!(
            **entry,
            TranscriptEntry::from_stored(kind, before),
            "{kind}"
        );
    }
}

#[test]
fn a_by_turn_planning_reply_is_the_plan_and_the_run_hands_over() {
    let steps = react(
        finished_with(TurnEnd::Done, Some("  # Plan\n1. Greet\n")),
        &by_turn(AgentPhase::Plan),
    );
    assert!(matches!(steps[0], Step::AddUsage { .. }));
    assert_eq!(
        steps[2],
        Step::Record(TranscriptEntry::Plan(PlanEntry {
            plan: "# Plan\n1. Greet".into()
        }))
    );
    assert_eq!(
        steps[3],
        Step::Hand(TaskEvent::PlanProposed("# Plan\n1. Greet".into()))
    );
    // Implementing, the same reply is finished work; a native agent's too.
    let steps = react(
        finished_with(TurnEnd::Done, Some("Done.")),
        &by_turn(AgentPhase::Implement),
    );
    assert_eq!(steps.last(), Some(&Step::Finish));
    let steps = react(
        finished_with(TurnEnd::Done, Some("# Plan")),
        &cx(AgentPhase::Plan),
    );
    assert_eq!(steps.last(), Some(&Step::Finish));
}

#[test]
fn a_by_turn_questions_block_asks_in_either_phase_and_no_plan_fails() {
    let reply = "<mainloop-questions>{\"questions\":[{\"question\":\"Which?\",\
                 \"options\":[{\"label\":\"A\"}]}]}</mainloop-questions>";
    for phase in [AgentPhase::Plan, AgentPhase::Implement] {
        let steps = react(finished_with(TurnEnd::Done, Some(reply)), &by_turn(phase));
        let Some(Step::Hand(TaskEvent::QuestionsAsked(qs))) = steps.last() else {
            panic!("{steps:?}")
        };
        assert_eq!(qs[0].question, "Which?");
        assert_eq!(qs[0].options[0].label, "A");
    }
    let steps = react(
        finished_with(TurnEnd::Done, Some("   ")),
        &by_turn(AgentPhase::Plan),
    );
    assert!(
        matches!(steps.last(), Some(Step::Fail { why, .. }) if why.contains("without a plan")),
        "{steps:?}"
    );
    // An unreadable block is recorded, and the rest of the reply is the plan.
    let steps = react(
        finished_with(
            TurnEnd::Done,
            Some("Plan B\n<mainloop-questions>{oops</mainloop-questions>"),
        ),
        &by_turn(AgentPhase::Plan),
    );
    assert!(matches!(
        steps[2],
        Step::Record(TranscriptEntry::Malformed(_))
    ));
    assert_eq!(
        steps.last(),
        Some(&Step::Hand(TaskEvent::PlanProposed("Plan B".into())))
    );
}

#[test]
fn quota_reports_are_kept_not_recorded_and_their_resets_read_as_timestamps() {
    let reports = vec![
        QuotaReport {
            window: "five_hour".into(),
            used_percent: Some(42.0),
            resets_at: Some(1_796_578_949),
            limited: false,
        },
        QuotaReport {
            window: "seven_day".into(),
            used_percent: None,
            resets_at: Some(u64::MAX),
            limited: true,
        },
    ];
    let event = AgentEvent::Quota {
        windows: reports.clone(),
    };
    assert_eq!(
        react(event, &cx(AgentPhase::Implement)),
        [Step::Quota(reports.clone())]
    );

    let agent = AgentName::parse("codex").unwrap();
    let seen = Timestamp::from_millis(7);
    let windows = quota_windows(&agent, reports, seen);
    assert_eq!(windows.len(), 2);
    assert_eq!(windows[0].agent, agent);
    assert_eq!(windows[0].window, "five_hour");
    assert_eq!(windows[0].used_percent, Some(42.0));
    assert_eq!(
        windows[0].resets_at,
        Some(Timestamp::from_millis(1_796_578_949_000))
    );
    assert!(!windows[0].limited);
    assert_eq!(windows[0].observed_at, seen);
    // An absurd reset saturates instead of wrapping.
    assert_eq!(windows[1].resets_at, Some(Timestamp::from_millis(i64::MAX)));
    assert!(windows[1].limited && windows[1].used_percent.is_none());
}

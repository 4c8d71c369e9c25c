//! What a run does with each event of its agent, as a pure function returning steps as
//! data: the transcript entry to record, the control reply to send, the session and
//! usage to store, and how the run ends (parked for the human, finished, or failed).

use std::path::Path;

use mainloop_agent::{AgentEvent, AgentFailure, AgentQuestion, ControlReply, TurnEnd};
use mainloop_domain::question::{Question, QuestionOption};
use mainloop_domain::task::{AgentPhase, TaskEvent};
use mainloop_domain::transcript::{
    ErrorEntry, FinishedEntry, MalformedEntry, PermissionEntry, PlanEntry, QuestionEntry,
    SessionEntry, ToolCallEntry, ToolResultEntry, TranscriptEntry,
};
use serde_json::Value;

use crate::Waiting;
use crate::policy::{Decision, decide};

/// Longest malformed line kept in the transcript, in bytes.
const MALFORMED_KEPT_BYTES: usize = 500;

/// What the reaction to an event depends on besides the event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub phase: AgentPhase,
    pub cwd: &'a Path,
    pub plans_dir: &'a Path,
    /// The session the task has recorded.
    pub session_id: Option<&'a str>,
    /// The agent's last stderr lines, read for the events that end a run.
    pub stderr: &'a str,
}

/// One thing to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// A transcript entry.
    Record(TranscriptEntry),
    /// The agent runs under another session id than the recorded one.
    SetSession(String),
    AddUsage {
        cost_usd: f64,
        input_tokens: i64,
        output_tokens: i64,
    },
    Reply {
        request_id: String,
        reply: ControlReply,
    },
    /// Hand the task to the human and park the session; the run ends.
    Park {
        event: TaskEvent,
        request_id: String,
        input: Value,
        waiting: Waiting,
    },
    /// The turn succeeded; the run ends.
    Finish,
    /// The run ends on `failure`, told to a human as `why`.
    Fail { failure: AgentFailure, why: String },
}

/// The steps for `event`.
pub(crate) fn react(event: AgentEvent, cx: &Context<'_>) -> Vec<Step> {
    match event {
        AgentEvent::SessionStarted { session_id, model } => {
            let mut steps = Vec::new();
            if cx.session_id != Some(session_id.as_str()) && !session_id.is_empty() {
                steps.push(Step::SetSession(session_id.clone()));
            }
            steps.push(Step::Record(TranscriptEntry::Session(SessionEntry {
                session_id,
                model,
            })));
            steps
        }
        AgentEvent::Text { text } => vec![Step::Record(TranscriptEntry::text_entry(text))],
        AgentEvent::ToolCall { id, name, summary } => {
            vec![Step::Record(TranscriptEntry::ToolCall(ToolCallEntry {
                id,
                name,
                summary,
            }))]
        }
        AgentEvent::ToolResult {
            tool_use_id,
            summary,
            is_error,
        } => vec![Step::Record(TranscriptEntry::ToolResult(ToolResultEntry {
            tool_use_id,
            summary,
            is_error,
        }))],
        AgentEvent::Permission {
            request_id,
            tool,
            input,
        } => {
            let (reply, allowed) = match decide(cx.phase, &tool, &input, cx.cwd, cx.plans_dir) {
                Decision::Allow => (
                    ControlReply::Allow {
                        updated_input: input,
                    },
                    true,
                ),
                Decision::Deny(message) => (
                    ControlReply::Deny {
                        message,
                        interrupt: false,
                    },
                    false,
                ),
            };
            vec![
                Step::Record(TranscriptEntry::Permission(PermissionEntry {
                    tool,
                    allowed,
                })),
                Step::Reply { request_id, reply },
            ]
        }
        AgentEvent::Question {
            request_id,
            questions,
            input,
        } => {
            let qs = questions_of(&questions);
            let record = Step::Record(TranscriptEntry::Question(QuestionEntry {
                questions: qs.clone(),
            }));
            let then = if qs.is_empty() {
                Step::Reply {
                    request_id,
                    reply: ControlReply::Deny {
                        message: "ask at least one question".into(),
                        interrupt: false,
                    },
                }
            } else {
                Step::Park {
                    event: TaskEvent::QuestionsAsked(qs),
                    request_id,
                    input,
                    waiting: Waiting::Answers,
                }
            };
            vec![record, then]
        }
        AgentEvent::Plan {
            request_id,
            plan,
            input,
        } => {
            let record = Step::Record(TranscriptEntry::Plan(PlanEntry { plan: plan.clone() }));
            let then = if cx.phase == AgentPhase::Implement {
                // Already approved; the agent re-announced its plan. Let it go on.
                Step::Reply {
                    request_id,
                    reply: ControlReply::Allow {
                        updated_input: input,
                    },
                }
            } else {
                Step::Park {
                    event: TaskEvent::PlanProposed(plan),
                    request_id,
                    input,
                    waiting: Waiting::PlanReview,
                }
            };
            vec![record, then]
        }
        AgentEvent::Finished {
            end,
            result,
            session_id,
            cost_usd,
            input_tokens,
            output_tokens,
        } => finished(
            end,
            result.as_deref(),
            session_id.as_deref(),
            cost_usd,
            (input_tokens, output_tokens),
            cx,
        ),
        AgentEvent::Malformed { line, error } => {
            tracing::warn!(%error, "skipping malformed agent output");
            let line = cut(&line, MALFORMED_KEPT_BYTES);
            vec![Step::Record(TranscriptEntry::Malformed(MalformedEntry {
                line: line.to_owned(),
                error,
            }))]
        }
        AgentEvent::Exited { code, failure } => {
            let code = code.map_or_else(|| "?".to_owned(), |c| c.to_string());
            let tail = cx.stderr;
            vec![
                Step::Record(TranscriptEntry::Error(ErrorEntry {
                    text: format!("agent exited ({code})"),
                    stderr: tail.to_owned(),
                })),
                Step::Fail {
                    // Mid-run, even a clean exit is a failure.
                    failure: failure.unwrap_or_else(|| AgentFailure::Other {
                        reason: tail.to_owned(),
                    }),
                    why: format!("the agent exited unexpectedly (status {code}): {tail}"),
                },
            ]
        }
    }
}

fn finished(
    end: TurnEnd,
    result: Option<&str>,
    session_id: Option<&str>,
    cost_usd: f64,
    (input_tokens, output_tokens): (u64, u64),
    cx: &Context<'_>,
) -> Vec<Step> {
    let is_error = end != TurnEnd::Done;
    let why = result.filter(|r| !r.trim().is_empty()).unwrap_or(cx.stderr);
    let why = format!("the agent reported an error: {why}");
    let then = match end {
        TurnEnd::Done => Step::Finish,
        TurnEnd::Failed { failure } => Step::Fail { failure, why },
    };
    vec![
        Step::AddUsage {
            cost_usd,
            input_tokens: i64::try_from(input_tokens).unwrap_or(i64::MAX),
            output_tokens: i64::try_from(output_tokens).unwrap_or(i64::MAX),
        },
        Step::Record(TranscriptEntry::Finished(FinishedEntry {
            is_error,
            result: result.map(str::to_owned),
            session_id: session_id.map(str::to_owned),
            cost_usd,
        })),
        then,
    ]
}

fn questions_of(qs: &[AgentQuestion]) -> Vec<Question> {
    qs.iter()
        .enumerate()
        .map(|(i, q)| Question {
            id: format!("q{}", i + 1),
            header: q.header.clone(),
            question: q.question.clone(),
            options: q
                .options
                .iter()
                .map(|o| QuestionOption {
                    label: o.label.clone(),
                    description: o.description.clone(),
                })
                .collect(),
            multi_select: q.multi_select,
        })
        .collect()
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
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
}

//! What a run does with each event of its agent, as a pure function returning steps as
//! data: the transcript entry to record, the control reply to send, the session, usage
//! and quota windows to store, and how the run ends (parked for the human, finished, or
//! failed).

use std::path::Path;

use mainloop_agent::{AgentEvent, AgentFailure, AgentQuestion, ControlReply, QuotaReport, TurnEnd};
use mainloop_domain::Timestamp;
use mainloop_domain::agents::AgentName;
use mainloop_domain::question::{Question, QuestionOption};
use mainloop_domain::task::{AgentPhase, TaskEvent};
use mainloop_domain::transcript::{
    ErrorEntry, FinishedEntry, MalformedEntry, PermissionEntry, PlanEntry, QuestionEntry,
    SessionEntry, ToolCallEntry, ToolResultEntry, TranscriptEntry,
};
use mainloop_domain::usage::QuotaWindow;
use serde_json::Value;

use crate::Waiting;
use crate::convention::{self, Lifecycle, Reply};
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
    pub lifecycle: Lifecycle,
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
    /// Keep what the agent said of its account's quota windows (see [`quota_windows`]);
    /// nothing for the transcript.
    Quota(Vec<QuotaReport>),
    /// Hand the task to the human and park the session; the run ends.
    Park {
        event: TaskEvent,
        request_id: String,
        input: Value,
        waiting: Waiting,
    },
    /// Hand the task to the human; the agent's turn is over and its session saved, so
    /// the run ends with no process kept, and the answer resumes the session.
    Hand(TaskEvent),
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
        AgentEvent::Quota { windows } => vec![Step::Quota(windows)],
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

/// The quota windows `agent` reported, as observed at `observed_at`.
pub(crate) fn quota_windows(
    agent: &AgentName,
    reports: Vec<QuotaReport>,
    observed_at: Timestamp,
) -> Vec<QuotaWindow> {
    reports
        .into_iter()
        .map(|r| {
            let when = (r.used_percent, r.resets_at);
            QuotaWindow::reported(agent.clone(), r.window, when, r.limited, observed_at)
        })
        .collect()
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
    let usage_limit = matches!(
        &end,
        TurnEnd::Failed {
            failure: AgentFailure::UsageLimit { .. }
        }
    );
    let why = result.filter(|r| !r.trim().is_empty()).unwrap_or(cx.stderr);
    let why = format!("the agent reported an error: {why}");
    let mut steps = vec![
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
            usage_limit,
        })),
    ];
    match end {
        TurnEnd::Done if cx.lifecycle == Lifecycle::ByTurn => {
            steps.extend(handed_over(result.unwrap_or_default(), cx.phase));
        }
        TurnEnd::Done => steps.push(Step::Finish),
        TurnEnd::Failed { failure } => steps.push(Step::Fail { failure, why }),
    }
    steps
}

/// What the finished turn of an agent that plans and asks by the end of its turn hands
/// to the human: its questions, its plan (the planning turn's reply), or finished work.
fn handed_over(reply: &str, phase: AgentPhase) -> Vec<Step> {
    match convention::read(reply) {
        Reply::Questions(qs) => {
            let qs = questions_of(&qs);
            vec![
                Step::Record(TranscriptEntry::Question(QuestionEntry {
                    questions: qs.clone(),
                })),
                Step::Hand(TaskEvent::QuestionsAsked(qs)),
            ]
        }
        Reply::BadQuestions { text, error } => {
            let mut steps = vec![Step::Record(TranscriptEntry::Malformed(MalformedEntry {
                line: cut(reply, MALFORMED_KEPT_BYTES).to_owned(),
                error,
            }))];
            steps.extend(plan_or_finish(text, phase));
            steps
        }
        Reply::Text(text) => plan_or_finish(text, phase),
    }
}

fn plan_or_finish(text: String, phase: AgentPhase) -> Vec<Step> {
    match phase {
        AgentPhase::Implement => vec![Step::Finish],
        AgentPhase::Plan if text.is_empty() => {
            let why = "the agent ended its planning turn without a plan".to_owned();
            vec![Step::Fail {
                failure: AgentFailure::Other {
                    reason: why.clone(),
                },
                why,
            }]
        }
        AgentPhase::Plan => vec![
            Step::Record(TranscriptEntry::Plan(PlanEntry { plan: text.clone() })),
            Step::Hand(TaskEvent::PlanProposed(text)),
        ],
    }
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
#[path = "react_tests.rs"]
mod tests;

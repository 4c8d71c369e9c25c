//! One agent run: start or resume the session, deliver its input, and turn its events
//! into transcript entries and lifecycle events until it finishes, fails, or waits for
//! the human (then the session is parked and the slot freed).

use crate::confine::Confined;
use crate::policy::{Decision, decide};
use crate::prompts::{CONTINUE, WORKER_INSTRUCTIONS, input_message};
use crate::steps::{apply, fail, load, payload, retry, status, worktree};
use crate::{Parked, Runtime, Waiting};
use mainloop_agent::{AgentEvent, AgentMode, AgentSession, ControlReply, RunSpec, SessionRef};
use mainloop_domain::question::{Question, QuestionOption, answers_by_question_text};
use mainloop_domain::records::Task;
use mainloop_domain::task::{AgentInput, AgentPhase, Effect, TaskEvent, TaskState};
use mainloop_domain::{TaskId, UserId};
use mainloop_engine::{JobContext, JobError};
use serde_json::json;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Removes the task's cancel token when the run ends, however it ends.
struct RunningGuard<'a> {
    rt: &'a Runtime,
    task: TaskId,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.rt.inner.running.lock() {
            r.remove(&self.task);
        }
    }
}

const fn state_of(phase: AgentPhase) -> TaskState {
    match phase {
        AgentPhase::Plan => TaskState::Planning,
        AgentPhase::Implement => TaskState::Implementing,
    }
}

const fn mode_of(phase: AgentPhase) -> AgentMode {
    match phase {
        AgentPhase::Plan => AgentMode::Plan,
        AgentPhase::Implement => AgentMode::Implement,
    }
}

/// `task.run_agent`.
pub(crate) async fn run_agent(rt: &Runtime, ctx: &JobContext) -> Result<(), JobError> {
    let p = payload(ctx)?;
    let Effect::RunAgent { phase, input } = p.effect else {
        return Err(JobError::fatal("task.run_agent without an agent input"));
    };
    let Some((user, task)) = load(rt, p.task_id).await? else {
        return Ok(());
    };
    if task.state != state_of(phase) {
        // Cancelled, failed or moved on before this run started.
        return Ok(());
    }
    let cancel = CancellationToken::new();
    if let Ok(mut r) = rt.inner.running.lock() {
        r.insert(task.id, cancel.clone());
    }
    let _guard = RunningGuard { rt, task: task.id };

    let wt = match worktree(rt, &task).await {
        Ok(w) => w,
        Err(e) => return fail(rt, task.id, format!("could not prepare the workspace: {e}")).await,
    };
    let confined = match rt.confine(task.id, &wt).await {
        Ok(c) => c,
        Err(e) => return fail(rt, task.id, e).await,
    };
    let key = ctx.job.key.clone();
    let mut task = task;
    let mut fresh = false;
    let mut api_failures = 0_u32;
    let mut session_fallbacks = 0_u32;
    loop {
        let run = Run {
            rt,
            user,
            task: &task,
            phase,
            cwd: &wt.path,
            confined: &confined,
            input_key: &key,
        };
        let session = match deliver(&run, &input, fresh).await {
            Ok(s) => s,
            Err(Delivery::Retry(e)) => return Err(e),
            Err(Delivery::Fail(reason)) => return fail(rt, task.id, reason).await,
        };
        match pump(&run, session, &cancel).await? {
            Outcome::Ended => return Ok(()),
            Outcome::SessionMissing if !fresh && session_fallbacks < 2 => {
                // The agent died before it saved its session (the server was killed
                // right after starting it): start that session afresh, with the task.
                status(
                    rt,
                    user,
                    task.id,
                    "the saved session was missing; starting it again",
                )
                .await;
                fresh = true;
                session_fallbacks += 1;
            }
            Outcome::SessionMissing => {
                return fail(rt, task.id, "the agent could not find its session".into()).await;
            }
            Outcome::SessionInUse(_) if fresh && session_fallbacks < 2 => {
                // Missing a moment ago, saved now: the agent of a server that was killed
                // wrote it as it died. Resume it rather than start it again.
                status(
                    rt,
                    user,
                    task.id,
                    "the session was saved after all; resuming it",
                )
                .await;
                fresh = false;
                session_fallbacks += 1;
            }
            Outcome::SessionInUse(why) => return fail(rt, task.id, why).await,
            Outcome::ModelUnavailable(why) => {
                // An outage of the model API outlasted the agent's own retries. Nobody
                // needs to act on it: wait, then resume the same session, a few times
                // before telling the human.
                let cfg = &rt.inner.config;
                if api_failures >= cfg.api_retries {
                    let tries = match cfg.api_retries {
                        0 => String::new(),
                        1 => " (still failing after 1 retry)".to_owned(),
                        n => format!(" (still failing after {n} retries)"),
                    };
                    return fail(
                        rt,
                        task.id,
                        format!("the agent reported an error: {why}{tries}"),
                    )
                    .await;
                }
                let wait = api_retry_wait(cfg.api_retry_delay, api_failures);
                api_failures += 1;
                status(
                    rt,
                    user,
                    task.id,
                    &format!(
                        "the model API is failing ({why}); trying again in {} s ({api_failures} of {})",
                        wait.as_secs(),
                        cfg.api_retries
                    ),
                )
                .await;
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
                // The session (and that it has this input) is recorded now; resume it.
                match load(rt, task.id).await? {
                    Some((_, t)) if t.state == state_of(phase) => task = t,
                    _ => return Ok(()),
                }
                fresh = false;
            }
        }
    }
}

/// The wait before the `n`th (from 0) relaunch after a model API failure: `first`,
/// doubling, at most ten minutes.
fn api_retry_wait(first: std::time::Duration, n: u32) -> std::time::Duration {
    first
        .saturating_mul(1_u32 << n.min(10))
        .min(std::time::Duration::from_secs(600))
}

/// How a pump ended.
enum Outcome {
    Ended,
    /// `--resume` found no saved conversation.
    SessionMissing,
    /// The turn failed on a model API failure that passes (the agent's reason).
    ModelUnavailable(String),
    /// `--session-id` named a session already saved (why the agent exited).
    SessionInUse(String),
}

/// What the CLI says when `--resume` names a session it never saved.
const NO_SESSION: &str = "No conversation found with session ID";

/// What the CLI says when `--session-id` names a session it already saved.
const SESSION_IN_USE: &str = "is already in use";

/// Buffers transcript entries so a burst of agent output commits in one transaction.
struct Recorder<'a> {
    rt: &'a Runtime,
    user: UserId,
    task: TaskId,
    pending: Vec<(&'static str, serde_json::Value)>,
}

impl Recorder<'_> {
    /// Most output is buffered; entries that precede a lifecycle change (questions, a
    /// plan, the end) are stored at once, so the transcript never lags the task.
    async fn record(&mut self, kind: &'static str, payload: serde_json::Value) {
        self.pending.push((kind, payload));
        let routine = matches!(
            kind,
            "text" | "tool_call" | "tool_result" | "permission" | "malformed"
        );
        if !routine || self.pending.len() >= 256 {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.pending);
        if let Err(e) = self
            .rt
            .inner
            .engine
            .record_task_outputs(self.user, self.task, &entries)
            .await
        {
            tracing::warn!(error = %e, lost = entries.len(), "could not record agent output");
        }
    }
}

/// What one agent run is about.
#[derive(Clone, Copy)]
struct Run<'a> {
    rt: &'a Runtime,
    user: UserId,
    task: &'a Task,
    phase: AgentPhase,
    cwd: &'a std::path::Path,
    confined: &'a Confined,
    input_key: &'a str,
}

enum Delivery {
    Retry(JobError),
    Fail(String),
}

/// Gets a session that has received `input`: the parked one answered through the
/// control protocol when possible, else a started or resumed process given a message.
async fn deliver(
    run: &Run<'_>,
    input: &AgentInput,
    fresh: bool,
) -> Result<Box<dyn AgentSession>, Delivery> {
    let Run {
        rt,
        user,
        task,
        phase,
        cwd,
        confined,
        input_key: key,
    } = *run;
    let engine = &rt.inner.engine;
    if let Some(mut parked) = rt.take_parked(task.id).filter(|_| !fresh) {
        let reply = match (input, parked.waiting_for) {
            (AgentInput::Answers(a), Waiting::Answers) => Some(ControlReply::answers(
                &parked.input,
                &answers_by_question_text(&task.questions, a),
            )),
            (AgentInput::PlanApproved, Waiting::PlanReview) => Some(ControlReply::Allow {
                updated_input: parked.input.clone(),
            }),
            (AgentInput::PlanFeedback(f), Waiting::PlanReview) => Some(ControlReply::Deny {
                message: f.clone(),
                interrupt: false,
            }),
            _ => None,
        };
        let replied = match reply {
            Some(reply) => parked
                .session
                .reply(&parked.request_id, reply)
                .await
                .is_ok(),
            None => false,
        };
        if replied {
            let _ = engine
                .set_task_session(
                    task.id,
                    task.session_id.as_deref().unwrap_or_default(),
                    Some(key),
                )
                .await;
            return Ok(parked.session);
        }
        // The parked process cannot take this input (or died): resume from disk.
        parked.session.kill().await;
    }
    let (session_ref, new_id) = match &task.session_id {
        Some(id) if fresh => (SessionRef::New(id.clone()), Some(id.clone())),
        Some(id) => (SessionRef::Resume(id.clone()), None),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            (SessionRef::New(id.clone()), Some(id))
        }
    };
    let spec = RunSpec {
        cwd: cwd.to_path_buf(),
        session: session_ref,
        mode: mode_of(phase),
        model: task.model.clone().or_else(|| rt.inner.config.model.clone()),
        append_system_prompt: Some(WORKER_INSTRUCTIONS.to_owned()),
        env: confined.env.clone(),
        wrapper: confined.wrapper.clone(),
    };
    let mut session = rt
        .inner
        .agent
        .start(spec)
        .map_err(|e| Delivery::Fail(e.to_string()))?;
    rt.record_pid(task.id, session.pid());
    // Record a new session before it can do anything, so a crash resumes it.
    if let Some(id) = &new_id {
        engine
            .set_task_session(task.id, id, None)
            .await
            .map_err(|e| Delivery::Retry(retry(e)))?;
    }
    let delivered = task.agent_input_key.as_deref() == Some(key);
    let text = if fresh {
        // A new conversation knows nothing yet: give it the task, then the input.
        match input {
            AgentInput::Start => input_message(task, input),
            other => format!(
                "{}\n\n{}",
                input_message(task, &AgentInput::Start),
                input_message(task, other)
            ),
        }
    } else if delivered {
        CONTINUE.to_owned()
    } else {
        input_message(task, input)
    };
    if let Err(e) = session.send_user_message(&text).await {
        session.kill().await;
        // Its stderr says why it died; give the reader a moment to drain the pipe.
        for _ in 0..20 {
            if !session.stderr_tail().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let tail = session.stderr_tail().join("\n");
        return Err(Delivery::Fail(format!(
            "could not talk to the agent ({e}): {tail}"
        )));
    }
    let session_id = new_id
        .or_else(|| task.session_id.clone())
        .unwrap_or_default();
    engine
        .set_task_session(task.id, &session_id, Some(key))
        .await
        .map_err(|e| Delivery::Retry(retry(e)))?;
    status(
        rt,
        user,
        task.id,
        if delivered {
            "agent relaunched"
        } else {
            "agent started"
        },
    )
    .await;
    Ok(session)
}

fn questions_of(qs: &[mainloop_agent::AgentQuestion]) -> Vec<Question> {
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

/// Reads the session's events until the run ends or parks.
async fn pump(
    run: &Run<'_>,
    mut session: Box<dyn AgentSession>,
    cancel: &CancellationToken,
) -> Result<Outcome, JobError> {
    let Run {
        rt,
        user,
        task,
        phase,
        cwd,
        confined,
        input_key,
    } = *run;
    let engine = &rt.inner.engine;
    let mut rec = Recorder {
        rt,
        user,
        task: task.id,
        pending: Vec::new(),
    };
    let inactivity = rt.inner.config.inactivity_timeout;
    loop {
        // Events already waiting are recorded together, in one transaction; before
        // waiting for more, whatever is pending is stored.
        let ready = futures::FutureExt::now_or_never(session.next_event());
        let event = match ready {
            Some(ev) => Ok(ev),
            None => {
                rec.flush().await;
                tokio::select! {
                    () = cancel.cancelled() => {
                        session.kill().await;
                        return Ok(Outcome::Ended);
                    }
                    ev = tokio::time::timeout(inactivity, session.next_event()) => ev,
                }
            }
        };
        let event = match event {
            Ok(Some(e)) => e,
            Ok(None) => {
                let tail = session.stderr_tail().join("\n");
                let code = session
                    .exit_code()
                    .map_or_else(|| "?".to_owned(), |c| c.to_string());
                rec.record(
                    "error",
                    json!({"text": format!("agent exited ({code})"), "stderr": tail}),
                )
                .await;
                let why = format!("the agent exited unexpectedly (status {code}): {tail}");
                if tail.contains(SESSION_IN_USE) {
                    return Ok(Outcome::SessionInUse(why));
                }
                return fail(rt, task.id, why).await.map(|()| Outcome::Ended);
            }
            Err(_) => {
                session.kill().await;
                return fail(
                    rt,
                    task.id,
                    format!(
                        "the agent produced no output for {} s and was stopped",
                        inactivity.as_secs()
                    ),
                )
                .await
                .map(|()| Outcome::Ended);
            }
        };
        match event {
            AgentEvent::SessionStarted { session_id, model } => {
                if task.session_id.as_deref() != Some(session_id.as_str()) && !session_id.is_empty()
                {
                    let _ = engine
                        .set_task_session(task.id, &session_id, Some(input_key))
                        .await;
                }
                rec.record("session", json!({"session_id": session_id, "model": model}))
                    .await;
            }
            AgentEvent::Text { text } => rec.record("text", json!({"text": text})).await,
            AgentEvent::ToolCall { id, name, summary } => {
                rec.record(
                    "tool_call",
                    json!({"id": id, "name": name, "summary": summary}),
                )
                .await;
            }
            AgentEvent::ToolResult {
                tool_use_id,
                summary,
                is_error,
            } => {
                rec.record(
                    "tool_result",
                    json!({"tool_use_id": tool_use_id, "summary": summary, "is_error": is_error}),
                )
                .await;
            }
            AgentEvent::Permission {
                request_id,
                tool,
                input,
            } => {
                let decision = decide(phase, &tool, &input, cwd, &confined.plans_dir);
                let (reply, allowed) = match decision {
                    Decision::Allow => (
                        ControlReply::Allow {
                            updated_input: input.clone(),
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
                rec.record("permission", json!({"tool": tool, "allowed": allowed}))
                    .await;
                session.reply(&request_id, reply).await.map_err(retry)?;
            }
            AgentEvent::Question {
                request_id,
                questions,
                input,
            } => {
                let qs = questions_of(&questions);
                rec.record("question", json!({"questions": qs})).await;
                if qs.is_empty() {
                    session
                        .reply(
                            &request_id,
                            ControlReply::Deny {
                                message: "ask at least one question".into(),
                                interrupt: false,
                            },
                        )
                        .await
                        .map_err(retry)?;
                    continue;
                }
                let waiting = Waiting::Answers;
                return wait_for_human(
                    rt,
                    task.id,
                    session,
                    TaskEvent::QuestionsAsked(qs),
                    (request_id, input, waiting),
                )
                .await;
            }
            AgentEvent::Plan {
                request_id,
                plan,
                input,
            } => {
                rec.record("plan", json!({"plan": plan})).await;
                if phase == AgentPhase::Implement {
                    // Already approved; the agent re-announced its plan. Let it go on.
                    session
                        .reply(
                            &request_id,
                            ControlReply::Allow {
                                updated_input: input,
                            },
                        )
                        .await
                        .map_err(retry)?;
                    continue;
                }
                let waiting = Waiting::PlanReview;
                return wait_for_human(
                    rt,
                    task.id,
                    session,
                    TaskEvent::PlanProposed(plan),
                    (request_id, input, waiting),
                )
                .await;
            }
            AgentEvent::Finished {
                is_error,
                retryable,
                result,
                session_id,
                cost_usd,
                input_tokens,
                output_tokens,
            } => {
                let _ = engine
                    .add_task_usage(
                        task.id,
                        cost_usd,
                        i64::try_from(input_tokens).unwrap_or(i64::MAX),
                        i64::try_from(output_tokens).unwrap_or(i64::MAX),
                    )
                    .await;
                rec.record("finished", json!({"is_error": is_error, "result": result, "session_id": session_id, "cost_usd": cost_usd})).await;
                session.kill().await;
                if is_error && result.as_deref().is_some_and(|r| r.contains(NO_SESSION)) {
                    return Ok(Outcome::SessionMissing);
                }
                return if is_error {
                    let tail = session.stderr_tail().join("\n");
                    let why = result.filter(|r| !r.trim().is_empty()).unwrap_or(tail);
                    if retryable {
                        return Ok(Outcome::ModelUnavailable(why));
                    }
                    fail(rt, task.id, format!("the agent reported an error: {why}"))
                        .await
                        .map(|()| Outcome::Ended)
                } else {
                    apply(rt, task.id, TaskEvent::AgentFinished)
                        .await
                        .map(|_| Outcome::Ended)
                };
            }
            AgentEvent::Malformed { line, error } => {
                tracing::warn!(task = %task.id, %error, "skipping malformed agent output");
                let mut line = line;
                line.truncate(500);
                rec.record("malformed", json!({"line": line, "error": error}))
                    .await;
            }
        }
    }
}

/// Hands the task to the human (`event`) and parks the session, whose pending control
/// request `(id, input, kind)` the answer will resolve; the run ends and frees its slot.
async fn wait_for_human(
    rt: &Runtime,
    task: TaskId,
    mut session: Box<dyn AgentSession>,
    event: TaskEvent,
    (request_id, input, waiting_for): (String, serde_json::Value, Waiting),
) -> Result<Outcome, JobError> {
    if apply(rt, task, event).await?.is_none() {
        // The task moved on (cancelled, say): nobody will answer.
        session.kill().await;
        return Ok(Outcome::Ended);
    }
    rt.park(
        task,
        Parked {
            session,
            request_id,
            input,
            waiting_for,
            since: Instant::now(),
        },
    );
    Ok(Outcome::Ended)
}

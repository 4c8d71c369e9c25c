//! Carrying out one MCP tool call for a user: the main-thread tools through
//! [`Engine::call_tool`] (recorded under the caller's tool-use id), the rest through the
//! engine methods the REST handlers use. Every mistake of the caller's comes back as an
//! error result it can read, never as a failure of the request.

use super::bounded::{
    DEFAULT_DIFF_BYTES, DEFAULT_TRANSCRIPT_ENTRIES, MAX_TRANSCRIPT_ENTRIES, diff_page,
    transcript_page,
};
use super::catalog::{DEFAULT_MCP_DIGESTS, MAX_MCP_DIGESTS, RECORDED};
use mainloop_domain::digest::{Digest, Period, parse_date};
use mainloop_domain::question::Answers;
use mainloop_domain::usage::BudgetAnswer;
use mainloop_domain::{TaskId, UserId};
use mainloop_engine::{Engine, EngineError, PlanAction, ReviewAction};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The longest feedback, in characters, as for the REST routes.
const MAX_FEEDBACK: usize = 20_000;
/// Transcript entries read per call: enough to fill any page and to count what follows.
const TRANSCRIPT_READ: i64 = 1000;

/// What a tool call produced: its text, and whether it is an error for the caller.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub text: String,
    pub is_error: bool,
}

impl Outcome {
    fn ok(value: &Value) -> Self {
        Self {
            text: value.to_string(),
            is_error: false,
        }
    }

    fn error(message: impl Into<String>) -> Self {
        Self {
            text: message.into(),
            is_error: true,
        }
    }
}

/// Runs tool `name` with `arguments` for `user`. `tool_use_id` is the calling model's
/// id for the call (Claude Code sends it in `_meta`). `None` means the tool is unknown.
pub async fn call(
    engine: &Engine,
    user: UserId,
    tool_use_id: Option<&str>,
    name: &str,
    arguments: Value,
) -> Option<Outcome> {
    if RECORDED.contains(&name) {
        return Some(
            match engine.call_tool(user, tool_use_id, name, &arguments).await {
                Ok((text, is_error)) => Outcome { text, is_error },
                Err(e) => from_engine(e, None),
            },
        );
    }
    let result = match name {
        "get_inbox" => get_inbox(engine, user, arguments).await,
        "answer_questions" => answer_questions(engine, user, arguments).await,
        "decide_plan" => decide_plan(engine, user, arguments).await,
        "review_task" => review_task(engine, user, arguments).await,
        "retry_task" => retry_task(engine, user, arguments).await,
        "answer_budget" => answer_budget(engine, user, arguments).await,
        "get_usage" => get_usage(engine, user, arguments).await,
        "pause_work" => engine
            .pause(user)
            .await
            .map(|s| Outcome::ok(&json!(s)))
            .map_err(|e| from_engine(e, None)),
        "resume_work" => engine
            .resume(user)
            .await
            .map(|s| Outcome::ok(&json!(s)))
            .map_err(|e| from_engine(e, None)),
        "get_transcript" => get_transcript(engine, user, arguments).await,
        "get_diff" => get_diff(engine, user, arguments).await,
        "get_digests" => get_digests(engine, user, arguments).await,
        _ => return None,
    };
    Some(result.unwrap_or_else(|e| e))
}

type Step<T> = Result<T, Outcome>;

fn args<T: DeserializeOwned>(arguments: Value) -> Step<T> {
    serde_json::from_value(arguments).map_err(|e| Outcome::error(format!("invalid arguments: {e}")))
}

fn task_id(raw: &str) -> Step<TaskId> {
    raw.trim()
        .parse()
        .map_err(|_| Outcome::error(format!("'{raw}' is not a task id")))
}

/// An engine failure as the caller reads it. Another user's task reads exactly like an
/// unknown one. Storage trouble is an error result too (with nothing internal in it):
/// the request itself was fine, and the caller may try again.
fn from_engine(e: EngineError, task: Option<TaskId>) -> Outcome {
    match e {
        EngineError::NotFound(what) => match task {
            Some(id) if what == "task" => Outcome::error(format!("no task {id}")),
            _ => Outcome::error(format!("{what} not found")),
        },
        EngineError::Invalid(_)
        | EngineError::WrongState(_)
        | EngineError::Answers(_)
        | EngineError::RunnerLost(_) => Outcome::error(e.to_string()),
        EngineError::Conflict(detail) => {
            tracing::info!(%detail, "an MCP tool call hit a conflict");
            Outcome::error("the task changed meanwhile; read it again and retry")
        }
        EngineError::Unavailable(detail) => {
            tracing::warn!(%detail, "an MCP tool call found the database unavailable");
            Outcome::error("the database is unavailable right now; try again shortly")
        }
        EngineError::Internal(detail) => {
            tracing::error!(%detail, "an MCP tool call failed with an internal error");
            Outcome::error("internal error; see the server log")
        }
    }
}

fn feedback(text: Option<&String>) -> Step<()> {
    match text {
        Some(f) if f.chars().count() > MAX_FEEDBACK => Err(Outcome::error(format!(
            "feedback is longer than {MAX_FEEDBACK} characters"
        ))),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InboxArgs {
    limit: Option<u32>,
    resolved: Option<u32>,
}

async fn get_inbox(engine: &Engine, user: UserId, arguments: Value) -> Step<Outcome> {
    let a: InboxArgs = args(arguments)?;
    let limit = i64::from(a.limit.unwrap_or(20).clamp(1, 100));
    let resolved = i64::from(a.resolved.unwrap_or(0).min(100));
    let items = engine
        .inbox(user, limit, resolved)
        .await
        .map_err(|e| from_engine(e, None))?;
    let needs_you = engine
        .count_needs_you(user, crate::NEEDS_YOU_CAP)
        .await
        .map_err(|e| from_engine(e, None))?;
    Ok(Outcome::ok(
        &json!({"items": items, "needs_you": needs_you}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerArgs {
    task_id: String,
    answers: Answers,
}

async fn answer_questions(engine: &Engine, user: UserId, arguments: Value) -> Step<Outcome> {
    let a: AnswerArgs = args(arguments)?;
    let id = task_id(&a.task_id)?;
    let task = engine
        .answer_questions(user, id, a.answers)
        .await
        .map_err(|e| from_engine(e, Some(id)))?;
    Ok(Outcome::ok(&json!(task)))
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum PlanDecision {
    Approve,
    Revise,
    Cancel,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanArgs {
    task_id: String,
    action: PlanDecision,
    feedback: Option<String>,
}

async fn decide_plan(engine: &Engine, user: UserId, arguments: Value) -> Step<Outcome> {
    let a: PlanArgs = args(arguments)?;
    let id = task_id(&a.task_id)?;
    feedback(a.feedback.as_ref())?;
    let action = match a.action {
        PlanDecision::Approve => PlanAction::Approve,
        PlanDecision::Revise => PlanAction::Revise(a.feedback),
        PlanDecision::Cancel => PlanAction::Cancel,
    };
    let task = engine
        .plan_action(user, id, action)
        .await
        .map_err(|e| from_engine(e, Some(id)))?;
    Ok(Outcome::ok(&json!(task)))
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReviewDecision {
    Approve,
    Changes,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewArgs {
    task_id: String,
    action: ReviewDecision,
    feedback: Option<String>,
}

async fn review_task(engine: &Engine, user: UserId, arguments: Value) -> Step<Outcome> {
    let a: ReviewArgs = args(arguments)?;
    let id = task_id(&a.task_id)?;
    feedback(a.feedback.as_ref())?;
    let action = match a.action {
        ReviewDecision::Approve => ReviewAction::Approve,
        ReviewDecision::Changes => ReviewAction::Changes(a.feedback),
    };
    let task = engine
        .review_action(user, id, action)
        .await
        .map_err(|e| from_engine(e, Some(id)))?;
    Ok(Outcome::ok(&json!(task)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskArgs {
    task_id: String,
}

async fn retry_task(engine: &Engine, user: UserId, arguments: Value) -> Step<Outcome> {
    let a: TaskArgs = args(arguments)?;
    let id = task_id(&a.task_id)?;
    let task = engine
        .apply_task_event(
            Some(user),
            id,
            mainloop_domain::task::TaskEvent::RetryRequested(None),
        )
        .await
        .map_err(|e| from_engine(e, Some(id)))?;
    Ok(Outcome::ok(&json!(task)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetArgs {
    task_id: String,
    action: String,
    usd: Option<f64>,
}

async fn answer_budget(engine: &Engine, user: UserId, arguments: Value) -> Step<Outcome> {
    let a: BudgetArgs = args(arguments)?;
    let id = task_id(&a.task_id)?;
    let answer = match (a.action.as_str(), a.usd) {
        ("raise", Some(usd)) => BudgetAnswer::Raise { usd },
        ("raise", None) => return Err(Outcome::error("`raise` needs `usd`, the new cap")),
        ("continue_once", _) => BudgetAnswer::ContinueOnce,
        (other, _) => {
            return Err(Outcome::error(format!(
                "unknown action '{other}': use raise or continue_once"
            )));
        }
    };
    let task = engine
        .answer_budget(user, id, answer)
        .await
        .map_err(|e| from_engine(e, Some(id)))?;
    Ok(Outcome::ok(&json!(task)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageArgs {
    days: Option<u32>,
}

async fn get_usage(engine: &Engine, user: UserId, arguments: Value) -> Step<Outcome> {
    let a: UsageArgs = args(arguments)?;
    let usage = engine
        .usage(user, a.days.unwrap_or(7))
        .await
        .map_err(|e| from_engine(e, None))?;
    Ok(Outcome::ok(&json!(usage)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TranscriptArgs {
    task_id: String,
    after: Option<u64>,
    limit: Option<u32>,
}

async fn get_transcript(engine: &Engine, user: UserId, arguments: Value) -> Step<Outcome> {
    let a: TranscriptArgs = args(arguments)?;
    let id = task_id(&a.task_id)?;
    let after = i64::try_from(a.after.unwrap_or(0)).unwrap_or(i64::MAX);
    let records = engine
        .task_transcript(user, id, after, TRANSCRIPT_READ)
        .await
        .map_err(|e| from_engine(e, Some(id)))?;
    let exhausted = records.len() < usize::try_from(TRANSCRIPT_READ).unwrap_or(usize::MAX);
    let records: Vec<Value> = records.iter().map(|r| json!(r)).collect();
    let limit = a.limit.map_or(DEFAULT_TRANSCRIPT_ENTRIES, |n| {
        usize::try_from(n).unwrap_or(MAX_TRANSCRIPT_ENTRIES)
    });
    Ok(Outcome::ok(&transcript_page(
        records, after, limit, exhausted,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffArgs {
    task_id: String,
    offset: Option<u64>,
    max_bytes: Option<u32>,
}

async fn get_diff(engine: &Engine, user: UserId, arguments: Value) -> Step<Outcome> {
    let a: DiffArgs = args(arguments)?;
    let id = task_id(&a.task_id)?;
    let diff = engine
        .task_diff(user, id)
        .await
        .map_err(|e| from_engine(e, Some(id)))?;
    let offset = usize::try_from(a.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let max_bytes = a.max_bytes.map_or(DEFAULT_DIFF_BYTES, |n| {
        usize::try_from(n).unwrap_or(DEFAULT_DIFF_BYTES)
    });
    diff_page(&diff, offset, max_bytes)
        .map(|page| Outcome::ok(&page))
        .map_err(Outcome::error)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestArgs {
    period: Option<String>,
    before: Option<String>,
    limit: Option<u32>,
}

async fn get_digests(engine: &Engine, user: UserId, arguments: Value) -> Step<Outcome> {
    let a: DigestArgs = args(arguments)?;
    let period = a
        .period
        .as_deref()
        .map(str::parse::<Period>)
        .transpose()
        .map_err(Outcome::error)?;
    let before = a
        .before
        .as_deref()
        .map(parse_date)
        .transpose()
        .map_err(Outcome::error)?;
    let limit = a.limit.unwrap_or(DEFAULT_MCP_DIGESTS);
    if !(1..=MAX_MCP_DIGESTS).contains(&limit) {
        return Err(Outcome::error(format!(
            "limit must be from 1 to {MAX_MCP_DIGESTS}"
        )));
    }
    let digests = engine
        .digests(user, period, before, limit)
        .await
        .map_err(|e| from_engine(e, None))?;
    let zone = engine
        .time_zone(user)
        .await
        .map_err(|e| from_engine(e, None))?;
    Ok(Outcome::ok(&digest_page(&digests, &zone.time_zone)))
}

/// What a model reads of digests: each one's span, title and text (the facts' ids are
/// for screens that link them).
fn digest_page(digests: &[Digest], time_zone: &str) -> Value {
    let digests: Vec<Value> = digests
        .iter()
        .map(|d| json!({"period": d.period, "start": d.start, "title": d.title, "text": d.text}))
        .collect();
    json!({"time_zone": time_zone, "digests": digests})
}

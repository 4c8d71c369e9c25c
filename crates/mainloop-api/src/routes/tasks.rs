//! Worker tasks: spawning, listing, and the human's decisions along the lifecycle
//! (answers, plan review, work review, cancel, retry).

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, at_most};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mainloop_domain::placement::MAX_REQUIRED_LABELS;
use mainloop_domain::question::Answer;
use mainloop_domain::records::{Task, TaskDiff};
use mainloop_domain::task::{TaskEvent, TaskState};
use mainloop_domain::transcript::TranscriptRecord;
use mainloop_domain::{TaskId, Timestamp};
use mainloop_engine::{CreateTask, PlanAction, ReviewAction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use utoipa::{IntoParams, ToSchema};

const DEFAULT_LIMIT: i64 = 100;
/// The longest description and feedback, in characters, as the document states them.
const MAX_DESCRIPTION: usize = 20_000;
const MAX_FEEDBACK: usize = 20_000;

/// Which tasks to list.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TasksQuery {
    /// Only tasks in these states: the parameter repeated (`state=queued&state=planning`)
    /// or, equally, comma-separated (`state=queued,planning`).
    pub state: Option<Vec<TaskState>>,
    /// At most this many (default 100; clamped to 1–1000), newest first.
    pub limit: Option<i64>,
}

impl TasksQuery {
    /// Reads the query's pairs; other parameters are ignored.
    fn parse(pairs: &[(String, String)]) -> ApiResult<Self> {
        let mut states = Vec::new();
        let mut limit = None;
        for (name, value) in pairs {
            match name.as_str() {
                "state" => states.extend(parse_states(Some(value))?),
                "limit" => {
                    let n = value
                        .trim()
                        .parse()
                        .map_err(|_| ApiError::bad_request("limit must be an integer"))?;
                    if limit.replace(n).is_some() {
                        return Err(ApiError::bad_request("limit is given twice"));
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            state: Some(states),
            limit,
        })
    }
}

/// The user's tasks, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
}

/// A task to spawn.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateTaskRequest {
    /// What the worker should do; it sees nothing else, so make it self-contained. Not
    /// blank.
    #[schema(
        min_length = 1,
        max_length = 20_000,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub description: String,
    /// A local path (absolute, an existing repository, inside the server's
    /// `workers.repo_roots`), a git URL or `owner/name`; no control characters.
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub repo: String,
    /// Go straight to implementation without a plan review.
    #[serde(default)]
    pub skip_plan: bool,
    /// The model the task's agent runs (e.g. `claude-opus-4-1`); default: the server's.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100, pattern = r"^[A-Za-z0-9._:/@-]+$")]
    pub model: Option<String>,
    /// The coding agent to run, by its configured name (`GET /api/agents`); default: the
    /// project's, else the server's `workers.default_agent`. An agent that is not
    /// configured is refused (422) with the list of those that are.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 32, pattern = r"^[a-z0-9-]+$")]
    pub agent: Option<String>,
    /// The task's own cost cap in US dollars (default: the user's `task_usd` budget, if
    /// any). At it, the task holds for the user.
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, maximum = 1_000_000.0)]
    pub budget_usd: Option<f64>,
    /// Labels the machine that runs the task must carry (a runner's `--label`): each 1
    /// to 63 lowercase letters, digits, `-`, `_` or `.`, at most 8. The task requires
    /// these and its project's `runner_labels` setting, as they are when it is created.
    #[serde(default)]
    #[schema(max_items = 8)]
    pub runner_labels: Vec<String>,
}

/// Answers to a task's pending questions, keyed by question id: the chosen option
/// labels, free text, or both (`{"choices": [...], "note": "..."}`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AnswersRequest {
    pub answers: BTreeMap<String, Answer>,
}

/// What to do with a proposed plan.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanDecision {
    Approve,
    Revise,
    Cancel,
}

/// A decision about a plan; `revise` requires `feedback`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanRequest {
    pub action: PlanDecision,
    /// What to change; required (not blank) with `revise`.
    #[schema(max_length = 20_000)]
    pub feedback: Option<String>,
}

/// What to do with finished work.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    Approve,
    Changes,
}

/// A decision about finished work; `changes` requires `feedback`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReviewRequest {
    pub action: ReviewDecision,
    /// What to change; required (not blank) with `changes`.
    #[schema(max_length = 20_000)]
    pub feedback: Option<String>,
}

/// The states a `state` value names: one name, or several separated by commas; every
/// part must be a state's exact name.
fn parse_states(list: Option<&str>) -> ApiResult<Vec<TaskState>> {
    list.into_iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.parse().map_err(|e| ApiError::bad_request(format!("{e}"))))
        .collect()
}

/// Lists the user's tasks, newest first.
#[utoipa::path(
    get,
    path = "/api/tasks",
    operation_id = "list_tasks",
    tag = "tasks",
    params(TasksQuery),
    responses(
        (status = 200, description = "The tasks", body = TaskList),
        (status = 400, description = "Malformed query or unknown state", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn list(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<Json<TaskList>> {
    let q = TasksQuery::parse(&pairs)?;
    let tasks = state
        .engine
        .tasks(
            user.id,
            &q.state.unwrap_or_default(),
            q.limit.unwrap_or(DEFAULT_LIMIT),
        )
        .await?;
    Ok(Json(TaskList { tasks }))
}

/// Spawns a worker task.
#[utoipa::path(
    post,
    path = "/api/tasks",
    operation_id = "create_task",
    tag = "tasks",
    request_body = CreateTaskRequest,
    responses(
        (status = 201, description = "Created", body = Task),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 422, description = "Empty description or repo, an agent that is not configured, or a runner label that is not one (named)", body = ErrorBody),
    )
)]
pub async fn create(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateTaskRequest>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    at_most("description", &body.description, MAX_DESCRIPTION)?;
    // Counted as sent, as the document counts them, before repeats fold into one.
    if body.runner_labels.len() > MAX_REQUIRED_LABELS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "runner_labels: at most {MAX_REQUIRED_LABELS} labels, got {}",
                body.runner_labels.len()
            ),
        ));
    }
    let labels: BTreeSet<String> = body.runner_labels.into_iter().collect();
    let task = state
        .engine
        .create_task_requiring(
            user.id,
            &CreateTask {
                description: body.description,
                repo: body.repo,
                skip_plan: body.skip_plan,
                model: body.model,
                agent: body.agent,
                budget_usd: body.budget_usd,
            },
            &labels,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(task)))
}

/// One task.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}",
    operation_id = "get_task",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn get(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Json<Task>> {
    Ok(Json(state.engine.task(user.id, id).await?))
}

/// Answers the task's pending questions.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/answers",
    operation_id = "answer_task",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    request_body = AnswersRequest,
    responses(
        (status = 200, description = "The task, working again", body = Task),
        (status = 400, description = "Malformed id or body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is not waiting for answers", body = ErrorBody),
        (status = 422, description = "Answers do not fit the questions", body = ErrorBody),
    )
)]
pub async fn answers(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
    ApiJson(body): ApiJson<AnswersRequest>,
) -> ApiResult<Json<Task>> {
    Ok(Json(
        state
            .engine
            .answer_questions(user.id, id, body.answers)
            .await?,
    ))
}

/// Approves the plan, asks for a revision, or cancels the task.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/plan",
    operation_id = "review_plan",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    request_body = PlanRequest,
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 400, description = "Malformed id or body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "No plan is waiting for review", body = ErrorBody),
        (status = 422, description = "A revision without feedback", body = ErrorBody),
    )
)]
pub async fn plan(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
    ApiJson(body): ApiJson<PlanRequest>,
) -> ApiResult<Json<Task>> {
    if let Some(f) = &body.feedback {
        at_most("feedback", f, MAX_FEEDBACK)?;
    }
    let action = match body.action {
        PlanDecision::Approve => PlanAction::Approve,
        PlanDecision::Revise => PlanAction::Revise(body.feedback),
        PlanDecision::Cancel => PlanAction::Cancel,
    };
    Ok(Json(state.engine.plan_action(user.id, id, action).await?))
}

/// Approves finished work for merging, or asks for changes.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/review",
    operation_id = "review_work",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    request_body = ReviewRequest,
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 400, description = "Malformed id or body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is not in review", body = ErrorBody),
        (status = 422, description = "Changes requested without feedback", body = ErrorBody),
    )
)]
pub async fn review(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
    ApiJson(body): ApiJson<ReviewRequest>,
) -> ApiResult<Json<Task>> {
    if let Some(f) = &body.feedback {
        at_most("feedback", f, MAX_FEEDBACK)?;
    }
    let action = match body.action {
        ReviewDecision::Approve => ReviewAction::Approve,
        ReviewDecision::Changes => ReviewAction::Changes(body.feedback),
    };
    Ok(Json(state.engine.review_action(user.id, id, action).await?))
}

/// Cancels the task.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/cancel",
    operation_id = "cancel_task",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    responses(
        (status = 200, description = "The cancelled task", body = Task),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task already ended", body = ErrorBody),
    )
)]
pub async fn cancel(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Json<Task>> {
    Ok(Json(
        state
            .engine
            .apply_task_event(Some(user.id), id, TaskEvent::CancelRequested)
            .await?,
    ))
}

/// What to tell the worker when retrying; the body itself is optional.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// What the worker should do differently (optional; blank is none).
    #[schema(max_length = 20_000)]
    pub feedback: Option<String>,
}

/// Retries a failed task where it stopped, with what to do differently if given.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/retry",
    operation_id = "retry_task",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    request_body(content = Option<RetryRequest>, description = "Optional: no body retries as is"),
    responses(
        (status = 200, description = "The task, running again", body = Task),
        (status = 400, description = "Malformed id or body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task has not failed", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "Feedback longer than 20 000 characters", body = ErrorBody),
    )
)]
pub async fn retry(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
    // No body (or `null`) retries as is.
    body: Option<ApiJson<Option<RetryRequest>>>,
) -> ApiResult<Json<Task>> {
    let feedback = body.and_then(|ApiJson(r)| r).and_then(|r| r.feedback);
    if let Some(f) = &feedback {
        at_most("feedback", f, MAX_FEEDBACK)?;
    }
    Ok(Json(
        state
            .engine
            .apply_task_event(Some(user.id), id, TaskEvent::RetryRequested(feedback))
            .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_filters() {
        assert_eq!(parse_states(None).unwrap(), vec![]);
        assert_eq!(
            parse_states(Some("queued,failed")).unwrap(),
            vec![TaskState::Queued, TaskState::Failed]
        );
        // What the document calls invalid is refused, an empty value included.
        for bad in ["nope", "", " ", "queued,", "queued, failed", " queued"] {
            assert_eq!(
                parse_states(Some(bad)).unwrap_err().code(),
                "bad_request",
                "{bad:?}"
            );
        }
    }
}

/// Which transcript entries to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TranscriptQuery {
    /// Entries after this position (default 0: from the start; negative counts as 0).
    pub after: Option<i64>,
    /// At most this many (default 500; clamped to 1–1000).
    pub limit: Option<i64>,
}

/// A page of a task's transcript.
#[derive(Debug, Serialize, ToSchema)]
pub struct TranscriptPage {
    pub entries: Vec<TranscriptRecord>,
    /// Pass as `after` to read on.
    pub next_after: i64,
}

/// Pages through the task's transcript: every normalised agent event, in order.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/transcript",
    operation_id = "task_transcript",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id"), TranscriptQuery),
    responses(
        (status = 200, description = "Entries after `after`", body = TranscriptPage),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn transcript(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
    ApiQuery(q): ApiQuery<TranscriptQuery>,
) -> ApiResult<Json<TranscriptPage>> {
    let after = q.after.unwrap_or(0);
    let entries = state
        .engine
        .task_transcript(user.id, id, after, q.limit.unwrap_or(500))
        .await?;
    let next_after = entries.last().map_or(after, |e| e.seq);
    Ok(Json(TranscriptPage {
        entries,
        next_after,
    }))
}

/// The task's work as a diff against its base branch.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/diff",
    operation_id = "task_diff",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    responses(
        (status = 200, description = "The diff with per-file stats", body = TaskDiff),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 422, description = "The task has no workspace yet", body = ErrorBody),
    )
)]
pub async fn diff(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Json<TaskDiff>> {
    Ok(Json(state.engine.task_diff(user.id, id).await?))
}

/// One plan the worker proposed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanRevisionView {
    /// 1 for the first plan, counting up with each revision.
    pub revision: i64,
    pub plan: String,
    /// What the user asked to change in this plan; null until they ask.
    pub feedback: Option<String>,
    pub created_at: Timestamp,
}

/// Every plan of a task, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanRevisions {
    pub revisions: Vec<PlanRevisionView>,
}

/// The task's plan revisions with the feedback that led to each next one.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/plans",
    operation_id = "task_plans",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    responses(
        (status = 200, description = "Every plan, oldest first", body = PlanRevisions),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn plans(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Json<PlanRevisions>> {
    let revisions = state.engine.task_plans(user.id, id).await?;
    Ok(Json(PlanRevisions {
        revisions: revisions
            .into_iter()
            .map(|r| PlanRevisionView {
                revision: r.revision,
                plan: r.plan,
                feedback: r.feedback,
                created_at: r.created_at,
            })
            .collect(),
    }))
}

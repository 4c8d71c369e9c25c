//! Worker tasks: spawning, listing, and the human's decisions along the lifecycle
//! (answers, plan review, work review, cancel, retry).

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mainloop_domain::TaskId;
use mainloop_domain::question::Answer;
use mainloop_domain::records::{Task, TaskDiff, TranscriptEntry};
use mainloop_domain::task::{TaskEvent, TaskState};
use mainloop_engine::{CreateTask, PlanAction, ReviewAction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

const DEFAULT_LIMIT: i64 = 100;

/// Which tasks to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TasksQuery {
    /// Only tasks in these states, comma-separated (e.g. `queued,planning`).
    pub state: Option<String>,
    /// At most this many (1–1000, default 100), newest first.
    pub limit: Option<i64>,
}

/// The user's tasks, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
}

/// A task to spawn.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTaskRequest {
    /// What the worker should do; it sees nothing else, so make it self-contained.
    pub description: String,
    /// A local path, a git URL or `owner/name`.
    pub repo: String,
    /// Go straight to implementation without a plan review.
    #[serde(default)]
    pub skip_plan: bool,
    /// The model the task's agent runs (e.g. `claude-opus-4-1`); default: the server's.
    #[serde(default)]
    pub model: Option<String>,
}

/// Answers to a task's pending questions, keyed by question id: the chosen option
/// labels, or free text.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AnswersRequest {
    pub answers: BTreeMap<String, Answer>,
}

/// What to do with a proposed plan.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanDecision {
    Approve,
    Revise,
    Cancel,
}

/// A decision about a plan; `revise` requires `feedback`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PlanRequest {
    pub action: PlanDecision,
    pub feedback: Option<String>,
}

/// What to do with finished work.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    Approve,
    Changes,
}

/// A decision about finished work; `changes` requires `feedback`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReviewRequest {
    pub action: ReviewDecision,
    pub feedback: Option<String>,
}

fn parse_states(list: Option<&str>) -> ApiResult<Vec<TaskState>> {
    list.into_iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
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
    ApiQuery(q): ApiQuery<TasksQuery>,
) -> ApiResult<Json<TaskList>> {
    let states = parse_states(q.state.as_deref())?;
    let tasks = state
        .engine
        .tasks(user.id, &states, q.limit.unwrap_or(DEFAULT_LIMIT))
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
        (status = 422, description = "Empty description or repo", body = ErrorBody),
    )
)]
pub async fn create(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateTaskRequest>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let task = state
        .engine
        .create_task(
            user.id,
            &CreateTask {
                description: body.description,
                repo: body.repo,
                skip_plan: body.skip_plan,
                model: body.model,
            },
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

/// Retries a failed task where it stopped.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/retry",
    operation_id = "retry_task",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task, running again", body = Task),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task has not failed", body = ErrorBody),
    )
)]
pub async fn retry(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Json<Task>> {
    Ok(Json(
        state
            .engine
            .apply_task_event(Some(user.id), id, TaskEvent::RetryRequested)
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
            parse_states(Some("queued, failed,")).unwrap(),
            vec![TaskState::Queued, TaskState::Failed]
        );
        assert_eq!(
            parse_states(Some("nope")).unwrap_err().code(),
            "bad_request"
        );
    }
}

/// Which transcript entries to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TranscriptQuery {
    /// Entries after this position (default 0: from the start).
    pub after: Option<i64>,
    /// At most this many (1–1000, default 500).
    pub limit: Option<i64>,
}

/// A page of a task's transcript.
#[derive(Debug, Serialize, ToSchema)]
pub struct TranscriptPage {
    pub entries: Vec<TranscriptEntry>,
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

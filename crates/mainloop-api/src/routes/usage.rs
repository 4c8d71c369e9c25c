//! Spending: `GET /api/usage` (the usage report), the user's budgets, pausing and
//! resuming all work, and the answer to a task's budget hold.

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use mainloop_domain::TaskId;
use mainloop_domain::records::Task;
use mainloop_domain::usage::{BudgetAnswer, Budgets, PauseState, Usage};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The period of the report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Days reported, today included (default 30).
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<u32>,
}

/// The data of a `usage.updated` event: the user's pause and budgets as they now are.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageUpdated {
    pub pause: PauseState,
    pub budgets: Budgets,
}

/// What was spent, by day, source and task; today and this week against the budgets; the
/// agents' quota windows; whether work is paused.
#[utoipa::path(
    get,
    path = "/api/usage",
    operation_id = "get_usage",
    tag = "usage",
    params(UsageQuery),
    responses(
        (status = 200, description = "The usage report", body = Usage),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 422, description = "days outside 1–366", body = ErrorBody),
    )
)]
pub async fn usage(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<Usage>> {
    Ok(Json(
        state.engine.usage(user.id, q.days.unwrap_or(30)).await?,
    ))
}

/// The user's budgets (an absent cap is none).
#[utoipa::path(
    get,
    path = "/api/budgets",
    operation_id = "get_budgets",
    tag = "usage",
    responses(
        (status = 200, description = "The budgets", body = Budgets),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn get_budgets(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<Budgets>> {
    Ok(Json(state.engine.budgets(user.id).await?))
}

/// Replaces the user's budgets. Tasks held by a budget the new ones allow go on.
#[utoipa::path(
    put,
    path = "/api/budgets",
    operation_id = "set_budgets",
    tag = "usage",
    request_body = Budgets,
    responses(
        (status = 200, description = "The budgets now", body = Budgets),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "An amount not above 0 or above 1000000", body = ErrorBody),
    )
)]
pub async fn set_budgets(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<Json<Budgets>> {
    // serde reads a struct from an array too; the document says objects, and budgets
    // hold no array anywhere.
    if !body.is_object() || holds_array(&body) {
        return Err(ApiError::bad_request(
            "the budgets must be a JSON object of objects and numbers",
        ));
    }
    let budgets: Budgets = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid budgets: {e}")))?;
    Ok(Json(state.engine.set_budgets(user.id, budgets).await?))
}

fn holds_array(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Array(_) => true,
        serde_json::Value::Object(m) => m.values().any(holds_array),
        _ => false,
    }
}

/// Whether the user's work is paused.
#[utoipa::path(
    get,
    path = "/api/pause",
    operation_id = "get_pause",
    tag = "usage",
    responses(
        (status = 200, description = "The pause", body = PauseState),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn get_pause(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<PauseState>> {
    Ok(Json(state.engine.pause_state(user.id).await?))
}

/// Pauses all the user's work: no agent run starts; a running agent finishes its turn
/// and its task holds. Lasts across restarts until resumed.
#[utoipa::path(
    post,
    path = "/api/pause",
    operation_id = "pause",
    tag = "usage",
    responses(
        (status = 200, description = "Paused", body = PauseState),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
    )
)]
pub async fn pause(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<PauseState>> {
    Ok(Json(state.engine.pause(user.id).await?))
}

/// Resumes the user's work: every paused task goes on.
#[utoipa::path(
    post,
    path = "/api/resume",
    operation_id = "resume",
    tag = "usage",
    responses(
        (status = 200, description = "Resumed", body = PauseState),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
    )
)]
pub async fn resume(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<PauseState>> {
    Ok(Json(state.engine.resume(user.id).await?))
}

/// Answers a task's budget hold: raise the budget it reached (every task that budget
/// held goes on), or let this task continue once past it.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/budget",
    operation_id = "answer_budget",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    request_body = BudgetAnswer,
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 400, description = "Malformed id or body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is not on a budget hold", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "An amount out of range or not above what is spent", body = ErrorBody),
    )
)]
pub async fn answer_budget(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
    ApiJson(answer): ApiJson<BudgetAnswer>,
) -> ApiResult<Json<Task>> {
    Ok(Json(state.engine.answer_budget(user.id, id, answer).await?))
}

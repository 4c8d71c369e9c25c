//! The inbox: what needs the human, most urgent first, and marking items read.

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use mainloop_domain::InboxItemId;
use mainloop_domain::records::InboxItem;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

const DEFAULT_LIMIT: i64 = 100;
const DEFAULT_RESOLVED: i64 = 20;

/// How much of the inbox to return.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// At most this many open items (default 100; clamped to 1–1000).
    pub limit: Option<i64>,
    /// Also this many recently resolved items, after the open ones (default 20;
    /// clamped to 0–1000).
    pub resolved: Option<i64>,
}

/// Open items (most urgent, then longest waiting, first), then recently resolved ones.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxList {
    pub items: Vec<InboxItem>,
    /// How many open items ask the human to act (failures not counted), at most 1000.
    pub needs_you: i64,
}

/// Marks an item read or unread.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadRequest {
    pub read: bool,
}

/// The user's inbox.
#[utoipa::path(
    get,
    path = "/api/inbox",
    operation_id = "list_inbox",
    tag = "inbox",
    params(InboxQuery),
    responses(
        (status = 200, description = "The inbox", body = InboxList),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn list(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> ApiResult<Json<InboxList>> {
    let items = state
        .engine
        .inbox(
            user.id,
            q.limit.unwrap_or(DEFAULT_LIMIT),
            q.resolved.unwrap_or(DEFAULT_RESOLVED),
        )
        .await?;
    let needs_you = state
        .engine
        .count_needs_you(user.id, crate::NEEDS_YOU_CAP)
        .await?;
    Ok(Json(InboxList { items, needs_you }))
}

/// Marks an inbox item read or unread.
#[utoipa::path(
    post,
    path = "/api/inbox/{id}/read",
    operation_id = "mark_inbox_read",
    tag = "inbox",
    params(("id" = InboxItemId, Path, description = "Inbox item id")),
    request_body = ReadRequest,
    responses(
        (status = 200, description = "The item", body = InboxItem),
        (status = 400, description = "Malformed id or body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such item", body = ErrorBody),
    )
)]
pub async fn mark_read(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<InboxItemId>,
    ApiJson(body): ApiJson<ReadRequest>,
) -> ApiResult<Json<InboxItem>> {
    Ok(Json(
        state.engine.set_inbox_read(user.id, id, body.read).await?,
    ))
}

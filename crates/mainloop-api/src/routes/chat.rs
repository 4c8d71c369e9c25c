//! The main thread: posting a message (answered asynchronously, streamed over
//! `/api/events`) and paging through the stored conversation.

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, at_most};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mainloop_domain::MessageId;
use mainloop_domain::records::ChatMessage;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

const DEFAULT_PAGE: i64 = 50;

/// A message to the main thread.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostChat {
    /// Not blank; at most `limits.max_chat_chars` characters (100,000 unless configured).
    #[schema(
        min_length = 1,
        max_length = 100_000,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub text: String,
}

/// The stored message; its answer arrives as `chat.delta` and `chat.message` events.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatPosted {
    pub message_id: MessageId,
}

/// Which page of the thread to return.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Page size (default 50; clamped to 1–500).
    pub limit: Option<i64>,
    /// Return the messages just before this one (the oldest id of the previous page).
    #[param(value_type = Option<String>, format = Uuid)]
    pub before: Option<MessageId>,
    /// Include the tool-result messages of chat turns (default false).
    pub include_tool_results: Option<bool>,
}

/// A page of the thread, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub messages: Vec<ChatMessage>,
    /// Older messages exist before this page.
    pub has_more: bool,
}

/// Posts a message to the main thread; the reply is produced in the background.
#[utoipa::path(
    post,
    path = "/api/chat",
    operation_id = "post_chat",
    tag = "chat",
    request_body = PostChat,
    responses(
        (status = 202, description = "Stored; the reply streams over /api/events", body = ChatPosted),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 422, description = "Empty or oversized text", body = ErrorBody),
    )
)]
pub async fn post_chat(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PostChat>,
) -> ApiResult<(StatusCode, Json<ChatPosted>)> {
    at_most("text", &body.text, state.engine.config().max_chat_chars)?;
    let msg = state.engine.post_chat(user.id, &body.text).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ChatPosted { message_id: msg.id }),
    ))
}

/// A page of the main thread, oldest first.
#[utoipa::path(
    get,
    path = "/api/chat/messages",
    operation_id = "list_messages",
    tag = "chat",
    params(MessagesQuery),
    responses(
        (status = 200, description = "A page of messages", body = MessagePage),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "Unknown `before` message", body = ErrorBody),
    )
)]
pub async fn messages(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> ApiResult<Json<MessagePage>> {
    let (messages, has_more) = state
        .engine
        .chat_messages(
            user.id,
            q.before,
            q.limit.unwrap_or(DEFAULT_PAGE),
            q.include_tool_results.unwrap_or(false),
        )
        .await?;
    Ok(Json(MessagePage { messages, has_more }))
}

//! What answers the chat: `GET /api/model`, the provider, whether it can answer now and
//! why, what to do when it cannot, and what the user's turns have used.

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiResult, ErrorBody};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

/// The main thread's provider and its status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelStatus {
    /// `anthropic` or `claude-code`; null when none is configured.
    #[schema(example = "claude-code")]
    pub provider: Option<String>,
    /// Whether the chat can answer now.
    pub ready: bool,
    /// The model name, when the provider says it up front.
    pub model: Option<String>,
    /// Why this provider (or why none), in plain words.
    pub reason: String,
    /// What to do when the chat cannot answer: `claude login`, or an API key.
    pub help: Option<String>,
    /// What the user's chat turns have used.
    pub usage: ModelUsage,
}

/// Totals over the user's recorded chat turns.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelUsage {
    pub turns: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// As the provider reported it (the Anthropic API reports none).
    pub cost_usd: f64,
}

/// Says which provider answers the chat and whether it can now.
#[utoipa::path(
    get,
    path = "/api/model",
    operation_id = "get_model",
    tag = "chat",
    responses(
        (status = 200, description = "The provider and its status", body = ModelStatus),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn get(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<ModelStatus>> {
    let s = state.engine.main_thread_status(user.id).await?;
    Ok(Json(ModelStatus {
        provider: s.provider,
        ready: s.ready,
        model: s.model,
        reason: s.reason,
        help: s.help,
        usage: ModelUsage {
            turns: s.turns,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            cost_usd: s.cost_usd,
        },
    }))
}

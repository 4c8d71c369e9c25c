//! The coding agents this server is configured with: what each is, whether it is
//! installed here and what it can do.

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiResult, ErrorBody};
use axum::Json;
use axum::extract::State;
use mainloop_domain::agents::AgentInfo;
use serde::Serialize;
use utoipa::ToSchema;

/// The configured agents, sorted by name; exactly one is the default.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentInfo>,
}

/// Lists the configured coding agents.
#[utoipa::path(
    get,
    path = "/api/agents",
    operation_id = "list_agents",
    tag = "tasks",
    responses(
        (status = 200, description = "The configured agents", body = AgentList),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn list(
    CurrentUser(_user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<AgentList>> {
    Ok(Json(AgentList {
        agents: state.engine.agents().await,
    }))
}

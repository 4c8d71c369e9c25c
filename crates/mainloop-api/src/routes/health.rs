//! Liveness and readiness: `GET /api/health`, open to anyone (load balancers, uptime
//! checks), answering 503 when the database does not.

use crate::AppState;
use crate::error::{ApiResult, ErrorBody};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

/// The server is up and its database answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
    /// The server's version.
    pub version: String,
}

/// Reports whether the server and its database are up.
#[utoipa::path(
    get,
    path = "/api/health",
    operation_id = "health",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "Up", body = Health),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    )
)]
pub async fn health(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    state.engine.ping().await?;
    Ok(Json(Health {
        status: "ok",
        version: state.config.version.clone(),
    }))
}

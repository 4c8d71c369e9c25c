//! Liveness and readiness: `GET /api/health`, open to anyone (load balancers, uptime
//! checks), answering 503 when the database does not.

use crate::AppState;
use crate::error::{ApiResult, ErrorBody};
use axum::Json;
use axum::extract::State;
use mainloop_engine::EngineError;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// How long the health check waits for the database.
const PING_WAIT: Duration = Duration::from_secs(2);

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
    // A probe must hear back in time, also while the database is away (a connection
    // is then waited for as long as the pool allows).
    match tokio::time::timeout(PING_WAIT, state.engine.ping()).await {
        Ok(answered) => answered?,
        Err(_) => {
            return Err(EngineError::Unavailable(format!(
                "the database did not answer within {} s",
                PING_WAIT.as_secs()
            ))
            .into());
        }
    }
    Ok(Json(Health {
        status: "ok",
        version: state.config.version.clone(),
    }))
}

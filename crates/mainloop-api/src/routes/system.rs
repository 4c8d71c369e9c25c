//! What mainloop holds: `GET /api/system`, the bytes on disk of its worktrees, the
//! agents' private homes, its cloned repositories and its database, and how many tasks
//! are live, kept after they finished, or cleaned up. Server-wide figures: the owner's
//! alone.

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

/// What mainloop holds on disk and how many tasks hold it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemStatus {
    pub disk: DiskBytes,
    pub tasks: TaskFootprints,
}

/// Bytes on disk. The directories are walked at most once a minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiskBytes {
    /// The tasks' git worktrees.
    pub worktrees_bytes: u64,
    /// The agents' private homes (their saved sessions).
    pub homes_bytes: u64,
    /// Cached clones of repositories given by URL.
    pub clones_bytes: u64,
    /// The SQLite file, or the PostgreSQL database's size.
    pub database_bytes: u64,
    /// All of the above.
    pub total_bytes: u64,
}

/// Tasks by what they keep on disk.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskFootprints {
    /// Not yet merged, failed or cancelled.
    pub live: i64,
    /// Finished, with their worktree and home kept until their retention passes.
    pub kept: i64,
    /// Finished and cleaned up (their branch stays).
    pub cleaned: i64,
}

/// Says what mainloop holds on disk, for all users: only the server's owner may ask.
#[utoipa::path(
    get,
    path = "/api/system",
    operation_id = "get_system",
    tag = "meta",
    responses(
        (status = 200, description = "Bytes on disk and tasks by footprint", body = SystemStatus),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not the server's owner", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<SystemStatus>> {
    // Every user's work is in these figures.
    if !user.is_owner {
        return Err(ApiError::forbidden(
            "only the server's owner sees what it holds on disk",
        ));
    }
    let report = state.engine.system_report().await?;
    Ok(Json(SystemStatus {
        disk: DiskBytes {
            worktrees_bytes: report.disk.worktrees_bytes,
            homes_bytes: report.disk.homes_bytes,
            clones_bytes: report.disk.clones_bytes,
            database_bytes: report.database_bytes,
            total_bytes: report.total_bytes(),
        },
        tasks: TaskFootprints {
            live: report.tasks.live,
            kept: report.tasks.kept,
            cleaned: report.tasks.cleaned,
        },
    }))
}

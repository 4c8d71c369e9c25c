//! Projects: the repositories a user's tasks work in (created with their first task).

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::ApiPath;
use axum::Json;
use axum::extract::State;
use mainloop_domain::ProjectId;
use mainloop_domain::records::Project;
use mainloop_engine::EngineError;
use serde::Serialize;
use utoipa::ToSchema;

/// The user's projects, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}

/// Lists the user's projects.
#[utoipa::path(
    get,
    path = "/api/projects",
    operation_id = "list_projects",
    tag = "projects",
    responses(
        (status = 200, description = "The projects", body = ProjectList),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn list(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<ProjectList>> {
    let projects = state
        .engine
        .store()
        .projects(user.id)
        .await
        .map_err(EngineError::from)?;
    Ok(Json(ProjectList { projects }))
}

/// One project.
#[utoipa::path(
    get,
    path = "/api/projects/{id}",
    operation_id = "get_project",
    tag = "projects",
    params(("id" = ProjectId, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project", body = Project),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub async fn get(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ProjectId>,
) -> ApiResult<Json<Project>> {
    let project = state
        .engine
        .store()
        .project(user.id, id)
        .await
        .map_err(EngineError::from)?
        .ok_or(EngineError::NotFound("project"))?;
    Ok(Json(project))
}

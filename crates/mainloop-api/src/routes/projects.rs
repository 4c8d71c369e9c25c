//! Projects: the repositories a user's tasks work in (created with their first task),
//! with open pull requests and recent commits for those on GitHub.

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::ApiPath;
use axum::Json;
use axum::extract::State;
use mainloop_domain::ProjectId;
use mainloop_domain::records::Project;
use serde::Serialize;
use utoipa::ToSchema;

/// The user's projects, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<ProjectView>,
}

/// A project, and for one on GitHub what is happening there.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectView {
    #[serde(flatten)]
    pub project: Project,
    /// Present for GitHub projects (when a token is configured).
    pub forge: Option<ForgeView>,
}

/// A GitHub repository's open pull requests and recent commits on its default branch.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForgeView {
    pub url: String,
    pub open_pull_requests: Vec<PullRequestView>,
    pub recent_commits: Vec<CommitView>,
    /// Why the lists are empty: GitHub could not be read just now.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PullRequestView {
    pub number: u64,
    pub title: String,
    pub url: String,
    pub author: String,
    pub draft: bool,
    pub head: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommitView {
    pub sha: String,
    pub message: String,
    pub author: String,
    pub url: String,
}

async fn view(state: &AppState, project: Project) -> ProjectView {
    let forge = state
        .engine
        .forge_summary(&project.repo)
        .await
        .map(|f| ForgeView {
            url: f.url,
            open_pull_requests: f
                .open_pull_requests
                .into_iter()
                .map(|p| PullRequestView {
                    number: p.number,
                    title: p.title,
                    url: p.url,
                    author: p.author,
                    draft: p.draft,
                    head: p.head,
                })
                .collect(),
            recent_commits: f
                .recent_commits
                .into_iter()
                .map(|c| CommitView {
                    sha: c.sha,
                    message: c.message,
                    author: c.author,
                    url: c.url,
                })
                .collect(),
            error: f.error,
        });
    ProjectView { project, forge }
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
    let projects = state.engine.projects(user.id).await?;
    let views = futures::future::join_all(projects.into_iter().map(|p| view(&state, p))).await;
    Ok(Json(ProjectList { projects: views }))
}

/// One project.
#[utoipa::path(
    get,
    path = "/api/projects/{id}",
    operation_id = "get_project",
    tag = "projects",
    params(("id" = ProjectId, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project", body = ProjectView),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub async fn get(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ProjectId>,
) -> ApiResult<Json<ProjectView>> {
    let project = state.engine.project(user.id, id).await?;
    Ok(Json(view(&state, project).await))
}

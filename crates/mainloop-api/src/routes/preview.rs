//! A task's live preview: opening it (started if needed, ready once it answers) for its
//! owner with a one-time link to its own host, and stopping it.

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::ApiPath;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use mainloop_domain::TaskId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where the task's preview opens.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PreviewOpened {
    /// The preview's own host on this server's port, with a one-time `preview_code`
    /// that signs this browser in to it (valid for two minutes, once), for example
    /// `http://t-0a1b2c3d.localhost:8080/?preview_code=…`.
    pub url: String,
}

/// The port part (`:8080`) of the host the client addressed, if it named one.
fn port_suffix(headers: &HeaderMap) -> String {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return String::new();
    };
    // `[::1]:8080`: the port follows the bracket; `localhost:8080`: the only colon.
    let after = host.rsplit_once(']').map_or(host, |(_, rest)| rest);
    after
        .rsplit_once(':')
        .filter(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .map(|(_, port)| format!(":{port}"))
        .unwrap_or_default()
}

/// Opens the task's live preview.
///
/// Starts the repository's `preview` command (from `.mainloop.toml`) in the task's
/// worktree if it is not running, waits until it answers on the task's `PORT`, and
/// returns its address: a host of its own (`t-<short id>.<previews.domain>`) on this
/// server's port, which only this user can open.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/preview",
    operation_id = "open_preview",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    responses(
        (status = 200, description = "The preview answers; open the URL", body = PreviewOpened),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 422, description = "No preview for this task, or it did not start (the reason with its output)", body = ErrorBody),
    )
)]
pub async fn open(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
    headers: HeaderMap,
) -> ApiResult<Json<PreviewOpened>> {
    let link = state.engine.open_preview(user.id, id).await?;
    let scheme = if state.config.secure_cookies {
        "https"
    } else {
        "http"
    };
    Ok(Json(PreviewOpened {
        url: format!(
            "{scheme}://{}{}/?{}={}",
            link.host,
            port_suffix(&headers),
            crate::preview::CODE_PARAM,
            link.code
        ),
    }))
}

/// Stops the task's live preview.
#[utoipa::path(
    delete,
    path = "/api/tasks/{id}/preview",
    operation_id = "stop_preview",
    tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    responses(
        (status = 204, description = "The preview is stopped (or was not running)"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub async fn stop(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<StatusCode> {
    state.engine.close_preview(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::port_suffix;
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn the_port_comes_from_the_address_the_client_used() {
        let port = |h: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_static(h));
            port_suffix(&m)
        };
        assert_eq!(port("localhost:8080"), ":8080");
        assert_eq!(port("[::1]:9000"), ":9000");
        assert_eq!(port("[::1]"), "");
        assert_eq!(port("mainloop.example.com"), "");
        assert_eq!(port(""), "");
    }
}

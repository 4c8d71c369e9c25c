//! The agent state a runner keeps on the server: `PUT` and `GET`
//! `/api/runners/state/{task_id}`, an opaque `application/gzip` archive of at most
//! [`MAX_RUNNER_STATE`] bytes (the agent's saved sessions, packed by the runner), for the
//! runner holding the task's lease only — the same runner token and lease check as the
//! task's git routes — so that a run moved to another runner resumes its session there.
//!
//! Like the git routes these are for runners, not JSON clients, so they are not in the
//! OpenAPI document; docs/RUNNERS.md describes them.

use super::runner_git::GitRunner;
use super::runner_git::body::{BodyError, Inflow};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mainloop_domain::TaskId;
use std::time::Duration;
use tokio_util::io::ReaderStream;

pub use mainloop_engine::MAX_RUNNER_STATE;

/// The longest an upload may take: as long as the runner's save is waited for.
const UPLOAD_TIMEOUT: Duration = mainloop_engine::SAVE_TIMEOUT;
const GZIP: &str = "application/gzip";

/// Stores the task's agent state, replacing the one kept before: `204`, or `413` for a
/// body over the cap (nothing is stored then).
pub async fn put(
    GitRunner(runner): GitRunner,
    State(state): State<AppState>,
    ApiPath(task): ApiPath<TaskId>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, Response> {
    store(&state, runner.id, task, &headers, body)
        .await
        .map(|_| StatusCode::NO_CONTENT)
        .map_err(IntoResponse::into_response)
}

async fn store(
    state: &AppState,
    runner: mainloop_domain::RunnerId,
    task: TaskId,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<u64> {
    let max = state.engine.config().runner_state_max_bytes;
    // The lease first: a runner without it learns nothing, not even the cap.
    let mut upload = state.engine.agent_state_upload(runner, task).await?;
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or_default();
        if !kind.trim().eq_ignore_ascii_case(GZIP) {
            return Err(ApiError::bad_request(format!(
                "the agent state is `Content-Type: {GZIP}`"
            )));
        }
    }
    // The archive is stored as sent: a transfer encoding would only be undone here.
    if headers.contains_key(header::CONTENT_ENCODING) {
        return Err(ApiError::bad_request(
            "send the agent state without a Content-Encoding",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let mut inflow = Inflow::new(body, false, max);
    let copy = async {
        while let Some(chunk) = inflow.next().await.map_err(|e| body_error(&e, max))? {
            upload.write(&chunk).await?;
        }
        Ok::<_, ApiError>(())
    };
    // Whatever fails, the upload is dropped unfinished: its temporary file goes and
    // the state kept before stays.
    tokio::time::timeout(UPLOAD_TIMEOUT, copy)
        .await
        .map_err(|_| ApiError::bad_request("the agent state did not arrive in time"))??;
    Ok(upload.finish().await?)
}

/// The task's agent state as last stored, or `404` when none is kept.
pub async fn get(
    GitRunner(runner): GitRunner,
    State(state): State<AppState>,
    ApiPath(task): ApiPath<TaskId>,
) -> Result<Response, Response> {
    let kept = state
        .engine
        .agent_state(runner.id, task)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let Some((file, len)) = kept else {
        return Err(ApiError::not_found("no agent state is kept for this task").into_response());
    };
    let mut response = Body::from_stream(ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(GZIP));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn too_large(max: u64) -> ApiError {
    ApiError::too_large(format!("the agent state is larger than {max} bytes"))
}

fn body_error(e: &BodyError, max: u64) -> ApiError {
    match e {
        BodyError::TooLarge(_) => too_large(max),
        BodyError::BadGzip(_) | BodyError::Read(_) => ApiError::bad_request(e.to_string()),
    }
}

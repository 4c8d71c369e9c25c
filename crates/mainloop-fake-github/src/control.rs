//! The test-control API under `/_fake` (no authentication, not counted in the stats):
//! repositories, job logs and the blob storage that serves them, rate limits, outages,
//! hangs (slow or timing-out requests), statistics and webhook receivers.

use crate::Error;
use crate::http::{Body, json, num};
use crate::state::{Hang, Outage, RateLimit, SecondaryLimit, Shared};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

pub(crate) fn router(s: Arc<Shared>) -> Router {
    Router::new()
        .route("/_fake/repos", post(create_repo))
        .route("/_fake/repos/{o}/{r}/check-runs/{id}/log", post(attach_log))
        .route("/_fake/blob/logs/{id}", get(blob_log))
        .route(
            "/_fake/rate-limit",
            post(rate_limit).delete(clear_rate_limit),
        )
        .route("/_fake/outage", post(outage).delete(clear_outage))
        .route("/_fake/hang", post(hang).delete(clear_hang))
        .route("/_fake/stats", get(stats).delete(reset_stats))
        .route("/_fake/webhooks", post(add_webhook))
        .with_state(s)
}

fn no_content() -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = axum::http::StatusCode::NO_CONTENT;
    r
}

#[derive(Debug, Deserialize)]
struct NewRepo {
    owner: String,
    name: String,
    #[serde(default = "main_branch")]
    default_branch: String,
}

fn main_branch() -> String {
    "main".to_owned()
}

async fn create_repo(
    State(s): State<Arc<Shared>>,
    Body(b): Body<NewRepo>,
) -> Result<Response, Error> {
    let v = s.create_repo(&b.owner, &b.name, &b.default_branch).await?;
    Ok(json(201, &v))
}

#[derive(Debug, Deserialize)]
struct Log {
    log: String,
}

async fn attach_log(
    State(s): State<Arc<Shared>>,
    Path((o, r, id)): Path<(String, String, String)>,
    Body(b): Body<Log>,
) -> Result<Response, Error> {
    let id = num(&id)?;
    s.attach_log(&o, &r, id, &b.log)?;
    Ok(json(
        200,
        &json!({
            "job_id": id,
            "details_url": format!("{}/{o}/{r}/actions/runs/1/job/{id}", s.base_url),
        }),
    ))
}

async fn blob_log(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, Error> {
    let id = num(&id)?;
    let log = s.job_log(id).ok_or_else(Error::not_found)?;
    let mut r = Response::new(axum::body::Body::from(log));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(r)
}

/// Either a primary limit (`remaining`, `reset_in_secs`) or a secondary one
/// (`retry_after_secs`, optional `requests`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Limit {
    Secondary(SecondaryLimit),
    Primary(RateLimit),
}

async fn rate_limit(State(s): State<Arc<Shared>>, Body(b): Body<Limit>) -> Response {
    match b {
        Limit::Secondary(l) => s.set_secondary_limit(l),
        Limit::Primary(l) => s.set_rate_limit(l),
    }
    no_content()
}

async fn clear_rate_limit(State(s): State<Arc<Shared>>) -> Response {
    s.clear_limits();
    no_content()
}

async fn outage(State(s): State<Arc<Shared>>, Body(b): Body<Outage>) -> Result<Response, Error> {
    if !(400..=599).contains(&b.status) || b.requests == Some(0) {
        return Err(Error::api(
            422,
            "status must be 400..599 and requests at least 1",
        ));
    }
    s.set_outage(Some(b));
    Ok(no_content())
}

async fn clear_outage(State(s): State<Arc<Shared>>) -> Response {
    s.set_outage(None);
    no_content()
}

/// One hang, or a list of them served in order (see [`Shared::set_hangs`]).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Hangs {
    One(Hang),
    Many(Vec<Hang>),
}

async fn hang(State(s): State<Arc<Shared>>, Body(b): Body<Hangs>) -> Result<Response, Error> {
    let hangs = match b {
        Hangs::One(h) => vec![h],
        Hangs::Many(hs) => hs,
    };
    if hangs
        .iter()
        .any(|b| b.status.is_some_and(|st| !(400..=599).contains(&st)) || b.requests == Some(0))
    {
        return Err(Error::api(
            422,
            "status must be 400..599 and requests at least 1",
        ));
    }
    s.set_hangs(hangs);
    Ok(no_content())
}

async fn clear_hang(State(s): State<Arc<Shared>>) -> Response {
    s.set_hangs(Vec::new());
    no_content()
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    json(200, &serde_json::to_value(s.stats()).unwrap_or_default())
}

async fn reset_stats(State(s): State<Arc<Shared>>) -> Response {
    s.reset_stats();
    no_content()
}

#[derive(Debug, Deserialize)]
struct NewHook {
    url: String,
    #[serde(default)]
    secret: String,
}

async fn add_webhook(State(s): State<Arc<Shared>>, Body(b): Body<NewHook>) -> Response {
    let id = s.add_webhook(&b.url, &b.secret);
    json(201, &json!({"id": id, "url": b.url}))
}

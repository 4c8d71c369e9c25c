//! The test-control API under `/_fake` (not logged, never faulted), for tests that drive
//! the fake from another process: the request log, faults, outages, watches, history
//! compaction, and the pods (run, finish, kill, delete).

use crate::faults::{Fault, Outage, permissions};
use crate::pods::PodHandle;
use crate::resources::PODS;
use crate::state::Shared;
use crate::status::json_response;
use crate::{Error, FakeKube};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(crate) fn router(s: Arc<Shared>) -> Router {
    Router::new()
        .route("/_fake/requests", get(requests).delete(clear_requests))
        .route("/_fake/permissions", get(perms))
        .route("/_fake/faults", post(add_fault).delete(clear_faults))
        .route("/_fake/outage", post(outage).delete(end_outage))
        .route("/_fake/watches/close", post(close_watches))
        .route("/_fake/history/compact", post(compact))
        .route("/_fake/state", get(state))
        .route("/_fake/pods", get(pods))
        .route("/_fake/pods/{ns}/{name}/{action}", post(pod_action))
        .route("/_fake/pods/{ns}/{name}", axum::routing::delete(delete_pod))
        .with_state(s)
}

fn ok() -> Response {
    json_response(200, &json!({}))
}

fn body<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, Error> {
    let b: &[u8] = if b.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        b
    };
    serde_json::from_slice(b).map_err(|e| Error::bad_request(format!("bad control request: {e}")))
}

async fn requests(State(s): State<Arc<Shared>>) -> Response {
    let log = s.read(|st| st.log.clone());
    json_response(200, &serde_json::to_value(log).unwrap_or_default())
}

async fn clear_requests(State(s): State<Arc<Shared>>) -> Response {
    s.with(|st| st.log.clear());
    ok()
}

async fn perms(State(s): State<Arc<Shared>>) -> Response {
    let p = s.read(|st| permissions(&st.log));
    json_response(200, &serde_json::to_value(p).unwrap_or_default())
}

async fn add_fault(State(s): State<Arc<Shared>>, b: Bytes) -> Result<Response, Error> {
    let f: Fault = body(&b)?;
    if !(400..=599).contains(&f.status) || f.count == 0 {
        return Err(Error::bad_request(
            "status must be 400..599 and count at least 1",
        ));
    }
    s.with(|st| st.faults.queue.push_back(f));
    Ok(ok())
}

async fn clear_faults(State(s): State<Arc<Shared>>) -> Response {
    s.with(|st| st.faults.queue.clear());
    ok()
}

#[derive(Deserialize)]
struct OutageReq {
    mode: Outage,
    /// Ends by itself after this long; required for `refuse`, which also refuses this
    /// control API.
    #[serde(default)]
    for_ms: Option<u64>,
}

async fn outage(State(s): State<Arc<Shared>>, b: Bytes) -> Result<Response, Error> {
    let r: OutageReq = body(&b)?;
    if r.mode == Outage::Refuse && r.for_ms.is_none() {
        return Err(Error::bad_request(
            "a refuse outage needs for_ms: nothing could end it over HTTP",
        ));
    }
    FakeKube::outage_on(&s, Some(r.mode)).await;
    if let Some(ms) = r.for_ms {
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if let Some(s) = weak.upgrade() {
                FakeKube::outage_on(&s, None).await;
            }
        });
    }
    Ok(ok())
}

async fn end_outage(State(s): State<Arc<Shared>>) -> Response {
    FakeKube::outage_on(&s, None).await;
    ok()
}

async fn close_watches(State(s): State<Arc<Shared>>) -> Response {
    s.end_watches();
    ok()
}

async fn compact(State(s): State<Arc<Shared>>) -> Response {
    s.with(|st| st.store.compact());
    ok()
}

async fn state(State(s): State<Arc<Shared>>) -> Response {
    let (rv, floor, history) =
        s.read(|st| (st.store.rv(), st.store.floor(), st.store.history_len()));
    json_response(
        200,
        &json!({
            "resourceVersion": rv,
            "historyFloor": floor,
            "historyEvents": history,
            "openWatches": s.open_watches.load(Ordering::SeqCst),
        }),
    )
}

async fn pods(State(s): State<Arc<Shared>>) -> Response {
    let list: Vec<Value> = s.read(|st| {
        st.store
            .list(PODS, None)
            .into_iter()
            .map(|(k, p)| {
                json!({
                    "namespace": k.ns,
                    "name": k.name,
                    "uid": p["metadata"]["uid"],
                    "phase": p["status"]["phase"],
                    "job": p["metadata"]["labels"]["job-name"],
                })
            })
            .collect()
    });
    json_response(200, &json!(list))
}

#[derive(Deserialize)]
struct Finish {
    #[serde(default, rename = "exitCode")]
    exit_code: Option<i32>,
}

async fn pod_action(
    State(s): State<Arc<Shared>>,
    Path((ns, name, action)): Path<(String, String, String)>,
    b: Bytes,
) -> Result<Response, Error> {
    let pod = PodHandle::new(&s, &ns, &name)
        .ok_or_else(|| Error::not_found(&crate::resources::TYPES[PODS], &name))?;
    match action.as_str() {
        "running" => pod.set_running()?,
        "succeed" => pod.succeed()?,
        "fail" => pod.finish(body::<Finish>(&b)?.exit_code.unwrap_or(1))?,
        "finish" => pod.finish(body::<Finish>(&b)?.exit_code.unwrap_or(0))?,
        "kill" => pod.kill()?,
        _ => return Err(Error::no_route()),
    }
    Ok(json_response(200, &pod.current().unwrap_or(Value::Null)))
}

async fn delete_pod(
    State(s): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, Error> {
    let out = s.with(|st| st.delete(PODS, &ns, &name, &crate::ops::DeleteOpts::default()))?;
    Ok(json_response(200, &out))
}

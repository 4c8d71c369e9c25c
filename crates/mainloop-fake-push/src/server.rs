//! The fake's HTTP side: subscriptions, the push endpoint that checks and decrypts, and
//! the list of what arrived.

use crate::Subscriber;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// One push the fake accepted.
#[derive(Clone, Debug, Serialize)]
pub struct Received {
    pub subscription_id: String,
    /// The decrypted body, parsed as JSON when it is JSON, else a string.
    pub payload: Value,
    pub ttl: u64,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    pub received_at: String,
}

#[derive(Debug)]
struct Sub {
    subscriber: Subscriber,
    deleted: bool,
    /// Statuses the next pushes get instead of being accepted.
    fail_next: Vec<u16>,
}

#[derive(Debug, Default)]
struct State_ {
    subs: HashMap<String, Sub>,
    messages: Vec<Received>,
}

/// The fake's state, shared by its handlers.
#[derive(Clone, Debug)]
pub struct Shared {
    origin: Arc<String>,
    state: Arc<Mutex<State_>>,
}

impl Shared {
    pub(crate) fn new(origin: String) -> Self {
        Self {
            origin: Arc::new(origin),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State_> {
        // A panicking handler cannot leave the maps half-updated; keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn subscribe(&self) -> Value {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let subscriber = Subscriber::generate();
        let body = json!({
            "id": id,
            "endpoint": format!("{}/push/{id}", self.origin),
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(subscriber.public_key()),
                "auth": URL_SAFE_NO_PAD.encode(subscriber.auth),
            },
        });
        self.lock().subs.insert(
            id,
            Sub {
                subscriber,
                deleted: false,
                fail_next: Vec::new(),
            },
        );
        body
    }

    pub(crate) fn messages(&self) -> Vec<Received> {
        self.lock().messages.clone()
    }

    pub(crate) fn fail_next(&self, id: &str, status: u16, count: usize) {
        if let Some(sub) = self.lock().subs.get_mut(id) {
            sub.fail_next.extend(std::iter::repeat_n(status, count));
        }
    }
}

/// The fake's routes.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/subscriptions", post(create_subscription))
        .route("/subscriptions/{id}", delete(delete_subscription))
        .route("/push/{id}", post(push))
        .route("/messages", get(messages))
        .with_state(shared)
}

async fn create_subscription(State(shared): State<Shared>) -> Response {
    (StatusCode::CREATED, Json(shared.subscribe())).into_response()
}

async fn delete_subscription(State(shared): State<Shared>, Path(id): Path<String>) -> StatusCode {
    match shared.lock().subs.get_mut(&id) {
        Some(sub) => {
            sub.deleted = true;
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

async fn messages(State(shared): State<Shared>) -> Json<Vec<Received>> {
    Json(shared.messages())
}

fn refuse(status: StatusCode, why: &str) -> Response {
    tracing::info!(%status, reason = why, "fake push refused a message");
    (status, Json(json!({"error": why}))).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn push(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let subscriber = {
        let mut state = shared.lock();
        let Some(sub) = state.subs.get_mut(&id) else {
            return refuse(StatusCode::NOT_FOUND, "no such subscription");
        };
        if sub.deleted {
            return refuse(StatusCode::GONE, "the subscription was removed");
        }
        if !sub.fail_next.is_empty() {
            let status = sub.fail_next.remove(0);
            return refuse(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "failing as told",
            );
        }
        sub.subscriber.clone()
    };
    let Some(auth) = header(&headers, "authorization") else {
        return refuse(StatusCode::UNAUTHORIZED, "missing Authorization");
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    if let Err(why) = crate::verify_vapid(auth, &shared.origin, now) {
        let status = if auth.starts_with("vapid ") {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        return refuse(status, &why);
    }
    if header(&headers, "content-encoding") != Some("aes128gcm") {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Encoding must be aes128gcm",
        );
    }
    let Some(ttl) = header(&headers, "ttl").and_then(|t| t.trim().parse::<u64>().ok()) else {
        return refuse(StatusCode::BAD_REQUEST, "a TTL header is required");
    };
    let plain = match subscriber.decrypt(&body) {
        Ok(p) => p,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, &why),
    };
    let payload = serde_json::from_slice(&plain)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&plain).into_owned()));
    let received_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    shared.lock().messages.push(Received {
        subscription_id: id,
        payload,
        ttl,
        urgency: header(&headers, "urgency").map(str::to_owned),
        topic: header(&headers, "topic").map(str::to_owned),
        received_at,
    });
    StatusCode::CREATED.into_response()
}

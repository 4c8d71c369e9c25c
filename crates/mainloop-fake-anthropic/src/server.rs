//! The HTTP surface: the state shared by all endpoints (script, log, in-flight count),
//! the Messages API endpoints, the `/_fake/*` control endpoints, and the Messages wire
//! format of replies (SSE events and full message JSON).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Error;
use crate::script::{self, Fallback, NO_MATCH_TEXT, ReplyBlock, RequestView, RuleCounter, Script};

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// 1-based arrival order.
    pub seq: u64,
    pub method: String,
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// The parsed JSON body, or the raw text when it was not JSON; null when empty.
    pub body: Value,
    /// Index of the answering rule; None for fallbacks and non-message endpoints.
    pub rule: Option<usize>,
    /// The rule's name, or `#<index>`.
    pub rule_name: Option<String>,
    /// False for a Messages request no rule answered.
    pub matched: bool,
    pub status: u16,
    /// When it arrived, in milliseconds since the Unix epoch (to check that clients
    /// waited as `retry-after` told them).
    #[serde(default)]
    pub at_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    script: Script,
    counters: Vec<RuleCounter>,
    log: Vec<LoggedRequest>,
    next_id: u64,
    /// Model requests received whose answer has not been fully sent.
    in_flight: usize,
}

/// State shared by the server task and the [`crate::FakeAnthropic`] handle.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    pub fn new(script: Script) -> Self {
        let shared = Self::default();
        shared.set_script(script);
        shared
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the log half-written in a way
        // that matters to a test double, so poisoning is ignored.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// Model requests received and not yet fully answered: with none in flight and
    /// no client left to call, the request counts are settled.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    pub(crate) fn begin(&self) -> InFlight {
        self.lock().in_flight += 1;
        InFlight(self.clone())
    }

    /// Clears the log and the rules' `times`/`nth` counters; keeps the script.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.log.clear();
        inner.counters = vec![RuleCounter::default(); inner.script.rules.len()];
    }

    /// Replaces the script and restarts its counters; keeps the log.
    pub fn set_script(&self, script: Script) {
        let mut inner = self.lock();
        inner.counters = vec![RuleCounter::default(); script.rules.len()];
        inner.script = script;
    }

    pub(crate) fn record(&self, mut entry: LoggedRequest) {
        let mut inner = self.lock();
        entry.seq = inner.log.len() as u64 + 1;
        inner.log.push(entry);
    }

    pub(crate) fn next_id(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_id += 1;
        inner.next_id
    }
}

/// One model request being answered; dropped when its answer is sent (or abandoned).
pub(crate) struct InFlight(Shared);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
    }
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/_fake/requests", get(fake_requests))
        .route("/_fake/reset", post(fake_reset))
        .route("/_fake/script", post(fake_script))
        .fallback(unknown)
        .with_state(shared)
}

pub(crate) fn entry(method: &str, uri: &Uri, body: Value) -> LoggedRequest {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    LoggedRequest {
        seq: 0,
        method: method.to_owned(),
        path,
        body,
        rule: None,
        rule_name: None,
        matched: true,
        status: 200,
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

pub(crate) fn parse_object(body: &[u8]) -> Result<Value, Error> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("request body is not valid JSON: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(Error::BadRequest(
            "request body must be a JSON object".into(),
        ))
    }
}

/// Logs the request even when it is rejected, since a test may be asserting on exactly that.
fn parse_logged(shared: &Shared, uri: &Uri, body: &Bytes) -> Result<Value, Error> {
    parse_object(body).inspect_err(|_| {
        let raw = Value::String(String::from_utf8_lossy(body).into_owned());
        shared.record(LoggedRequest {
            status: 400,
            ..entry("POST", uri, raw)
        });
    })
}

/// What a chosen rule (or the fallback) says to answer, in either wire format.
pub(crate) struct Plan {
    pub(crate) blocks: Vec<ReplyBlock>,
    pub(crate) stop_reason: Option<String>,
    pub(crate) delay: Duration,
    pub(crate) error: Option<ErrorReply>,
    /// The rule's headers, sent with a message reply too (the unified rate-limit
    /// headers of an account with room left).
    pub(crate) headers: BTreeMap<String, String>,
}

/// An error rule; the kind and message default per wire format when the rule names none.
pub(crate) struct ErrorReply {
    pub(crate) status: StatusCode,
    pub(crate) kind: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) headers: BTreeMap<String, String>,
    /// Merged into the body's `error` object.
    pub(crate) fields: serde_json::Map<String, Value>,
}

impl ErrorReply {
    /// The reply: `body` with `fields` merged into its `error` object, and the headers.
    pub(crate) fn response(&self, mut body: Value) -> Response {
        if let Some(Value::Object(error)) = body.get_mut("error") {
            error.extend(self.fields.clone());
        }
        let mut resp = json_response(self.status, &body);
        let headers = resp.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        add_headers(&mut resp, &self.headers);
        resp
    }
}

/// Adds a rule's `headers` to `resp`.
fn add_headers(resp: &mut Response, headers: &BTreeMap<String, String>) {
    for (name, value) in headers {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(name), Ok(value)) => {
                resp.headers_mut().insert(name, value);
            }
            _ => tracing::warn!(%name, %value, "a rule's header is not a valid header"),
        }
    }
}

impl Shared {
    /// Chooses the answer for a model request (in the Messages shape) and fills in the
    /// log entry's rule fields.
    pub(crate) fn plan(&self, req: &Value, log: &mut LoggedRequest) -> Plan {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let chosen = script::choose(&inner.script, &mut inner.counters, req);
        let Some((i, rule)) = chosen.and_then(|i| Some((i, inner.script.rules.get(i)?))) else {
            log.matched = false;
            tracing::info!(path = %log.path, "no rule matched a messages request");
            let text = match inner.script.fallback {
                Fallback::NoMatch => NO_MATCH_TEXT.to_owned(),
                Fallback::Echo => {
                    format!(
                        "echo: {}",
                        RequestView::new(req).last_user_text().unwrap_or_default()
                    )
                }
            };
            return Plan {
                blocks: vec![ReplyBlock::Text(text)],
                stop_reason: None,
                delay: Duration::ZERO,
                error: None,
                headers: BTreeMap::new(),
            };
        };
        log.rule = Some(i);
        log.rule_name = Some(rule.name.clone().unwrap_or_else(|| format!("#{i}")));
        // An `error` without a `status` still means "fail", so it defaults to 500.
        let error = rule
            .status
            .or(rule.error.as_ref().map(|_| 500))
            .map(|code| {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let spec = rule.error.as_ref();
                ErrorReply {
                    status,
                    kind: spec.and_then(|e| e.kind.clone()),
                    message: spec.and_then(|e| e.message.clone()),
                    retry_after: rule.retry_after,
                    headers: rule.headers.clone(),
                    fields: spec.map(|e| e.fields.clone()).unwrap_or_default(),
                }
            });
        Plan {
            blocks: rule.reply.clone(),
            stop_reason: rule.stop_reason.clone(),
            delay: Duration::from_millis(rule.delay_ms),
            error,
            headers: rule.headers.clone(),
        }
    }
}

async fn messages(State(shared): State<Shared>, uri: Uri, body: Bytes) -> Result<Response, Error> {
    let in_flight = shared.begin();
    let req = parse_logged(&shared, &uri, &body)?;
    let mut log = entry("POST", &uri, Value::Null);
    if !req.get("messages").is_some_and(Value::is_array) {
        shared.record(LoggedRequest {
            status: 400,
            body: req,
            ..log
        });
        return Err(Error::BadRequest("messages: field required".into()));
    }
    let plan = shared.plan(&req, &mut log);

    if let Some(err) = plan.error {
        shared.record(LoggedRequest {
            status: err.status.as_u16(),
            body: req,
            ..log
        });
        let kind = err
            .kind
            .clone()
            .unwrap_or_else(|| error_type(err.status).to_owned());
        let message = err
            .message
            .clone()
            .unwrap_or_else(|| format!("fake {kind}"));
        return Ok(err.response(error_body(&kind, &message)));
    }

    let view = RequestView::new(&req);
    let mut content: Vec<Value> = plan
        .blocks
        .iter()
        .map(|b| match b {
            ReplyBlock::Text(text) => json!({"type": "text", "text": text}),
            ReplyBlock::ToolUse(t) => {
                let id = format!("toolu_fake_{}", shared.next_id());
                json!({"type": "tool_use", "id": id, "name": t.name, "input": t.input})
            }
        })
        .collect();
    content
        .iter_mut()
        .for_each(|block| script::fill_placeholders(block, &view));
    let has_tool_use = content.iter().any(|b| b["type"] == "tool_use");
    let stop_reason = plan
        .stop_reason
        .unwrap_or_else(|| if has_tool_use { "tool_use" } else { "end_turn" }.to_owned());
    // Rough chars/4 estimates: clients only need plausible, non-zero usage.
    let input_tokens = (body.len() / 4) as u64;
    let output_tokens = (serde_json::to_string(&content)?.len() / 4) as u64 + 1;
    let usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    let message = json!({"id": format!("msg_fake_{}", shared.next_id()), "type": "message", "role": "assistant",
        "model": view.model(), "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage});
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    shared.record(LoggedRequest { body: req, ..log });

    let request_id = (
        HeaderName::from_static("request-id"),
        format!("req_fake_{}", shared.next_id()),
    );
    let mut resp = if stream {
        let events = sse_events(&message, input_tokens, output_tokens)?;
        let headers = [
            (header::CONTENT_TYPE, "text/event-stream".to_owned()),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
            request_id,
        ];
        (headers, event_stream(events, plan.delay, in_flight)).into_response()
    } else {
        tokio::time::sleep(plan.delay).await;
        ([request_id], json_response(StatusCode::OK, &message)).into_response()
    };
    add_headers(&mut resp, &plan.headers);
    Ok(resp)
}

/// A streamed body of `events`, `delay` apart; the request stays in flight until the
/// last one is sent.
pub(crate) fn event_stream(events: Vec<String>, delay: Duration, in_flight: InFlight) -> Body {
    if delay.is_zero() {
        // One write keeps the zero-latency path cheap enough for benchmarks.
        return Body::from(events.concat());
    }
    Body::from_stream(async_stream::stream! {
        // Held until the last event is sent or the client goes away.
        let _in_flight = in_flight;
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            yield Ok::<_, std::convert::Infallible>(event);
        }
    })
}

/// The event sequence the real API streams for `message` (one event per returned chunk).
fn sse_events(
    message: &Value,
    input_tokens: u64,
    output_tokens: u64,
) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut push = |name: &str, data: Value| -> Result<(), Error> {
        out.push(format!(
            "event: {name}\ndata: {}\n\n",
            serde_json::to_string(&data)?
        ));
        Ok(())
    };
    let mut start = message.clone();
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["usage"] = json!({"input_tokens": input_tokens, "output_tokens": 1,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    push(
        "message_start",
        json!({"type": "message_start", "message": start}),
    )?;
    push("ping", json!({"type": "ping"}))?;
    let blocks = message["content"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (index, block) in blocks.iter().enumerate() {
        if block["type"] == "tool_use" {
            let first =
                json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}});
            push(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": first}),
            )?;
            let input = serde_json::to_string(&block["input"])?;
            for part in chunks(&input, 3) {
                let delta = json!({"type": "input_json_delta", "partial_json": part});
                push(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": delta}),
                )?;
            }
        } else {
            let first = json!({"type": "text", "text": ""});
            push(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": first}),
            )?;
            let text = block["text"].as_str().unwrap_or_default();
            for part in chunks(text, 2) {
                let delta = json!({"type": "text_delta", "text": part});
                push(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": delta}),
                )?;
            }
        }
        push(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        )?;
    }
    let delta = json!({"stop_reason": message["stop_reason"], "stop_sequence": null});
    push(
        "message_delta",
        json!({"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}}),
    )?;
    push("message_stop", json!({"type": "message_stop"}))?;
    Ok(out)
}

/// Splits `s` into up to `n` non-empty pieces on char boundaries, so clients must
/// reassemble partial text and partial JSON as they would with the real API.
pub(crate) fn chunks(s: &str, n: usize) -> Vec<&str> {
    let size = s.len().div_ceil(n.max(1)).max(1);
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let mut cut = size.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out
}

async fn count_tokens(
    State(shared): State<Shared>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, Error> {
    let req = parse_logged(&shared, &uri, &body)?;
    shared.record(entry("POST", &uri, req));
    Ok(json_response(
        StatusCode::OK,
        &json!({"input_tokens": body.len() / 4}),
    ))
}

fn model_info(id: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"})
}

async fn models(State(shared): State<Shared>, uri: Uri) -> Response {
    shared.record(entry("GET", &uri, Value::Null));
    let ids = ["claude-opus-5-5", "claude-sonnet-4-5", "claude-haiku-4-5"];
    let data: Vec<Value> = ids.iter().map(|id| model_info(id)).collect();
    json_response(
        StatusCode::OK,
        &json!({"data": data, "has_more": false, "first_id": ids[0], "last_id": ids[2]}),
    )
}

async fn model(State(shared): State<Shared>, uri: Uri, Path(id): Path<String>) -> Response {
    shared.record(entry("GET", &uri, Value::Null));
    json_response(StatusCode::OK, &model_info(&id))
}

/// Logs everything else; answers 200 to connectivity probes (the CLI sends `HEAD /api/hello`
/// at startup) and a 404 in Anthropic's error shape otherwise.
async fn unknown(State(shared): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let logged = serde_json::from_str(&text).unwrap_or_else(|_| {
        if text.is_empty() {
            Value::Null
        } else {
            Value::String(text.into_owned())
        }
    });
    let known_probe = uri.path() == "/api/hello";
    let status = if known_probe {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    if !known_probe {
        tracing::warn!(%method, %uri, "unknown request");
    }
    shared.record(LoggedRequest {
        status: status.as_u16(),
        ..entry(method.as_str(), &uri, logged)
    });
    if known_probe {
        return json_response(status, &json!({}));
    }
    error_response(
        status,
        "not_found_error",
        &format!("fake-anthropic does not implement {method} {}", uri.path()),
    )
}

async fn fake_requests(State(shared): State<Shared>) -> Response {
    json_response(StatusCode::OK, &json!(shared.requests()))
}

async fn fake_reset(State(shared): State<Shared>) -> Response {
    shared.reset();
    json_response(StatusCode::OK, &json!({"ok": true}))
}

async fn fake_script(State(shared): State<Shared>, body: Bytes) -> Result<Response, Error> {
    let script: Script = serde_json::from_slice(&body)
        .map_err(|e| Error::BadRequest(format!("invalid script: {e}")))?;
    shared.set_script(script);
    Ok(json_response(StatusCode::OK, &json!({"ok": true})))
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(status, &error_body(kind, message))
}

/// The Messages API's error body.
fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The error `type` the real API uses for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_input_on_char_boundaries() {
        for s in ["", "a", "abc", "héllo wörld", "{\"a\":[1,2,3]}"] {
            for n in 1..5 {
                let parts = chunks(s, n);
                assert_eq!(parts.concat(), s);
                assert!(parts.len() <= n);
                assert!(parts.iter().all(|p| !p.is_empty()));
            }
        }
    }
}

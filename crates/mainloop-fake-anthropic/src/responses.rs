//! `POST /v1/responses`, the OpenAI Responses endpoint: answered from the same script as
//! the Messages endpoint and logged the same way; the wire itself is [`crate::openai`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use crate::openai;
use crate::script::{self, ReplyBlock, RequestView};
use crate::server::{LoggedRequest, Shared, entry, event_stream, json_response, parse_object};

pub(crate) fn routes(shared: Shared) -> Router {
    Router::new()
        .route("/v1/responses", post(responses))
        .with_state(shared)
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(status, &openai::error_body(kind, message))
}

async fn responses(State(shared): State<Shared>, uri: Uri, body: Bytes) -> Response {
    let in_flight = shared.begin();
    let mut log = entry("POST", &uri, Value::Null);
    let req = match parse_object(&body) {
        Ok(req) => req,
        Err(e) => {
            let raw = Value::String(String::from_utf8_lossy(&body).into_owned());
            shared.record(LoggedRequest {
                status: 400,
                body: raw,
                ..log
            });
            let kind = openai::error_kind(StatusCode::BAD_REQUEST);
            return error_response(StatusCode::BAD_REQUEST, kind, &e.to_string());
        }
    };
    if !matches!(req.get("input"), Some(Value::Array(_) | Value::String(_))) {
        shared.record(LoggedRequest {
            status: 400,
            body: req,
            ..log
        });
        let kind = openai::error_kind(StatusCode::BAD_REQUEST);
        let message = "Missing required parameter: 'input' (a string or an array of items).";
        return error_response(StatusCode::BAD_REQUEST, kind, message);
    }
    let normal = openai::normalise(&req);
    let plan = shared.plan(&normal, &mut log);

    if let Some(err) = plan.error {
        shared.record(LoggedRequest {
            status: err.status.as_u16(),
            body: req,
            ..log
        });
        let kind = err
            .kind
            .clone()
            .unwrap_or_else(|| openai::error_kind(err.status).to_owned());
        let message = err
            .message
            .clone()
            .unwrap_or_else(|| format!("fake {kind}"));
        return err.response(openai::error_body(&kind, &message));
    }

    let view = RequestView::new(&normal);
    let mut blocks = plan.blocks;
    for block in &mut blocks {
        match block {
            ReplyBlock::ToolUse(tool) => script::fill_placeholders(&mut tool.input, &view),
            ReplyBlock::Text(_) => {}
        }
    }
    let items = openai::output_items(&blocks, || shared.next_id());
    // Rough chars/4 estimates, as for the Messages endpoint.
    let input_tokens = (body.len() / 4) as u64;
    let output_tokens = (Value::Array(items.clone()).to_string().len() / 4) as u64 + 1;
    let response = openai::response_object(
        &format!("resp_fake_{}", shared.next_id()),
        view.model(),
        &items,
        &openai::usage(input_tokens, output_tokens),
    );
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    shared.record(LoggedRequest { body: req, ..log });

    if !stream {
        tokio::time::sleep(plan.delay).await;
        return json_response(StatusCode::OK, &response);
    }
    let events = match openai::sse_events(&response) {
        Ok(events) => events,
        Err(e) => {
            let kind = openai::error_kind(StatusCode::INTERNAL_SERVER_ERROR);
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, kind, &e.to_string());
        }
    };
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, event_stream(events, plan.delay, in_flight)).into_response()
}

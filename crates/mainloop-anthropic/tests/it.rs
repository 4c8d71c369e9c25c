//! End-to-end tests of the client against a local stand-in for the Messages API that
//! replays recorded SSE bodies and captures what the client sent.
// Test failures should be loud and immediate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::post;
use futures::StreamExt;
use mainloop_anthropic::{AnthropicConfig, AnthropicProvider};
use mainloop_domain::chat::{ContentBlock, ModelMessage, ModelRole};
use mainloop_model::{ModelError, ModelProvider, ModelRequest, StreamEvent, ToolSpec, Usage};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk-ant-api03-TEST-SECRET-do-not-leak";
const TEXT: &str = include_str!("fixtures/text.sse");
const TOOL_USE: &str = include_str!("fixtures/tool_use.sse");
const ERROR_MID_STREAM: &str = include_str!("fixtures/error_mid_stream.sse");
const BROKEN_OFF: &str = include_str!("fixtures/broken_off.sse");

/// What the stand-in answers with.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
    /// Reset the connection after the body instead of ending it cleanly.
    abort: bool,
}

impl Reply {
    fn sse(body: &str) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type", "text/event-stream; charset=utf-8")],
            body: body.to_owned(),
            abort: false,
        }
    }

    fn error(status: u16, kind: &str, message: &str) -> Self {
        let body = json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"});
        Self {
            status,
            headers: vec![("content-type", "application/json")],
            body: body.to_string(),
            abort: false,
        }
    }
}

#[derive(Debug)]
struct Captured {
    path: String,
    headers: HeaderMap,
    body: Value,
}

type Shared = (Reply, Arc<Mutex<Vec<Captured>>>);

struct Server {
    base_url: String,
    captured: Arc<Mutex<Vec<Captured>>>,
}

async fn serve(reply: Reply) -> Server {
    let captured = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/v1/messages", post(handle))
        .route("/v1/messages/count_tokens", post(handle))
        .with_state((reply, Arc::clone(&captured)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { base_url, captured }
}

async fn handle(
    State((reply, captured)): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    captured.lock().unwrap().push(Captured {
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(&body).unwrap(),
    });
    // Small odd-sized chunks so frames and characters straddle chunk boundaries.
    let chunks: Vec<Result<Bytes, std::io::Error>> = reply
        .body
        .as_bytes()
        .chunks(13)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let abort = futures::stream::once(async {
        // Let the data reach the client before the reset, as a real drop would.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err(std::io::Error::other("connection lost"))
    })
    .take(usize::from(reply.abort));
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(*name, *value);
    }
    response
        .body(Body::from_stream(
            futures::stream::iter(chunks).chain(abort),
        ))
        .unwrap()
}

fn config(base_url: &str) -> AnthropicConfig {
    let mut config = AnthropicConfig::new(KEY.into(), "claude-sonnet-4-5");
    config.base_url = format!("{base_url}/");
    config.read_timeout = Duration::from_secs(5);
    config
}

fn provider(server: &Server) -> AnthropicProvider {
    AnthropicProvider::new(config(&server.base_url)).unwrap()
}

fn request() -> ModelRequest {
    ModelRequest {
        system: "You are mainloop.".into(),
        messages: vec![ModelMessage {
            role: ModelRole::User,
            content: vec![ContentBlock::text("Fix the flaky test in mainloop")],
        }],
        tools: vec![],
        max_tokens: 1024,
    }
}

async fn run(reply: Reply) -> Vec<Result<StreamEvent, ModelError>> {
    let server = serve(reply).await;
    provider(&server).stream(request()).collect().await
}

fn done(events: &[Result<StreamEvent, ModelError>]) -> &mainloop_model::ModelResponse {
    match events.last() {
        Some(Ok(StreamEvent::Done(reply))) => reply,
        other => panic!("stream did not finish: {other:?}"),
    }
}

#[tokio::test]
async fn text_reply_streams_deltas_then_the_whole_message() {
    let events = run(Reply::sse(TEXT)).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0], Ok(StreamEvent::TextDelta("Hello".into())));
    assert_eq!(events[1], Ok(StreamEvent::TextDelta(", wörld!".into())));
    let reply = done(&events);
    assert_eq!(reply.id, "msg_01XFDUDYJgAACzvnptvVoYEL");
    assert_eq!(reply.model, "claude-sonnet-4-5-20250929");
    assert_eq!(
        serde_json::to_value(&reply.content).unwrap(),
        json!([{"type": "text", "text": "Hello, wörld!"}])
    );
    assert_eq!(reply.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 25,
            output_tokens: 15,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 12,
        }
    );
}

#[tokio::test]
async fn thinking_text_and_tool_use_are_assembled_exactly() {
    // Served with CRLF line endings, as some proxies rewrite them.
    let events = run(Reply::sse(&TOOL_USE.replace('\n', "\r\n"))).await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0],
        Ok(StreamEvent::TextDelta("Starting a worker on that.".into()))
    );
    let reply = done(&events);
    assert_eq!(
        serde_json::to_value(&reply.content).unwrap(),
        json!([
            {"type": "thinking", "thinking": "The user wants a task; spawn one.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
            {"type": "text", "text": "Starting a worker on that."},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "spawn_task",
             "input": {"description": "Fix the flaky test", "repo": "mainloop"}}
        ])
    );
    assert!(
        matches!(reply.content[0], ContentBlock::Unknown(_)),
        "thinking kept verbatim"
    );
    let input = json!({"description": "Fix the flaky test", "repo": "mainloop"});
    assert_eq!(
        reply.tool_uses(),
        [("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "spawn_task", &input)]
    );
    assert_eq!(reply.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(reply.usage.input_tokens, 472);
    assert_eq!(reply.usage.output_tokens, 89);
}

#[tokio::test]
async fn sends_the_documented_request() {
    let server = serve(Reply::sse(TEXT)).await;
    let provider = provider(&server);
    assert_eq!(provider.model(), "claude-sonnet-4-5");
    let mut req = request();
    req.messages.push(ModelMessage {
        role: ModelRole::Assistant,
        content: vec![
            serde_json::from_value(json!({"type": "thinking", "thinking": "t", "signature": "s"}))
                .unwrap(),
            ContentBlock::tool_use("toolu_1", "list_tasks", json!({})),
        ],
    });
    req.messages.push(ModelMessage {
        role: ModelRole::User,
        content: vec![ContentBlock::tool_result("toolu_1", "[]", false)],
    });
    req.tools.push(ToolSpec {
        name: "list_tasks".into(),
        description: "List the tasks".into(),
        input_schema: json!({"type": "object", "properties": {}}),
    });
    let events: Vec<_> = provider.stream(req).collect().await;
    done(&events);

    let captured = server.captured.lock().unwrap();
    let [sent] = captured.as_slice() else {
        panic!("expected one request, got {captured:?}");
    };
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], KEY);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.headers["content-type"], "application/json");
    assert_eq!(
        sent.body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": "You are mainloop.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Fix the flaky test in mainloop"}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "list_tasks", "input": {}}
                ]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "[]"}]}
            ],
            "tools": [{"name": "list_tasks", "description": "List the tasks", "input_schema": {"type": "object", "properties": {}}}],
            "stream": true
        })
    );
}

#[tokio::test]
async fn empty_tools_and_system_are_omitted() {
    let server = serve(Reply::sse(TEXT)).await;
    let mut req = request();
    req.system.clear();
    let events: Vec<_> = provider(&server).stream(req).collect().await;
    done(&events);
    let body = &server.captured.lock().unwrap()[0].body;
    assert!(body.get("tools").is_none(), "{body}");
    assert!(body.get("system").is_none(), "{body}");
}

#[tokio::test]
async fn error_event_mid_stream_ends_the_stream_with_its_error() {
    let events = run(Reply::sse(ERROR_MID_STREAM)).await;
    assert_eq!(
        events,
        [
            Ok(StreamEvent::TextDelta("Let me".into())),
            Err(ModelError::Overloaded { retry_after: None })
        ]
    );
}

#[tokio::test]
async fn stream_that_breaks_off_is_a_protocol_error() {
    let events = run(Reply::sse(BROKEN_OFF)).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0], Ok(StreamEvent::TextDelta("Half a".into())));
    assert!(
        matches!(&events[1], Err(ModelError::Protocol(m)) if m.contains("message_stop")),
        "{events:?}"
    );
}

#[tokio::test]
async fn connection_lost_mid_stream_is_a_transport_error() {
    let reply = Reply {
        abort: true,
        ..Reply::sse(BROKEN_OFF)
    };
    let events = run(reply).await;
    assert_eq!(
        events.first(),
        Some(&Ok(StreamEvent::TextDelta("Half a".into())))
    );
    assert!(
        matches!(events.last(), Some(Err(ModelError::Transport(_)))),
        "{events:?}"
    );
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let mut reply = Reply::error(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
    );
    reply.headers.push(("retry-after", "7"));
    let events = run(reply).await;
    assert_eq!(
        events,
        [Err(ModelError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        })]
    );
}

#[tokio::test]
async fn bad_key_is_unauthorized() {
    let events = run(Reply::error(
        401,
        "authentication_error",
        "invalid x-api-key",
    ))
    .await;
    assert_eq!(
        events,
        [Err(ModelError::Unauthorized("invalid x-api-key".into()))]
    );
}

#[tokio::test]
async fn other_statuses_map_to_port_errors() {
    let overloaded = Reply::error(529, "overloaded_error", "Overloaded");
    let mut server_error = Reply::error(500, "api_error", "");
    server_error.body = "upstream exploded".into();
    let not_found = Reply::error(404, "not_found_error", "model: claude-nope");
    let cases = [
        (overloaded, ModelError::Overloaded { retry_after: None }),
        (
            server_error,
            ModelError::Server {
                status: 500,
                message: "upstream exploded".into(),
            },
        ),
        (
            not_found,
            ModelError::BadRequest("model: claude-nope".into()),
        ),
    ];
    for (reply, expected) in cases {
        assert_eq!(run(reply).await, [Err(expected)]);
    }
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let provider = AnthropicProvider::new(config(&base_url)).unwrap();
    let events: Vec<_> = provider.stream(request()).collect().await;
    assert!(
        matches!(events.as_slice(), [Err(ModelError::Transport(_))]),
        "{events:?}"
    );
}

#[tokio::test]
async fn the_key_never_shows() {
    let server = serve(Reply::error(
        401,
        "authentication_error",
        &format!("invalid x-api-key {KEY}"),
    ))
    .await;
    let provider = provider(&server);
    let events: Vec<_> = provider.stream(request()).collect().await;
    let [Err(error)] = events.as_slice() else {
        panic!("{events:?}");
    };
    for shown in [
        format!("{provider:?}"),
        format!("{:?}", config(&server.base_url)),
        format!("{error} {error:?}"),
    ] {
        assert!(!shown.contains(KEY), "{shown}");
        assert!(!shown.contains("TEST-SECRET"), "{shown}");
    }
    assert!(error.to_string().contains("[REDACTED]"));
}

#[tokio::test]
async fn count_tokens_posts_without_stream_or_max_tokens() {
    let server = serve(Reply {
        headers: vec![("content-type", "application/json")],
        body: r#"{"input_tokens":2095}"#.into(),
        ..Reply::sse("")
    })
    .await;
    assert_eq!(provider(&server).count_tokens(&request()).await, Ok(2095));
    let captured = server.captured.lock().unwrap();
    assert_eq!(captured[0].path, "/v1/messages/count_tokens");
    assert_eq!(captured[0].headers["x-api-key"], KEY);
    let body = &captured[0].body;
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert!(
        body.get("stream").is_none() && body.get("max_tokens").is_none(),
        "{body}"
    );
}

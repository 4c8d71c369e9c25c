//! The Gemini API wire, which the `gemini` CLI speaks (`POST /v1beta/models/{model}:{method}`
//! for `streamGenerateContent`, `generateContent` and `countTokens`): a request normalised
//! into the Messages shape the script's matchers read, a rule's reply rendered as
//! `GenerateContentResponse` chunks, and errors in Google's shape. Logged like every
//! other endpoint.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::script::{self, ReplyBlock, RequestView};
use crate::server::{LoggedRequest, Shared, entry, event_stream, json_response, parse_object};

pub(crate) fn routes(shared: Shared) -> Router {
    Router::new()
        .route("/v1beta/models/{model_and_method}", post(models))
        .with_state(shared)
}

/// `req` (a Gemini `generateContent` body) for `model` as a Messages request, so one
/// script answers every wire: `systemInstruction` is the `system`; `user` contents are
/// user messages and `model` contents assistant ones; a `functionCall` part is a
/// `tool_use` and a `functionResponse` part a `tool_result`, both keyed by the function's
/// name (Gemini pairs them by name; ids are optional on its wire); consecutive contents
/// of one role form one message; tools are the `functionDeclarations`' names, and a
/// built-in tool (`googleSearch`, …) is named by its key.
pub fn normalise(model: &str, req: &Value) -> Value {
    let mut messages: Vec<Value> = Vec::new();
    for content in req
        .get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = match content.get("role").and_then(Value::as_str) {
            Some("model") => "assistant",
            // The API takes a missing role for the user's.
            Some("user") | None => "user",
            Some(_) => continue,
        };
        let blocks: Vec<Value> = parts(content.get("parts")).filter_map(part_block).collect();
        if blocks.is_empty() {
            continue;
        }
        if let Some(last) = messages.last_mut()
            && last["role"] == role
            && let Some(existing) = last["content"].as_array_mut()
        {
            existing.extend(blocks);
            continue;
        }
        messages.push(json!({"role": role, "content": blocks}));
    }
    let system: Vec<Value> = match req.get("systemInstruction") {
        Some(Value::String(s)) => vec![text_block(s)],
        Some(Value::Array(items)) => items.iter().filter_map(part_block).collect(),
        Some(content) => parts(content.get("parts")).filter_map(part_block).collect(),
        None => Vec::new(),
    };
    let mut tools = Vec::new();
    for tool in req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(tool) = tool.as_object() else {
            continue;
        };
        for (key, value) in tool {
            if key == "functionDeclarations" {
                let names = value.as_array().into_iter().flatten();
                for name in names.filter_map(|d| d.get("name")?.as_str()) {
                    tools.push(json!({"name": name, "type": "function"}));
                }
            } else {
                tools.push(json!({"name": key, "type": key}));
            }
        }
    }
    json!({"model": model, "system": system, "messages": messages, "tools": tools})
}

fn parts(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// One part as a Messages block; None for parts no matcher reads (thoughts, files, …).
fn part_block(part: &Value) -> Option<Value> {
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    if let Some(text) = part.get("text").and_then(Value::as_str) {
        return Some(text_block(text));
    }
    if let Some(call) = part.get("functionCall") {
        let name = call.get("name")?.as_str()?;
        let input = call.get("args").cloned().unwrap_or_else(|| json!({}));
        return Some(json!({"type": "tool_use", "id": name, "name": name, "input": input}));
    }
    let response = part.get("functionResponse")?;
    let name = response.get("name")?.as_str()?;
    let output = response.get("response").cloned().unwrap_or(Value::Null);
    // The CLI answers `{"output": "..."}` or `{"error": "..."}`; either reads as text.
    let text = match output.get("output").or_else(|| output.get("error")) {
        Some(Value::String(s)) => s.clone(),
        _ => output.to_string(),
    };
    Some(json!({"type": "tool_result", "tool_use_id": name, "content": text}))
}

/// The reply as Gemini parts: text is `{text}`, a tool use `{functionCall: {name, args}}`.
pub fn reply_parts(blocks: &[ReplyBlock]) -> Vec<Value> {
    blocks
        .iter()
        .map(|block| match block {
            ReplyBlock::Text(text) => json!({"text": text}),
            ReplyBlock::ToolUse(tool) => {
                json!({"functionCall": {"name": tool.name, "args": tool.input}})
            }
        })
        .collect()
}

pub fn usage(prompt: u64, candidates: u64) -> Value {
    json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates,
    })
}

/// One `GenerateContentResponse` carrying `parts`; the last one of a reply also carries
/// the `finishReason` and the usage.
pub fn response(parts: &[Value], model: &str, id: &str, end: Option<&Value>) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    let mut out = json!({"candidates": [], "modelVersion": model, "responseId": id});
    if let Some(usage) = end {
        candidate["finishReason"] = json!("STOP");
        out["usageMetadata"] = usage.clone();
    }
    out["candidates"] = json!([candidate]);
    out
}

/// The SSE events that stream `parts`: text in up to 2 pieces, each function call whole
/// (as the API sends it), one part per event; the last event ends the reply.
pub fn sse_events(
    parts: &[Value],
    model: &str,
    id: &str,
    usage: &Value,
) -> Result<Vec<String>, serde_json::Error> {
    let mut pieces: Vec<Value> = Vec::new();
    for part in parts {
        match part.get("text").and_then(Value::as_str) {
            Some(text) if !text.is_empty() => {
                let split = crate::server::chunks(text, 2);
                pieces.extend(split.into_iter().map(|t| json!({"text": t})));
            }
            _ => pieces.push(part.clone()),
        }
    }
    if pieces.is_empty() {
        pieces.push(json!({"text": ""}));
    }
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let end = (i == last).then_some(usage);
            let chunk = response(std::slice::from_ref(piece), model, id, end);
            Ok(format!("data: {}\r\n\r\n", serde_json::to_string(&chunk)?))
        })
        .collect()
}

/// Google's error body: `{"error": {"code", "message", "status"}}`, with a `RetryInfo`
/// detail when the client is told when to retry.
pub fn error_body(
    code: StatusCode,
    status: &str,
    message: &str,
    retry_after: Option<u64>,
) -> Value {
    let mut error = json!({"code": code.as_u16(), "message": message, "status": status});
    if let Some(secs) = retry_after {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{secs}s"),
        }]);
    }
    json!({ "error": error })
}

/// The status name Google uses for an HTTP status, when the rule names none.
pub fn error_status(code: StatusCode) -> &'static str {
    match code.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500.. => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

fn error_response(code: StatusCode, message: &str) -> Response {
    json_response(code, &error_body(code, error_status(code), message, None))
}

/// The three methods of a model the CLI calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Stream,
    Generate,
    CountTokens,
}

fn split_method(model_and_method: &str) -> Option<(&str, Method)> {
    let (model, method) = model_and_method.rsplit_once(':')?;
    let method = match method {
        "streamGenerateContent" => Method::Stream,
        "generateContent" => Method::Generate,
        "countTokens" => Method::CountTokens,
        _ => return None,
    };
    (!model.is_empty()).then_some((model, method))
}

async fn models(
    State(shared): State<Shared>,
    Path(model_and_method): Path<String>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let in_flight = shared.begin();
    let mut log = entry("POST", &uri, Value::Null);
    let Some((model, method)) = split_method(&model_and_method) else {
        shared.record(LoggedRequest {
            status: 404,
            body: Value::String(String::from_utf8_lossy(&body).into_owned()),
            ..log
        });
        let message = format!("fake Gemini API does not implement {}", uri.path());
        return error_response(StatusCode::NOT_FOUND, &message);
    };
    let req = match parse_object(&body) {
        Ok(req) => req,
        Err(e) => {
            let raw = Value::String(String::from_utf8_lossy(&body).into_owned());
            shared.record(LoggedRequest {
                status: 400,
                body: raw,
                ..log
            });
            return error_response(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let prompt_tokens = (body.len() / 4) as u64;
    if method == Method::CountTokens {
        shared.record(LoggedRequest { body: req, ..log });
        return json_response(StatusCode::OK, &json!({"totalTokens": prompt_tokens}));
    }
    if !req.get("contents").is_some_and(Value::is_array) {
        shared.record(LoggedRequest {
            status: 400,
            body: req,
            ..log
        });
        let message = "* GenerateContentRequest.contents: contents is not specified";
        return error_response(StatusCode::BAD_REQUEST, message);
    }
    let normal = normalise(model, &req);
    let plan = shared.plan(&normal, &mut log);

    if let Some(err) = plan.error {
        shared.record(LoggedRequest {
            status: err.status.as_u16(),
            body: req,
            ..log
        });
        let status = err
            .kind
            .unwrap_or_else(|| error_status(err.status).to_owned());
        let message = err.message.unwrap_or_else(|| format!("fake {status}"));
        let body = error_body(err.status, &status, &message, err.retry_after);
        let mut resp = json_response(err.status, &body);
        if let Some(secs) = err.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        return resp;
    }

    let view = RequestView::new(&normal);
    let mut blocks = plan.blocks;
    for block in &mut blocks {
        if let ReplyBlock::ToolUse(tool) = block {
            script::fill_placeholders(&mut tool.input, &view);
        }
    }
    let parts = reply_parts(&blocks);
    // Rough chars/4 estimates, as for the other endpoints.
    let output_tokens = (Value::Array(parts.clone()).to_string().len() / 4) as u64 + 1;
    let usage = usage(prompt_tokens, output_tokens);
    let id = format!("fake-gemini-{}", shared.next_id());
    shared.record(LoggedRequest { body: req, ..log });

    if method == Method::Generate {
        tokio::time::sleep(plan.delay).await;
        return json_response(StatusCode::OK, &response(&parts, model, &id, Some(&usage)));
    }
    // Without `alt=sse` the API streams one JSON array; the CLI always asks for SSE.
    let sse = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
    if !sse {
        let chunks = vec![response(&parts, model, &id, Some(&usage))];
        return json_response(StatusCode::OK, &Value::Array(chunks));
    }
    let events = match sse_events(&parts, model, &id, &usage) {
        Ok(events) => events,
        Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, event_stream(events, plan.delay, in_flight)).into_response()
}

/// The model calls among `requests`' paths, as `(model, method)`.
#[must_use]
pub fn model_call(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1beta/models/")?;
    let rest = rest.split('?').next().unwrap_or_default();
    let (model, method) = rest.rsplit_once(':')?;
    matches!(method, "streamGenerateContent" | "generateContent").then_some((model, method))
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::script::{Match, ToolUseSpec, conditions_hold};

    /// A second-turn request as Gemini CLI sends it (trimmed): its context turn, the
    /// prompt, the model's write and its result.
    fn gemini_request() -> Value {
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "This is the Gemini CLI. We are setting up the context for our chat."}]},
                {"role": "model", "parts": [{"text": "Got it. Thanks for the context!"}]},
                {"role": "user", "parts": [{"text": "build the greeter"}]},
                {"role": "model", "parts": [
                    {"text": "Writing.", "thought": true},
                    {"text": "Writing the greeting."},
                    {"functionCall": {"name": "write_file", "args": {"file_path": "/w/greeting.txt", "content": "hello\n"}}}
                ]},
                {"role": "user", "parts": [{"functionResponse": {"id": "write_file-1", "name": "write_file",
                    "response": {"output": "Successfully created and wrote to new file: /w/greeting.txt."}}}]}
            ],
            "systemInstruction": {"role": "user", "parts": [{"text": "You are an interactive CLI agent."}]},
            "tools": [{"functionDeclarations": [
                {"name": "write_file", "parametersJsonSchema": {"type": "object"}},
                {"name": "run_shell_command", "parametersJsonSchema": {"type": "object"}}
            ]}, {"googleSearch": {}}],
            "generationConfig": {"temperature": 0}
        })
    }

    fn holds(req: &Value, m: Value) -> bool {
        let m: Match = serde_json::from_value(m).expect("valid match");
        conditions_hold(&m, &RequestView::new(&normalise("gemini-2.5-pro", req)))
    }

    #[test]
    fn a_gemini_request_reads_like_a_messages_request() {
        let n = normalise("gemini-2.5-pro", &gemini_request());
        let roles: Vec<&str> = n["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["role"].as_str())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
        assert_eq!(
            n["messages"][3]["content"],
            json!([{"type": "text", "text": "Writing the greeting."},
                   {"type": "tool_use", "id": "write_file", "name": "write_file",
                    "input": {"file_path": "/w/greeting.txt", "content": "hello\n"}}]),
            "thoughts are not the model's words"
        );
        let r = gemini_request();
        assert!(holds(&r, json!({"tool_result_for": "write_file"})));
        assert!(!holds(&r, json!({"tool_result_for": "run_shell_command"})));
        assert!(holds(
            &r,
            json!({"tool_result_contains": "Successfully created"})
        ));
        assert!(holds(&r, json!({"tool_offered": "run_shell_command"})));
        assert!(holds(&r, json!({"tool_offered": "googleSearch"})));
        assert!(holds(&r, json!({"model_contains": "2.5-pro"})));
        assert!(holds(
            &r,
            json!({"system_contains": "interactive CLI agent"})
        ));
        assert!(!holds(&r, json!({"user_contains": "build the greeter"})));
    }

    #[test]
    fn the_first_request_matches_the_prompt() {
        let mut r = gemini_request();
        r["contents"].as_array_mut().expect("contents").truncate(3);
        r["systemInstruction"] = json!("plain system");
        assert!(holds(&r, json!({"user_contains": "build the greeter"})));
        assert!(holds(&r, json!({"system_contains": "plain system"})));
        let n = normalise("m", &r);
        assert_eq!(
            RequestView::new(&n).last_user_text().as_deref(),
            Some("build the greeter")
        );
        // A router call: no tools, a JSON answer asked for.
        let router = json!({"contents": [{"role": "user", "parts": [{"text": "route this"}]}]});
        assert!(holds(&router, json!({"has_tools": false})));
    }

    #[test]
    fn every_field_of_the_wrong_type_is_ignored_without_panicking() {
        let odd = [
            json!(null),
            json!(1),
            json!("x"),
            json!([]),
            json!([1, null]),
            json!({}),
            json!({"text": 3, "name": [], "args": "x", "response": 1}),
        ];
        let everything: Match = serde_json::from_value(json!({
            "system_contains": "a", "user_contains": "b", "tool_result_contains": "c",
            "tool_result_for": "d", "model_contains": "e", "has_tools": true, "tool_offered": "f"
        }))
        .expect("valid match");
        for value in &odd {
            let reqs = [
                json!({"contents": value, "systemInstruction": value, "tools": value}),
                json!({"contents": [{"role": value, "parts": value}], "tools": [value]}),
                json!({"contents": [{"parts": [value, {"functionCall": value}, {"functionResponse": value}]}],
                       "systemInstruction": {"parts": [value]}, "tools": [{"functionDeclarations": value}]}),
            ];
            for req in reqs {
                let n = normalise("m", &req);
                assert!(n["messages"].is_array() && n["tools"].is_array());
                let view = RequestView::new(&n);
                let _ = conditions_hold(&everything, &view);
                let _ = view.last_user_text();
            }
        }
    }

    fn data(event: &str) -> Value {
        let json = event
            .strip_prefix("data: ")
            .expect("a data line")
            .trim_end();
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn replies_stream_as_chunks_that_end_with_stop_and_usage() {
        let parts = reply_parts(&[
            ReplyBlock::Text("Hello world".into()),
            ReplyBlock::ToolUse(ToolUseSpec {
                name: "run_shell_command".into(),
                input: json!({"command": "echo hi"}),
            }),
        ]);
        assert_eq!(
            parts[1],
            json!({"functionCall": {"name": "run_shell_command", "args": {"command": "echo hi"}}})
        );
        let events = sse_events(&parts, "gemini-2.5-pro", "r1", &usage(100, 20)).expect("json");
        assert_eq!(events.len(), 3, "{events:?}");
        let chunks: Vec<Value> = events.iter().map(|e| data(e)).collect();
        let text: String = chunks[..2]
            .iter()
            .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
            .collect();
        assert_eq!(text, "Hello world");
        assert!(chunks[0]["candidates"][0].get("finishReason").is_none());
        let last = &chunks[2];
        assert_eq!(last["candidates"][0]["content"]["parts"][0], parts[1]);
        assert_eq!(last["candidates"][0]["content"]["role"], "model");
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["totalTokenCount"], 120);
        let empty = sse_events(&[], "m", "r2", &usage(1, 1)).expect("json");
        assert_eq!(data(&empty[0])["candidates"][0]["finishReason"], "STOP");
    }

    #[test]
    fn errors_and_paths_read_as_google_writes_them() {
        let body = error_body(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            "quota",
            Some(3),
        );
        assert_eq!(body["error"]["code"], 429);
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(body["error"]["details"][0]["retryDelay"], "3s");
        assert_eq!(error_status(StatusCode::SERVICE_UNAVAILABLE), "UNAVAILABLE");
        assert_eq!(error_status(StatusCode::BAD_GATEWAY), "INTERNAL");
        assert_eq!(
            split_method("gemini-2.5-pro:streamGenerateContent"),
            Some(("gemini-2.5-pro", Method::Stream))
        );
        assert_eq!(
            split_method("m:countTokens"),
            Some(("m", Method::CountTokens))
        );
        assert_eq!(split_method(":generateContent"), None);
        assert_eq!(split_method("m:embedContent"), None);
        assert_eq!(split_method("m"), None);
        assert_eq!(
            model_call("/v1beta/models/gemini-2.5-flash-lite:generateContent"),
            Some(("gemini-2.5-flash-lite", "generateContent"))
        );
        assert_eq!(model_call("/v1beta/models/m:countTokens"), None);
        assert_eq!(model_call("/v1/messages"), None);
    }
}

//! The OpenAI Responses API wire, which the `codex` CLI speaks: a Responses request
//! normalised into the Messages shape the script's matchers read, and a rule's reply
//! rendered as Responses output items, SSE events and error bodies. Pure: no IO.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::script::ReplyBlock;

/// The tool whose calls are freeform patches (a `custom` tool), not JSON arguments.
pub const APPLY_PATCH: &str = "apply_patch";

/// `req` (a Responses request body) as a Messages request, so that one script answers
/// both wires: `instructions` is the `system`; `developer`/`system` input messages are
/// `role: "system"` messages; `function_call`/`custom_tool_call` items are assistant
/// `tool_use` blocks and their `*_output` items user `tool_result` blocks (keyed by
/// `call_id`); consecutive items of one role form one message, as in the Messages API;
/// each tool is named by its `name`, or by its `type` when it has none (`web_search`).
pub fn normalise(req: &Value) -> Value {
    let mut messages: Vec<Value> = Vec::new();
    let mut add = |role: &str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        if let Some(last) = messages.last_mut()
            && last["role"] == role
            && let Some(content) = last["content"].as_array_mut()
        {
            content.extend(blocks);
            return;
        }
        messages.push(json!({"role": role, "content": blocks}));
    };
    match req.get("input") {
        Some(Value::String(text)) => add("user", vec![text_block(text)]),
        Some(Value::Array(items)) => {
            for (role, blocks) in items.iter().filter_map(item_blocks) {
                add(role, blocks);
            }
        }
        _ => {}
    }
    let mut tools = Vec::new();
    collect_tools(req.get("tools"), &mut tools);
    json!({
        "model": req.get("model").cloned().unwrap_or(Value::Null),
        "system": req.get("instructions").cloned().unwrap_or(Value::Null),
        "messages": messages,
        "tools": tools,
    })
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// One input item as `(role, blocks)`; None for items no matcher reads (reasoning, …).
fn item_blocks(item: &Value) -> Option<(&'static str, Vec<Value>)> {
    // An "easy" input message (`{"role", "content"}`) has no `type`.
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    let call_id = item.get("call_id").cloned().unwrap_or(Value::Null);
    match kind {
        "message" => {
            let role = match str_field(item, "role") {
                "user" => "user",
                "assistant" => "assistant",
                "developer" | "system" => "system",
                _ => return None,
            };
            Some((role, content_texts(item.get("content"))))
        }
        "function_call" | "custom_tool_call" => {
            let input = if kind == "function_call" {
                // The arguments are a JSON string; a matcher or a test reads them parsed,
                // as the Messages API's `input`.
                let raw = item.get("arguments").cloned().unwrap_or(Value::Null);
                raw.as_str()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(raw)
            } else {
                item.get("input").cloned().unwrap_or(Value::Null)
            };
            let block = json!({"type": "tool_use", "id": call_id, "name": item.get("name"), "input": input});
            Some(("assistant", vec![block]))
        }
        "function_call_output" | "custom_tool_call_output" => {
            let content = output_content(item.get("output"));
            let block = json!({"type": "tool_result", "tool_use_id": call_id, "content": content});
            Some(("user", vec![block]))
        }
        _ => None,
    }
}

/// Text parts (`input_text`, `output_text`, …) of a message's `content` as text blocks.
fn content_texts(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![text_block(s)],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text")?.as_str())
            .map(text_block)
            .collect(),
        _ => Vec::new(),
    }
}

/// A tool output (a string, or content parts) as a `tool_result`'s content.
fn output_content(output: Option<&Value>) -> Value {
    match output {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(_)) => Value::Array(content_texts(output)),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Value::String(s.clone()),
            _ => Value::String(Value::Object(o.clone()).to_string()),
        },
        _ => Value::String(String::new()),
    }
}

/// Tools as `{"name", "type"}`; a namespace's own `tools` are listed too.
fn collect_tools(tools: Option<&Value>, out: &mut Vec<Value>) {
    for tool in tools.and_then(Value::as_array).into_iter().flatten() {
        let kind = tool.get("type").cloned().unwrap_or(Value::Null);
        let name = tool.get("name").cloned().unwrap_or_else(|| kind.clone());
        if name.is_string() {
            out.push(json!({"name": name, "type": kind}));
        }
        collect_tools(tool.get("tools"), out);
    }
}

/// The reply as Responses output items: text is an assistant `message`; a `tool_use` of
/// [`APPLY_PATCH`] is a `custom_tool_call` whose `input` is the reply's `input.patch`
/// (or `input` itself when it is a string); any other `tool_use` is a `function_call`
/// whose `arguments` are its input as a JSON string. `next_id` numbers the ids.
pub fn output_items(blocks: &[ReplyBlock], mut next_id: impl FnMut() -> u64) -> Vec<Value> {
    blocks
        .iter()
        .map(|block| match block {
            ReplyBlock::Text(text) => json!({
                "type": "message", "id": format!("msg_fake_{}", next_id()), "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }),
            ReplyBlock::ToolUse(tool) if tool.name == APPLY_PATCH => {
                let n = next_id();
                let input = tool
                    .input
                    .get("patch")
                    .and_then(Value::as_str)
                    .or(tool.input.as_str())
                    .map_or_else(|| tool.input.to_string(), str::to_owned);
                json!({
                    "type": "custom_tool_call", "id": format!("ctc_fake_{n}"),
                    "call_id": format!("call_fake_{n}"), "name": tool.name, "input": input,
                    "status": "completed",
                })
            }
            ReplyBlock::ToolUse(tool) => {
                let n = next_id();
                json!({
                    "type": "function_call", "id": format!("fc_fake_{n}"),
                    "call_id": format!("call_fake_{n}"), "name": tool.name,
                    "arguments": tool.input.to_string(), "status": "completed",
                })
            }
        })
        .collect()
}

/// The `usage` object of a response (Codex reads `input_tokens_details.cached_tokens`
/// and `output_tokens_details.reasoning_tokens` too).
pub fn usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    })
}

/// The finished response object: the non-streamed body, and the payload of
/// `response.completed`.
pub fn response_object(id: &str, model: &str, items: &[Value], usage: &Value) -> Value {
    json!({
        "id": id, "object": "response", "created_at": 0, "status": "completed",
        "model": model, "output": items, "usage": usage,
    })
}

/// The SSE events that stream `response` (from [`response_object`]): `response.created`;
/// per message `response.output_item.added`, `response.output_text.delta` (the text in
/// up to 2 pieces) and `response.output_item.done`; per tool call only
/// `response.output_item.done`, which is all Codex reads of one; `response.completed`.
pub fn sse_events(response: &Value) -> Result<Vec<String>, serde_json::Error> {
    let mut out = Vec::new();
    let mut push = |kind: &str, mut data: Value| -> Result<(), serde_json::Error> {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(out.len());
        out.push(format!(
            "event: {kind}\ndata: {}\n\n",
            serde_json::to_string(&data)?
        ));
        Ok(())
    };
    let mut created = response.clone();
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    created["usage"] = Value::Null;
    push("response.created", json!({"response": created}))?;
    let items = response["output"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (index, item) in items.iter().enumerate() {
        if item["type"] == "message" {
            let mut added = item.clone();
            added["status"] = json!("in_progress");
            added["content"] = json!([]);
            push(
                "response.output_item.added",
                json!({"output_index": index, "item": added}),
            )?;
            let text = item["content"][0]["text"].as_str().unwrap_or_default();
            for delta in crate::server::chunks(text, 2) {
                push(
                    "response.output_text.delta",
                    json!({"item_id": item["id"], "output_index": index, "content_index": 0, "delta": delta}),
                )?;
            }
        }
        push(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        )?;
    }
    push("response.completed", json!({"response": response}))?;
    Ok(out)
}

/// OpenAI's error body. `kind` is both the `type` and the `code`, since Codex decides on
/// either (`usage_limit_reached` by type, `insufficient_quota` by code).
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": kind}})
}

/// The error kind OpenAI uses for a status, when the rule names none.
pub fn error_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "invalid_api_key",
        403 => "permission_denied",
        404 => "not_found",
        429 => "rate_limit_exceeded",
        500.. => "server_error",
        _ => "invalid_request_error",
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::script::{Match, RequestView, ToolUseSpec, conditions_hold};

    /// A second-turn request as Codex 0.171.0 sends it (trimmed): instructions,
    /// developer and user context, the prompt, the model's command and its output.
    fn codex_request() -> Value {
        json!({
            "model": "gpt-5.5",
            "instructions": "You are Codex, a coding agent.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions instructions>approval policy untrusted</permissions instructions>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>\n  <cwd>/w</cwd>\n</environment_context>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "build the greeter"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running it."}]},
                {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": "{\"cmd\":\"touch x && echo hi\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "Chunk ID: 1\nProcess exited with code 0\nOutput:\nhi\n"}
            ],
            "tools": [
                {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
                {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
                {"type": "web_search"}
            ],
            "stream": true
        })
    }

    fn holds(req: &Value, m: Value) -> bool {
        let m: Match = serde_json::from_value(m).expect("valid match");
        conditions_hold(&m, &RequestView::new(&normalise(req)))
    }

    #[test]
    fn a_codex_request_reads_like_a_messages_request() {
        let n = normalise(&codex_request());
        let roles: Vec<&str> = n["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["role"].as_str())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(
            n["messages"][2]["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "exec_command", "input": {"cmd": "touch x && echo hi"}})
        );
        let r = codex_request();
        assert!(holds(&r, json!({"tool_result_for": "exec_command"})));
        assert!(holds(&r, json!({"tool_result_contains": "Output:\nhi"})));
        assert!(holds(&r, json!({"tool_offered": "exec_command"})));
        assert!(holds(&r, json!({"tool_offered": "apply_patch"})));
        assert!(holds(&r, json!({"tool_offered": "web_search"})));
        assert!(holds(&r, json!({"model_contains": "gpt-5"})));
        assert!(holds(&r, json!({"system_contains": "You are Codex"})));
        assert!(holds(&r, json!({"system_contains": "approval policy"})));
        assert!(
            !holds(&r, json!({"user_contains": "build the greeter"})),
            "after a tool call the latest user message holds only its output"
        );
        assert!(!holds(&r, json!({"tool_result_for": "apply_patch"})));
    }

    #[test]
    fn the_first_request_matches_the_prompt() {
        let mut r = codex_request();
        let input = r["input"].as_array_mut().expect("input");
        input.truncate(3);
        assert!(holds(&r, json!({"user_contains": "build the greeter"})));
        assert!(holds(&r, json!({"user_contains": "<cwd>/w</cwd>"})));
        assert!(!holds(&r, json!({"tool_result_for": "exec_command"})));
        let n = normalise(&r);
        assert_eq!(
            RequestView::new(&n).last_user_text().as_deref(),
            Some("build the greeter"),
            "the prompt is the last text, as the echo fallback expects"
        );
    }

    #[test]
    fn patch_calls_and_string_inputs_normalise() {
        let r = json!({"model": "m", "input": [
            {"role": "user", "content": "add a file"},
            {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"},
            {"type": "custom_tool_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "Success. Updated the following files:\nA hello.txt"}]},
            {"type": "reasoning", "summary": []}
        ]});
        assert!(holds(&r, json!({"tool_result_for": "apply_patch"})));
        assert!(holds(&r, json!({"tool_result_contains": "A hello.txt"})));
        assert!(holds(&r, json!({"has_tools": false})));
        let text = json!({"model": "m", "input": "just text"});
        assert!(holds(&text, json!({"user_contains": "just text"})));
        // Garbage never panics and matches only conditions that need nothing.
        for garbage in [
            json!(null),
            json!({"input": [1, "x", {"type": 3}, {"type": "function_call"}]}),
            json!({"input": {}, "tools": "x"}),
        ] {
            assert!(holds(&garbage, json!({})));
            assert!(!holds(&garbage, json!({"tool_offered": "x"})));
        }
    }

    #[test]
    fn every_field_of_the_wrong_type_is_ignored_without_panicking() {
        let odd = [
            json!(null),
            json!(1),
            json!("x"),
            json!("{not json"),
            json!([]),
            json!([1, null]),
            json!({}),
            json!({"text": 3, "content": [null]}),
        ];
        let kinds = [
            "message",
            "function_call",
            "custom_tool_call",
            "function_call_output",
            "custom_tool_call_output",
            "reasoning",
        ];
        let fields = [
            "type",
            "role",
            "content",
            "call_id",
            "name",
            "arguments",
            "input",
            "output",
        ];
        let everything: Match = serde_json::from_value(json!({
            "system_contains": "a", "user_contains": "b", "tool_result_contains": "c",
            "tool_result_for": "d", "model_contains": "e", "has_tools": true, "tool_offered": "f"
        }))
        .expect("valid match");
        for kind in kinds {
            for field in fields {
                for value in &odd {
                    let mut item =
                        json!({"type": kind, "role": "user", "call_id": "c", "name": "n"});
                    item[field] = value.clone();
                    for req in [
                        json!({"input": [item.clone(), item.clone()], "tools": [item.clone()]}),
                        json!({"input": value, "tools": value, "model": value, "instructions": value}),
                    ] {
                        let n = normalise(&req);
                        assert!(n["messages"].is_array() && n["tools"].is_array());
                        let view = RequestView::new(&n);
                        let _ = conditions_hold(&everything, &view);
                        let _ = view.last_user_text();
                    }
                }
            }
        }
    }

    fn tool(name: &str, input: Value) -> ReplyBlock {
        ReplyBlock::ToolUse(ToolUseSpec {
            name: name.into(),
            input,
        })
    }

    #[test]
    fn replies_render_as_output_items() {
        let mut n = 0;
        let items = output_items(
            &[
                ReplyBlock::Text("Hello".into()),
                tool("exec_command", json!({"cmd": "echo hi"})),
                tool(
                    "apply_patch",
                    json!({"patch": "*** Begin Patch\n*** End Patch"}),
                ),
                tool("apply_patch", json!("*** Begin Patch")),
            ],
            || {
                n += 1;
                n
            },
        );
        assert_eq!(items[0]["type"], "message");
        assert_eq!(items[0]["content"][0]["text"], "Hello");
        assert_eq!(items[1]["type"], "function_call");
        assert_eq!(items[1]["call_id"], "call_fake_2");
        let args: Value =
            serde_json::from_str(items[1]["arguments"].as_str().expect("string")).expect("json");
        assert_eq!(args, json!({"cmd": "echo hi"}));
        assert_eq!(items[2]["type"], "custom_tool_call");
        assert_eq!(items[2]["input"], "*** Begin Patch\n*** End Patch");
        assert_eq!(items[3]["input"], "*** Begin Patch");
    }

    #[test]
    fn events_stream_text_and_end_with_usage() {
        let items = output_items(
            &[
                ReplyBlock::Text("Hello world".into()),
                tool("exec_command", json!({})),
            ],
            || 7,
        );
        let resp = response_object("resp_1", "gpt-5.5", &items, &usage(100, 20));
        let events = sse_events(&resp).expect("serialises");
        let kinds: Vec<&str> = events
            .iter()
            .filter_map(|e| e.strip_prefix("event: ")?.split('\n').next())
            .collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.output_item.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_item.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let last = events.last().expect("events");
        let data: Value =
            serde_json::from_str(last.split_once("data: ").expect("data line").1.trim_end())
                .expect("json");
        assert_eq!(data["response"]["usage"]["total_tokens"], 120);
        assert_eq!(
            data["response"]["usage"]["input_tokens_details"]["cached_tokens"],
            0
        );
        assert_eq!(data["sequence_number"], 6);
    }

    #[test]
    fn errors_name_their_kind_as_type_and_code() {
        assert_eq!(
            error_kind(StatusCode::TOO_MANY_REQUESTS),
            "rate_limit_exceeded"
        );
        assert_eq!(error_kind(StatusCode::BAD_GATEWAY), "server_error");
        let body = error_body("insufficient_quota", "no quota");
        assert_eq!(body["error"]["code"], "insufficient_quota");
        assert_eq!(body["error"]["type"], "insufficient_quota");
        assert_eq!(body["error"]["message"], "no quota");
    }
}

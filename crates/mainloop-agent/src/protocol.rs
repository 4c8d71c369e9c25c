//! Claude Code's stream-json protocol as pure functions: [`parse_line`] turns one stdout
//! line into [`AgentEvent`]s, and the `*_line` functions build the lines we write to
//! stdin. No I/O here, so recorded lines are enough to test it.

use serde_json::{Value, json};

use crate::{AgentEvent, AgentMode, AgentOption, AgentQuestion, ControlReply, SessionRef};

/// Longest `ToolCall::summary`, in characters.
pub const TOOL_CALL_SUMMARY_CHARS: usize = 200;
/// Longest `ToolResult::summary`, in bytes (cut at a character boundary).
pub const TOOL_RESULT_SUMMARY_BYTES: usize = 2048;
/// Longest `Malformed::line`, in bytes: the line is evidence, not payload.
pub const MALFORMED_LINE_BYTES: usize = 2048;

/// The request id of the `initialize` request sent at start.
pub const INITIALIZE_REQUEST_ID: &str = "init-1";

/// The flags after the command itself, in the order the CLI documents them.
pub fn claude_args(
    session: &SessionRef,
    mode: AgentMode,
    model: Option<&str>,
    append_system_prompt: Option<&str>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-prompt-tool",
        "stdio",
        "--permission-mode",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    args.push(
        match mode {
            AgentMode::Plan => "plan",
            AgentMode::Implement => "acceptEdits",
        }
        .to_owned(),
    );
    match session {
        SessionRef::New(id) => args.extend(["--session-id".to_owned(), id.clone()]),
        SessionRef::Resume(id) => args.extend(["--resume".to_owned(), id.clone()]),
    }
    if let Some(model) = model {
        args.extend(["--model".to_owned(), model.to_owned()]);
    }
    if let Some(prompt) = append_system_prompt {
        args.extend(["--append-system-prompt".to_owned(), prompt.to_owned()]);
    }
    args
}

/// The first line we write: without it the CLI does not answer control requests.
pub fn initialize_line() -> String {
    json!({"type": "control_request", "request_id": INITIALIZE_REQUEST_ID,
           "request": {"subtype": "initialize"}})
    .to_string()
}

pub fn user_message_line(text: &str) -> String {
    json!({"type": "user", "message": {"role": "user", "content": text}}).to_string()
}

/// The answer to a `can_use_tool` control request.
pub fn control_response_line(request_id: &str, reply: &ControlReply) -> String {
    let response = match reply {
        ControlReply::Allow { updated_input } => {
            json!({"behavior": "allow", "updatedInput": updated_input})
        }
        ControlReply::Deny { message, interrupt } => {
            json!({"behavior": "deny", "message": message, "interrupt": interrupt})
        }
    };
    json!({"type": "control_response",
           "response": {"subtype": "success", "request_id": request_id, "response": response}})
    .to_string()
}

/// Parses one stdout line of `claude --output-format stream-json --verbose`.
///
/// Lenient by design, because the CLI changes often: unknown line types and unknown
/// content blocks yield nothing; only a line that is not a JSON object, or a known type
/// missing what we need to act on, yields [`AgentEvent::Malformed`]. Never panics.
pub fn parse_line(line: &str) -> Vec<AgentEvent> {
    let line = line.trim();
    if line.is_empty() {
        return Vec::new();
    }
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return vec![malformed(line, e.to_string())],
    };
    if !value.is_object() {
        return vec![malformed(line, "not a JSON object".to_owned())];
    }
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return vec![malformed(line, "no \"type\" field".to_owned())];
    };
    let parsed = match kind {
        "system" => system(&value),
        "assistant" => Ok(assistant(&value)),
        "user" => Ok(user(&value)),
        "control_request" => control_request(&value),
        "result" => Ok(vec![result(&value)]),
        // Acknowledges our `initialize`; its payload (commands, models) is not needed.
        "control_response" => Ok(Vec::new()),
        // stream_event (partial messages), control_cancel_request, rate-limit notices,
        // and whatever later CLI versions add.
        _ => Ok(Vec::new()),
    };
    parsed.unwrap_or_else(|error| vec![malformed(line, error)])
}

fn malformed(line: &str, error: String) -> AgentEvent {
    AgentEvent::Malformed {
        line: truncate_bytes(line, MALFORMED_LINE_BYTES),
        error,
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn system(v: &Value) -> Result<Vec<AgentEvent>, String> {
    // Other subtypes (status, api_retry, informational, compact_boundary) are progress
    // noise for our purposes.
    if str_field(v, "subtype") != Some("init") {
        return Ok(Vec::new());
    }
    let session_id = str_field(v, "session_id").ok_or("system/init without session_id")?;
    Ok(vec![AgentEvent::SessionStarted {
        session_id: session_id.to_owned(),
        model: str_field(v, "model").unwrap_or_default().to_owned(),
    }])
}

/// The content of `message.content`, where a bare string means one text block.
fn content_blocks(v: &Value) -> Vec<Value> {
    match v.get("message").and_then(|m| m.get("content")) {
        Some(Value::Array(blocks)) => blocks.clone(),
        Some(Value::String(text)) => vec![json!({"type": "text", "text": text})],
        _ => Vec::new(),
    }
}

fn assistant(v: &Value) -> Vec<AgentEvent> {
    content_blocks(v)
        .iter()
        .filter_map(|block| match str_field(block, "type")? {
            "text" => {
                let text = str_field(block, "text")?;
                (!text.trim().is_empty()).then(|| AgentEvent::Text {
                    text: text.to_owned(),
                })
            }
            "tool_use" => {
                let name = str_field(block, "name").unwrap_or_default();
                let input = block.get("input").cloned().unwrap_or(Value::Null);
                Some(AgentEvent::ToolCall {
                    id: str_field(block, "id").unwrap_or_default().to_owned(),
                    name: name.to_owned(),
                    summary: tool_call_summary(name, &input),
                })
            }
            // thinking, redacted_thinking, server tool blocks: not shown.
            _ => None,
        })
        .collect()
}

fn user(v: &Value) -> Vec<AgentEvent> {
    // User text (our own prompts, "[Request interrupted …]") is not agent output.
    content_blocks(v)
        .iter()
        .filter(|block| str_field(block, "type") == Some("tool_result"))
        .map(|block| AgentEvent::ToolResult {
            tool_use_id: str_field(block, "tool_use_id")
                .unwrap_or_default()
                .to_owned(),
            summary: tool_result_summary(block.get("content").unwrap_or(&Value::Null)),
            is_error: block
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
        .collect()
}

fn control_request(v: &Value) -> Result<Vec<AgentEvent>, String> {
    let request_id = str_field(v, "request_id").ok_or("control_request without request_id")?;
    let request = v.get("request").unwrap_or(&Value::Null);
    let subtype = str_field(request, "subtype").unwrap_or_default();
    if subtype != "can_use_tool" {
        // The CLI waits for an answer we cannot give (hooks and SDK MCP servers are
        // never registered), so the caller must hear about it.
        return Err(format!("unsupported control_request subtype {subtype:?}"));
    }
    let tool = str_field(request, "tool_name").ok_or("can_use_tool without tool_name")?;
    let input = request.get("input").cloned().unwrap_or_else(|| json!({}));
    let request_id = request_id.to_owned();
    Ok(vec![match tool {
        "AskUserQuestion" => AgentEvent::Question {
            request_id,
            questions: questions(&input),
            input,
        },
        "ExitPlanMode" => AgentEvent::Plan {
            request_id,
            plan: str_field(&input, "plan").unwrap_or_default().to_owned(),
            input,
        },
        _ => AgentEvent::Permission {
            request_id,
            tool: tool.to_owned(),
            input,
        },
    }])
}

fn questions(input: &Value) -> Vec<AgentQuestion> {
    let text = |v: &Value, key: &str| str_field(v, key).unwrap_or_default().to_owned();
    input
        .get("questions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|q| AgentQuestion {
            question: text(q, "question"),
            header: text(q, "header"),
            options: q
                .get("options")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|o| AgentOption {
                    label: text(o, "label"),
                    description: text(o, "description"),
                })
                .collect(),
            multi_select: q
                .get("multiSelect")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
        .collect()
}

fn result(v: &Value) -> AgentEvent {
    let subtype = str_field(v, "subtype");
    // `is_error` is authoritative: an interrupted turn can still say subtype "success"
    // in some versions, and an API error can come back with subtype "success".
    let is_error = v
        .get("is_error")
        .and_then(Value::as_bool)
        .unwrap_or(subtype != Some("success"));
    let result = str_field(v, "result").map(str::to_owned).or_else(|| {
        let errors: Vec<String> = v
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
            .collect();
        (!errors.is_empty()).then(|| errors.join("\n"))
    });
    let usage = v.get("usage").unwrap_or(&Value::Null);
    let tokens = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    AgentEvent::Finished {
        is_error,
        retryable: is_error && result.as_deref().is_some_and(is_transient_api_error),
        result,
        session_id: str_field(v, "session_id").map(str::to_owned),
        cost_usd: v
            .get("total_cost_usd")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        input_tokens: tokens("input_tokens")
            .saturating_add(tokens("cache_creation_input_tokens"))
            .saturating_add(tokens("cache_read_input_tokens")),
        output_tokens: tokens("output_tokens"),
    }
}

/// Whether a failed turn's `result` is Claude Code's report of a model API failure that
/// passes: `API Error: 529 …`, `API Error: Repeated 529 Overloaded errors …`, a 429, 408
/// or 5xx, `Connection error.`, `Request timed out.`. A refused key, a bad request or a
/// prompt too long are not: trying again would fail the same way.
pub fn is_transient_api_error(result: &str) -> bool {
    let Some(rest) = result.trim_start().strip_prefix("API Error") else {
        return false;
    };
    let rest = rest.trim_start_matches(':').trim_start();
    let rest = rest.strip_prefix("Repeated ").unwrap_or(rest);
    if let Some(code) = rest
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u16>().ok())
    {
        return matches!(code, 408 | 429 | 500..=599);
    }
    let lower = rest.to_ascii_lowercase();
    ["connection error", "timed out", "timeout", "overloaded"]
        .iter()
        .any(|w| lower.contains(w))
}

/// A one-line description of a tool call, e.g. `Edit src/lib.rs` or `Bash: cargo test`.
pub fn tool_call_summary(name: &str, input: &Value) -> String {
    let s = |key: &str| str_field(input, key);
    let summary = match name {
        "Read" | "Write" | "Edit" | "MultiEdit" => match s("file_path") {
            Some(path) => format!("{name} {path}"),
            None => name.to_owned(),
        },
        "NotebookEdit" => format!("{name} {}", s("notebook_path").unwrap_or_default()),
        "Bash" => format!("Bash: {}", s("command").unwrap_or_default()),
        "Grep" | "Glob" => match s("path") {
            Some(path) => format!("{name}: {} in {path}", s("pattern").unwrap_or_default()),
            None => format!("{name}: {}", s("pattern").unwrap_or_default()),
        },
        "WebFetch" => format!("WebFetch {}", s("url").unwrap_or_default()),
        "WebSearch" => format!("WebSearch: {}", s("query").unwrap_or_default()),
        "Task" | "Agent" => format!("{name}: {}", s("description").unwrap_or_default()),
        "TodoWrite" => {
            let n = input
                .get("todos")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            format!("TodoWrite: {n} items")
        }
        "AskUserQuestion" => {
            let first = input
                .get("questions")
                .and_then(|q| q.get(0))
                .and_then(|q| str_field(q, "question"))
                .unwrap_or_default();
            format!("AskUserQuestion: {first}")
        }
        "ExitPlanMode" => "ExitPlanMode".to_owned(),
        _ => match input {
            Value::Object(map) if map.is_empty() => name.to_owned(),
            Value::Null => name.to_owned(),
            other => format!("{name} {other}"),
        },
    };
    truncate_chars(&one_line(&summary), TOOL_CALL_SUMMARY_CHARS)
}

/// The text of a tool result's `content` (a string or content blocks), capped.
pub fn tool_result_summary(content: &Value) -> String {
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match str_field(b, "type") {
                Some("text") => str_field(b, "text").unwrap_or_default().to_owned(),
                Some("image") => "[image]".to_owned(),
                _ => b.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    truncate_bytes(&text, TOOL_RESULT_SUMMARY_BYTES)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary, saying how much was cut.
pub fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… [{} more bytes]", &s[..cut], s.len() - cut)
}

#[cfg(test)]
mod tests {
    #[test]
    fn transient_api_errors_are_told_from_lasting_ones() {
        use super::is_transient_api_error as transient;
        for passing in [
            "API Error: Repeated 529 Overloaded errors. The API is at capacity — this is usually temporary.",
            "API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}",
            "API Error: 500 {\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}",
            "API Error: 503 upstream connect error",
            "API Error: 429 {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\"}}",
            "API Error: 408 request timeout",
            "API Error: Connection error.",
            "API Error: Request timed out.",
            "  API Error (Overloaded)",
        ] {
            assert!(transient(passing), "{passing}");
        }
        for lasting in [
            "API Error: 401 {\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key\"}}",
            "API Error: 400 prompt is too long: 210000 tokens > 200000 maximum",
            "API Error: 403 forbidden",
            "API Error: 404 model not found",
            "Credit balance is too low",
            "aborted",
            "the tests failed: 500 assertions, connection error in fixture",
            "",
        ] {
            assert!(!transient(lasting), "{lasting}");
        }
    }

    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "é".repeat(10);
        let t = truncate_bytes(&s, 5);
        assert!(t.starts_with("éé…"), "{t}");
        assert_eq!(truncate_chars("abcdef", 3), "abc…");
        assert_eq!(truncate_chars("abc", 3), "abc");
    }

    #[test]
    fn args_follow_mode_and_session() {
        let a = claude_args(
            &SessionRef::Resume("s1".into()),
            AgentMode::Implement,
            Some("m"),
            None,
        );
        let joined = a.join(" ");
        assert!(joined.contains("--permission-mode acceptEdits --resume s1 --model m"));
        assert!(!joined.contains("--append-system-prompt"));
    }

    mod properties {
        use super::super::{control_response_line, parse_line, user_message_line};
        use crate::{AgentEvent, ControlReply};
        use proptest::prelude::*;
        use proptest::strategy::BoxedStrategy;
        use proptest::test_runner::TestCaseError;
        use serde_json::{Value, json};

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                "\\PC{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("type".to_owned()),
                            Just("subtype".to_owned()),
                            Just("message".to_owned()),
                            Just("content".to_owned()),
                            Just("request".to_owned()),
                            Just("input".to_owned()),
                            Just("name".to_owned()),
                            Just("id".to_owned()),
                            Just("tool_use_id".to_owned()),
                            Just("request_id".to_owned()),
                            Just("text".to_owned()),
                            "[a-z_]{1,10}",
                        ],
                        inner,
                        0..6,
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Real message types with arbitrary bodies: the shapes the parser dispatches on.
        fn agent_message() -> impl Strategy<Value = Value> {
            (
                prop_oneof![
                    Just("system"),
                    Just("assistant"),
                    Just("user"),
                    Just("result"),
                    Just("control_request"),
                    Just("control_response"),
                    Just("stream_event"),
                ],
                json_value(),
                json_value(),
            )
                .prop_map(|(t, a, b)| {
                    json!({"type": t, "subtype": "init", "message": {"content": a}, "request": b,
                           "session_id": "s", "request_id": "r"})
                })
        }

        /// A string field as the CLI might send it, or not: present, absent, mistyped.
        fn maybe(strings: impl Strategy<Value = String>) -> impl Strategy<Value = Option<Value>> {
            prop_oneof![
                6 => strings.prop_map(|s| Some(Value::String(s))),
                1 => Just(None),
                1 => json_value().prop_map(Some),
            ]
        }

        /// Ids and names with what breaks line protocols: newlines, quotes, backslashes,
        /// line separators, control characters, astral characters.
        fn awkward_string() -> impl Strategy<Value = String> {
            prop_oneof![
                "\\PC{0,40}",
                any::<String>(),
                "[\\n\\r\"\\\\\u{2028}\u{2029}\u{0}\u{1b}\u{7f}a-z😀]{0,12}",
            ]
        }

        /// One `AskUserQuestion` question, each field right, wrong or missing; `long`
        /// allows a question text of up to 100 KB.
        fn question(long: bool) -> impl Strategy<Value = Value> {
            let longest: usize = if long { 100_000 } else { 2 };
            let option = (maybe("\\PC{0,12}"), maybe("\\PC{0,12}")).prop_map(|(l, d)| {
                let mut o = serde_json::Map::new();
                o.extend(l.map(|l| ("label".to_owned(), l)));
                o.extend(d.map(|d| ("description".to_owned(), d)));
                Value::Object(o)
            });
            (
                maybe(prop_oneof![
                    "\\PC{0,40}",
                    (1..longest).prop_map(|n| "?".repeat(n))
                ]),
                maybe("\\PC{0,12}"),
                prop_oneof![
                    3 => prop::collection::vec(option, 0..5).prop_map(|o| Some(Value::Array(o))),
                    1 => Just(None),
                    1 => json_value().prop_map(Some),
                ],
                prop_oneof![
                    Just(None),
                    any::<bool>().prop_map(|b| Some(json!(b))),
                    json_value().prop_map(Some)
                ],
            )
                .prop_map(|(question, header, options, multi)| {
                    let mut q = serde_json::Map::new();
                    q.extend(question.map(|v| ("question".to_owned(), v)));
                    q.extend(header.map(|v| ("header".to_owned(), v)));
                    q.extend(options.map(|v| ("options".to_owned(), v)));
                    q.extend(multi.map(|v| ("multiSelect".to_owned(), v)));
                    Value::Object(q)
                })
        }

        /// The `input` of a `can_use_tool` request for `tool`: shaped like the real
        /// one for the tools we interpret, but malformed, missing or oversized at will.
        fn tool_input(tool: Option<&Value>) -> BoxedStrategy<Option<Value>> {
            let shaped = match tool.and_then(Value::as_str) {
                Some("AskUserQuestion") => prop_oneof![
                    3 => prop::collection::vec(question(true), 0..6).prop_map(Value::Array),
                    // Far more questions than any form shows.
                    1 => (question(false), 100..2_000usize)
                        .prop_map(|(q, n)| Value::Array(vec![q; n])),
                    1 => json_value(),
                ]
                .prop_map(|questions| json!({"questions": questions}))
                .boxed(),
                Some("ExitPlanMode") => {
                    prop_oneof!["\\PC{0,80}".prop_map(Value::String), json_value(),]
                        .prop_map(|plan| json!({"plan": plan}))
                        .boxed()
                }
                _ => json_value().boxed(),
            };
            prop_oneof![
                5 => shaped.prop_map(Some),
                1 => Just(None),
                1 => Just(Some(Value::Null)),
                1 => json_value().prop_map(Some),
            ]
            .boxed()
        }

        /// A `control_request` line's parts: request id, subtype, tool name, input.
        type ControlRequest = (Option<Value>, Option<Value>, Option<Value>, Option<Value>);

        fn control_request() -> impl Strategy<Value = ControlRequest> {
            let subtype = maybe(prop_oneof![
                6 => Just("can_use_tool".to_owned()),
                1 => Just("hook_callback".to_owned()),
                1 => Just("mcp_message".to_owned()),
                1 => "\\PC{0,16}",
            ]);
            let tool = maybe(prop_oneof![
                Just("AskUserQuestion".to_owned()),
                Just("ExitPlanMode".to_owned()),
                Just("Bash".to_owned()),
                awkward_string(),
            ]);
            (maybe(awkward_string()), subtype, tool).prop_flat_map(|(id, subtype, tool)| {
                let input = tool_input(tool.as_ref());
                (Just(id), Just(subtype), Just(tool), input)
            })
        }

        fn line_of((id, subtype, tool, input): &ControlRequest) -> String {
            let mut request = serde_json::Map::new();
            request.extend(subtype.clone().map(|v| ("subtype".to_owned(), v)));
            request.extend(tool.clone().map(|v| ("tool_name".to_owned(), v)));
            request.extend(input.clone().map(|v| ("input".to_owned(), v)));
            let mut line = serde_json::Map::new();
            line.insert("type".to_owned(), json!("control_request"));
            line.extend(id.clone().map(|v| ("request_id".to_owned(), v)));
            line.insert("request".to_owned(), Value::Object(request));
            Value::Object(line).to_string()
        }

        fn reply() -> impl Strategy<Value = ControlReply> {
            prop_oneof![
                json_value().prop_map(|updated_input| ControlReply::Allow { updated_input }),
                (awkward_string(), any::<bool>())
                    .prop_map(|(message, interrupt)| ControlReply::Deny { message, interrupt }),
            ]
        }

        /// Checks a line we write: one line of JSON, a successful control response to
        /// `request_id` carrying `reply`.
        fn assert_response(
            line: &str,
            request_id: &str,
            reply: &ControlReply,
        ) -> Result<(), TestCaseError> {
            prop_assert!(!line.contains(['\n', '\r']), "more than one line: {line:?}");
            let v: Value = serde_json::from_str(line)
                .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {line}")))?;
            prop_assert_eq!(&v["type"], "control_response");
            prop_assert_eq!(&v["response"]["subtype"], "success");
            prop_assert_eq!(v["response"]["request_id"].as_str(), Some(request_id));
            let response = &v["response"]["response"];
            match reply {
                ControlReply::Allow { updated_input } => {
                    prop_assert_eq!(&response["behavior"], "allow");
                    prop_assert_eq!(&response["updatedInput"], updated_input);
                }
                ControlReply::Deny { message, interrupt } => {
                    prop_assert_eq!(&response["behavior"], "deny");
                    prop_assert_eq!(response["message"].as_str(), Some(message.as_str()));
                    prop_assert_eq!(response["interrupt"].as_bool(), Some(*interrupt));
                }
            }
            Ok(())
        }

        fn check_one_event(request: &ControlRequest) -> Result<(), TestCaseError> {
            let events = parse_line(&line_of(request));
            prop_assert_eq!(events.len(), 1, "{:?}", events);
            let (id, subtype, tool, input) = request;
            let answerable = (
                id.as_ref().and_then(Value::as_str),
                subtype.as_ref().and_then(Value::as_str) == Some("can_use_tool"),
                tool.as_ref().and_then(Value::as_str),
            );
            let sent = input.clone().unwrap_or_else(|| json!({}));
            match (answerable, &events[0]) {
                (
                    (Some(id), true, Some("AskUserQuestion")),
                    AgentEvent::Question {
                        request_id,
                        questions,
                        input,
                    },
                ) => {
                    prop_assert_eq!(request_id, id);
                    prop_assert_eq!(input, &sent);
                    let asked = sent["questions"].as_array().cloned().unwrap_or_default();
                    prop_assert_eq!(questions.len(), asked.len());
                    for (got, asked) in questions.iter().zip(&asked) {
                        let text = asked["question"].as_str().unwrap_or_default();
                        prop_assert_eq!(got.question.as_str(), text);
                        prop_assert_eq!(got.multi_select, asked["multiSelect"] == json!(true));
                        let options = asked["options"].as_array().map_or(0, Vec::len);
                        prop_assert_eq!(got.options.len(), options);
                    }
                }
                (
                    (Some(id), true, Some("ExitPlanMode")),
                    AgentEvent::Plan {
                        request_id,
                        plan,
                        input,
                    },
                ) => {
                    prop_assert_eq!(request_id, id);
                    prop_assert_eq!(input, &sent);
                    let want = sent["plan"].as_str().unwrap_or_default();
                    prop_assert_eq!(plan.as_str(), want);
                }
                (
                    (Some(id), true, Some(name)),
                    AgentEvent::Permission {
                        request_id,
                        tool,
                        input,
                    },
                ) if name != "AskUserQuestion" && name != "ExitPlanMode" => {
                    prop_assert_eq!(request_id, id);
                    prop_assert_eq!(tool, name);
                    prop_assert_eq!(input, &sent);
                }
                (
                    (None, _, _) | (_, false, _) | (_, _, None),
                    AgentEvent::Malformed { line: seen, .. },
                ) => prop_assert!(!seen.is_empty()),
                (want, got) => prop_assert!(false, "{:?} became {:?}", want, got),
            }
            Ok(())
        }

        fn check_round_trip(
            request: &ControlRequest,
            reply: &ControlReply,
        ) -> Result<(), TestCaseError> {
            let sent_id = request.0.as_ref().and_then(Value::as_str);
            for event in parse_line(&line_of(request)) {
                if let AgentEvent::Question { request_id, .. }
                | AgentEvent::Plan { request_id, .. }
                | AgentEvent::Permission { request_id, .. } = &event
                {
                    prop_assert_eq!(Some(request_id.as_str()), sent_id);
                    let line = control_response_line(request_id, reply);
                    assert_response(&line, request_id, reply)?;
                }
            }
            Ok(())
        }

        fn check_answers(
            input: &Value,
            answers: &std::collections::BTreeMap<String, String>,
            request_id: &str,
        ) -> Result<(), TestCaseError> {
            let reply = ControlReply::answers(input, answers);
            let ControlReply::Allow { updated_input } = &reply else {
                return Err(TestCaseError::fail("answers must allow"));
            };
            let Value::Object(updated) = updated_input else {
                return Err(TestCaseError::fail(format!(
                    "not an object: {updated_input}"
                )));
            };
            let want: serde_json::Map<String, Value> =
                answers.iter().map(|(q, a)| (q.clone(), json!(a))).collect();
            prop_assert_eq!(&updated["answers"], &Value::Object(want));
            let kept = input.as_object().cloned().unwrap_or_default();
            let added = usize::from(!kept.contains_key("answers"));
            prop_assert_eq!(updated.len(), kept.len() + added);
            for (k, v) in kept.iter().filter(|(k, _)| *k != "answers") {
                prop_assert_eq!(updated.get(k), Some(v));
            }
            let line = control_response_line(request_id, &reply);
            assert_response(&line, request_id, &reply)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Every control request is one event: the one its tool calls for, with the
            /// request id and input exactly as sent, or, when it cannot be answered
            /// (no id, not `can_use_tool`, no tool name), `Malformed` so the caller
            /// hears of a CLI left waiting.
            #[test]
            fn control_requests_become_one_event_with_their_id(request in control_request()) {
                check_one_event(&request)?;
            }

            /// Whatever the request id, the reply line echoes it in one line of JSON.
            #[test]
            fn control_responses_are_one_json_line_echoing_the_id(
                request_id in awkward_string(),
                reply in reply(),
            ) {
                let line = control_response_line(&request_id, &reply);
                assert_response(&line, &request_id, &reply)?;
            }

            /// From the CLI's line to ours: the id read is the id written back.
            #[test]
            fn a_parsed_request_is_answered_under_its_own_id(
                request in control_request(),
                reply in reply(),
            ) {
                check_round_trip(&request, &reply)?;
            }

            /// Answers go in beside the agent's own input, whatever that input is, and
            /// come out of the reply line exactly.
            #[test]
            fn answers_keep_the_input_and_add_exactly_the_answers(
                input in json_value(),
                answers in prop::collection::btree_map(awkward_string(), awkward_string(), 0..6),
                request_id in awkward_string(),
            ) {
                check_answers(&input, &answers, &request_id)?;
            }

            /// The other lines we write are single JSON lines too.
            #[test]
            fn user_messages_are_one_json_line(text in awkward_string()) {
                let line = user_message_line(&text);
                prop_assert!(!line.contains(['\n', '\r']));
                let v: Value = serde_json::from_str(&line)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(v["message"]["content"].as_str(), Some(text.as_str()));
            }
        }

        proptest! {
            #[test]
            fn garbage_lines_never_panic(line in "\\PC{0,300}") {
                let _ = parse_line(&line);
            }

            #[test]
            fn arbitrary_json_never_panics(v in json_value()) {
                let _ = parse_line(&v.to_string());
            }

            #[test]
            fn message_shaped_json_never_panics(v in agent_message()) {
                let _ = parse_line(&v.to_string());
            }
        }
    }
}

//! Claude Code's stream-json protocol as pure functions: [`parse_line`] turns one stdout
//! line into [`AgentEvent`]s, and the `*_line` functions build the lines we write to
//! stdin. No I/O here, so recorded lines are enough to test it.

use serde_json::{Value, json};

use crate::{
    AgentEvent, AgentFailure, AgentMode, AgentOption, AgentQuestion, ControlReply, QuotaReport,
    SessionRef, TurnEnd,
};

/// Longest `ToolCall::summary`, in characters.
pub const TOOL_CALL_SUMMARY_CHARS: usize = 200;
/// Longest `ToolResult::summary`, in bytes (cut at a character boundary).
pub const TOOL_RESULT_SUMMARY_BYTES: usize = 2048;
/// Longest `Malformed::line`, in bytes: the line is evidence, not payload.
pub const MALFORMED_LINE_BYTES: usize = 2048;

/// What the CLI says when `--resume` names a session it never saved.
const NO_SESSION: &str = "No conversation found with session ID";

/// What the CLI says when `--session-id` names a session it already saved.
const SESSION_IN_USE: &str = "is already in use";

/// The request id of the `initialize` request sent at start.
pub const INITIALIZE_REQUEST_ID: &str = "init-1";

/// The flags that make the CLI read and write stream-json lines, headless.
pub const STREAM_JSON_FLAGS: [&str; 6] = [
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
];

/// The flags after the command itself, in the order the CLI documents them.
pub fn claude_args(
    session: &SessionRef,
    mode: AgentMode,
    model: Option<&str>,
    append_system_prompt: Option<&str>,
) -> Vec<String> {
    let mut args: Vec<String> = STREAM_JSON_FLAGS
        .into_iter()
        .chain(["--permission-prompt-tool", "stdio", "--permission-mode"])
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

/// Parses one stdout line of `claude --output-format stream-json --verbose` on its own;
/// a session's lines are read with a [`LineParser`], which also knows the lines before.
///
/// Lenient by design, because the CLI changes often: unknown line types and unknown
/// content blocks yield nothing; only a line that is not a JSON object, or a known type
/// missing what we need to act on, yields [`AgentEvent::Malformed`]. Never panics.
pub fn parse_line(line: &str) -> Vec<AgentEvent> {
    LineParser::default().parse(line)
}

/// What a rate-limit notice of Claude Code (`rate_limit_info`, in a `rate_limit_event`
/// or a refused reply's `api_error_params`) says: `Some(reset)` when it refuses
/// requests, `reset` being `resetsAt` (Unix seconds) when given; `None` when it only
/// reports usage (`allowed`, `allowed_warning`).
#[must_use]
pub fn rejected_until(info: &Value) -> Option<Option<u64>> {
    (str_field(info, "status") == Some("rejected"))
        .then(|| info.get("resetsAt").and_then(Value::as_u64))
}

/// The quota windows a rate-limit notice of Claude Code (`rate_limit_info`) reports:
/// each of `unifiedWindows` (keyed by window, `utilization` 0 to 1) when given, else the
/// one window the notice is about (`rateLimitType`); none when it names no window.
///
/// Claude Code 2.1.330 sends a notice only on a subscription (OAuth), and not only when
/// it refuses: when the API's reply carries `anthropic-ratelimit-unified-*` headers
/// with status `allowed`, a notice with status `allowed` and the windows of the
/// `-5h-`/`-7d-` headers follows the reply, before the `result` line, whenever the
/// numbers changed since the last one. On an API key it sends none.
#[must_use]
pub fn quota_reports(info: &Value) -> Vec<QuotaReport> {
    let rejected = |v: &Value| str_field(v, "status") == Some("rejected");
    let report = |window: &str, v: &Value, limited: bool| QuotaReport {
        window: window.to_owned(),
        used_percent: v
            .get("utilization")
            .and_then(Value::as_f64)
            .filter(|u| u.is_finite())
            .map(|u| u * 100.0),
        resets_at: v.get("resetsAt").and_then(unix_seconds),
        limited,
    };
    let named = str_field(info, "rateLimitType");
    if let Some(windows) = info.get("unifiedWindows").and_then(Value::as_object) {
        let mut reports: Vec<QuotaReport> = windows
            .iter()
            .filter(|(_, w)| w.is_object())
            .map(|(name, w)| {
                let limited = rejected(w) || (rejected(info) && named == Some(name.as_str()));
                report(name, w, limited)
            })
            .collect();
        // In name order, whatever order the JSON map keeps.
        reports.sort_by(|a, b| a.window.cmp(&b.window));
        return reports;
    }
    named
        .map(|name| report(name, info, rejected(info)))
        .into_iter()
        .collect()
}

/// A time in Unix seconds, written as an integer or as a number with a fraction.
fn unix_seconds(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        let secs = v.as_f64().filter(|s| s.is_finite() && *s >= 0.0)?;
        // `as` saturates; no reset time comes near u64::MAX.
        Some(secs.round() as u64)
    })
}

/// Reads one session's stdout lines in order. What a failed turn's `result` means can
/// depend on the lines before it in the same turn: a rejected `rate_limit_event` gives
/// the reset time the `result` does not carry, and an `api_retry` for a 429 says the
/// limit was one the CLI expected to pass.
#[derive(Debug, Default)]
pub struct LineParser {
    /// `resetsAt` of the last rejected rate-limit notice of this turn.
    rejected_until: Option<u64>,
    /// The CLI retried a 429 since the model last answered.
    retried_429: bool,
}

impl LineParser {
    pub fn parse(&mut self, line: &str) -> Vec<AgentEvent> {
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
            "system" => {
                if str_field(&value, "subtype") == Some("api_retry")
                    && value.get("error_status").and_then(Value::as_u64) == Some(429)
                {
                    self.retried_429 = true;
                }
                system(&value)
            }
            "assistant" => {
                if value.get("is_api_error_message").and_then(Value::as_bool) == Some(true) {
                    let info = value.pointer("/api_error_params/rate_limit_info");
                    self.note_rate_limit(info);
                } else {
                    self.retried_429 = false;
                }
                Ok(assistant(&value))
            }
            "user" => Ok(user(&value)),
            "control_request" => control_request(&value),
            "rate_limit_event" => {
                let info = value.get("rate_limit_info");
                self.note_rate_limit(info);
                let windows = info.map(quota_reports).unwrap_or_default();
                Ok(if windows.is_empty() {
                    Vec::new()
                } else {
                    vec![AgentEvent::Quota { windows }]
                })
            }
            "result" => {
                let event = result(&value, self);
                *self = Self::default();
                Ok(vec![event])
            }
            // Acknowledges our `initialize`; its payload (commands, models) is not needed.
            "control_response" => Ok(Vec::new()),
            // stream_event (partial messages), control_cancel_request, and whatever later
            // CLI versions add.
            _ => Ok(Vec::new()),
        };
        parsed.unwrap_or_else(|error| vec![malformed(line, error)])
    }

    /// Keeps the reset time of a rate-limit notice that refuses requests (`allowed` and
    /// `allowed_warning` notices only report usage).
    fn note_rate_limit(&mut self, info: Option<&Value>) {
        if let Some(until) = info.and_then(rejected_until) {
            self.rejected_until = until.or(self.rejected_until);
        }
    }

    /// The failure a failed `result` line reports when the API refused the turn for a
    /// limit; None for other failures. Decided on `api_error` and `api_error_status`:
    /// `subtype` stays "success" on these errors.
    ///
    /// - On a subscription the CLI names the usage limit (`api_error:
    ///   "usage_limit_reached"`) after a rejected `rate_limit_event` carrying `resetsAt`.
    /// - On an API key the same refusal (a 429 whose `anthropic-ratelimit-unified-status`
    ///   is `rejected`) is a bare 429 that the CLI does not retry: no `api_retry` line
    ///   comes before it, and nothing says when it resets.
    /// - A 429 the CLI did retry (a per-minute rate limit, `retry-after` of seconds) and
    ///   gave up on looks the same at the end, but passes: the model is unavailable for
    ///   now, as for a 5xx.
    fn limit_failure(&self, v: &Value, reason: &str) -> Option<AgentFailure> {
        let status = v.get("api_error_status").and_then(Value::as_u64);
        let usage_limit = str_field(v, "api_error") == Some("usage_limit_reached");
        if usage_limit || (status == Some(429) && !self.retried_429) {
            return Some(AgentFailure::UsageLimit {
                resets_at: self.rejected_until,
                reason: reason.to_owned(),
            });
        }
        (status == Some(429)).then(|| AgentFailure::ModelUnavailable {
            reason: reason.to_owned(),
        })
    }
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
            options: AgentOption::list_from(q),
            multi_select: q
                .get("multiSelect")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
        .collect()
}

fn result(v: &Value, turn: &LineParser) -> AgentEvent {
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
    let limit = is_error
        .then(|| turn.limit_failure(v, result.as_deref().unwrap_or_default()))
        .flatten();
    AgentEvent::Finished {
        end: limit.map_or_else(
            || turn_end(is_error, result.as_deref()),
            |failure| TurnEnd::Failed { failure },
        ),
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

/// How a turn whose `result` line says `is_error` and `result` ended.
pub fn turn_end(is_error: bool, result: Option<&str>) -> TurnEnd {
    if !is_error {
        return TurnEnd::Done;
    }
    let reason = result.unwrap_or_default();
    let failure = if reason.contains(NO_SESSION) {
        AgentFailure::SessionMissing
    } else if is_transient_api_error(reason) {
        AgentFailure::ModelUnavailable {
            reason: reason.to_owned(),
        }
    } else {
        AgentFailure::Other {
            reason: reason.to_owned(),
        }
    };
    TurnEnd::Failed { failure }
}

/// What went wrong when the CLI exited with `code`, having written `stderr_tail`; None
/// for a clean exit.
pub fn exit_failure(code: Option<i32>, stderr_tail: &[String]) -> Option<AgentFailure> {
    if stderr_tail.iter().any(|l| l.contains(SESSION_IN_USE)) {
        return Some(AgentFailure::SessionInUse);
    }
    if code == Some(0) {
        return None;
    }
    Some(AgentFailure::Other {
        reason: stderr_tail.join("\n"),
    })
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
mod limit_tests;
#[cfg(test)]
mod tests;

//! Codex's thread items (commands, file changes, MCP calls), questions and failures in
//! the port's vocabulary: the tool names the worker's policy and the activity view
//! already read (`Bash`, `Write`, `Edit`), one-line summaries, paths made relative for
//! people and absolute for the policy. Pure.

use std::path::{Component, Path, PathBuf};

use mainloop_agent::protocol::{TOOL_RESULT_SUMMARY_BYTES, tool_call_summary, truncate_bytes};
use mainloop_agent::{
    AgentEvent, AgentFailure, AgentOption, AgentQuestion, ControlReply, QuotaReport,
};
use serde_json::{Value, json};

/// One file of a `fileChange` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// As Codex reports it: absolute in practice.
    pub path: String,
    /// `add`, `update` or `delete`.
    pub kind: String,
}

impl Change {
    /// The port's tool name: a new file is written, anything else is edited.
    #[must_use]
    pub fn tool(&self) -> &'static str {
        if self.kind == "add" { "Write" } else { "Edit" }
    }
}

/// What is remembered of an item between its start, its approval and its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Command { command: String },
    Files { changes: Vec<Change> },
}

pub(crate) fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The command a person typed, without the login-shell wrapper Codex runs it in:
/// `/bin/bash -lc 'npm test'` reads `npm test`.
#[must_use]
pub fn unwrap_shell(command: &str) -> String {
    let inner = [
        "/bin/bash -lc ",
        "bash -lc ",
        "/bin/sh -c ",
        "sh -c ",
        "/bin/zsh -lc ",
    ]
    .iter()
    .find_map(|p| command.strip_prefix(p));
    let Some(inner) = inner else {
        return command.to_owned();
    };
    match inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        Some(quoted) if !quoted.contains('\'') => quoted.to_owned(),
        // A quote inside needs the shell's rules to undo; the wrapped form is still exact.
        Some(_) => command.to_owned(),
        None => inner.to_owned(),
    }
}

/// The command of a `commandExecution` item or approval: a string, or an argv array
/// (the legacy approval requests).
#[must_use]
pub fn command_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(unwrap_shell(s)),
        Value::Array(argv) => {
            let words: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
            match words.as_slice() {
                [shell, flag, script] if shell.ends_with("sh") && flag.ends_with('c') => {
                    Some((*script).to_owned())
                }
                _ => Some(words.join(" ")),
            }
        }
        _ => None,
    }
}

/// The changes of a `fileChange` item (`changes: [{path, kind: {type}}]`).
#[must_use]
pub fn changes_of(item: &Value) -> Vec<Change> {
    item.get("changes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let path = str_field(c, "path")?.to_owned();
            let kind = match c.get("kind") {
                Some(Value::String(k)) => k.clone(),
                Some(k) => str_field(k, "type").unwrap_or("update").to_owned(),
                None => "update".to_owned(),
            };
            Some(Change { path, kind })
        })
        .collect()
}

/// The changes of a legacy `applyPatchApproval` (`fileChanges: {path: {type}}`).
#[must_use]
pub fn legacy_changes(params: &Value) -> Vec<Change> {
    params
        .get("fileChanges")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(path, c)| Change {
            path: path.clone(),
            kind: str_field(c, "type").unwrap_or("update").to_owned(),
        })
        .collect()
}

/// Lexically normalises `path` against `base`, as the worker's policy does.
fn normalise(base: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to `cwd` when it lies inside it, for people to read.
#[must_use]
pub fn display_path(cwd: &Path, path: &str) -> String {
    let full = normalise(cwd, Path::new(path));
    full.strip_prefix(cwd).map_or_else(
        |_| full.display().to_string(),
        |rel| rel.display().to_string(),
    )
}

/// The input of a file-write permission: `file_path` is the one path the policy
/// checks, so it is the first that leaves `cwd` when any does (one patch may touch
/// several files, and one answer covers them all); `files` lists every path.
#[must_use]
pub fn write_permission_input(cwd: &Path, changes: &[Change], grant_root: Option<&str>) -> Value {
    let mut files: Vec<String> = changes
        .iter()
        .map(|c| normalise(cwd, Path::new(&c.path)).display().to_string())
        .collect();
    if let Some(root) = grant_root {
        files.push(normalise(cwd, Path::new(root)).display().to_string());
    }
    let checked = files
        .iter()
        .find(|f| !Path::new(f).starts_with(cwd))
        .or_else(|| files.first());
    match checked {
        Some(path) => json!({"file_path": path, "files": files}),
        // No file known: the policy refuses an edit that names none.
        None => json!({"files": files}),
    }
}

/// The id of the `index`th file's tool call within one `fileChange` item.
fn file_call_id(item_id: &str, index: usize) -> String {
    if index == 0 {
        item_id.to_owned()
    } else {
        format!("{item_id}/{index}")
    }
}

/// The tool calls an `item/started` shows, and what to remember of the item.
#[must_use]
pub fn started(cwd: &Path, item: &Value) -> (Vec<AgentEvent>, Option<Item>) {
    let id = str_field(item, "id").unwrap_or_default();
    match str_field(item, "type").unwrap_or_default() {
        "commandExecution" => {
            let command = command_text(item.get("command")).unwrap_or_default();
            let call = AgentEvent::ToolCall {
                id: id.to_owned(),
                name: "Bash".to_owned(),
                summary: tool_call_summary("Bash", &json!({"command": command})),
            };
            (vec![call], Some(Item::Command { command }))
        }
        "fileChange" => {
            let changes = changes_of(item);
            let calls = changes
                .iter()
                .enumerate()
                .map(|(i, c)| AgentEvent::ToolCall {
                    id: file_call_id(id, i),
                    name: c.tool().to_owned(),
                    summary: tool_call_summary(
                        c.tool(),
                        &json!({"file_path": display_path(cwd, &c.path)}),
                    ),
                })
                .collect();
            (calls, Some(Item::Files { changes }))
        }
        "mcpToolCall" => {
            let name = mcp_name(item);
            let args = item.get("arguments").cloned().unwrap_or(Value::Null);
            let summary = tool_call_summary(&name, &args);
            (
                vec![AgentEvent::ToolCall {
                    id: id.to_owned(),
                    name,
                    summary,
                }],
                None,
            )
        }
        // userMessage, agentMessage (its text comes complete), reasoning, plan, web
        // searches and the rest are not tool calls.
        _ => (Vec::new(), None),
    }
}

fn mcp_name(item: &Value) -> String {
    format!(
        "mcp__{}__{}",
        str_field(item, "server").unwrap_or_default(),
        str_field(item, "tool").unwrap_or_default()
    )
}

/// Whether a finished item's `status` says it did not do its work.
fn failed_status(item: &Value) -> bool {
    matches!(str_field(item, "status"), Some("failed" | "declined"))
}

/// The tool results (or text) an `item/completed` shows.
#[must_use]
pub fn completed(cwd: &Path, item: &Value, remembered: Option<&Item>) -> Vec<AgentEvent> {
    let id = str_field(item, "id").unwrap_or_default();
    match str_field(item, "type").unwrap_or_default() {
        "agentMessage" => match str_field(item, "text") {
            Some(text) if !text.trim().is_empty() => vec![AgentEvent::Text {
                text: text.to_owned(),
            }],
            _ => Vec::new(),
        },
        "commandExecution" => {
            let code = item.get("exitCode").and_then(Value::as_i64);
            let output = str_field(item, "aggregatedOutput").unwrap_or_default();
            let summary = match (output.is_empty(), str_field(item, "status")) {
                (true, Some("declined")) => "declined".to_owned(),
                _ => truncate_bytes(output, TOOL_RESULT_SUMMARY_BYTES),
            };
            vec![AgentEvent::ToolResult {
                tool_use_id: id.to_owned(),
                summary,
                is_error: code.is_some_and(|c| c != 0) || failed_status(item),
            }]
        }
        "fileChange" => {
            let mut changes = changes_of(item);
            if changes.is_empty()
                && let Some(Item::Files { changes: known }) = remembered
            {
                changes.clone_from(known);
            }
            let status = str_field(item, "status").unwrap_or("completed");
            changes
                .iter()
                .enumerate()
                .map(|(i, c)| AgentEvent::ToolResult {
                    tool_use_id: file_call_id(id, i),
                    summary: format!("{status}: {}", display_path(cwd, &c.path)),
                    is_error: failed_status(item),
                })
                .collect()
        }
        "mcpToolCall" => {
            let result = item
                .get("error")
                .filter(|e| !e.is_null())
                .or_else(|| item.get("result"))
                .map(|r| r.as_str().map_or_else(|| r.to_string(), str::to_owned))
                .unwrap_or_default();
            vec![AgentEvent::ToolResult {
                tool_use_id: id.to_owned(),
                summary: truncate_bytes(&result, TOOL_RESULT_SUMMARY_BYTES),
                is_error: failed_status(item),
            }]
        }
        _ => Vec::new(),
    }
}

/// The questions of a `request_user_input`, and their ids by question text.
pub fn questions_of(params: &Value) -> (Vec<AgentQuestion>, Vec<(String, String)>) {
    let text = |v: &Value, key: &str| str_field(v, key).unwrap_or_default().to_owned();
    params
        .get("questions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|q| {
            let question = AgentQuestion {
                question: text(q, "question"),
                header: text(q, "header"),
                options: AgentOption::list_from(q),
                multi_select: false,
            };
            let id = (text(q, "question"), text(q, "id"));
            (question, id)
        })
        .unzip()
}

/// The `request_user_input` answer: `ControlReply::answers` keys them by question
/// text, Codex by question id. A refusal answers nothing.
pub fn answers(ids: &[(String, String)], reply: &ControlReply) -> Value {
    let given = match reply {
        ControlReply::Allow { updated_input } => updated_input.get("answers"),
        ControlReply::Deny { .. } => None,
    };
    let answers: serde_json::Map<String, Value> = ids
        .iter()
        .filter_map(|(text, id)| {
            let answer = given?.get(text)?.as_str()?;
            Some((id.clone(), json!({"answers": [answer]})))
        })
        .collect();
    json!({"answers": answers})
}

/// The HTTP status anywhere in a `codexErrorInfo` (`{"variant": {"httpStatusCode": n}}`).
fn http_status(info: &Value) -> Option<u64> {
    match info {
        Value::Object(map) => map
            .get("httpStatusCode")
            .and_then(Value::as_u64)
            .or_else(|| map.values().find_map(http_status)),
        _ => None,
    }
}

/// Why a turn failed, from its `{message, codexErrorInfo}`: a 408, 429 or 5xx, a lost
/// connection, an overloaded server or a rate limit pass, so the thread may be resumed
/// later; a spent usage limit (`usageLimitExceeded`, Codex's name for a 429
/// `usage_limit_reached`, an exhausted quota or a plan without Codex) waits for its
/// reset, `limited_until` (see [`exhausted_until`]); anything else is the agent's own
/// failure.
#[must_use]
pub fn failure_of(error: Option<&Value>, limited_until: Option<u64>) -> AgentFailure {
    let message = error
        .and_then(|e| str_field(e, "message"))
        .unwrap_or_default()
        .to_owned();
    let info = error.and_then(|e| e.get("codexErrorInfo"));
    let name = match info {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(map)) => map.keys().next().map_or("", String::as_str),
        _ => "",
    };
    if name == "usageLimitExceeded" {
        return AgentFailure::UsageLimit {
            resets_at: limited_until,
            reason: message,
        };
    }
    let transient = info.and_then(http_status).map_or_else(
        || {
            matches!(
                name,
                "serverOverloaded"
                    | "internalServerError"
                    | "rateLimitExceeded"
                    | "httpConnectionFailed"
                    | "responseStreamConnectionFailed"
                    | "responseStreamDisconnected"
                    | "responseTooManyFailedAttempts"
            )
        },
        |status| matches!(status, 408 | 429 | 500..=599),
    );
    if transient {
        AgentFailure::ModelUnavailable { reason: message }
    } else {
        AgentFailure::Other { reason: message }
    }
}

/// When the account can work again, from the `rateLimits` of an
/// `account/rateLimits/updated` notification: the latest `resetsAt` of its windows
/// (5-hour `primary`, weekly `secondary`) that are used up; None while none is. Codex
/// sends one from the headers of the 429 that refused the turn, before the error.
#[must_use]
pub fn exhausted_until(rate_limits: &Value) -> Option<u64> {
    ["primary", "secondary"]
        .iter()
        .filter_map(|w| rate_limits.get(*w))
        .filter(|w| w.get("usedPercent").and_then(Value::as_f64) >= Some(100.0))
        .filter_map(|w| w.get("resetsAt").and_then(Value::as_u64))
        .max()
}

/// The quota windows of the `rateLimits` of an `account/rateLimits/updated`
/// notification: `primary` and `secondary`, named by their length (`five_hour`,
/// `seven_day`, else `<n>_minutes`, or the slot's own name when Codex gives none), and
/// prefixed `<limitId>/` for a bucket other than Codex's own. A window is limited once
/// used up; `rateLimitReachedType` names a kind of limit (`rate_limit_reached`, a
/// workspace's credits or usage limit), not a window, so it marks none.
#[must_use]
pub fn quota_of(rate_limits: &Value) -> Vec<QuotaReport> {
    let bucket = str_field(rate_limits, "limitId")
        .filter(|id| *id != "codex" && !id.is_empty())
        .map(|id| format!("{id}/"))
        .unwrap_or_default();
    ["primary", "secondary"]
        .iter()
        .filter_map(|slot| Some((*slot, rate_limits.get(*slot).filter(|w| w.is_object())?)))
        .map(|(slot, w)| {
            let used = w
                .get("usedPercent")
                .and_then(Value::as_f64)
                .filter(|p| p.is_finite());
            let name = match w.get("windowDurationMins").and_then(Value::as_u64) {
                Some(300) => "five_hour".to_owned(),
                Some(10_080) => "seven_day".to_owned(),
                Some(mins) => format!("{mins}_minutes"),
                None => slot.to_owned(),
            };
            QuotaReport {
                window: format!("{bucket}{name}"),
                used_percent: used,
                resets_at: w.get("resetsAt").and_then(Value::as_u64),
                limited: used.is_some_and(|p| p >= 100.0),
            }
        })
        .collect()
}

//! Claude Code's stream-json as the main thread reads it, as pure functions: the
//! command line (no built-in tools, only mainloop's MCP server), the MCP config, and
//! each output line turned into what the engine stores — text deltas, whole messages in
//! the Messages API's shapes, the turn's end with its usage, or its failure — and the
//! quota windows the account's rate-limit notices report.

use mainloop_agent::QuotaReport;
use mainloop_agent::protocol::{quota_reports, rejected_until};
use mainloop_domain::Timestamp;
use mainloop_domain::agents::AgentName;
use mainloop_domain::chat::ContentBlock;
use mainloop_domain::usage::QuotaWindow;
use mainloop_model::{ModelError, Usage};
use serde_json::{Value, json};

/// The MCP server's name in the session; tools appear as `mcp__mainloop__<tool>`.
pub const SERVER: &str = "mainloop";
/// The environment variable the MCP config's header reads the credential from, so it
/// never appears on a command line.
pub const TOKEN_VAR: &str = "MAINLOOP_MCP_TOKEN";
const TOOL_PREFIX: &str = "mcp__mainloop__";
const NO_SESSION: &str = "No conversation found with session ID";

/// How a process is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args<'a> {
    /// `--session-id` for a new session, `--resume` for a known one.
    pub session: &'a str,
    pub resume: bool,
    pub system: &'a str,
    pub mcp_url: &'a str,
    pub model: Option<&'a str>,
}

/// The MCP config: mainloop's server over HTTP, the bearer read from [`TOKEN_VAR`].
#[must_use]
pub fn mcp_config(url: &str) -> String {
    json!({"mcpServers": {SERVER: {
        "type": "http",
        "url": url,
        "headers": {"Authorization": format!("Bearer ${{{TOKEN_VAR}}}")},
    }}})
    .to_string()
}

/// The arguments after the program.
#[must_use]
pub fn args(a: &Args<'_>) -> Vec<String> {
    let mut out: Vec<String> = mainloop_agent::protocol::STREAM_JSON_FLAGS
        .into_iter()
        .chain([
            "--include-partial-messages",
            "--strict-mcp-config",
            // No built-in tool: nothing that reads files, runs commands or fetches pages.
            "--tools",
            "",
            "--allowedTools",
            "mcp__mainloop",
            "--setting-sources",
            "",
        ])
        .map(str::to_owned)
        .collect();
    out.extend([
        "--mcp-config".to_owned(),
        mcp_config(a.mcp_url),
        "--system-prompt".to_owned(),
        a.system.to_owned(),
        if a.resume { "--resume" } else { "--session-id" }.to_owned(),
        a.session.to_owned(),
    ]);
    if let Some(m) = a.model {
        out.extend(["--model".to_owned(), m.to_owned()]);
    }
    out
}

/// One user message on stdin.
#[must_use]
pub fn user_line(text: &str) -> String {
    json!({"type": "user", "message": {"role": "user", "content": text}}).to_string()
}

/// What one output line means for the turn.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    /// The session started or continues; `tools` says whether mainloop's MCP server is
    /// connected (else why not).
    Init {
        session_id: String,
        model: String,
        tools: Result<(), String>,
    },
    Delta(String),
    /// A complete assistant message (or part of one: lines with the same id belong
    /// together).
    Assistant {
        id: String,
        content: Vec<ContentBlock>,
    },
    /// Tool results coming back to the model.
    ToolResults(Vec<ContentBlock>),
    /// The turn ended.
    Done {
        model: String,
        usage: Usage,
        cost_usd: Option<f64>,
    },
    Failed(Failure),
    /// A rate-limit notice: the quota windows it reports, whether or not it refuses
    /// the turn, and `refused: Some(resets_at)` (unix seconds, when given) when the
    /// account's usage limit is reached — the turn's failing result follows without
    /// the time, so the reader keeps it.
    RateLimit {
        windows: Vec<QuotaReport>,
        refused: Option<Option<u64>>,
    },
    /// Progress or anything this version does not need.
    Other,
}

/// `error` with the reset time an earlier [`Line::LimitReached`] gave, if it lacks one.
#[must_use]
pub fn with_reset(error: ModelError, known: Option<u64>) -> ModelError {
    match error {
        ModelError::UsageLimit { resets_at: None } => ModelError::UsageLimit { resets_at: known },
        other => other,
    }
}

/// The quota windows `reports` name, as observed at `observed_at`. They are the
/// built-in `claude` agent's: the main thread runs Claude Code on the same login, so
/// its notices report the same subscription's windows the `claude` worker's do.
#[must_use]
pub fn quota_windows(reports: Vec<QuotaReport>, observed_at: Timestamp) -> Vec<QuotaWindow> {
    reports
        .into_iter()
        .map(|r| {
            // `AgentName::default()` is `claude` (not whichever agent is configured as
            // the default).
            let when = (r.used_percent, r.resets_at);
            QuotaWindow::reported(AgentName::default(), r.window, when, r.limited, observed_at)
        })
        .collect()
}

/// Why a turn failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The session to resume was never saved: start a new one.
    SessionMissing,
    Model(ModelError),
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Reads one line of output. Lines that are not JSON, and subagent output, are `Other`.
#[must_use]
pub fn parse(line: &str) -> Line {
    let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
        return Line::Other;
    };
    if !v.get("parent_tool_use_id").is_none_or(Value::is_null) {
        return Line::Other;
    }
    match (s(&v, "type"), s(&v, "subtype")) {
        ("system", "init") => Line::Init {
            session_id: s(&v, "session_id").to_owned(),
            model: s(&v, "model").to_owned(),
            tools: mcp_status(&v),
        },
        ("stream_event", _) => {
            let e = &v["event"];
            if s(e, "type") == "content_block_delta" && s(&e["delta"], "type") == "text_delta" {
                Line::Delta(s(&e["delta"], "text").to_owned())
            } else {
                Line::Other
            }
        }
        ("assistant", _) => Line::Assistant {
            id: s(&v["message"], "id").to_owned(),
            content: blocks(&v).iter().filter_map(assistant_block).collect(),
        },
        ("user", _) => {
            let results: Vec<ContentBlock> = blocks(&v).iter().filter_map(tool_result).collect();
            if results.is_empty() {
                Line::Other
            } else {
                Line::ToolResults(results)
            }
        }
        ("result", _) => result(&v),
        ("rate_limit_event", _) => {
            let info = &v["rate_limit_info"];
            let (windows, refused) = (quota_reports(info), rejected_until(info));
            if windows.is_empty() && refused.is_none() {
                Line::Other
            } else {
                Line::RateLimit { windows, refused }
            }
        }
        _ => Line::Other,
    }
}

fn blocks(v: &Value) -> Vec<Value> {
    match &v["message"]["content"] {
        Value::Array(b) => b.clone(),
        Value::String(t) => vec![json!({"type": "text", "text": t})],
        _ => Vec::new(),
    }
}

fn mcp_status(v: &Value) -> Result<(), String> {
    let servers = v["mcp_servers"].as_array().cloned().unwrap_or_default();
    match servers.iter().find(|m| s(m, "name") == SERVER) {
        Some(m) if s(m, "status") == "connected" => Ok(()),
        Some(m) => Err(format!("the MCP server's status is {:?}", s(m, "status"))),
        None => Err("the MCP server is not in the session".to_owned()),
    }
}

/// An assistant block as the Messages API has it, mainloop's tools under their own
/// names (so the stored thread reads the same whichever provider wrote it).
fn assistant_block(b: &Value) -> Option<ContentBlock> {
    match s(b, "type") {
        "text" => Some(ContentBlock::text(s(b, "text"))),
        "tool_use" => {
            let name = s(b, "name");
            let name = name.strip_prefix(TOOL_PREFIX).unwrap_or(name);
            Some(ContentBlock::tool_use(
                s(b, "id"),
                name,
                b.get("input").cloned().unwrap_or(Value::Null),
            ))
        }
        // Thinking and whatever else: not part of the stored reply.
        _ => None,
    }
}

fn tool_result(b: &Value) -> Option<ContentBlock> {
    if s(b, "type") != "tool_result" {
        return None;
    }
    let text = match &b["content"] {
        Value::String(t) => t.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| s(p, "type") == "text")
            .map(|p| s(p, "text"))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    };
    let is_error = b["is_error"].as_bool().unwrap_or(false);
    Some(ContentBlock::tool_result(
        s(b, "tool_use_id"),
        text,
        is_error,
    ))
}

fn result(v: &Value) -> Line {
    let u = &v["usage"];
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    if !v["is_error"].as_bool().unwrap_or(false) {
        let model = v["modelUsage"]
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_default();
        return Line::Done {
            model,
            usage: Usage {
                input_tokens: n("input_tokens"),
                output_tokens: n("output_tokens"),
                cache_creation_input_tokens: n("cache_creation_input_tokens"),
                cache_read_input_tokens: n("cache_read_input_tokens"),
            },
            cost_usd: v["total_cost_usd"].as_f64(),
        };
    }
    let text = s(v, "result").to_owned();
    if text.contains(NO_SESSION) {
        return Line::Failed(Failure::SessionMissing);
    }
    // `subtype` stays "success" on API errors: the status and error kind decide.
    let status = v["api_error_status"].as_u64().unwrap_or(0);
    let error = match (status, s(v, "api_error")) {
        (_, "usage_limit_reached") => ModelError::UsageLimit { resets_at: None },
        (429, _) => ModelError::RateLimited { retry_after: None },
        (401 | 403, _) => ModelError::Unauthorized(text),
        (529, _) => ModelError::Overloaded { retry_after: None },
        (500..=599, _) => ModelError::Server {
            status: u16::try_from(status).unwrap_or(500),
            message: text,
        },
        _ if mainloop_agent::is_transient_api_error(&text) => ModelError::Transport(text),
        _ if text.contains("/login") || text.contains("Invalid API key") => {
            ModelError::Unauthorized(text)
        }
        _ => ModelError::BadRequest(if text.is_empty() {
            format!(
                "Claude Code ended the turn with an error ({})",
                s(v, "subtype")
            )
        } else {
            text
        }),
    };
    Line::Failed(Failure::Model(error))
}

#[cfg(test)]
mod tests;

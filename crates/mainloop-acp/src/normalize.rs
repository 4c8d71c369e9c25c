//! ACP session updates, permission requests and prompt results translated into the
//! agent port's events, with tool names normalised to the ones the worker's policy and
//! the activity view know (`Bash`, `Write`, `Edit`, `Read`). Pure: a [`Transcript`]
//! takes updates in and gives events out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use agent_client_protocol::v1::schema::{
    ContentBlock, PermissionOption, PermissionOptionKind, RequestPermissionOutcome,
    SelectedPermissionOutcome, SessionUpdate, StopReason, ToolCallContent, ToolCallStatus,
    ToolCallUpdateFields, ToolKind,
};
use mainloop_agent::protocol::{TOOL_RESULT_SUMMARY_BYTES, tool_call_summary, truncate_bytes};
use mainloop_agent::{AgentEvent, AgentFailure, TurnEnd};
use serde_json::{Map, Value, json};

/// A tool call as the port names it: `name` and a Claude-shaped `input`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalTool {
    pub name: String,
    pub input: Value,
}

/// What is known of one tool call so far, merged from its `tool_call` and updates.
#[derive(Debug, Clone, Default)]
struct ToolState {
    title: String,
    /// The tool's own name (`write`, `edit`, `bash`), when the agent says it.
    name: Option<String>,
    kind: Option<ToolKind>,
    status: Option<ToolCallStatus>,
    raw_input: Option<Value>,
    raw_output: Option<Value>,
    locations: Vec<PathBuf>,
    content: Vec<ToolCallContent>,
    announced: bool,
    finished: bool,
}

impl ToolState {
    fn merge(&mut self, fields: &ToolCallUpdateFields) {
        if let Some(title) = &fields.title {
            self.title.clone_from(title);
        }
        if let Some(name) = &fields.name {
            self.name = Some(name.clone());
        }
        if let Some(kind) = &fields.kind {
            self.kind = Some(*kind);
        }
        if let Some(status) = &fields.status {
            self.status = Some(*status);
        }
        if let Some(input) = &fields.raw_input {
            self.raw_input = Some(input.clone());
        }
        if let Some(output) = &fields.raw_output {
            self.raw_output = Some(output.clone());
        }
        if let Some(locations) = &fields.locations {
            self.locations = locations.iter().map(|l| l.path.clone()).collect();
        }
        if let Some(content) = &fields.content {
            self.content.clone_from(content);
        }
    }

    /// Whether enough is known to describe the call: agents announce a call before
    /// its input has streamed in, and "Ran `bash`" says nothing.
    fn describable(&self, cwd: &Path) -> bool {
        let tool = self.normal(cwd);
        match tool.name.as_str() {
            "Bash" => self
                .raw_input
                .as_ref()
                .is_some_and(|i| i.get("command").or_else(|| i.get("cmd")).is_some()),
            "Write" | "Edit" | "Read" => tool.input.get("file_path").is_some(),
            _ => match &self.raw_input {
                None | Some(Value::Null) => false,
                Some(Value::Object(map)) => !map.is_empty(),
                Some(_) => true,
            },
        }
    }

    fn normal(&self, cwd: &Path) -> NormalTool {
        let diffs: Vec<(PathBuf, bool)> = self
            .content
            .iter()
            .filter_map(|c| match c {
                ToolCallContent::Diff(d) => Some((
                    d.path.clone(),
                    d.old_text.as_deref().is_some_and(|t| !t.is_empty()),
                )),
                _ => None,
            })
            .collect();
        normalise_tool(
            self.kind.unwrap_or(ToolKind::Other),
            &self.title,
            self.name.as_deref(),
            self.raw_input.as_ref(),
            &self.locations,
            &diffs,
            cwd,
        )
    }

    fn result_summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for c in &self.content {
            match c {
                ToolCallContent::Content(c) => {
                    if let ContentBlock::Text(t) = &c.content {
                        parts.push(t.text.clone());
                    }
                }
                ToolCallContent::Diff(d) => parts.push(format!("Changed {}", d.path.display())),
                _ => {}
            }
        }
        if parts.is_empty() {
            match &self.raw_output {
                Some(Value::String(s)) => parts.push(s.clone()),
                Some(Value::Object(map)) => match map.get("output").or_else(|| map.get("error")) {
                    Some(Value::String(s)) => parts.push(s.clone()),
                    _ => parts.push(Value::Object(map.clone()).to_string()),
                },
                Some(Value::Null) | None => {}
                Some(other) => parts.push(other.to_string()),
            }
        }
        truncate_bytes(&parts.join("\n"), TOOL_RESULT_SUMMARY_BYTES)
    }
}

/// Names a tool call the way the worker's policy reads it: a command is `Bash`
/// `{command}`, a change to files `Write` (new content) or `Edit` (a change to
/// existing text) `{file_path, files?}` with absolute paths, a read `Read`
/// `{file_path}`; anything else keeps its title and raw input.
#[must_use]
pub fn normalise_tool(
    kind: ToolKind,
    title: &str,
    name: Option<&str>,
    raw_input: Option<&Value>,
    locations: &[PathBuf],
    diffs: &[(PathBuf, bool)],
    cwd: &Path,
) -> NormalTool {
    let field = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| raw_input.and_then(|i| i.get(*k)).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let mut paths: Vec<String> = Vec::new();
    let candidates = field(&["filePath", "file_path", "absolute_path", "path"])
        .map(PathBuf::from)
        .into_iter()
        .chain(diffs.iter().map(|(p, _)| p.clone()))
        .chain(locations.iter().cloned());
    for p in candidates {
        let abs = if p.is_absolute() { p } else { cwd.join(p) };
        let abs = abs.display().to_string();
        if !paths.contains(&abs) {
            paths.push(abs);
        }
    }
    let with_paths = |name: &str| {
        let mut input = Map::new();
        if let Some((first, rest)) = paths.split_first() {
            input.insert("file_path".into(), json!(first));
            if !rest.is_empty() {
                input.insert("files".into(), json!(rest));
            }
        }
        NormalTool {
            name: name.to_owned(),
            input: Value::Object(input),
        }
    };
    match kind {
        ToolKind::Execute => {
            let command = field(&["command", "cmd"]).unwrap_or_else(|| title.to_owned());
            NormalTool {
                name: "Bash".into(),
                input: json!({ "command": command }),
            }
        }
        ToolKind::Edit | ToolKind::Delete | ToolKind::Move => {
            let changes_text = raw_input.is_some_and(|i| {
                ["oldString", "old_string", "old_str", "edits"]
                    .iter()
                    .any(|k| i.get(*k).is_some())
            }) || diffs.iter().any(|(_, had_text)| *had_text);
            let named = name.map(str::to_ascii_lowercase);
            let is_write = match named.as_deref() {
                Some("write" | "write_file" | "create" | "create_file") => true,
                Some("edit" | "replace" | "patch" | "apply_patch" | "multiedit") => false,
                _ => {
                    matches!(kind, ToolKind::Edit)
                        && !changes_text
                        && (field(&["content"]).is_some()
                            || !diffs.is_empty()
                            || raw_input.is_none())
                }
            };
            with_paths(if is_write { "Write" } else { "Edit" })
        }
        ToolKind::Read => with_paths("Read"),
        _ => {
            let title = title.trim();
            NormalTool {
                name: if title.is_empty() { "tool" } else { title }.to_owned(),
                input: raw_input.cloned().unwrap_or_else(|| json!({})),
            }
        }
    }
}

/// The option that carries the host's answer: allow once (or always), else reject once
/// (or always); chosen by kind, never by position or name. Cancelled when the agent
/// offered no such option.
#[must_use]
pub fn permission_outcome(options: &[PermissionOption], allow: bool) -> RequestPermissionOutcome {
    let kinds = if allow {
        [
            PermissionOptionKind::AllowOnce,
            PermissionOptionKind::AllowAlways,
        ]
    } else {
        [
            PermissionOptionKind::RejectOnce,
            PermissionOptionKind::RejectAlways,
        ]
    };
    kinds
        .iter()
        .find_map(|kind| options.iter().find(|o| o.kind == *kind))
        .map_or(RequestPermissionOutcome::Cancelled, |o| {
            RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(o.option_id.clone()))
        })
}

/// How a prompt's stop reason ends the turn.
#[must_use]
pub fn turn_end(stop: StopReason) -> TurnEnd {
    let reason = match stop {
        StopReason::EndTurn => return TurnEnd::Done,
        StopReason::MaxTokens => "the agent stopped: the model's output limit was reached",
        StopReason::MaxTurnRequests => "the agent stopped: too many model requests in one turn",
        StopReason::Refusal => "the model refused to continue",
        StopReason::Cancelled => "the turn was cancelled",
        _ => "the turn ended for an unknown reason",
    };
    TurnEnd::Failed {
        failure: AgentFailure::Other {
            reason: reason.to_owned(),
        },
    }
}

/// How a failed prompt request ends the turn: a spent quota or usage limit (Google's
/// `RESOURCE_EXHAUSTED`, "Quota exceeded …") waits for its reset, which the message does
/// not give in a form to rely on; a model API failure that passes can be resumed later;
/// anything else is the agent's own words.
#[must_use]
pub fn failed_turn(message: &str) -> TurnEnd {
    let lower = message.to_ascii_lowercase();
    let reason = message.to_owned();
    if ["resource_exhausted", "quota", "usage limit"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return TurnEnd::Failed {
            failure: AgentFailure::UsageLimit {
                resets_at: None,
                reason,
            },
        };
    }
    let transient = [
        "429",
        "rate limit",
        "overloaded",
        "529",
        "503",
        "502",
        "timed out",
        "connection",
        "too many requests",
    ]
    .iter()
    .any(|w| lower.contains(w));
    TurnEnd::Failed {
        failure: if transient {
            AgentFailure::ModelUnavailable { reason }
        } else {
            AgentFailure::Other { reason }
        },
    }
}

/// The session's transcript state: coalesces message chunks, follows tool calls from
/// `pending` to `completed`, and drops what a loaded session replays.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    cwd: PathBuf,
    text: String,
    tools: HashMap<String, ToolState>,
    turn_active: bool,
    last_text: Option<String>,
    cost_usd: f64,
}

impl Transcript {
    #[must_use]
    pub fn new(cwd: &Path) -> Self {
        Self {
            cwd: cwd.to_path_buf(),
            ..Self::default()
        }
    }

    /// A prompt was sent: updates from now on are this turn's.
    pub fn begin_turn(&mut self) {
        self.turn_active = true;
        self.last_text = None;
    }

    /// The turn's end: the rest of its text, then `Finished`.
    pub fn end_turn(
        &mut self,
        end: TurnEnd,
        session_id: &str,
        usage: (u64, u64),
    ) -> Vec<AgentEvent> {
        let mut events = self.flush();
        self.turn_active = false;
        let result = match &end {
            TurnEnd::Done => self.last_text.take(),
            TurnEnd::Failed { failure } => match failure {
                AgentFailure::ModelUnavailable { reason } | AgentFailure::Other { reason } => {
                    Some(reason.clone())
                }
                _ => None,
            },
        };
        events.push(AgentEvent::Finished {
            end,
            result,
            session_id: Some(session_id.to_owned()),
            cost_usd: self.cost_usd,
            input_tokens: usage.0,
            output_tokens: usage.1,
        });
        events
    }

    /// The text gathered so far, as one `Text` event.
    pub fn flush(&mut self) -> Vec<AgentEvent> {
        if self.text.is_empty() {
            return Vec::new();
        }
        let text = std::mem::take(&mut self.text);
        self.last_text = Some(text.clone());
        vec![AgentEvent::Text { text }]
    }

    /// The events one `session/update` yields.
    pub fn update(&mut self, update: &SessionUpdate) -> Vec<AgentEvent> {
        if let SessionUpdate::UsageUpdate(usage) = update {
            if let Some(cost) = &usage.cost {
                self.cost_usd = cost.amount;
            }
            return Vec::new();
        }
        // Outside a turn, updates are a loaded session's history played back.
        if !self.turn_active {
            return Vec::new();
        }
        if let SessionUpdate::AgentMessageChunk(chunk) = update {
            if let ContentBlock::Text(t) = &chunk.content {
                self.text.push_str(&t.text);
            }
            return Vec::new();
        }
        let mut events = self.flush();
        match update {
            SessionUpdate::ToolCall(call) => {
                let state = self
                    .tools
                    .entry(call.tool_call_id.0.to_string())
                    .or_default();
                state.title.clone_from(&call.title);
                state.name.clone_from(&call.name);
                state.kind = Some(call.kind);
                state.status = Some(call.status);
                state.raw_input.clone_from(&call.raw_input);
                state.raw_output.clone_from(&call.raw_output);
                state.locations = call.locations.iter().map(|l| l.path.clone()).collect();
                state.content.clone_from(&call.content);
                events.extend(self.progress(&call.tool_call_id.0));
            }
            SessionUpdate::ToolCallUpdate(update) => {
                self.tools
                    .entry(update.tool_call_id.0.to_string())
                    .or_default()
                    .merge(&update.fields);
                events.extend(self.progress(&update.tool_call_id.0));
            }
            _ => {}
        }
        events
    }

    /// A permission request for a tool call: its normalised name and input, announcing
    /// the call first if that has not happened yet.
    pub fn permission(
        &mut self,
        id: &str,
        fields: &ToolCallUpdateFields,
    ) -> (NormalTool, Vec<AgentEvent>) {
        let mut events = self.flush();
        let state = self.tools.entry(id.to_owned()).or_default();
        state.merge(fields);
        let tool = state.normal(&self.cwd);
        if self.turn_active && !state.announced {
            state.announced = true;
            events.push(tool_call_event(id, &tool));
        }
        (tool, events)
    }

    fn progress(&mut self, id: &str) -> Vec<AgentEvent> {
        let Some(state) = self.tools.get_mut(id) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        let done = matches!(
            state.status,
            Some(ToolCallStatus::Completed | ToolCallStatus::Failed)
        );
        if !state.announced && (done || state.describable(&self.cwd)) {
            state.announced = true;
            events.push(tool_call_event(id, &state.normal(&self.cwd)));
        }
        if done && !state.finished {
            state.finished = true;
            events.push(AgentEvent::ToolResult {
                tool_use_id: id.to_owned(),
                summary: state.result_summary(),
                is_error: matches!(state.status, Some(ToolCallStatus::Failed)),
            });
        }
        events
    }
}

fn tool_call_event(id: &str, tool: &NormalTool) -> AgentEvent {
    AgentEvent::ToolCall {
        id: id.to_owned(),
        name: tool.name.clone(),
        summary: tool_call_summary(&tool.name, &tool.input),
    }
}

#[cfg(test)]
#[path = "normalize_tests.rs"]
mod tests;

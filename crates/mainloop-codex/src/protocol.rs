//! Codex `app-server`'s JSON-RPC conversation as a pure state machine: a
//! [`Conversation`] takes what Codex writes (one JSON object per line) and what the
//! host asks (a message, a reply, an interrupt) and returns [`Effects`]: the port's
//! events and the lines to write to Codex's stdin. No I/O here, so recorded lines are
//! enough to test it.
//!
//! Codex omits `"jsonrpc"` from its messages, and numbers its own requests to us from
//! 0, separately from ours.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use mainloop_agent::protocol::{MALFORMED_LINE_BYTES, truncate_bytes};
use mainloop_agent::{
    AgentEvent, AgentFailure, AgentMode, ControlReply, RunSpec, SessionRef, TurnEnd,
};
use serde_json::{Value, json};

use crate::items::{self, Item, answers, failure_of, questions_of, str_field};
use crate::quiet::QUIET_NOTIFICATIONS;

/// Longest line read from Codex; a longer one is refused as `Malformed` without being
/// held whole.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// JSON-RPC's "method not found".
const METHOD_NOT_FOUND: i64 = -32601;

/// What the conversation must know of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    pub cwd: PathBuf,
    pub session: SessionRef,
    pub mode: AgentMode,
    pub model: Option<String>,
    pub instructions: Option<String>,
}

impl Opening {
    #[must_use]
    pub fn of(spec: &RunSpec) -> Self {
        Self {
            cwd: spec.cwd.clone(),
            session: spec.session.clone(),
            mode: spec.mode,
            model: spec.model.clone(),
            instructions: spec.append_system_prompt.clone(),
        }
    }
}

/// What one step yields.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    /// For the host, in order.
    pub events: Vec<AgentEvent>,
    /// For Codex's stdin, in order, without newlines.
    pub lines: Vec<String>,
    /// Close Codex's stdin once `lines` are written: it then exits.
    pub close_input: bool,
}

/// Our requests awaiting Codex's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Initialize,
    OpenThread,
    StartTurn,
    Interrupt,
}

/// The kinds of Codex requests the host answers, each with its own reply shape.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Approval {
    /// `item/commandExecution/requestApproval`, `item/fileChange/requestApproval`.
    Item,
    /// `execCommandApproval`, `applyPatchApproval` (the legacy pair).
    Legacy,
    /// `item/tool/requestUserInput`: the question ids, by question text.
    Questions(Vec<(String, String)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Turn {
    Idle,
    /// `turn/start` sent; its id not known yet.
    Starting,
    Running(String),
}

/// One Codex `app-server` conversation, from `initialize` to the last turn.
#[derive(Debug)]
pub struct Conversation {
    opening: Opening,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    thread: Option<String>,
    session_reported: bool,
    turn: Turn,
    /// Messages waiting for the thread to open or the running turn to end.
    queued: VecDeque<String>,
    items: HashMap<String, Item>,
    /// Codex's open requests to us: their raw ids and reply shapes, by `request_id`.
    approvals: HashMap<String, (Value, Approval)>,
    input_tokens: u64,
    output_tokens: u64,
    last_text: Option<String>,
    last_error: Option<Value>,
    /// When the account's used-up limit resets, as Codex last said in this turn.
    limited_until: Option<u64>,
    interrupt_when_started: bool,
    /// The mode changed since the thread opened: the next turn carries its policies.
    mode_changed: bool,
}

impl Conversation {
    #[must_use]
    pub fn new(opening: Opening) -> Self {
        Self {
            opening,
            next_id: 1,
            pending: HashMap::new(),
            thread: None,
            session_reported: false,
            turn: Turn::Idle,
            queued: VecDeque::new(),
            items: HashMap::new(),
            approvals: HashMap::new(),
            input_tokens: 0,
            output_tokens: 0,
            last_text: None,
            last_error: None,
            limited_until: None,
            interrupt_when_started: false,
            mode_changed: false,
        }
    }

    /// The thread (the port's session id) once Codex opened it.
    #[must_use]
    pub fn thread_id(&self) -> Option<&str> {
        self.thread.as_deref()
    }

    fn request(&mut self, purpose: Pending, method: &str, params: &Value) -> String {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, purpose);
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
    }

    /// The first line: `initialize`. The thread opens once Codex answers it.
    pub fn start(&mut self) -> Effects {
        let params = json!({
            "clientInfo": {"name": "mainloop", "title": "mainloop",
                           "version": env!("CARGO_PKG_VERSION")},
            "capabilities": {"experimentalApi": true},
        });
        Effects {
            lines: vec![self.request(Pending::Initialize, "initialize", &params)],
            ..Effects::default()
        }
    }

    /// The next turns run in `mode` (Codex keeps a turn's policies for the turns after).
    pub fn set_mode(&mut self, mode: AgentMode) {
        if mode != self.opening.mode {
            self.opening.mode = mode;
            self.mode_changed = true;
        }
    }

    fn open_thread(&mut self) -> Vec<String> {
        let (approval, sandbox) = policies(self.opening.mode);
        let mut params = json!({
            "cwd": self.opening.cwd.display().to_string(),
            "approvalPolicy": approval,
            "sandbox": sandbox,
        });
        if let Some(model) = &self.opening.model {
            params["model"] = json!(model);
        }
        if let Some(text) = &self.opening.instructions {
            params["developerInstructions"] = json!(text);
        }
        let method = match &self.opening.session {
            // Codex picks its own thread id; SessionStarted reports it.
            SessionRef::New(_) => "thread/start",
            SessionRef::Resume(id) => {
                params["threadId"] = json!(id);
                "thread/resume"
            }
        };
        let initialized = json!({"jsonrpc": "2.0", "method": "initialized"}).to_string();
        vec![
            initialized,
            self.request(Pending::OpenThread, method, &params),
        ]
    }

    /// Starts a turn with `text`, or queues it until the thread is open and no turn runs.
    pub fn user_message(&mut self, text: &str) -> Effects {
        self.queued.push_back(text.to_owned());
        Effects {
            lines: self.next_turn(),
            ..Effects::default()
        }
    }

    fn next_turn(&mut self) -> Vec<String> {
        let (Some(thread), Turn::Idle) = (self.thread.clone(), &self.turn) else {
            return Vec::new();
        };
        let Some(text) = self.queued.pop_front() else {
            return Vec::new();
        };
        self.turn = Turn::Starting;
        self.input_tokens = 0;
        self.output_tokens = 0;
        self.last_text = None;
        self.last_error = None;
        self.limited_until = None;
        let mut params = json!({"threadId": thread,
                                "input": [{"type": "text", "text": text, "text_elements": []}]});
        if std::mem::take(&mut self.mode_changed) {
            let (approval, sandbox) = policies(self.opening.mode);
            params["approvalPolicy"] = json!(approval);
            params["sandboxPolicy"] = match sandbox {
                "read-only" => json!({"type": "readOnly"}),
                _ => json!({"type": "workspaceWrite"}),
            };
        }
        vec![self.request(Pending::StartTurn, "turn/start", &params)]
    }

    /// Answers Codex's request `request_id` (from a `Permission` event).
    pub fn reply(&mut self, request_id: &str, reply: &ControlReply) -> Result<Effects, String> {
        let (id, kind) = self
            .approvals
            .remove(request_id)
            .ok_or_else(|| format!("no open request {request_id:?}"))?;
        if let Approval::Questions(ids) = &kind {
            return Ok(Effects {
                lines: vec![
                    json!({"jsonrpc": "2.0", "id": id, "result": answers(ids, reply)}).to_string(),
                ],
                ..Effects::default()
            });
        }
        let decision = match (kind, reply) {
            (Approval::Item, ControlReply::Allow { .. }) => "accept",
            (
                Approval::Item,
                ControlReply::Deny {
                    interrupt: false, ..
                },
            ) => "decline",
            (
                Approval::Item,
                ControlReply::Deny {
                    interrupt: true, ..
                },
            ) => "cancel",
            (Approval::Legacy, ControlReply::Allow { .. }) => "approved",
            (
                Approval::Legacy,
                ControlReply::Deny {
                    interrupt: false, ..
                },
            ) => "denied",
            (
                Approval::Legacy,
                ControlReply::Deny {
                    interrupt: true, ..
                },
            ) => "abort",
            (Approval::Questions(_), _) => return Err("answered above".to_owned()),
        };
        Ok(Effects {
            lines: vec![
                json!({"jsonrpc": "2.0", "id": id, "result": {"decision": decision}}).to_string(),
            ],
            ..Effects::default()
        })
    }

    /// Asks Codex to stop the running turn; it then completes as interrupted.
    pub fn interrupt(&mut self) -> Effects {
        let mut effects = Effects::default();
        match (&self.turn, self.thread.clone()) {
            (Turn::Running(turn), Some(thread)) => {
                let params = json!({"threadId": thread, "turnId": turn});
                effects
                    .lines
                    .push(self.request(Pending::Interrupt, "turn/interrupt", &params));
            }
            (Turn::Starting, _) => self.interrupt_when_started = true,
            _ => {}
        }
        self.queued.clear();
        effects
    }

    /// A line of `len` bytes, over the `limit` (by default [`MAX_LINE_BYTES`]):
    /// refused, with its start as evidence.
    #[must_use]
    pub fn oversized(start: &str, len: usize, limit: usize) -> AgentEvent {
        AgentEvent::Malformed {
            line: truncate_bytes(start, MALFORMED_LINE_BYTES),
            error: format!("line of {len} bytes exceeds the {limit}-byte limit"),
        }
    }

    /// One line Codex wrote. Never panics.
    pub fn on_line(&mut self, line: &str) -> Effects {
        let line = line.trim();
        if line.is_empty() {
            return Effects::default();
        }
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return malformed(line, e.to_string()),
        };
        if !value.is_object() {
            return malformed(line, "not a JSON object".to_owned());
        }
        let method = str_field(&value, "method");
        let id = value.get("id").filter(|id| !id.is_null());
        let mut effects = match (method, id) {
            (Some(method), Some(id)) => self.server_request(method, id, &value),
            (Some(method), None) => self.notification(method, &value),
            (None, Some(id)) => self.response(id, &value),
            (None, None) => Err("neither a method nor an id".to_owned()),
        }
        .unwrap_or_else(|error| malformed(line, error));
        if effects.events.iter().any(is_turn_end) && !effects.close_input {
            effects.lines.extend(self.next_turn());
        }
        effects
    }

    fn response(&mut self, id: &Value, v: &Value) -> Result<Effects, String> {
        let purpose = id
            .as_u64()
            .and_then(|n| self.pending.remove(&n))
            .ok_or_else(|| format!("a response to no request of ours ({id})"))?;
        let result = v.get("result").unwrap_or(&Value::Null);
        let mut effects = Effects::default();
        if let Some(error) = v.get("error") {
            let message = str_field(error, "message").unwrap_or("error").to_owned();
            let failure = match (purpose, &self.opening.session) {
                (Pending::Interrupt, _) => return Ok(effects),
                (Pending::OpenThread, SessionRef::Resume(_)) => AgentFailure::SessionMissing,
                _ => AgentFailure::Other {
                    reason: message.clone(),
                },
            };
            if purpose == Pending::StartTurn {
                self.turn = Turn::Idle;
            } else {
                // Without a thread nothing can follow: let Codex exit.
                effects.close_input = true;
                self.queued.clear();
            }
            effects.events.push(self.finished(
                TurnEnd::Failed { failure },
                Some(format!("{purpose:?} failed: {message}")),
            ));
            return Ok(effects);
        }
        match purpose {
            Pending::Initialize => effects.lines = self.open_thread(),
            Pending::OpenThread => {
                let thread = result
                    .get("thread")
                    .and_then(|t| str_field(t, "id"))
                    .ok_or("the thread's answer has no thread.id")?;
                let model = str_field(result, "model").unwrap_or_default().to_owned();
                effects.events.extend(self.session_started(thread, model));
                effects.lines = self.next_turn();
            }
            Pending::StartTurn => {
                if let Some(turn) = result.get("turn").and_then(|t| str_field(t, "id")) {
                    effects.lines = self.turn_started(turn);
                }
            }
            Pending::Interrupt => {}
        }
        Ok(effects)
    }

    fn session_started(&mut self, thread: &str, model: String) -> Option<AgentEvent> {
        self.thread = Some(thread.to_owned());
        if self.session_reported {
            return None;
        }
        self.session_reported = true;
        Some(AgentEvent::SessionStarted {
            session_id: thread.to_owned(),
            model,
        })
    }

    fn turn_started(&mut self, turn: &str) -> Vec<String> {
        if self.turn != Turn::Starting {
            return Vec::new();
        }
        self.turn = Turn::Running(turn.to_owned());
        if std::mem::take(&mut self.interrupt_when_started) {
            return self.interrupt().lines;
        }
        Vec::new()
    }

    fn notification(&mut self, method: &str, v: &Value) -> Result<Effects, String> {
        let params = v.get("params").unwrap_or(&Value::Null);
        let cwd = self.opening.cwd.clone();
        let mut effects = Effects::default();
        match method {
            "thread/started" => {
                let thread = params
                    .get("thread")
                    .and_then(|t| str_field(t, "id"))
                    .ok_or("thread/started without thread.id")?;
                // The answer to our thread/start (or resume) says the same, with the model.
                let answer_due = self.pending.values().any(|p| *p == Pending::OpenThread);
                if self.thread.is_none() && !answer_due {
                    effects
                        .events
                        .extend(self.session_started(thread, String::new()));
                }
            }
            "turn/started" => {
                if let Some(turn) = params.get("turn").and_then(|t| str_field(t, "id")) {
                    effects.lines = self.turn_started(turn);
                }
            }
            "item/started" => {
                let item = params.get("item").ok_or("item/started without item")?;
                let (events, remembered) = items::started(&cwd, item);
                if let (Some(id), Some(remembered)) = (str_field(item, "id"), remembered) {
                    self.items.insert(id.to_owned(), remembered);
                }
                effects.events = events;
            }
            "item/completed" => {
                let item = params.get("item").ok_or("item/completed without item")?;
                let remembered = str_field(item, "id").and_then(|id| self.items.remove(id));
                if str_field(item, "type") == Some("agentMessage") {
                    self.last_text = str_field(item, "text").map(str::to_owned);
                }
                effects.events = items::completed(&cwd, item, remembered.as_ref());
            }
            "thread/tokenUsage/updated" => {
                // `last` is one model call's usage; a turn may make several.
                let last = params.get("tokenUsage").and_then(|u| u.get("last"));
                let n = |k: &str| last.and_then(|l| l.get(k)).and_then(Value::as_u64);
                if self.turn != Turn::Idle {
                    self.input_tokens = self
                        .input_tokens
                        .saturating_add(n("inputTokens").unwrap_or(0));
                    self.output_tokens = self
                        .output_tokens
                        .saturating_add(n("outputTokens").unwrap_or(0));
                }
            }
            "account/rateLimits/updated" => {
                let limits = params.get("rateLimits").unwrap_or(&Value::Null);
                self.limited_until = items::exhausted_until(limits).or(self.limited_until);
                let windows = items::quota_of(limits);
                if !windows.is_empty() {
                    effects.events.push(AgentEvent::Quota { windows });
                }
            }
            "error" => {
                // A retried error is progress; a final one explains the failed turn.
                if params.get("willRetry").and_then(Value::as_bool) != Some(true) {
                    self.last_error = params.get("error").cloned();
                }
            }
            "turn/completed" => {
                let turn = params.get("turn").ok_or("turn/completed without turn")?;
                let error = turn
                    .get("error")
                    .filter(|e| !e.is_null())
                    .cloned()
                    .or_else(|| self.last_error.take());
                let end = match str_field(turn, "status") {
                    Some("completed") => TurnEnd::Done,
                    Some("interrupted") => TurnEnd::Failed {
                        failure: AgentFailure::Other {
                            reason: "interrupted".to_owned(),
                        },
                    },
                    _ => TurnEnd::Failed {
                        failure: failure_of(error.as_ref(), self.limited_until.take()),
                    },
                };
                let result = match &end {
                    TurnEnd::Done => self.last_text.take(),
                    TurnEnd::Failed { .. } => error
                        .as_ref()
                        .and_then(|e| str_field(e, "message"))
                        .map(str::to_owned)
                        .or_else(|| self.last_text.take()),
                };
                self.turn = Turn::Idle;
                self.items.clear();
                effects.events.push(self.finished(end, result));
            }
            other if QUIET_NOTIFICATIONS.contains(&other) => {}
            other => return Err(format!("unknown notification {other:?}")),
        }
        Ok(effects)
    }

    fn finished(&mut self, end: TurnEnd, result: Option<String>) -> AgentEvent {
        AgentEvent::Finished {
            end,
            result,
            session_id: self.thread.clone(),
            // Codex reports no prices.
            cost_usd: 0.0,
            input_tokens: std::mem::take(&mut self.input_tokens),
            output_tokens: std::mem::take(&mut self.output_tokens),
        }
    }

    fn server_request(&mut self, method: &str, id: &Value, v: &Value) -> Result<Effects, String> {
        let params = v.get("params").unwrap_or(&Value::Null);
        let request_id = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
        let cwd = self.opening.cwd.clone();
        let item = str_field(params, "itemId").and_then(|i| self.items.get(i));
        let (tool, input, kind) = match method {
            "item/commandExecution/requestApproval" | "execCommandApproval" => {
                let command = items::command_text(params.get("command"))
                    .or_else(|| match item {
                        Some(Item::Command { command }) => Some(command.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                ("Bash", json!({"command": command}), approval_kind(method))
            }
            "item/fileChange/requestApproval" | "applyPatchApproval" => {
                let changes = match item {
                    Some(Item::Files { changes }) => changes.clone(),
                    _ => items::legacy_changes(params),
                };
                let root = str_field(params, "grantRoot");
                let input = items::write_permission_input(&cwd, &changes, root);
                ("Write", input, approval_kind(method))
            }
            "item/tool/requestUserInput" => {
                let (questions, ids) = questions_of(params);
                self.approvals
                    .insert(request_id.clone(), (id.clone(), Approval::Questions(ids)));
                return Ok(Effects {
                    events: vec![AgentEvent::Question {
                        request_id,
                        questions,
                        input: params.clone(),
                    }],
                    ..Effects::default()
                });
            }
            other => {
                // Codex waits for an answer: refuse at once, and say so.
                let reply = json!({"jsonrpc": "2.0", "id": id, "error": {
                    "code": METHOD_NOT_FOUND,
                    "message": format!("mainloop does not handle {other}")}});
                let line = v.to_string();
                return Ok(Effects {
                    events: vec![AgentEvent::Malformed {
                        line: truncate_bytes(&line, MALFORMED_LINE_BYTES),
                        error: format!("unknown request {other:?}, refused"),
                    }],
                    lines: vec![reply.to_string()],
                    close_input: false,
                });
            }
        };
        self.approvals
            .insert(request_id.clone(), (id.clone(), kind));
        Ok(Effects {
            events: vec![AgentEvent::Permission {
                request_id,
                tool: tool.to_owned(),
                input,
            }],
            ..Effects::default()
        })
    }
}

fn approval_kind(method: &str) -> Approval {
    if method.contains('/') {
        Approval::Item
    } else {
        Approval::Legacy
    }
}

fn malformed(line: &str, error: String) -> Effects {
    Effects {
        events: vec![AgentEvent::Malformed {
            line: truncate_bytes(line, MALFORMED_LINE_BYTES),
            error,
        }],
        ..Effects::default()
    }
}

fn is_turn_end(event: &AgentEvent) -> bool {
    matches!(event, AgentEvent::Finished { .. })
}

/// The approval policy and sandbox of a thread in `mode`.
const fn policies(mode: AgentMode) -> (&'static str, &'static str) {
    match mode {
        AgentMode::Plan => ("never", "read-only"),
        // `untrusted` sends every command and patch to the host's policy.
        AgentMode::Implement => ("untrusted", "workspace-write"),
    }
}

#[cfg(test)]
mod tests;

//! The coding-agent port: what a worker needs from a coding agent (start it in a
//! worktree, read its normalized event stream, answer its questions and permission
//! requests, stop or kill it), agent-neutral so that other agents fit behind it, and
//! the adapters that implement it — Claude Code first.
//!
//! Where the process runs is a separate port, [`placement`]. Claude Code's protocol is
//! parsed and its failures classified in [`protocol`], as pure functions, so recorded
//! lines are enough to test it; its process plumbing lives in [`claude`], and killing a
//! local process with all it started in `kill`.

pub mod claude;
mod kill;
pub mod placement;
pub mod protocol;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use claude::{
    ClaudeCode, ClaudeSession, line_reader, read_line_capped, read_stderr, stderr_tail,
};
pub use kill::{kill_orphaned_group, kill_stale_agent, process_start_time};
pub use placement::{Launch, LocalProcess, Placed, PlacedProcess, Placement};
pub use protocol::{LineParser, is_transient_api_error, parse_line, quota_reports};

/// How much the agent may do on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    /// Read-only planning (`--permission-mode plan`).
    Plan,
    /// File edits allowed without asking (`--permission-mode acceptEdits`).
    Implement,
}

/// Which conversation the agent continues.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionRef {
    /// A new session with this id (a UUID chosen by the caller, `--session-id`).
    New(String),
    /// An existing session, continued from the same working directory (`--resume`).
    Resume(String),
}

/// Everything needed to start one agent process.
#[derive(Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The task's worktree.
    pub cwd: PathBuf,
    pub session: SessionRef,
    pub mode: AgentMode,
    /// `--model`.
    pub model: Option<String>,
    /// `--append-system-prompt`.
    pub append_system_prompt: Option<String>,
    /// The child's entire environment: nothing else is inherited, so the caller decides
    /// which credentials and paths the agent sees.
    pub env: Vec<(String, String)>,
}

// Hand-written because `env` carries API keys and OAuth tokens, which must not reach logs.
impl fmt::Debug for RunSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_keys: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("RunSpec")
            .field("cwd", &self.cwd)
            .field("session", &self.session)
            .field("mode", &self.mode)
            .field("model", &self.model)
            .field("append_system_prompt", &self.append_system_prompt)
            .field("env_keys", &env_keys)
            .finish()
    }
}

/// One option of a clarifying question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentOption {
    pub label: String,
    pub description: String,
}

impl AgentOption {
    /// The options in a question's `options` array (`{label, description}` objects, as
    /// both Claude Code and Codex send them); missing fields read as empty.
    #[must_use]
    pub fn list_from(question: &Value) -> Vec<Self> {
        let text = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        question
            .get("options")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|o| Self {
                label: text(o, "label"),
                description: text(o, "description"),
            })
            .collect()
    }
}

/// One clarifying question; several may arrive in one [`AgentEvent::Question`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentQuestion {
    /// The full question text; answers are keyed by it.
    pub question: String,
    /// A short label for the question (a chip, a column header).
    pub header: String,
    /// May be empty: the question then expects free text.
    pub options: Vec<AgentOption>,
    pub multi_select: bool,
}

/// What an agent said about one window of its account's usage quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaReport {
    /// `five_hour`, `seven_day`, or another name the agent gave.
    pub window: String,
    /// How much of the window is used, 0 to 100, when said.
    pub used_percent: Option<f64>,
    /// When the window resets, in Unix seconds, when said.
    pub resets_at: Option<u64>,
    /// The window is used up: the account's requests are refused until it resets.
    pub limited: bool,
}

/// The normalized stream of an agent's output, one event per output item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentEvent {
    SessionStarted {
        session_id: String,
        model: String,
    },
    Text {
        text: String,
    },
    /// `summary` is a one-line description of the input, at most ~200 characters.
    ToolCall {
        id: String,
        name: String,
        summary: String,
    },
    /// `summary` is the result's text, at most ~2 KB.
    ToolResult {
        tool_use_id: String,
        summary: String,
        is_error: bool,
    },
    /// The agent asks the user; answer with [`ControlReply::answers`] (or deny).
    Question {
        request_id: String,
        questions: Vec<AgentQuestion>,
        input: Value,
    },
    /// The agent wants its plan approved: allow approves, deny with a message asks for
    /// a revision, deny with `interrupt` ends the turn.
    Plan {
        request_id: String,
        plan: String,
        input: Value,
    },
    /// Any other tool the agent needs permission for.
    Permission {
        request_id: String,
        tool: String,
        input: Value,
    },
    /// The end of a turn. `input_tokens` includes cache reads and cache writes.
    Finished {
        end: TurnEnd,
        /// The agent's final reply, or its report of what went wrong.
        result: Option<String>,
        session_id: Option<String>,
        cost_usd: f64,
        input_tokens: u64,
        output_tokens: u64,
    },
    /// The account's quota windows as the agent last heard of them; nothing for the
    /// transcript. Sent when the agent says, which may be never (Claude Code on an API
    /// key says nothing). A struct variant: the enum's internal `kind` tag cannot
    /// carry a bare list.
    Quota {
        windows: Vec<QuotaReport>,
    },
    /// An output line that is not JSON or not understood; the session continues.
    Malformed {
        line: String,
        error: String,
    },
    /// The process ended; the last event of every session. `code` is the exit code
    /// (a death by signal N reads as 128 + N) when known; `failure` says what went
    /// wrong when it did not exit cleanly.
    Exited {
        code: Option<i32>,
        failure: Option<AgentFailure>,
    },
}

impl AgentEvent {
    /// Whether the turn ended successfully: a `Finished` with [`TurnEnd::Done`].
    #[must_use]
    pub const fn is_done(&self) -> bool {
        matches!(
            self,
            Self::Finished {
                end: TurnEnd::Done,
                ..
            }
        )
    }
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TurnEnd {
    Done,
    Failed { failure: AgentFailure },
}

/// Why an agent's turn or process failed, in terms every agent shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentFailure {
    /// The session asked to be resumed was never saved.
    SessionMissing,
    /// The session asked to be started new is already saved.
    SessionInUse,
    /// The model API failed for a reason that passes (overloaded, rate limited, a 5xx,
    /// no connection): the same session may be resumed later.
    ModelUnavailable { reason: String },
    /// The account's usage limit is reached (a plan's 5-hour or weekly window, a
    /// quota): nothing runs until it resets, at `resets_at` (Unix seconds) when the
    /// agent said.
    UsageLimit {
        resets_at: Option<u64>,
        reason: String,
    },
    /// Anything else; `reason` is the agent's own words, possibly empty.
    Other { reason: String },
}

/// The host's answer to a `Question`, `Plan` or `Permission` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlReply {
    /// Run the tool with this input (usually the request's input, possibly amended).
    Allow { updated_input: Value },
    /// Refuse; the agent sees `message`. With `interrupt` the turn ends at once.
    Deny { message: String, interrupt: bool },
}

impl ControlReply {
    /// Allows an `AskUserQuestion` request with `answers` added to its input. Keys are
    /// the question texts; a multi-select answer is its labels joined by `", "`, and a
    /// free-text answer is the text itself.
    pub fn answers(input: &Value, answers_by_question_text: &BTreeMap<String, String>) -> Self {
        let answers: serde_json::Map<String, Value> = answers_by_question_text
            .iter()
            .map(|(q, a)| (q.clone(), Value::String(a.clone())))
            .collect();
        let mut updated = match input {
            Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        updated.insert("answers".to_owned(), Value::Object(answers));
        Self::Allow {
            updated_input: Value::Object(updated),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("could not start the agent: {0}")]
    Spawn(String),
    #[error("agent i/o: {0}")]
    Io(String),
    /// The agent's input is closed: it exited, was killed, or `close_input` was called.
    #[error("the agent's input is closed")]
    Closed,
}

/// One running agent process.
pub trait AgentSession: Send + fmt::Debug {
    /// Next event; None once the process has exited and its output is drained.
    fn next_event(&mut self) -> BoxFuture<'_, Option<AgentEvent>>;
    /// Answers the control request `request_id` (from a Question, Plan or Permission event).
    fn reply(
        &mut self,
        request_id: &str,
        reply: ControlReply,
    ) -> BoxFuture<'_, Result<(), AgentError>>;
    /// Starts a turn (the first one too: starting a session sends no prompt).
    fn send_user_message(&mut self, text: &str) -> BoxFuture<'_, Result<(), AgentError>>;
    /// Puts the session in `mode` for the turns that follow, where the agent can change
    /// mode mid-session; otherwise an error, and the caller resumes the session in a new
    /// process started in `mode`.
    fn set_mode(&mut self, mode: AgentMode) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move {
            Err(AgentError::Io(format!(
                "this agent cannot switch to {mode:?} mode mid-session"
            )))
        })
    }
    /// Closes the agent's input: it finishes the current turn and exits, so `next_event`
    /// soon returns None. Later writes fail with [`AgentError::Closed`].
    fn close_input(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// Ends the session the normal way, so that what the agent saves of it is complete
    /// for a later resume: closes its input, lets it exit (reading and dropping what it
    /// still writes) for up to `grace`, then kills whatever is left of it. A pending
    /// control request is abandoned, not answered.
    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.close_input().await;
            let exited =
                tokio::time::timeout(grace, async { while self.next_event().await.is_some() {} })
                    .await;
            if exited.is_err() {
                tracing::warn!(?grace, "the agent did not exit after its input closed");
            }
            self.kill().await;
        })
    }
    /// Kills the agent and everything it started, at once (cancel, timeouts); what it
    /// has not saved yet of its session is lost.
    fn kill(&mut self) -> BoxFuture<'_, ()>;
    /// The process id while the process has not been reaped.
    fn pid(&self) -> Option<u32>;
    /// The last ~40 lines the agent wrote to stderr (for failure reports).
    fn stderr_tail(&self) -> Vec<String>;
    /// Exit code once exited; a death by signal N reads as 128 + N, as in a shell.
    fn exit_code(&self) -> Option<i32>;
}

/// A kind of coding agent that can be started in a worktree: which program, and the
/// protocol it speaks.
pub trait Agent: Send + Sync + fmt::Debug + 'static {
    fn name(&self) -> &str;
    /// Starts the agent through `placement`; must be called within a Tokio runtime.
    fn start(
        &self,
        spec: RunSpec,
        placement: &dyn Placement,
    ) -> Result<Box<dyn AgentSession>, AgentError>;
}

//! The session-provider port: a main thread that keeps its own conversation (an agent
//! session, such as Claude Code's) and calls mainloop's tools itself, over MCP. The
//! engine sends each turn's new messages and stores what comes back; the provider owns
//! the process, the session id it resumes, and the protocol.

use crate::{ModelError, Usage};
use futures::stream::BoxStream;
use mainloop_domain::chat::{ContentBlock, Role};
use mainloop_domain::usage::QuotaWindow;
use std::fmt;

/// One turn for a user's session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionTurn {
    /// Whose main thread this is (one session per user).
    pub user: String,
    /// The session to continue; `None` starts a new one.
    pub resume: Option<String>,
    /// The system prompt a new session starts with.
    pub system: String,
    /// The turn's input: the new messages, as one user message.
    pub input: String,
    /// The credential the session presents to mainloop's MCP server, scoped to `user`.
    pub mcp_token: String,
}

// Hand-written: the MCP credential must not reach logs.
impl fmt::Debug for SessionTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTurn")
            .field("user", &self.user)
            .field("resume", &self.resume)
            .field("input_chars", &self.input.chars().count())
            .finish_non_exhaustive()
    }
}

/// What a turn yields, in order: the session id, text as it arrives and each complete
/// message, then exactly one `Done`; `Quota` may come at any point before the end.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    /// The session's id, to store and resume later.
    Session(String),
    TextDelta(String),
    /// One complete message of the turn: the assistant's (text, tool calls) or the tool
    /// results it got back (role `User`), in the shapes the Messages API uses.
    Message {
        role: Role,
        content: Vec<ContentBlock>,
    },
    /// What the provider's account said of its quota windows (the 5-hour and weekly
    /// windows of a subscription), whether or not it refused the turn; nothing for the
    /// thread. Providers that learn nothing of quotas never send it.
    Quota(Vec<QuotaWindow>),
    /// The turn ended; the last `Message` was the reply.
    Done(TurnUsage),
    /// The session to resume is gone (never saved, or deleted): the turn ends here, and
    /// the next one should start a new session and tell it the thread again.
    Lost,
}

/// What a turn used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TurnUsage {
    pub model: String,
    pub usage: Usage,
    /// What the provider says the turn cost, when it says.
    pub cost_usd: Option<f64>,
}

/// Whether a provider can answer now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderStatus {
    pub ready: bool,
    /// Why it can or cannot, in plain words.
    pub reason: String,
}

/// A main thread that is an agent session of its own.
pub trait SessionProvider: Send + Sync + fmt::Debug + 'static {
    /// The provider's name (`claude-code`).
    fn name(&self) -> &str;

    /// Whether it can answer now (its command found, its user logged in).
    fn status(&self) -> ProviderStatus;

    /// Runs one turn: sends `turn.input` to the user's session (resuming or starting it)
    /// and streams what comes back. An `Err` item ends the stream.
    fn turn(&self, turn: SessionTurn) -> BoxStream<'static, Result<SessionEvent, ModelError>>;
}

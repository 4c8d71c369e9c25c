//! Agent Client Protocol (ACP) agents — OpenCode (`opencode acp`), Gemini CLI
//! (`gemini --acp`) and others — behind the coding-agent port of `mainloop-agent`.
//!
//! The protocol engine is the `agent-client-protocol` crate, connected over the
//! placed process's stdin and stdout ([`lines`] screens what the agent writes). What
//! the agent says is translated into port events in [`normalize`], the session's
//! mode in [`modes`], file requests are confined to the worktree by [`paths`], and
//! [`session`] is the process plumbing.
//! Form elicitations become clarifying questions and their answers typed content ([`elicit`]).

pub mod elicit;
pub mod lines;
pub mod modes;
pub mod normalize;
pub mod paths;
pub mod quirks;
pub mod session;

use mainloop_agent::{Agent, AgentError, AgentSession, Placement, RunSpec};

pub use session::AcpSession;

/// Default cap on one line of the agent's output; a longer line becomes `Malformed`.
pub const DEFAULT_MAX_LINE_BYTES: usize = 10 * 1024 * 1024;

/// Everything that goes wrong in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A file request for a path the agent may not touch.
    #[error("refused {path}: {reason}")]
    PathRefused { path: String, reason: String },
    /// A file write while the session is read-only.
    #[error("refused to write {path}: the session is in plan mode (read-only)")]
    ReadOnly { path: String },
    #[error("file i/o on {path}: {reason}")]
    Io { path: String, reason: String },
    /// An elicitation that cannot be asked, or an answer that does not fit its form.
    #[error("elicitation: {0}")]
    Elicitation(String),
}

/// An agent speaking ACP over stdio, started with `command` (program first, e.g.
/// `["opencode", "acp"]` or `["gemini", "--acp"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpAgent {
    name: String,
    command: Vec<String>,
    max_line_bytes: usize,
}

impl AcpAgent {
    #[must_use]
    pub fn new(name: impl Into<String>, command: Vec<String>) -> Self {
        Self {
            name: name.into(),
            command,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// Overrides the output line cap ([`DEFAULT_MAX_LINE_BYTES`]).
    #[must_use]
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max.max(1);
        self
    }

    /// Like [`Agent::start`], with the concrete session type.
    pub fn spawn(
        &self,
        spec: RunSpec,
        placement: &dyn Placement,
    ) -> Result<AcpSession, AgentError> {
        let Some((program, args)) = self.command.split_first() else {
            return Err(AgentError::Spawn("empty command".to_owned()));
        };
        let launch = mainloop_agent::Launch {
            program: program.clone(),
            args: args.to_vec(),
            cwd: spec.cwd.clone(),
            env: spec.env.clone(),
        };
        let placed = placement.spawn(launch)?;
        Ok(AcpSession::start(
            placed,
            spec,
            self.max_line_bytes,
            placement.shares_files(),
        ))
    }
}

impl Agent for AcpAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(
        &self,
        spec: RunSpec,
        placement: &dyn Placement,
    ) -> Result<Box<dyn AgentSession>, AgentError> {
        Ok(Box::new(self.spawn(spec, placement)?))
    }
}

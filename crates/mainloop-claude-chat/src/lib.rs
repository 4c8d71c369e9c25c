//! The main thread on Claude Code: a [`SessionProvider`] that keeps one long-lived
//! `claude` process per user (its session resumed by id when the process is new),
//! driven over stream-json with no built-in tools, mainloop's tools reaching it from
//! mainloop's own MCP server with a credential scoped to the user. The process runs
//! confined: an empty working directory, a private home, and the sandbox when there is
//! one.
//!
//! - `protocol.rs`: the command line and the output lines, as pure functions.
//! - `live.rs`: one user's process (spawn, write, read a turn's lines, kill).

mod live;
pub mod protocol;

use futures::stream::BoxStream;
use live::Live;
use mainloop_model::{ModelError, ProviderStatus, SessionEvent, SessionProvider, SessionTurn};
use mainloop_sandbox::Bubblewrap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The sandbox the process runs in, and the files of the server user's bound into its
/// private home (the `claude login` credentials).
#[derive(Clone, Debug)]
pub struct ChatSandbox {
    pub bwrap: Bubblewrap,
    pub home_files: Vec<(PathBuf, PathBuf)>,
}

/// How the provider runs Claude Code.
#[derive(Clone, Debug)]
pub struct ClaudeChatConfig {
    /// The program and any leading arguments.
    pub command: Vec<String>,
    /// The process's environment (credentials included); `HOME` is replaced by the
    /// private home when sandboxed.
    pub env: Vec<(String, String)>,
    /// Per-user working directories and homes: `<root>/<user>/{work,home}`.
    pub root: PathBuf,
    /// Where process records go, so a server that was killed stops them at its next
    /// start (the workers' record directory).
    pub pid_dir: PathBuf,
    pub sandbox: Option<ChatSandbox>,
    /// mainloop's MCP endpoint as the process reaches it.
    pub mcp_url: String,
    pub model: Option<String>,
    /// A turn with no output for this long is abandoned (the process is killed).
    pub silence_timeout: Duration,
    /// A process idle this long is stopped; the next turn resumes its session.
    pub idle_timeout: Duration,
}

/// The `claude-code` provider.
#[derive(Debug)]
pub struct ClaudeChat {
    cfg: Arc<ClaudeChatConfig>,
    lives: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Live>>>>>,
}

impl ClaudeChat {
    #[must_use]
    pub fn new(cfg: ClaudeChatConfig) -> Self {
        Self {
            cfg: Arc::new(cfg),
            lives: Mutex::new(HashMap::new()),
        }
    }

    /// How it runs Claude Code.
    #[must_use]
    pub fn config(&self) -> &ClaudeChatConfig {
        &self.cfg
    }

    fn slot(&self, user: &str) -> Arc<tokio::sync::Mutex<Option<Live>>> {
        let mut lives = self
            .lives
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(lives.entry(user.to_owned()).or_default())
    }
}

/// Where `claude login` keeps its credentials.
fn login_file(env: &[(String, String)]) -> Option<PathBuf> {
    env.iter()
        .find(|(k, _)| k == "HOME")
        .map(|(_, h)| Path::new(h).join(".claude").join(".credentials.json"))
}

/// Whether the environment or the home carries credentials Claude Code can use.
fn credentials(env: &[(String, String)]) -> Option<&'static str> {
    let set = |k: &str| env.iter().any(|(n, v)| n == k && !v.trim().is_empty());
    if set("CLAUDE_CODE_OAUTH_TOKEN") {
        Some("CLAUDE_CODE_OAUTH_TOKEN")
    } else if set("ANTHROPIC_API_KEY") || set("ANTHROPIC_AUTH_TOKEN") {
        Some("ANTHROPIC_* credentials")
    } else if login_file(env).is_some_and(|f| f.is_file()) {
        Some("`claude login`")
    } else {
        None
    }
}

impl SessionProvider for ClaudeChat {
    fn name(&self) -> &str {
        "claude-code"
    }

    fn status(&self) -> ProviderStatus {
        let program = self.cfg.command.first().cloned().unwrap_or_default();
        if program.is_empty() || !Path::new(&program).is_file() {
            return ProviderStatus {
                ready: false,
                reason: format!("the `claude` command was not found ({program:?})"),
            };
        }
        match credentials(&self.cfg.env) {
            Some(how) => ProviderStatus {
                ready: true,
                reason: format!("Claude Code at {program}, signed in with {how}"),
            },
            None => ProviderStatus {
                ready: false,
                reason: "Claude Code is not logged in for the user running mainloop".to_owned(),
            },
        }
    }

    fn turn(&self, turn: SessionTurn) -> BoxStream<'static, Result<SessionEvent, ModelError>> {
        live::turn(Arc::clone(&self.cfg), self.slot(&turn.user), turn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_environment_or_the_login_file() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            credentials(&env(&[("CLAUDE_CODE_OAUTH_TOKEN", "t")])),
            Some("CLAUDE_CODE_OAUTH_TOKEN")
        );
        assert_eq!(credentials(&env(&[("ANTHROPIC_API_KEY", " ")])), None);
        let home = std::env::temp_dir().join(format!("ml-cred-{}", uuid::Uuid::new_v4()));
        let h = home.display().to_string();
        assert_eq!(credentials(&env(&[("HOME", &h)])), None);
        std::fs::create_dir_all(home.join(".claude")).unwrap();
        std::fs::write(home.join(".claude/.credentials.json"), "{}").unwrap();
        assert_eq!(credentials(&env(&[("HOME", &h)])), Some("`claude login`"));
        std::fs::remove_dir_all(&home).unwrap();
    }
}

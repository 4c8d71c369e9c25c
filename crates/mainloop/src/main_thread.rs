//! What answers the chat: the choice between the Anthropic API and the user's own
//! Claude Code (a pure decision over the configuration and what was found), and the
//! `claude-code` provider's wiring.

use mainloop_claude_chat::{ChatSandbox, ClaudeChat, ClaudeChatConfig};
use mainloop_config::{Config, ModelProviderKind};
use mainloop_engine::MainChoice;
use mainloop_worker::WorkerSandbox;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The provider to use, and why, given the configuration and where `claude` was found.
#[must_use]
pub fn choose(config: &Config, claude: Option<&Path>) -> (Option<ModelProviderKind>, String) {
    let key = config.model.api_key.is_some();
    match config.model.provider {
        Some(ModelProviderKind::None) => (None, "model.provider is \"none\"".to_owned()),
        Some(ModelProviderKind::Anthropic) if key => (
            Some(ModelProviderKind::Anthropic),
            "model.provider is \"anthropic\" and an API key is set.".to_owned(),
        ),
        Some(ModelProviderKind::Anthropic) => (
            None,
            "model.provider is \"anthropic\" but no API key is set (ANTHROPIC_API_KEY or model.api_key)".to_owned(),
        ),
        Some(ModelProviderKind::ClaudeCode) => (
            Some(ModelProviderKind::ClaudeCode),
            "model.provider is \"claude-code\".".to_owned(),
        ),
        None if key => (
            Some(ModelProviderKind::Anthropic),
            "An API key is set, so the Anthropic API answers.".to_owned(),
        ),
        None => match claude {
            Some(_) => (
                Some(ModelProviderKind::ClaudeCode),
                "No API key is set and the `claude` command was found, so Claude Code answers.".to_owned(),
            ),
            None => (
                None,
                format!(
                    "No API key is set and the `claude` command ({}) was not found",
                    config.workers.claude_command
                ),
            ),
        },
    }
}

/// Where `command`'s program is, looked up on `PATH` from `env` when it is a bare name.
#[must_use]
pub fn find_claude(command: &[String], env: &[(String, String)]) -> Option<PathBuf> {
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| std::ffi::OsStr::new(v.as_str()));
    mainloop_sandbox::which(command.first()?, path)
}

/// The engine's record of the choice.
#[must_use]
pub fn record(kind: Option<ModelProviderKind>, reason: String) -> MainChoice {
    MainChoice {
        provider: kind.map(|k| k.as_str().to_owned()),
        reason,
    }
}

/// The `claude-code` provider for a server listening on `addr`.
#[must_use]
pub fn claude_code(
    config: &Config,
    mut command: Vec<String>,
    found: Option<PathBuf>,
    env: Vec<(String, String)>,
    sandbox: Option<&WorkerSandbox>,
    addr: SocketAddr,
) -> Arc<ClaudeChat> {
    if let (Some(first), Some(found)) = (command.first_mut(), found) {
        *first = found.display().to_string();
    }
    // The process reaches the server on loopback whatever address it listens on.
    let host = if addr.is_ipv6() { "[::1]" } else { "127.0.0.1" };
    Arc::new(ClaudeChat::new(ClaudeChatConfig {
        command,
        env,
        root: config.data_dir.join("main-thread"),
        pid_dir: config.data_dir.join("agents"),
        sandbox: sandbox.map(|s| ChatSandbox {
            bwrap: s.bwrap.clone(),
            home_files: s.home_files.clone(),
        }),
        mcp_url: format!("http://{host}:{}/api/mcp", addr.port()),
        model: config.model.claude_code_model.clone(),
        silence_timeout: Duration::from_secs(config.model.request_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(config.workers.idle_timeout_secs.max(1)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_follows_the_key_then_the_command() {
        let mut c = Config::default();
        let claude = Path::new("/usr/bin/claude");
        assert_eq!(
            choose(&c, Some(claude)).0,
            Some(ModelProviderKind::ClaudeCode)
        );
        let (none, why) = choose(&c, None);
        assert_eq!(none, None);
        assert!(why.contains("was not found"), "{why}");
        c.model.api_key = Some("k".to_owned().into());
        assert_eq!(
            choose(&c, Some(claude)).0,
            Some(ModelProviderKind::Anthropic)
        );
        c.model.provider = Some(ModelProviderKind::ClaudeCode);
        assert_eq!(choose(&c, None).0, Some(ModelProviderKind::ClaudeCode));
        c.model.provider = Some(ModelProviderKind::None);
        assert_eq!(choose(&c, Some(claude)).0, None);
        c.model.provider = Some(ModelProviderKind::Anthropic);
        c.model.api_key = None;
        assert_eq!(choose(&c, Some(claude)).0, None);
    }
}

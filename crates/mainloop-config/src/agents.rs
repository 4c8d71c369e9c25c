//! Coding agents: the built-in entries (`claude`, `codex`, `gemini`, `opencode`), the
//! `[agents.<name>]` tables that override their fields or declare more, and the
//! effective list the server runs tasks with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Config, ConfigError};

/// How mainloop talks to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentProtocol {
    /// Claude Code's `-p` stream-json.
    ClaudeCode,
    /// `codex app-server` JSON-RPC.
    CodexAppServer,
    /// The Agent Client Protocol (`gemini --acp`, `opencode acp`, …).
    Acp,
}

/// One `[agents.<name>]` table. For a built-in agent every field is optional (unset
/// keeps the built-in value); a new agent needs `protocol` and `command`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    /// `"claude-code"`, `"codex-app-server"` or `"acp"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<AgentProtocol>,
    /// Program and arguments, e.g. `["gemini", "--acp"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Names of environment variables passed through to the agent (its credentials,
    /// say); nothing else of the server's environment reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_env: Option<Vec<String>>,
    /// Variables set for the agent, over the built-in ones (not for secrets: those
    /// belong in the server's environment, named in `pass_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Runs of this agent at once (within `workers.max_agents`). Unset: only the
    /// global cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
}

/// An agent as the server runs it: built-in values with the file's overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    pub name: String,
    pub protocol: AgentProtocol,
    pub command: Vec<String>,
    pub pass_env: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub max_concurrent: Option<usize>,
}

/// OpenCode's permissions as mainloop needs them: edits and commands are asked for, so
/// the worker's policy answers them. Scoped to its build agent, since a global rule
/// would also lift its plan agent's refusal to write.
const OPENCODE_PERMISSIONS: &str =
    r#"{"agent":{"build":{"permission":{"edit":"ask","bash":"ask"}}}}"#;

/// The agents every server knows, before any `[agents.<name>]` table.
fn builtins(config: &Config) -> BTreeMap<String, AgentSettings> {
    let entry = |name: &str, protocol, command: Vec<String>, pass_env: &[&str]| {
        (
            name.to_owned(),
            AgentSettings {
                name: name.to_owned(),
                protocol,
                command,
                pass_env: pass_env.iter().map(|s| (*s).to_owned()).collect(),
                env: BTreeMap::new(),
                max_concurrent: None,
            },
        )
    };
    let argv = |words: &[&str]| words.iter().map(|s| (*s).to_owned()).collect();
    let mut agents = BTreeMap::from([
        entry(
            "claude",
            AgentProtocol::ClaudeCode,
            config
                .workers
                .claude_command
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            &[],
        ),
        entry(
            "codex",
            AgentProtocol::CodexAppServer,
            argv(&["codex", "app-server"]),
            &["OPENAI_API_KEY", "OPENAI_BASE_URL"],
        ),
        entry(
            "gemini",
            AgentProtocol::Acp,
            argv(&["gemini", "--acp"]),
            &[
                "GEMINI_API_KEY",
                "GOOGLE_API_KEY",
                "GOOGLE_GEMINI_BASE_URL",
                "GOOGLE_CLOUD_PROJECT",
                "GOOGLE_GENAI_USE_VERTEXAI",
            ],
        ),
        entry(
            "opencode",
            AgentProtocol::Acp,
            argv(&["opencode", "acp"]),
            &["OPENCODE_CONFIG", "OPENAI_API_KEY"],
        ),
    ]);
    if let Some(opencode) = agents.get_mut("opencode") {
        opencode.env = BTreeMap::from([
            (
                "OPENCODE_CONFIG_CONTENT".to_owned(),
                OPENCODE_PERMISSIONS.to_owned(),
            ),
            ("OPENCODE_DISABLE_AUTOUPDATE".to_owned(), "1".to_owned()),
        ]);
    }
    agents
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn refuse(name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Agent {
        name: name.chars().take(40).collect(),
        message: message.into(),
    }
}

impl Config {
    /// The configured agents, sorted by name. Loading has validated them.
    #[must_use]
    pub fn agents(&self) -> Vec<AgentSettings> {
        self.resolve_agents().unwrap_or_default()
    }

    /// Built-ins overlaid with the file's tables, each checked.
    pub(crate) fn resolve_agents(&self) -> Result<Vec<AgentSettings>, ConfigError> {
        let mut agents = builtins(self);
        for (name, entry) in &self.agents {
            if !valid_name(name) {
                return Err(refuse(
                    name,
                    "is not an agent name: use 1 to 32 lowercase letters, digits or '-'",
                ));
            }
            let agent = match agents.get(name) {
                Some(builtin) => AgentSettings {
                    name: name.clone(),
                    protocol: entry.protocol.unwrap_or(builtin.protocol),
                    command: entry
                        .command
                        .clone()
                        .unwrap_or_else(|| builtin.command.clone()),
                    pass_env: entry
                        .pass_env
                        .clone()
                        .unwrap_or_else(|| builtin.pass_env.clone()),
                    env: builtin
                        .env
                        .clone()
                        .into_iter()
                        .chain(entry.env.clone().unwrap_or_default())
                        .collect(),
                    max_concurrent: entry.max_concurrent.or(builtin.max_concurrent),
                },
                None => AgentSettings {
                    name: name.clone(),
                    protocol: entry.protocol.ok_or_else(|| {
                        refuse(
                            name,
                            "needs a protocol: \"claude-code\", \"codex-app-server\" or \"acp\"",
                        )
                    })?,
                    command: entry.command.clone().ok_or_else(|| {
                        refuse(
                            name,
                            "needs a command, e.g. command = [\"my-agent\", \"--acp\"]",
                        )
                    })?,
                    pass_env: entry.pass_env.clone().unwrap_or_default(),
                    env: entry.env.clone().unwrap_or_default(),
                    max_concurrent: entry.max_concurrent,
                },
            };
            agents.insert(name.clone(), agent);
        }
        for agent in agents.values() {
            let name = &agent.name;
            match agent.command.first() {
                None => return Err(refuse(name, "has an empty command")),
                Some(program) if program.trim().is_empty() => {
                    return Err(refuse(name, "has an empty program in its command"));
                }
                Some(_) => {}
            }
            if agent.command.iter().any(|arg| arg.contains('\0')) {
                return Err(refuse(name, "has a NUL character in its command"));
            }
            if let Some(bad) = agent.pass_env.iter().find(|v| !valid_env_name(v)) {
                return Err(refuse(
                    name,
                    format!("pass_env lists {bad:?}, which is not an environment variable name"),
                ));
            }
            if let Some(bad) = agent.env.keys().find(|v| !valid_env_name(v)) {
                return Err(refuse(
                    name,
                    format!("env sets {bad:?}, which is not an environment variable name"),
                ));
            }
            if agent.env.values().any(|v| v.contains('\0')) {
                return Err(refuse(name, "has a NUL character in an env value"));
            }
            if agent.max_concurrent == Some(0) {
                return Err(refuse(name, "max_concurrent must be greater than 0"));
            }
        }
        let default = &self.workers.default_agent;
        if !agents.contains_key(default) {
            return Err(ConfigError::Invalid {
                key: "workers.default_agent",
                message: format!(
                    "names no configured agent ({default:?}); configured: {}",
                    agents.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        Ok(agents.into_values().collect())
    }
}

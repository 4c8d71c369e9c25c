//! The configured coding agents as the engine lists them and the worker runs them: the
//! catalog from the configuration, and the registry of adapters by name (Claude Code,
//! Codex's app-server or an ACP agent, by each agent's protocol), each given the
//! variables its `pass_env` names from the server's environment.

use anyhow::{Context, Result};
use mainloop_acp::AcpAgent;
use mainloop_agent::{Agent, AgentError, AgentSession, ClaudeCode, Placement, RunSpec};
use mainloop_codex::Codex;
use mainloop_config::{AgentProtocol, AgentSettings, Config};
use mainloop_domain::agents::{AgentCatalog, AgentName, AgentSpec, Protocol};
use mainloop_worker::AgentRegistry;
use std::sync::Arc;

const fn protocol(p: AgentProtocol) -> Protocol {
    match p {
        AgentProtocol::ClaudeCode => Protocol::ClaudeCode,
        AgentProtocol::CodexAppServer => Protocol::CodexAppServer,
        AgentProtocol::Acp => Protocol::Acp,
    }
}

fn name(settings: &AgentSettings) -> Result<AgentName> {
    AgentName::parse(&settings.name).with_context(|| format!("agents.{}", settings.name))
}

/// The configured agents and the default one.
pub fn catalog(config: &Config) -> Result<AgentCatalog> {
    let specs = config
        .agents()
        .iter()
        .map(|a| {
            Ok(AgentSpec {
                name: name(a)?,
                protocol: protocol(a.protocol),
                command: a.command.clone(),
                pass_env: a.pass_env.clone(),
                max_concurrent: a.max_concurrent,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let default =
        AgentName::parse(&config.workers.default_agent).context("workers.default_agent")?;
    AgentCatalog::new(specs, default).context("workers.default_agent names no configured agent")
}

/// The adapters by agent name. `claude_command` is the resolved command of the
/// `claude` agent when its command comes from `workers.claude_command`.
pub fn registry(config: &Config, claude_command: &[String]) -> Result<AgentRegistry> {
    let mut registry = AgentRegistry::new();
    for settings in config.agents() {
        let explicit = config
            .agents
            .get(&settings.name)
            .and_then(|e| e.command.clone());
        let agent: Arc<dyn Agent> = match settings.protocol {
            AgentProtocol::ClaudeCode => {
                let command = match explicit {
                    Some(command) => command,
                    None if settings.name == "claude" => claude_command.to_vec(),
                    None => settings.command.clone(),
                };
                Arc::new(ClaudeCode::new(command))
            }
            AgentProtocol::CodexAppServer => Arc::new(Codex::new(settings.command.clone())),
            AgentProtocol::Acp => Arc::new(AcpAgent::new(
                settings.name.clone(),
                settings.command.clone(),
            )),
        };
        let agent = with_env(agent, &settings, |k| std::env::var(k).ok());
        registry = registry.with(
            name(&settings)?,
            agent,
            protocol(settings.protocol),
            settings.max_concurrent,
        );
    }
    Ok(registry)
}

/// `agent`, started with its settings' `env` and the variables its `pass_env` names
/// that `value` has (the server's environment) added to its environment.
fn with_env(
    agent: Arc<dyn Agent>,
    settings: &AgentSettings,
    value: impl Fn(&str) -> Option<String>,
) -> Arc<dyn Agent> {
    let extra: Vec<(String, String)> = settings
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(
            settings
                .pass_env
                .iter()
                .filter_map(|k| value(k).map(|v| (k.clone(), v))),
        )
        .collect();
    if extra.is_empty() {
        return agent;
    }
    Arc::new(PassEnv { agent, extra })
}

/// An agent whose runs get extra environment variables (which may hold API keys: the
/// values never reach `Debug`).
struct PassEnv {
    agent: Arc<dyn Agent>,
    extra: Vec<(String, String)>,
}

impl std::fmt::Debug for PassEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.extra.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("PassEnv")
            .field("agent", &self.agent)
            .field("names", &names)
            .finish()
    }
}

impl Agent for PassEnv {
    fn name(&self) -> &str {
        self.agent.name()
    }

    fn start(
        &self,
        mut spec: RunSpec,
        placement: &dyn Placement,
    ) -> Result<Box<dyn AgentSession>, AgentError> {
        for (k, v) in &self.extra {
            spec.env.retain(|(name, _)| name != k);
            spec.env.push((k.clone(), v.clone()));
        }
        self.agent.start(spec, placement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_env_adds_only_set_variables_and_hides_their_values() {
        let mut settings = AgentSettings {
            name: "codex".into(),
            protocol: AgentProtocol::CodexAppServer,
            command: vec!["codex".into()],
            pass_env: vec!["OPENAI_API_KEY".to_owned(), "UNSET".to_owned()],
            env: std::collections::BTreeMap::new(),
            max_concurrent: None,
        };
        let agent: Arc<dyn Agent> = Arc::new(Codex::new(vec!["codex".into()]));
        let wrapped = with_env(agent, &settings, |k| {
            (k == "OPENAI_API_KEY").then(|| "sk-secret".to_owned())
        });
        let shown = format!("{wrapped:?}");
        assert!(shown.contains("OPENAI_API_KEY"), "{shown}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(!shown.contains("UNSET"), "{shown}");
        let bare: Arc<dyn Agent> = Arc::new(Codex::new(vec!["codex".into()]));
        let unwrapped = with_env(Arc::clone(&bare), &settings, |_| None);
        assert!(!format!("{unwrapped:?}").contains("PassEnv"));
        settings.env.insert("OPENCODE_X".into(), "1".into());
        assert!(format!("{:?}", with_env(bare, &settings, |_| None)).contains("OPENCODE_X"));
    }
}

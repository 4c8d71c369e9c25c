//! The configured coding agents as the engine lists them and the worker runs them: the
//! catalog from the configuration, and the registry of adapters by name (Claude Code
//! for every `claude-code` agent; an agent whose protocol this build has no adapter for
//! yet is left out, and its tasks fail saying so).

use anyhow::{Context, Result};
use mainloop_agent::{Agent, ClaudeCode};
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
        let agent: Arc<dyn Agent> = match settings.protocol {
            AgentProtocol::ClaudeCode => {
                let explicit = config
                    .agents
                    .get(&settings.name)
                    .and_then(|e| e.command.clone());
                let command = match explicit {
                    Some(command) => command,
                    None if settings.name == "claude" => claude_command.to_vec(),
                    None => settings.command.clone(),
                };
                Arc::new(ClaudeCode::new(command))
            }
            AgentProtocol::CodexAppServer | AgentProtocol::Acp => continue,
        };
        registry = registry.with(name(&settings)?, agent, settings.max_concurrent);
    }
    Ok(registry)
}

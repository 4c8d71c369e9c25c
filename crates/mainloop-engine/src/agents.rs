//! The configured agents as the API lists them: the catalog, and per agent whether its
//! program is installed here and what its `--version` says (asked once per server start).

use crate::Engine;
use mainloop_domain::agents::{AgentInfo, AgentSpec, find_program, version_line};
use std::path::Path;
use std::time::Duration;

/// How long `<program> --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server found of one agent's program.
#[derive(Clone, Debug, Default)]
pub(crate) struct Probe {
    installed: bool,
    version: Option<String>,
}

impl Engine {
    /// The configured agents, sorted by name, with what this server found of each.
    pub async fn agents(&self) -> Vec<AgentInfo> {
        let catalog = &self.config().agents;
        let probes = self
            .inner
            .agent_probes
            .get_or_init(|| async {
                futures::future::join_all(catalog.agents().iter().map(probe)).await
            })
            .await;
        catalog
            .agents()
            .iter()
            .zip(
                probes
                    .iter()
                    .cloned()
                    .chain(std::iter::repeat(Probe::default())),
            )
            .map(|(spec, probe)| AgentInfo {
                name: spec.name.clone(),
                protocol: spec.protocol,
                command: spec.command.clone(),
                installed: probe.installed,
                version: probe.version,
                capabilities: spec.protocol.capabilities(),
                max_concurrent: spec.max_concurrent.map(|n| n as u64),
                default: &spec.name == catalog.default_agent(),
            })
            .collect()
    }
}

fn is_program(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn probe(spec: &AgentSpec) -> Probe {
    let program = spec.command.first().map_or("", String::as_str);
    let path = std::env::var("PATH").ok();
    let Some(found) = find_program(program, path.as_deref(), is_program) else {
        return Probe::default();
    };
    let output = tokio::process::Command::new(&found)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group, like every child of the server; killed if it outlasts
        // the timeout.
        .process_group(0)
        .kill_on_drop(true)
        .output();
    let version = match tokio::time::timeout(VERSION_TIMEOUT, output).await {
        Ok(Ok(out)) if out.status.success() => version_line(&String::from_utf8_lossy(&out.stdout)),
        _ => None,
    };
    Probe {
        installed: true,
        version,
    }
}

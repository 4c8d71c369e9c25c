//! Which coding agent a task runs: agent names, the protocols mainloop speaks, what each
//! protocol can do (the one table `GET /api/agents` and the README are made from), the
//! configured agents and the choice of a task's agent.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use utoipa::ToSchema;

/// The agent a task runs when nothing else chooses one.
pub const DEFAULT_AGENT: &str = "claude";

/// Longest agent name.
pub const MAX_AGENT_NAME: usize = 32;

/// A configured agent's name: 1 to 32 lowercase letters, digits and `-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[a-z0-9-]{1,32}$", example = "claude")]
pub struct AgentName(String);

/// Why a string is not an agent name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an agent name is 1 to {MAX_AGENT_NAME} lowercase letters, digits or '-', got {0:?}")]
pub struct BadAgentName(pub String);

impl AgentName {
    /// Checks `name`.
    pub fn parse(name: &str) -> Result<Self, BadAgentName> {
        let ok = !name.is_empty()
            && name.len() <= MAX_AGENT_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            // Quoted back shortened: the name may be anything a client sent.
            Err(BadAgentName(name.chars().take(40).collect()))
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for AgentName {
    fn default() -> Self {
        Self(DEFAULT_AGENT.to_owned())
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AgentName {
    type Error = BadAgentName;
    fn try_from(s: String) -> Result<Self, BadAgentName> {
        Self::parse(&s)
    }
}

impl From<AgentName> for String {
    fn from(n: AgentName) -> Self {
        n.0
    }
}

impl std::str::FromStr for AgentName {
    type Err = BadAgentName;
    fn from_str(s: &str) -> Result<Self, BadAgentName> {
        Self::parse(s)
    }
}

/// How mainloop talks to an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Claude Code's `-p` stream-json over stdio.
    ClaudeCode,
    /// Codex's `app-server` JSON-RPC over stdio.
    CodexAppServer,
    /// The Agent Client Protocol (Gemini CLI, OpenCode, …).
    Acp,
}

impl Protocol {
    pub const ALL: [Self; 3] = [Self::ClaudeCode, Self::CodexAppServer, Self::Acp];

    /// The name used in configuration and the API.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude-code",
            Self::CodexAppServer => "codex-app-server",
            Self::Acp => "acp",
        }
    }

    /// What an agent speaking this protocol can do.
    #[must_use]
    pub const fn capabilities(self) -> Capabilities {
        match self {
            Self::ClaudeCode => Capabilities {
                plan_mode: PlanMode::Native,
                questions: QuestionMode::Native,
                resume: true,
                permission_requests: true,
                cost: CostReport::Usd,
                streaming: true,
            },
            Self::CodexAppServer => Capabilities {
                plan_mode: PlanMode::ReadOnlySandbox,
                questions: QuestionMode::Convention,
                resume: true,
                permission_requests: true,
                cost: CostReport::Tokens,
                streaming: true,
            },
            Self::Acp => Capabilities {
                plan_mode: PlanMode::AgentModeOrPolicy,
                questions: QuestionMode::ElicitationOrConvention,
                resume: true,
                permission_requests: true,
                cost: CostReport::Tokens,
                streaming: true,
            },
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown agent protocol {s:?}"))
    }
}

/// How the read-only planning phase is kept read-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlanMode {
    /// The agent's own plan mode.
    Native,
    /// A read-only sandbox and a planning prompt.
    ReadOnlySandbox,
    /// The agent's plan or read-only mode where it offers one, else a read-only
    /// permission policy and a planning prompt.
    AgentModeOrPolicy,
}

/// How the agent asks clarifying questions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QuestionMode {
    /// The agent's own question tool.
    Native,
    /// A convention the worker's prompt teaches the agent.
    Convention,
    /// The protocol's elicitation where the agent uses it, else the convention.
    ElicitationOrConvention,
}

/// What a finished turn reports about its price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CostReport {
    /// Tokens and the cost in US dollars.
    Usd,
    /// Tokens only.
    Tokens,
}

/// What an agent can do, by protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Capabilities {
    pub plan_mode: PlanMode,
    pub questions: QuestionMode,
    /// A session continues after a restart or a park.
    pub resume: bool,
    /// Commands and file writes are asked for and answered by mainloop's policy.
    pub permission_requests: bool,
    pub cost: CostReport,
    /// Replies arrive as they are written.
    pub streaming: bool,
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

impl Capabilities {
    /// The capability table's rows: a label and each protocol's cell, in words.
    fn rows() -> Vec<(&'static str, [String; 3])> {
        let cells = |f: fn(Capabilities) -> String| Protocol::ALL.map(|p| f(p.capabilities()));
        vec![
            (
                "Plan (read-only)",
                cells(|c| {
                    match c.plan_mode {
                        PlanMode::Native => "its own plan mode",
                        PlanMode::ReadOnlySandbox => "read-only sandbox + planning prompt",
                        PlanMode::AgentModeOrPolicy => {
                            "its plan mode where offered, else read-only policy"
                        }
                    }
                    .to_owned()
                }),
            ),
            (
                "Clarifying questions",
                cells(|c| {
                    match c.questions {
                        QuestionMode::Native => "its own question tool",
                        QuestionMode::Convention => "a convention taught by the prompt",
                        QuestionMode::ElicitationOrConvention => {
                            "elicitation where the agent uses it, else the convention"
                        }
                    }
                    .to_owned()
                }),
            ),
            ("Resume after restart or park", cells(|c| yes(c.resume))),
            (
                "Permission requests answered by mainloop",
                cells(|c| yes(c.permission_requests)),
            ),
            (
                "Cost reporting",
                cells(|c| {
                    match c.cost {
                        CostReport::Usd => "tokens and US dollars",
                        CostReport::Tokens => "tokens only",
                    }
                    .to_owned()
                }),
            ),
            ("Streamed replies", cells(|c| yes(c.streaming))),
        ]
    }
}

/// The capability table as Markdown, one column per protocol (the README carries it).
#[must_use]
pub fn capability_table() -> String {
    let mut out = String::from("| | ");
    let heads: Vec<String> = Protocol::ALL
        .iter()
        .map(|p| {
            let agents = match p {
                Protocol::ClaudeCode => "claude",
                Protocol::CodexAppServer => "codex",
                Protocol::Acp => "gemini, opencode, …",
            };
            format!("`{p}` ({agents})")
        })
        .collect();
    out.push_str(&heads.join(" | "));
    out.push_str(" |\n|---|---|---|---|\n");
    for (label, cells) in Capabilities::rows() {
        out.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    out
}

/// One configured agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    pub name: AgentName,
    pub protocol: Protocol,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Environment variables passed through to the agent.
    pub pass_env: Vec<String>,
    /// Runs of this agent at once; `None`: only the global cap.
    pub max_concurrent: Option<usize>,
}

/// The configured agents and the default one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCatalog {
    agents: Vec<AgentSpec>,
    default: AgentName,
}

/// A task asked for an agent that is not configured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("agent {asked:?} is not configured; configured agents: {}", configured.join(", "))]
pub struct UnknownAgent {
    pub asked: String,
    pub configured: Vec<String>,
}

impl Default for AgentCatalog {
    /// Claude Code alone, as `claude`.
    fn default() -> Self {
        Self {
            agents: vec![AgentSpec {
                name: AgentName::default(),
                protocol: Protocol::ClaudeCode,
                command: vec!["claude".to_owned()],
                pass_env: Vec::new(),
                max_concurrent: None,
            }],
            default: AgentName::default(),
        }
    }
}

impl AgentCatalog {
    /// The agents sorted by name; `None` when `default` is not among them.
    #[must_use]
    pub fn new(mut agents: Vec<AgentSpec>, default: AgentName) -> Option<Self> {
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        agents.dedup_by(|a, b| a.name == b.name);
        agents
            .iter()
            .any(|a| a.name == default)
            .then_some(Self { agents, default })
    }

    #[must_use]
    pub fn agents(&self) -> &[AgentSpec] {
        &self.agents
    }

    #[must_use]
    pub fn default_agent(&self) -> &AgentName {
        &self.default
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&AgentSpec> {
        self.agents.iter().find(|a| a.name.as_str() == name)
    }

    /// The agent a new task runs: its own choice, else the project's default (when that
    /// is still configured), else the configured default. A choice that names no
    /// configured agent is refused, listing the ones there are.
    pub fn choose(
        &self,
        asked: Option<&str>,
        project_default: Option<&str>,
    ) -> Result<AgentName, UnknownAgent> {
        if let Some(asked) = asked {
            return self
                .get(asked)
                .map(|a| a.name.clone())
                .ok_or_else(|| UnknownAgent {
                    asked: asked.chars().take(40).collect(),
                    configured: self.agents.iter().map(|a| a.name.to_string()).collect(),
                });
        }
        Ok(project_default
            .and_then(|p| self.get(p))
            .map_or_else(|| self.default.clone(), |a| a.name.clone()))
    }
}

/// Where `program` is found: a path containing `/` as itself, a bare name in the first
/// directory of `path_var` (`PATH`'s `:`-separated list) where `is_program` holds.
pub fn find_program(
    program: &str,
    path_var: Option<&str>,
    is_program: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let path = PathBuf::from(program);
        return is_program(&path).then_some(path);
    }
    path_var?
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| is_program(candidate))
}

/// A configured agent as `GET /api/agents` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentInfo {
    pub name: AgentName,
    pub protocol: Protocol,
    /// Program and arguments.
    pub command: Vec<String>,
    /// The command's program is found on this server.
    pub installed: bool,
    /// The first line of `<program> --version`, when it answered.
    pub version: Option<String>,
    pub capabilities: Capabilities,
    /// Runs of this agent at once; `null`: only the global cap.
    pub max_concurrent: Option<u64>,
    /// New tasks run it unless they or their project choose another.
    pub default: bool,
}

/// The first non-empty line of a `--version` output, trimmed and kept short.
#[must_use]
pub fn version_line(output: &str) -> Option<String> {
    output
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, protocol: Protocol) -> AgentSpec {
        AgentSpec {
            name: AgentName::parse(name).unwrap(),
            protocol,
            command: vec![name.to_owned()],
            pass_env: vec![],
            max_concurrent: None,
        }
    }

    #[test]
    fn names_are_checked() {
        for ok in ["claude", "a", "gemini-2", &"x".repeat(32)] {
            assert!(AgentName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Claude", "a b", "a_b", "é", "../x", &"x".repeat(33)] {
            assert!(AgentName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<AgentName>("\"NOPE\"").is_err());
        assert_eq!(
            serde_json::to_string(&AgentName::default()).unwrap(),
            "\"claude\""
        );
    }

    #[test]
    fn the_choice_goes_task_then_project_then_default() {
        let catalog = AgentCatalog::new(
            vec![
                spec("codex", Protocol::CodexAppServer),
                spec("claude", Protocol::ClaudeCode),
            ],
            AgentName::default(),
        )
        .unwrap();
        assert_eq!(
            catalog.choose(Some("codex"), None).unwrap().as_str(),
            "codex"
        );
        assert_eq!(
            catalog.choose(None, Some("codex")).unwrap().as_str(),
            "codex"
        );
        assert_eq!(catalog.choose(None, None).unwrap().as_str(), "claude");
        // A project default no longer configured falls back rather than failing tasks.
        assert_eq!(
            catalog.choose(None, Some("gone")).unwrap().as_str(),
            "claude"
        );
        let err = catalog.choose(Some("gemini"), Some("codex")).unwrap_err();
        assert_eq!(err.configured, ["claude", "codex"]);
        assert!(err.to_string().contains("claude, codex"), "{err}");
    }

    #[test]
    fn a_catalog_needs_its_default() {
        assert!(
            AgentCatalog::new(vec![spec("codex", Protocol::Acp)], AgentName::default()).is_none()
        );
    }

    #[test]
    fn programs_are_found_on_the_path() {
        let exists = |p: &Path| p == Path::new("/usr/bin/codex") || p == Path::new("/opt/x");
        assert_eq!(
            find_program("codex", Some("/bin::/usr/bin"), exists),
            Some(PathBuf::from("/usr/bin/codex"))
        );
        assert_eq!(find_program("codex", None, exists), None);
        assert_eq!(find_program("gemini", Some("/usr/bin"), exists), None);
        assert_eq!(
            find_program("/opt/x", None, exists),
            Some(PathBuf::from("/opt/x"))
        );
        assert_eq!(find_program("", Some("/usr/bin"), |_| true), None);
    }

    #[test]
    fn version_lines_are_first_and_short() {
        assert_eq!(
            version_line("\n 2.1.3 (Claude Code)\nmore"),
            Some("2.1.3 (Claude Code)".into())
        );
        assert_eq!(version_line("  \n"), None);
        assert_eq!(version_line(&"v".repeat(500)).unwrap().len(), 200);
    }

    #[test]
    fn the_table_has_a_column_per_protocol() {
        let table = capability_table();
        for line in table.lines() {
            assert_eq!(line.matches('|').count(), 5, "{line}");
        }
        assert!(table.contains("`codex-app-server` (codex)"));
    }
}

//! mainloop's one typed configuration: the settings structs, their defaults and documentation.
//!
//! Layering (later wins): built-in defaults → `mainloop.toml` → conventional environment
//! variables (`DATABASE_URL`, `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`) → `MAINLOOP_*`
//! environment variables (nested keys joined with `__`, e.g. `MAINLOOP_MODEL__NAME`).
//! See [`Config::load`] for how the file is found, and [`EXAMPLE_TOML`] for every key.
//!
//! The field docs below are the reference documentation for each setting.

mod agents;
mod error;
mod example;
mod kubernetes;
mod load;
mod redact;
mod secret;
mod validate;
mod workers;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use agents::{AgentEntry, AgentProtocol, AgentSettings};
pub use error::ConfigError;
pub use example::EXAMPLE_TOML;
pub use kubernetes::{KubernetesConfig, KubernetesDatabaseConfig, WorkersRuntime};
pub use load::NOT_CONFIGURATION;
pub use secret::{REDACTED, Secret};
pub use workers::{SandboxMode, WorkersConfig};

/// File name looked for in the data directory and the working directory.
pub const CONFIG_FILE_NAME: &str = "mainloop.toml";

/// The whole configuration of a mainloop server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for mainloop's own state (SQLite database, worker workspaces, logs).
    /// Default: the per-user data directory, e.g. `~/.local/share/mainloop` on Linux.
    /// Env: `MAINLOOP_DATA_DIR`.
    pub data_dir: PathBuf,

    /// Address the HTTP server listens on. Default `127.0.0.1:8080` (local only; put a TLS
    /// proxy in front before exposing it). Env: `MAINLOOP_LISTEN`.
    pub listen: SocketAddr,

    /// Database to use: `sqlite://...` or `postgres://user:password@host/db`.
    /// Default: unset, meaning `sqlite://<data_dir>/mainloop.db`.
    /// Env: `MAINLOOP_DATABASE_URL`, or the conventional `DATABASE_URL`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redact::serialize_url"
    )]
    pub database_url: Option<Secret>,

    /// Externally reachable base URL of this server (e.g. `https://mainloop.example.com`),
    /// used for links in notifications. Default: unset. Env: `MAINLOOP_PUBLIC_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,

    /// The database's connection pool.
    pub database: DatabaseConfig,

    /// Login and sessions.
    pub auth: AuthConfig,

    /// The language model behind the main thread.
    pub model: ModelConfig,

    /// The background job dispatcher that drives workers.
    pub dispatcher: DispatcherConfig,

    /// Coding-agent workers.
    pub workers: WorkersConfig,

    /// Where agent runs are launched with `workers.runtime = "kubernetes"`.
    pub kubernetes: KubernetesConfig,

    /// Live previews of tasks' running work.
    pub previews: PreviewsConfig,

    /// What the main thread's context carries besides the conversation.
    pub chat: ChatConfig,

    /// Request size limits.
    pub limits: LimitsConfig,

    /// Logging.
    pub log: LogConfig,

    /// Web Push and ntfy notifications.
    pub notifications: NotificationsConfig,

    /// Projects on GitHub (or GitHub Enterprise).
    pub github: GithubConfig,

    /// Coding agents by name: `[agents.<name>]` overrides a built-in agent's fields
    /// (`claude`, `codex`, `gemini`, `opencode`) or declares another one.
    pub agents: BTreeMap<String, AgentEntry>,
}

/// Login and sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Require login. Default `true`. Only turn off for a server reachable solely by you
    /// (e.g. bound to localhost on a single-user machine). Env: `MAINLOOP_AUTH__ENABLED`.
    pub enabled: bool,

    /// How long a login session stays valid, in hours. Default `720` (30 days).
    /// Env: `MAINLOOP_AUTH__SESSION_TTL_HOURS`.
    pub session_ttl_hours: u64,
}

/// What answers the main thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelProviderKind {
    /// The Anthropic Messages API (or anything speaking it, via `base_url`).
    Anthropic,
    /// The user's own Claude Code (`claude`, on its login or its `ANTHROPIC_*`/
    /// `CLAUDE_CODE_OAUTH_TOKEN` credentials), with mainloop's tools over MCP.
    ClaudeCode,
    /// No model: the server runs, but the chat cannot answer.
    None,
}

impl ModelProviderKind {
    /// The name used in configuration and the API.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::ClaudeCode => "claude-code",
            Self::None => "none",
        }
    }
}

/// The language model behind the main thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `"anthropic"`, `"claude-code"` or `"none"`. Default: unset, which picks
    /// `anthropic` when an API key is configured, else `claude-code` when the `claude`
    /// command (`workers.claude_command`) is found. Env: `MAINLOOP_MODEL__PROVIDER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ModelProviderKind>,

    /// `--model` for the `claude-code` main thread. Default: unset (Claude Code's own
    /// default). Env: `MAINLOOP_MODEL__CLAUDE_CODE_MODEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude_code_model: Option<String>,

    /// API key for the provider. Default: unset (the chat cannot answer until it is set).
    /// Env: `MAINLOOP_MODEL__API_KEY`, or the conventional `ANTHROPIC_API_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,

    /// Base URL of the Messages API. Default `https://api.anthropic.com`.
    /// Env: `MAINLOOP_MODEL__BASE_URL`, or the conventional `ANTHROPIC_BASE_URL`.
    pub base_url: String,

    /// Model name sent to the API. Default `"claude-sonnet-4-5"`. Env: `MAINLOOP_MODEL__NAME`.
    pub name: String,

    /// Maximum tokens the model may produce per reply. Default `4096`.
    /// Env: `MAINLOOP_MODEL__MAX_TOKENS`.
    pub max_tokens: u32,

    /// How many tokens of conversation history to send per request; older turns are
    /// summarised or dropped. Default `60000`. Env: `MAINLOOP_MODEL__CONTEXT_BUDGET_TOKENS`.
    pub context_budget_tokens: usize,

    /// Give up on a model request after this many seconds. Default `300`.
    /// Env: `MAINLOOP_MODEL__REQUEST_TIMEOUT_SECS`.
    pub request_timeout_secs: u64,
}

/// The background job dispatcher that drives workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherConfig {
    /// How many jobs run at once. Default `4`. Env: `MAINLOOP_DISPATCHER__CONCURRENCY`.
    pub concurrency: usize,

    /// A claimed job is owned for this many seconds and must be renewed; if its runner dies
    /// the job becomes claimable again after this. Default `60`.
    /// Env: `MAINLOOP_DISPATCHER__LEASE_SECS`.
    pub lease_secs: u64,

    /// A job that fails this many times is given up and surfaced as a failure. Default `8`.
    /// Env: `MAINLOOP_DISPATCHER__MAX_ATTEMPTS`.
    pub max_attempts: u32,

    /// First retry delay in milliseconds; doubles per attempt. Default `500`.
    /// Env: `MAINLOOP_DISPATCHER__BACKOFF_BASE_MS`.
    pub backoff_base_ms: u64,

    /// Upper bound on the retry delay in milliseconds. Default `60000`.
    /// Env: `MAINLOOP_DISPATCHER__BACKOFF_MAX_MS`.
    pub backoff_max_ms: u64,
}

fn path_list(list: &str, home: Option<&Path>) -> Vec<PathBuf> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter_map(|p| match (p.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => Some(home.join(rest)),
            // A `~` path without a home to expand it against means nothing.
            (Some(_), None) => None,
            (None, _) => Some(PathBuf::from(p)),
        })
        .collect()
}

/// Live previews: a task's `preview` command (from its repository's `.mainloop.toml`)
/// served to its owner on a host of its own, `t-<short id>.<domain>`, on mainloop's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewsConfig {
    /// The domain preview hosts are named under. Default `"localhost"` (browsers
    /// resolve `*.localhost` to this machine); a remote deployment names its own and
    /// points a wildcard DNS record (`*.DOMAIN`) at mainloop.
    /// Env: `MAINLOOP_PREVIEWS__DOMAIN`.
    pub domain: String,
    /// Seconds without a request before a preview is stopped. Default `1800`.
    /// Env: `MAINLOOP_PREVIEWS__IDLE_TIMEOUT_SECS`.
    pub idle_timeout_secs: u64,
    /// Seconds a preview may take to answer on its port before opening it fails.
    /// Default `120`. Env: `MAINLOOP_PREVIEWS__START_TIMEOUT_SECS`.
    pub start_timeout_secs: u64,
}

impl Default for PreviewsConfig {
    fn default() -> Self {
        Self {
            domain: "localhost".to_owned(),
            idle_timeout_secs: 1800,
            start_timeout_secs: 120,
        }
    }
}

/// What the main thread's context carries besides the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// Tokens of notes and decisions every main-thread context carries, most recently
    /// written or edited first; older ones fold out (kept, listed, searchable, not sent).
    /// Default `2000`. Env: `MAINLOOP_CHAT__NOTES_BUDGET_TOKENS`.
    pub notes_budget_tokens: usize,

    /// Tokens of day, week and month digests every main-thread context carries; the
    /// oldest go first. `0` leaves them out. Default `3000`.
    /// Env: `MAINLOOP_CHAT__MEMORY_BUDGET_TOKENS`.
    pub memory_budget_tokens: usize,

    /// The time zone (an IANA name) whose midnights end the days that digests cover, for
    /// users who have not set their own. Default `"UTC"`. Env: `MAINLOOP_CHAT__TIME_ZONE`.
    pub time_zone: String,
}

/// The database's connection pool (`database_url` names the database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connections kept open while idle (PostgreSQL): more are opened when work needs
    /// them and closed again once idle, so an idle server holds few backends. Default
    /// `1`. Env: `MAINLOOP_DATABASE__MIN_CONNECTIONS`.
    pub min_connections: u32,

    /// The most connections open at once. Default `16`.
    /// Env: `MAINLOOP_DATABASE__MAX_CONNECTIONS`.
    pub max_connections: u32,
}

/// Request size limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted HTTP request body, in bytes. Default `1048576` (1 MiB).
    /// Env: `MAINLOOP_LIMITS__MAX_BODY_BYTES`.
    pub max_body_bytes: usize,

    /// Longest accepted chat message, in characters. Default `100000`.
    /// Env: `MAINLOOP_LIMITS__MAX_CHAT_CHARS`.
    pub max_chat_chars: usize,
}

/// Web Push and ntfy notifications for new inbox items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Contact URI sent to push services in every VAPID token (`sub`): a `mailto:` or
    /// `https:` URI where the push service's operator can reach whoever runs this server.
    /// Default `"https://github.com/mainloop-dev/mainloop"`.
    /// Env: `MAINLOOP_NOTIFICATIONS__VAPID_SUBJECT`.
    pub vapid_subject: String,
}

/// GitHub: where its API and git host are, the token mainloop acts with, and how often
/// it looks for news when no webhook arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// A token allowed to read and write issues, pull requests and contents (and read
    /// checks and Actions logs). Env: `GITHUB_TOKEN` or `MAINLOOP_GITHUB__TOKEN`.
    /// Never logged, never put in a git remote URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// REST API base. GitHub Enterprise: `https://HOST/api/v3`.
    /// Default `"https://api.github.com"`. Env: `GITHUB_API_URL`.
    pub api_url: String,
    /// The web host whose URLs name repositories (`https://HOST/owner/name`).
    /// Default `"github.com"`.
    pub web_host: String,
    /// Where repositories are cloned from and pushed to; `{owner}` and `{name}` are filled
    /// in. Default `"https://github.com/{owner}/{name}.git"`.
    pub git_url: String,
    /// Secret for verifying webhook deliveries (`X-Hub-Signature-256`); unset disables the
    /// webhook endpoint (polling still works). Env: `MAINLOOP_GITHUB__WEBHOOK_SECRET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<Secret>,
    /// Seconds between polls of a watched issue or pull request. Default `60`.
    pub poll_interval_secs: u64,
    /// Seconds CI may stay pending before the task fails. Default `3600`.
    pub ci_pending_timeout_secs: u64,
    /// Seconds to wait for the first check run after a push before reporting "no CI".
    /// Default `120`.
    pub ci_appear_timeout_secs: u64,
    /// "CI failed, fix it" rounds before the task fails. Default `5`.
    pub max_ci_rounds: u32,
    /// Seconds one GitHub request may take before it counts as failed (and is tried
    /// again later). Default `60`. Env: `MAINLOOP_GITHUB__REQUEST_TIMEOUT_SECS`.
    pub request_timeout_secs: u64,
    /// Label put on plan issues and pull requests. Default `"mainloop"`.
    pub label: String,
    /// Besides the token's own account, the GitHub logins (comma-separated) whose
    /// answers, plan decisions, 👍 and review feedback count; everyone else's are ignored,
    /// so a stranger on a public repository cannot steer a worker. Default `""`.
    pub trusted_users: String,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            token: None,
            api_url: "https://api.github.com".to_owned(),
            web_host: "github.com".to_owned(),
            git_url: "https://github.com/{owner}/{name}.git".to_owned(),
            webhook_secret: None,
            poll_interval_secs: 60,
            ci_pending_timeout_secs: 3600,
            ci_appear_timeout_secs: 120,
            max_ci_rounds: 5,
            request_timeout_secs: 60,
            label: "mainloop".to_owned(),
            trusted_users: String::new(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Log filter in `tracing` env-filter syntax, e.g. `"info"` or `"info,mainloop=debug"`.
    /// Default `"info"`. Env: `MAINLOOP_LOG__FILTER`.
    pub filter: String,

    /// Emit logs as JSON lines instead of human-readable text. Default `false`.
    /// Env: `MAINLOOP_LOG__JSON`.
    pub json: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl_hours: 720,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            provider: None,
            claude_code_model: None,
            api_key: None,
            base_url: "https://api.anthropic.com".to_owned(),
            name: "claude-sonnet-4-5".to_owned(),
            max_tokens: 4096,
            context_budget_tokens: 60_000,
            request_timeout_secs: 300,
        }
    }
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            lease_secs: 60,
            max_attempts: 8,
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
        }
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            notes_budget_tokens: 2000,
            memory_budget_tokens: 3000,
            time_zone: "UTC".to_owned(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            min_connections: 1,
            max_connections: 16,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_chat_chars: 100_000,
        }
    }
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            vapid_subject: "https://github.com/mainloop-dev/mainloop".to_owned(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            json: false,
        }
    }
}

/// Built-in defaults. `data_dir` is [`default_data_dir`], or empty when the platform has no
/// per-user data directory (loading then insists on an explicit one).
impl Default for Config {
    fn default() -> Self {
        Self::defaults_in(default_data_dir().unwrap_or_default())
    }
}

/// The per-user data directory, e.g. `~/.local/share/mainloop` on Linux (derived from
/// `$XDG_DATA_HOME`/`$HOME` by the `directories` crate); `None` if there is no home directory.
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("dev", "mainloop", "mainloop")
        .map(|dirs| dirs.data_dir().to_path_buf())
}

impl Config {
    /// Built-in defaults with the given data directory.
    pub fn defaults_in(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            database_url: None,
            public_url: None,
            auth: AuthConfig::default(),
            model: ModelConfig::default(),
            dispatcher: DispatcherConfig::default(),
            workers: WorkersConfig::default(),
            previews: PreviewsConfig::default(),
            chat: ChatConfig::default(),
            limits: LimitsConfig::default(),
            database: DatabaseConfig::default(),
            kubernetes: KubernetesConfig::default(),
            log: LogConfig::default(),
            notifications: NotificationsConfig::default(),
            github: GithubConfig::default(),
            agents: BTreeMap::new(),
        }
    }

    /// Loads and validates the configuration from the real process environment.
    ///
    /// The file is, in order of preference: `explicit_file` (the `--config` flag; must exist),
    /// `$MAINLOOP_CONFIG` (must exist), `<data_dir>/mainloop.toml` if present (`data_dir` here
    /// being `$MAINLOOP_DATA_DIR` or the default), `./mainloop.toml` if present, else none.
    pub fn load(explicit_file: Option<&Path>) -> Result<Self, ConfigError> {
        load::load(explicit_file, &load::process_env()?)
    }

    /// Like [`Config::load`], but with the environment given explicitly; the process
    /// environment is never read (only the default data directory is derived from `$HOME`
    /// by the OS-conventions crate). Empty variables count as unset.
    pub fn load_from(
        explicit_file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        load::load(explicit_file, env)
    }

    /// The database URL to connect with, in plain text: the configured one, or the SQLite
    /// database in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_owned(),
            None => format!(
                "sqlite://{}",
                self.data_dir.join("mainloop.db").to_string_lossy()
            ),
        }
    }

    /// Whether the Anthropic API can answer the main thread: it is chosen (or nothing is)
    /// and an API key is set.
    pub fn model_configured(&self) -> bool {
        matches!(
            self.model.provider,
            None | Some(ModelProviderKind::Anthropic)
        ) && self.model.api_key.is_some()
    }

    /// The effective configuration as TOML, for `mainloop print-config`: secrets appear as
    /// `[redacted]`, and in database URLs only the password is redacted
    /// (`postgres://user:[redacted]@host/db`). `database_url` shows the effective URL even
    /// when it is the SQLite default.
    pub fn redacted_toml(&self) -> Result<String, ConfigError> {
        let mut effective = self.clone();
        effective.database_url = Some(Secret::new(self.database_url()));
        toml::to_string_pretty(&effective).map_err(|e| ConfigError::Render(e.to_string()))
    }
}

//! The `[workers]` table: how many agents run, which ones, how they are confined and
//! timed, this machine's runner labels, and the paths the settings expand to.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Secret, path_list, redact};

/// Coding-agent workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// Agents running at once; further tasks queue in order. Tasks waiting for you hold
    /// no slot. Default `3`. Env: `MAINLOOP_WORKERS__MAX_AGENTS`.
    pub max_agents: usize,

    /// Where agents run: `"local"` (this machine and the user's runners) or
    /// `"kubernetes"` (a one-shot runner per run, launched as a Job; see
    /// `[kubernetes]`). Default `"local"`. Env: `MAINLOOP_WORKERS__RUNTIME`.
    #[serde(default)]
    pub runtime: crate::WorkersRuntime,

    /// The agent tasks run unless they or their project choose another: a configured
    /// agent's name. Default `"claude"`. Env: `MAINLOOP_WORKERS__DEFAULT_AGENT`.
    pub default_agent: String,

    /// The Claude Code command (program and leading arguments). Default `"claude"`.
    /// Env: `MAINLOOP_WORKERS__CLAUDE_COMMAND` (split on whitespace).
    pub claude_command: String,

    /// Model for workers (`--model`); unset means the agent's own default.
    /// Env: `MAINLOOP_WORKERS__MODEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,

    /// Seconds an agent waiting for your answer keeps its process; after that it is
    /// stopped and resumed from its saved session when you answer. Default `600`.
    /// Env: `MAINLOOP_WORKERS__IDLE_TIMEOUT_SECS`.
    pub idle_timeout_secs: u64,

    /// Seconds without any output after which a running agent is stopped and the task
    /// fails (it can be retried). Default `1800`. Env: `MAINLOOP_WORKERS__INACTIVITY_TIMEOUT_SECS`.
    pub inactivity_timeout_secs: u64,

    /// How many times a run is resumed after its agent gave up on a failing model API
    /// (overloaded, rate limited, a 5xx, no connection) before the task fails. Default `5`.
    /// Env: `MAINLOOP_WORKERS__API_RETRIES`.
    pub api_retries: u32,

    /// Seconds before the first such resume; each later one waits twice as long (at
    /// most ten minutes). Default `30`: five retries span about a quarter of an hour.
    /// Env: `MAINLOOP_WORKERS__API_RETRY_DELAY_SECS`.
    pub api_retry_delay_secs: u64,

    /// Rounds of "checks failed, fix them" before the task fails. Default `3`.
    /// Env: `MAINLOOP_WORKERS__MAX_CHECK_ROUNDS`.
    pub max_check_rounds: u32,

    /// Seconds the project's check command may run. Default `1800`.
    /// Env: `MAINLOOP_WORKERS__CHECK_TIMEOUT_SECS`.
    pub check_timeout_secs: u64,

    /// Accept `file://` repository URLs (local paths are always accepted). Default `false`.
    /// Env: `MAINLOOP_WORKERS__ALLOW_FILE_URLS`.
    pub allow_file_urls: bool,

    /// Directories local repositories (paths and `file://` URLs) must lie in,
    /// comma-separated, `~/` allowed; symlinks and `..` are resolved first. Default `""`:
    /// anywhere the server user can read but mainloop's own worktrees and clone cache.
    /// Env: `MAINLOOP_WORKERS__REPO_ROOTS`.
    pub repo_roots: String,

    /// Seconds a run placed on a runner that dropped (a restart of the runner or the
    /// server) waits for it to come back before it is placed elsewhere. Default `60`.
    /// Env: `MAINLOOP_WORKERS__RUNNER_RECONNECT_SECS`.
    #[serde(default = "default_runner_reconnect_secs")]
    pub runner_reconnect_secs: u64,

    /// This machine's runner labels, comma-separated (`"gpu, linux-x64"`): a task or
    /// project requiring labels runs here only when all of them are among these, else on
    /// a runner that has them. Default `""`. Env: `MAINLOOP_WORKERS__LABELS`.
    #[serde(default)]
    pub labels: String,

    /// How agents and check commands are confined: `"auto"` (bubblewrap when it is
    /// installed and works here, else unconfined with a warning), `"bubblewrap"` (refuse
    /// to start without it) or `"off"`. Default `"auto"`. Env: `MAINLOOP_WORKERS__SANDBOX`.
    pub sandbox: SandboxMode,

    /// Extra paths a sandboxed agent may read, comma-separated: toolchains kept in your
    /// home, say (`~/.rustup`). Default `""`. Env: `MAINLOOP_WORKERS__SANDBOX_READ_ONLY`.
    pub sandbox_read_only: String,

    /// Extra paths a sandboxed agent may write, comma-separated: a shared build cache.
    /// Default `""`. Env: `MAINLOOP_WORKERS__SANDBOX_READ_WRITE`.
    pub sandbox_read_write: String,

    /// Ports handed to tasks whose `.mainloop.toml` asks for some (`ports = 2`), as
    /// `LOW-HIGH`; each is checked free on 127.0.0.1 and held while the task lives.
    /// Default `"20000-29999"`. Env: `MAINLOOP_WORKERS__PORT_RANGE`.
    pub port_range: String,

    /// Admin URL of the PostgreSQL server on which a task whose `.mainloop.toml` says
    /// `database = "postgres"` gets a database of its own (`mainloop_task_<short id>`,
    /// passed as `DATABASE_URL`, dropped when the task's environment is released).
    /// Default: unset (mainloop's own PostgreSQL cluster in `<data_dir>/task-postgres`,
    /// started when a task first needs it).
    /// Env: `MAINLOOP_WORKERS__TASK_DATABASE_URL`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redact::serialize_url"
    )]
    pub task_database_url: Option<Secret>,

    /// Hours a merged task keeps its worktree, private home and environment (ports, its
    /// database) after it merged; its branch always stays. Default `0`: removed at once.
    /// Env: `MAINLOOP_WORKERS__RETENTION_MERGED_HOURS`.
    pub retention_merged_hours: u64,

    /// Days a failed task keeps its worktree, home and environment after its last
    /// change, so it can still be retried as it was (a retry after that starts again on
    /// its branch). Default `7`. Env: `MAINLOOP_WORKERS__RETENTION_FAILED_DAYS`.
    pub retention_failed_days: u64,

    /// Days a cancelled task keeps its worktree, home and environment. Default `7`.
    /// Env: `MAINLOOP_WORKERS__RETENTION_CANCELLED_DAYS`.
    pub retention_cancelled_days: u64,
}

/// How agents and their check commands are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Bubblewrap when available, else unconfined with a warning at start.
    #[default]
    Auto,
    /// Bubblewrap, or the server refuses to start.
    Bubblewrap,
    /// Agents run as the server user, with its permissions.
    Off,
}

const fn default_runner_reconnect_secs() -> u64 {
    60
}

impl WorkersConfig {
    /// `sandbox_read_only` as paths, `~/` expanded against `home`.
    #[must_use]
    pub fn sandbox_read_only_paths(&self, home: Option<&Path>) -> Vec<PathBuf> {
        path_list(&self.sandbox_read_only, home)
    }

    /// `labels` as a set, blanks dropped.
    #[must_use]
    pub fn label_set(&self) -> std::collections::BTreeSet<String> {
        self.labels
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `repo_roots` as paths, `~/` expanded against `home`.
    #[must_use]
    pub fn repo_root_paths(&self, home: Option<&Path>) -> Vec<PathBuf> {
        path_list(&self.repo_roots, home)
    }

    /// `port_range` as its first and last port.
    ///
    /// # Errors
    /// When it is not `LOW-HIGH` with `1024 <= LOW <= HIGH <= 65535`.
    pub fn port_range_bounds(&self) -> Result<(u16, u16), String> {
        let parsed = self.port_range.split_once('-').and_then(|(lo, hi)| {
            Some((
                lo.trim().parse::<u16>().ok()?,
                hi.trim().parse::<u16>().ok()?,
            ))
        });
        match parsed {
            Some((lo, hi)) if (1024..=hi).contains(&lo) => Ok((lo, hi)),
            _ => Err("must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535".to_owned()),
        }
    }

    /// `sandbox_read_write` as paths, `~/` expanded against `home`.
    #[must_use]
    pub fn sandbox_read_write_paths(&self, home: Option<&Path>) -> Vec<PathBuf> {
        path_list(&self.sandbox_read_write, home)
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            max_agents: 3,
            runtime: crate::WorkersRuntime::Local,
            default_agent: "claude".to_owned(),
            claude_command: "claude".to_owned(),
            model: None,
            idle_timeout_secs: 600,
            inactivity_timeout_secs: 1800,
            api_retries: 5,
            api_retry_delay_secs: 30,
            max_check_rounds: 3,
            check_timeout_secs: 1800,
            allow_file_urls: false,
            repo_roots: String::new(),
            labels: String::new(),
            runner_reconnect_secs: default_runner_reconnect_secs(),
            sandbox: SandboxMode::Auto,
            sandbox_read_only: String::new(),
            sandbox_read_write: String::new(),
            port_range: "20000-29999".to_owned(),
            task_database_url: None,
            retention_merged_hours: 0,
            retention_failed_days: 7,
            retention_cancelled_days: 7,
        }
    }
}

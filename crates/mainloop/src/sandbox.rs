//! Choosing what sandboxed agents may see: the bubblewrap policy built from the
//! configuration and the server's environment, per `workers.sandbox`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use mainloop_config::{Config, SandboxMode};
use mainloop_sandbox::{Bubblewrap, Policy, install_roots, which};
use mainloop_worker::WorkerSandbox;

/// Always hidden, when present: other users' homes, the shared temporary directories
/// (other programs' files and sockets), removable media, and sockets that hand out
/// more power than the server user should lend an agent (the container engine's) or
/// reach its database without a password (PostgreSQL's peer authentication).
const HIDDEN: &[&str] = &[
    "/home",
    "/root",
    "/tmp",
    "/var/tmp",
    "/mnt",
    "/media",
    "/run/user",
    "/run/docker.sock",
    "/run/containerd",
    "/run/podman",
    "/run/postgresql",
    "/var/run/postgresql",
];

/// Files of the server user's home that agents keep their login and settings in, bound
/// into each task's private home (when they exist) so that agents run as their user
/// set them up: Claude Code's `claude login`, Codex's login and configuration, Gemini
/// CLI's and OpenCode's.
const HOME_FILES: &[&str] = &[
    ".claude/.credentials.json",
    ".codex/auth.json",
    ".codex/config.toml",
    ".gemini/oauth_creds.json",
    ".gemini/google_accounts.json",
    ".gemini/settings.json",
    ".config/opencode/opencode.json",
    ".local/share/opencode/auth.json",
];

/// The sandbox for agents and checks, or `None` when it is off or (in `auto` mode)
/// unavailable. `env` is what agents get; `agent_programs` the programs of the
/// configured agents; `config_file` the `--config` the server was started with.
pub fn worker_sandbox(
    config: &Config,
    env: &[(String, String)],
    agent_programs: &[&str],
    config_file: Option<&Path>,
) -> Result<Option<WorkerSandbox>> {
    let mode = config.workers.sandbox;
    if mode == SandboxMode::Off {
        tracing::warn!(
            "workers.sandbox is off: agents and checks run with the server user's permissions"
        );
        return Ok(None);
    }
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let home = var("HOME").map(PathBuf::from);
    let path_var = var("PATH");

    let mut hidden: Vec<PathBuf> = HIDDEN.iter().map(PathBuf::from).collect();
    hidden.push(config.data_dir.clone());
    hidden.extend(home.clone());
    // The configuration may hold API keys, wherever it lives.
    hidden.extend(config_file.map(Path::to_path_buf));
    hidden.extend(std::env::var_os("MAINLOOP_CONFIG").map(PathBuf::from));
    hidden.extend(
        std::env::current_dir()
            .ok()
            .map(|d| d.join("mainloop.toml")),
    );
    // A SQLite database kept outside the data directory.
    if let Some(file) = config.database_url().strip_prefix("sqlite://")
        && let Some(dir) = Path::new(file.split('?').next().unwrap_or(file)).parent()
    {
        hidden.push(dir.to_path_buf());
    }

    // What the agent needs to run, even where it sits inside a hidden path: `PATH`
    // entries, the agent's installation, and the toolchain homes it was given.
    let mut read_only: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    for program in agent_programs
        .iter()
        .filter_map(|p| which(p, path_var.map(OsStr::new)))
    {
        read_only.extend(install_roots(&program));
    }
    read_only.extend(
        ["CARGO_HOME", "RUSTUP_HOME"]
            .into_iter()
            .filter_map(var)
            .map(PathBuf::from),
    );
    read_only.extend(config.workers.sandbox_read_only_paths(home.as_deref()));
    let read_write = config.workers.sandbox_read_write_paths(home.as_deref());

    let policy = Policy {
        hidden,
        read_only,
        read_write,
    };
    let bwrap = match Bubblewrap::detect(path_var.map(OsStr::new), policy) {
        Ok(b) => b,
        Err(e) if mode == SandboxMode::Auto => {
            tracing::warn!(
                error = %e,
                "agents and checks run unsandboxed, with the server user's permissions"
            );
            return Ok(None);
        }
        Err(e) => bail!("workers.sandbox = \"bubblewrap\": {e}"),
    };
    tracing::info!(bwrap = %bwrap.program().display(), "agents and checks run sandboxed");
    let home_files = home
        .iter()
        .flat_map(|h| {
            HOME_FILES
                .iter()
                .map(move |f| (h.join(f), PathBuf::from(f)))
        })
        .filter(|(outside, _)| outside.is_file())
        .collect();
    Ok(Some(WorkerSandbox {
        bwrap,
        homes_dir: config.data_dir.join("homes"),
        home_files,
    }))
}

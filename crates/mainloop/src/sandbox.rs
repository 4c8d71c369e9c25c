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

    // The configuration may hold API keys, wherever it lives; so may a SQLite database
    // kept outside the data directory.
    let mut private = vec![config.data_dir.clone()];
    private.extend(config_file.map(Path::to_path_buf));
    private.extend(std::env::var_os("MAINLOOP_CONFIG").map(PathBuf::from));
    private.extend(
        std::env::current_dir()
            .ok()
            .map(|d| d.join("mainloop.toml")),
    );
    if let Some(file) = config.database_url().strip_prefix("sqlite://")
        && let Some(dir) = Path::new(file.split('?').next().unwrap_or(file)).parent()
    {
        private.push(dir.to_path_buf());
    }
    let toolchains = ["CARGO_HOME", "RUSTUP_HOME"]
        .into_iter()
        .filter_map(var)
        .map(PathBuf::from)
        .collect();
    let mut policy = base_policy(
        private,
        home.as_deref(),
        path_var,
        agent_programs,
        toolchains,
    );
    policy
        .read_only
        .extend(config.workers.sandbox_read_only_paths(home.as_deref()));
    policy.read_write = config.workers.sandbox_read_write_paths(home.as_deref());
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
    Ok(Some(WorkerSandbox {
        bwrap,
        homes_dir: config.data_dir.join("homes"),
        home_files: home_files(home.as_deref()),
    }))
}

/// What every sandbox hides and shows, on the server and on a runner: the always-hidden
/// paths, `private` (the data directory, configuration) and the user's `home` hidden;
/// `PATH` entries, the agents' installations and `toolchains` visible read-only.
pub(crate) fn base_policy(
    private: Vec<PathBuf>,
    home: Option<&Path>,
    path_var: Option<&str>,
    agent_programs: &[&str],
    toolchains: Vec<PathBuf>,
) -> Policy {
    let mut hidden: Vec<PathBuf> = HIDDEN.iter().map(PathBuf::from).collect();
    hidden.extend(private);
    hidden.extend(home.map(Path::to_path_buf));
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
    read_only.extend(toolchains);
    Policy {
        hidden,
        read_only,
        read_write: Vec::new(),
    }
}

/// The agents' login and settings files of `home` that exist, each with where it goes
/// in a private home.
pub(crate) fn home_files(home: Option<&Path>) -> Vec<(PathBuf, PathBuf)> {
    home.iter()
        .flat_map(|h| {
            HOME_FILES
                .iter()
                .map(move |f| (h.join(f), PathBuf::from(f)))
        })
        .filter(|(outside, _)| outside.is_file())
        .collect()
}

/// The sandbox of a runner's processes (`mainloop runner --sandbox`), or `None` when it is
/// off or (in `auto`) unavailable: the same policy as the server's, with the runner's data
/// directory, its token file and its user's home hidden.
///
/// # Errors
/// `bubblewrap` asked for and unusable here.
pub(crate) fn runner_sandbox(
    mode: &str,
    data_dir: &Path,
    token_file: Option<&Path>,
    path_var: &str,
    agent_programs: &[&str],
) -> std::result::Result<Option<crate::runner::RunnerSandbox>, String> {
    if mode == "off" {
        tracing::warn!("--sandbox off: agents run with the runner user's permissions");
        return Ok(None);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut private = vec![data_dir.to_path_buf()];
    private.extend(token_file.map(Path::to_path_buf));
    let toolchains = ["CARGO_HOME", "RUSTUP_HOME"]
        .into_iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .collect();
    let policy = base_policy(
        private,
        home.as_deref(),
        Some(path_var),
        agent_programs,
        toolchains,
    );
    match Bubblewrap::detect(Some(OsStr::new(path_var)), policy) {
        Ok(bwrap) => Ok(Some(crate::runner::RunnerSandbox {
            bwrap,
            home_files: home_files(home.as_deref()),
        })),
        Err(e) if mode == "auto" => {
            tracing::warn!(error = %e, "agents run unsandboxed, with the runner user's permissions");
            Ok(None)
        }
        Err(e) => Err(format!("--sandbox bubblewrap: {e}")),
    }
}

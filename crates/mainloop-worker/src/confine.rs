//! What a task's agent and check commands run under: the sandbox command line (the
//! agent's placement), their exact environment and their home (a private one per task
//! when sandboxed), with the task's own variables (ports, database, the repository's
//! `env`). Checks and setup take the command line to `mainloop-git`'s `run_check`.

use std::path::{Path, PathBuf};

use mainloop_agent::LocalProcess;
use mainloop_domain::TaskId;
use mainloop_git::Worktree;
use mainloop_sandbox::{Bubblewrap, Scope};

use crate::Runtime;

/// Sandboxing of agents and checks.
#[derive(Clone, Debug)]
pub struct WorkerSandbox {
    pub bwrap: Bubblewrap,
    /// Each task's private home is `<homes_dir>/<task id>`, kept until the task ends so
    /// the agent's saved sessions survive restarts.
    pub homes_dir: PathBuf,
    /// Files of the server user's bound into every private home, as `(outside path,
    /// path relative to the home)`: the agents' logins and settings.
    pub home_files: Vec<(PathBuf, PathBuf)>,
}

/// How one run of a task's agent or checks is started.
#[derive(Debug)]
pub(crate) struct Confined {
    /// Prepended to the command; empty without a sandbox.
    pub wrapper: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where the agent writes its plans (in its home), the one place planning may write.
    pub plans_dir: PathBuf,
}

impl Confined {
    /// A run on a runner: the configured environment but this machine's home and XDG
    /// directories (the runner sets `HOME`, `TMPDIR` and `PATH` itself) and the plans in
    /// the task's home there.
    pub(crate) fn on_runner(mut env: Vec<(String, String)>, home: &Path) -> Self {
        // This machine's home and XDG directories mean nothing there: the agent's own
        // defaults under the task's home apply.
        env.retain(|(k, _)| !REPLACED.contains(&k.as_str()));
        Self {
            wrapper: Vec::new(),
            env,
            plans_dir: home.join(".claude").join("plans"),
        }
    }

    /// Where the task's agent runs: a local process, under the sandbox when there is one.
    pub(crate) fn placement(&self) -> LocalProcess {
        LocalProcess::sandboxed(self.wrapper.clone())
    }
}

/// Variables that would point a sandboxed process back into the server user's home or
/// its shared temporary directory, which it cannot see.
pub(crate) const REPLACED: &[&str] = &[
    "HOME",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
];

impl Runtime {
    /// The sandbox, environment and home for task `id`'s processes in `wt`.
    pub(crate) async fn confine(&self, id: TaskId, wt: &Worktree) -> Result<Confined, String> {
        let cfg = &self.inner.config;
        // The task's own variables (its ports, its database, the repository's `env`)
        // reach every process run for it.
        let task_vars = self
            .inner
            .engine
            .task_env(id)
            .await
            .map_err(|e| format!("could not read the task's environment: {e}"))?
            .map(|env| env.vars)
            .unwrap_or_default();
        let Some(sandbox) = &cfg.sandbox else {
            return Ok(Confined {
                wrapper: Vec::new(),
                env: with_vars(cfg.agent_env.clone(), task_vars),
                plans_dir: cfg.plans_dir.clone(),
            });
        };
        let home = sandbox.homes_dir.join(id.to_string());
        private_dir(&sandbox.homes_dir)?;
        private_dir(&home)?;
        private_dir(&home.join(".claude"))?;
        private_dir(&home.join(".tmp"))?;
        let common = self
            .inner
            .git
            .common_dir(wt)
            .await
            .map_err(|e| format!("could not find the worktree's repository: {e}"))?;
        let scope = Scope {
            cwd: wt.path.clone(),
            home: home.clone(),
            read_only: vec![common, wt.path.join(".git")],
            read_write: Vec::new(),
            files: sandbox
                .home_files
                .iter()
                .map(|(outside, inside)| (outside.clone(), home.join(inside)))
                .collect(),
        };
        let wrapper = sandbox
            .bwrap
            .command_prefix(&scope)
            .map_err(|e| format!("could not set up the sandbox: {e}"))?;
        let mut env: Vec<(String, String)> = cfg
            .agent_env
            .iter()
            .filter(|(k, _)| !REPLACED.contains(&k.as_str()))
            .cloned()
            .collect();
        env.push(("HOME".to_owned(), home.display().to_string()));
        // In the home rather than the sandbox's empty /tmp: Codex refuses to set up its
        // own command sandbox when its home (`$HOME/.codex`) lies under the temporary
        // directory, as the private home does when the data directory is under /tmp.
        env.push(("TMPDIR".to_owned(), home.join(".tmp").display().to_string()));
        Ok(Confined {
            wrapper,
            env: with_vars(env, task_vars),
            plans_dir: home.join(".claude").join("plans"),
        })
    }

    /// Deletes task `id`'s private home once the task is over.
    pub(crate) fn forget_home(&self, id: TaskId) {
        if let Some(sandbox) = &self.inner.config.sandbox {
            let home = sandbox.homes_dir.join(id.to_string());
            if let Err(e) = std::fs::remove_dir_all(&home)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(task = %id, error = %e, "could not remove the task's private home");
            }
        }
    }
}

/// `env` with `vars` in place of any variable of the same name.
pub(crate) fn with_vars(
    mut env: Vec<(String, String)>,
    vars: Vec<(String, String)>,
) -> Vec<(String, String)> {
    env.retain(|(k, _)| !vars.iter().any(|(name, _)| name == k));
    env.extend(vars);
    env
}

/// Creates `dir` readable by the server user only: homes hold session transcripts.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("could not create {}: {e}", dir.display()))
}

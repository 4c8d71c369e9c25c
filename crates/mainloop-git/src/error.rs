//! The crate's single error type. Every failure carries enough to act on without
//! re-running anything: the command line (credentials redacted), the exit code and the
//! tail of git's stderr.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in this crate. Nothing here panics; callers decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed (exit {}): {stderr}", fmt_code(*.code))]
    Command {
        /// The command line, with URL credentials redacted.
        command: String,
        /// Exit code; `None` when the process died from a signal.
        code: Option<i32>,
        /// The last lines of stderr.
        stderr: String,
    },
    /// A command ran past its deadline; its whole process group was killed.
    #[error("`{command}` timed out after {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    /// The program could not be started at all (missing binary, bad cwd, ...).
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The repository argument was refused before git saw it.
    #[error("invalid repository {repo:?}: {reason}")]
    InvalidRepo { repo: String, reason: String },
    /// A name (short id, branch) that cannot be used safely as a ref or path.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// The local path exists but is not (the top of) a git repository.
    #[error("{path} is not a git repository{hint}")]
    NotARepo { path: PathBuf, hint: String },
    /// HEAD points at a commit, not a branch, so there is no branch to base work on.
    #[error("HEAD is detached in {path}; check out a branch to base work on")]
    DetachedHead { path: PathBuf },
    /// The worktree where the base branch is checked out has uncommitted changes (or
    /// an operation in progress), so merging would mix the user's work with ours.
    #[error("branch {branch} is checked out in {path} with uncommitted changes")]
    Dirty { branch: String, path: PathBuf },
    /// The worktree is not on its task branch any more (someone switched branches).
    #[error("worktree {path} is on {actual}, expected branch {expected}")]
    WrongBranch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The base branch kept moving while we tried to merge into it.
    #[error("branch {branch} kept changing during the merge; try again")]
    Raced { branch: String },
    /// A path where a worktree should go is occupied by something else.
    #[error("{path} exists and is not a worktree of {repo}")]
    PathOccupied { path: PathBuf, repo: PathBuf },
    /// `.mainloop.toml` exists but cannot be used.
    #[error("invalid {path}: {message}")]
    Config { path: PathBuf, message: String },
    /// A filesystem operation outside git failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// git printed something we could not make sense of.
    #[error("snapshot {snapshot} was taken on {parent}, but {path} is at {head}")]
    SnapshotElsewhere {
        snapshot: String,
        parent: String,
        head: String,
        path: PathBuf,
    },

    #[error("unexpected output from `{command}`: {detail}")]
    Parse { command: String, detail: String },
}

fn fmt_code(code: Option<i32>) -> String {
    code.map_or_else(|| "signal".to_owned(), |c| c.to_string())
}

impl GitError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

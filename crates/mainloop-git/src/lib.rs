//! mainloop's git layer. It owns everything mainloop does to repositories: resolving a
//! task's repository (local path or cached clone), the per-task branch and worktree,
//! committing the agent's work, diffing it, merging it back, and running the
//! project's check command.
//!
//! Everything goes through the `git` CLI (never libgit2), so behaviour matches what
//! the user sees in their own terminal. Each child runs in its own process group with
//! a deadline, no terminal prompts, and config overrides that make the result
//! independent of the user's global git configuration.

mod check;
mod cleanup;
mod copy;
mod diff;
mod environment;
mod error;
mod exec;
mod merge;
mod repo;
mod slug;
mod snapshot;
mod source;
mod worktree;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use check::{CONFIG_FILE, CheckOutcome, OutputTail, read_check_command, run_check};
pub use cleanup::{Entry as DirEntry, is_temporary};
pub use environment::{
    CopyReport, MAX_COPY_BYTES, MAX_COPY_FILES, copy_into_worktree, parse_config,
};
pub use error::GitError;
pub use slug::{SLUG_MAX, slug};
pub use snapshot::Snapshot;

/// The identity used for commits mainloop makes when the repository has none, and
/// always as the author of the agent's work.
pub const MAINLOOP_NAME: &str = "mainloop";
pub const MAINLOOP_EMAIL: &str = "mainloop@localhost";

/// Prefix of every task branch.
pub const BRANCH_PREFIX: &str = "mainloop/";

/// A task's repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repo {
    /// Canonical path: the work tree's top level, the bare repository directory, or
    /// the cached clone (a bare repository under the cache dir).
    pub path: PathBuf,
    /// True when `path` is our cached clone of a URL.
    pub is_clone: bool,
    /// The URL we cloned from; for a local repository its `remote.origin.url`, if any.
    pub origin: Option<String>,
}

/// A task's worktree on its own branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worktree {
    pub path: PathBuf,
    /// Short branch name, e.g. `mainloop/ab12cd-fix-login`.
    pub branch: String,
    /// Short name of the branch the work is based on and merged into.
    pub base: String,
}

/// Added and removed lines of one file; both 0 for binary files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Path after the change (the new name for renames).
    pub path: String,
    pub added: u64,
    pub removed: u64,
}

/// The committed work of a task branch relative to where it left its base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// Unified diff with `a/` and `b/` prefixes.
    pub text: String,
    pub files: Vec<FileStat>,
    pub added: u64,
    pub removed: u64,
}

/// How a merge of a task branch into its base ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MergeOutcome {
    /// The base branch now points at this new merge commit.
    Merged { sha: String },
    /// The branch tip was already contained in the base; nothing changed.
    AlreadyMerged,
    /// The merge does not apply cleanly; nothing changed anywhere.
    Conflict { files: Vec<String> },
}

/// Entry point for all repository operations. Cheap to clone; clones share the
/// per-repository locks, so keep one per process.
#[derive(Clone)]
pub struct Git {
    program: PathBuf,
    cache_dir: PathBuf,
    worktrees_dir: PathBuf,
    allow_file_urls: bool,
    /// Local repositories (paths and `file://` URLs) must lie under one of these;
    /// empty: anywhere the server user can read (but `worktrees_dir` and `cache_dir`).
    repo_roots: Vec<PathBuf>,
    use_merge_tree: bool,
    timeout: Duration,
    network_timeout: Duration,
    extra_env: Vec<(OsString, OsString)>,
    locks: Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Names the extra environment but never shows its values: they may carry a forge token
/// for git's askpass helper.
impl std::fmt::Debug for Git {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<_> = self.extra_env.iter().map(|(k, _)| k).collect();
        f.debug_struct("Git")
            .field("program", &self.program)
            .field("cache_dir", &self.cache_dir)
            .field("worktrees_dir", &self.worktrees_dir)
            .field("allow_file_urls", &self.allow_file_urls)
            .field("repo_roots", &self.repo_roots)
            .field("use_merge_tree", &self.use_merge_tree)
            .field("timeout", &self.timeout)
            .field("network_timeout", &self.network_timeout)
            .field("extra_env (names only)", &env)
            .finish_non_exhaustive()
    }
}

impl Git {
    /// `cache_dir` holds clones of URL repositories (`<data_dir>/repos`),
    /// `worktrees_dir` the task worktrees (`<data_dir>/worktrees`). Both are created
    /// on first use.
    pub fn new(cache_dir: PathBuf, worktrees_dir: PathBuf) -> Self {
        Self {
            program: PathBuf::from("git"),
            cache_dir,
            worktrees_dir,
            allow_file_urls: false,
            repo_roots: Vec::new(),
            use_merge_tree: true,
            timeout: Duration::from_secs(300),
            network_timeout: Duration::from_secs(900),
            extra_env: Vec::new(),
            locks: Arc::default(),
        }
    }

    /// Confines local repositories (paths and `file://` URLs) to these directories;
    /// symlinks and `..` are resolved before the check. Empty (the default): anywhere.
    #[must_use]
    pub fn with_repo_roots(mut self, roots: Vec<PathBuf>) -> Self {
        self.repo_roots = roots;
        self
    }

    /// The git executable (default: `git` from `PATH`).
    #[must_use]
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Accept `file://` URLs in [`Git::resolve_repo`]. Off by default: a file URL lets
    /// whoever creates tasks read any repository on the server's filesystem. Tests and
    /// single-user setups turn it on.
    #[must_use]
    pub fn with_allow_file_urls(mut self, allow: bool) -> Self {
        self.allow_file_urls = allow;
        self
    }

    /// Deadline for local git commands (default 5 minutes).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Deadline for clones and fetches (default 15 minutes).
    #[must_use]
    pub fn with_network_timeout(mut self, timeout: Duration) -> Self {
        self.network_timeout = timeout;
        self
    }

    /// An environment variable for every git child, e.g. `GIT_SSH_COMMAND`, or
    /// `GIT_CONFIG_GLOBAL=/dev/null` to ignore the user's global config entirely.
    #[must_use]
    pub fn with_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    /// Whether merges may use `git merge-tree --write-tree` (git >= 2.38), which
    /// needs no worktree at all. When off, or when git is older, merges run in a
    /// temporary detached worktree instead. On by default.
    #[must_use]
    pub fn with_merge_tree(mut self, enabled: bool) -> Self {
        self.use_merge_tree = enabled;
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    pub fn worktrees_dir(&self) -> &Path {
        &self.worktrees_dir
    }

    /// Serialises operations that change one repository's refs or worktree list, so
    /// concurrent tasks on the same repository do not trip over git's lock files.
    pub(crate) async fn lock(&self, key: &Path) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut map = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(map.entry(key.to_path_buf()).or_default())
        };
        mutex.lock_owned().await
    }
}

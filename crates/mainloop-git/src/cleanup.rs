//! Cleaning up what tasks leave on disk: a finished task's worktree removed by its path
//! alone (its branch stays), `git worktree prune`, `git gc --auto` on cached clones, the
//! clone cache's and worktrees root's entries, what a crashed clone or merge left behind,
//! and git's `index.lock` in a worktree. Nothing here removes anything outside the
//! worktrees root and the clone cache.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::repo::{cache_name, canonical_or};
use crate::source::{self, RepoSource};
use crate::{Git, GitError};

/// A directory directly under the worktrees root or the clone cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its file name: a task's short id, a clone's hash, or a temporary name.
    pub name: String,
    pub path: PathBuf,
    /// When it last changed (a fetch writes into a clone; a crash leaves it as it was).
    pub modified: Option<SystemTime>,
}

/// Names of temporary directories: an unfinished clone (`.tmp-…`) or a merge in a
/// detached worktree (`.merge-…`).
#[must_use]
pub fn is_temporary(name: &str) -> bool {
    name.starts_with(".tmp-") || name.starts_with(".merge-")
}

fn entries(dir: &Path) -> Result<Vec<Entry>, GitError> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(GitError::io("read", dir, e)),
    };
    let mut out = Vec::new();
    for entry in read.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        out.push(Entry {
            name,
            path: entry.path(),
            modified: entry.metadata().ok().and_then(|m| m.modified().ok()),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

impl Git {
    /// The directories under the worktrees root (task worktrees by short id, and
    /// temporary merge worktrees).
    ///
    /// # Errors
    /// When the root cannot be read.
    pub fn worktree_entries(&self) -> Result<Vec<Entry>, GitError> {
        entries(&self.worktrees_dir)
    }

    /// The directories in the clone cache (clones by hash, and unfinished clones).
    ///
    /// # Errors
    /// When the cache cannot be read.
    pub fn clone_entries(&self) -> Result<Vec<Entry>, GitError> {
        entries(&self.cache_dir)
    }

    /// Where the cached clone of task repository `repo` is, when `repo` is a URL; `None`
    /// for a local repository (or one no task may use).
    #[must_use]
    pub fn clone_path(&self, repo: &str) -> Option<PathBuf> {
        match source::parse(repo, self.allow_file_urls) {
            Ok(RepoSource::Url(url)) => Some(canonical_or(&self.cache_dir).join(cache_name(&url))),
            _ => None,
        }
    }

    /// Removes the worktree at `path` (a directory directly under the worktrees root),
    /// discarding uncommitted changes; its branch and commits stay. The repository is
    /// found from the worktree itself, so a cloned repository is never fetched. A
    /// directory git no longer knows is removed by hand. Idempotent.
    ///
    /// # Errors
    /// A path outside the worktrees root, or git failing to remove a worktree it knows.
    pub async fn discard_worktree(&self, path: &Path) -> Result<(), GitError> {
        if !path.exists() {
            return Ok(());
        }
        if !self.is_under(path, &self.worktrees_dir) {
            return Err(GitError::InvalidRepo {
                repo: path.display().to_string(),
                reason: "not a directory of mainloop's worktrees".into(),
            });
        }
        if let Some(repo) = self.owning_repo(path).await {
            let _guard = self.lock(&repo).await;
            let known = self
                .worktree_list(&repo)
                .await?
                .iter()
                .any(|e| crate::worktree::same_path(&e.path, path));
            if known {
                self.cmd(&repo)
                    .args(["worktree", "remove", "--force", "--force"])
                    .arg(path)
                    .run()
                    .await?;
            }
            if path.exists() {
                std::fs::remove_dir_all(path).map_err(|e| GitError::io("remove", path, e))?;
            }
            self.cmd(&repo).args(["worktree", "prune"]).run().await?;
            return Ok(());
        }
        std::fs::remove_dir_all(path).map_err(|e| GitError::io("remove", path, e))
    }

    /// The repository a worktree belongs to (the directory its operations are locked
    /// by): the top level of a repository with a work tree, or the bare repository.
    async fn owning_repo(&self, worktree: &Path) -> Option<PathBuf> {
        let out = self
            .cmd(worktree)
            .args(["rev-parse", "--path-format=absolute", "--git-common-dir"])
            .output()
            .await
            .ok()?;
        if !out.success() {
            return None;
        }
        let common = canonical_or(Path::new(&out.text()));
        // A worktree whose repository lies inside the worktrees root is no task's.
        if self.is_under(&common, &self.worktrees_dir) {
            return None;
        }
        if common.file_name().is_some_and(|n| n == ".git") {
            common.parent().map(Path::to_path_buf)
        } else {
            Some(common)
        }
    }

    /// `git worktree prune` in `repo`: forgets worktrees whose directory is gone.
    ///
    /// # Errors
    /// When git fails.
    pub async fn prune_worktrees(&self, repo: &Path) -> Result<(), GitError> {
        let _guard = self.lock(repo).await;
        self.cmd(repo).args(["worktree", "prune"]).run().await?;
        Ok(())
    }

    /// `git gc --auto` in a cached clone: packs loose objects when git thinks it worth
    /// it, and drops what no ref reaches any more.
    ///
    /// # Errors
    /// When git fails.
    pub async fn gc_clone(&self, clone: &Path) -> Result<(), GitError> {
        let _guard = self.lock(clone).await;
        self.cmd(clone)
            .args(["gc", "--auto", "--quiet"])
            .run()
            .await?;
        Ok(())
    }

    /// Removes a directory directly under the worktrees root or the clone cache (a stray
    /// worktree, a clone no task uses, a temporary left by a crash). Idempotent.
    ///
    /// # Errors
    /// A path anywhere else, or the removal failing.
    pub async fn remove_entry(&self, path: &Path) -> Result<(), GitError> {
        if !path.exists() {
            return Ok(());
        }
        if !self.is_under(path, &self.worktrees_dir) && !self.is_under(path, &self.cache_dir) {
            return Err(GitError::InvalidRepo {
                repo: path.display().to_string(),
                reason: "neither a worktree nor a cached clone of mainloop's".into(),
            });
        }
        let _guard = self.lock(&canonical_or(path)).await;
        std::fs::remove_dir_all(path).map_err(|e| GitError::io("remove", path, e))
    }

    /// The `index.lock` git keeps while it writes the worktree's index, when there is
    /// one: in the worktree's own git directory (under the repository's).
    pub async fn index_lock(&self, worktree: &Path) -> Option<PathBuf> {
        let out = self
            .cmd(worktree)
            .args([
                "rev-parse",
                "--path-format=absolute",
                "--git-path",
                "index.lock",
            ])
            .output()
            .await
            .ok()?;
        let lock = PathBuf::from(out.text());
        (out.success() && lock.is_file()).then_some(lock)
    }

    /// Whether `path` lies directly under the worktrees root: a worktree this server
    /// made (one recorded under an earlier data directory is not its to remove).
    #[must_use]
    pub fn holds_worktree(&self, path: &Path) -> bool {
        self.is_under(path, &self.worktrees_dir)
    }

    /// Whether `path` is a directory directly under `root`.
    fn is_under(&self, path: &Path, root: &Path) -> bool {
        canonical_or(path).parent() == Some(canonical_or(root).as_path())
    }
}

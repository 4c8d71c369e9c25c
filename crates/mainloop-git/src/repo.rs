//! Turning a task's `repo` string into a [`Repo`]: validating local repositories,
//! keeping bare clones of URLs in the cache (one per URL, fetched on reuse, local base
//! branches fast-forwarded to the remote's), and naming the branch to base work on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::source::{self, RepoSource};
use crate::{Git, GitError, Repo};

/// `update-ref`'s old value meaning "the ref must not exist yet".
const MUST_NOT_EXIST: &str = "";

impl Git {
    /// A task's repository: an existing local path (a work tree's top level or a bare
    /// repository; canonicalised) or a URL (`https://`, `ssh://`, `user@host:path`,
    /// `file://` only when allowed) cloned into the cache, or fetched if cached
    /// already. A failed fetch of an existing clone is logged, not fatal, so tasks
    /// can resume offline; [`Git::ensure_worktree`] insists on a fresh fetch before it
    /// creates new work.
    pub async fn resolve_repo(&self, repo: &str) -> Result<Repo, GitError> {
        match self.check_repo_name(repo)? {
            RepoSource::Local(path) => self.resolve_local(&path).await,
            RepoSource::Url(url) => self.resolve_url(&url).await,
        }
    }

    /// Checks a task's repository name without running git: the syntax and transport
    /// rules, an absolute local path (a relative one would depend on the server's
    /// working directory) that exists, inside the configured roots. For refusing a
    /// task before it is created; [`Git::resolve_repo`] applies the same rules.
    pub fn validate_repo_name(&self, repo: &str) -> Result<(), GitError> {
        self.check_repo_name(repo).map(|_| ())
    }

    fn check_repo_name(&self, repo: &str) -> Result<RepoSource, GitError> {
        let source = source::parse(repo, self.allow_file_urls)?;
        let local = match &source {
            RepoSource::Local(path) => Some(path.clone()),
            RepoSource::Url(url) => url
                .get(.."file://".len())
                .filter(|s| s.eq_ignore_ascii_case("file://"))
                .map(|_| PathBuf::from(&url["file://".len()..])),
        };
        if let Some(path) = local {
            self.check_local(repo, &path)?;
        }
        Ok(source)
    }

    fn check_local(&self, repo: &str, path: &Path) -> Result<(), GitError> {
        let invalid = |reason: &str| GitError::InvalidRepo {
            repo: repo.to_owned(),
            reason: reason.to_owned(),
        };
        if !path.is_absolute() {
            return Err(invalid(
                "a local repository must be an absolute path (or a URL)",
            ));
        }
        let canon = std::fs::canonicalize(path).map_err(|e| GitError::NotARepo {
            path: path.to_path_buf(),
            hint: format!(" ({e})"),
        })?;
        // Another task's worktree or a cached clone is mainloop's own: a task there would
        // give its agent another task's files.
        if [&self.worktrees_dir, &self.cache_dir]
            .iter()
            .any(|own| canon.starts_with(canonical_or(own)))
        {
            return Err(invalid("inside mainloop's own worktrees or clone cache"));
        }
        if !self.repo_roots.is_empty()
            && !self
                .repo_roots
                .iter()
                .any(|root| canon.starts_with(canonical_or(root)))
        {
            return Err(invalid(
                "outside the directories this server may use (workers.repo_roots)",
            ));
        }
        Ok(())
    }

    async fn resolve_local(&self, path: &Path) -> Result<Repo, GitError> {
        let canon = std::fs::canonicalize(path).map_err(|e| GitError::NotARepo {
            path: path.to_path_buf(),
            hint: format!(" ({e})"),
        })?;
        if !canon.is_dir() {
            return Err(GitError::NotARepo {
                path: canon,
                hint: " (not a directory)".into(),
            });
        }
        let out = self
            .cmd(&canon)
            .args(["rev-parse", "--is-bare-repository", "--absolute-git-dir"])
            .output()
            .await?;
        if !out.success() {
            let stderr = out.stderr_text();
            if stderr.contains("not a git repository") {
                return Err(GitError::NotARepo {
                    path: canon,
                    hint: String::new(),
                });
            }
            return Err(out.into_error());
        }
        let text = out.text();
        let mut lines = text.lines();
        let is_bare = lines.next() == Some("true");
        let git_dir = PathBuf::from(lines.next().unwrap_or_default());

        // Only the repository's own top level is accepted: a plain directory that
        // happens to sit inside some other repository (say, a dotfiles repo in $HOME)
        // must not silently become the task's repository.
        let top = if is_bare {
            canonical_or(&git_dir)
        } else {
            let top = self
                .cmd(&canon)
                .args(["rev-parse", "--show-toplevel"])
                .output()
                .await?;
            if !top.success() {
                return Err(GitError::NotARepo {
                    path: canon,
                    hint: " (inside a .git directory?)".into(),
                });
            }
            canonical_or(Path::new(&top.text()))
        };
        if top != canon {
            return Err(GitError::NotARepo {
                path: canon,
                hint: format!(" itself; it is inside the repository at {}", top.display()),
            });
        }
        let origin = self.config_value(&canon, "remote.origin.url").await?;
        Ok(Repo {
            path: canon,
            is_clone: false,
            origin,
        })
    }

    async fn resolve_url(&self, url: &str) -> Result<Repo, GitError> {
        std::fs::create_dir_all(&self.cache_dir)
            .map_err(|e| GitError::io("create", &self.cache_dir, e))?;
        let cache = canonical_or(&self.cache_dir);
        let dest = cache.join(cache_name(url));
        let _guard = self.lock(&dest).await;
        if dest.exists() {
            let bare = self
                .cmd(&dest)
                .args(["rev-parse", "--is-bare-repository"])
                .output()
                .await?;
            if !bare.success() || bare.text() != "true" {
                return Err(GitError::NotARepo {
                    path: dest,
                    hint: " (broken cache entry; delete it to clone again)".into(),
                });
            }
            if let Err(e) = self.sync_clone(&dest, None).await {
                tracing::warn!(url = %crate::exec::redact(url), error = %e, "fetch failed; using the cached clone as is");
            }
        } else {
            self.clone_into(url, &cache, &dest).await?;
        }
        Ok(Repo {
            path: dest,
            is_clone: true,
            origin: Some(url.to_owned()),
        })
    }

    /// Clones into a temporary directory and renames it into place, so a crash or a
    /// failed clone never leaves a half-populated cache entry behind.
    async fn clone_into(&self, url: &str, cache: &Path, dest: &Path) -> Result<(), GitError> {
        let tmp = cache.join(format!(".tmp-{}", unique_suffix()));
        let result = self.populate_clone(url, cache, &tmp).await;
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&tmp, dest) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dest.exists() {
                return Err(GitError::io("rename clone to", dest, e));
            }
            // Another mainloop process won the race; its clone is as good as ours.
        }
        Ok(())
    }

    /// A bare repository with remote-tracking refs (`refs/remotes/origin/*`), unlike
    /// `git clone --bare`, which maps the remote's branches straight onto local ones.
    /// Local branches are then ours: merges land there and fetches never clobber them.
    async fn populate_clone(&self, url: &str, cache: &Path, tmp: &Path) -> Result<(), GitError> {
        self.cmd(cache)
            .args(["init", "--bare", "--quiet"])
            .arg(tmp)
            .run()
            .await?;
        self.cmd(tmp)
            .args(["remote", "add", "origin", "--", url])
            .run()
            .await?;
        self.sync_clone(tmp, None).await
    }

    /// Fetches the clone, records the remote's default branch, and fast-forwards the
    /// local default branch (and `base`, if given) to the remote's when ours has no
    /// commits of its own.
    pub(crate) async fn sync_clone(&self, path: &Path, base: Option<&str>) -> Result<(), GitError> {
        self.cmd(path)
            .args(["fetch", "--prune", "--quiet", "origin"])
            .network()
            .run()
            .await?;
        let set_head = self
            .cmd(path)
            .args(["remote", "set-head", "origin", "--auto"])
            .network()
            .output()
            .await?;
        if !set_head.success() {
            tracing::warn!(path = %path.display(), stderr = %set_head.stderr_text(), "could not determine origin's default branch");
        }
        let default = self.origin_default(path).await?;
        if let Some(default) = &default {
            let head = self
                .cmd(path)
                .args(["symbolic-ref", "-q", "HEAD"])
                .output()
                .await?;
            let want = format!("refs/heads/{default}");
            if head.text() != want {
                self.cmd(path)
                    .args(["symbolic-ref", "HEAD", &want])
                    .run()
                    .await?;
            }
        }
        let mut branches: Vec<&str> = default.as_deref().into_iter().collect();
        if let Some(base) = base
            && !branches.contains(&base)
        {
            branches.push(base);
        }
        for branch in branches {
            self.fast_forward_from_origin(path, branch).await?;
        }
        Ok(())
    }

    async fn fast_forward_from_origin(&self, path: &Path, branch: &str) -> Result<(), GitError> {
        let local_ref = format!("refs/heads/{branch}");
        let Some(remote) = self
            .resolve_commit(path, &format!("refs/remotes/origin/{branch}"))
            .await?
        else {
            return Ok(());
        };
        match self.resolve_commit(path, &local_ref).await? {
            None => {
                self.cmd(path)
                    .args(["update-ref", "-m", "mainloop: track origin"])
                    .args([local_ref.as_str(), remote.as_str(), MUST_NOT_EXIST])
                    .run()
                    .await?;
            }
            Some(local) if local == remote => {}
            Some(local) => {
                if self.is_ancestor(path, &local, &remote).await? {
                    self.cmd(path)
                        .args(["update-ref", "-m", "mainloop: fast-forward from origin"])
                        .args([local_ref.as_str(), remote.as_str(), local.as_str()])
                        .run()
                        .await?;
                } else {
                    // Local merges not yet pushed (or a diverged remote): keep ours;
                    // publishing them is the forge's job.
                    tracing::info!(%branch, path = %path.display(), "local branch has unpushed commits; not fast-forwarding");
                }
            }
        }
        Ok(())
    }

    async fn origin_default(&self, path: &Path) -> Result<Option<String>, GitError> {
        let out = self
            .cmd(path)
            .args(["symbolic-ref", "-q", "refs/remotes/origin/HEAD"])
            .output()
            .await?;
        Ok(out
            .success()
            .then(|| out.text())
            .and_then(|r| r.strip_prefix("refs/remotes/origin/").map(str::to_owned))
            .filter(|b| !b.is_empty()))
    }

    /// The branch to base work on: the current branch of a local repository, the
    /// remote's default branch for a clone (as of the last fetch).
    pub async fn base_branch(&self, repo: &Repo) -> Result<String, GitError> {
        if repo.is_clone
            && let Some(default) = self.origin_default(&repo.path).await?
        {
            return Ok(default);
        }
        let out = self
            .cmd(&repo.path)
            .args(["symbolic-ref", "-q", "HEAD"])
            .output()
            .await?;
        match out.code {
            Some(0) => {
                let full = out.text();
                full.strip_prefix("refs/heads/")
                    .filter(|b| !b.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| GitError::Parse {
                        command: out.command.clone(),
                        detail: format!("HEAD points at {full:?}, not a branch"),
                    })
            }
            Some(1) => Err(GitError::DetachedHead {
                path: repo.path.clone(),
            }),
            _ => Err(out.into_error()),
        }
    }

    /// `git config --get`, with "unset" as `None` rather than an error.
    pub(crate) async fn config_value(
        &self,
        cwd: &Path,
        key: &str,
    ) -> Result<Option<String>, GitError> {
        let out = self
            .cmd(cwd)
            .args(["config", "--get", key])
            .output()
            .await?;
        match out.code {
            Some(0) => Ok(Some(out.text()).filter(|v| !v.is_empty())),
            Some(1) => Ok(None),
            _ => Err(out.into_error()),
        }
    }

    /// The commit a ref or revision names, or `None` if it does not exist.
    pub(crate) async fn resolve_commit(
        &self,
        cwd: &Path,
        rev: &str,
    ) -> Result<Option<String>, GitError> {
        let out = self
            .cmd(cwd)
            .args(["rev-parse", "-q", "--verify", "--end-of-options"])
            .arg(format!("{rev}^{{commit}}"))
            .output()
            .await?;
        match out.code {
            Some(0) => Ok(Some(out.text())),
            Some(1) => Ok(None),
            _ => Err(out.into_error()),
        }
    }

    pub(crate) async fn is_ancestor(
        &self,
        cwd: &Path,
        ancestor: &str,
        of: &str,
    ) -> Result<bool, GitError> {
        self.cmd(cwd)
            .args(["merge-base", "--is-ancestor", ancestor, of])
            .yes_no()
            .await
    }
}

/// The cache directory name for a URL: a hash, so any URL maps to a safe, fixed-length
/// name and the same URL always finds its clone again.
pub(crate) fn cache_name(url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    hex::encode(&digest[..12])
}

pub(crate) fn canonical_or(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Unique enough for temporary directory names within one data dir, without a
/// random number generator: pid + time + a process-wide counter.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos:x}-{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_name_is_stable_and_safe() {
        let a = cache_name("https://github.com/a/b.git");
        assert_eq!(a, cache_name("https://github.com/a/b.git"));
        assert_ne!(a, cache_name("https://github.com/a/c.git"));
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}

//! A task's branch and worktree: creating them from the base (idempotently, so a
//! restart finds the same worktree), committing the agent's work on that branch, and
//! removing the worktree when the task ends (the branch stays).

use std::path::{Path, PathBuf};

use crate::repo::canonical_or;
use crate::{BRANCH_PREFIX, Git, GitError, MAINLOOP_EMAIL, MAINLOOP_NAME, Repo, Worktree, slug};

/// One entry of `git worktree list --porcelain`.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorktreeEntry {
    pub(crate) path: PathBuf,
    /// Full ref name (`refs/heads/...`) when a branch is checked out.
    pub(crate) branch: Option<String>,
    pub(crate) bare: bool,
    pub(crate) prunable: bool,
}

fn invalid_name(name: &str, reason: &str) -> GitError {
    GitError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Short ids become a directory name and part of a ref, so only a plain charset.
fn validate_short_id(short_id: &str) -> Result<(), GitError> {
    if short_id.is_empty() || short_id.len() > 64 {
        return Err(invalid_name(short_id, "must be 1 to 64 characters"));
    }
    if short_id.starts_with(['-', '.'])
        || !short_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Err(invalid_name(
            short_id,
            "only ASCII letters, digits, '-' and '_', not starting with '-'",
        ));
    }
    Ok(())
}

impl Git {
    /// Validates a branch name we are about to pass to git as a ref.
    pub(crate) async fn validate_branch(&self, cwd: &Path, branch: &str) -> Result<(), GitError> {
        if branch.is_empty() || branch.starts_with('-') || branch.chars().any(char::is_control) {
            return Err(invalid_name(branch, "not a usable branch name"));
        }
        let ok = self
            .cmd(cwd)
            .args(["check-ref-format", &format!("refs/heads/{branch}")])
            .yes_no()
            .await?;
        if ok {
            Ok(())
        } else {
            Err(invalid_name(branch, "not a valid branch name"))
        }
    }

    pub(crate) async fn worktree_list(&self, repo: &Path) -> Result<Vec<WorktreeEntry>, GitError> {
        let out = self
            .cmd(repo)
            .args(["worktree", "list", "--porcelain"])
            .text()
            .await?;
        Ok(parse_worktree_list(&out))
    }

    /// The identity overrides needed for a commit in `cwd`: mainloop's, for whichever of
    /// name and email the repository (with the user's config) does not define.
    pub(crate) async fn identity_overrides(&self, cwd: &Path) -> Result<Vec<String>, GitError> {
        let mut overrides = Vec::new();
        if self.config_value(cwd, "user.name").await?.is_none() {
            overrides.push(format!("user.name={MAINLOOP_NAME}"));
        }
        if self.config_value(cwd, "user.email").await?.is_none() {
            overrides.push(format!("user.email={MAINLOOP_EMAIL}"));
        }
        Ok(overrides)
    }

    /// Creates branch `mainloop/<short_id>-<slug(description)>` from `base` and its
    /// worktree at `<worktrees_dir>/<short_id>`. For a clone, fetches first so work
    /// starts from the remote's latest base.
    ///
    /// Idempotent: if the worktree exists (a restart), it is returned unchanged; if
    /// only the branch exists (the worktree was removed), a worktree is recreated on
    /// it with its commits. The description must stay the same for a task: reuse
    /// requires the exact branch name, so two tasks whose short ids collide get an
    /// error instead of sharing a worktree.
    pub async fn ensure_worktree(
        &self,
        repo: &Repo,
        short_id: &str,
        description: &str,
        base: &str,
    ) -> Result<Worktree, GitError> {
        validate_short_id(short_id)?;
        self.validate_branch(&repo.path, base).await?;
        let branch = format!("{BRANCH_PREFIX}{short_id}-{}", slug(description));
        std::fs::create_dir_all(&self.worktrees_dir)
            .map_err(|e| GitError::io("create", &self.worktrees_dir, e))?;
        let path = canonical_or(&self.worktrees_dir).join(short_id);
        let worktree = Worktree {
            path: path.clone(),
            branch: branch.clone(),
            base: base.to_owned(),
        };

        let _guard = self.lock(&repo.path).await;
        let entries = self.worktree_list(&repo.path).await?;
        if let Some(entry) = entries.iter().find(|e| same_path(&e.path, &path)) {
            if path.is_dir() && !entry.prunable {
                let expected = format!("refs/heads/{branch}");
                let ours = match &entry.branch {
                    Some(actual) => *actual == expected,
                    // Detached mid-rebase or bisect by the agent: still this task's
                    // worktree as long as its branch exists.
                    None => self.resolve_commit(&repo.path, &expected).await?.is_some(),
                };
                if ours {
                    return Ok(worktree);
                }
                return Err(GitError::WrongBranch {
                    path,
                    expected: branch,
                    actual: entry
                        .branch
                        .as_deref()
                        .map_or("a detached HEAD", |b| b.trim_start_matches("refs/heads/"))
                        .to_owned(),
                });
            }
            // Registered, but the directory is gone (data dir cleaned up): forget it.
            self.cmd(&repo.path)
                .args(["worktree", "prune"])
                .run()
                .await?;
        } else if path.exists() {
            let empty = std::fs::read_dir(&path)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                return Err(GitError::PathOccupied {
                    path,
                    repo: repo.path.clone(),
                });
            }
            std::fs::remove_dir(&path).map_err(|e| GitError::io("remove", &path, e))?;
        }

        let branch_ref = format!("refs/heads/{branch}");
        if self
            .resolve_commit(&repo.path, &branch_ref)
            .await?
            .is_some()
        {
            // The work survives on the branch; give it a worktree again.
            self.add_worktree(&repo.path, &path, &[], &branch).await?;
            return Ok(worktree);
        }

        if repo.is_clone {
            self.sync_clone(&repo.path, Some(base)).await?;
        }
        let base_ref = format!("refs/heads/{base}");
        if self.resolve_commit(&repo.path, &base_ref).await?.is_none() {
            return Err(invalid_name(base, "no such branch in the repository"));
        }
        self.add_worktree(&repo.path, &path, &["--no-track", "-b", &branch], &base_ref)
            .await?;
        Ok(worktree)
    }

    /// `git worktree add`, cleaning up after itself when it fails halfway.
    async fn add_worktree(
        &self,
        repo: &Path,
        path: &Path,
        options: &[&str],
        start: &str,
    ) -> Result<(), GitError> {
        let result = self
            .cmd(repo)
            .args(["worktree", "add", "--quiet"])
            .args(options)
            .arg(path)
            .arg(start)
            .run()
            .await;
        if let Err(e) = result {
            if path.exists() {
                let _ = std::fs::remove_dir_all(path);
            }
            let _ = self.cmd(repo).args(["worktree", "prune"]).output().await;
            return Err(e);
        }
        Ok(())
    }

    /// Pushes the task branch's commit to `url` (the branch of the same name there) and
    /// returns the pushed commit. The URL never carries credentials: a forge token reaches
    /// git through the askpass environment the `Git` was built with, so it cannot end up in
    /// a config file, a remote or an error message.
    ///
    /// # Errors
    /// When git fails (a rejected push, the network, authentication).
    pub async fn push_branch(&self, wt: &Worktree, url: &str) -> Result<String, GitError> {
        self.ensure_on_branch(wt).await?;
        let sha = self
            .resolve_commit(&wt.path, "HEAD")
            .await?
            .ok_or_else(|| GitError::InvalidRepo {
                repo: wt.path.display().to_string(),
                reason: "the task branch has no commit to push".into(),
            })?;
        let refspec = format!("HEAD:refs/heads/{}", wt.branch);
        self.cmd(&wt.path)
            .network()
            .args(["push", "--quiet", "--no-verify", url, &refspec])
            .run()
            .await?;
        Ok(sha)
    }

    /// `git add -A` and commit on the task branch when anything changed (or a merge
    /// is waiting to be concluded). Returns the new commit, or `None` when clean.
    /// The author is always mainloop; the committer is the repository's identity if
    /// it has one.
    pub async fn commit_all(
        &self,
        wt: &Worktree,
        message: &str,
    ) -> Result<Option<String>, GitError> {
        self.ensure_on_branch(wt).await?;
        self.cmd(&wt.path).args(["add", "-A"]).run().await?;
        let merging = self.resolve_commit(&wt.path, "MERGE_HEAD").await?.is_some();
        let clean = self
            .cmd(&wt.path)
            .args(["diff", "--cached", "--quiet", "--no-ext-diff"])
            .yes_no()
            .await?;
        if clean && !merging {
            return Ok(None);
        }
        let message = if message.trim().is_empty() {
            "mainloop: save work"
        } else {
            message
        };
        let mut cmd = self
            .cmd(&wt.path)
            .env("GIT_AUTHOR_NAME", MAINLOOP_NAME)
            .env("GIT_AUTHOR_EMAIL", MAINLOOP_EMAIL);
        for kv in self.identity_overrides(&wt.path).await? {
            cmd = cmd.config(kv);
        }
        // `whitespace` rather than the default `strip`: a message line starting with
        // '#' (an issue number) is content, not a comment.
        cmd.args([
            "commit",
            "--quiet",
            "--no-verify",
            "--allow-empty",
            "--cleanup=whitespace",
            "-m",
            message,
        ])
        .run()
        .await?;
        Ok(Some(
            self.cmd(&wt.path)
                .args(["rev-parse", "HEAD"])
                .text()
                .await?,
        ))
    }

    pub(crate) async fn ensure_on_branch(&self, wt: &Worktree) -> Result<(), GitError> {
        let out = self
            .cmd(&wt.path)
            .args(["symbolic-ref", "-q", "HEAD"])
            .output()
            .await?;
        let expected = format!("refs/heads/{}", wt.branch);
        match out.code {
            Some(0) if out.text() == expected => Ok(()),
            Some(0 | 1) => Err(GitError::WrongBranch {
                path: wt.path.clone(),
                expected: wt.branch.clone(),
                actual: if out.success() {
                    out.text().trim_start_matches("refs/heads/").to_owned()
                } else {
                    "a detached HEAD".to_owned()
                },
            }),
            _ => Err(out.into_error()),
        }
    }

    /// Removes the task's worktree, discarding uncommitted changes; the branch and its
    /// commits stay. Idempotent.
    pub async fn remove_worktree(&self, repo: &Repo, wt: &Worktree) -> Result<(), GitError> {
        let _guard = self.lock(&repo.path).await;
        let entries = self.worktree_list(&repo.path).await?;
        let registered = entries.iter().any(|e| same_path(&e.path, &wt.path));
        if registered && wt.path.exists() {
            self.cmd(&repo.path)
                .args(["worktree", "remove", "--force"])
                .arg(&wt.path)
                .run()
                .await?;
        } else if wt.path.exists() && self.is_ours(&wt.path) {
            std::fs::remove_dir_all(&wt.path).map_err(|e| GitError::io("remove", &wt.path, e))?;
        }
        self.cmd(&repo.path)
            .args(["worktree", "prune"])
            .run()
            .await?;
        Ok(())
    }

    /// The repository's shared git directory (objects, refs, config) that `wt` uses:
    /// what a sandboxed agent in the worktree must be able to read for `git status`
    /// and `git diff`, and must never be able to write.
    pub async fn common_dir(&self, wt: &Worktree) -> Result<PathBuf, GitError> {
        let out = self
            .cmd(&wt.path)
            .args(["rev-parse", "--path-format=absolute", "--git-common-dir"])
            .text()
            .await?;
        Ok(PathBuf::from(out))
    }

    /// Only directories directly under our worktrees dir are ever deleted by hand.
    fn is_ours(&self, path: &Path) -> bool {
        let root = canonical_or(&self.worktrees_dir);
        canonical_or(path).parent() == Some(root.as_path())
    }
}

pub(crate) fn same_path(a: &Path, b: &Path) -> bool {
    a == b || canonical_or(a) == canonical_or(b)
}

pub(crate) fn parse_worktree_list(out: &str) -> Vec<WorktreeEntry> {
    let mut entries = Vec::new();
    let mut current: Option<WorktreeEntry> = None;
    for line in out.lines() {
        if let Some(path) = line.strip_prefix("worktree ") {
            entries.extend(current.take());
            current = Some(WorktreeEntry {
                path: PathBuf::from(path),
                ..WorktreeEntry::default()
            });
        } else if let Some(entry) = current.as_mut() {
            if let Some(branch) = line.strip_prefix("branch ") {
                entry.branch = Some(branch.to_owned());
            } else if line == "bare" {
                entry.bare = true;
            } else if line == "prunable" || line.starts_with("prunable ") {
                entry.prunable = true;
            }
        }
    }
    entries.extend(current);
    entries
}

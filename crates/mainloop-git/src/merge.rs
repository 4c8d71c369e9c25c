//! Bringing a task branch into its base branch, and the base into the task branch.
//!
//! Merging into the base never leaves a half-done merge anywhere: the merge commit is
//! computed off to the side (with `git merge-tree --write-tree`, or in a temporary
//! detached worktree on git older than 2.38), and only then does the base branch
//! move — by compare-and-swap of the ref when it is checked out nowhere, or by a
//! fast-forward of the (clean) worktree that has it checked out, so the user's files
//! follow. A conflict therefore changes nothing, and a crash mid-merge leaves at most
//! an unreferenced commit.

use std::path::{Path, PathBuf};

use crate::repo::{canonical_or, unique_suffix};
use crate::worktree::same_path;
use crate::{Git, GitError, MergeOutcome, Repo, Worktree};

/// How often the merge is recomputed when the base branch moves underneath it.
const MAX_ATTEMPTS: usize = 3;

/// Merge behaviour that user config could otherwise change.
const MERGE_OVERRIDES: &[&str] = &[
    "merge.autoStash=false",
    "merge.verifySignatures=false",
    "merge.renames=true",
];

enum Computed {
    Commit(String),
    Conflict(Vec<String>),
}

impl Git {
    /// Merges the task branch into the base branch of the original repository with a
    /// merge commit (never a fast-forward), message `Merge <branch>: <title>`.
    ///
    /// If the base is checked out in a worktree, that worktree must be clean (else
    /// [`GitError::Dirty`]) and is fast-forwarded to the merge, so its files show the
    /// result. Otherwise only the ref moves. For clones this is the cache's local
    /// base branch; pushing is someone else's job.
    pub async fn merge(
        &self,
        repo: &Repo,
        wt: &Worktree,
        title: &str,
    ) -> Result<MergeOutcome, GitError> {
        let _guard = self.lock(&repo.path).await;
        let branch_ref = format!("refs/heads/{}", wt.branch);
        let base_ref = format!("refs/heads/{}", wt.base);
        let title = title.trim();
        let message = if title.is_empty() {
            format!("Merge {}", wt.branch)
        } else {
            format!("Merge {}: {title}", wt.branch)
        };

        for _ in 0..MAX_ATTEMPTS {
            let branch_sha = self
                .require_commit(&repo.path, &branch_ref, &wt.branch)
                .await?;
            let base_sha = self.require_commit(&repo.path, &base_ref, &wt.base).await?;
            if self.is_ancestor(&repo.path, &branch_sha, &base_sha).await? {
                return Ok(MergeOutcome::AlreadyMerged);
            }
            let checked_out = self.base_checkout(&repo.path, wt).await?;
            if let Some(dir) = &checked_out {
                self.ensure_clean(dir, &wt.base).await?;
            }
            let merged = match self
                .compute_merge(repo, &base_sha, &branch_sha, &message)
                .await?
            {
                Computed::Commit(sha) => sha,
                Computed::Conflict(files) => return Ok(MergeOutcome::Conflict { files }),
            };
            let moved = match &checked_out {
                Some(dir) => {
                    self.fast_forward_checkout(dir, wt, &base_sha, &merged)
                        .await?
                }
                None => {
                    self.swap_ref(&repo.path, &base_ref, &merged, &base_sha, &message)
                        .await?
                }
            };
            if moved {
                tracing::info!(branch = %wt.branch, base = %wt.base, sha = %merged, "merged");
                return Ok(MergeOutcome::Merged { sha: merged });
            }
            tracing::info!(base = %wt.base, "base branch moved during merge; recomputing");
        }
        Err(GitError::Raced {
            branch: wt.base.clone(),
        })
    }

    /// Merges the base branch into the task branch inside its worktree, for the agent
    /// to resolve conflicts: on conflict the merge stays in progress with markers in
    /// the files, and the conflicted paths are returned (empty when it merged cleanly
    /// or was already up to date). If a merge is already in progress, returns its
    /// remaining conflicts without starting another. Commit pending work first.
    pub async fn merge_base_into_branch(&self, wt: &Worktree) -> Result<Vec<String>, GitError> {
        self.ensure_on_branch(wt).await?;
        if self.resolve_commit(&wt.path, "MERGE_HEAD").await?.is_some() {
            return self.unmerged_files(&wt.path).await;
        }
        let base_ref = format!("refs/heads/{}", wt.base);
        let mut cmd = self.cmd(&wt.path);
        for kv in MERGE_OVERRIDES {
            cmd = cmd.config(*kv);
        }
        for kv in self.identity_overrides(&wt.path).await? {
            cmd = cmd.config(kv);
        }
        let out = cmd
            .args(["merge", "--ff", "--no-verify", "--no-edit", "--quiet", "-m"])
            .arg(format!("Merge {} into {}", wt.base, wt.branch))
            .arg(&base_ref)
            .output()
            .await?;
        if out.success() {
            return Ok(Vec::new());
        }
        let files = self.unmerged_files(&wt.path).await?;
        if files.is_empty() {
            // Refused before starting (e.g. local changes in the way): not a conflict.
            return Err(out.into_error());
        }
        Ok(files)
    }

    async fn require_commit(
        &self,
        repo: &Path,
        full_ref: &str,
        name: &str,
    ) -> Result<String, GitError> {
        self.resolve_commit(repo, full_ref)
            .await?
            .ok_or_else(|| GitError::InvalidName {
                name: name.to_owned(),
                reason: "no such branch in the repository".into(),
            })
    }

    /// The worktree (other than the task's) where the base branch is checked out.
    /// A base branch in the middle of a rebase counts as dirty: moving its ref would
    /// be undone when the rebase finishes.
    async fn base_checkout(&self, repo: &Path, wt: &Worktree) -> Result<Option<PathBuf>, GitError> {
        let base_ref = format!("refs/heads/{}", wt.base);
        let entries = self.worktree_list(repo).await?;
        let found = entries
            .iter()
            .find(|e| !e.bare && !e.prunable && e.branch.as_deref() == Some(base_ref.as_str()))
            .map(|e| e.path.clone());
        if let Some(path) = &found
            && same_path(path, &wt.path)
        {
            return Err(GitError::WrongBranch {
                path: wt.path.clone(),
                expected: wt.branch.clone(),
                actual: wt.base.clone(),
            });
        }
        if found.is_none() && self.rebasing(repo, &base_ref).await? {
            return Err(GitError::Dirty {
                branch: wt.base.clone(),
                path: repo.to_path_buf(),
            });
        }
        Ok(found)
    }

    async fn rebasing(&self, repo: &Path, full_ref: &str) -> Result<bool, GitError> {
        let common = self
            .cmd(repo)
            .args(["rev-parse", "--git-common-dir"])
            .text()
            .await?;
        let common = repo.join(common);
        let mut admin_dirs = vec![common.clone()];
        if let Ok(dir) = std::fs::read_dir(common.join("worktrees")) {
            admin_dirs.extend(dir.flatten().map(|e| e.path()));
        }
        Ok(admin_dirs.iter().any(|d| {
            ["rebase-merge/head-name", "rebase-apply/head-name"]
                .iter()
                .any(|f| std::fs::read_to_string(d.join(f)).is_ok_and(|s| s.trim() == full_ref))
        }))
    }

    async fn ensure_clean(&self, dir: &Path, branch: &str) -> Result<(), GitError> {
        let status = self
            .cmd(dir)
            .args(["status", "--porcelain=v1", "-z", "--untracked-files=no"])
            .run()
            .await?;
        let merging = self.resolve_commit(dir, "MERGE_HEAD").await?.is_some();
        if !status.stdout.is_empty() || merging {
            return Err(GitError::Dirty {
                branch: branch.to_owned(),
                path: dir.to_path_buf(),
            });
        }
        Ok(())
    }

    async fn compute_merge(
        &self,
        repo: &Repo,
        base_sha: &str,
        branch_sha: &str,
        message: &str,
    ) -> Result<Computed, GitError> {
        if self.use_merge_tree {
            if let Some(computed) = self
                .merge_with_merge_tree(&repo.path, base_sha, branch_sha, message)
                .await?
            {
                return Ok(computed);
            }
            tracing::debug!(
                "git merge-tree --write-tree unavailable; merging in a temporary worktree"
            );
        }
        self.merge_in_temp_worktree(&repo.path, base_sha, branch_sha, message)
            .await
    }

    /// `None` when this git does not know `merge-tree --write-tree` (before 2.38).
    async fn merge_with_merge_tree(
        &self,
        repo: &Path,
        base_sha: &str,
        branch_sha: &str,
        message: &str,
    ) -> Result<Option<Computed>, GitError> {
        let mut cmd = self.cmd(repo);
        for kv in MERGE_OVERRIDES {
            cmd = cmd.config(*kv);
        }
        let out = cmd
            .args([
                "merge-tree",
                "--write-tree",
                "-z",
                "--name-only",
                "--no-messages",
                base_sha,
                branch_sha,
            ])
            .output()
            .await?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut tokens = text.split('\0');
        match out.code {
            Some(0) => {
                let tree = tokens.next().unwrap_or_default().trim().to_owned();
                if tree.is_empty() {
                    return Err(GitError::Parse {
                        command: out.command,
                        detail: "no tree id".into(),
                    });
                }
                let mut commit = self.cmd(repo);
                for kv in self.identity_overrides(repo).await? {
                    commit = commit.config(kv);
                }
                let sha = commit
                    .args([
                        "commit-tree",
                        &tree,
                        "-p",
                        base_sha,
                        "-p",
                        branch_sha,
                        "-m",
                        message,
                    ])
                    .text()
                    .await?;
                Ok(Some(Computed::Commit(sha)))
            }
            Some(1) => {
                let _tree = tokens.next();
                let files = dedup(tokens.take_while(|t| !t.is_empty()).map(str::to_owned));
                Ok(Some(Computed::Conflict(files)))
            }
            Some(129) => Ok(None),
            _ => Err(out.into_error()),
        }
    }

    async fn merge_in_temp_worktree(
        &self,
        repo: &Path,
        base_sha: &str,
        branch_sha: &str,
        message: &str,
    ) -> Result<Computed, GitError> {
        std::fs::create_dir_all(&self.worktrees_dir)
            .map_err(|e| GitError::io("create", &self.worktrees_dir, e))?;
        let tmp = canonical_or(&self.worktrees_dir).join(format!(".merge-{}", unique_suffix()));
        self.cmd(repo)
            .args(["worktree", "add", "--quiet", "--detach"])
            .arg(&tmp)
            .arg(base_sha)
            .run()
            .await?;
        let result = self.merge_detached(&tmp, branch_sha, message).await;
        let removed = self
            .cmd(repo)
            .args(["worktree", "remove", "--force"])
            .arg(&tmp)
            .output()
            .await;
        if !matches!(&removed, Ok(o) if o.success()) {
            let _ = std::fs::remove_dir_all(&tmp);
            let _ = self.cmd(repo).args(["worktree", "prune"]).output().await;
        }
        result
    }

    async fn merge_detached(
        &self,
        dir: &Path,
        branch_sha: &str,
        message: &str,
    ) -> Result<Computed, GitError> {
        let mut cmd = self.cmd(dir);
        for kv in MERGE_OVERRIDES {
            cmd = cmd.config(*kv);
        }
        for kv in self.identity_overrides(dir).await? {
            cmd = cmd.config(kv);
        }
        let out = cmd
            .args([
                "merge",
                "--no-ff",
                "--no-verify",
                "--no-edit",
                "--quiet",
                "-m",
                message,
                branch_sha,
            ])
            .output()
            .await?;
        if out.success() {
            let sha = self.cmd(dir).args(["rev-parse", "HEAD"]).text().await?;
            return Ok(Computed::Commit(sha));
        }
        let files = self.unmerged_files(dir).await?;
        if files.is_empty() {
            return Err(out.into_error());
        }
        let _ = self.cmd(dir).args(["merge", "--abort"]).output().await;
        Ok(Computed::Conflict(files))
    }

    /// Moves a checked-out base to the merge commit with a fast-forward, so the
    /// worktree's files follow. `false` when the base moved since `old`.
    async fn fast_forward_checkout(
        &self,
        dir: &Path,
        wt: &Worktree,
        old: &str,
        new: &str,
    ) -> Result<bool, GitError> {
        let base_ref = format!("refs/heads/{}", wt.base);
        if self.resolve_commit(dir, &base_ref).await?.as_deref() != Some(old) {
            return Ok(false);
        }
        let out = self
            .cmd(dir)
            .config("merge.autoStash=false")
            .args(["merge", "--ff-only", "--quiet", new])
            .output()
            .await?;
        if out.success() {
            return Ok(true);
        }
        if self.resolve_commit(dir, &base_ref).await?.as_deref() != Some(old) {
            return Ok(false);
        }
        if out.stderr_text().contains("would be overwritten") {
            // Untracked files in the user's worktree collide with the merge.
            return Err(GitError::Dirty {
                branch: wt.base.clone(),
                path: dir.to_path_buf(),
            });
        }
        Err(out.into_error())
    }

    /// `update-ref <ref> <new> <old>`: moves the ref only if nobody moved it since we
    /// read it. `false` when they did.
    async fn swap_ref(
        &self,
        repo: &Path,
        full_ref: &str,
        new: &str,
        old: &str,
        message: &str,
    ) -> Result<bool, GitError> {
        let out = self
            .cmd(repo)
            .args(["update-ref", "-m", message, full_ref, new, old])
            .output()
            .await?;
        if out.success() {
            return Ok(true);
        }
        if self.resolve_commit(repo, full_ref).await?.as_deref() != Some(old) {
            return Ok(false);
        }
        Err(out.into_error())
    }

    async fn unmerged_files(&self, dir: &Path) -> Result<Vec<String>, GitError> {
        let out = self
            .cmd(dir)
            .args([
                "diff",
                "--name-only",
                "--diff-filter=U",
                "-z",
                "--no-relative",
            ])
            .run()
            .await?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(dedup(
            text.split('\0')
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        ))
    }
}

fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

//! A copy of a task's workspace on another machine (a runner's), kept in step with the
//! server's worktree over git: brought to the task branch's tip plus the server's
//! snapshot of uncommitted work, and its own work sent back as a snapshot under a ref
//! of the task's (the server names it). The server's copy stays the one that commits,
//! checks and merges.

use std::path::Path;

use crate::{Git, GitError, Snapshot};

impl Git {
    /// Makes `dir` a copy of `branch` from `url` (created on first use), with the work
    /// of `snapshot` (a ref on the remote) on top when given. Whatever `dir` held that
    /// was not sent back is discarded: the server's state is the task's state.
    ///
    /// # Errors
    /// A bad branch name; the remote unreachable or lacking the branch or snapshot;
    /// git failures.
    pub async fn checkout_copy(
        &self,
        dir: &Path,
        url: &str,
        branch: &str,
        snapshot: Option<&str>,
    ) -> Result<(), GitError> {
        std::fs::create_dir_all(dir).map_err(|e| GitError::io("create", dir, e))?;
        if !dir.join(".git").exists() {
            self.cmd(dir).args(["init", "-q"]).run().await?;
        }
        self.validate_branch(dir, branch).await?;
        let tip = format!("refs/mainloop/remote/{branch}");
        let mut refspecs = vec![format!("+refs/heads/{branch}:{tip}")];
        if let Some(snap) = snapshot {
            refspecs.push(format!("+{snap}:refs/mainloop/snapshot"));
        }
        self.cmd(dir)
            .args(["fetch", "-q", "--no-tags", "--end-of-options", url])
            .args(&refspecs)
            .network()
            .run()
            .await?;
        self.cmd(dir)
            .args(["checkout", "-q", "-f", "-B", branch, &tip])
            .run()
            .await?;
        // Untracked leftovers of an earlier run here; ignored files (dependencies,
        // build caches) are kept, as in the server's worktree.
        self.cmd(dir)
            .args(["clean", "-q", "-f", "-d"])
            .run()
            .await?;
        if snapshot.is_some() {
            self.restore_snapshot(dir, "refs/mainloop/snapshot").await?;
        }
        Ok(())
    }

    /// Snapshots `dir` and sends the snapshot to `url` under `refname`, replacing
    /// what was there.
    ///
    /// # Errors
    /// The remote unreachable or refusing the ref; git failures.
    pub async fn send_snapshot(
        &self,
        dir: &Path,
        url: &str,
        refname: &str,
    ) -> Result<Snapshot, GitError> {
        let snap = self.snapshot(dir).await?;
        self.cmd(dir)
            .args(["push", "-q", "--no-verify", "--end-of-options", url])
            .arg(format!("+{}:{refname}", snap.commit))
            .network()
            .run()
            .await?;
        Ok(snap)
    }

    /// Makes the worktree `dir` what a copy sent back as `snapshot` (a ref or commit in
    /// its repository): the branch moved forward to the commits the copy made (the
    /// snapshot's parent, which must descend from `HEAD`), then the snapshot's files as
    /// uncommitted work. What `dir` held uncommitted before is replaced: the copy
    /// started from it.
    ///
    /// # Errors
    /// [`GitError::SnapshotElsewhere`] when the copy's commits do not descend from
    /// `HEAD` (the branch moved here meanwhile) — nothing is changed then; git failures.
    pub async fn take_back(&self, dir: &Path, snapshot: &str) -> Result<(), GitError> {
        let head = self.rev(dir, "HEAD").await?;
        let there = self.rev(dir, &format!("{snapshot}^1")).await?;
        if !self.is_ancestor(dir, &head, &there).await? {
            return Err(GitError::SnapshotElsewhere {
                snapshot: snapshot.to_owned(),
                parent: there,
                head,
                path: dir.to_path_buf(),
            });
        }
        self.cmd(dir)
            .args(["reset", "-q", "--hard", "HEAD"])
            .run()
            .await?;
        self.cmd(dir)
            .args(["clean", "-q", "-f", "-d"])
            .run()
            .await?;
        if there != head {
            self.cmd(dir)
                .args(["merge", "-q", "--ff-only", &there])
                .run()
                .await?;
        }
        self.restore_snapshot(dir, snapshot).await
    }

    /// Records the uncommitted work of the worktree `dir` as a snapshot under
    /// `refname` in its repository, for a copy elsewhere to fetch; `None` when there
    /// is none (and the ref is removed).
    ///
    /// # Errors
    /// Git failures.
    pub async fn publish_snapshot(
        &self,
        dir: &Path,
        refname: &str,
    ) -> Result<Option<Snapshot>, GitError> {
        let snap = self.snapshot(dir).await?;
        if snap.clean {
            let _ = self
                .cmd(dir)
                .args(["update-ref", "-d", refname])
                .output()
                .await?;
            return Ok(None);
        }
        self.cmd(dir)
            .args(["update-ref", refname, &snap.commit])
            .run()
            .await?;
        Ok(Some(snap))
    }
}

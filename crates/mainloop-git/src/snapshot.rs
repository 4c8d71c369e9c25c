//! A workspace's uncommitted state as a commit, and back: how work moves between the
//! server's worktree and a runner's copy of it without a commit on the task branch.
//! The snapshot is a commit whose parent is `HEAD` and whose tree is the working tree
//! as `git add -A` sees it (tracked changes, deletions and untracked files; ignored
//! files stay where they are). Taking one touches neither the index nor the files.

use std::path::{Path, PathBuf};

use crate::{Git, GitError, MAINLOOP_EMAIL, MAINLOOP_NAME};

/// A workspace's state at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot commit.
    pub commit: String,
    /// The commit the workspace was on (the snapshot's parent).
    pub head: String,
    /// Whether the working tree matched `head` exactly.
    pub clean: bool,
}

impl Git {
    /// Records the working tree of `dir` as a commit on top of its `HEAD`, through an
    /// index of its own, so the workspace's index and files are left as they were.
    ///
    /// # Errors
    /// Git failures (not a repository, no `HEAD`).
    pub async fn snapshot(&self, dir: &Path) -> Result<Snapshot, GitError> {
        let head = self.rev(dir, "HEAD").await?;
        let index = self.private_index(dir).await?;
        let result = self.snapshot_with(dir, &head, &index).await;
        // A leftover index only costs disk; it is replaced by the next snapshot.
        let _ = std::fs::remove_file(&index);
        result
    }

    async fn snapshot_with(
        &self,
        dir: &Path,
        head: &str,
        index: &Path,
    ) -> Result<Snapshot, GitError> {
        let _ = std::fs::remove_file(index);
        let with_index = |args: &[&str]| {
            self.cmd(dir)
                .env("GIT_INDEX_FILE", index)
                .args(args.iter().copied())
        };
        with_index(&["read-tree", head]).run().await?;
        with_index(&["add", "-A"]).run().await?;
        let tree = with_index(&["write-tree"]).text().await?;
        let head_tree = self
            .cmd(dir)
            .args(["rev-parse", &format!("{head}^{{tree}}")])
            .text()
            .await?;
        let commit = self
            .cmd(dir)
            .env("GIT_AUTHOR_NAME", MAINLOOP_NAME)
            .env("GIT_AUTHOR_EMAIL", MAINLOOP_EMAIL)
            .env("GIT_COMMITTER_NAME", MAINLOOP_NAME)
            .env("GIT_COMMITTER_EMAIL", MAINLOOP_EMAIL)
            .args([
                "commit-tree",
                &tree,
                "-p",
                head,
                "-m",
                "mainloop: workspace snapshot",
            ])
            .text()
            .await?;
        Ok(Snapshot {
            commit,
            head: head.to_owned(),
            clean: tree == head_tree,
        })
    }

    /// Makes the files of `dir` those of `snapshot`, whose parent must be `dir`'s
    /// `HEAD`: changed and untracked files as recorded, files it lacks removed (ignored
    /// files stay), and the index back at `HEAD`, so the changes read as uncommitted.
    ///
    /// # Errors
    /// [`GitError::SnapshotElsewhere`] when `HEAD` is not the snapshot's parent (the
    /// branch moved meanwhile) — nothing is changed then; git failures.
    pub async fn restore_snapshot(&self, dir: &Path, snapshot: &str) -> Result<(), GitError> {
        let head = self.rev(dir, "HEAD").await?;
        let parent = self.rev(dir, &format!("{snapshot}^1")).await?;
        if parent != head {
            return Err(GitError::SnapshotElsewhere {
                snapshot: snapshot.to_owned(),
                parent,
                head,
                path: dir.to_path_buf(),
            });
        }
        // Staging everything first puts untracked files in the index, so that the reset
        // to the snapshot removes those it does not have.
        self.cmd(dir).args(["add", "-A"]).run().await?;
        self.cmd(dir)
            .args(["read-tree", "-u", "--reset", snapshot])
            .run()
            .await?;
        self.cmd(dir).args(["reset", "-q"]).run().await?;
        Ok(())
    }

    /// The commit `rev` names in `dir`.
    pub(crate) async fn rev(&self, dir: &Path, rev: &str) -> Result<String, GitError> {
        self.cmd(dir)
            .args(["rev-parse", "--verify", "--end-of-options"])
            .arg(format!("{rev}^{{commit}}"))
            .text()
            .await
    }

    /// The scratch index a snapshot of `dir` uses, inside its git directory (each
    /// linked worktree has its own).
    async fn private_index(&self, dir: &Path) -> Result<PathBuf, GitError> {
        let path = self
            .cmd(dir)
            .args(["rev-parse", "--git-path", "mainloop-snapshot-index"])
            .text()
            .await?;
        let path = PathBuf::from(path);
        Ok(if path.is_absolute() {
            path
        } else {
            dir.join(path)
        })
    }
}

//! Run leases: placing a task's run on one of its owner's runners (a new epoch each
//! time), releasing it under the epoch it was placed with, and what the runner holding
//! a lease may reach of the task's repository over git.

use crate::{Engine, EngineError, Result, now};
use mainloop_domain::records::{Task, Workplace};
use mainloop_domain::{RunnerId, TaskId};
pub use mainloop_store::LeaseRow;
use std::path::{Path, PathBuf};

/// What a runner holding a task's lease may fetch from and push to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoAccess {
    /// The task's own repository on this server.
    pub repo_path: PathBuf,
    /// The task branch: the one ref a push may update.
    pub branch: String,
    /// The branch the work is based on, fetched but never pushed.
    pub base_branch: Option<String>,
    /// Where the task's uncommitted work travels between the server's worktree and the
    /// runner's copy ([`snapshot_ref`]): fetched, and the other ref a push may update.
    pub snapshot_ref: String,
}

/// The ref a task's snapshot of uncommitted work lives under in its repository.
#[must_use]
pub fn snapshot_ref(task: TaskId) -> String {
    format!("refs/mainloop/snapshots/{task}")
}

/// The repository a runner may reach for `task`, when the task is one git over HTTP
/// can serve: with a branch, and either worked on here in a repository named by its
/// local path, or on a forge with its worktree made (a worktree of the server's clone,
/// whose refs and objects git serves as the clone's).
#[must_use]
pub fn repo_access(task: &Task) -> Option<RepoAccess> {
    let branch = task.branch.clone().filter(|b| !b.is_empty())?;
    // Only an absolute path is a local repository or worktree: URLs (`https://…`,
    // `file://…`) and scp-like `host:path` never are, and relative paths are refused
    // at creation.
    let path = match task.workplace {
        Workplace::Local => Path::new(&task.repo),
        Workplace::Forge => Path::new(task.worktree.as_deref()?),
    };
    if !path.is_absolute() {
        return None;
    }
    Some(RepoAccess {
        repo_path: path.to_path_buf(),
        branch,
        base_branch: task.base_branch.clone().filter(|b| !b.is_empty()),
        snapshot_ref: snapshot_ref(task.id),
    })
}

impl Engine {
    /// Places the task's run on `runner`, taking it from any runner that held it, and
    /// returns the lease's epoch. The runner must be the task owner's and not revoked.
    ///
    /// # Errors
    /// An unknown task, or a runner that is unknown, revoked or another user's
    /// ([`EngineError::NotFound`]); storage failures.
    pub async fn lease_run(&self, task: TaskId, runner: RunnerId) -> Result<i64> {
        let (user, _) = self
            .store()
            .task_any_user(task)
            .await?
            .ok_or(EngineError::NotFound("task"))?;
        self.store()
            .runner(user, runner)
            .await?
            .filter(|r| r.revoked_at.is_none())
            .ok_or(EngineError::NotFound("runner"))?;
        Ok(self.store().lease_run(task, runner, now()).await?)
    }

    /// Ends the task's lease if `epoch` is still current; false for a stale one.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn release_run(&self, task: TaskId, epoch: i64) -> Result<bool> {
        Ok(self.store().release_run(task, epoch).await?)
    }

    /// The task's current lease, if its run is placed on a runner.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn run_lease(&self, task: TaskId) -> Result<Option<LeaseRow>> {
        Ok(self.store().run_lease(task).await?)
    }

    /// The leases `runner` holds now.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn runner_leases(&self, runner: RunnerId) -> Result<Vec<LeaseRow>> {
        Ok(self.store().leases_of_runner(runner).await?)
    }

    /// What `runner` may reach of `task` over git: only while it holds the task's lease,
    /// and only for a task [`repo_access`] can serve.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for anything else, alike whether the task exists or
    /// not, so a runner learns nothing of tasks it does not hold; storage failures.
    pub async fn runner_repo_access(&self, runner: RunnerId, task: TaskId) -> Result<RepoAccess> {
        let not_found = EngineError::NotFound("task");
        let held = self
            .store()
            .run_lease(task)
            .await?
            .is_some_and(|l| l.runner_id == runner);
        if !held {
            return Err(not_found);
        }
        let Some((user, task)) = self.store().task_any_user(task).await? else {
            return Err(not_found);
        };
        // A lease is only ever given to the owner's runner; checked again here so that
        // a row written any other way cannot open another user's repository.
        let owned = self
            .store()
            .runner(user, runner)
            .await?
            .is_some_and(|r| r.revoked_at.is_none());
        if !owned {
            return Err(not_found);
        }
        repo_access(&task).ok_or(not_found)
    }
}

//! Where a task's work goes: the parts of the lifecycle that differ between the local
//! repository and a code host. The name is chosen against "forge", which the code keeps
//! for a code host itself (the `mainloop_forge::Forge` port and its settings): a task's
//! work is *delivered* either to the local repository ([`crate::local::Local`]: the
//! worktree's branch is the work, the project's check command checks it, a git merge
//! lands it) or to a repository on a forge ([`crate::forge::Hosted`]: a pushed branch
//! and draft pull request, the forge's CI, merging the pull request). `steps.rs` picks
//! one per task ([`crate::steps::Destination`]); neither implementation knows the other.

use crate::Runtime;
use mainloop_domain::UserId;
use mainloop_domain::records::Task;
use mainloop_engine::{JobContext, JobError};
use mainloop_git::Worktree;

/// Publishing, checking and merging a task's work.
pub(crate) trait Delivery {
    /// Where the task's repository is cloned from (a path or URL for `mainloop-git`).
    fn source(&self, task: &Task) -> String;
    /// After a commit: make the work visible for review.
    async fn publish(
        &self,
        rt: &Runtime,
        ctx: &JobContext,
        task: &Task,
        wt: &Worktree,
    ) -> Result<(), JobError>;
    /// Checks this round's work; the outcome arrives as `ChecksPassed`/`ChecksFailed`.
    async fn check(
        &self,
        rt: &Runtime,
        ctx: &JobContext,
        user: UserId,
        task: &Task,
    ) -> Result<(), JobError>;
    /// Merges the approved work; the outcome arrives as `Merged` (or a conflict).
    async fn merge(
        &self,
        rt: &Runtime,
        ctx: &JobContext,
        user: UserId,
        task: &Task,
    ) -> Result<(), JobError>;
}

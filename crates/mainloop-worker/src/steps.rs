//! The short task steps: stop, commit, checks, merge, and the diff. Each is idempotent:
//! it first checks that the task is still in the state the step belongs to, so a
//! replayed job after a crash does nothing twice. Where the work goes (the local
//! repository or a forge) is chosen here, per task, as a [`Destination`].

use crate::Runtime;
use crate::delivery::Delivery;
use crate::forge::Hosted;
use crate::local::Local;
use mainloop_domain::UserId;
use mainloop_domain::records::{Task, TaskDiff};
use mainloop_domain::task::TaskState;
use mainloop_engine::{CommitWork, JobContext, JobError, Merge, RunChecks, StopAgent};
use mainloop_git::Worktree;

pub(crate) use crate::task::{apply, fail, load, retry, status};

/// `task.stop_agent`: ends the task's live or parked agent.
pub(crate) async fn stop(rt: &Runtime, _ctx: &JobContext, job: StopAgent) -> Result<(), JobError> {
    let p = job.step;
    if let Some(token) = rt
        .inner
        .running
        .lock()
        .ok()
        .and_then(|r| r.get(&p.task_id).cloned())
    {
        token.cancel();
    }
    if let Some(mut parked) = rt.take_parked(p.task_id) {
        parked.session.kill().await;
    }
    Ok(())
}

/// The task's worktree (see [`crate::task::worktree`]), cloned from where its work goes.
pub(crate) async fn worktree(
    rt: &Runtime,
    task: &Task,
) -> Result<Worktree, mainloop_git::GitError> {
    let source = Destination::of(rt, task).source(task);
    crate::task::worktree(rt, task, &source).await
}

/// `task.commit`: commits whatever the agent left uncommitted.
pub(crate) async fn commit(
    rt: &Runtime,
    ctx: &JobContext,
    job: CommitWork,
) -> Result<(), JobError> {
    let p = job.step;
    let Some((user, task)) = load(rt, p.task_id).await? else {
        return Ok(());
    };
    if task.state != TaskState::Checking {
        return Ok(());
    }
    let to = Destination::of(rt, &task);
    let wt = match crate::task::worktree(rt, &task, &to.source(&task)).await {
        Ok(w) => w,
        Err(e) => return fail(rt, task.id, format!("workspace unavailable: {e}")).await,
    };
    let title = mainloop_domain::inbox::first_line(&task.description, 72);
    match rt
        .inner
        .git
        .commit_all(&wt, &format!("mainloop: {title}"))
        .await
    {
        Ok(Some(sha)) => status(rt, user, task.id, &format!("committed {sha}")).await,
        Ok(None) => {}
        Err(e) => return fail(rt, task.id, format!("could not commit the work: {e}")).await,
    }
    to.publish(rt, ctx, &task, &wt).await
}

/// `task.checks`: checks the work and reports the outcome.
pub(crate) async fn checks(rt: &Runtime, ctx: &JobContext, job: RunChecks) -> Result<(), JobError> {
    let RunChecks { step, round } = job;
    let Some((user, task)) = load(rt, step.task_id).await? else {
        return Ok(());
    };
    if task.state != TaskState::Checking || task.core.check_round != round {
        return Ok(());
    }
    Destination::of(rt, &task).check(rt, ctx, user, &task).await
}

/// `task.merge`: merges the approved work into its base.
pub(crate) async fn merge(rt: &Runtime, ctx: &JobContext, job: Merge) -> Result<(), JobError> {
    let p = job.step;
    let Some((user, task)) = load(rt, p.task_id).await? else {
        return Ok(());
    };
    if task.state != TaskState::Review || !task.core.merge_requested {
        return Ok(());
    }
    Destination::of(rt, &task).merge(rt, ctx, user, &task).await
}

/// The task's diff against its base.
pub(crate) async fn diff(rt: &Runtime, task: &Task) -> Result<TaskDiff, mainloop_git::GitError> {
    let wt = worktree(rt, task).await?;
    crate::task::diff(rt, &wt).await
}

/// Where a task's work goes, as the task says (its `workplace`, decided when it was
/// created).
pub(crate) enum Destination {
    Local(Local),
    Hosted(Hosted),
}

impl Destination {
    pub(crate) fn of(rt: &Runtime, task: &Task) -> Self {
        match Hosted::for_task(rt, task) {
            Some(hosted) => Self::Hosted(hosted),
            None => Self::Local(Local),
        }
    }
}

impl Delivery for Destination {
    fn source(&self, task: &Task) -> String {
        match self {
            Self::Local(d) => d.source(task),
            Self::Hosted(d) => d.source(task),
        }
    }

    async fn publish(
        &self,
        rt: &Runtime,
        ctx: &JobContext,
        task: &Task,
        wt: &Worktree,
    ) -> Result<(), JobError> {
        match self {
            Self::Local(d) => d.publish(rt, ctx, task, wt).await,
            Self::Hosted(d) => d.publish(rt, ctx, task, wt).await,
        }
    }

    async fn check(
        &self,
        rt: &Runtime,
        ctx: &JobContext,
        user: UserId,
        task: &Task,
    ) -> Result<(), JobError> {
        match self {
            Self::Local(d) => d.check(rt, ctx, user, task).await,
            Self::Hosted(d) => d.check(rt, ctx, user, task).await,
        }
    }

    async fn merge(
        &self,
        rt: &Runtime,
        ctx: &JobContext,
        user: UserId,
        task: &Task,
    ) -> Result<(), JobError> {
        match self {
            Self::Local(d) => d.merge(rt, ctx, user, task).await,
            Self::Hosted(d) => d.merge(rt, ctx, user, task).await,
        }
    }
}

//! The short task steps: workspace setup, stop, commit, checks, merge, diff. Each is
//! idempotent: it first checks that the task is still in the state the step belongs to,
//! so a replayed job after a crash does nothing twice.

use crate::Runtime;
use mainloop_domain::records::{FileStat, Task, TaskDiff};
use mainloop_domain::task::{Effect, TaskEvent, TaskState};
use mainloop_domain::{TaskId, UserId};
use mainloop_engine::{EngineError, JobContext, JobError};
use mainloop_git::{MergeOutcome, Repo, Worktree};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub(crate) struct EffectPayload {
    pub task_id: TaskId,
    pub effect: Effect,
}

pub(crate) fn payload(ctx: &JobContext) -> Result<EffectPayload, JobError> {
    serde_json::from_value(ctx.job.payload.clone())
        .map_err(|e| JobError::fatal(format!("bad task job payload: {e}")))
}

pub(crate) fn retry(e: impl std::fmt::Display) -> JobError {
    JobError::retry(e.to_string())
}

/// Loads the job's task with its owner; `None` when it no longer exists.
pub(crate) async fn load(rt: &Runtime, id: TaskId) -> Result<Option<(UserId, Task)>, JobError> {
    rt.inner
        .engine
        .store()
        .task_any_user(id)
        .await
        .map_err(retry)
}

/// Applies a lifecycle event; a task that moved on meanwhile (cancelled, say) is not an
/// error for the step that noticed late.
pub(crate) async fn apply(
    rt: &Runtime,
    id: TaskId,
    event: TaskEvent,
) -> Result<Option<Task>, JobError> {
    match rt.inner.engine.apply_task_event(None, id, event).await {
        Ok(t) => Ok(Some(t)),
        Err(EngineError::WrongState(e)) => {
            tracing::info!(task = %id, error = %e, "task moved on; step result dropped");
            Ok(None)
        }
        Err(e @ (EngineError::Unavailable(_) | EngineError::Conflict(_))) => Err(retry(e)),
        Err(e) => Err(JobError::fatal(e.to_string())),
    }
}

/// Fails the task with `reason` (visible in the inbox).
pub(crate) async fn fail(rt: &Runtime, id: TaskId, reason: String) -> Result<(), JobError> {
    apply(rt, id, TaskEvent::AgentFailed(reason))
        .await
        .map(|_| ())
}

/// The task's repository and worktree, created on first use and recorded on the task.
pub(crate) async fn workspace(
    rt: &Runtime,
    task: &Task,
) -> Result<(Repo, Worktree), mainloop_git::GitError> {
    let git = &rt.inner.git;
    let repo = git
        .resolve_repo(&crate::forge::repo_source(rt, task).await)
        .await?;
    let base = match &task.base_branch {
        Some(b) => b.clone(),
        None => git.base_branch(&repo).await?,
    };
    let wt = git
        .ensure_worktree(&repo, &task.id.short(), &task.description, &base)
        .await?;
    if task.worktree.is_none() {
        let path = wt.path.display().to_string();
        if let Err(e) = rt
            .inner
            .engine
            .set_task_workspace(task.id, &wt.branch, &path, &base)
            .await
        {
            tracing::warn!(error = %e, "could not record the task's workspace");
        }
    }
    Ok((repo, wt))
}

/// The task's worktree: the recorded one when it is still on disk (no repository
/// lookup, which for a cloned repository would fetch), else set up as by [`workspace`].
pub(crate) async fn worktree(
    rt: &Runtime,
    task: &Task,
) -> Result<Worktree, mainloop_git::GitError> {
    if let (Some(path), Some(branch), Some(base)) =
        (&task.worktree, &task.branch, &task.base_branch)
        && std::path::Path::new(path).is_dir()
    {
        return Ok(Worktree {
            path: path.into(),
            branch: branch.clone(),
            base: base.clone(),
        });
    }
    workspace(rt, task).await.map(|(_, wt)| wt)
}

pub(crate) async fn status(rt: &Runtime, user: UserId, task: TaskId, text: &str) {
    if let Err(e) = rt
        .inner
        .engine
        .record_task_output(user, task, "status", &json!({"text": text}))
        .await
    {
        tracing::warn!(error = %e, "could not record task status");
    }
}

/// `task.stop_agent`: ends the task's live or parked agent.
pub(crate) async fn stop(rt: &Runtime, ctx: &JobContext) -> Result<(), JobError> {
    let p = payload(ctx)?;
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

/// `task.commit`: commits whatever the agent left uncommitted.
pub(crate) async fn commit(rt: &Runtime, ctx: &JobContext) -> Result<(), JobError> {
    let p = payload(ctx)?;
    let Some((user, task)) = load(rt, p.task_id).await? else {
        return Ok(());
    };
    if task.state != TaskState::Checking {
        return Ok(());
    }
    let wt = match worktree(rt, &task).await {
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
    Forges::for_task(rt, task.id)
        .await
        .publish(rt, ctx, &task, &wt)
        .await
}

/// The check command: the project's setting, else `.mainloop.toml` as the base branch
/// has it (not the worktree's copy, which the agent could rewrite).
async fn check_command(
    rt: &Runtime,
    user: UserId,
    task: &Task,
    wt: &Worktree,
) -> Result<Option<String>, String> {
    let project = rt
        .inner
        .engine
        .store()
        .project(user, task.project_id)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(cmd) = project
        .as_ref()
        .and_then(|p| p.settings.get("check"))
        .and_then(serde_json::Value::as_str)
        .filter(|c| !c.trim().is_empty())
    {
        return Ok(Some(cmd.to_owned()));
    }
    rt.inner
        .git
        .check_command_at_base(wt)
        .await
        .map_err(|e| e.to_string())
}

/// `task.checks`: runs the project's checks and reports the outcome.
pub(crate) async fn checks(rt: &Runtime, ctx: &JobContext) -> Result<(), JobError> {
    let p = payload(ctx)?;
    let Some((user, task)) = load(rt, p.task_id).await? else {
        return Ok(());
    };
    let round = match p.effect {
        Effect::RunChecks { round } => round,
        _ => return Err(JobError::fatal("task.checks without a round")),
    };
    if task.state != TaskState::Checking || task.core.check_round != round {
        return Ok(());
    }
    Forges::for_task(rt, task.id)
        .await
        .check(rt, ctx, user, &task)
        .await
}

/// The project's check command, run in the task's worktree.
async fn local_checks(rt: &Runtime, user: UserId, task: Task) -> Result<(), JobError> {
    let wt = match worktree(rt, &task).await {
        Ok(w) => w,
        Err(e) => return fail(rt, task.id, format!("workspace unavailable: {e}")).await,
    };
    let command = match check_command(rt, user, &task, &wt).await {
        Ok(c) => c,
        Err(e) => return fail(rt, task.id, format!("cannot read the check command: {e}")).await,
    };
    let Some(command) = command else {
        status(
            rt,
            user,
            task.id,
            "no check command configured; skipping checks",
        )
        .await;
        record_diffstat(rt, &task).await;
        return apply(rt, task.id, TaskEvent::ChecksPassed)
            .await
            .map(|_| ());
    };
    // The checks run the agent's code: the same confinement as the agent.
    let confined = match rt.confine(task.id, &wt).await {
        Ok(c) => c,
        Err(e) => return fail(rt, task.id, e).await,
    };
    status(rt, user, task.id, &format!("running checks: {command}")).await;
    let cfg = &rt.inner.config;
    let outcome = mainloop_git::run_check(
        &wt.path,
        &command,
        &confined.env,
        &confined.wrapper,
        cfg.check_timeout,
        cfg.check_output_bytes,
    )
    .await;
    let _ = rt
        .inner
        .engine
        .record_task_output(
            user,
            task.id,
            "checks",
            &json!({
                "command": command,
                "passed": outcome.passed,
                "exit_code": outcome.exit_code,
                "timed_out": outcome.timed_out,
                "output": outcome.output_tail,
                "duration_ms": u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
            }),
        )
        .await;
    if outcome.passed {
        record_diffstat(rt, &task).await;
    }
    let event = if outcome.passed {
        TaskEvent::ChecksPassed
    } else {
        let why = if outcome.timed_out {
            format!("(timed out after {} s)\n", cfg.check_timeout.as_secs())
        } else {
            String::new()
        };
        TaskEvent::ChecksFailed(format!("$ {command}\n{why}{}", outcome.output_tail))
    };
    apply(rt, task.id, event).await.map(|_| ())
}

/// Stores the work's diffstat for the review inbox item (best effort: review works
/// without it).
pub(crate) async fn record_diffstat(rt: &Runtime, task: &Task) {
    match diff(rt, task).await {
        Ok(d) => {
            let mut text = format!(
                "{} file{} changed, +{} −{}",
                d.files.len(),
                if d.files.len() == 1 { "" } else { "s" },
                d.added,
                d.removed
            );
            for f in d.files.iter().take(30) {
                text.push_str(&format!("\n  {} (+{} −{})", f.path, f.added, f.removed));
            }
            if d.files.len() > 30 {
                text.push_str(&format!("\n  … and {} more", d.files.len() - 30));
            }
            if let Err(e) = rt.inner.engine.set_task_diffstat(task.id, &text).await {
                tracing::warn!(error = %e, "could not record the diffstat");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not compute the diffstat"),
    }
}

/// `task.merge`: merges the approved branch into the base branch.
pub(crate) async fn merge(rt: &Runtime, ctx: &JobContext) -> Result<(), JobError> {
    let p = payload(ctx)?;
    let Some((user, task)) = load(rt, p.task_id).await? else {
        return Ok(());
    };
    if task.state != TaskState::Review || !task.core.merge_requested {
        return Ok(());
    }
    Forges::for_task(rt, task.id)
        .await
        .merge(rt, ctx, user, &task)
        .await
}

/// Merges the task branch into the local base branch.
async fn local_merge(rt: &Runtime, user: UserId, task: Task) -> Result<(), JobError> {
    let (repo, wt) = match workspace(rt, &task).await {
        Ok(w) => w,
        Err(e) => return fail(rt, task.id, format!("workspace unavailable: {e}")).await,
    };
    let title = mainloop_domain::inbox::first_line(&task.description, 72);
    match rt.inner.git.merge(&repo, &wt, &title).await {
        Ok(MergeOutcome::Merged { sha }) => {
            status(
                rt,
                user,
                task.id,
                &format!("merged into {} as {sha}", wt.base),
            )
            .await;
            merged(rt, task.id, &repo, &wt).await
        }
        Ok(MergeOutcome::AlreadyMerged) => merged(rt, task.id, &repo, &wt).await,
        Ok(MergeOutcome::Conflict { files }) => {
            if let Err(e) = rt.inner.git.merge_base_into_branch(&wt).await {
                return fail(
                    rt,
                    task.id,
                    format!("merge conflicted and could not be prepared for resolution: {e}"),
                )
                .await;
            }
            apply(rt, task.id, TaskEvent::MergeConflict(files.join(", ")))
                .await
                .map(|_| ())
        }
        Err(e) => fail(rt, task.id, format!("merge failed: {e}")).await,
    }
}

/// Marks the task merged, then removes its worktree (the branch stays): merged work
/// needs no checkout, and a long-running server must not fill the disk with them.
async fn merged(rt: &Runtime, id: TaskId, repo: &Repo, wt: &Worktree) -> Result<(), JobError> {
    apply(rt, id, TaskEvent::Merged).await?;
    if let Err(e) = rt.inner.git.remove_worktree(repo, wt).await {
        tracing::warn!(error = %e, "could not remove a merged task's worktree");
    }
    rt.forget_home(id);
    Ok(())
}

/// The task's diff against its base.
pub(crate) async fn diff(rt: &Runtime, task: &Task) -> Result<TaskDiff, mainloop_git::GitError> {
    let wt = worktree(rt, task).await?;
    let d = rt.inner.git.diff(&wt).await?;
    Ok(TaskDiff {
        base: wt.base.clone(),
        branch: wt.branch.clone(),
        files: d
            .files
            .into_iter()
            .map(|f| FileStat {
                path: f.path,
                added: f.added,
                removed: f.removed,
            })
            .collect(),
        added: d.added,
        removed: d.removed,
        text: d.text,
    })
}

/// Where a task's work is published, checked and merged: the parts of the lifecycle that
/// differ between the local repository and a code host.
pub(crate) trait WorkForge {
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

/// The local repository: nothing to publish, the project's check command, a git merge
/// into the base branch.
pub(crate) struct LocalForge;

impl WorkForge for LocalForge {
    async fn publish(
        &self,
        _rt: &Runtime,
        _ctx: &JobContext,
        _task: &Task,
        _wt: &Worktree,
    ) -> Result<(), JobError> {
        Ok(())
    }

    async fn check(
        &self,
        rt: &Runtime,
        _ctx: &JobContext,
        user: UserId,
        task: &Task,
    ) -> Result<(), JobError> {
        local_checks(rt, user, task.clone()).await
    }

    async fn merge(
        &self,
        rt: &Runtime,
        _ctx: &JobContext,
        user: UserId,
        task: &Task,
    ) -> Result<(), JobError> {
        local_merge(rt, user, task.clone()).await
    }
}

/// The task's forge, chosen by whether it is mirrored to a code host.
pub(crate) enum Forges {
    Local(LocalForge),
    Remote(crate::forge::RemoteForge),
}

impl Forges {
    pub(crate) async fn for_task(rt: &Runtime, id: TaskId) -> Self {
        if crate::forge::is_forge_task(rt, id).await {
            Self::Remote(crate::forge::RemoteForge)
        } else {
            Self::Local(LocalForge)
        }
    }
}

impl WorkForge for Forges {
    async fn publish(
        &self,
        rt: &Runtime,
        ctx: &JobContext,
        task: &Task,
        wt: &Worktree,
    ) -> Result<(), JobError> {
        match self {
            Self::Local(f) => f.publish(rt, ctx, task, wt).await,
            Self::Remote(f) => f.publish(rt, ctx, task, wt).await,
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
            Self::Local(f) => f.check(rt, ctx, user, task).await,
            Self::Remote(f) => f.check(rt, ctx, user, task).await,
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
            Self::Local(f) => f.merge(rt, ctx, user, task).await,
            Self::Remote(f) => f.merge(rt, ctx, user, task).await,
        }
    }
}

//! What every task step needs, whichever path its work takes:
//! loading the task, applying lifecycle events to it, failing it, narrating in its
//! transcript, its repository and worktree, and whether its work changed anything. The local path (`local.rs`), the forge
//! path (`forge/`) and the steps that choose between them (`steps.rs`) all use this
//! module; it uses none of them.

use crate::Runtime;
use mainloop_domain::failure;
use mainloop_domain::records::{FileStat, Task, TaskDiff};
use mainloop_domain::task::{NO_CHANGES, TaskEvent};
use mainloop_domain::transcript::TranscriptEntry;
use mainloop_domain::{TaskId, UserId};
use mainloop_engine::{EngineError, JobError};
use mainloop_git::{Repo, Worktree};

pub(crate) fn retry(e: impl std::fmt::Display) -> JobError {
    JobError::retry(e.to_string())
}

/// Loads the job's task with its owner; `None` when it no longer exists.
pub(crate) async fn load(rt: &Runtime, id: TaskId) -> Result<Option<(UserId, Task)>, JobError> {
    rt.inner.engine.task_any_user(id).await.map_err(retry)
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

/// Fails the task with `reason` (visible in the inbox). A known failure (not logged in,
/// no agent command, no repository, usage limit) fails with the instruction that fixes
/// it instead, its raw text kept in the task's transcript.
pub(crate) async fn fail(rt: &Runtime, id: TaskId, reason: String) -> Result<(), JobError> {
    let reason = match failure::instruction(&reason, &user_name(rt)) {
        Some(instruction) => {
            if let Some((user, _)) = load(rt, id).await? {
                status(rt, user, id, &format!("failed: {reason}")).await;
            }
            instruction
        }
        None => reason,
    };
    apply(rt, id, TaskEvent::AgentFailed(reason))
        .await
        .map(|_| ())
}

/// The account agents run as, as the environment they are given names it.
fn user_name(rt: &Runtime) -> String {
    let env = &rt.inner.config.agent_env;
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|name| env.iter().find(|(k, v)| k == name && !v.is_empty()))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

pub(crate) async fn status(rt: &Runtime, user: UserId, task: TaskId, text: &str) {
    if let Err(e) = rt
        .inner
        .engine
        .record_transcript(user, task, &[TranscriptEntry::status(text)])
        .await
    {
        tracing::warn!(error = %e, "could not record task status");
    }
}

/// The task's repository (cloned from `source`) and worktree, created on first use and
/// recorded on the task.
pub(crate) async fn workspace(
    rt: &Runtime,
    task: &Task,
    source: &str,
) -> Result<(Repo, Worktree), mainloop_git::GitError> {
    let git = &rt.inner.git;
    let repo = git.resolve_repo(source).await?;
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
    source: &str,
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
    workspace(rt, task, source).await.map(|(_, wt)| wt)
}

/// The work's diff against its base.
pub(crate) async fn diff(rt: &Runtime, wt: &Worktree) -> Result<TaskDiff, mainloop_git::GitError> {
    let d = rt.inner.git.diff(wt).await?;
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

/// Whether the committed work differs from its base; when it does not, the task fails
/// with [`NO_CHANGES`] (`false`): an agent that claims it wrote files but wrote none
/// must not reach review as mergeable, and a failed task can be retried with feedback.
/// A diff that cannot be read does not block (review shows it).
pub(crate) async fn require_changes(
    rt: &Runtime,
    task: &Task,
    wt: &Worktree,
) -> Result<bool, JobError> {
    match diff(rt, wt).await {
        Ok(d) if d.files.is_empty() => fail(rt, task.id, NO_CHANGES.to_owned())
            .await
            .map(|()| false),
        Ok(_) => Ok(true),
        Err(e) => {
            tracing::warn!(task = %task.id, error = %e, "could not tell whether the work changed anything");
            Ok(true)
        }
    }
}

/// Stores the work's diffstat for the review inbox item and the diff itself (best
/// effort: review works without them).
pub(crate) async fn record_diffstat(rt: &Runtime, task: &Task, wt: &Worktree) {
    match diff(rt, wt).await {
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
            // Kept so the work stays viewable once a merge removes the worktree.
            if let Err(e) = rt.inner.engine.set_task_final_diff(task.id, &d).await {
                tracing::warn!(error = %e, "could not keep the reviewed diff");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not compute the diffstat"),
    }
}

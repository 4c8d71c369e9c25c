//! Work delivered to the local repository: nothing to publish (the worktree's branch is
//! the work) though work that changes nothing fails rather than reach review, the
//! project's check command run in the task's confinement, and a git
//! merge into the base branch, a conflict sending the agent back to resolve it.

use tokio_util::sync::CancellationToken;

use crate::Runtime;
use crate::confine::with_vars;
use crate::delivery::Delivery;
use crate::task::{apply, fail, record_diffstat, require_changes, status, workspace, worktree};
use mainloop_domain::UserId;
use mainloop_domain::records::Task;
use mainloop_domain::task::TaskEvent;
use mainloop_domain::transcript::{ChecksEntry, TranscriptEntry};
use mainloop_engine::{EngineError, JobContext, JobError};
use mainloop_git::{CheckOutcome, MergeOutcome, Repo, Worktree};

/// The local repository as where the work goes.
pub(crate) struct Local;

impl Delivery for Local {
    fn source(&self, task: &Task) -> String {
        task.repo.clone()
    }

    /// Nothing to publish, but work that changes nothing is not offered for review.
    async fn publish(
        &self,
        rt: &Runtime,
        _ctx: &JobContext,
        task: &Task,
        wt: &Worktree,
    ) -> Result<(), JobError> {
        require_changes(rt, task, wt).await.map(|_| ())
    }

    async fn check(
        &self,
        rt: &Runtime,
        _ctx: &JobContext,
        user: UserId,
        task: &Task,
    ) -> Result<(), JobError> {
        checks(rt, user, task).await
    }

    async fn merge(
        &self,
        rt: &Runtime,
        _ctx: &JobContext,
        user: UserId,
        task: &Task,
    ) -> Result<(), JobError> {
        merge(rt, user, task).await
    }
}

/// The check command: the project's setting, else `.mainloop.toml` as the base branch
/// has it (not the worktree's copy, which the agent could rewrite).
async fn check_command(
    rt: &Runtime,
    user: UserId,
    task: &Task,
    wt: &Worktree,
) -> Result<Option<String>, String> {
    let project = match rt.inner.engine.project(user, task.project_id).await {
        Ok(p) => Some(p),
        Err(EngineError::NotFound(_)) => None,
        Err(e) => return Err(e.to_string()),
    };
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

/// The project's check command, run in the task's worktree.
async fn checks(rt: &Runtime, user: UserId, task: &Task) -> Result<(), JobError> {
    let wt = match worktree(rt, task, &task.repo).await {
        Ok(w) => w,
        Err(e) => return fail(rt, task.id, format!("workspace unavailable: {e}")).await,
    };
    let command = match check_command(rt, user, task, &wt).await {
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
        record_diffstat(rt, task, &wt).await;
        return apply(rt, task.id, TaskEvent::ChecksPassed)
            .await
            .map(|_| ());
    };
    let cfg = &rt.inner.config;
    // On the task's runner when its agent runs on runners: the toolchain the checks
    // need is the one the agent built with.
    let outcome = match rt.step_site(user, task, &wt).await? {
        Some(on) => {
            // The copy there may be new (a launched runner's always is): setup runs
            // there first unless it passed in it.
            let vars = match rt
                .prepare_environment_on(user, task, &wt, &on, &CancellationToken::new())
                .await
            {
                Ok(Some(vars)) => vars,
                outcome => {
                    rt.end_step_site(task, &on).await;
                    // `None`: the task failed, with the reason.
                    return outcome.map(|_| ());
                }
            };
            let env = with_vars(cfg.agent_env.clone(), vars);
            status(
                rt,
                user,
                task.id,
                &format!("running checks on its runner: {command}"),
            )
            .await;
            let outcome = rt
                .run_on_runner(user, task, &on, &command, env, cfg.check_timeout)
                .await;
            rt.end_step_site(task, &on).await;
            outcome?
        }
        None => {
            // The checks run the agent's code: the same confinement as the agent.
            let confined = match rt.confine(task.id, &wt).await {
                Ok(c) => c,
                Err(e) => return fail(rt, task.id, e).await,
            };
            status(rt, user, task.id, &format!("running checks: {command}")).await;
            mainloop_git::run_check(
                &wt.path,
                &command,
                &confined.env,
                &confined.wrapper,
                cfg.check_timeout,
                cfg.check_output_bytes,
            )
            .await
        }
    };
    let _ = rt
        .inner
        .engine
        .record_transcript(user, task.id, &[checks_entry(&command, &outcome)])
        .await;
    if outcome.passed {
        record_diffstat(rt, task, &wt).await;
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

/// The transcript's record of one run of the check command.
fn checks_entry(command: &str, outcome: &CheckOutcome) -> TranscriptEntry {
    TranscriptEntry::Checks(ChecksEntry {
        command: command.to_owned(),
        passed: Some(outcome.passed),
        exit_code: outcome.exit_code,
        timed_out: outcome.timed_out,
        output: outcome.output_tail.clone(),
        duration_ms: Some(u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX)),
        no_ci: false,
    })
}

/// Merges the task branch into the local base branch.
async fn merge(rt: &Runtime, user: UserId, task: &Task) -> Result<(), JobError> {
    let (repo, wt) = match workspace(rt, task, &task.repo).await {
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
            merged(rt, task, &repo, &wt).await
        }
        Ok(MergeOutcome::AlreadyMerged) => merged(rt, task, &repo, &wt).await,
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
async fn merged(rt: &Runtime, task: &Task, repo: &Repo, wt: &Worktree) -> Result<(), JobError> {
    let id = task.id;
    apply(rt, id, TaskEvent::Merged).await?;
    // Its ports and database serve nothing once the work is merged.
    if let Err(e) = rt.release_environment(task).await {
        tracing::warn!(task = %id, error = %e, "could not release the task's environment");
    }
    if let Err(e) = rt.inner.git.remove_worktree(repo, wt).await {
        tracing::warn!(error = %e, "could not remove a merged task's worktree");
    }
    rt.forget_home(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    /// The entry is stored as the untyped `checks` payload was: a failed exit code and a
    /// timeout are kept, an absent code and `timed_out: false` left out.
    #[test]
    fn a_check_run_is_recorded_as_the_untyped_payload_was_stored() {
        let outcome = |exit_code, timed_out| CheckOutcome {
            passed: exit_code == Some(0),
            exit_code,
            timed_out,
            output_tail: "ok".into(),
            duration: Duration::from_millis(12),
        };
        for (outcome, stored) in [
            (
                outcome(Some(0), false),
                json!({"command": "make test", "passed": true, "exit_code": 0,
                    "output": "ok", "duration_ms": 12}),
            ),
            (
                outcome(None, true),
                json!({"command": "make test", "passed": false, "timed_out": true,
                    "output": "ok", "duration_ms": 12}),
            ),
        ] {
            let entry = checks_entry("make test", &outcome);
            // What was written before entries were typed, read as the store read it.
            let before = json!({
                "command": "make test",
                "passed": outcome.passed,
                "exit_code": outcome.exit_code,
                "timed_out": outcome.timed_out,
                "output": outcome.output_tail,
                "duration_ms": 12,
            });
            let untyped = TranscriptEntry::from_stored("checks", before);
            assert_eq!(entry, untyped);
            assert_eq!(
                serde_json::to_string(&entry.payload()).unwrap(),
                serde_json::to_string(&untyped.payload()).unwrap()
            );
            assert_eq!(entry.payload(), stored);
        }
    }
}

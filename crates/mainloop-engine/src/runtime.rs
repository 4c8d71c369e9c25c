//! What the worker runtime needs from the engine: recording agent output, workspace and
//! session facts, usage; and the port through which the API reads a task's diff.

use crate::{Engine, EngineError, PlanRevision, Result, now};
use futures::future::BoxFuture;
use mainloop_domain::event::EventName;
use mainloop_domain::records::TaskDiff;
use mainloop_domain::task::TaskState;
use mainloop_domain::transcript::{TranscriptEntry, TranscriptRecord};
use mainloop_domain::{TaskId, UserId};
use std::sync::Arc;

/// What the projects view shows of a repository on a forge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgeSummary {
    pub url: String,
    pub open_pull_requests: Vec<mainloop_forge::PrSummary>,
    pub recent_commits: Vec<mainloop_forge::CommitSummary>,
    /// Why the lists are empty when the forge could not be read.
    pub error: Option<String>,
}

impl ForgeSummary {
    fn failed(url: String, error: String) -> Self {
        Self {
            url,
            open_pull_requests: Vec::new(),
            recent_commits: Vec::new(),
            error: Some(error),
        }
    }
}

/// Reads task workspaces and wakes forge watches (implemented by the worker runtime; set
/// by the binary).
pub trait Workspaces: Send + Sync + std::fmt::Debug + 'static {
    /// The task's committed work against its base.
    fn diff(
        &self,
        task: mainloop_domain::records::Task,
    ) -> BoxFuture<'static, Result<TaskDiff, String>>;

    /// Polls the forge for this task now (a webhook said something changed).
    fn wake_forge(&self, _task: TaskId) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// Refuses a repository no task may use (a transport trick, a relative path, a
    /// path outside the allowed roots), with the reason, before a task is created.
    /// Repositories on the configured forge never reach this: they are `owner/name`.
    fn check_repo(&self, _repo: &str) -> Result<(), String> {
        Ok(())
    }

    /// What the task workspaces hold on disk (worktrees, private homes, cloned
    /// repositories); zeros where nothing is kept.
    fn disk_usage(&self) -> BoxFuture<'static, crate::DiskUsage> {
        Box::pin(async { crate::DiskUsage::default() })
    }
}

impl Engine {
    /// Installs the workspace reader used by [`Engine::task_diff`].
    pub fn set_workspaces(&self, workspaces: Arc<dyn Workspaces>) {
        if let Ok(mut w) = self.inner.workspaces.write() {
            *w = Some(workspaces);
        }
    }

    /// A verified forge delivery about issue or pull request `numbers` of `repo`
    /// (`owner/name`): every task mirrored there polls the forge at once. Returns how
    /// many tasks were woken.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn forge_webhook(&self, repo: &str, numbers: &[i64]) -> Result<usize> {
        let workspaces = self.inner.workspaces.read().ok().and_then(|w| w.clone());
        let mut woken = 0;
        for n in numbers {
            for task in self.store().tasks_for_forge_number(repo, *n).await? {
                if let Some(w) = &workspaces {
                    w.wake_forge(task).await.map_err(EngineError::Unavailable)?;
                    woken += 1;
                }
            }
        }
        Ok(woken)
    }

    /// The installed workspaces' verdict on a repository name (`Ok` when none is
    /// installed: the worker then refuses it when it resolves it).
    pub(crate) fn check_repo(&self, repo: &str) -> Result<(), String> {
        let workspaces = self.inner.workspaces.read().ok().and_then(|w| w.clone());
        workspaces.map_or(Ok(()), |w| w.check_repo(repo))
    }

    /// Installs the forge the projects view reads (GitHub), with its web host.
    pub fn set_forge(&self, forge: Arc<dyn mainloop_forge::Forge>, web_host: &str) {
        if let Ok(mut f) = self.inner.forge.write() {
            *f = Some((forge, web_host.to_owned()));
        }
    }

    /// A forge project's open pull requests and recent commits on its default branch;
    /// `None` for local projects. A forge that cannot be reached gives a summary with
    /// `error` set rather than an error, so the projects view still lists everything.
    pub async fn forge_summary(&self, repo: &str) -> Option<ForgeSummary> {
        let (forge, host) = self.inner.forge.read().ok().and_then(|f| f.clone())?;
        let r = mainloop_forge::RepoRef::parse(repo, &host).ok()?;
        let work = async {
            let (prs, commits) = futures::join!(
                forge.open_pull_requests(&r, 20),
                forge.recent_commits(&r, "", 10)
            );
            Ok::<_, mainloop_forge::ForgeError>((prs?, commits?))
        };
        let url = format!("https://{host}/{r}");
        Some(
            match tokio::time::timeout(std::time::Duration::from_secs(10), work).await {
                Ok(Ok((open_pull_requests, recent_commits))) => ForgeSummary {
                    url,
                    open_pull_requests,
                    recent_commits,
                    error: None,
                },
                Ok(Err(e)) => ForgeSummary::failed(url, e.to_string()),
                Err(_) => ForgeSummary::failed(url, "the forge did not answer in time".into()),
            },
        )
    }

    /// One of `user`'s tasks' diff.
    ///
    /// # Errors
    /// Not found; `Invalid` when the task has no workspace yet or it cannot be read.
    pub async fn task_diff(&self, user: UserId, id: TaskId) -> Result<TaskDiff> {
        let task = self.task(user, id).await?;
        // After a merge the worktree is gone and the branch is part of its base: the
        // diff reviewed last is the work.
        let worktree_gone = task
            .worktree
            .as_deref()
            .is_some_and(|w| !std::path::Path::new(w).is_dir());
        if (task.state == TaskState::Merged || worktree_gone)
            && let Some(kept) = self.store().task_final_diff(id).await?
        {
            return Ok(kept);
        }
        if task.worktree.is_none() {
            return Err(EngineError::Invalid("the task has no workspace yet".into()));
        }
        let workspaces = self
            .inner
            .workspaces
            .read()
            .ok()
            .and_then(|w| w.clone())
            .ok_or_else(|| EngineError::Invalid("no worker runtime is running".into()))?;
        workspaces.diff(task).await.map_err(EngineError::Invalid)
    }

    /// A page of one of `user`'s tasks' transcript.
    ///
    /// # Errors
    /// Not found; storage failures.
    pub async fn task_transcript(
        &self,
        user: UserId,
        id: TaskId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TranscriptRecord>> {
        self.task(user, id).await?;
        Ok(self
            .store()
            .transcript(id, after.max(0), limit.clamp(1, 1000))
            .await?)
    }

    /// One of `user`'s tasks' plan revisions, oldest first.
    ///
    /// # Errors
    /// Not found; storage failures.
    pub async fn task_plans(&self, user: UserId, id: TaskId) -> Result<Vec<PlanRevision>> {
        self.task(user, id).await?;
        Ok(self.store().plan_revisions(id).await?)
    }

    /// Stores entries in the task's transcript in order, in one transaction (a burst of
    /// output costs one commit), each streamed as a `task.output` event carrying the
    /// stored record; returns the last position (0 for none).
    ///
    /// # Errors
    /// Not found for an unknown task; storage failures.
    pub async fn record_transcript(
        &self,
        user: UserId,
        task: TaskId,
        entries: &[TranscriptEntry],
    ) -> Result<i64> {
        let at = now();
        let mut tx = self.store().begin().await?;
        let mut last = 0;
        for entry in entries {
            last = tx
                .append_transcript(task, entry.kind(), &entry.payload(), at)
                .await?;
            let record = TranscriptRecord {
                task_id: task,
                seq: last,
                entry: entry.clone(),
                created_at: at,
            };
            let payload =
                serde_json::to_value(&record).map_err(|e| EngineError::Internal(e.to_string()))?;
            tx.append_event(user, EventName::TaskOutput, &payload, at)
                .await?;
        }
        tx.commit().await?;
        Ok(last)
    }

    /// Records the task's git workspace.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_task_workspace(
        &self,
        id: TaskId,
        branch: &str,
        worktree: &str,
        base: &str,
    ) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.set_task_workspace(id, branch, worktree, base).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the agent session and which job's input it has received.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_task_session(
        &self,
        id: TaskId,
        session: &str,
        input_key: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.set_task_session(id, session, input_key).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the work's diffstat for the review inbox item.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_task_diffstat(&self, id: TaskId, diffstat: &str) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.set_task_diffstat(id, diffstat).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keeps the diff the task goes to review with (its text capped at
    /// [`FINAL_DIFF_MAX_TEXT`]), replacing an earlier round's.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_task_final_diff(&self, id: TaskId, diff: &TaskDiff) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.put_task_final_diff(id, &capped(diff, FINAL_DIFF_MAX_TEXT), now())
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds a run's cost and tokens to the task.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn add_task_usage(
        &self,
        id: TaskId,
        cost_usd: f64,
        input_tokens: i64,
        output_tokens: i64,
    ) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.add_task_usage(id, cost_usd, input_tokens, output_tokens)
            .await?;
        tx.record_run_usage(id, cost_usd, (input_tokens, output_tokens), now())
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The most diff text kept for a task after review (the file list is kept whole).
pub const FINAL_DIFF_MAX_TEXT: usize = 1024 * 1024;

/// `diff` with its text cut to at most `max` bytes (on a character boundary) and a note
/// saying so.
fn capped(diff: &TaskDiff, max: usize) -> TaskDiff {
    let mut out = diff.clone();
    if out.text.len() > max {
        let mut end = max;
        while !out.text.is_char_boundary(end) {
            end -= 1;
        }
        out.text.truncate(end);
        out.text.push_str(&format!(
            "\n… the diff is cut here: {} of its {} bytes are kept.\n",
            end,
            diff.text.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::capped;
    use mainloop_domain::records::TaskDiff;

    fn diff(text: &str) -> TaskDiff {
        TaskDiff {
            base: "main".into(),
            branch: "b".into(),
            files: Vec::new(),
            added: 0,
            removed: 0,
            text: text.into(),
        }
    }

    #[test]
    fn small_diffs_are_kept_whole_and_large_ones_cut_on_a_character_with_a_note() {
        assert_eq!(capped(&diff("+abc\n"), 5), diff("+abc\n"));
        let cut = capped(&diff("+éé\n"), 4);
        assert!(cut.text.starts_with("+é\n…"), "{}", cut.text);
        assert!(cut.text.contains("3 of its 6 bytes"), "{}", cut.text);
    }
}

//! `forge.watch`: polls what a forge task waits on — answers and plan decisions on the
//! issue, CI on the pushed commit, review feedback and the pull request's fate — and
//! reschedules itself until the task ends. What the replies mean is decided in
//! `replies.rs`; this module fetches them, posts the replies and applies the event,
//! committing what was read (the cursors) with the transition it caused.

use super::error::FlowError;
use super::jobs::{
    clear_outage, enqueue_watch, job_error, lock, note_outage, schedule_watch, wait_for,
};
use super::replies::{self, Reading, read_feedback, read_issue, read_pull, read_thumbs_up};
use super::state::{Ctx, context};
use super::{MARKER, mirror};
use crate::Runtime;
use mainloop_domain::TaskId;
use mainloop_domain::task::{TaskEvent, TaskState};
use mainloop_engine::{EngineError, ForgeWatch, JobContext, JobError};
use mainloop_forge::CiStatus;
use std::time::Duration;

/// Wakes a task's watch at once (a webhook delivery about its issue or pull request).
///
/// # Errors
/// When the store is unavailable.
pub async fn wake(rt: &Runtime, id: TaskId) -> Result<(), JobError> {
    let _guard = lock(rt, id).await;
    let Some(mut c) = context(rt, id).await.map_err(job_error)? else {
        return Ok(());
    };
    if c.task.core.state.is_final() && c.m.issue.closed {
        return Ok(());
    }
    schedule_watch(&mut c).await.map_err(job_error)
}

/// `forge.watch`: polls what the task waits on, then reschedules itself.
pub(crate) async fn watch(rt: &Runtime, _ctx: &JobContext, p: ForgeWatch) -> Result<(), JobError> {
    match watch_once(rt, &p).await {
        Ok(()) => Ok(()),
        // A store hiccup or a transition that lost a race: the chain goes on later rather
        // than spending the dispatcher's few retries and ending the watch.
        Err(e) => {
            tracing::warn!(task = %p.task_id, error = %e, "forge watch step failed; continuing later");
            let interval = rt
                .inner
                .config
                .forge
                .as_ref()
                .map_or(Duration::from_secs(60), |f| f.poll_interval);
            enqueue_watch(rt, p.task_id, p.generation, p.seq + 1, interval).await
        }
    }
}

/// What one poll found.
enum Poll {
    Continue,
    Stop,
    Applied(TaskEvent),
}

async fn watch_once(rt: &Runtime, p: &ForgeWatch) -> Result<(), FlowError> {
    let guard = lock(rt, p.task_id).await;
    let Some(mut c) = context(rt, p.task_id).await? else {
        return Ok(());
    };
    if c.m.watch_gen != p.generation || c.task.state.is_final() {
        return Ok(()); // superseded by a newer chain, or done
    }
    let interval = c.fs.poll_interval;
    let outcome = match mirror::settle_posts(&mut c).await {
        Ok(()) => poll(&mut c).await,
        Err(e) => Err(e),
    };
    let next = match outcome {
        Ok(Poll::Applied(event)) => {
            // The forge answered: the transcript says so before it shows what the reply
            // caused (and the flag is off in the record the transition stores).
            clear_outage(&mut c).await?;
            // What was read (the cursor past the reply) commits with the transition it
            // caused, so a crash neither loses the reply nor acts on it twice. The
            // transition's own forge.sync continues from here.
            let rec = c.record()?;
            match rt
                .inner
                .engine
                .apply_task_event_with_forge(p.task_id, event, &rec)
                .await
            {
                Ok(_) => c.stored_as(rec),
                Err(EngineError::WrongState(e)) => {
                    tracing::info!(task = %p.task_id, error = %e, "task moved on; forge reply dropped");
                    c.save().await?;
                }
                Err(e @ (EngineError::Unavailable(_) | EngineError::Conflict(_))) => {
                    return Err(FlowError::Store(e.to_string()));
                }
                Err(e) => return Err(FlowError::Fatal(e.to_string())),
            }
            None
        }
        Ok(Poll::Continue) => {
            clear_outage(&mut c).await?;
            Some(interval)
        }
        Ok(Poll::Stop) => {
            clear_outage(&mut c).await?;
            None
        }
        // An outage or a rate limit delays the work; it never ends the watch.
        Err(FlowError::Forge(e)) => {
            note_outage(&mut c, &e).await?;
            tracing::warn!(task = %p.task_id, error = %e, "forge poll failed; retrying");
            Some(wait_for(&e, interval))
        }
        Err(e) => return Err(e),
    };
    drop(guard);
    if let Some(after) = next {
        enqueue_watch(rt, p.task_id, p.generation, p.seq + 1, after).await?;
    }
    Ok(())
}

async fn poll(c: &mut Ctx<'_>) -> Result<Poll, FlowError> {
    match c.task.state {
        TaskState::WaitingAnswers | TaskState::WaitingPlanReview => poll_issue(c).await,
        TaskState::Checking => poll_ci(c).await,
        TaskState::Review => poll_review(c).await,
        TaskState::Queued
        | TaskState::Planning
        | TaskState::Implementing
        | TaskState::OnHold
        | TaskState::Failed => {
            poll_issue(c).await?;
            Ok(if c.task.state == TaskState::Failed {
                Poll::Stop
            } else {
                Poll::Continue
            })
        }
        TaskState::Merged | TaskState::Cancelled => Ok(Poll::Stop),
    }
}

/// Posts a reading's replies and notes its decision; the event, if any, is the poll's.
async fn act(c: &mut Ctx<'_>, on: u64, reading: Reading) -> Result<Option<TaskEvent>, FlowError> {
    if let Some(decided) = reading.decided {
        replies::record(&mut c.m, decided);
    }
    for (key, body) in reading.replies {
        c.comment(on, key, &body).await?;
    }
    Ok(reading.event)
}

/// The plan issue's new comments: answers, plan decisions, or replies that came late.
async fn poll_issue(c: &mut Ctx<'_>) -> Result<Poll, FlowError> {
    let Some(issue) = c.issue() else {
        return Ok(Poll::Stop);
    };
    let (comments, cursor) = c
        .f()
        .comments_since(&c.repo, issue, &c.m.issue.issue_cursor)
        .await?;
    let theirs: Vec<_> = comments
        .into_iter()
        .filter(|x| !x.body.contains(MARKER))
        .collect();
    let trusted = c.only_trusted(theirs, |x| x.author.as_str()).await?;
    c.m.issue.issue_cursor = cursor;
    if let Some(event) = act(c, issue, read_issue(&c.task, &trusted)).await? {
        return Ok(Poll::Applied(event));
    }
    if c.task.state == TaskState::WaitingPlanReview
        && let Some(plan_comment) = c.m.plan.plan_comment
    {
        let fans = c.f().thumbs_up(&c.repo, plan_comment).await?;
        let fans = c.only_trusted(fans, String::as_str).await?;
        if let Some(event) = act(c, issue, read_thumbs_up(plan_comment, &fans)).await? {
            return Ok(Poll::Applied(event));
        }
    }
    c.save().await?;
    Ok(Poll::Continue)
}

async fn poll_ci(c: &mut Ctx<'_>) -> Result<Poll, FlowError> {
    let (Some(sha), Some(since)) = (c.m.ci.ci_sha.clone(), c.m.ci.ci_since) else {
        return Ok(Poll::Stop); // the checks step starts the CI watch
    };
    let elapsed = Duration::from_millis(
        u64::try_from(mainloop_engine::now().as_millis() - since).unwrap_or(0),
    );
    match c.f().ci_status(&c.repo, &sha).await? {
        CiStatus::None if elapsed >= c.fs.ci_appear_timeout => {
            c.m.ci.no_ci = true;
            record_checks(
                c,
                CiOutcome::NoCi,
                "no check runs on this commit: this repository has no CI".to_owned(),
            )
            .await;
            review_summary(c, "no CI: nothing checked this work").await;
            Ok(Poll::Applied(TaskEvent::ChecksPassed))
        }
        CiStatus::None | CiStatus::Pending { .. } if elapsed >= c.fs.ci_pending_timeout => {
            Ok(Poll::Applied(TaskEvent::AgentFailed(format!(
                "CI did not finish within {} s",
                c.fs.ci_pending_timeout.as_secs()
            ))))
        }
        CiStatus::None | CiStatus::Pending { .. } => Ok(Poll::Continue),
        CiStatus::Passed { total } => {
            record_checks(c, CiOutcome::Passed, format!("{total} check(s) passed")).await;
            review_summary(c, &format!("green ({total} check(s) passed)")).await;
            Ok(Poll::Applied(TaskEvent::ChecksPassed))
        }
        CiStatus::Failed { total, failures } => {
            let mut report = format!(
                "{} of {total} GitHub check(s) failed on {}:\n",
                failures.len(),
                &sha[..sha.len().min(12)]
            );
            for f in failures.iter().take(5) {
                report.push_str(&format!("\n### {} ({})\n{}\n", f.name, f.conclusion, f.url));
                if let Some(job) = f.job_id {
                    match c.f().job_log_tail(&c.repo, job, c.fs.log_tail_bytes).await {
                        Ok(tail) => report.push_str(&format!("```\n{}\n```\n", tail.trim_end())),
                        Err(e) => report.push_str(&format!("(log unavailable: {e})\n")),
                    }
                }
            }
            if let Some(pr) = c.m.pull.pr.as_ref().map(|p| p.number) {
                let names: Vec<&str> = failures.iter().map(|f| f.name.as_str()).collect();
                let names = names.join(", ");
                let key = super::ledger::Key::CiFailed {
                    sha: sha.clone(),
                    round: c.task.core.check_round,
                };
                c.comment(
                    pr,
                    key,
                    &format!("CI failed ({names}); the worker is fixing it."),
                )
                .await?;
            }
            record_checks(c, CiOutcome::Failed, report.clone()).await;
            c.m.ci.ci_sha = None;
            c.m.ci.failed_sha = Some(sha);
            Ok(Poll::Applied(TaskEvent::ChecksFailed(report)))
        }
    }
}

/// Puts the pull request's link and the CI outcome at the top of the summary the review
/// inbox item shows (best effort: review works without it).
async fn review_summary(c: &Ctx<'_>, ci: &str) {
    let Some(pr) = &c.m.pull.pr else { return };
    let stat = c.task.diffstat.clone().unwrap_or_default();
    let stat: Vec<&str> = stat
        .lines()
        .filter(|l| !l.starts_with("Pull request: ") && !l.starts_with("CI: "))
        .collect();
    let text = format!("Pull request: {}\nCI: {ci}\n{}", pr.url, stat.join("\n"));
    if let Err(e) =
        c.rt.inner
            .engine
            .set_task_diffstat(c.task.id, text.trim_end())
            .await
    {
        tracing::warn!(error = %e, "could not record the review summary");
    }
}

/// How the forge's CI judged a commit, for the transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CiOutcome {
    Passed,
    Failed,
    /// The repository has no CI: nothing checked the work.
    NoCi,
}

/// Records the CI's verdict in the task's transcript (best effort).
pub(crate) async fn record_checks(c: &Ctx<'_>, outcome: CiOutcome, output: String) {
    use mainloop_domain::transcript::{ChecksEntry, TranscriptEntry};
    let entry = TranscriptEntry::Checks(ChecksEntry {
        command: "GitHub CI".to_owned(),
        passed: match outcome {
            CiOutcome::Passed => Some(true),
            CiOutcome::Failed => Some(false),
            CiOutcome::NoCi => None,
        },
        exit_code: None,
        timed_out: false,
        output,
        duration_ms: None,
        no_ci: outcome == CiOutcome::NoCi,
    });
    if let Err(e) =
        c.rt.inner
            .engine
            .record_transcript(c.user, c.task.id, &[entry])
            .await
    {
        tracing::warn!(error = %e, "could not record the CI outcome");
    }
}

async fn poll_review(c: &mut Ctx<'_>) -> Result<Poll, FlowError> {
    let Some(pr) = c.m.pull.pr.clone() else {
        return Ok(Poll::Stop);
    };
    let now = c.f().pull_request(&c.repo, pr.number).await?;
    if let Some(event) = act(c, pr.number, read_pull(&now)).await? {
        return Ok(Poll::Applied(event));
    }
    let (items, cursor) = c
        .f()
        .feedback_since(&c.repo, pr.number, &c.m.pull.feedback_cursor)
        .await?;
    let human: Vec<_> = items
        .into_iter()
        .filter(|f| !f.body.contains(MARKER))
        .collect();
    let human = c.only_trusted(human, |f| f.author.as_str()).await?;
    c.m.pull.feedback_cursor = cursor;
    if let Some(event) = act(c, pr.number, read_feedback(&human, &c.fs.mention)).await? {
        return Ok(Poll::Applied(event));
    }
    c.save().await?;
    Ok(Poll::Continue)
}

//! How forge steps end: a forge that fails for a while (an outage, a rate limit) runs
//! the same job again later, however long it lasts, and is noted in the transcript once
//! (its end too); a forge that refuses outright fails the task with its reason; a store
//! that fails retries the job like any other, and is never blamed on the forge. Also the
//! watch chain's scheduling.

use super::error::FlowError;
use super::state::Ctx;
use crate::Runtime;
use crate::task::{fail, retry, status};
use mainloop_domain::TaskId;
use mainloop_engine::{ForgeWatch, JobContext, JobError};
use mainloop_forge::ForgeError;
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;

/// Takes the task's forge lock: its mirror record is read, changed and written under it
/// by the sync, watch, commit, checks and merge jobs.
pub(crate) async fn lock(rt: &Runtime, id: TaskId) -> OwnedMutexGuard<()> {
    rt.forge_lock(id).lock_owned().await
}

/// The job error for a failure that was not the forge's.
pub(crate) fn job_error(e: FlowError) -> JobError {
    match e {
        FlowError::Store(m) => JobError::retry(format!("store: {m}")),
        FlowError::Forge(e) => JobError::retry(e.to_string()),
        FlowError::Fatal(m) => JobError::fatal(m),
    }
}

/// Ends a forge step with `result`, under its lock `guard`.
pub(crate) async fn finish(
    c: &mut Ctx<'_>,
    ctx: &JobContext,
    guard: OwnedMutexGuard<()>,
    result: Result<(), FlowError>,
) -> Result<(), JobError> {
    match result {
        Ok(()) => clear_outage(c).await.map_err(job_error),
        Err(FlowError::Forge(e)) => {
            let (rt, user, task, wait) = (c.rt, c.user, c.task.id, c.fs.poll_interval);
            note_outage(c, &e).await.map_err(job_error)?;
            drop(guard);
            if e.is_transient() {
                tracing::warn!(task = %task, error = %e, "GitHub call failed; trying again later");
                return retry_later(ctx, wait_for(&e, wait)).await;
            }
            status(rt, user, task, &format!("GitHub refused: {e}")).await;
            fail(rt, task, format!("GitHub refused: {e}")).await
        }
        Err(e) => Err(job_error(e)),
    }
}

/// How long to wait after a transient forge failure.
pub(crate) fn wait_for(e: &ForgeError, interval: Duration) -> Duration {
    match e {
        ForgeError::RateLimited(d) => (*d).max(interval),
        _ => interval,
    }
}

/// Enqueues this job again (same kind, lane and payload, a new key) to run after `wait`.
pub(crate) async fn retry_later(ctx: &JobContext, wait: Duration) -> Result<(), JobError> {
    ctx.requeue(wait).await.map_err(retry)
}

/// Records (once) that the forge is failing, in the task's transcript.
pub(crate) async fn note_outage(c: &mut Ctx<'_>, e: &ForgeError) -> Result<(), FlowError> {
    if c.m.outage.is_none() {
        let what = e.to_string();
        // Only the flag: what the failed step read (a cursor past a reply it could not
        // act on) must not be saved, or that reply would be skipped.
        c.save_only(|m| m.outage = Some(what.clone())).await?;
        status(
            c.rt,
            c.user,
            c.task.id,
            &format!("GitHub trouble, retrying: {e}"),
        )
        .await;
    }
    Ok(())
}

/// Records that the forge answers again, if it had been failing.
pub(crate) async fn clear_outage(c: &mut Ctx<'_>) -> Result<(), FlowError> {
    if let Some(what) = c.m.outage.clone() {
        c.save_only(|m| m.outage = None).await?;
        status(
            c.rt,
            c.user,
            c.task.id,
            &format!("GitHub is reachable again (after: {what})"),
        )
        .await;
    }
    Ok(())
}

/// Starts a new watch chain now (superseding any other), e.g. on entering a waiting
/// state or when a webhook says something changed.
pub(crate) async fn schedule_watch(c: &mut Ctx<'_>) -> Result<(), FlowError> {
    c.m.watch_gen += 1;
    c.save().await?;
    enqueue_watch(c.rt, c.task.id, c.m.watch_gen, 0, Duration::ZERO)
        .await
        .map_err(FlowError::from)
}

pub(crate) async fn enqueue_watch(
    rt: &Runtime,
    task_id: TaskId,
    generation: u64,
    seq: u64,
    after: Duration,
) -> Result<(), JobError> {
    let job = ForgeWatch {
        task_id,
        generation,
        seq,
    };
    rt.inner.engine.enqueue(&job, after).await.map_err(retry)
}

//! The job dispatcher: workers claim due jobs with a lease, keep the lease alive while
//! the handler runs, and record success, retry with backoff, or final failure.

use crate::{Engine, now};
use futures::FutureExt;
use futures::future::BoxFuture;
use mainloop_domain::Timestamp;
use mainloop_store::{Job, NewJob};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What a handler gets: the engine, the claimed job, and the lease owner id (needed to
/// complete the job inside the handler's own transaction).
#[derive(Clone, Debug)]
pub struct JobContext {
    pub engine: Engine,
    pub job: Job,
    pub owner: String,
}

impl JobContext {
    /// Queues this job again as it is (kind, lane, payload, a new key), to run after
    /// `wait`, for a job that waits on something outside (a forge's outage or rate
    /// limit) without spending the dispatcher's bounded retries; the current attempt
    /// then ends successfully.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn requeue(&self, wait: Duration) -> crate::Result<()> {
        let at = now();
        let after = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
        let job = &self.job;
        let base = job.key.split(":retry@").next().unwrap_or(&job.key);
        let mut tx = self.engine.store().begin().await?;
        tx.enqueue(
            &NewJob {
                key: format!("{base}:retry@{}", at.as_millis()),
                kind: job.kind.clone(),
                user_id: job.user_id,
                lane: job.lane.clone(),
                payload: job.payload.clone(),
                run_after: at.plus_millis(after),
            },
            at,
        )
        .await?;
        tx.commit().await?;
        self.engine.wake_dispatcher();
        Ok(())
    }
}

/// A failed job attempt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    pub message: String,
    /// Worth another attempt later.
    pub retryable: bool,
    /// Wait at least this long before the next attempt.
    pub retry_after: Option<Duration>,
}

impl JobError {
    #[must_use]
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    #[must_use]
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }
}

/// Runs one kind of job. Must be idempotent: a job may run again after a crash.
pub(crate) trait JobHandler: Send + Sync + std::fmt::Debug + 'static {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>>;
}

pub(crate) struct Dispatcher {
    engine: Engine,
    owner: String,
}

impl Dispatcher {
    pub(crate) fn new(engine: Engine) -> Self {
        let owner = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        Self { engine, owner }
    }

    pub(crate) fn spawn(self, shutdown: &CancellationToken) -> tokio::task::JoinHandle<()> {
        let mut handles = Vec::new();
        for (pool, workers) in self.engine.pools() {
            let poller = Poller::default();
            for i in 0..workers {
                let engine = self.engine.clone();
                let owner = format!("{}/{pool}/{i}", self.owner);
                let shutdown = shutdown.clone();
                handles.push(tokio::spawn(supervise(
                    engine,
                    pool.clone(),
                    owner,
                    Arc::clone(&poller),
                    shutdown,
                )));
            }
        }
        tokio::spawn(async move {
            for h in handles {
                if let Err(e) = h.await {
                    tracing::error!(error = %e, "dispatcher worker ended abnormally");
                }
            }
        })
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A poll a second away moves by up to half a second either way: workers that went
/// idle together would otherwise poll in step, each needing a database connection at
/// the same moment, and the pool would keep that many open. Sooner waits (a job due)
/// stay exact.
fn spread(wait: Duration) -> Duration {
    if wait < Duration::from_secs(1) {
        return wait;
    }
    wait.mul_f64(0.5 + rand::random::<f64>())
}

/// Exponential backoff with full jitter, capped.
fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let exp = base.saturating_mul(2_u32.saturating_pow(attempts.saturating_sub(1).min(20)));
    let cap = exp.min(max);
    let jitter = rand::random::<f64>();
    cap.mul_f64(0.5 + jitter / 2.0)
}

/// Keeps one dispatcher worker alive: a panic outside any job (a job's own panic is
/// caught in [`run_job`]) restarts it instead of leaving its pool a worker short for
/// the life of the process.
async fn supervise(
    engine: Engine,
    pool: String,
    owner: String,
    poller: Poller,
    shutdown: CancellationToken,
) {
    loop {
        let run = tokio::spawn(worker(
            engine.clone(),
            pool.clone(),
            owner.clone(),
            Arc::clone(&poller),
            shutdown.clone(),
        ));
        match run.await {
            Err(e) if e.is_panic() && !shutdown.is_cancelled() => {
                tracing::error!(%pool, "a dispatcher worker panicked; starting it again");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            _ => return,
        }
    }
}

async fn worker(
    engine: Engine,
    pool: String,
    owner: String,
    poller: Poller,
    shutdown: CancellationToken,
) {
    let lease = engine.config().lease;
    let notify = engine.pool_notify(&pool);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let claimed = {
            // Registered before the claim, so a wake-up between the two is not lost;
            // dropped before the job runs, so the hand-over below reaches another worker.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let kinds = engine.handler_kinds(&pool);
            let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
            let t = now();
            match engine
                .store()
                .claim_job(&kinds, &owner, t.plus_millis(millis(lease)), t)
                .await
            {
                Ok(Some(job)) => Some(job),
                Ok(None) => {
                    // Nothing claimable: sleep until woken (enqueues and finished jobs
                    // wake one worker). One idle worker of the pool — the poller — also
                    // wakes when the next job of ours is due, or after a poll interval
                    // (another process may share the database); the others only when
                    // woken, so an idle pool of many workers costs one query a second,
                    // not one per worker. A job that is due but could not be claimed
                    // waits behind its lane, whose end wakes us: no fast polling.
                    let turn = poller.try_lock().ok();
                    let wait = match turn {
                        Some(_) => Some(spread(next_wait(&engine, &kinds).await)),
                        None => None,
                    };
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = &mut notified => {}
                        () = sleep_or_never(wait) => {}
                    }
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim jobs; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    None
                }
            }
        };
        if let Some(job) = claimed {
            // More may be due: the next idle worker looks, and so on until one finds
            // nothing.
            notify.notify_one();
            run_job(&engine, &owner, job, &shutdown).await;
        }
    }
}

/// One per pool: held by the idle worker that polls on a timer.
type Poller = Arc<tokio::sync::Mutex<()>>;

/// How long the pool's poller sleeps: until the next job of `kinds` is due, at most a
/// second.
async fn next_wait(engine: &Engine, kinds: &[&str]) -> Duration {
    match engine.store().next_due(kinds).await {
        Ok(Some(at)) => {
            let ms = at.as_millis() - now().as_millis();
            if ms <= 0 {
                Duration::from_millis(250)
            } else {
                Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                    .clamp(Duration::from_millis(5), Duration::from_secs(1))
            }
        }
        _ => Duration::from_secs(1),
    }
}

async fn sleep_or_never(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

async fn run_job(engine: &Engine, owner: &str, job: Job, shutdown: &CancellationToken) {
    // The span follows the future (an entered span held across `.await`s is left open
    // on whichever thread resumes the task, and tracing-subscriber can panic on it).
    let span = tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempts);
    run_job_in_span(engine, owner, job, shutdown)
        .instrument(span)
        .await;
}

async fn run_job_in_span(engine: &Engine, owner: &str, job: Job, shutdown: &CancellationToken) {
    let Some(handler) = engine.handler(&job.kind) else {
        return;
    };
    let lease = engine.config().lease;
    let ctx = JobContext {
        engine: engine.clone(),
        job: job.clone(),
        owner: owner.to_owned(),
    };
    // A handler that panics fails this attempt like any other error (retried while
    // attempts remain); it must not take the dispatcher worker down with it.
    let run = AssertUnwindSafe(handler.run(ctx))
        .catch_unwind()
        .map(|outcome| {
            outcome.unwrap_or_else(|panic| Err(JobError::retry(panic_message(&*panic))))
        });
    let heartbeat = async {
        let mut tick = tokio::time::interval(lease / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            let until = now().plus_millis(millis(lease));
            match engine.store().extend_lease(job.id, owner, until).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "could not extend a job lease"),
            }
        }
    };
    let result = tokio::select! {
        r = run => r,
        () = heartbeat => {
            tracing::warn!("lost the lease on a running job; abandoning this attempt");
            return;
        }
        () = shutdown.cancelled() => {
            // Left running: the next start (or lease expiry) hands it to a new worker.
            return;
        }
    };
    let t = now();
    let cfg = engine.config();
    let retry_at: Option<Timestamp> = match &result {
        Ok(()) => None,
        Err(err) => {
            let retry_at = (err.retryable && job.attempts < cfg.max_attempts).then(|| {
                let wait = err.retry_after.unwrap_or_default().max(backoff(
                    cfg.backoff_base,
                    cfg.backoff_max,
                    job.attempts,
                ));
                t.plus_millis(millis(wait))
            });
            if retry_at.is_some() {
                tracing::warn!(error = %err, "job attempt failed; will retry");
            } else {
                tracing::error!(error = %err, "job failed for good");
            }
            retry_at
        }
    };
    // While the database is away (restarting, refusing writes) the outcome is tried
    // again until the lease would have run out anyway; giving up at once would leave
    // the job to wait out its whole lease, and a finished job to run again.
    let give_up = tokio::time::Instant::now() + lease;
    let mut tries = 0;
    loop {
        tries += 1;
        let recorded = match &result {
            Ok(()) => engine.store().complete_job(job.id, owner, t).await,
            Err(err) => {
                engine
                    .store()
                    .fail_job(job.id, owner, &err.message, retry_at, t)
                    .await
            }
        };
        let e = match recorded {
            Ok(_) => break,
            Err(e) => e,
        };
        let wait = backoff(cfg.backoff_base, cfg.backoff_max, tries);
        if !e.is_transient()
            || shutdown.is_cancelled()
            || tokio::time::Instant::now() + wait >= give_up
        {
            tracing::error!(error = %e, "could not record a job's outcome; its lease will expire and it will run again");
            break;
        }
        tracing::warn!(error = %e, "could not record a job's outcome yet; trying again");
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    engine.wake_dispatcher();
}

/// What a caught panic says, for the job's `last_error`.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    format!("the job panicked: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..30 {
            let d = backoff(base, max, attempt);
            assert!(d <= max, "{attempt}: {d:?}");
        }
        let first = backoff(base, max, 1);
        assert!(first >= Duration::from_millis(50) && first <= base);
        assert!(backoff(base, max, 5) >= Duration::from_millis(800));
    }
}

//! Typed background jobs: every kind of job is one serde struct that declares, once, its
//! kind, the dispatcher pool that runs it, its idempotency key and its lane. Jobs enter
//! the queue only through [`enqueue`] (inside a transaction) or [`Engine::enqueue`], and
//! leave it only through a handler registered with [`Engine::register`].

mod kinds;

pub use kinds::{
    ChatTurn, CommitWork, ForgeSync, ForgeWatch, MakeDigest, Merge, RunAgent, RunChecks, Step,
    StopAgent, TaskJob, WakeTask,
};

use crate::dispatcher::{JobContext, JobError, JobHandler};
use crate::{Engine, EngineError, Result, now};
use futures::future::BoxFuture;
use mainloop_domain::{Timestamp, UserId};
use mainloop_store::{NewJob, Tx};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// The dispatcher pools. Long or slow work gets a pool of its own so it never starves
/// chat turns: agent runs (the pool's size is the number of agent slots), checks,
/// commits and merges, forge calls, and notification delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pool {
    Default,
    Agents,
    Effects,
    Forge,
    Notify,
}

impl Pool {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Agents => "agents",
            Self::Effects => "effects",
            Self::Forge => "forge",
            Self::Notify => "notify",
        }
    }
}

/// A kind of job: its payload is the struct itself.
pub trait BackgroundJob: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The `kind` column; never change it for a kind that may be queued.
    const KIND: &'static str;
    const POOL: Pool;
    /// Enqueueing a key that exists already is a no-op.
    fn key(&self) -> String;
    /// Jobs in one lane run one at a time, in order.
    fn lane(&self) -> Option<String> {
        None
    }
    /// The user the job acts for, if any.
    fn user(&self) -> Option<UserId> {
        None
    }
}

/// Runs the jobs of kind `J`. Must be idempotent: a job may run again after a crash.
pub trait Handler<J: BackgroundJob>: Send + Sync + fmt::Debug + 'static {
    fn run(&self, job: J, ctx: JobContext)
    -> BoxFuture<'static, std::result::Result<(), JobError>>;
}

/// Enqueues `job` inside `tx`, to run at `run_after` or later.
///
/// # Errors
/// Storage failures; a payload that does not serialise.
pub async fn enqueue<J: BackgroundJob>(
    tx: &mut Tx,
    job: &J,
    run_after: Timestamp,
    at: Timestamp,
) -> Result<()> {
    let payload = serde_json::to_value(job).map_err(|e| EngineError::Internal(e.to_string()))?;
    tx.enqueue(
        &NewJob {
            key: job.key(),
            kind: J::KIND.to_owned(),
            user_id: job.user(),
            lane: job.lane(),
            payload,
            run_after,
        },
        at,
    )
    .await?;
    Ok(())
}

impl Engine {
    /// Registers the handler of job kind `J` in its pool. Jobs of kinds without a
    /// handler wait in the queue.
    pub fn register<J: BackgroundJob>(&self, handler: Arc<dyn Handler<J>>) {
        self.register_raw(
            J::KIND,
            Arc::new(Typed {
                handler,
                kind: PhantomData,
            }),
            J::POOL,
        );
    }

    /// Enqueues a job on its own transaction, to run after `delay`, and wakes the
    /// dispatcher.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn enqueue<J: BackgroundJob>(
        &self,
        job: &J,
        delay: std::time::Duration,
    ) -> Result<()> {
        let at = now();
        let run_after = at.plus_millis(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2));
        let mut tx = self.store().begin().await?;
        enqueue(&mut tx, job, run_after, at).await?;
        tx.commit().await?;
        self.wake_dispatcher();
        Ok(())
    }
}

/// Reads the payload of a claimed job as `J` and hands it to its handler.
struct Typed<J: BackgroundJob> {
    handler: Arc<dyn Handler<J>>,
    kind: PhantomData<fn() -> J>,
}

impl<J: BackgroundJob> fmt::Debug for Typed<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typed").field("kind", &J::KIND).finish()
    }
}

impl<J: BackgroundJob> JobHandler for Typed<J> {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, std::result::Result<(), JobError>> {
        match serde_json::from_value::<J>(ctx.job.payload.clone()) {
            Ok(job) => self.handler.run(job, ctx),
            Err(e) => {
                let message = format!("malformed {} job: {e}", J::KIND);
                Box::pin(async move { Err(JobError::fatal(message)) })
            }
        }
    }
}

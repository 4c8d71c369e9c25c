//! The temporal pyramid: each user's time zone; the sweep (at start, then every quarter
//! hour) that queues a [`MakeDigest`] job for every span due; the job, which makes one
//! digest — a day from its records, a week or a month from its days — once; and what the
//! main thread's context carries of them.

use crate::chat::storage;
use crate::dispatcher::{JobContext, JobError};
use crate::jobs::{Handler, MakeDigest, enqueue};
use crate::{Engine, EngineError, Result};
use futures::future::BoxFuture;
use mainloop_domain::digest::{
    Digest, Period, Span, TimeZoneSetting, Zone, compose_day, due, memory_section, merge, pyramid,
    render,
};
use mainloop_domain::{DigestId, Timestamp, UserId};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the sweep looks for spans that ended (a zone's midnight is at most this
/// late to be noticed).
const SWEEP_EVERY: Duration = Duration::from_secs(15 * 60);
/// The most digests listed at once.
pub const MAX_DIGESTS: u32 = 200;

impl Engine {
    /// The zone whose midnights end the user's days.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn time_zone(&self, user: UserId) -> Result<TimeZoneSetting> {
        let zone = self.zone(user).await?;
        let own = self.store().time_zone(user).await?.is_some();
        Ok(TimeZoneSetting {
            time_zone: zone.name().to_owned(),
            default: !own,
        })
    }

    /// Sets the user's time zone (`None`: back to the configured default). Spans
    /// already made keep their dates; later ones are counted in the new zone.
    ///
    /// # Errors
    /// An unknown zone; storage failures.
    pub async fn set_time_zone(&self, user: UserId, name: Option<&str>) -> Result<TimeZoneSetting> {
        let zone = name
            .map(Zone::parse)
            .transpose()
            .map_err(EngineError::Invalid)?;
        let mut tx = self.store().begin().await?;
        tx.set_time_zone(user, zone.as_ref().map(Zone::name))
            .await?;
        tx.commit().await?;
        self.time_zone(user).await
    }

    pub(crate) async fn zone(&self, user: UserId) -> Result<Zone> {
        Ok(match self.store().time_zone(user).await? {
            // A zone stored earlier that this build no longer knows falls back.
            Some(name) => Zone::parse(&name).unwrap_or_else(|_| self.config().time_zone.clone()),
            None => self.config().time_zone.clone(),
        })
    }

    /// The user's digests of `period` (all when `None`) that start before `before`,
    /// newest first, at most `limit` (up to [`MAX_DIGESTS`]).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn digests(
        &self,
        user: UserId,
        period: Option<Period>,
        before: Option<jiff::civil::Date>,
        limit: u32,
    ) -> Result<Vec<Digest>> {
        Ok(self
            .store()
            .digests(user, period, before, limit.clamp(1, MAX_DIGESTS))
            .await?)
    }

    /// One of the user's digests.
    ///
    /// # Errors
    /// Another user's or an unknown digest; storage failures.
    pub async fn digest(&self, user: UserId, id: DigestId) -> Result<Digest> {
        self.store()
            .digest(user, id)
            .await?
            .ok_or(EngineError::NotFound("digest"))
    }

    /// Queues a digest job for every span that ended by `now` and is not made, for
    /// every user. Returns how many were queued (a span queued before is not again).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn sweep_digests(&self, now: Timestamp) -> Result<usize> {
        let mut queued = 0;
        for user in self.store().users().await? {
            let zone = self.zone(user.id).await?;
            let made = self.store().made_spans(user.id).await?;
            let spans = due(&zone, user.created_at, &made, now);
            if spans.is_empty() {
                continue;
            }
            let mut tx = self.store().begin().await?;
            for span in spans {
                let job = MakeDigest {
                    user_id: user.id,
                    period: span.period,
                    start: span.start,
                };
                enqueue(&mut tx, &job, now, now).await?;
                queued += 1;
            }
            tx.commit().await?;
        }
        if queued > 0 {
            self.wake_dispatcher();
        }
        Ok(queued)
    }

    /// Makes the digest of `span` for the user unless it is made; returns whether it
    /// made it. A day is composed from what happened in it; a week or a month from the
    /// day digests inside it.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn make_digest(&self, user: UserId, span: Span, at: Timestamp) -> Result<bool> {
        let zone = self.zone(user).await?;
        let facts = if span.period == Period::Day {
            let (start, end) = span.bounds(&zone);
            compose_day(&self.store().day_records(user, start, end).await?)
        } else {
            let days = self
                .store()
                .day_digests(user, span.start, span.end())
                .await?;
            merge(&days.iter().map(|d| &d.facts).collect::<Vec<_>>())
        };
        let digest = Digest {
            id: DigestId::new_v7(at),
            period: span.period,
            start: span.start,
            end: span.end(),
            title: span.title(),
            time_zone: zone.name().to_owned(),
            quiet: facts.is_quiet(),
            text: render(span, zone.name(), &facts),
            facts,
            created_at: at,
        };
        let mut tx = self.store().begin().await?;
        let made = tx.insert_digest(user, &digest).await?;
        tx.commit().await?;
        Ok(made)
    }

    /// Sweeps at start, then every [`SWEEP_EVERY`], until `shutdown`.
    pub(crate) fn spawn_digest_sweep(
        &self,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match engine.sweep_digests(engine.config().clock.now()).await {
                    Ok(n) if n > 0 => tracing::info!(queued = n, "digests due"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not look for digests due"),
                }
            }
        })
    }
}

#[derive(Debug)]
pub(crate) struct DigestHandler;

impl Handler<MakeDigest> for DigestHandler {
    fn run(
        &self,
        job: MakeDigest,
        ctx: JobContext,
    ) -> BoxFuture<'static, std::result::Result<(), JobError>> {
        Box::pin(async move {
            let span = Span {
                period: job.period,
                start: job.start,
            };
            let at = ctx.engine.config().clock.now();
            ctx.engine
                .make_digest(job.user_id, span, at)
                .await
                .map_err(storage)?;
            Ok(())
        })
    }
}

/// The `<memory>` section of the user's context at `at`, or `None` without digests to
/// carry (or a zero budget).
pub(crate) async fn context_memory(
    engine: &Engine,
    user: UserId,
    at: Timestamp,
) -> Result<Option<String>> {
    let budget = engine.config().memory_budget_tokens;
    if budget == 0 {
        return Ok(None);
    }
    let zone = engine.zone(user).await?;
    // Two years of months, and more weeks and days than the pyramid can take.
    let mut recent = Vec::new();
    for (period, n) in [(Period::Month, 24), (Period::Week, 6), (Period::Day, 7)] {
        recent.extend(engine.store().digests(user, Some(period), None, n).await?);
    }
    let chosen = pyramid(&recent, &zone, at, budget);
    Ok(memory_section(zone.name(), &chosen))
}

/// What a session keeping its own context is told of the digests in this turn's message
/// (recorded as told under `<provider>#memory`), as [`crate::notes::session_notes`].
pub(crate) async fn session_memory(
    engine: &Engine,
    user: UserId,
    provider: &str,
    new_session: bool,
) -> Result<Option<(String, String)>> {
    let section = context_memory(engine, user, engine.config().clock.now()).await?;
    crate::notes::session_told(
        engine,
        user,
        &memory_key(provider),
        new_session,
        section,
        mainloop_domain::digest::context::session_update,
    )
    .await
}

/// Where what a session was told of the digests is recorded.
pub(crate) fn memory_key(provider: &str) -> String {
    format!("{provider}#memory")
}

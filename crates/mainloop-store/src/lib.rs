//! mainloop's durable storage. One set of SQL queries (with `$N` placeholders) serves
//! SQLite and PostgreSQL through sqlx's `Any` driver; each backend has its own migration
//! folder. Writes go through [`Tx`], so a state change, its events and its effect jobs
//! commit together (the transactional outbox). Also notification state (VAPID keys, push
//! subscriptions, ntfy settings).

mod cleanup;
mod diffs;
mod digests;
pub mod environment;
mod error;
mod events;
mod forge;
mod inbox;
mod jobs;
mod leases;
mod main_thread;
mod messages;
mod notes;
mod notifications;
mod plans;
mod projects;
mod runners;
mod search;
mod spending;
mod tasks;
mod transcript;
mod users;

pub use cleanup::{TaskCounts, TaskFootprint};
pub use environment::TaskEnvRow;
pub use error::{Result, StoreError};
pub use forge::TaskForge;
pub use jobs::{Job, JobState, NewJob};
pub use leases::LeaseRow;
pub use main_thread::{MainSession, TurnUsageRow, UsageTotals};
pub use messages::{NewMessage, Summary};
pub use notes::NewNote;
pub use notifications::{NewPushSubscription, NotificationSettings, PushSubscription, VapidKeys};
pub use plans::PlanRevision;
pub use runners::RunnerRow;
pub use spending::{DaySpend, TaskSpend};
pub use tasks::NewTask;
pub use users::TokenKind;

use mainloop_domain::EventId;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database engine is behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Picks the backend from a database URL.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`] for anything but `sqlite:` and `postgres(ql):`.
    pub fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            let scheme = url.split(':').next().unwrap_or_default();
            Err(StoreError::UnsupportedUrl(format!("{scheme}:…")))
        }
    }
}

/// Connection options beyond the URL.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// PostgreSQL: connections kept open while idle. A busy moment opens more, up to
    /// `max_connections`; those beyond this many are closed once idle (each is a
    /// PostgreSQL backend, which costs the database server memory).
    pub min_connections: u32,
    /// PostgreSQL: how often idle connections beyond `min_connections` are closed.
    pub idle_trim: Duration,
    /// How long to wait for a connection, and (SQLite) for this process's other
    /// writers: past it the store is unavailable rather than slow without bound.
    pub acquire_timeout: Duration,
    /// SQLite: how long a write waits for another process's lock on the file.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            min_connections: 1,
            idle_trim: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// The database handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// For writes whose loss in a power failure is harmless (job leases, streamed chat
    /// deltas): SQLite connections with `synchronous = NORMAL`; with PostgreSQL the
    /// same pool, and such transactions commit asynchronously. Either way they are
    /// durable across a crash of the mainloop process itself.
    relaxed: AnyPool,
    backend: Backend,
    /// SQLite allows one writer; taking this in-process lock before `BEGIN` turns what
    /// would be `SQLITE_BUSY` failures under contention into orderly waiting.
    write_lock: Option<Arc<Mutex<()>>>,
    /// The longest a write waits for `write_lock`.
    write_wait: Duration,
    latest_event: Arc<watch::Sender<EventId>>,
}

/// Every `every`, closes the idle connections of `pool` beyond `min`. The pool hands out
/// its idle connections in turn, so under a light steady load none is idle for long and
/// an idle timeout alone would keep every connection a busy moment opened.
fn keep_few_idle(pool: AnyPool, min: u32, every: Duration) {
    let min = usize::try_from(min).unwrap_or(usize::MAX);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                return;
            }
            for _ in min..pool.num_idle() {
                let Some(conn) = pool.try_acquire() else {
                    break;
                };
                if let Err(error) = conn.close().await {
                    tracing::debug!(%error, "closing an idle database connection failed");
                }
            }
        }
    });
}

impl Store {
    /// Connects (creating a SQLite file if needed) and applies pending migrations.
    ///
    /// # Errors
    /// When the database cannot be reached or a migration fails.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let pool = Self::pool_options(backend, options, "FULL")
            .connect(&url)
            .await?;
        let relaxed = match backend {
            Backend::Sqlite => {
                Self::pool_options(
                    backend,
                    &StoreOptions {
                        max_connections: 2,
                        ..options.clone()
                    },
                    "NORMAL",
                )
                .connect(&url)
                .await?
            }
            Backend::Postgres => {
                keep_few_idle(pool.clone(), options.min_connections, options.idle_trim);
                pool.clone()
            }
        };
        let store = Self {
            pool,
            relaxed,
            backend,
            write_lock: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
            write_wait: options.acquire_timeout,
            latest_event: Arc::new(watch::channel(EventId(0)).0),
        };
        store.migrate().await?;
        let latest = store.latest_event_id().await?;
        store.latest_event.send_replace(latest);
        Ok(store)
    }

    fn pool_options(
        backend: Backend,
        options: &StoreOptions,
        synchronous: &'static str,
    ) -> AnyPoolOptions {
        let pool_options = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(if backend == Backend::Postgres {
                options.min_connections.min(options.max_connections)
            } else {
                0
            })
            .acquire_timeout(options.acquire_timeout)
            // A connection opened before the database last refused a write may keep
            // refusing after writes are allowed again; a new one sees the database as
            // it is now.
            .before_acquire(|_conn, meta| {
                Box::pin(async move { Ok(!error::refusals().predates_last(meta.age)) })
            });
        if backend != Backend::Sqlite {
            return pool_options;
        }
        let busy_timeout = format!("PRAGMA busy_timeout = {}", options.busy_timeout.as_millis());
        pool_options.after_connect(move |conn, _meta| {
            let busy_timeout = busy_timeout.clone();
            Box::pin(async move {
                // WAL lets readers proceed while a write commits; foreign keys are off by
                // default in SQLite; the busy timeout covers other processes such as
                // `mainloop token` touching the file.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute(busy_timeout.as_str()).await?;
                conn.execute(if synchronous == "FULL" {
                    "PRAGMA synchronous = FULL"
                } else {
                    "PRAGMA synchronous = NORMAL"
                })
                .await?;
                Ok(())
            })
        })
    }

    /// Applies the backend's pending migrations.
    ///
    /// # Errors
    /// When a migration fails.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    #[must_use]
    pub const fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction.
    ///
    /// # Errors
    /// When no connection can be had.
    pub async fn begin(&self) -> Result<Tx> {
        let guard = self.write_guard().await?;
        let tx = self.pool.begin().await?;
        Ok(Tx {
            tx,
            _guard: guard,
            max_event: None,
            latest_event: Arc::clone(&self.latest_event),
        })
    }

    /// Starts a write transaction for data whose loss in a power failure (not a process
    /// crash) is harmless: it skips the flush to disk at commit.
    ///
    /// # Errors
    /// When no connection can be had.
    pub async fn begin_relaxed(&self) -> Result<Tx> {
        let guard = self.write_guard().await?;
        let mut tx = self.relaxed.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET LOCAL synchronous_commit TO OFF")
                .execute(&mut *tx)
                .await?;
        }
        Ok(Tx {
            tx,
            _guard: guard,
            max_event: None,
            latest_event: Arc::clone(&self.latest_event),
        })
    }

    /// SQLite's in-process writer lock. While another process holds the file's lock each
    /// writer waits out the busy timeout holding this one, so without a bound on the
    /// wait the writers queued behind would wait one busy timeout each.
    async fn write_guard(&self) -> Result<Option<OwnedMutexGuard<()>>> {
        let Some(lock) = &self.write_lock else {
            return Ok(None);
        };
        tokio::time::timeout(self.write_wait, Arc::clone(lock).lock_owned())
            .await
            .map(Some)
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "the database is busy: no turn to write within {:?}",
                    self.write_wait
                ))
            })
    }

    /// Wakes whenever events are committed; holds the newest committed event id.
    #[must_use]
    pub fn subscribe_events(&self) -> watch::Receiver<EventId> {
        self.latest_event.subscribe()
    }

    /// Checks the database answers.
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
        self.relaxed.close().await;
    }

    pub(crate) const fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls everything back.
#[derive(Debug)]
pub struct Tx {
    tx: sqlx::Transaction<'static, Any>,
    _guard: Option<OwnedMutexGuard<()>>,
    max_event: Option<EventId>,
    latest_event: Arc<watch::Sender<EventId>>,
}

impl Tx {
    /// Commits, then tells event subscribers about the events this transaction wrote.
    ///
    /// # Errors
    /// When the commit fails (nothing was written).
    pub async fn commit(self) -> Result<()> {
        let Self {
            tx,
            _guard,
            max_event,
            latest_event,
        } = self;
        tx.commit().await?;
        if let Some(id) = max_event {
            latest_event.send_if_modified(|cur| {
                if id > *cur {
                    *cur = id;
                    true
                } else {
                    false
                }
            });
        }
        Ok(())
    }

    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

pub(crate) fn to_bool(v: i64) -> bool {
    v != 0
}

pub(crate) fn from_bool(b: bool) -> i64 {
    i64::from(b)
}

pub(crate) fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("{what} '{s}': {e}")))
}

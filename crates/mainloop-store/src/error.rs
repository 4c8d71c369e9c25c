//! The store's one error type.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL '{0}': use sqlite:// or postgres://")]
    UnsupportedUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => Self::NotFound("row"),
            // A protocol error is a connection that broke mid-conversation (a server
            // killed between messages), not a fault in our SQL.
            sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(e.to_string()),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Self::Conflict(db.message().to_owned())
            }
            sqlx::Error::Database(db) => match condition(db.as_ref()) {
                Some(Condition::WritesRefused) => {
                    refusals().note();
                    Self::Unavailable(format!("the database refuses writes: {}", db.message()))
                }
                Some(Condition::Away) => Self::Unavailable(e.to_string()),
                Some(Condition::DiskFailed) => {
                    refusals().note();
                    Self::Unavailable(e.to_string())
                }
                None => Self::Database(e),
            },
            _ => Self::Database(e),
        }
    }
}

/// A passing condition the database reported, as opposed to a fault in our SQL or data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condition {
    /// Connections cut, the server shutting down or starting, out of disk, memory or
    /// connections, the file locked by another process, a transaction rolled back in a
    /// deadlock or a serialization conflict.
    Away,
    /// The database is read-only for now (an administrator's freeze, a standby).
    WritesRefused,
    /// SQLite's disk failed under it (full, an I/O error): connections that met it may
    /// keep an old view of the database, so they are replaced like after a refusal.
    DiskFailed,
}

fn condition(db: &dyn sqlx::error::DatabaseError) -> Option<Condition> {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return postgres_condition(pg.code());
    }
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    sqlite_condition(db.code()?.parse().ok()?)
}

/// PostgreSQL SQLSTATEs (appendix A of its manual).
fn postgres_condition(sqlstate: &str) -> Option<Condition> {
    match sqlstate {
        // read_only_sql_transaction: `default_transaction_read_only`, a hot standby.
        "25006" => Some(Condition::WritesRefused),
        // admin_shutdown (pg_terminate_backend, a fast shutdown), crash_shutdown,
        // cannot_connect_now (starting up or shutting down), idle_session_timeout;
        // io_error on the server's disk.
        "57P01" | "57P02" | "57P03" | "57P05" | "58030" => Some(Condition::Away),
        // serialization_failure, deadlock_detected: two transactions met and the
        // database rolled one back; run again, it passes.
        "40001" | "40P01" => Some(Condition::Away),
        // Class 08: connection exceptions; class 53: insufficient resources (disk
        // full, out of memory, too many connections).
        s if s.starts_with("08") || s.starts_with("53") => Some(Condition::Away),
        _ => None,
    }
}

/// SQLite result codes; an extended code's low byte is its primary code.
fn sqlite_condition(code: i32) -> Option<Condition> {
    match code & 0xff {
        // SQLITE_READONLY: the file or its directory cannot be written.
        8 => Some(Condition::WritesRefused),
        // SQLITE_BUSY and SQLITE_LOCKED (another process holds the lock beyond the busy
        // timeout), SQLITE_CANTOPEN.
        5 | 6 | 14 => Some(Condition::Away),
        // SQLITE_IOERR, SQLITE_FULL (disk full).
        10 | 13 => Some(Condition::DiskFailed),
        _ => None,
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}

impl StoreError {
    /// A passing condition (connection lost, pool exhausted, writes refused for now):
    /// retrying later may succeed.
    #[must_use]
    pub const fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// When the database last refused a write. A session keeps the read-only default it
/// started with (PostgreSQL's `ALTER DATABASE … SET default_transaction_read_only`, a
/// SQLite file opened read-only), so once writes are allowed again a pooled connection
/// opened before the last refusal may still refuse them: the pools drop such
/// connections instead of handing them out ([`Refusals::predates_last`]).
///
/// Process-wide because the error conversion has no store at hand; in a process with
/// several stores (tests) a refusal elsewhere costs the others a reconnect, no more.
pub(crate) struct Refusals {
    origin: Instant,
    /// Milliseconds after `origin`, plus one (0: never).
    last: AtomicU64,
}

pub(crate) fn refusals() -> &'static Refusals {
    static REFUSALS: OnceLock<Refusals> = OnceLock::new();
    REFUSALS.get_or_init(|| Refusals {
        origin: Instant::now(),
        last: AtomicU64::new(0),
    })
}

impl Refusals {
    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn note(&self) {
        self.last
            .fetch_max(self.millis(Instant::now()) + 1, Ordering::Relaxed);
    }

    /// Whether a connection opened `age` ago was opened before the last refusal (or in
    /// the same millisecond).
    pub(crate) fn predates_last(&self, age: Duration) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let opened = Instant::now().checked_sub(age).unwrap_or(self.origin);
        self.millis(opened) < last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_faults_are_passing_conditions_and_bugs_are_not() {
        assert_eq!(postgres_condition("25006"), Some(Condition::WritesRefused));
        for away in [
            "57P01", "57P02", "57P03", "08006", "08001", "53100", "53300", "40P01", "40001",
        ] {
            assert_eq!(postgres_condition(away), Some(Condition::Away), "{away}");
        }
        // Our own mistakes (syntax, undefined column, constraint) must not be retried
        // forever as if they would pass.
        for bug in ["42601", "42703", "23503", "23502", "22P02"] {
            assert_eq!(postgres_condition(bug), None, "{bug}");
        }
    }

    #[test]
    fn sqlite_faults_are_passing_conditions_and_bugs_are_not() {
        // SQLITE_READONLY and its extended codes (e.g. SQLITE_READONLY_DBMOVED = 1032).
        for refused in [8, 264, 520, 776, 1032] {
            assert_eq!(sqlite_condition(refused), Some(Condition::WritesRefused));
        }
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT, SQLITE_LOCKED, SQLITE_CANTOPEN.
        for away in [5, 517, 6, 14] {
            assert_eq!(sqlite_condition(away), Some(Condition::Away), "{away}");
        }
        // SQLITE_IOERR_WRITE, SQLITE_FULL.
        for failed in [778, 13] {
            assert_eq!(
                sqlite_condition(failed),
                Some(Condition::DiskFailed),
                "{failed}"
            );
        }
        // SQLITE_ERROR (bad SQL), SQLITE_CORRUPT, SQLITE_CONSTRAINT_FOREIGNKEY.
        for bug in [1, 11, 787] {
            assert_eq!(sqlite_condition(bug), None, "{bug}");
        }
    }

    #[test]
    fn connections_older_than_the_last_refusal_are_stale() {
        let r = Refusals {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        };
        assert!(
            !r.predates_last(Duration::from_secs(3600)),
            "no refusal yet"
        );
        std::thread::sleep(Duration::from_millis(5));
        r.note();
        assert!(r.predates_last(Duration::from_millis(3)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!r.predates_last(Duration::ZERO), "opened after the refusal");
    }
}

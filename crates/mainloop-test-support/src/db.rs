//! Where a test's data lives: a temporary directory, and SQLite in it or a fresh
//! PostgreSQL database from `mainloop-testpg`; and whether the job queue there is idle.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A temporary data directory (removed on drop) and the database URL to use.
#[derive(Debug)]
pub struct Database {
    dir: tempfile::TempDir,
    url: String,
}

impl Database {
    /// SQLite in a fresh temporary directory.
    #[must_use]
    pub fn sqlite() -> Self {
        Self::try_sqlite().unwrap()
    }

    /// [`Database::sqlite`], or the error creating the directory.
    pub fn try_sqlite() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/mainloop.db", dir.path().display());
        Ok(Self { dir, url })
    }

    /// A fresh database on the shared test PostgreSQL cluster, and a temporary directory.
    pub async fn postgres() -> Self {
        let url = mainloop_testpg::fresh_database_url().await.unwrap();
        Self {
            dir: tempfile::tempdir().unwrap(),
            url,
        }
    }

    /// `url`, and a fresh temporary directory.
    #[must_use]
    pub fn at(url: impl Into<String>) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            url: url.into(),
        }
    }

    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The temporary directory (a data directory, for the app).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    #[must_use]
    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// Keeps the temporary directory (not removed on drop), to inspect the data after a
    /// run; returns its path.
    #[must_use]
    pub fn keep(self) -> std::path::PathBuf {
        self.dir.keep()
    }

    /// Whether the job queue is idle: see [`jobs_idle`].
    pub async fn jobs_idle(&self, horizon: Duration) -> bool {
        jobs_idle(&self.url, horizon).await
    }
}

/// Whether nothing is queued to run within `horizon`: no job running, and none pending
/// that is due by then. Jobs scheduled further out (periodic polls, long backoffs) do
/// not count. Read straight from the database, so it works against a server in another
/// process as well as in this one.
pub async fn jobs_idle(database_url: &str, horizon: Duration) -> bool {
    match count_busy(database_url, horizon).await {
        Ok(busy) => busy == 0,
        Err(e) => panic!("reading the job queue of {database_url}: {e}"),
    }
}

/// [`jobs_idle`], or `None` when the database cannot be read.
pub async fn try_jobs_idle(database_url: &str, horizon: Duration) -> Option<bool> {
    count_busy(database_url, horizon)
        .await
        .ok()
        .map(|busy| busy == 0)
}

async fn count_busy(database_url: &str, horizon: Duration) -> Result<i64, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let due = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .saturating_add(horizon)
        .as_millis();
    let due = i64::try_from(due).unwrap();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(database_url).await?;
    let busy = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE state = 'running' OR (state = 'pending' AND run_after <= $1)",
    )
    .bind(due)
    .fetch_one(&mut conn)
    .await;
    let _ = sqlx::Connection::close(conn).await;
    busy
}

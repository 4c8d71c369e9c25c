//! The one error type of this crate; messages are written for a developer staring at a failed test.

/// Everything that can go wrong while providing a test database.
#[derive(Debug, thiserror::Error)]
pub enum TestPgError {
    /// No usable `initdb`/`pg_ctl`/`postgres` triple was found.
    #[error(
        "PostgreSQL server binaries not found: need `initdb`, `pg_ctl` and `postgres` in one \
         directory on PATH or under /usr/lib/postgresql/<version>/bin. Install them with \
         `apt-get install postgresql` (or set TEST_DATABASE_URL=postgres://user:pw@host:port/db \
         to use an existing server)"
    )]
    BinariesNotFound,

    /// `TEST_DATABASE_URL` is set but unusable.
    #[error("TEST_DATABASE_URL is not a usable postgres URL ({reason}): {url}")]
    BadUrl {
        /// The URL with any password redacted.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Talking to the server failed.
    #[error("could not {action} on {url}: {source}")]
    Sql {
        /// What was being attempted.
        action: String,
        /// The server URL with any password redacted.
        url: String,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },

    /// The background task that starts the cluster died.
    #[error("the task starting PostgreSQL did not finish: {0}")]
    StartTask(String),

    /// Anything else the cluster's building blocks report.
    #[error(transparent)]
    Cluster(mainloop_pgcluster::PgClusterError),
}

/// The building blocks' errors; a missing install keeps this crate's wording, which
/// names `TEST_DATABASE_URL`.
impl From<mainloop_pgcluster::PgClusterError> for TestPgError {
    fn from(e: mainloop_pgcluster::PgClusterError) -> Self {
        match e {
            mainloop_pgcluster::PgClusterError::BinariesNotFound => Self::BinariesNotFound,
            other => Self::Cluster(other),
        }
    }
}

impl TestPgError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Cluster(mainloop_pgcluster::PgClusterError::io(context, source))
    }
}

//! The one error type of this crate; messages are written for a developer staring at a failed test.

use std::path::PathBuf;

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

    /// Running as root, but there is no account to drop privileges to (initdb refuses root).
    #[error(
        "running as root and neither a `postgres` nor a `nobody` user exists; PostgreSQL refuses \
         to run as root (create a `postgres` user, e.g. via `apt-get install postgresql`)"
    )]
    NoUnprivilegedUser,

    /// A filesystem or process-spawning operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A helper program (`initdb`, `pg_ctl`) exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line, for reproducing by hand.
        command: String,
        /// Exit status as printed by the OS.
        status: String,
        /// Tail of its combined stdout/stderr.
        output: String,
    },

    /// The server did not come up.
    #[error(
        "PostgreSQL failed to start (data directory {data_dir}, {attempts} attempt(s)): \
         {detail}\n--- last lines of {log} ---\n{log_tail}"
    )]
    StartFailed {
        /// The cluster's data directory.
        data_dir: PathBuf,
        /// The server log file.
        log: PathBuf,
        /// How many ports were tried.
        attempts: u32,
        /// What `pg_ctl` said.
        detail: String,
        /// Last lines of the server log, where the real reason usually is.
        log_tail: String,
    },

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
}

impl TestPgError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

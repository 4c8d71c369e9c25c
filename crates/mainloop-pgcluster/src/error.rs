//! The one error type of this crate; each message says what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong while running a cluster.
#[derive(Debug, thiserror::Error)]
pub enum PgClusterError {
    /// No usable `initdb`/`pg_ctl`/`postgres` triple was found.
    #[error(
        "PostgreSQL server binaries not found: need `initdb`, `pg_ctl` and `postgres` in one \
         directory on PATH or under /usr/lib/postgresql/<version>/bin (install them, e.g. \
         `apt-get install postgresql`)"
    )]
    BinariesNotFound,

    /// Running as root, but there is no account to drop privileges to (initdb refuses root).
    #[error(
        "running as root and neither a `postgres` nor a `nobody` user exists; PostgreSQL refuses \
         to run as root (create a `postgres` user, e.g. via `apt-get install postgresql`)"
    )]
    NoUnprivilegedUser,

    /// The unprivileged account the server runs as cannot reach the cluster's directory.
    #[error(
        "PostgreSQL runs as uid {uid} here (it refuses root), which cannot reach {dir}: a \
         directory on the way is closed to other users (put the data directory where others \
         may pass, e.g. outside /root)"
    )]
    Unreachable {
        /// The cluster's directory.
        dir: PathBuf,
        /// The account the server would run as.
        uid: u32,
    },

    /// The cluster exists but its superuser password file is gone or empty.
    #[error(
        "the cluster's password file {path} is missing or empty; remove the cluster's directory \
         {dir} to start afresh (its databases are lost)"
    )]
    PasswordMissing {
        /// The password file.
        path: PathBuf,
        /// The cluster's directory.
        dir: PathBuf,
    },

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
        /// How many starts were tried.
        attempts: u32,
        /// What `pg_ctl` said.
        detail: String,
        /// Last lines of the server log, where the real reason usually is.
        log_tail: String,
    },

    /// Talking to the running server failed.
    #[error("could not {action}: {source}")]
    Sql {
        /// What was being attempted.
        action: String,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
}

impl PgClusterError {
    /// An [`PgClusterError::Io`] with what was being attempted.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

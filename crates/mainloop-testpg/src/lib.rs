//! Throwaway PostgreSQL for tests: a fresh, empty database per call, on a private cluster
//! started once per test process (or on the server named by `TEST_DATABASE_URL`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), mainloop_testpg::TestPgError> {
//! let url = mainloop_testpg::fresh_database_url().await?;
//! // connect with sqlx, run migrations, test away; the cluster vanishes when the process exits
//! # Ok(()) }
//! ```

mod cluster;
mod error;
mod url;

pub use error::TestPgError;

use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

/// The process-wide private cluster. Only the port is kept: every `#[tokio::test]` has its own
/// runtime, and a pool created on one runtime breaks once that runtime is gone.
static CLUSTER: OnceCell<cluster::Cluster> = OnceCell::const_new();

/// Environment variable naming an existing server to use instead of a private cluster.
const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// Returns a connection URL for a fresh, empty database, unique per call.
///
/// If `TEST_DATABASE_URL` is set (`postgres://user:pw@host:port/anydb`), creates a new database
/// `mainloop_test_<random>` on that server and returns its URL. Otherwise starts (once per
/// process, lazily, thread-safe) a private PostgreSQL cluster and creates a new database in it.
///
/// Databases are never dropped: the private cluster is deleted wholesale when the process
/// exits, and on a shared server they are left for inspection.
pub async fn fresh_database_url() -> Result<String, TestPgError> {
    let server_url = match std::env::var(TEST_DATABASE_URL) {
        Ok(url) if !url.trim().is_empty() => url,
        Ok(_) | Err(std::env::VarError::NotPresent) => private_cluster().await?.admin_url(),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(TestPgError::BadUrl {
                url: "<not UTF-8>".to_owned(),
                reason: "not valid UTF-8",
            });
        }
    };
    create_database(&server_url).await
}

/// A private cluster of one's own (not the shared one [`fresh_database_url`] uses), for
/// fault tests that restart the server without disturbing other tests.
#[derive(Debug)]
pub struct OwnCluster {
    cluster: cluster::Cluster,
}

impl OwnCluster {
    /// Starts a new cluster (removed when the process exits).
    ///
    /// # Errors
    /// When the PostgreSQL binaries are missing or the server does not start.
    pub async fn start() -> Result<Self, TestPgError> {
        let cluster = tokio::task::spawn_blocking(cluster::Cluster::start)
            .await
            .map_err(|e| TestPgError::StartTask(e.to_string()))??;
        Ok(Self { cluster })
    }

    /// A fresh, empty database on this cluster.
    ///
    /// # Errors
    /// When the database cannot be created.
    pub async fn fresh_database_url(&self) -> Result<String, TestPgError> {
        create_database(&self.cluster.admin_url()).await
    }

    /// Restarts the server: every open connection is cut; the data stays.
    ///
    /// # Errors
    /// When `pg_ctl restart` fails.
    pub async fn restart(&self) -> Result<(), TestPgError> {
        let c = &self.cluster;
        // pg_ctl blocks until the server is back; keep the runtime free meanwhile.
        tokio::task::block_in_place(|| c.restart())
    }

    /// Stops the server (fast shutdown: every open connection is cut), keeps it down for
    /// `down`, then starts it again on the same port with the same data.
    ///
    /// # Errors
    /// When `pg_ctl stop` or `pg_ctl start` fails.
    pub async fn outage(&self, down: std::time::Duration) -> Result<(), TestPgError> {
        let c = &self.cluster;
        tokio::task::block_in_place(|| c.outage(down))
    }

    /// Makes the database of `database_url` refuse writes, the way an administrator
    /// freezes one for maintenance: its sessions default to read-only transactions
    /// (`ALTER DATABASE … SET default_transaction_read_only = on`), and every open
    /// session on it is terminated, so none goes on writing with the old default.
    /// Returns how many sessions were cut.
    ///
    /// # Errors
    /// When the server cannot be reached or the statements fail.
    pub async fn refuse_writes(&self, database_url: &str) -> Result<u64, TestPgError> {
        let db = url::database(database_url)?;
        let admin = self.cluster.admin_url();
        let mut conn = admin_connection(&admin).await?;
        conn.execute(
            format!("ALTER DATABASE \"{db}\" SET default_transaction_read_only = on").as_str(),
        )
        .await
        .map_err(sql_error(&admin, &format!("make {db} read-only")))?;
        let _ = conn.close().await;
        self.terminate_sessions(database_url).await
    }

    /// Terminates every open session on the database of `database_url`
    /// (`pg_terminate_backend`), as an administrator or a connection-killing proxy
    /// would; the server stays up. Returns how many sessions were cut.
    ///
    /// # Errors
    /// When the server cannot be reached or the query fails.
    pub async fn terminate_sessions(&self, database_url: &str) -> Result<u64, TestPgError> {
        let db = url::database(database_url)?;
        let admin = self.cluster.admin_url();
        let mut conn = admin_connection(&admin).await?;
        let cut: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()) AS t",
        )
        .bind(&db)
        .fetch_one(&mut conn)
        .await
        .map_err(sql_error(
            &admin,
            &format!("terminate the sessions on {db}"),
        ))?;
        // Best effort: the server reaps the session either way.
        let _ = conn.close().await;
        Ok(u64::try_from(cut).unwrap_or(0))
    }

    /// Lets the database of `database_url` take writes again. Open sessions are left
    /// alone: those opened while writes were refused keep their read-only default until
    /// they reconnect, as on a real server.
    ///
    /// # Errors
    /// When the server cannot be reached or the statement fails.
    pub async fn allow_writes(&self, database_url: &str) -> Result<(), TestPgError> {
        let db = url::database(database_url)?;
        let admin = self.cluster.admin_url();
        let mut conn = admin_connection(&admin).await?;
        conn.execute(
            format!("ALTER DATABASE \"{db}\" RESET default_transaction_read_only").as_str(),
        )
        .await
        .map_err(sql_error(&admin, &format!("make {db} writable")))?;
        let _ = conn.close().await;
        Ok(())
    }
}

/// One integer from `sql` (a count, say) on `database_url`, for tests that check what a
/// database holds behind the code under test.
///
/// # Errors
/// When the database cannot be reached or the query fails.
pub async fn query_i64(database_url: &str, sql: &str) -> Result<i64, TestPgError> {
    let mut conn = admin_connection(database_url).await?;
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .map_err(sql_error(database_url, sql))?;
    let _ = conn.close().await;
    Ok(n)
}

async fn admin_connection(server_url: &str) -> Result<PgConnection, TestPgError> {
    PgConnection::connect(server_url)
        .await
        .map_err(sql_error(server_url, "connect"))
}

fn sql_error(server_url: &str, action: &str) -> impl FnOnce(sqlx::Error) -> TestPgError {
    let url = url::redact(server_url);
    let action = action.to_owned();
    move |source| TestPgError::Sql {
        action,
        url,
        source,
    }
}

async fn private_cluster() -> Result<&'static cluster::Cluster, TestPgError> {
    // If start fails the cell stays empty, so a later test retries and reports its own error
    // instead of every test failing with a stale one.
    CLUSTER
        .get_or_try_init(|| async {
            tokio::task::spawn_blocking(cluster::Cluster::start)
                .await
                .map_err(|e| TestPgError::StartTask(e.to_string()))?
        })
        .await
}

async fn create_database(server_url: &str) -> Result<String, TestPgError> {
    let name = format!("mainloop_test_{:032x}", rand::random::<u128>());
    // Validate the URL before connecting so a malformed one gets the clearer message.
    let db_url = url::with_database(server_url, &name)?;
    let mut conn = admin_connection(server_url).await?;
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .map_err(sql_error(server_url, &format!("create database {name}")))?;
    // Best effort: the database exists either way and the server reaps the session.
    let _ = conn.close().await;
    Ok(db_url)
}

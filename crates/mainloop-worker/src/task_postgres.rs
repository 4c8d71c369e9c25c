//! Where task databases are made: the server of `workers.task_database_url`, or else
//! mainloop's own PostgreSQL cluster under the data directory, started at the first
//! need and stopped at shutdown. Its data persists: at the next server start it is
//! started again at once when it holds a task's database (a resumed task or a preview
//! may use it before anything asks for a new one), else at the next need.

use std::path::PathBuf;
use std::sync::Arc;

use mainloop_pgcluster::{LocalCluster, PgClusterError, database_count};

use crate::environment::TaskDatabaseUrl;

/// Databases made for tasks are named `mainloop_task_<short id>` (`LIKE` pattern).
const TASK_DATABASES: &str = r"mainloop\_task\_%";

/// The source of the admin URL task databases are made with.
#[derive(Clone, Debug)]
pub enum TaskDatabaseServer {
    /// `workers.task_database_url`.
    Configured(TaskDatabaseUrl),
    /// mainloop's own cluster.
    Local(LocalPostgres),
}

impl TaskDatabaseServer {
    /// mainloop's own cluster for `data_dir` (see `LocalCluster::dir_for`), not started yet.
    #[must_use]
    pub fn local_for(data_dir: &std::path::Path) -> Self {
        Self::local(mainloop_pgcluster::LocalCluster::dir_for(data_dir))
    }

    /// mainloop's own cluster in `dir`, not started yet.
    #[must_use]
    pub fn local(dir: PathBuf) -> Self {
        Self::Local(LocalPostgres {
            inner: Arc::new(Local {
                dir,
                state: tokio::sync::Mutex::new(State::default()),
            }),
        })
    }

    /// The admin URL, starting the local cluster when it is not running. The error says
    /// why in words fit for a failed task.
    pub(crate) async fn admin_url(&self) -> Result<TaskDatabaseUrl, String> {
        match self {
            Self::Configured(url) => Ok(url.clone()),
            Self::Local(local) => local.admin_url().await,
        }
    }

    /// At server start: starts the local cluster when it holds any task's database.
    pub async fn start_if_in_use(&self) {
        if let Self::Local(local) = self {
            local.start_if_in_use().await;
        }
    }

    /// At shutdown: stops the local cluster if this process runs it.
    pub async fn stop(&self) {
        if let Self::Local(local) = self {
            local.stop().await;
        }
    }
}

/// mainloop's own cluster, shared by every clone.
#[derive(Clone)]
pub struct LocalPostgres {
    inner: Arc<Local>,
}

impl std::fmt::Debug for LocalPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPostgres")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

struct Local {
    dir: PathBuf,
    /// Held across a start, so concurrent tasks start the cluster once.
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    cluster: Option<LocalCluster>,
    /// Set at shutdown: nothing starts the cluster again in this process.
    closed: bool,
}

impl LocalPostgres {
    async fn admin_url(&self) -> Result<TaskDatabaseUrl, String> {
        let mut state = self.inner.state.lock().await;
        self.running(&mut state)
            .await
            .map(|cluster| TaskDatabaseUrl::new(cluster.admin_url().expose()))
            .map_err(|e| {
                format!(
                    "mainloop could not start its own PostgreSQL for task databases in {}: {e}. \
                     Install PostgreSQL (`initdb`, `pg_ctl` and `postgres`, e.g. `apt-get install \
                     postgresql`), or set workers.task_database_url to the admin URL of a \
                     PostgreSQL server",
                    self.inner.dir.display()
                )
            })
    }

    /// The running cluster, started (again) when it is not.
    async fn running<'a>(&self, state: &'a mut State) -> Result<&'a LocalCluster, String> {
        if state.closed {
            return Err("mainloop is shutting down".to_owned());
        }
        if !state.cluster.as_ref().is_some_and(LocalCluster::is_running) {
            let dir = self.inner.dir.clone();
            let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(&dir))
                .await
                .map_err(|e| format!("the start stopped: {e}"))?
                .map_err(|e: PgClusterError| e.to_string())?;
            tracing::info!(dir = %self.inner.dir.display(), port = cluster.port(), "PostgreSQL for task databases is running");
            state.cluster = Some(cluster);
        }
        state
            .cluster
            .as_ref()
            .ok_or_else(|| "the cluster vanished".to_owned())
    }

    async fn start_if_in_use(&self) {
        if !self.inner.dir.join("data").is_dir() {
            return;
        }
        let mut state = self.inner.state.lock().await;
        if state.closed {
            return;
        }
        let admin = match self.running(&mut state).await {
            Ok(cluster) => cluster.admin_url(),
            Err(e) => {
                tracing::warn!(error = %e, "could not start PostgreSQL for task databases");
                return;
            }
        };
        match database_count(&admin, TASK_DATABASES).await {
            Ok(0) => {
                if let Some(cluster) = state.cluster.take() {
                    stop(cluster).await;
                }
            }
            Ok(n) => tracing::info!(databases = n, "task databases kept from before"),
            Err(e) => tracing::warn!(error = %e, "could not list task databases"),
        }
    }

    async fn stop(&self) {
        let mut state = self.inner.state.lock().await;
        state.closed = true;
        if let Some(cluster) = state.cluster.take() {
            stop(cluster).await;
        }
    }
}

async fn stop(cluster: LocalCluster) {
    match tokio::task::spawn_blocking(move || cluster.stop()).await {
        Ok(Ok(())) => tracing::info!("PostgreSQL for task databases stopped"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not stop PostgreSQL for task databases"),
        Err(e) => tracing::warn!(error = %e, "stopping PostgreSQL for task databases failed"),
    }
}

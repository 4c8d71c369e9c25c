//! A launched run's environment: besides the repository's `env`, the task's ports
//! (held on this machine, so they are unique here too; in the task's pod any port is
//! free) and its database — in the task's own namespace where the launcher offers one
//! (CloudNativePG), else on the server configured for task databases — made at the
//! task's first launched run and kept for its later ones.

use std::time::{Duration, Instant};

use mainloop_domain::UserId;
use mainloop_domain::environment::{EnvSpec, TaskDatabase};
use mainloop_domain::records::Task;
use mainloop_engine::{JobError, TaskDatabaseInfo};
use mainloop_launch::{LaunchError, TaskDatabase as Offered};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::Runtime;
use crate::environment::Stop;
use crate::task::status;

/// How long a database being made in the task's namespace is waited for before this
/// attempt of the run gives up (the next one waits again; nothing is lost).
const DATABASE_WITHIN: Duration = Duration::from_secs(900);
/// How often it is looked at meanwhile.
const DATABASE_POLL: Duration = Duration::from_secs(2);

impl Runtime {
    /// The variables of a launched run's processes: the repository's `env`, then
    /// `PORT`, `PORT_1`, …, `DATABASE_URL`.
    pub(crate) async fn launched_env(
        &self,
        user: UserId,
        task: &Task,
        spec: &EnvSpec,
        cancel: &CancellationToken,
    ) -> Result<Vec<(String, String)>, Stop> {
        let engine = &self.inner.engine;
        let database = match spec.database {
            None => None,
            Some(TaskDatabase::Postgres) => match self.kept_database(task).await? {
                Some(kept) => Some(kept),
                None => Some(self.launched_database(user, task, cancel).await?),
            },
        };
        let env = engine
            .prepare_task_env(
                task.id,
                spec,
                self.inner.config.port_range.clone(),
                database,
            )
            .await?;
        Ok(env.vars)
    }

    /// The database an earlier run of the task got.
    async fn kept_database(&self, task: &Task) -> Result<Option<TaskDatabaseInfo>, Stop> {
        let engine = &self.inner.engine;
        let Some(env) = engine.task_env(task.id).await? else {
            return Ok(None);
        };
        let Some(url) = env
            .vars
            .into_iter()
            .find_map(|(k, v)| (k == "DATABASE_URL").then_some(v))
        else {
            return Ok(None);
        };
        let name = engine.task_database(task.id).await?;
        Ok(Some(TaskDatabaseInfo { name, url }))
    }

    /// The task's database in its namespace, waited for while it starts; the
    /// configured server's where the launcher offers none.
    async fn launched_database(
        &self,
        user: UserId,
        task: &Task,
        cancel: &CancellationToken,
    ) -> Result<TaskDatabaseInfo, Stop> {
        let Some(launcher) = self.launcher().cloned() else {
            return self.configured_database(user, task).await;
        };
        let since = Instant::now();
        loop {
            let why = match launcher.task_database(task.id).await {
                Ok(Offered::Ready(url)) => {
                    self.forget_waiting(task.id);
                    status(self, user, task.id, "database ready in its namespace").await;
                    return Ok(TaskDatabaseInfo {
                        name: None,
                        url: url.expose_secret().to_owned(),
                    });
                }
                Ok(Offered::NotOffered) => {
                    self.forget_waiting(task.id);
                    return self.configured_database(user, task).await;
                }
                Err(LaunchError::Refused(why)) => {
                    return Err(Stop::Fail(format!(
                        "could not make the task's database in its namespace: {why}"
                    )));
                }
                Ok(Offered::Starting(why)) | Err(LaunchError::Unavailable(why)) => why,
            };
            self.say_waiting(user, task.id, &format!("waiting for its database: {why}"))
                .await;
            if since.elapsed() > DATABASE_WITHIN {
                return Err(Stop::Retry(JobError::retry(format!(
                    "its database was not ready within {} s: {why}",
                    DATABASE_WITHIN.as_secs()
                ))));
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(Stop::Cancelled),
                () = tokio::time::sleep(DATABASE_POLL) => {}
            }
        }
    }
}

//! Task environments as the engine keeps them: the ports a task holds (free ones from
//! the configured range, each checked bindable on loopback, one task per port), the
//! variables everything run for it gets (`PORT`, `PORT_1`, …, `DATABASE_URL`), its
//! preview command, whether its setup passed, and its own database on the server
//! configured for task databases.

use std::collections::HashSet;
use std::ops::RangeInclusive;

use crate::{Engine, EngineError, Result, now};
use mainloop_domain::TaskId;
use mainloop_domain::environment::{EnvSpec, port_vars};
use mainloop_store::TaskEnvRow;

/// What everything run for a task gets from its environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskEnv {
    /// `PORT` first, then `PORT_1`, ….
    pub ports: Vec<u16>,
    /// The repository's variables, then `PORT`, `PORT_1`, …, `DATABASE_URL`.
    pub vars: Vec<(String, String)>,
    pub preview: Option<String>,
    pub setup_done: bool,
}

/// A database made for one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskDatabaseInfo {
    /// Its name on the server configured for task databases, where it is dropped when
    /// the task ends; `None` for one made elsewhere (in the task's Kubernetes
    /// namespace), which goes with that.
    pub name: Option<String>,
    /// The task's `DATABASE_URL`.
    pub url: String,
}

fn task_env(row: TaskEnvRow) -> TaskEnv {
    let mut vars = row.vars;
    vars.extend(port_vars(&row.ports));
    if let Some(url) = row.database_url {
        vars.push(("DATABASE_URL".to_owned(), url));
    }
    TaskEnv {
        ports: row.ports,
        vars,
        preview: row.preview,
        setup_done: row.setup_done,
    }
}

/// The name of task `id`'s database.
#[must_use]
pub fn task_database_name(id: TaskId) -> String {
    format!("mainloop_task_{}", id.short())
}

/// `admin_url` pointing at database `name` instead, credentials and options kept.
/// The URL of the task's database `name` as its own role (same name) with `password`:
/// the admin URL's host, port and options, none of its credentials.
fn database_url(admin_url: &str, name: &str, password: &str) -> Result<String> {
    let mut url = url::Url::parse(admin_url).map_err(|e| {
        EngineError::Invalid(format!("workers.task_database_url is not a URL: {e}"))
    })?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(EngineError::Invalid(
            "workers.task_database_url must be a postgres:// URL".to_owned(),
        ));
    }
    url.set_path(&format!("/{name}"));
    url.set_username(name)
        .and_then(|()| url.set_password(Some(password)))
        .map_err(|()| EngineError::Invalid("workers.task_database_url has no host".to_owned()))?;
    Ok(url.to_string())
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).is_ok()
}

impl Engine {
    /// The task's environment; `None` before it is prepared or once released.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn task_env(&self, task: TaskId) -> Result<Option<TaskEnv>> {
        Ok(self.store().task_env(task).await?.map(task_env))
    }

    /// The database made for the task, if any (for dropping it).
    ///
    /// # Errors
    /// On storage failure.
    pub async fn task_database(&self, task: TaskId) -> Result<Option<String>> {
        Ok(self
            .store()
            .task_env(task)
            .await?
            .and_then(|row| row.database_name))
    }

    /// Records what was prepared for the task from `spec` — its variables, preview and
    /// `database` — and makes it hold `spec.ports` ports from `range` (those it holds
    /// already are kept), setup not done yet.
    ///
    /// # Errors
    /// When the range has too few free ports, or on storage failure.
    pub async fn prepare_task_env(
        &self,
        task: TaskId,
        spec: &EnvSpec,
        range: RangeInclusive<u16>,
        database: Option<TaskDatabaseInfo>,
    ) -> Result<TaskEnv> {
        let (database_name, database_url) = database.map(|d| (d.name, d.url)).unzip();
        let database_name = database_name.flatten();
        let row = TaskEnvRow {
            vars: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            preview: spec.preview.clone(),
            database_name,
            database_url,
            setup_done: false,
            ports: Vec::new(),
        };
        let mut tx = self.store().begin().await?;
        tx.save_task_env(task, &row, now()).await?;
        tx.commit().await?;
        self.hold_ports(task, usize::from(spec.ports), range)
            .await?;
        self.task_env(task)
            .await?
            .ok_or(EngineError::NotFound("task environment"))
    }

    /// Takes free ports until the task holds `count`.
    async fn hold_ports(
        &self,
        task: TaskId,
        count: usize,
        range: RangeInclusive<u16>,
    ) -> Result<()> {
        let mut held = self.store().task_ports(task).await?.len();
        if held >= count {
            return Ok(());
        }
        let taken: HashSet<u16> = self
            .store()
            .held_ports(*range.start(), *range.end())
            .await?
            .into_iter()
            .collect();
        for port in range.clone() {
            if held == count {
                return Ok(());
            }
            // A port some other program listens on would fail the task's dev server.
            if taken.contains(&port) || !bindable(port) {
                continue;
            }
            let mut tx = self.store().begin().await?;
            let took = tx.take_task_port(task, held, port).await?;
            tx.commit().await?;
            if took {
                held += 1;
            }
        }
        if held == count {
            return Ok(());
        }
        // Not enough: none held, rather than some that fit no dev server's needs.
        let mut tx = self.store().begin().await?;
        tx.release_task_ports(task).await?;
        tx.commit().await?;
        Err(EngineError::Invalid(format!(
            "no {count} free ports in workers.port_range {}-{}: every one is held by a task or in use",
            range.start(),
            range.end()
        )))
    }

    /// Records whether the task's setup passed; a retry runs it again when it did not.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn set_task_setup_done(&self, task: TaskId, done: bool) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.set_task_setup_done(task, done, now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Frees the task's ports and forgets its environment. Its database, if any, is
    /// dropped first by [`Engine::drop_task_database`].
    ///
    /// # Errors
    /// On storage failure.
    pub async fn release_task_env(&self, task: TaskId) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.release_task_env(task).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes the task's own database on the server at `admin_url` (kept if it exists).
    ///
    /// # Errors
    /// `Invalid` with the reason when the URL is unusable or the server refuses.
    pub async fn create_task_database(
        &self,
        task: TaskId,
        admin_url: &str,
    ) -> Result<TaskDatabaseInfo> {
        let name = task_database_name(task);
        // Checked before anything is made on the server.
        database_url(admin_url, &name, "")?;
        let password = mainloop_store::environment::create_database(admin_url, &name)
            .await
            .map_err(|e| {
                EngineError::Invalid(format!(
                    "could not create database {name} on the task database server: {e}"
                ))
            })?;
        let url = database_url(admin_url, &name, &password)?;
        Ok(TaskDatabaseInfo {
            name: Some(name),
            url,
        })
    }

    /// Drops database `name` made for a task on the server at `admin_url`.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn drop_task_database(&self, admin_url: &str, name: &str) -> Result<()> {
        Ok(mainloop_store::environment::drop_database(admin_url, name).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_database_url_is_the_tasks_own_role_never_the_admin() {
        assert_eq!(
            database_url(
                "postgres://admin:secret@h:5433/postgres?sslmode=disable",
                "mainloop_task_ab",
                "0f0f"
            )
            .unwrap(),
            "postgres://mainloop_task_ab:0f0f@h:5433/mainloop_task_ab?sslmode=disable"
        );
        assert!(database_url("mysql://h/db", "x", "p").is_err());
        assert!(database_url("not a url", "x", "p").is_err());
    }

    #[test]
    fn vars_are_the_repositorys_then_ports_then_the_database() {
        let env = task_env(TaskEnvRow {
            vars: vec![("A".into(), "1".into())],
            ports: vec![20000, 20001],
            database_url: Some("postgres://h/d".into()),
            ..TaskEnvRow::default()
        });
        let names: Vec<_> = env.vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["A", "PORT", "PORT_1", "DATABASE_URL"]);
    }
}

//! Task environments: what was prepared for a task (its extra variables, preview
//! command, database, whether setup passed) in `task_env`, the ports each task holds in
//! `task_ports` (one task per port, by primary key), and making and dropping a task's
//! own database on the PostgreSQL server configured for them.

use crate::{Result, Store, StoreError, Tx, from_bool, to_bool};
use mainloop_domain::{TaskId, Timestamp};
use sqlx::Row;

/// A task's prepared environment as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskEnvRow {
    /// The repository's extra variables, in order.
    pub vars: Vec<(String, String)>,
    pub preview: Option<String>,
    pub database_name: Option<String>,
    pub database_url: Option<String>,
    pub setup_done: bool,
    /// The ports held, `PORT` first.
    pub ports: Vec<u16>,
}

fn port_of(v: i64) -> Result<u16> {
    u16::try_from(v).map_err(|_| StoreError::Corrupt(format!("port {v}")))
}

impl Store {
    /// The task's prepared environment; `None` before it is prepared or once released.
    ///
    /// # Errors
    /// On database failure.
    pub async fn task_env(&self, task: TaskId) -> Result<Option<TaskEnvRow>> {
        let Some(row) = sqlx::query(
            "SELECT vars, preview, database_name, database_url, setup_done FROM task_env WHERE task_id = $1",
        )
        .bind(task.to_string())
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let vars: Vec<(String, String)> = serde_json::from_str(&row.try_get::<String, _>("vars")?)
            .map_err(|e| StoreError::Corrupt(format!("task env vars: {e}")))?;
        Ok(Some(TaskEnvRow {
            vars,
            preview: row.try_get("preview")?,
            database_name: row.try_get("database_name")?,
            database_url: row.try_get("database_url")?,
            setup_done: to_bool(row.try_get("setup_done")?),
            ports: self.task_ports(task).await?,
        }))
    }

    /// The ports the task holds, `PORT` first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn task_ports(&self, task: TaskId) -> Result<Vec<u16>> {
        let rows = sqlx::query("SELECT port FROM task_ports WHERE task_id = $1 ORDER BY idx")
            .bind(task.to_string())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| port_of(r.try_get("port")?)).collect()
    }

    /// Every port some task holds within `lo..=hi`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn held_ports(&self, lo: u16, hi: u16) -> Result<Vec<u16>> {
        let rows = sqlx::query("SELECT port FROM task_ports WHERE port >= $1 AND port <= $2")
            .bind(i64::from(lo))
            .bind(i64::from(hi))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| port_of(r.try_get("port")?)).collect()
    }
}

impl Tx {
    /// Records the task's prepared environment (setup not done yet), replacing an
    /// earlier one; the ports are kept.
    ///
    /// # Errors
    /// On database failure.
    pub async fn save_task_env(
        &mut self,
        task: TaskId,
        env: &TaskEnvRow,
        now: Timestamp,
    ) -> Result<()> {
        let vars = serde_json::to_string(&env.vars)
            .map_err(|e| StoreError::Corrupt(format!("task env vars: {e}")))?;
        sqlx::query(
            "INSERT INTO task_env (task_id, vars, preview, database_name, database_url, setup_done, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (task_id) DO UPDATE SET vars = $2, preview = $3, database_name = $4, \
             database_url = $5, setup_done = $6, updated_at = $7",
        )
        .bind(task.to_string())
        .bind(vars)
        .bind(env.preview.as_deref())
        .bind(env.database_name.as_deref())
        .bind(env.database_url.as_deref())
        .bind(from_bool(env.setup_done))
        .bind(now.as_millis())
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Marks the task's setup as passed (or not, for a retry to run it again).
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_task_setup_done(
        &mut self,
        task: TaskId,
        done: bool,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query("UPDATE task_env SET setup_done = $2, updated_at = $3 WHERE task_id = $1")
            .bind(task.to_string())
            .bind(from_bool(done))
            .bind(now.as_millis())
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Takes `port` as the task's `idx`th; `false` when another task holds it.
    ///
    /// # Errors
    /// On database failure.
    pub async fn take_task_port(&mut self, task: TaskId, idx: usize, port: u16) -> Result<bool> {
        let idx = i64::try_from(idx).map_err(|_| StoreError::Corrupt("port index".into()))?;
        let done = sqlx::query(
            "INSERT INTO task_ports (port, task_id, idx) VALUES ($1, $2, $3) ON CONFLICT (port) DO NOTHING",
        )
        .bind(i64::from(port))
        .bind(task.to_string())
        .bind(idx)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Frees the task's ports.
    ///
    /// # Errors
    /// On database failure.
    pub async fn release_task_ports(&mut self, task: TaskId) -> Result<()> {
        sqlx::query("DELETE FROM task_ports WHERE task_id = $1")
            .bind(task.to_string())
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Frees the task's ports and forgets its environment.
    ///
    /// # Errors
    /// On database failure.
    pub async fn release_task_env(&mut self, task: TaskId) -> Result<()> {
        for table in ["task_ports", "task_env"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE task_id = $1"))
                .bind(task.to_string())
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }
}

/// Whether `name` is safe to quote as a database name mainloop made.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StoreError::Conflict(format!(
            "{name:?} is not a database name mainloop makes"
        )));
    }
    Ok(())
}

async fn admin(url: &str) -> Result<sqlx::PgConnection> {
    use sqlx::Connection;
    Ok(sqlx::PgConnection::connect(url).await?)
}

/// Creates database `name` on the server at `admin_url`, owned by a role of the same name
/// that can log in with a new random password, which is returned: the task's processes
/// get that role, never the admin's credentials. A database or role that exists already
/// (a retried preparation) is kept, and the role's password renewed.
///
/// # Errors
/// When the server cannot be reached or refuses (the admin needs `CREATEDB` and
/// `CREATEROLE`).
pub async fn create_database(admin_url: &str, name: &str) -> Result<String> {
    check_name(name)?;
    let mut conn = admin(admin_url).await?;
    // Hex only: safe inside the quoted literal a role's password must be.
    let password = uuid::Uuid::new_v4().simple().to_string();
    let role = sqlx::query(&format!(
        "CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'"
    ))
    .execute(&mut conn)
    .await;
    match role {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42710") => {
            sqlx::query(&format!(
                "ALTER ROLE \"{name}\" LOGIN PASSWORD '{password}'"
            ))
            .execute(&mut conn)
            .await?;
        }
        Err(e) => return Err(e.into()),
    }
    match sqlx::query(&format!("CREATE DATABASE \"{name}\" OWNER \"{name}\""))
        .execute(&mut conn)
        .await
    {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
        Err(e) => return Err(e.into()),
    }
    // Other roles (PUBLIC) may not connect to it.
    sqlx::query(&format!("REVOKE ALL ON DATABASE \"{name}\" FROM PUBLIC"))
        .execute(&mut conn)
        .await?;
    Ok(password)
}

/// Drops database `name` on the server at `admin_url`, ending its sessions (a preview
/// still connected), and its role; gone already is fine.
///
/// # Errors
/// When the server cannot be reached or refuses.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    check_name(name)?;
    let mut conn = admin(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("DROP ROLE IF EXISTS \"{name}\""))
        .execute(&mut conn)
        .await?;
    Ok(())
}

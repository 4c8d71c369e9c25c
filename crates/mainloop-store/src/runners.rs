//! Runners per user: each one's name, its token's hash, when it was last seen and
//! revoked, and the offer of its last accepted `hello`. Whether one is connected is not
//! stored (the engine keeps live connections in memory).

use crate::{Result, Store, StoreError, parse};
use mainloop_domain::runner::Offer;
use mainloop_domain::{RunnerId, TaskId, Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

const COLS: &str = "id, user_id, name, created_at, last_seen_at, revoked_at, version, slots, \
                    labels, agents, task_id";
const ORDER: &str = "ORDER BY created_at DESC, id DESC";

/// A runner as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerRow {
    pub id: RunnerId,
    pub user_id: UserId,
    pub name: String,
    pub created_at: Timestamp,
    pub last_seen_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// The `mainloop` version of its last accepted `hello`.
    pub version: Option<String>,
    /// The offer of its last accepted `hello`.
    pub offer: Option<Offer>,
    /// The task it is bound to: it runs that task's runs and no other's.
    pub task_id: Option<TaskId>,
}

fn json_set<T: serde::de::DeserializeOwned + Default>(
    text: Option<String>,
    what: &str,
) -> Result<T> {
    text.map_or_else(
        || Ok(T::default()),
        |t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("runner {what}: {e}")))
        },
    )
}

fn runner_from_row(row: &AnyRow) -> Result<RunnerRow> {
    let slots: Option<i64> = row.try_get("slots")?;
    let offer = match slots {
        Some(slots) => Some(Offer {
            slots: u16::try_from(slots)
                .map_err(|_| StoreError::Corrupt(format!("runner slots {slots}")))?,
            labels: json_set(row.try_get("labels")?, "labels")?,
            agents: json_set(row.try_get("agents")?, "agents")?,
        }),
        None => None,
    };
    Ok(RunnerRow {
        id: parse(&row.try_get::<String, _>("id")?, "runner id")?,
        user_id: parse(&row.try_get::<String, _>("user_id")?, "user id")?,
        name: row.try_get("name")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        last_seen_at: row
            .try_get::<Option<i64>, _>("last_seen_at")?
            .map(Timestamp::from_millis),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(Timestamp::from_millis),
        version: row.try_get("version")?,
        offer,
        task_id: row
            .try_get::<Option<String>, _>("task_id")?
            .map(|t| parse(&t, "runner task id"))
            .transpose()?,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("runner offer: {e}")))
}

impl Store {
    /// Stores a new runner. A name the user already gives a runner that is not revoked
    /// is a [`StoreError::Conflict`].
    ///
    /// # Errors
    /// That conflict; database failure.
    pub async fn insert_runner(
        &self,
        user: UserId,
        name: &str,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<RunnerRow> {
        self.insert_bound_runner(user, None, name, token_hash, now)
            .await
    }

    /// Stores a new runner bound to `task` when given (see [`RunnerRow::task_id`]).
    ///
    /// # Errors
    /// As [`Store::insert_runner`].
    pub async fn insert_bound_runner(
        &self,
        user: UserId,
        task: Option<TaskId>,
        name: &str,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<RunnerRow> {
        let id = RunnerId::new_v7(now);
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO runners (id, user_id, name, token_hash, created_at, task_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.to_string())
        .bind(user.to_string())
        .bind(name)
        .bind(token_hash)
        .bind(now.as_millis())
        .bind(task.map(|t| t.to_string()))
        .execute(tx.conn())
        .await?;
        let row = sqlx::query(&format!("SELECT {COLS} FROM runners WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(tx.conn())
            .await?;
        let runner = runner_from_row(&row)?;
        tx.commit().await?;
        Ok(runner)
    }

    /// The user's runners, revoked ones included, newest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn runners(&self, user: UserId) -> Result<Vec<RunnerRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM runners WHERE user_id = $1 {ORDER}"
        ))
        .bind(user.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(runner_from_row).collect()
    }

    /// One of the user's runners.
    ///
    /// # Errors
    /// On database failure.
    pub async fn runner(&self, user: UserId, id: RunnerId) -> Result<Option<RunnerRow>> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM runners WHERE id = $1 AND user_id = $2"
        ))
        .bind(id.to_string())
        .bind(user.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(runner_from_row).transpose()
    }

    /// The runner bound to `task` that is not revoked, if any.
    ///
    /// # Errors
    /// On database failure.
    pub async fn task_runner(&self, task: TaskId) -> Result<Option<RunnerRow>> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM runners WHERE task_id = $1 AND revoked_at IS NULL {ORDER}"
        ))
        .bind(task.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(runner_from_row).transpose()
    }

    /// Gives a runner a new token (the old one no longer authenticates).
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_runner_token(&self, id: RunnerId, token_hash: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE runners SET token_hash = $1 WHERE id = $2")
            .bind(token_hash)
            .bind(id.to_string())
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The runner whose token hashes to `token_hash`, revoked or not.
    ///
    /// # Errors
    /// On database failure.
    pub async fn runner_by_token(&self, token_hash: &str) -> Result<Option<RunnerRow>> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM runners WHERE token_hash = $1"))
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(runner_from_row).transpose()
    }

    /// Revokes one of the user's runners (a second revocation keeps the first time).
    /// `None` when the user has no such runner.
    ///
    /// # Errors
    /// On database failure.
    pub async fn revoke_runner(
        &self,
        user: UserId,
        id: RunnerId,
        now: Timestamp,
    ) -> Result<Option<RunnerRow>> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE runners SET revoked_at = $1 \
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now.as_millis())
        .bind(id.to_string())
        .bind(user.to_string())
        .execute(tx.conn())
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM runners WHERE id = $1 AND user_id = $2"
        ))
        .bind(id.to_string())
        .bind(user.to_string())
        .fetch_optional(tx.conn())
        .await?;
        let runner = row.as_ref().map(runner_from_row).transpose()?;
        tx.commit().await?;
        Ok(runner)
    }

    /// Records an accepted `hello`: its version and offer, and the runner seen now.
    /// False (and nothing written) when the runner is revoked or unknown.
    ///
    /// # Errors
    /// On database failure.
    pub async fn runner_hello(
        &self,
        id: RunnerId,
        version: &str,
        offer: &Offer,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE runners SET version = $1, slots = $2, labels = $3, agents = $4, \
             last_seen_at = $5 WHERE id = $6 AND revoked_at IS NULL",
        )
        .bind(version)
        .bind(i64::from(offer.slots))
        .bind(to_json(&offer.labels)?)
        .bind(to_json(&offer.agents)?)
        .bind(now.as_millis())
        .bind(id.to_string())
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Records that the runner was seen at `now` (never moving the time back).
    ///
    /// # Errors
    /// On database failure.
    pub async fn runner_seen(&self, id: RunnerId, now: Timestamp) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE runners SET last_seen_at = $1 \
             WHERE id = $2 AND (last_seen_at IS NULL OR last_seen_at < $1)",
        )
        .bind(now.as_millis())
        .bind(id.to_string())
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

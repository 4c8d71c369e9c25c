//! Run leases: which runner a task's run is placed on, under an epoch that grows with
//! every lease of the task, so a runner that lost the lease can be fenced off. At most
//! one row per task; a released lease keeps its row (without a runner) so that epochs
//! never repeat.

use crate::{Result, Store, parse};
use mainloop_domain::{RunnerId, TaskId, Timestamp};
use sqlx::Row;
use sqlx::any::AnyRow;

const COLS: &str = "task_id, runner_id, epoch, placed_at";

/// A task's run placed on a runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub task_id: TaskId,
    pub runner_id: RunnerId,
    /// Grows by one with each lease of the task, released ones included.
    pub epoch: i64,
    pub placed_at: Timestamp,
}

fn lease_from_row(row: &AnyRow) -> Result<Option<LeaseRow>> {
    let Some(runner) = row.try_get::<Option<String>, _>("runner_id")? else {
        return Ok(None);
    };
    Ok(Some(LeaseRow {
        task_id: parse(&row.try_get::<String, _>("task_id")?, "task id")?,
        runner_id: parse(&runner, "runner id")?,
        epoch: row.try_get("epoch")?,
        placed_at: Timestamp::from_millis(row.try_get("placed_at")?),
    }))
}

impl Store {
    /// Places the task's run on `runner`: a new lease, or the task's lease taken over
    /// from whichever runner held it. Returns the new epoch (1 for the task's first).
    ///
    /// # Errors
    /// An unknown task or runner (a foreign-key failure); database failure.
    pub async fn lease_run(&self, task: TaskId, runner: RunnerId, now: Timestamp) -> Result<i64> {
        let mut tx = self.begin().await?;
        let epoch: i64 = sqlx::query(
            "INSERT INTO run_leases (task_id, runner_id, epoch, placed_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (task_id) DO UPDATE SET runner_id = excluded.runner_id, \
             epoch = run_leases.epoch + 1, placed_at = excluded.placed_at \
             RETURNING epoch",
        )
        .bind(task.to_string())
        .bind(runner.to_string())
        .bind(now.as_millis())
        .fetch_one(tx.conn())
        .await?
        .try_get("epoch")?;
        tx.commit().await?;
        Ok(epoch)
    }

    /// Ends the task's lease if `epoch` is still the current one; false (and nothing
    /// changed) for a stale epoch or a task without a lease.
    ///
    /// # Errors
    /// On database failure.
    pub async fn release_run(&self, task: TaskId, epoch: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE run_leases SET runner_id = NULL \
             WHERE task_id = $1 AND epoch = $2 AND runner_id IS NOT NULL",
        )
        .bind(task.to_string())
        .bind(epoch)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// The task's current lease, if its run is placed on a runner.
    ///
    /// # Errors
    /// On database failure.
    pub async fn run_lease(&self, task: TaskId) -> Result<Option<LeaseRow>> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM run_leases WHERE task_id = $1"))
            .bind(task.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => lease_from_row(&row)?,
            None => None,
        })
    }

    /// The leases `runner` holds, oldest placement first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn leases_of_runner(&self, runner: RunnerId) -> Result<Vec<LeaseRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM run_leases WHERE runner_id = $1 ORDER BY placed_at, task_id"
        ))
        .bind(runner.to_string())
        .fetch_all(self.pool())
        .await?;
        let mut leases = Vec::with_capacity(rows.len());
        for row in &rows {
            leases.extend(lease_from_row(row)?);
        }
        Ok(leases)
    }
}

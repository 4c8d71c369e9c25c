//! A task's mirror on a forge: which repository, plan issue and pull request it is, and
//! the worker's bookkeeping for it (an opaque JSON document), looked up by task or, for
//! webhooks, by repository and issue or pull request number.

use crate::{Result, Store, Tx, parse};
use mainloop_domain::{TaskId, Timestamp};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A task's forge record.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskForge {
    pub task_id: TaskId,
    /// `owner/name`.
    pub repo: String,
    pub issue_number: Option<i64>,
    pub pr_number: Option<i64>,
    /// The worker's own state (comment ids, cursors, what it already posted).
    pub data: serde_json::Value,
    pub updated_at: Timestamp,
}

fn from_row(row: &AnyRow) -> Result<TaskForge> {
    let data: String = row.try_get("data")?;
    Ok(TaskForge {
        task_id: parse(&row.try_get::<String, _>("task_id")?, "task id")?,
        repo: row.try_get("repo")?,
        issue_number: row.try_get("issue_number")?,
        pr_number: row.try_get("pr_number")?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
    })
}

const COLS: &str = "task_id, repo, issue_number, pr_number, data, updated_at";

impl Tx {
    /// Creates or replaces a task's forge record.
    ///
    /// # Errors
    /// On database failure.
    pub async fn put_task_forge(&mut self, f: &TaskForge) -> Result<()> {
        sqlx::query(
            "INSERT INTO task_forge (task_id, repo, issue_number, pr_number, data, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (task_id) DO UPDATE SET repo = $2, issue_number = $3, pr_number = $4, \
             data = $5, updated_at = $6",
        )
        .bind(f.task_id.to_string())
        .bind(&f.repo)
        .bind(f.issue_number)
        .bind(f.pr_number)
        .bind(f.data.to_string())
        .bind(f.updated_at.as_millis())
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// A task's forge record, if it has one.
    ///
    /// # Errors
    /// On database failure.
    pub async fn task_forge(&self, task: TaskId) -> Result<Option<TaskForge>> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM task_forge WHERE task_id = $1"))
            .bind(task.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The tasks mirrored to an issue or pull request with this number in `repo`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn tasks_for_forge_number(&self, repo: &str, number: i64) -> Result<Vec<TaskId>> {
        let rows = sqlx::query(
            "SELECT task_id FROM task_forge WHERE repo = $1 AND (issue_number = $2 OR pr_number = $2) \
             ORDER BY task_id",
        )
        .bind(repo)
        .bind(number)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("task_id")?, "task id"))
            .collect()
    }
}

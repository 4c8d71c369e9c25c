//! The diff each task last went to review with, kept so its work stays viewable once a
//! merge has removed the worktree. One row per task, replaced on each review round.

use crate::{Result, Store, Tx};
use mainloop_domain::records::TaskDiff;
use mainloop_domain::{TaskId, Timestamp};
use sqlx::Row;

impl Tx {
    /// Stores (or replaces) the task's reviewed diff.
    ///
    /// # Errors
    /// On database failure.
    pub async fn put_task_final_diff(
        &mut self,
        task: TaskId,
        diff: &TaskDiff,
        at: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO task_final_diff (task_id, diff, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (task_id) DO UPDATE SET diff = $2, updated_at = $3",
        )
        .bind(task.to_string())
        .bind(serde_json::to_string(diff)?)
        .bind(at.as_millis())
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// The task's reviewed diff, if it reached review.
    ///
    /// # Errors
    /// On database failure or a stored diff that does not parse.
    pub async fn task_final_diff(&self, task: TaskId) -> Result<Option<TaskDiff>> {
        let row = sqlx::query("SELECT diff FROM task_final_diff WHERE task_id = $1")
            .bind(task.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>("diff")?)?))
            .transpose()
    }
}

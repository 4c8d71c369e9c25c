//! What cleaning up after finished tasks reads and writes: the tasks not yet cleaned,
//! the mark that a task's worktree and home are gone (`tasks.cleaned_at`, later than its
//! last change), how many tasks are live, kept or cleaned, and the database's size.

use crate::{Backend, Result, Store, parse};
use mainloop_domain::task::TaskState;
use mainloop_domain::{TaskId, Timestamp};
use sqlx::Row;

/// A task's state and dates as cleaning up needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFootprint {
    pub id: TaskId,
    pub state: TaskState,
    /// The task's repository as given (a path or a URL).
    pub repo: String,
    /// Its worktree, once created.
    pub worktree: Option<String>,
    pub updated_at: Timestamp,
}

/// How many tasks hold something on disk, hold little, or were cleaned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// Not yet merged, failed or cancelled.
    pub live: i64,
    /// Merged, failed or cancelled, not cleaned yet.
    pub kept: i64,
    /// Merged, failed or cancelled, and cleaned since their last change.
    pub cleaned: i64,
}

const FINISHED: &str = "('merged', 'failed', 'cancelled')";
const NOT_CLEANED: &str = "(cleaned_at IS NULL OR cleaned_at < updated_at)";

impl Store {
    /// Every task not cleaned since its last change, oldest first: the live ones and
    /// the finished ones whose worktree and home may still be on disk.
    ///
    /// # Errors
    /// On database failure.
    pub async fn uncleaned_tasks(&self) -> Result<Vec<TaskFootprint>> {
        let sql = format!(
            "SELECT id, state, repo, worktree, updated_at FROM tasks WHERE {NOT_CLEANED} \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(TaskFootprint {
                    id: parse(&row.try_get::<String, _>("id")?, "task id")?,
                    state: parse(&row.try_get::<String, _>("state")?, "task state")?,
                    repo: row.try_get("repo")?,
                    worktree: row.try_get("worktree")?,
                    updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
                })
            })
            .collect()
    }

    /// Marks task `id` cleaned at `at`, unless it changed since `seen` (its `updated_at`
    /// when it was found due): a task retried meanwhile stays uncleaned. Whether it was
    /// marked.
    ///
    /// # Errors
    /// On database failure.
    pub async fn mark_task_cleaned(
        &self,
        id: TaskId,
        seen: Timestamp,
        at: Timestamp,
    ) -> Result<bool> {
        let done =
            sqlx::query("UPDATE tasks SET cleaned_at = $1 WHERE id = $2 AND updated_at = $3")
                .bind(at.as_millis().max(seen.as_millis()))
                .bind(id.to_string())
                .bind(seen.as_millis())
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many tasks are live, kept and cleaned.
    ///
    /// # Errors
    /// On database failure.
    pub async fn task_counts(&self) -> Result<TaskCounts> {
        let sql = format!(
            "SELECT \
             COALESCE(SUM(CASE WHEN state NOT IN {FINISHED} THEN 1 ELSE 0 END), 0) AS live, \
             COALESCE(SUM(CASE WHEN state IN {FINISHED} AND {NOT_CLEANED} THEN 1 ELSE 0 END), 0) AS kept, \
             COALESCE(SUM(CASE WHEN state IN {FINISHED} AND NOT {NOT_CLEANED} THEN 1 ELSE 0 END), 0) AS cleaned \
             FROM tasks"
        );
        let row = sqlx::query(&sql).fetch_one(self.pool()).await?;
        Ok(TaskCounts {
            live: row.try_get("live")?,
            kept: row.try_get("kept")?,
            cleaned: row.try_get("cleaned")?,
        })
    }

    /// The database's size in bytes: the SQLite file's pages, or PostgreSQL's
    /// `pg_database_size` of the current database.
    ///
    /// # Errors
    /// On database failure.
    pub async fn database_bytes(&self) -> Result<i64> {
        let sql = match self.backend() {
            Backend::Sqlite => {
                "SELECT p.page_count * s.page_size AS bytes \
                 FROM pragma_page_count() AS p, pragma_page_size() AS s"
            }
            Backend::Postgres => "SELECT pg_database_size(current_database())::BIGINT AS bytes",
        };
        let row = sqlx::query(sql).fetch_one(self.pool()).await?;
        Ok(row.try_get("bytes")?)
    }
}

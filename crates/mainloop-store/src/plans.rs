//! Plan revisions: every plan a task's worker proposed, numbered from 1, each with the
//! feedback that asked for the next one.

use crate::{Result, Store, Tx};
use mainloop_domain::{TaskId, Timestamp};
use sqlx::Row;

/// One proposed plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanRevision {
    pub revision: i64,
    pub plan: String,
    /// What the user asked to change in this revision; `None` until they ask.
    pub feedback: Option<String>,
    pub created_at: Timestamp,
}

impl Tx {
    /// Records `plan` as the task's next revision and returns its number. The same text
    /// as the latest revision is that revision (a retried or replayed store is one
    /// revision, not two).
    ///
    /// # Errors
    /// On database failure.
    pub async fn record_plan_revision(
        &mut self,
        task: TaskId,
        plan: &str,
        now: Timestamp,
    ) -> Result<i64> {
        let latest = sqlx::query(
            "SELECT revision, plan FROM plan_revisions WHERE task_id = $1 \
             ORDER BY revision DESC LIMIT 1",
        )
        .bind(task.to_string())
        .fetch_optional(self.conn())
        .await?;
        let next = match latest {
            Some(row) => {
                let revision: i64 = row.try_get("revision")?;
                if row.try_get::<String, _>("plan")? == plan {
                    return Ok(revision);
                }
                revision + 1
            }
            None => 1,
        };
        sqlx::query(
            "INSERT INTO plan_revisions (task_id, revision, plan, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(task.to_string())
        .bind(next)
        .bind(plan)
        .bind(now.as_millis())
        .execute(self.conn())
        .await?;
        self.index_plan(task, next, plan, None, now).await?;
        Ok(next)
    }

    /// Records the user's request to revise the task's latest plan revision (none yet:
    /// nothing to record).
    ///
    /// # Errors
    /// On database failure.
    pub async fn record_plan_feedback(&mut self, task: TaskId, feedback: &str) -> Result<()> {
        let latest = sqlx::query(
            "SELECT revision, plan, created_at FROM plan_revisions WHERE task_id = $1 \
             ORDER BY revision DESC LIMIT 1",
        )
        .bind(task.to_string())
        .fetch_optional(self.conn())
        .await?;
        sqlx::query(
            "UPDATE plan_revisions SET feedback = $1 WHERE task_id = $2 AND revision = \
             (SELECT MAX(revision) FROM plan_revisions WHERE task_id = $2)",
        )
        .bind(feedback)
        .bind(task.to_string())
        .execute(self.conn())
        .await?;
        if let Some(row) = latest {
            let plan: String = row.try_get("plan")?;
            let at = Timestamp::from_millis(row.try_get("created_at")?);
            self.index_plan(task, row.try_get("revision")?, &plan, Some(feedback), at)
                .await?;
        }
        Ok(())
    }
}

impl Store {
    /// A task's plan revisions, oldest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn plan_revisions(&self, task: TaskId) -> Result<Vec<PlanRevision>> {
        let rows = sqlx::query(
            "SELECT revision, plan, feedback, created_at FROM plan_revisions \
             WHERE task_id = $1 ORDER BY revision",
        )
        .bind(task.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PlanRevision {
                    revision: r.try_get("revision")?,
                    plan: r.try_get("plan")?,
                    feedback: r.try_get("feedback")?,
                    created_at: Timestamp::from_millis(r.try_get("created_at")?),
                })
            })
            .collect()
    }
}

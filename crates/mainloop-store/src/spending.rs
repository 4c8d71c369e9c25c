//! Spending: each agent run's cost (`run_usage`; the main thread's turns are in
//! `turn_usage`), each user's budgets and pause, a task's own cap, the agents' quota
//! windows, and the sums the budgets and the usage report read.

use crate::{Result, Store, Tx, parse};
use mainloop_domain::agents::AgentName;
use mainloop_domain::task::TaskState;
use mainloop_domain::usage::{Budgets, PauseState, QuotaWindow, Spend, Totals};
use mainloop_domain::{TaskId, Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

/// Spending of one source on one day (days since the epoch, UTC).
#[derive(Clone, Debug, PartialEq)]
pub struct DaySpend {
    pub day: i64,
    pub source: String,
    pub totals: Totals,
}

/// One task's spending in a period.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpend {
    pub task_id: TaskId,
    pub description: String,
    pub agent: AgentName,
    pub state: TaskState,
    pub totals: Totals,
}

// PostgreSQL sums BIGINTs as NUMERIC, which the `Any` driver cannot read: every sum is
// cast.
const SUMS: &str = "CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost_usd, \
                    CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
                    CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
                    CAST(COUNT(*) AS BIGINT) AS runs";

/// Every run and main-thread turn of user `$1` since `$2`, as one relation; the main
/// thread's source is `usage::MAIN_THREAD_SOURCE`.
const SPENDING: &str = "(SELECT created_at, agent AS source, task_id, cost_usd, input_tokens, \
                        output_tokens FROM run_usage WHERE user_id = $1 AND created_at >= $2 \
                        UNION ALL \
                        SELECT created_at, 'main_thread' AS source, NULL AS task_id, \
                        COALESCE(cost_usd, 0) AS cost_usd, input_tokens, output_tokens \
                        FROM turn_usage WHERE user_id = $1 AND created_at >= $2) spending";

fn totals(row: &AnyRow) -> Result<Totals> {
    Ok(Totals {
        cost_usd: row.try_get("cost_usd")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        runs: row.try_get("runs")?,
    })
}

async fn settings(conn: &mut sqlx::AnyConnection, user: UserId) -> Result<(Budgets, PauseState)> {
    let row = sqlx::query("SELECT budgets, paused_at FROM spending WHERE user_id = $1")
        .bind(user.to_string())
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else {
        return Ok((Budgets::default(), PauseState::default()));
    };
    let budgets: String = row.try_get("budgets")?;
    let since: Option<i64> = row.try_get("paused_at")?;
    let pause = PauseState {
        paused: since.is_some(),
        since: since.map(Timestamp::from_millis),
    };
    Ok((serde_json::from_str(&budgets)?, pause))
}

impl Tx {
    /// The user's budgets and pause, as this transaction sees them.
    ///
    /// # Errors
    /// On database failure, or stored budgets that do not read.
    pub async fn spending_settings(&mut self, user: UserId) -> Result<(Budgets, PauseState)> {
        settings(self.conn(), user).await
    }

    /// Records one agent run's cost against its task's user and agent.
    ///
    /// # Errors
    /// On database failure.
    pub async fn record_run_usage(
        &mut self,
        task: TaskId,
        cost_usd: f64,
        (input_tokens, output_tokens): (i64, i64),
        at: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO run_usage (user_id, task_id, agent, cost_usd, input_tokens, \
             output_tokens, created_at) SELECT user_id, id, agent, $1, $2, $3, $4 FROM tasks \
             WHERE id = $5",
        )
        .bind(cost_usd)
        .bind(input_tokens)
        .bind(output_tokens)
        .bind(at.as_millis())
        .bind(task.to_string())
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Replaces the user's budgets.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_budgets(&mut self, user: UserId, budgets: &Budgets) -> Result<()> {
        sqlx::query(
            "INSERT INTO spending (user_id, budgets) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET budgets = excluded.budgets",
        )
        .bind(user.to_string())
        .bind(serde_json::to_string(budgets)?)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Pauses the user's work since `at`, or resumes it (`None`). A pause already on
    /// keeps its start.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_paused(&mut self, user: UserId, at: Option<Timestamp>) -> Result<()> {
        sqlx::query(
            "INSERT INTO spending (user_id, paused_at) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET paused_at = \
             CASE WHEN excluded.paused_at IS NULL THEN NULL \
             ELSE COALESCE(spending.paused_at, excluded.paused_at) END",
        )
        .bind(user.to_string())
        .bind(at.map(Timestamp::as_millis))
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Sets a task's own cost cap.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_task_budget(&mut self, task: TaskId, usd: f64) -> Result<()> {
        sqlx::query("UPDATE tasks SET budget_usd = $1 WHERE id = $2")
            .bind(usd)
            .bind(task.to_string())
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Keeps what an agent last said of each of its quota windows.
    ///
    /// # Errors
    /// On database failure.
    pub async fn record_quota(&mut self, user: UserId, windows: &[QuotaWindow]) -> Result<()> {
        for w in windows {
            sqlx::query(
                "INSERT INTO quota_windows (user_id, agent, window_name, used_percent, \
                 resets_at, limited, observed_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (user_id, agent, window_name) DO UPDATE SET \
                 used_percent = excluded.used_percent, resets_at = excluded.resets_at, \
                 limited = excluded.limited, observed_at = excluded.observed_at",
            )
            .bind(user.to_string())
            .bind(w.agent.as_str())
            .bind(&w.window)
            .bind(w.used_percent)
            .bind(w.resets_at.map(Timestamp::as_millis))
            .bind(i64::from(w.limited))
            .bind(w.observed_at.as_millis())
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }
}

impl Store {
    /// The user's budgets and pause (none and not paused until set).
    ///
    /// # Errors
    /// On database failure, or stored budgets that do not read.
    pub async fn spending_settings(&self, user: UserId) -> Result<(Budgets, PauseState)> {
        let mut conn = self.pool().acquire().await?;
        settings(&mut conn, user).await
    }

    /// The users whose work is paused.
    ///
    /// # Errors
    /// On database failure.
    pub async fn paused_users(&self) -> Result<Vec<UserId>> {
        let rows = sqlx::query("SELECT user_id FROM spending WHERE paused_at IS NOT NULL")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("user_id")?, "user id"))
            .collect()
    }

    /// A task's own cost cap, when raised.
    ///
    /// # Errors
    /// On database failure.
    pub async fn task_budget(&self, task: TaskId) -> Result<Option<f64>> {
        let row = sqlx::query("SELECT budget_usd FROM tasks WHERE id = $1")
            .bind(task.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get("budget_usd")).transpose()?.flatten())
    }

    /// What task `task` of `user`, run by `agent`, counts against: its own cost, the
    /// user's spending since `day` and `week`, and the agent's.
    ///
    /// # Errors
    /// On database failure.
    pub async fn spend(
        &self,
        user: UserId,
        task: TaskId,
        agent: &AgentName,
        (day, week): (Timestamp, Timestamp),
    ) -> Result<Spend> {
        let sum = |table: &str, agent: bool, since: u8| {
            let by_agent = if agent { " AND agent = $3" } else { "" };
            format!(
                "COALESCE((SELECT SUM(cost_usd) FROM {table} WHERE user_id = $1{by_agent} \
                 AND created_at >= ${since}), 0)"
            )
        };
        let sql = format!(
            "SELECT CAST(COALESCE((SELECT cost_usd FROM tasks WHERE id = $2), 0) \
                    AS DOUBLE PRECISION) AS task, \
                    CAST({} + {} AS DOUBLE PRECISION) AS day, \
                    CAST({} + {} AS DOUBLE PRECISION) AS week, \
                    CAST({} AS DOUBLE PRECISION) AS agent_day, \
                    CAST({} AS DOUBLE PRECISION) AS agent_week",
            sum("run_usage", false, 4),
            sum("turn_usage", false, 4),
            sum("run_usage", false, 5),
            sum("turn_usage", false, 5),
            sum("run_usage", true, 4),
            sum("run_usage", true, 5),
        );
        let row = sqlx::query(&sql)
            .bind(user.to_string())
            .bind(task.to_string())
            .bind(agent.as_str())
            .bind(day.as_millis())
            .bind(week.as_millis())
            .fetch_one(self.pool())
            .await?;
        Ok(Spend {
            task: row.try_get("task")?,
            day: row.try_get("day")?,
            week: row.try_get("week")?,
            agent_day: row.try_get("agent_day")?,
            agent_week: row.try_get("agent_week")?,
        })
    }

    /// The user's spending since `since`, by UTC day and source.
    ///
    /// # Errors
    /// On database failure.
    pub async fn spending_by_day(&self, user: UserId, since: Timestamp) -> Result<Vec<DaySpend>> {
        let rows = sqlx::query(&format!(
            "SELECT CAST(created_at / 86400000 AS BIGINT) AS day, source, {SUMS} \
             FROM {SPENDING} GROUP BY CAST(created_at / 86400000 AS BIGINT), source \
             ORDER BY day, source"
        ))
        .bind(user.to_string())
        .bind(since.as_millis())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DaySpend {
                    day: r.try_get("day")?,
                    source: r.try_get("source")?,
                    totals: totals(r)?,
                })
            })
            .collect()
    }

    /// The user's costliest tasks since `since` (at most `limit`), costliest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn costliest_tasks(
        &self,
        user: UserId,
        since: Timestamp,
        limit: i64,
    ) -> Result<Vec<TaskSpend>> {
        let rows = sqlx::query(&format!(
            "SELECT t.id AS id, t.description AS description, t.agent AS agent, \
                    t.state AS state, s.cost_usd, s.input_tokens, s.output_tokens, s.runs \
             FROM (SELECT task_id, {SUMS} FROM {SPENDING} WHERE task_id IS NOT NULL \
                   GROUP BY task_id) s \
             JOIN tasks t ON t.id = s.task_id \
             ORDER BY s.cost_usd DESC, s.input_tokens DESC LIMIT $3"
        ))
        .bind(user.to_string())
        .bind(since.as_millis())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TaskSpend {
                    task_id: parse(&r.try_get::<String, _>("id")?, "task id")?,
                    description: r.try_get("description")?,
                    agent: parse(&r.try_get::<String, _>("agent")?, "agent")?,
                    state: parse(&r.try_get::<String, _>("state")?, "task state")?,
                    totals: totals(r)?,
                })
            })
            .collect()
    }

    /// What the user's agents last said of their quota windows.
    ///
    /// # Errors
    /// On database failure.
    pub async fn quota_windows(&self, user: UserId) -> Result<Vec<QuotaWindow>> {
        let rows = sqlx::query(
            "SELECT agent, window_name, used_percent, resets_at, limited, observed_at \
             FROM quota_windows WHERE user_id = $1 ORDER BY agent, window_name",
        )
        .bind(user.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QuotaWindow {
                    agent: parse(&r.try_get::<String, _>("agent")?, "agent")?,
                    window: r.try_get("window_name")?,
                    used_percent: r.try_get("used_percent")?,
                    resets_at: r
                        .try_get::<Option<i64>, _>("resets_at")?
                        .map(Timestamp::from_millis),
                    limited: r.try_get::<i64, _>("limited")? != 0,
                    observed_at: Timestamp::from_millis(r.try_get("observed_at")?),
                })
            })
            .collect()
    }
}

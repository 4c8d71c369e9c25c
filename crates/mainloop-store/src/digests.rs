//! The temporal pyramid's records: each task's changes of state, each user's time zone,
//! the digests made (one per user, period and start date), and what one day's digest
//! reads — the messages, tasks, notes, transitions and spending of its span.

use crate::{Result, Store, Tx, from_bool, parse, to_bool};
use mainloop_domain::digest::{DayRecords, Digest, Period, Span, Transition, parse_date};
use mainloop_domain::task::TaskState;
use mainloop_domain::{DigestId, TaskId, Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::HashSet;

const COLS: &str = "id, period, start_date, end_date, time_zone, quiet, text, facts, created_at";

fn digest_from_row(row: &AnyRow) -> Result<Digest> {
    let period: Period = parse(&row.try_get::<String, _>("period")?, "digest period")?;
    let start = date(row, "start_date")?;
    let facts: String = row.try_get("facts")?;
    Ok(Digest {
        id: parse(&row.try_get::<String, _>("id")?, "digest id")?,
        period,
        start,
        end: date(row, "end_date")?,
        title: Span { period, start }.title(),
        time_zone: row.try_get("time_zone")?,
        quiet: to_bool(row.try_get("quiet")?),
        text: row.try_get("text")?,
        facts: serde_json::from_str(&facts)?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

fn date(row: &AnyRow, col: &str) -> Result<jiff::civil::Date> {
    let s: String = row.try_get(col)?;
    parse_date(&s).map_err(|e| crate::StoreError::Corrupt(format!("{col}: {e}")))
}

impl Tx {
    /// Records a task's change of state (`from`: `None` when it is created).
    pub(crate) async fn record_transition(
        &mut self,
        user: UserId,
        task: TaskId,
        from: Option<TaskState>,
        to: TaskState,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO task_transitions (task_id, user_id, from_state, to_state, at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(task.to_string())
        .bind(user.to_string())
        .bind(from.map(TaskState::as_str))
        .bind(to.as_str())
        .bind(now.as_millis())
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Stores a digest unless its span is made already; returns whether it was stored.
    /// A digest that says something is indexed for search in the same transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_digest(&mut self, user: UserId, d: &Digest) -> Result<bool> {
        let stored = sqlx::query(
            "INSERT INTO digests (id, user_id, period, start_date, end_date, time_zone, quiet, text, facts, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (user_id, period, start_date) DO NOTHING",
        )
        .bind(d.id.to_string())
        .bind(user.to_string())
        .bind(d.period.as_str())
        .bind(d.start.to_string())
        .bind(d.end.to_string())
        .bind(&d.time_zone)
        .bind(from_bool(d.quiet))
        .bind(&d.text)
        .bind(serde_json::to_string(&d.facts)?)
        .bind(d.created_at.as_millis())
        .execute(self.conn())
        .await?
        .rows_affected()
            > 0;
        if stored && !d.quiet {
            self.index_digest(user, d).await?;
        }
        Ok(stored)
    }

    /// Sets the user's time zone (`None`: the configured default).
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_time_zone(&mut self, user: UserId, zone: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE users SET time_zone = $1 WHERE id = $2")
            .bind(zone)
            .bind(user.to_string())
            .execute(self.conn())
            .await?;
        Ok(())
    }
}

impl Store {
    /// The user's own time zone, if they set one.
    ///
    /// # Errors
    /// On database failure.
    pub async fn time_zone(&self, user: UserId) -> Result<Option<String>> {
        let zone: Option<Option<String>> =
            sqlx::query_scalar("SELECT time_zone FROM users WHERE id = $1")
                .bind(user.to_string())
                .fetch_optional(self.pool())
                .await?;
        Ok(zone.flatten())
    }

    /// The spans already made for the user.
    ///
    /// # Errors
    /// On database failure.
    pub async fn made_spans(&self, user: UserId) -> Result<HashSet<Span>> {
        let rows = sqlx::query("SELECT period, start_date FROM digests WHERE user_id = $1")
            .bind(user.to_string())
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Span {
                    period: parse(&r.try_get::<String, _>("period")?, "digest period")?,
                    start: date(r, "start_date")?,
                })
            })
            .collect()
    }

    /// The user's digests of `period` (any when `None`) starting before `before` (a
    /// local date), newest first, at most `limit`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn digests(
        &self,
        user: UserId,
        period: Option<Period>,
        before: Option<jiff::civil::Date>,
        limit: u32,
    ) -> Result<Vec<Digest>> {
        let mut sql = format!("SELECT {COLS} FROM digests WHERE user_id = $1");
        let mut n = 1;
        if period.is_some() {
            n += 1;
            sql.push_str(&format!(" AND period = ${n}"));
        }
        if before.is_some() {
            n += 1;
            sql.push_str(&format!(" AND start_date < ${n}"));
        }
        sql.push_str(&format!(
            " ORDER BY start_date DESC, period DESC LIMIT {limit}"
        ));
        let mut q = sqlx::query(&sql).bind(user.to_string());
        if let Some(p) = period {
            q = q.bind(p.as_str());
        }
        if let Some(b) = before {
            q = q.bind(b.to_string());
        }
        q.fetch_all(self.pool())
            .await?
            .iter()
            .map(digest_from_row)
            .collect()
    }

    /// One of the user's digests.
    ///
    /// # Errors
    /// On database failure.
    pub async fn digest(&self, user: UserId, id: DigestId) -> Result<Option<Digest>> {
        sqlx::query(&format!(
            "SELECT {COLS} FROM digests WHERE user_id = $1 AND id = $2"
        ))
        .bind(user.to_string())
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(digest_from_row)
        .transpose()
    }

    /// The user's day digests of the days from `from` up to `to` (local dates), oldest
    /// first: what a week's or a month's digest is made of.
    ///
    /// # Errors
    /// On database failure.
    pub async fn day_digests(
        &self,
        user: UserId,
        from: jiff::civil::Date,
        to: jiff::civil::Date,
    ) -> Result<Vec<Digest>> {
        sqlx::query(&format!(
            "SELECT {COLS} FROM digests WHERE user_id = $1 AND period = 'day' \
             AND start_date >= $2 AND start_date < $3 ORDER BY start_date"
        ))
        .bind(user.to_string())
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(digest_from_row)
        .collect()
    }

    /// What happened for the user between `start` and `end`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn day_records(
        &self,
        user: UserId,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<DayRecords> {
        let u = user.to_string();
        let (s, e) = (start.as_millis(), end.as_millis());
        let mut r = DayRecords::default();
        for row in self
            .in_span(
                "SELECT id, text FROM messages WHERE user_id = $1 AND role = 'user' AND kind = 'text' \
                 AND created_at >= $2 AND created_at < $3 ORDER BY created_at, seq",
                &u,
                s,
                e,
            )
            .await?
        {
            r.asked.push((
                parse(&row.try_get::<String, _>("id")?, "message id")?,
                row.try_get("text")?,
            ));
        }
        for row in self
            .in_span(
                "SELECT id, description FROM tasks WHERE user_id = $1 \
                 AND created_at >= $2 AND created_at < $3 ORDER BY created_at, id",
                &u,
                s,
                e,
            )
            .await?
        {
            r.spawned.push((
                parse(&row.try_get::<String, _>("id")?, "task id")?,
                row.try_get("description")?,
            ));
        }
        for row in self
            .in_span(
                "SELECT id, kind, text FROM notes WHERE user_id = $1 \
                 AND created_at >= $2 AND created_at < $3 ORDER BY created_at, id",
                &u,
                s,
                e,
            )
            .await?
        {
            r.notes.push((
                parse(&row.try_get::<String, _>("id")?, "note id")?,
                parse(&row.try_get::<String, _>("kind")?, "note kind")?,
                row.try_get("text")?,
            ));
        }
        for row in self
            .in_span(
                "SELECT x.task_id, x.from_state, x.to_state, t.description, t.error \
                 FROM task_transitions x JOIN tasks t ON t.id = x.task_id \
                 WHERE x.user_id = $1 AND x.at >= $2 AND x.at < $3 AND x.from_state IS NOT NULL \
                 ORDER BY x.at, x.id",
                &u,
                s,
                e,
            )
            .await?
        {
            let from: Option<String> = row.try_get("from_state")?;
            r.transitions.push(Transition {
                task_id: parse(&row.try_get::<String, _>("task_id")?, "task id")?,
                title: row.try_get("description")?,
                from: from.map(|f| parse(&f, "task state")).transpose()?,
                to: parse(&row.try_get::<String, _>("to_state")?, "task state")?,
                error: row.try_get("error")?,
            });
        }
        r.still_open = self.open_at(&u, start, end).await?;
        r.spent_usd = self.spent_between(&u, s, e).await?;
        Ok(r)
    }

    /// The rows `sql` selects for the user between two instants (`$1`, `$2`, `$3`).
    async fn in_span(&self, sql: &str, user: &str, start: i64, end: i64) -> Result<Vec<AnyRow>> {
        Ok(sqlx::query(sql)
            .bind(user)
            .bind(start)
            .bind(end)
            .fetch_all(self.pool())
            .await?)
    }

    /// The user's tasks open at `end`, with their state then. A task whose present
    /// state is final and was reached before `start` is skipped unread.
    async fn open_at(
        &self,
        user: &str,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<Vec<(TaskId, String, TaskState)>> {
        let rows = sqlx::query(
            "SELECT t.id, t.description, \
               (SELECT x.to_state FROM task_transitions x WHERE x.task_id = t.id AND x.at < $2 \
                ORDER BY x.at DESC, x.id DESC LIMIT 1) AS state_then \
             FROM tasks t WHERE t.user_id = $1 AND t.created_at < $2 \
             AND NOT (t.state IN ('merged', 'failed', 'cancelled') AND t.updated_at < $3) \
             ORDER BY t.created_at, t.id",
        )
        .bind(user)
        .bind(end.as_millis())
        .bind(start.as_millis())
        .fetch_all(self.pool())
        .await?;
        let mut open = Vec::new();
        for row in rows {
            let Some(state) = row.try_get::<Option<String>, _>("state_then")? else {
                continue;
            };
            let state: TaskState = parse(&state, "task state")?;
            if !matches!(
                state,
                TaskState::Merged | TaskState::Failed | TaskState::Cancelled
            ) {
                open.push((
                    parse(&row.try_get::<String, _>("id")?, "task id")?,
                    row.try_get("description")?,
                    state,
                ));
            }
        }
        Ok(open)
    }

    /// What agent runs and main-thread turns cost between two instants.
    async fn spent_between(&self, user: &str, start: i64, end: i64) -> Result<f64> {
        let mut total = 0.0;
        for sql in [
            "SELECT CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) FROM run_usage WHERE user_id = $1 AND created_at >= $2 AND created_at < $3",
            "SELECT CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) FROM turn_usage WHERE user_id = $1 AND created_at >= $2 AND created_at < $3",
        ] {
            let v: f64 = sqlx::query_scalar(sql)
                .bind(user)
                .bind(start)
                .bind(end)
                .fetch_one(self.pool())
                .await?;
            total += v;
        }
        Ok(total)
    }
}

//! The main thread's bookkeeping beyond its messages: the session a provider that keeps
//! one resumes (with how far into the thread it has been told), and what each turn used.

use crate::{Result, Store, Tx};
use mainloop_domain::{MessageId, Timestamp, UserId};
use sqlx::Row;

/// A provider's session for one user's main thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MainSession {
    pub provider: String,
    pub session_id: Option<String>,
    /// The thread position of the last message the session was sent.
    pub delivered_pos: i64,
}

/// What one turn used, added to what the turn already recorded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TurnUsageRow {
    pub provider: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: Option<f64>,
}

/// A user's totals over every recorded turn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageTotals {
    pub turns: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

impl Store {
    /// The user's session with `provider`, if one was started.
    ///
    /// # Errors
    /// On database failure.
    pub async fn main_session(&self, user: UserId, provider: &str) -> Result<Option<MainSession>> {
        let row = sqlx::query(
            "SELECT provider, session_id, delivered_pos FROM main_sessions \
             WHERE user_id = $1 AND provider = $2",
        )
        .bind(user.to_string())
        .bind(provider)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(MainSession {
                provider: r.try_get("provider")?,
                session_id: r.try_get("session_id")?,
                delivered_pos: r.try_get("delivered_pos")?,
            })
        })
        .transpose()
    }

    /// The user's totals over every recorded turn.
    ///
    /// # Errors
    /// On database failure.
    pub async fn usage_totals(&self, user: UserId) -> Result<UsageTotals> {
        let row = sqlx::query(
            // PostgreSQL sums BIGINTs as NUMERIC, which the `Any` driver cannot read.
            "SELECT COUNT(*) AS turns, \
                    CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
                    CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
                    CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost_usd \
             FROM turn_usage WHERE user_id = $1",
        )
        .bind(user.to_string())
        .fetch_one(self.pool())
        .await?;
        Ok(UsageTotals {
            turns: row.try_get("turns")?,
            input_tokens: row.try_get("input_tokens")?,
            output_tokens: row.try_get("output_tokens")?,
            cost_usd: row.try_get("cost_usd")?,
        })
    }
}

impl Tx {
    /// Records the session a provider started or resumed for `user`, and how far into
    /// the thread it has been told (never backwards).
    ///
    /// # Errors
    /// On database failure.
    pub async fn put_main_session(
        &mut self,
        user: UserId,
        provider: &str,
        session_id: Option<&str>,
        delivered_pos: i64,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO main_sessions (user_id, provider, session_id, delivered_pos, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, provider) DO UPDATE SET \
                 session_id = COALESCE(excluded.session_id, main_sessions.session_id), \
                 delivered_pos = CASE WHEN excluded.delivered_pos > main_sessions.delivered_pos \
                     THEN excluded.delivered_pos ELSE main_sessions.delivered_pos END, \
                 updated_at = excluded.updated_at",
        )
        .bind(user.to_string())
        .bind(provider)
        .bind(session_id)
        .bind(delivered_pos)
        .bind(now.as_millis())
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Forgets the user's session with `provider` (it could not be resumed), keeping
    /// nothing: the next turn starts a new one and tells it the thread again.
    ///
    /// # Errors
    /// On database failure.
    pub async fn forget_main_session(&mut self, user: UserId, provider: &str) -> Result<()> {
        sqlx::query("DELETE FROM main_sessions WHERE user_id = $1 AND provider = $2")
            .bind(user.to_string())
            .bind(provider)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Adds what a model call of turn `turn` used to the turn's record.
    ///
    /// # Errors
    /// On database failure.
    pub async fn add_turn_usage(
        &mut self,
        user: UserId,
        turn: MessageId,
        usage: &TurnUsageRow,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO turn_usage (turn_id, user_id, provider, model, input_tokens, \
                 output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                 CASE WHEN $11 = 1 THEN CAST($9 AS DOUBLE PRECISION) ELSE NULL END, $10) \
             ON CONFLICT (turn_id) DO UPDATE SET \
                 provider = excluded.provider, model = excluded.model, \
                 input_tokens = turn_usage.input_tokens + excluded.input_tokens, \
                 output_tokens = turn_usage.output_tokens + excluded.output_tokens, \
                 cache_read_tokens = turn_usage.cache_read_tokens + excluded.cache_read_tokens, \
                 cache_write_tokens = turn_usage.cache_write_tokens + excluded.cache_write_tokens, \
                 cost_usd = CASE WHEN excluded.cost_usd IS NULL THEN turn_usage.cost_usd \
                     ELSE COALESCE(turn_usage.cost_usd, 0) + excluded.cost_usd END",
        )
        .bind(turn.to_string())
        .bind(user.to_string())
        .bind(&usage.provider)
        .bind(&usage.model)
        .bind(usage.input_tokens)
        .bind(usage.output_tokens)
        .bind(usage.cache_read_tokens)
        .bind(usage.cache_write_tokens)
        // A NULL float does not bind through the `Any` driver on PostgreSQL; the flag
        // says whether the figure is known.
        .bind(usage.cost_usd.unwrap_or(0.0))
        .bind(now.as_millis())
        .bind(i64::from(usage.cost_usd.is_some()))
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// What turn `turn` used so far: `(input_tokens, output_tokens, cost_usd)`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn turn_usage(&mut self, turn: MessageId) -> Result<Option<(i64, i64, Option<f64>)>> {
        let row = sqlx::query(
            "SELECT input_tokens, output_tokens, cost_usd FROM turn_usage WHERE turn_id = $1",
        )
        .bind(turn.to_string())
        .fetch_optional(self.conn())
        .await?;
        row.map(|r| {
            Ok((
                r.try_get("input_tokens")?,
                r.try_get("output_tokens")?,
                r.try_get("cost_usd")?,
            ))
        })
        .transpose()
    }
}

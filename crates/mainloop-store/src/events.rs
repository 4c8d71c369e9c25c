//! The append-only event log. Ids come from a counter row updated inside the writing
//! transaction: its row lock serialises writers, so ids are strictly increasing in
//! commit order and a reader paging by id never skips an event that commits late.

use crate::{Result, Store, Tx, parse};
use mainloop_domain::event::EventName;
use mainloop_domain::records::Event;
use mainloop_domain::{EventId, Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

fn event_from_row(row: &AnyRow) -> Result<Event> {
    let payload: String = row.try_get("payload")?;
    Ok(Event {
        id: EventId(row.try_get("id")?),
        user_id: parse(&row.try_get::<String, _>("user_id")?, "user id")?,
        name: parse(&row.try_get::<String, _>("name")?, "event name")?,
        payload: serde_json::from_str(&payload)?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

impl Tx {
    /// Appends an event to `user`'s log; subscribers hear of it after commit.
    ///
    /// # Errors
    /// On database failure.
    pub async fn append_event(
        &mut self,
        user: UserId,
        name: EventName,
        payload: &serde_json::Value,
        now: Timestamp,
    ) -> Result<EventId> {
        let id: i64 = sqlx::query_scalar(
            "UPDATE counters SET value = value + 1 WHERE name = 'event' RETURNING value",
        )
        .fetch_one(self.conn())
        .await?;
        sqlx::query(
            "INSERT INTO events (id, user_id, name, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(user.to_string())
        .bind(name.as_str())
        .bind(payload.to_string())
        .bind(now.as_millis())
        .execute(self.conn())
        .await?;
        let id = EventId(id);
        self.max_event = Some(self.max_event.map_or(id, |m| m.max(id)));
        Ok(id)
    }
}

impl Store {
    /// `user`'s events after `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn events_after(
        &self,
        user: UserId,
        after: EventId,
        limit: i64,
    ) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, user_id, name, payload, created_at FROM events \
             WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(user.to_string())
        .bind(after.0)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Every user's events after `after` (for the in-process fan-out), oldest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn all_events_after(&self, after: EventId, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, user_id, name, payload, created_at FROM events \
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.0)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The newest committed event id (0 for an empty log).
    ///
    /// # Errors
    /// On database failure.
    pub async fn latest_event_id(&self) -> Result<EventId> {
        let v: i64 = sqlx::query_scalar("SELECT value FROM counters WHERE name = 'event'")
            .fetch_one(self.pool())
            .await?;
        Ok(EventId(v))
    }

    /// Deletes `chat.delta` events older than `before`: the stored messages carry the
    /// full text, so old deltas only cost space.
    ///
    /// # Errors
    /// On database failure.
    pub async fn prune_deltas(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM events WHERE name = $1 AND created_at < $2")
            .bind(EventName::ChatDelta.as_str())
            .bind(before.as_millis())
            .execute(tx.conn())
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}

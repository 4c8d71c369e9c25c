//! Task transcripts: every normalised agent event, numbered per task.

use crate::{Result, Store, StoreError, Tx};
use mainloop_domain::records::TranscriptEntry;
use mainloop_domain::{TaskId, Timestamp};
use sqlx::Row;

impl Tx {
    /// Appends an entry to a task's transcript; returns its position.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown task; database failures.
    pub async fn append_transcript(
        &mut self,
        task: TaskId,
        kind: &str,
        payload: &serde_json::Value,
        now: Timestamp,
    ) -> Result<i64> {
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE tasks SET transcript_seq = transcript_seq + 1 WHERE id = $1 RETURNING transcript_seq",
        )
        .bind(task.to_string())
        .fetch_optional(self.conn())
        .await?;
        let seq = seq.ok_or(StoreError::NotFound("task"))?;
        sqlx::query(
            "INSERT INTO transcript (task_id, seq, kind, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(task.to_string())
        .bind(seq)
        .bind(kind)
        .bind(payload.to_string())
        .bind(now.as_millis())
        .execute(self.conn())
        .await?;
        Ok(seq)
    }
}

impl Store {
    /// Up to `limit` transcript entries of a task after position `after`, in order.
    ///
    /// # Errors
    /// On database failure.
    pub async fn transcript(
        &self,
        task: TaskId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TranscriptEntry>> {
        let rows = sqlx::query(
            "SELECT seq, kind, payload, created_at FROM transcript \
             WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(task.to_string())
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.try_get("payload")?;
                Ok(TranscriptEntry {
                    seq: r.try_get("seq")?,
                    kind: r.try_get("kind")?,
                    payload: serde_json::from_str(&payload)?,
                    created_at: Timestamp::from_millis(r.try_get("created_at")?),
                })
            })
            .collect()
    }
}

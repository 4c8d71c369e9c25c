//! Task transcripts: every normalised agent event, numbered per task, stored as its
//! kind and payload so rows written by any version read back (as `unknown` when this
//! version cannot read them).

use crate::{Result, Store, StoreError, Tx, parse};
use mainloop_domain::transcript::{TranscriptEntry, TranscriptRecord};
use mainloop_domain::{TaskId, Timestamp};
use sqlx::Row;

impl Tx {
    /// Appends a stored `(kind, payload)` to a task's transcript ([`TranscriptEntry::kind`]
    /// and [`TranscriptEntry::payload`]); returns its position.
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
        let row = sqlx::query(
            "UPDATE tasks SET transcript_seq = transcript_seq + 1 WHERE id = $1 \
             RETURNING transcript_seq, user_id, project_id",
        )
        .bind(task.to_string())
        .fetch_optional(self.conn())
        .await?;
        let row = row.ok_or(StoreError::NotFound("task"))?;
        let seq: i64 = row.try_get("transcript_seq")?;
        let owner = (
            parse(&row.try_get::<String, _>("user_id")?, "user id")?,
            parse(&row.try_get::<String, _>("project_id")?, "project id")?,
        );
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
        self.index_transcript(owner, task, seq, kind, payload, now)
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
    ) -> Result<Vec<TranscriptRecord>> {
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
                let kind: String = r.try_get("kind")?;
                let payload: String = r.try_get("payload")?;
                // A payload that is not JSON at all is kept as the text it is.
                let payload =
                    serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
                Ok(TranscriptRecord {
                    task_id: task,
                    seq: r.try_get("seq")?,
                    entry: TranscriptEntry::from_stored(&kind, payload),
                    created_at: Timestamp::from_millis(r.try_get("created_at")?),
                })
            })
            .collect()
    }
}

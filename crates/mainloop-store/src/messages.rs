//! The main thread: messages stored exactly (content blocks as JSON), the rolling
//! summary, and the record of tool calls that makes each tool's side effect run once.

use crate::{Result, Store, StoreError, Tx, from_bool, parse, to_bool};
use mainloop_domain::chat::{ContentBlock, Role, display_text};
use mainloop_domain::records::{ChatMessage, MessageKind};
use mainloop_domain::{MessageId, TaskId, Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A message to store.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub role: Role,
    pub kind: MessageKind,
    pub content: Vec<ContentBlock>,
    /// The user message whose turn this belongs to (assistant replies, tool results).
    pub turn_id: Option<MessageId>,
    pub task_id: Option<TaskId>,
}

/// The rolling summary of the oldest part of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub id: i64,
    pub text: String,
    /// Messages folded into this summary and all before it.
    pub message_count: i64,
}

const COLS: &str =
    "id, seq, thread_pos, role, kind, content, text, turn_id, task_id, summary_id, created_at";

fn message_from_row(row: &AnyRow) -> Result<ChatMessage> {
    let content: String = row.try_get("content")?;
    let kind: String = row.try_get("kind")?;
    let turn_id: Option<String> = row.try_get("turn_id")?;
    let task_id: Option<String> = row.try_get("task_id")?;
    Ok(ChatMessage {
        id: parse(&row.try_get::<String, _>("id")?, "message id")?,
        role: parse::<Role>(&row.try_get::<String, _>("role")?, "role")?,
        kind: match kind.as_str() {
            "tool_result" => MessageKind::ToolResult,
            _ => MessageKind::Text,
        },
        text: row.try_get("text")?,
        content: serde_json::from_str(&content)?,
        turn_id: turn_id.map(|t| parse(&t, "turn id")).transpose()?,
        task_id: task_id.map(|t| parse(&t, "task id")).transpose()?,
        seq: row.try_get("seq")?,
        thread_pos: row.try_get("thread_pos")?,
        summary_id: row.try_get("summary_id")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

async fn fetch_message(
    conn: &mut sqlx::AnyConnection,
    user: UserId,
    id: MessageId,
) -> Result<Option<ChatMessage>> {
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM messages WHERE user_id = $1 AND id = $2"
    ))
    .bind(user.to_string())
    .bind(id.to_string())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(message_from_row).transpose()
}

impl Tx {
    /// Stores a message. Messages of a turn sort right after the turn's user message;
    /// anything else sorts by its own sequence number.
    ///
    /// # Errors
    /// On database failure; [`StoreError::NotFound`] for an unknown user or turn.
    pub async fn insert_message(
        &mut self,
        user: UserId,
        new: &NewMessage,
        now: Timestamp,
    ) -> Result<ChatMessage> {
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET msg_seq = msg_seq + 1 WHERE id = $1 RETURNING msg_seq",
        )
        .bind(user.to_string())
        .fetch_optional(self.conn())
        .await?;
        let seq = seq.ok_or(StoreError::NotFound("user"))?;
        let thread_pos = match new.turn_id {
            Some(turn) => {
                fetch_message(self.conn(), user, turn)
                    .await?
                    .ok_or(StoreError::NotFound("turn message"))?
                    .thread_pos
            }
            None => seq,
        };
        let id = MessageId::new_v7(now);
        sqlx::query(
            "INSERT INTO messages (id, user_id, seq, thread_pos, role, kind, content, text, turn_id, task_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id.to_string())
        .bind(user.to_string())
        .bind(seq)
        .bind(thread_pos)
        .bind(new.role.as_str())
        .bind(new.kind.as_str())
        .bind(serde_json::to_string(&new.content)?)
        .bind(display_text(&new.content))
        .bind(new.turn_id.map(|t| t.to_string()))
        .bind(new.task_id.map(|t| t.to_string()))
        .bind(now.as_millis())
        .execute(self.conn())
        .await?;
        if new.kind == MessageKind::Text && matches!(new.role, Role::User | Role::Assistant) {
            let text = display_text(&new.content);
            self.index_message(user, &id.to_string(), new.task_id, &text, now)
                .await?;
        }
        fetch_message(self.conn(), user, id)
            .await?
            .ok_or(StoreError::NotFound("message"))
    }

    /// Stores a new summary and marks `folded` as summarised by it. Fails with a
    /// conflict if any of them was already summarised, so no message is folded twice.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] as above; database failures.
    pub async fn insert_summary(
        &mut self,
        user: UserId,
        text: &str,
        folded: &[MessageId],
        now: Timestamp,
    ) -> Result<Summary> {
        let previous: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(message_count), 0) FROM summaries WHERE user_id = $1",
        )
        .bind(user.to_string())
        .fetch_one(self.conn())
        .await?;
        let count = previous + i64::try_from(folded.len()).unwrap_or(i64::MAX);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO summaries (user_id, text, message_count, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(user.to_string())
        .bind(text)
        .bind(count)
        .bind(now.as_millis())
        .fetch_one(self.conn())
        .await?;
        for m in folded {
            let n = sqlx::query(
                "UPDATE messages SET summary_id = $1 WHERE user_id = $2 AND id = $3 AND summary_id IS NULL",
            )
            .bind(id)
            .bind(user.to_string())
            .bind(m.to_string())
            .execute(self.conn())
            .await?
            .rows_affected();
            if n != 1 {
                return Err(StoreError::Conflict(format!(
                    "message {m} is already summarised"
                )));
            }
        }
        Ok(Summary {
            id,
            text: text.to_owned(),
            message_count: count,
        })
    }

    /// The recorded result of `user`'s tool call, if it already ran. Another user's call
    /// under the same id is not theirs to read.
    ///
    /// # Errors
    /// On database failure.
    pub async fn tool_call(
        &mut self,
        user: UserId,
        tool_use_id: &str,
    ) -> Result<Option<(String, bool)>> {
        let row = sqlx::query(
            "SELECT result, is_error FROM tool_calls WHERE tool_use_id = $1 AND user_id = $2",
        )
        .bind(tool_use_id)
        .bind(user.to_string())
        .fetch_optional(self.conn())
        .await?;
        row.map(|r| Ok((r.try_get("result")?, to_bool(r.try_get("is_error")?))))
            .transpose()
    }

    /// Records that a tool call ran, in the transaction of its side effect.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if it was already recorded.
    pub async fn record_tool_call(
        &mut self,
        user: UserId,
        tool_use_id: &str,
        name: &str,
        result: &str,
        is_error: bool,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO tool_calls (tool_use_id, user_id, name, result, is_error, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tool_use_id)
        .bind(user.to_string())
        .bind(name)
        .bind(result)
        .bind(from_bool(is_error))
        .bind(now.as_millis())
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// One of the user's messages.
    ///
    /// # Errors
    /// On database failure.
    pub async fn message(&self, user: UserId, id: MessageId) -> Result<Option<ChatMessage>> {
        let mut conn = self.pool().acquire().await?;
        fetch_message(&mut conn, user, id).await
    }

    /// A page of the thread in display order: the `limit` messages just before `before`
    /// (or the newest), returned oldest first, and whether older ones exist.
    /// Tool-result messages are left out unless asked for.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown cursor; database failures.
    pub async fn messages_page(
        &self,
        user: UserId,
        before: Option<MessageId>,
        limit: i64,
        include_tool_results: bool,
    ) -> Result<(Vec<ChatMessage>, bool)> {
        let (pos, seq) = match before {
            Some(id) => {
                let m = self
                    .message(user, id)
                    .await?
                    .ok_or(StoreError::NotFound("message"))?;
                (m.thread_pos, m.seq)
            }
            None => (i64::MAX, i64::MAX),
        };
        let kind_filter = if include_tool_results {
            ""
        } else {
            "AND kind = 'text'"
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM messages WHERE user_id = $1 {kind_filter} \
               AND (thread_pos < $2 OR (thread_pos = $2 AND seq < $3)) \
             ORDER BY thread_pos DESC, seq DESC LIMIT $4"
        ))
        .bind(user.to_string())
        .bind(pos)
        .bind(seq)
        .bind(limit.saturating_add(1))
        .fetch_all(self.pool())
        .await?;
        let has_more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        let mut page: Vec<ChatMessage> = rows
            .iter()
            .take(usize::try_from(limit).unwrap_or(0))
            .map(message_from_row)
            .collect::<Result<_>>()?;
        page.reverse();
        Ok((page, has_more))
    }

    /// Unsummarised messages at or before thread position `up_to`, in thread order:
    /// what the model sees (after the summary) when answering the turn at `up_to`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn context_messages(&self, user: UserId, up_to: i64) -> Result<Vec<ChatMessage>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM messages WHERE user_id = $1 AND summary_id IS NULL AND thread_pos <= $2 \
             ORDER BY thread_pos, seq"
        ))
        .bind(user.to_string())
        .bind(up_to)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// The messages a turn produced so far (assistant replies and tool results), in order.
    ///
    /// # Errors
    /// On database failure.
    pub async fn turn_messages(&self, user: UserId, turn: MessageId) -> Result<Vec<ChatMessage>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM messages WHERE user_id = $1 AND turn_id = $2 ORDER BY seq"
        ))
        .bind(user.to_string())
        .bind(turn.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// The newest summary of the user's thread.
    ///
    /// # Errors
    /// On database failure.
    pub async fn latest_summary(&self, user: UserId) -> Result<Option<Summary>> {
        let row = sqlx::query(
            "SELECT id, text, message_count FROM summaries WHERE user_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(user.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(Summary {
                id: r.try_get("id")?,
                text: r.try_get("text")?,
                message_count: r.try_get("message_count")?,
            })
        })
        .transpose()
    }

    /// How many messages the user's thread holds.
    ///
    /// # Errors
    /// On database failure.
    pub async fn count_messages(&self, user: UserId) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE user_id = $1")
                .bind(user.to_string())
                .fetch_one(self.pool())
                .await?,
        )
    }
}

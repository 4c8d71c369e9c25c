//! Inbox items: opened and resolved by task transitions, read by the human.

use crate::{Result, Store, Tx, from_bool, parse, to_bool};
use mainloop_domain::inbox::{InboxKind, Priority};
use mainloop_domain::records::InboxItem;
use mainloop_domain::{InboxItemId, TaskId, Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

const COLS: &str = "id, task_id, kind, priority, title, body, created_at, read, resolved_at";

fn item_from_row(row: &AnyRow) -> Result<InboxItem> {
    let task_id: Option<String> = row.try_get("task_id")?;
    Ok(InboxItem {
        id: parse(&row.try_get::<String, _>("id")?, "inbox item id")?,
        kind: parse::<InboxKind>(&row.try_get::<String, _>("kind")?, "inbox kind")?,
        priority: Priority::from_rank(row.try_get("priority")?),
        task_id: task_id.map(|t| parse(&t, "task id")).transpose()?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        read: to_bool(row.try_get("read")?),
        resolved_at: row
            .try_get::<Option<i64>, _>("resolved_at")?
            .map(Timestamp::from_millis),
    })
}

impl Tx {
    /// Opens an inbox item.
    ///
    /// # Errors
    /// On database failure.
    pub async fn open_inbox_item(
        &mut self,
        user: UserId,
        task: Option<TaskId>,
        kind: InboxKind,
        title: &str,
        body: &str,
        now: Timestamp,
    ) -> Result<InboxItem> {
        let item = InboxItem {
            id: InboxItemId::new_v7(now),
            kind,
            priority: kind.priority(),
            task_id: task,
            title: title.to_owned(),
            body: body.to_owned(),
            created_at: now,
            read: false,
            resolved_at: None,
        };
        sqlx::query(
            "INSERT INTO inbox_items (id, user_id, task_id, kind, priority, title, body, created_at, read) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
        )
        .bind(item.id.to_string())
        .bind(user.to_string())
        .bind(task.map(|t| t.to_string()))
        .bind(kind.as_str())
        .bind(item.priority.rank())
        .bind(&item.title)
        .bind(&item.body)
        .bind(now.as_millis())
        .execute(self.conn())
        .await?;
        Ok(item)
    }

    /// Resolves every open item of a task; returns them as resolved.
    ///
    /// # Errors
    /// On database failure.
    pub async fn resolve_task_inbox(
        &mut self,
        task: TaskId,
        now: Timestamp,
    ) -> Result<Vec<InboxItem>> {
        let rows = sqlx::query(&format!(
            "UPDATE inbox_items SET resolved_at = $1 WHERE task_id = $2 AND resolved_at IS NULL \
             RETURNING {COLS}"
        ))
        .bind(now.as_millis())
        .bind(task.to_string())
        .fetch_all(self.conn())
        .await?;
        rows.iter().map(item_from_row).collect()
    }

    /// Marks one of the user's items read (or unread). `None` if it is not theirs.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_inbox_read(
        &mut self,
        user: UserId,
        id: InboxItemId,
        read: bool,
    ) -> Result<Option<InboxItem>> {
        let row = sqlx::query(&format!(
            "UPDATE inbox_items SET read = $1 WHERE id = $2 AND user_id = $3 RETURNING {COLS}"
        ))
        .bind(from_bool(read))
        .bind(id.to_string())
        .bind(user.to_string())
        .fetch_optional(self.conn())
        .await?;
        row.as_ref().map(item_from_row).transpose()
    }
}

impl Store {
    /// The user's open items, most urgent first (priority, then longest waiting),
    /// followed by up to `resolved_limit` recently resolved ones.
    ///
    /// # Errors
    /// On database failure.
    pub async fn inbox(
        &self,
        user: UserId,
        limit: i64,
        resolved_limit: i64,
    ) -> Result<Vec<InboxItem>> {
        let open = sqlx::query(&format!(
            "SELECT {COLS} FROM inbox_items WHERE user_id = $1 AND resolved_at IS NULL \
             ORDER BY priority, created_at, id LIMIT $2"
        ))
        .bind(user.to_string())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut items: Vec<InboxItem> = open.iter().map(item_from_row).collect::<Result<_>>()?;
        if resolved_limit > 0 {
            let resolved = sqlx::query(&format!(
                "SELECT {COLS} FROM inbox_items WHERE user_id = $1 AND resolved_at IS NOT NULL \
                 ORDER BY resolved_at DESC, id DESC LIMIT $2"
            ))
            .bind(user.to_string())
            .bind(resolved_limit)
            .fetch_all(self.pool())
            .await?;
            for row in &resolved {
                items.push(item_from_row(row)?);
            }
        }
        Ok(items)
    }

    /// How many open items need the user (failures excluded), counted up to `cap`: a
    /// badge needs "99+", not an exact scan of a huge backlog on every request.
    ///
    /// # Errors
    /// On database failure.
    pub async fn count_needs_you(&self, user: UserId, cap: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM inbox_items \
             WHERE user_id = $1 AND resolved_at IS NULL AND kind <> 'failed' LIMIT $2) capped",
        )
        .bind(user.to_string())
        .bind(cap)
        .fetch_one(self.pool())
        .await?)
    }
}

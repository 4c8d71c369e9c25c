//! Notes and decisions per user (the main thread's standing context), whether each is
//! folded out of the context, and what a session keeping its own context was last told
//! of them.

use crate::{Result, Store, Tx, from_bool, parse, to_bool};
use mainloop_domain::notes::{Note, NoteKind, NoteSource};
use mainloop_domain::{NoteId, Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

const COLS: &str = "id, kind, text, source, folded, created_at, updated_at";
const ORDER: &str = "ORDER BY updated_at DESC, created_at DESC, id DESC";

fn note_from_row(row: &AnyRow) -> Result<Note> {
    Ok(Note {
        id: parse(&row.try_get::<String, _>("id")?, "note id")?,
        kind: parse(&row.try_get::<String, _>("kind")?, "note kind")?,
        text: row.try_get("text")?,
        source: parse(&row.try_get::<String, _>("source")?, "note source")?,
        folded: to_bool(row.try_get("folded")?),
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
    })
}

/// A note to write.
#[derive(Clone, Copy, Debug)]
pub struct NewNote<'a> {
    pub kind: NoteKind,
    pub text: &'a str,
    pub source: NoteSource,
    /// The `remember` call writing it: a second call under the same id returns the
    /// first one's note.
    pub tool_use_id: Option<&'a str>,
}

impl Tx {
    /// Stores a note (new notes are not folded), or returns the one already stored under
    /// the same tool-use id, with whether it is new.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_note(
        &mut self,
        user: UserId,
        new: &NewNote<'_>,
        now: Timestamp,
    ) -> Result<(Note, bool)> {
        let id = NoteId::new_v7(now);
        let inserted = sqlx::query(
            "INSERT INTO notes (id, user_id, kind, text, source, tool_use_id, folded, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7) ON CONFLICT (user_id, tool_use_id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(user.to_string())
        .bind(new.kind.as_str())
        .bind(new.text)
        .bind(new.source.as_str())
        .bind(new.tool_use_id)
        .bind(now.as_millis())
        .execute(self.conn())
        .await?
        .rows_affected()
            > 0;
        let row = if inserted {
            let row = sqlx::query(&format!("SELECT {COLS} FROM notes WHERE id = $1"))
                .bind(id.to_string())
                .fetch_one(self.conn())
                .await?;
            self.index_note(user, &note_from_row(&row)?).await?;
            row
        } else {
            sqlx::query(&format!(
                "SELECT {COLS} FROM notes WHERE user_id = $1 AND tool_use_id = $2"
            ))
            .bind(user.to_string())
            .bind(new.tool_use_id)
            .fetch_one(self.conn())
            .await?
        };
        Ok((note_from_row(&row)?, inserted))
    }

    /// Rewrites one of the user's notes, which makes it the most recently edited.
    /// `None` when the user has no such note.
    ///
    /// # Errors
    /// On database failure.
    pub async fn update_note(
        &mut self,
        user: UserId,
        id: NoteId,
        kind: NoteKind,
        text: &str,
        now: Timestamp,
    ) -> Result<Option<Note>> {
        let changed = sqlx::query(
            "UPDATE notes SET kind = $1, text = $2, updated_at = $3 WHERE id = $4 AND user_id = $5",
        )
        .bind(kind.as_str())
        .bind(text)
        .bind(now.as_millis())
        .bind(id.to_string())
        .bind(user.to_string())
        .execute(self.conn())
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        let row = sqlx::query(&format!("SELECT {COLS} FROM notes WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(self.conn())
            .await?;
        let note = note_from_row(&row)?;
        self.index_note(user, &note).await?;
        Ok(Some(note))
    }

    /// Deletes one of the user's notes; false when the user has no such note.
    ///
    /// # Errors
    /// On database failure.
    pub async fn delete_note(&mut self, user: UserId, id: NoteId) -> Result<bool> {
        let gone = sqlx::query("DELETE FROM notes WHERE id = $1 AND user_id = $2")
            .bind(id.to_string())
            .bind(user.to_string())
            .execute(self.conn())
            .await?
            .rows_affected();
        if gone > 0 {
            self.unindex_note(id).await?;
        }
        Ok(gone > 0)
    }

    /// The user's notes, most recently written or edited first, as this transaction sees
    /// them.
    ///
    /// # Errors
    /// On database failure.
    pub async fn notes(&mut self, user: UserId) -> Result<Vec<Note>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM notes WHERE user_id = $1 {ORDER}"
        ))
        .bind(user.to_string())
        .fetch_all(self.conn())
        .await?;
        rows.iter().map(note_from_row).collect()
    }

    /// Marks the user's notes `ids` folded or not.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_notes_folded(
        &mut self,
        user: UserId,
        ids: &[NoteId],
        folded: bool,
    ) -> Result<()> {
        for id in ids {
            sqlx::query("UPDATE notes SET folded = $1 WHERE id = $2 AND user_id = $3")
                .bind(from_bool(folded))
                .bind(id.to_string())
                .bind(user.to_string())
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    /// Records the notes section the user's session with `provider` has now been told.
    ///
    /// # Errors
    /// On database failure.
    pub async fn put_notes_told(
        &mut self,
        user: UserId,
        provider: &str,
        notes: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO notes_told (user_id, provider, notes) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, provider) DO UPDATE SET notes = excluded.notes",
        )
        .bind(user.to_string())
        .bind(provider)
        .bind(notes)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// The user's notes, most recently written or edited first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn notes(&self, user: UserId) -> Result<Vec<Note>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM notes WHERE user_id = $1 {ORDER}"
        ))
        .bind(user.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(note_from_row).collect()
    }

    /// The notes section the user's session with `provider` was last told, if any.
    ///
    /// # Errors
    /// On database failure.
    pub async fn notes_told(&self, user: UserId, provider: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT notes FROM notes_told WHERE user_id = $1 AND provider = $2")
                .bind(user.to_string())
                .bind(provider)
                .fetch_optional(self.pool())
                .await?,
        )
    }
}

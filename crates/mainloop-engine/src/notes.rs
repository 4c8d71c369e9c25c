//! Notes and decisions: the user's edits, the main thread's `remember`, which notes fit
//! in the context (folding the rest, and telling the user once per fold), and what the
//! model is given of them — a `<notes>` section of the system prompt, or for a session
//! that keeps its own context, the notes said in a turn's message when they changed.

use crate::tasks::post_event_message;
use crate::{Engine, EngineError, Result, now};
use mainloop_domain::event::EventName;
use mainloop_domain::notes::{
    Note, NoteKind, NoteSource, fit, fold_notice, note_text, refold, remembered_line, render,
    session_update,
};
use mainloop_domain::{NoteId, Timestamp, UserId};
use mainloop_store::{NewNote, Tx};
use serde_json::{Value, json};

impl Engine {
    /// The user's notes, most recently written or edited first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn notes(&self, user: UserId) -> Result<Vec<Note>> {
        Ok(self.store().notes(user).await?)
    }

    /// Adds a note of the user's own.
    ///
    /// # Errors
    /// Empty, oversized or NUL-carrying text; storage failures.
    pub async fn add_note(&self, user: UserId, kind: NoteKind, text: &str) -> Result<Note> {
        let text = note_text(text).map_err(EngineError::Invalid)?;
        let at = now();
        let mut tx = self.store().begin().await?;
        let new = NewNote {
            kind,
            text: &text,
            source: NoteSource::User,
            tool_use_id: None,
        };
        let (note, _) = tx.insert_note(user, &new, at).await?;
        let note = settle(&mut tx, self, user, note.id, at).await?;
        tx.commit().await?;
        note.ok_or(EngineError::NotFound("note"))
    }

    /// Rewrites one of the user's notes; it becomes the most recently edited.
    ///
    /// # Errors
    /// Another user's or an unknown note; bad text; storage failures.
    pub async fn edit_note(
        &self,
        user: UserId,
        id: NoteId,
        kind: NoteKind,
        text: &str,
    ) -> Result<Note> {
        let text = note_text(text).map_err(EngineError::Invalid)?;
        let at = now();
        let mut tx = self.store().begin().await?;
        if tx.update_note(user, id, kind, &text, at).await?.is_none() {
            return Err(EngineError::NotFound("note"));
        }
        let note = settle(&mut tx, self, user, id, at).await?;
        tx.commit().await?;
        note.ok_or(EngineError::NotFound("note"))
    }

    /// Deletes one of the user's notes.
    ///
    /// # Errors
    /// Another user's or an unknown note; storage failures.
    pub async fn delete_note(&self, user: UserId, id: NoteId) -> Result<()> {
        let at = now();
        let mut tx = self.store().begin().await?;
        if !tx.delete_note(user, id).await? {
            return Err(EngineError::NotFound("note"));
        }
        settle(&mut tx, self, user, id, at).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// After a change to the user's notes: folds or unfolds them to fit the budget (telling
/// the user of a new fold in the chat) and sends the list as `notes.updated`. Returns the
/// note `id` as it now is.
async fn settle(
    tx: &mut Tx,
    engine: &Engine,
    user: UserId,
    id: NoteId,
    at: Timestamp,
) -> Result<Option<Note>> {
    let notes = refresh(tx, engine, user, at).await?;
    let list = serde_json::to_value(&notes).map_err(|e| EngineError::Internal(e.to_string()))?;
    tx.append_event(user, EventName::NotesUpdated, &json!({"notes": list}), at)
        .await?;
    Ok(notes.into_iter().find(|n| n.id == id))
}

/// Brings the stored `folded` flags in line with the budget; a new fold is told in the
/// chat, once (the flags it sets are what makes it known). Returns the notes as stored.
async fn refresh(tx: &mut Tx, engine: &Engine, user: UserId, at: Timestamp) -> Result<Vec<Note>> {
    let mut notes = tx.notes(user).await?;
    let change = refold(&notes, engine.config().notes_budget_tokens);
    if change.is_empty() {
        return Ok(notes);
    }
    tx.set_notes_folded(user, &change.newly_folded, true)
        .await?;
    tx.set_notes_folded(user, &change.unfolded, false).await?;
    for note in &mut notes {
        if change.newly_folded.contains(&note.id) {
            note.folded = true;
        } else if change.unfolded.contains(&note.id) {
            note.folded = false;
        }
    }
    if !change.newly_folded.is_empty() {
        let folded: Vec<&Note> = notes
            .iter()
            .filter(|n| change.newly_folded.contains(&n.id))
            .collect();
        post_event_message(tx, user, None, fold_notice(&folded), at).await?;
    }
    Ok(notes)
}

/// The `remember` tool: stores the note under the call's id (a repeated call returns the
/// first one's note), says so in the chat, and tells the model what it kept.
pub(crate) async fn remember_in(
    tx: &mut Tx,
    engine: &Engine,
    user: UserId,
    tool_use_id: &str,
    kind: &str,
    text: &str,
    at: Timestamp,
) -> Result<std::result::Result<Value, String>> {
    let kind: NoteKind = match kind.parse() {
        Ok(k) => k,
        Err(e) => return Ok(Err(e)),
    };
    let text = match note_text(text) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let new = NewNote {
        kind,
        text: &text,
        source: NoteSource::MainThread,
        tool_use_id: Some(tool_use_id),
    };
    let (note, inserted) = tx.insert_note(user, &new, at).await?;
    let mut folded = note.folded;
    if inserted {
        post_event_message(tx, user, None, remembered_line(&note), at).await?;
        folded = settle(tx, engine, user, note.id, at)
            .await?
            .is_some_and(|n| n.folded);
    }
    Ok(Ok(json!({
        "remembered": {"id": note.id, "kind": note.kind, "text": note.text},
        "in_context": !folded,
    })))
}

/// The `<notes>` section of the user's context now (folding what no longer fits first),
/// or `None` without notes to send.
pub(crate) async fn context_notes(engine: &Engine, user: UserId) -> Result<Option<String>> {
    let budget = engine.config().notes_budget_tokens;
    let mut notes = engine.store().notes(user).await?;
    if !refold(&notes, budget).is_empty() {
        // The budget changed (a new configuration) since the notes were last written.
        let at = now();
        let mut tx = engine.store().begin().await?;
        notes = refresh(&mut tx, engine, user, at).await?;
        let list =
            serde_json::to_value(&notes).map_err(|e| EngineError::Internal(e.to_string()))?;
        tx.append_event(user, EventName::NotesUpdated, &json!({"notes": list}), at)
            .await?;
        tx.commit().await?;
    }
    let (sent, _) = fit(&notes, budget);
    Ok(render(&sent))
}

/// What a session keeping its own context is told of the notes in this turn's message:
/// `Some((words to say, section to record as told))` when they changed since it was last
/// told — or always for a new session with notes.
pub(crate) async fn session_notes(
    engine: &Engine,
    user: UserId,
    provider: &str,
    new_session: bool,
) -> Result<Option<(String, String)>> {
    let section = context_notes(engine, user).await?;
    session_told(engine, user, provider, new_session, section, session_update).await
}

/// What a session keeping its own context is told of `section` (one part of the context,
/// recorded as told under `key`): `say(section)` when it differs from what was told.
pub(crate) async fn session_told(
    engine: &Engine,
    user: UserId,
    key: &str,
    new_session: bool,
    section: Option<String>,
    say: fn(Option<&str>) -> String,
) -> Result<Option<(String, String)>> {
    let current = section.clone().unwrap_or_default();
    let told = if new_session {
        String::new()
    } else {
        engine
            .store()
            .notes_told(user, key)
            .await?
            .unwrap_or_default()
    };
    if current == told {
        return Ok(None);
    }
    Ok(Some((say(section.as_deref()), current)))
}

/// Records that the user's session with `provider` has been told `section`.
pub(crate) async fn told_notes(
    engine: &Engine,
    user: UserId,
    provider: &str,
    section: &str,
) -> Result<()> {
    let mut tx = engine.store().begin().await?;
    tx.put_notes_told(user, provider, section).await?;
    tx.commit().await?;
    Ok(())
}

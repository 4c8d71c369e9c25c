//! Notes and decisions: standing context of the main thread. A note's shape, what input
//! makes one, which notes fit the context's budget (the most recently written or edited
//! first; the oldest fold first), and the words the model and the user read about them.

use crate::{NoteId, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// The longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

/// What a note records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// Something true about the user, their work or their preferences.
    Fact,
    /// Something decided, to be kept to.
    Decision,
}

impl NoteKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fact => "fact",
            Self::Decision => "decision",
        }
    }
}

impl fmt::Display for NoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NoteKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fact" => Ok(Self::Fact),
            "decision" => Ok(Self::Decision),
            other => Err(format!(
                "unknown note kind '{}' (fact or decision)",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}

/// Who wrote a note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoteSource {
    /// The user, in the web app or through the API.
    User,
    /// The main thread's model, with its `remember` tool.
    MainThread,
}

impl NoteSource {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::MainThread => "main_thread",
        }
    }
}

impl FromStr for NoteSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Self::User),
            "main_thread" => Ok(Self::MainThread),
            other => Err(format!("unknown note source '{other}'")),
        }
    }
}

/// A note or decision kept for the main thread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Note {
    pub id: NoteId,
    pub kind: NoteKind,
    /// At most [`MAX_NOTE_CHARS`] characters.
    pub text: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub source: NoteSource,
    /// No longer in the model's context: newer notes filled the budget. Kept, listed and
    /// searchable; editing it makes it the newest again.
    pub folded: bool,
}

/// A note's text as stored, or why it cannot be one.
///
/// # Errors
/// Empty, longer than [`MAX_NOTE_CHARS`], or containing NUL.
pub fn note_text(raw: &str) -> Result<String, String> {
    if raw.contains('\0') {
        return Err("text must not contain NUL characters".into());
    }
    let text = raw.trim();
    if text.is_empty() {
        return Err("text must not be empty".into());
    }
    if text.chars().count() > MAX_NOTE_CHARS {
        return Err(format!("text is longer than {MAX_NOTE_CHARS} characters"));
    }
    Ok(text.to_owned())
}

/// A note as the model reads it: one item of the `<notes>` list.
#[must_use]
pub fn note_line(note: &Note) -> String {
    let day = note.updated_at.to_rfc3339();
    let day = day.get(..10).unwrap_or(&day);
    format!(
        "- [{} {day}] {}",
        note.kind,
        note.text.replace('\n', "\n  ")
    )
}

/// A note's share of the context, in tokens (about four characters each, as the rest
/// of the context is estimated).
#[must_use]
pub fn note_tokens(note: &Note) -> usize {
    note_line(note).chars().count().div_ceil(4) + 1
}

/// Most recently written or edited first.
fn newest_first(a: &Note, b: &Note) -> std::cmp::Ordering {
    b.updated_at
        .cmp(&a.updated_at)
        .then(b.created_at.cmp(&a.created_at))
        .then(b.id.cmp(&a.id))
}

/// Which notes the context carries within `budget` tokens: the most recently written or
/// edited first, until one does not fit; that one and every older one fold. Returns the
/// notes sent, newest first, and the ids of those folded.
#[must_use]
pub fn fit(notes: &[Note], budget: usize) -> (Vec<&Note>, Vec<NoteId>) {
    let mut ordered: Vec<&Note> = notes.iter().collect();
    ordered.sort_by(|a, b| newest_first(a, b));
    let mut used = 0;
    let mut sent = Vec::new();
    let mut folded = Vec::new();
    for note in ordered {
        let cost = note_tokens(note);
        if folded.is_empty() && used + cost <= budget {
            used += cost;
            sent.push(note);
        } else {
            folded.push(note.id);
        }
    }
    (sent, folded)
}

/// How the stored `folded` flags must change for `notes` to match [`fit`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refold {
    /// Now folded, and not before: the user is told about these.
    pub newly_folded: Vec<NoteId>,
    /// Back in the context (room was made).
    pub unfolded: Vec<NoteId>,
}

impl Refold {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.newly_folded.is_empty() && self.unfolded.is_empty()
    }
}

/// The change to the stored flags that [`fit`] asks for.
#[must_use]
pub fn refold(notes: &[Note], budget: usize) -> Refold {
    let (_, folded) = fit(notes, budget);
    let mut change = Refold::default();
    for note in notes {
        let fold = folded.contains(&note.id);
        if fold && !note.folded {
            change.newly_folded.push(note.id);
        } else if !fold && note.folded {
            change.unfolded.push(note.id);
        }
    }
    change
}

/// The first words of a note, for a one-line mention.
fn preview(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut out: String = line.chars().take(60).collect();
    if line.chars().count() > 60 || text.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

/// What the user is told in the chat when notes fold.
#[must_use]
pub fn fold_notice(folded: &[&Note]) -> String {
    let n = folded.len();
    let what = if n == 1 {
        "1 older note no longer fits".to_owned()
    } else {
        format!("{n} older notes no longer fit")
    };
    let list: Vec<String> = folded
        .iter()
        .take(5)
        .map(|note| format!("\"{}\"", preview(&note.text)))
        .collect();
    let more = if n > 5 {
        format!(" and {} more", n - 5)
    } else {
        String::new()
    };
    format!(
        "{what} in the context: {}{more}; edit or delete notes to make room",
        list.join(", ")
    )
}

/// What the user is told in the chat when the main thread remembers something.
#[must_use]
pub fn remembered_line(note: &Note) -> String {
    format!("Remembered ({}): {}", note.kind, note.text)
}

/// The `<notes>` section the model reads (notes newest first), or nothing without notes.
#[must_use]
pub fn render(sent: &[&Note]) -> Option<String> {
    if sent.is_empty() {
        return None;
    }
    let lines: Vec<String> = sent.iter().map(|n| note_line(n)).collect();
    Some(format!(
        "<notes>\nNotes and decisions kept for this user (newest first; the user sees and \
         edits them; add one with remember):\n{}\n</notes>",
        lines.join("\n")
    ))
}

/// What a session that keeps its own context is told when the notes changed since it was
/// last told (`section`: [`render`]'s output, `None` when no notes are left).
#[must_use]
pub fn session_update(section: Option<&str>) -> String {
    match section {
        Some(s) => format!(
            "[mainloop: the notes and decisions kept for this user are now as follows; they \
             replace any you were told before.]\n{s}"
        ),
        None => "[mainloop: no notes or decisions are kept for this user any more.]".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(n: u8, text: &str, updated: i64) -> Note {
        Note {
            id: NoteId(uuid::Uuid::from_u128(u128::from(n))),
            kind: NoteKind::Decision,
            text: text.to_owned(),
            created_at: Timestamp::from_millis(1_000),
            updated_at: Timestamp::from_millis(updated),
            source: NoteSource::User,
            folded: false,
        }
    }

    #[test]
    fn text_is_checked() {
        assert_eq!(note_text("  keep it  ").unwrap(), "keep it");
        assert!(note_text(" \n ").is_err());
        assert!(note_text("a\0b").unwrap_err().contains("NUL"));
        assert!(note_text(&"x".repeat(MAX_NOTE_CHARS)).is_ok());
        assert!(note_text(&"é".repeat(MAX_NOTE_CHARS + 1)).is_err());
        assert!("rule".parse::<NoteKind>().is_err());
        assert_eq!("decision".parse::<NoteKind>(), Ok(NoteKind::Decision));
    }

    #[test]
    fn newest_and_latest_edited_are_sent_and_the_oldest_fold() {
        let notes = vec![
            note(1, &"a".repeat(40), 1_000),
            note(2, &"b".repeat(40), 5_000),
            note(3, &"c".repeat(40), 3_000),
        ];
        let one = note_tokens(&notes[0]);
        let (sent, folded) = fit(&notes, one * 2);
        assert_eq!(
            sent.iter().map(|n| n.id).collect::<Vec<_>>(),
            [notes[1].id, notes[2].id]
        );
        assert_eq!(folded, [notes[0].id]);
        let (sent, folded) = fit(&notes, one * 3);
        assert_eq!(sent.len(), 3);
        assert!(folded.is_empty());
        let (sent, folded) = fit(&notes, 0);
        assert!(sent.is_empty());
        assert_eq!(folded.len(), 3);
    }

    #[test]
    fn a_small_old_note_does_not_skip_ahead_of_a_large_newer_one() {
        let notes = vec![note(1, "tiny", 1_000), note(2, &"b".repeat(400), 2_000)];
        let (sent, folded) = fit(&notes, 20);
        assert!(sent.is_empty());
        assert_eq!(folded, [notes[1].id, notes[0].id]);
    }

    #[test]
    fn refold_names_only_changes() {
        let mut notes = vec![note(1, &"a".repeat(40), 1_000), note(2, "b", 2_000)];
        let budget = note_tokens(&notes[1]);
        let change = refold(&notes, budget);
        assert_eq!(change.newly_folded, [notes[0].id]);
        assert!(change.unfolded.is_empty());
        notes[0].folded = true;
        assert!(refold(&notes, budget).is_empty());
        assert_eq!(refold(&notes, 10_000).unfolded, [notes[0].id]);
    }

    #[test]
    fn words_for_the_user_and_the_model() {
        let a = note(1, "Use PostgreSQL for billing\nbecause of JSONB", 1_000);
        let b = note(2, "Tabs", 2_000);
        assert_eq!(
            fold_notice(&[&a, &b]),
            "2 older notes no longer fit in the context: \"Use PostgreSQL for billing…\", \
             \"Tabs\"; edit or delete notes to make room"
        );
        assert!(fold_notice(&[&b]).starts_with("1 older note no longer fits"));
        let section = render(&[&b, &a]).unwrap();
        assert!(section.starts_with("<notes>\n"));
        assert!(section.contains("- [decision 1970-01-01] Tabs\n- [decision"));
        assert!(section.contains("billing\n  because"));
        assert!(section.ends_with("</notes>"));
        assert_eq!(render(&[]), None);
        assert_eq!(remembered_line(&b), "Remembered (decision): Tabs");
        assert!(session_update(None).contains("no notes"));
    }
}

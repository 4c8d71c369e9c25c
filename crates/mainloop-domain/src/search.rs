//! Searching the user's history: what can be found (kinds), a query as the user typed it
//! turned into terms every database reads the same way, and the shape of a hit.

use crate::{ProjectId, TaskId, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// What a hit is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SearchKind {
    /// A message of the main thread (the user's or the assistant's).
    Message,
    /// A task's description.
    Task,
    /// A task's questions and the answers given.
    Question,
    /// A plan a task proposed (every revision), with the feedback that asked for the next.
    Plan,
    /// What a worker's agent said or did (its transcript).
    Transcript,
    /// Feedback a review gave a task's work.
    Review,
    /// A note or decision kept for the main thread.
    Note,
    /// A day's, week's or month's digest.
    Digest,
}

impl SearchKind {
    pub const ALL: [Self; 8] = [
        Self::Message,
        Self::Task,
        Self::Question,
        Self::Plan,
        Self::Transcript,
        Self::Review,
        Self::Note,
        Self::Digest,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Task => "task",
            Self::Question => "question",
            Self::Plan => "plan",
            Self::Transcript => "transcript",
            Self::Review => "review",
            Self::Note => "note",
            Self::Digest => "digest",
        }
    }
}

impl fmt::Display for SearchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SearchKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind '{s}'"))
    }
}

/// The longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 500;
/// The most terms a query keeps; later ones are dropped.
pub const MAX_TERMS: usize = 16;
/// The most hits one search returns.
pub const MAX_LIMIT: u32 = 100;

/// A search, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchQuery {
    /// The words to find: every one must occur (the last, from three characters on, as
    /// a prefix, so that results come as the user types). Only letters, digits and `_` survive; the rest
    /// separates words, so no query is database syntax.
    pub terms: Vec<String>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<SearchKind>,
    pub project: Option<ProjectId>,
    pub task: Option<TaskId>,
    /// Created at or after.
    pub from: Option<Timestamp>,
    /// Created before.
    pub to: Option<Timestamp>,
    pub limit: u32,
}

/// A query that cannot be searched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadQuery {
    #[error("q must not be empty: give a word to search for")]
    Empty,
    #[error("q must be at most 500 characters")]
    TooLong,
    #[error("q must not contain NUL characters")]
    Nul,
}

/// The words of `q`, lowercased, in order, at most [`MAX_TERMS`].
///
/// # Errors
/// An empty (or punctuation-only) query, a NUL, or one longer than [`MAX_QUERY_CHARS`].
pub fn terms(q: &str) -> Result<Vec<String>, BadQuery> {
    if q.contains('\0') {
        return Err(BadQuery::Nul);
    }
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(BadQuery::TooLong);
    }
    let terms: Vec<String> = q
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .take(MAX_TERMS)
        .collect();
    if terms.is_empty() {
        Err(BadQuery::Empty)
    } else {
        Ok(terms)
    }
}

/// One hit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    pub kind: SearchKind,
    /// The hit's own id: a message's, a task's, a note's or a digest's; for a question,
    /// plan, transcript entry or review, its task's id with its position
    /// (`<task id>:<n>`).
    pub id: String,
    /// The task it belongs to, if any (the link opens the task).
    pub task_id: Option<TaskId>,
    /// What it is, in a line: the task's description, "You", "mainloop", a digest's
    /// period, a note's first line.
    pub title: String,
    /// The text around the match, plain text.
    pub snippet: String,
    /// Where in `snippet` the matched words are: `[start, end)` character offsets.
    pub highlights: Vec<[u32; 2]>,
    pub created_at: Timestamp,
}

/// `GET /api/search`'s reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchResults {
    /// Best first.
    pub results: Vec<SearchHit>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_only_words_whatever_it_holds() {
        assert_eq!(terms("Auth refactor?").unwrap(), ["auth", "refactor"]);
        assert_eq!(
            terms(r#""billing" AND NOT code* OR (x:y) NEAR/2 -z ^w"#).unwrap(),
            [
                "billing", "and", "not", "code", "or", "x", "y", "near", "2", "z", "w"
            ]
        );
        assert_eq!(terms("Größe über_all").unwrap(), ["größe", "über_all"]);
        assert_eq!(terms("\"'*()").unwrap_err(), BadQuery::Empty);
        assert_eq!(terms("   ").unwrap_err(), BadQuery::Empty);
        assert_eq!(terms("a\0b").unwrap_err(), BadQuery::Nul);
        assert_eq!(terms(&"x".repeat(501)).unwrap_err(), BadQuery::TooLong);
        assert_eq!(terms(&"w ".repeat(40)).unwrap().len(), MAX_TERMS);
    }

    #[test]
    fn kinds_round_trip() {
        for k in SearchKind::ALL {
            assert_eq!(k.as_str().parse::<SearchKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}

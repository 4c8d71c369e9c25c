//! The words SQLite's last search term, a prefix, is expanded into: the vocabulary of
//! the index's searched columns, kept by the write path (words it can spell as the
//! tokenizer does, and stems of those it cannot), and the look-up that turns a prefix
//! into the few whole words it starts.

use super::text::{MIN_PREFIX_CHARS, params, prefix_last};
use crate::{Result, Store, Tx};
use std::collections::BTreeSet;

/// The most words a prefix is expanded into; a prefix of more is matched as one.
pub(crate) const MAX_EXPANSION: usize = 64;

/// The last term, when it is a prefix that the SQLite index has no prefix index for
/// (longer than [`MIN_PREFIX_CHARS`]) and that [`vocabulary`] spells as the tokenizer
/// does (ASCII letters and digits: lowercase). FTS5 matches such a prefix by merging the
/// lists of every word it starts, over the whole table, before it reads the newest
/// rows (about 55 ms for a word in half of 1,100,000 rows); the same words matched
/// whole are read newest first and stop at the rows wanted.
pub(crate) fn expandable(terms: &[String]) -> Option<&str> {
    let last = terms.last()?;
    (prefix_last(terms)
        && last.len() > MIN_PREFIX_CHARS
        && last
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
    .then_some(last.as_str())
}

/// Characters outside ASCII that the `unicode61` tokenizer certainly reads as
/// separators (spaces, dashes, quotes, ellipses, arrows, box drawing, symbols, emoji).
fn separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(c,
            '\u{2010}'..='\u{205E}' | '\u{2190}'..='\u{21FF}' | '\u{2500}'..='\u{25FF}'
            | '\u{2600}'..='\u{2775}' | '\u{2794}'..='\u{27BF}' | '\u{1F300}'..='\u{1FAFF}')
}

/// The words of `text` as the SQLite index's tokenizer makes them, as far as that is
/// known without its Unicode tables: words of ASCII letters and digits (lowercase,
/// longer than [`MIN_PREFIX_CHARS`]), and
/// stems — the ASCII starts of words that run on into other characters, whose tokens
/// are known only to start with them (an empty stem: a word starts with such a
/// character). A prefix that a stem starts, or that starts with a stem, is matched as
/// a prefix; others through the words.
pub(crate) fn vocabulary(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut words, mut stems) = (BTreeSet::new(), BTreeSet::new());
    let chunks = text.split(|c: char| {
        if c.is_ascii() {
            !c.is_ascii_alphanumeric()
        } else {
            separator(c)
        }
    });
    for chunk in chunks.filter(|c| !c.is_empty()) {
        if chunk.is_ascii() {
            // Only longer words are ever expanded into (see [`expandable`]).
            if chunk.len() > MIN_PREFIX_CHARS {
                words.insert(chunk.to_ascii_lowercase());
            }
            continue;
        }
        // After an unknown character a token may start (it was a separator) or go on.
        let mut pieces = chunk.split(|c: char| !c.is_ascii());
        stems.insert(pieces.next().unwrap_or_default().to_ascii_lowercase());
        let rest: Vec<&str> = pieces.collect();
        for (i, piece) in rest.iter().enumerate() {
            if !piece.is_empty() || i + 1 < rest.len() {
                stems.insert(piece.to_ascii_lowercase());
            }
        }
    }
    (words, stems)
}

impl Tx {
    /// Records the words of a row's searched columns that SQLite's prefixes are
    /// expanded into (see [`expandable`]). Words are never removed: one no longer
    /// in any row only adds a word that matches nothing.
    pub(super) async fn add_vocabulary(&mut self, title: &str, body: &str) -> Result<()> {
        let (mut words, mut stems) = vocabulary(title);
        let (more_words, more_stems) = vocabulary(body);
        words.extend(more_words);
        stems.extend(more_stems);
        for (sql, values) in [
            (
                "INSERT OR IGNORE INTO search_words (word) SELECT value FROM json_each($1)",
                words,
            ),
            (
                "INSERT OR IGNORE INTO search_word_stems (stem) SELECT value FROM json_each($1)",
                stems,
            ),
        ] {
            if !values.is_empty() {
                sqlx::query(sql)
                    .bind(serde_json::to_string(&values)?)
                    .execute(self.conn())
                    .await?;
            }
        }
        Ok(())
    }
}

impl Store {
    /// The words of the SQLite index that start with `prefix`, when they are all known
    /// and at most [`MAX_EXPANSION`]; else `None` (match it as a prefix).
    pub(super) async fn expansion(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        // A stem that starts `prefix` or that it starts: some word there is unknown.
        let starts: Vec<&str> = (0..prefix.len()).map(|i| &prefix[..i]).collect();
        let sql = format!(
            "SELECT 1 FROM search_word_stems WHERE (stem >= $1 AND stem < $2) OR stem IN ({}) LIMIT 1",
            params(3, starts.len())
        );
        let end = format!("{prefix}\u{10FFFF}");
        let mut unknown = sqlx::query(&sql).bind(prefix).bind(&end);
        for s in starts {
            unknown = unknown.bind(s);
        }
        if unknown.fetch_optional(self.pool()).await?.is_some() {
            return Ok(None);
        }
        let words: Vec<String> = sqlx::query_scalar(
            "SELECT word FROM search_words WHERE word >= $1 AND word < $2 ORDER BY word LIMIT $3",
        )
        .bind(prefix)
        .bind(&end)
        .bind(i64::try_from(MAX_EXPANSION + 1).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        Ok((words.len() <= MAX_EXPANSION).then_some(words))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_holds_ascii_words_and_stems_of_the_others() {
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        let (words, stems) = vocabulary("Fix_the Build — don’t 2x café x²y élan wasn’t");
        assert_eq!(words, set(&["build", "wasn"]));
        assert_eq!(stems, set(&["", "caf", "lan", "x", "y"]));
        let terms = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(expandable(&terms(&["a", "refac"])), Some("refac"));
        assert_eq!(expandable(&terms(&["ref"])), None, "has a prefix index");
        assert_eq!(expandable(&terms(&["café"])), None);
        assert_eq!(expandable(&terms(&["foo_bar"])), None);
    }
}

//! The words of search, without IO: what each kind of content is found by, the match
//! expressions built from a query's terms (never from its raw text), how a row is
//! scored, and snippets' markers turned into offsets.

use mainloop_domain::question::{Answer, Answers, Question};
use mainloop_domain::search::{SearchKind, SearchQuery};
use mainloop_domain::transcript::TranscriptEntry;
use mainloop_domain::{ProjectId, TaskId, Timestamp, UserId};

/// The most characters of one transcript entry that are indexed.
pub const TRANSCRIPT_BODY_CHARS: usize = 4000;
/// The most characters of any other text that are indexed (PostgreSQL's `tsvector`
/// has a size limit that a pasted log could pass).
pub const BODY_CHARS: usize = 100_000;
/// The most matches, newest first, that a search ranks.
pub const CANDIDATES: usize = 300;
/// The shortest last term matched as a prefix.
pub const MIN_PREFIX_CHARS: usize = 3;
/// A hit's title: the first line of its task's description, at most this long.
pub(crate) const TITLE_CHARS: usize = 80;

/// Text as indexed: at most `max` characters.
pub(crate) fn clean(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// A text's first line (the title) and the rest (the body).
pub(crate) fn split_title(text: &str) -> (&str, &str) {
    text.split_once('\n').unwrap_or((text, ""))
}

/// The words of a round of questions: each one's header, text and options.
pub(crate) fn question_words(questions: &[Question]) -> String {
    let mut words = Vec::new();
    for q in questions {
        words.extend([q.header.as_str(), q.question.as_str()]);
        for o in &q.options {
            words.extend([o.label.as_str(), o.description.as_str()]);
        }
    }
    words.retain(|w| !w.is_empty());
    words.join("\n")
}

pub(crate) fn answer_words(answers: &Answers) -> String {
    answers
        .values()
        .map(Answer::as_text)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The words a transcript entry is found by (empty: not indexed): the same fields, in
/// the same order, as the migration reads from stored payloads.
#[must_use]
pub fn transcript_words(entry: &TranscriptEntry) -> String {
    let parts: Vec<&str> = match entry {
        TranscriptEntry::Text(t) => vec![&t.text],
        TranscriptEntry::Status(t) => vec![&t.text],
        TranscriptEntry::ToolCall(c) => vec![&c.name, &c.summary],
        TranscriptEntry::ToolResult(r) => vec![&r.summary],
        TranscriptEntry::Plan(p) => vec![&p.plan],
        TranscriptEntry::Finished(f) => f.result.iter().map(String::as_str).collect(),
        TranscriptEntry::Error(e) => vec![&e.text, &e.stderr],
        TranscriptEntry::Checks(c) => vec![&c.command, &c.output],
        TranscriptEntry::Question(q) => {
            return clean(&question_words(&q.questions).replace('\n', " "), usize::MAX)
                .trim()
                .to_owned();
        }
        TranscriptEntry::Session(_)
        | TranscriptEntry::Permission(_)
        | TranscriptEntry::Malformed(_)
        | TranscriptEntry::Unknown(_) => Vec::new(),
    };
    let words: Vec<&str> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    words.join(" ").trim().to_owned()
}

/// An id as one token (FTS5 splits at `-`).
pub(crate) fn token(prefix: char, id: &str) -> String {
    let mut t = String::with_capacity(id.len() + 1);
    t.push(prefix);
    t.extend(id.chars().filter(|c| *c != '-'));
    t
}

const DAY_MS: i64 = 86_400_000;
/// Days per coarse period of the date tokens.
const PERIOD_DAYS: i64 = 32;
/// The most date tokens a date filter is matched through; a longer range is checked
/// row by row only.
const MAX_DATE_TOKENS: i64 = 64;

/// The day since 1970 (UTC) of a time in milliseconds, as SQL's integer division
/// computes it in the migration that tagged earlier rows.
fn day(ms: i64) -> i64 {
    ms / DAY_MS
}

/// What locates a row in the SQLite index beyond its words: its user, kind, task and
/// project as tokens of the `tags` column, so that filters are index lookups; and its
/// day (`d<day since 1970>`) and 32-day period (`c<day / 32>`), so that a date filter
/// skips the rows outside its days in the index instead of reading each row's time.
pub(crate) fn tags(
    kind: SearchKind,
    user: UserId,
    task: Option<TaskId>,
    project: Option<ProjectId>,
    created_at: i64,
) -> String {
    let mut tags = vec![token('u', &user.to_string()), format!("k{}", kind.as_str())];
    tags.extend(task.map(|t| token('t', &t.to_string())));
    tags.extend(project.map(|p| token('p', &p.to_string())));
    let d = day(created_at);
    tags.push(format!("d{d} c{}", d / PERIOD_DAYS));
    tags.join(" ")
}

/// The date tokens that every row from `from` (inclusive) to `to` (exclusive) carries
/// one of: its days when there are few, else its 32-day periods; none for an open or
/// a long range (its rows' times are still checked one by one).
pub(crate) fn date_tokens(from: Option<i64>, to: Option<i64>) -> Vec<String> {
    let (Some(from), Some(to)) = (from, to) else {
        return Vec::new();
    };
    if to <= from {
        return Vec::new();
    }
    let (first, last) = (day(from), day(to - 1));
    if last - first < MAX_DATE_TOKENS {
        return (first..=last).map(|d| format!("d{d}")).collect();
    }
    let (first, last) = (first / PERIOD_DAYS, last / PERIOD_DAYS);
    if last - first < MAX_DATE_TOKENS {
        return (first..=last).map(|c| format!("c{c}")).collect();
    }
    Vec::new()
}

/// Whether the last term is matched as a prefix: shorter ones would match too many
/// words to be fast, and are matched whole.
pub(crate) fn prefix_last(terms: &[String]) -> bool {
    terms
        .last()
        .is_some_and(|t| t.chars().count() >= MIN_PREFIX_CHARS)
}

/// The FTS5 `MATCH` expression: every term as a quoted string in the searched columns
/// (the last as a prefix), and the filters as `tags` tokens. Terms hold only letters,
/// digits and `_` and tags only letters and digits, so nothing can close its quotes.
/// `expansion`: the words the last term stands for (see
/// [`super::vocabulary::expandable`]), matched whole instead of as a prefix.
pub(crate) fn fts5_match(user: UserId, q: &SearchQuery, expansion: Option<&[String]>) -> String {
    let mut parts: Vec<String> = q.terms.iter().map(|t| format!("\"{t}\"")).collect();
    if let Some(last) = parts.last_mut() {
        if let Some(words) = expansion {
            let words: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
            *last = format!("({})", words.join(" OR "));
        } else if prefix_last(&q.terms) {
            last.push('*');
        }
    }
    let mut expr = format!("{{title body}} : ({})", parts.join(" AND "));
    expr.push_str(&format!(
        " AND tags : \"{}\"",
        token('u', &user.to_string())
    ));
    if !q.kinds.is_empty() {
        let kinds: Vec<String> = q
            .kinds
            .iter()
            .map(|k| format!("\"k{}\"", k.as_str()))
            .collect();
        expr.push_str(&format!(" AND tags : ({})", kinds.join(" OR ")));
    }
    if let Some(task) = q.task {
        expr.push_str(&format!(
            " AND tags : \"{}\"",
            token('t', &task.to_string())
        ));
    }
    if let Some(project) = q.project {
        expr.push_str(&format!(
            " AND tags : \"{}\"",
            token('p', &project.to_string())
        ));
    }
    let dates = date_tokens(
        q.from.map(Timestamp::as_millis),
        q.to.map(Timestamp::as_millis),
    );
    if !dates.is_empty() {
        let dates: Vec<String> = dates.iter().map(|d| format!("\"{d}\"")).collect();
        expr.push_str(&format!(" AND tags : ({})", dates.join(" OR ")));
    }
    expr
}

/// `$first, $first+1, …` for `n` values.
pub(crate) fn params(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `to_tsquery` text: every term quoted, all required, the last as a prefix.
pub(crate) fn tsquery(terms: &[String]) -> String {
    let mut parts: Vec<String> = terms.iter().map(|t| format!("'{t}'")).collect();
    if prefix_last(terms)
        && let Some(last) = parts.last_mut()
    {
        last.push_str(":*");
    }
    parts.join(" & ")
}

/// Words as ranking counts them: lowercase runs of letters and digits.
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// How well a row matches: per term, its occurrences in the title (weighted above any
/// number in the body) and in the body (saturating, shorter bodies first), as BM25
/// does within one query. Every row found holds every term, so no term weighs more.
#[must_use]
pub fn score(terms: &[String], title: &str, body: &str) -> f64 {
    const K: f64 = 1.2;
    const B: f64 = 0.75;
    const AVG_WORDS: f64 = 40.0;
    let prefix = prefix_last(terms);
    let last = terms.len().saturating_sub(1);
    // A term with `_` is several words to the index; its first stands for it here.
    let wanted: Vec<&str> = terms
        .iter()
        .map(|t| t.split('_').find(|w| !w.is_empty()).unwrap_or(t))
        .collect();
    let count = |text: &str| {
        let mut tf = vec![0.0_f64; wanted.len()];
        let mut n = 0.0_f64;
        for w in words(text) {
            n += 1.0;
            for (i, t) in wanted.iter().enumerate() {
                if w == *t || (prefix && i == last && w.starts_with(t)) {
                    tf[i] += 1.0;
                }
            }
        }
        (tf, n)
    };
    let (title_tf, _) = count(title);
    let (body_tf, len) = count(body);
    let norm = K * (1.0 - B + B * len / AVG_WORDS);
    title_tf
        .iter()
        .zip(&body_tf)
        .map(|(t, b)| 3.0 * t * (K + 1.0) / (t + K) + b * (K + 1.0) / (b + norm))
        .sum()
}

pub(crate) fn hit_title(kind: SearchKind, role: Option<&str>, description: Option<&str>) -> String {
    match (kind, role, description) {
        (SearchKind::Message, Some("user"), _) => "You".to_owned(),
        (SearchKind::Message, _, _) => "mainloop".to_owned(),
        (_, _, Some(d)) => {
            let line = d.lines().next().unwrap_or_default().trim();
            if line.chars().count() > TITLE_CHARS {
                let cut: String = line.chars().take(TITLE_CHARS - 1).collect();
                format!("{}…", cut.trim_end())
            } else {
                line.to_owned()
            }
        }
        (k, _, None) => k.as_str().to_owned(),
    }
}

/// A word of `text` as search compares it: lowercase, with the accents of Latin
/// letters removed (as SQLite's tokenizer does), so that `cafe` marks `café`.
fn fold(word: &str) -> String {
    word.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
            'ç' | 'ć' | 'č' => 'c',
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => 'e',
            'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' => 'i',
            'ñ' | 'ń' | 'ň' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => 'o',
            'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' => 'u',
            'ý' | 'ÿ' => 'y',
            'ś' | 'š' => 's',
            'ź' | 'ż' | 'ž' => 'z',
            c => c,
        })
        .collect()
}

/// The words of `text` with their `[start, end)` character offsets.
fn spans(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut start = None;
    let mut word = String::new();
    let mut n = 0;
    for (i, c) in text.chars().enumerate() {
        n = i + 1;
        if c.is_alphanumeric() {
            start.get_or_insert(i);
            word.push(c);
        } else if let Some(s) = start.take() {
            out.push((s, i, fold(&std::mem::take(&mut word))));
        }
    }
    if let Some(s) = start {
        out.push((s, n, fold(&word)));
    }
    out
}

/// Words shown before the first match in a snippet, and in all.
const SNIPPET_BEFORE: usize = 8;
const SNIPPET_WORDS: usize = 32;

/// The part of a hit's text around its first match, as one line of plain text, and
/// where the matched words are in it (`[start, end)` in characters). The body is
/// shown when it matches, else the title.
#[must_use]
pub fn snippet(terms: &[String], title: &str, body: &str) -> (String, Vec<[u32; 2]>) {
    let prefix = prefix_last(terms);
    let last = terms.len().saturating_sub(1);
    let wanted: Vec<(Vec<String>, bool)> = terms
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let parts = t.split('_').filter(|w| !w.is_empty()).map(fold).collect();
            (parts, prefix && i == last)
        })
        .collect();
    let matches = |w: &str| {
        wanted.iter().any(|(parts, is_prefix)| {
            parts.iter().enumerate().any(|(j, p)| {
                w == p || (*is_prefix && j + 1 == parts.len() && w.starts_with(p.as_str()))
            })
        })
    };
    let body_words = spans(body);
    let (text, words) = if body_words.iter().any(|(_, _, w)| matches(w)) || title.is_empty() {
        (body, body_words)
    } else {
        (title, spans(title))
    };
    let first = words.iter().position(|(_, _, w)| matches(w)).unwrap_or(0);
    let from = first.saturating_sub(SNIPPET_BEFORE);
    let to = (from + SNIPPET_WORDS).min(words.len());
    let Some((start, end)) = words
        .get(from)
        .map(|w| w.0)
        .zip(to.checked_sub(1).and_then(|i| words.get(i)).map(|w| w.1))
    else {
        return (String::new(), Vec::new());
    };
    let chars: Vec<char> = text.chars().collect();
    // The text's own ends (punctuation included) when the window reaches them.
    let start = if from == 0 {
        chars.iter().take_while(|c| c.is_whitespace()).count()
    } else {
        start
    };
    let end = if to == words.len() {
        chars.len() - chars.iter().rev().take_while(|c| c.is_whitespace()).count()
    } else {
        end
    };
    let lead = if start > 0 && from > 0 { "… " } else { "" };
    let mut out: String = lead.to_owned();
    out.extend(
        chars[start..end]
            .iter()
            .map(|c| if c.is_whitespace() { ' ' } else { *c }),
    );
    if to < words.len() {
        out.push_str(" …");
    }
    let shift = lead.chars().count();
    let highlights = words[from..to]
        .iter()
        .filter(|(_, _, w)| matches(w))
        .filter_map(|(s, e, _)| {
            let at = |x: usize| u32::try_from(x - start + shift).ok();
            Some([at(*s)?, at(*e)?])
        })
        .collect();
    (out, highlights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mainloop_domain::search::SearchKind;

    fn marked(terms: &[&str], title: &str, body: &str) -> (String, Vec<String>) {
        let terms: Vec<String> = terms.iter().map(|t| (*t).to_owned()).collect();
        let (text, spans) = snippet(&terms, title, body);
        let chars: Vec<char> = text.chars().collect();
        let words = spans
            .iter()
            .map(|[s, e]| chars[*s as usize..*e as usize].iter().collect())
            .collect();
        (text, words)
    }

    #[test]
    fn snippets_show_the_first_match_and_mark_every_matched_word() {
        let (text, words) = marked(&["größe", "caf"], "", "Die Größe über alles\nnaïve Café");
        assert_eq!(text, "Die Größe über alles naïve Café");
        assert_eq!(words, ["Größe", "Café"]);
        let body = format!("{} needle {}", "hay ".repeat(50), "straw ".repeat(50));
        let (text, words) = marked(&["needle"], "", &body);
        assert!(
            text.starts_with("… hay") && text.ends_with("straw …"),
            "{text}"
        );
        assert_eq!(text.split_whitespace().filter(|w| *w != "…").count(), 32);
        assert_eq!(words, ["needle"]);
        let (text, words) = marked(&["census"], "Penguin census", "about birds");
        assert_eq!(
            (text.as_str(), words),
            ("Penguin census", vec!["census".to_owned()])
        );
        let (_, words) = marked(&["cafe"], "", "un café");
        assert_eq!(words, ["café"], "accents are folded");
        let (_, words) = marked(&["re"], "", "re read");
        assert_eq!(words, ["re"], "a short last word is whole");
        let (text, _) = marked(&["rollout"], "", "(What about the rollout?)\n");
        assert_eq!(
            text, "(What about the rollout?)",
            "a whole text keeps its punctuation"
        );
    }

    #[test]
    fn queries_quote_every_term_and_prefix_the_last() {
        let user: UserId = "0190a6f4-7e1c-7cc2-9a34-1f2e3d4c5b6a".parse().unwrap();
        let task: TaskId = "0190a6f4-7e1c-7cc2-9a34-000000000001".parse().unwrap();
        let q = SearchQuery {
            terms: vec!["auth".to_owned(), "near".to_owned(), "refac".to_owned()],
            kinds: vec![SearchKind::Task, SearchKind::Plan],
            project: None,
            task: Some(task),
            from: None,
            to: None,
            limit: 5,
        };
        assert_eq!(
            fts5_match(user, &q, None),
            "{title body} : (\"auth\" AND \"near\" AND \"refac\"*) \
             AND tags : \"u0190a6f47e1c7cc29a341f2e3d4c5b6a\" AND tags : (\"ktask\" OR \"kplan\") \
             AND tags : \"t0190a6f47e1c7cc29a34000000000001\""
        );
        let words = ["refactor".to_owned(), "refactoring".to_owned()];
        let day = 86_400_000;
        let q = SearchQuery {
            kinds: Vec::new(),
            task: None,
            from: Some(Timestamp::from_millis(20_000 * day + 5)),
            to: Some(Timestamp::from_millis(20_002 * day)),
            ..q
        };
        assert_eq!(
            fts5_match(user, &q, Some(&words)),
            "{title body} : (\"auth\" AND \"near\" AND (\"refactor\" OR \"refactoring\")) \
             AND tags : \"u0190a6f47e1c7cc29a341f2e3d4c5b6a\" AND tags : (\"d20000\" OR \"d20001\")"
        );
        assert_eq!(tsquery(&q.terms), "'auth' & 'near' & 'refac':*");
        // A short last word is matched whole.
        assert_eq!(tsquery(&["a".to_owned(), "re".to_owned()]), "'a' & 're'");
    }

    #[test]
    fn date_filters_match_the_days_or_periods_of_their_range() {
        let day = 86_400_000;
        let tags = tags(
            SearchKind::Note,
            UserId::new_v7(Timestamp::from_millis(0)),
            None,
            None,
            40 * day + 1,
        );
        assert!(tags.ends_with(" knote d40 c1"), "{tags}");
        assert_eq!(date_tokens(Some(day - 1), Some(day + 1)), ["d0", "d1"]);
        // `to` is excluded: a range ending at midnight has nothing of the next day.
        assert_eq!(date_tokens(Some(day), Some(2 * day)), ["d1"]);
        assert_eq!(
            date_tokens(Some(0), Some(100 * day)),
            ["c0", "c1", "c2", "c3"]
        );
        assert!(
            date_tokens(Some(0), Some(10_000 * day)).is_empty(),
            "too long"
        );
        assert!(date_tokens(None, Some(day)).is_empty(), "open");
        assert!(date_tokens(Some(day), Some(day)).is_empty(), "empty");
    }

    #[test]
    fn a_title_match_outranks_body_matches_and_more_matches_rank_higher() {
        let t = |s: &str| vec![s.to_owned()];
        let title = score(&t("penguin"), "Penguin census", "");
        let body = score(&t("penguin"), "", "penguin penguin penguin penguin penguin");
        assert!(title > body, "{title} {body}");
        let once = score(&t("walrus"), "", "walrus and some more words");
        let thrice = score(&t("walrus"), "", "walrus walrus walrus and more");
        assert!(thrice > once);
        assert!(
            score(&t("wal"), "", "walrus") > 0.0,
            "the last term is a prefix"
        );
        assert!(score(&t("über_all"), "", "Über all") > 0.0);
    }
}

//! Searching the user's history: a query as the API, the CLI and the tools receive it
//! (`parse_search`, every bad field named), and [`Engine::search`] over the store's index.

use crate::{Engine, EngineError, Result};
use mainloop_domain::search::{MAX_LIMIT, SearchHit, SearchKind, SearchQuery, terms};
use mainloop_domain::{ProjectId, TaskId, Timestamp, UserId};

/// Hits returned when no limit is given.
pub const DEFAULT_SEARCH_LIMIT: u32 = 20;

/// A search from its fields as given: `q` the words, `kinds` by name, the project and
/// task by id, `from` (at or after) and `to` (before) as RFC 3339 instants or
/// `YYYY-MM-DD` days in UTC — a day as `to` counts whole, so `to=2026-10-31` includes
/// October 31st — and `limit` (default [`DEFAULT_SEARCH_LIMIT`], at most [`MAX_LIMIT`]).
///
/// # Errors
/// [`EngineError::Invalid`] naming the first field that cannot be read.
pub fn parse_search(
    q: &str,
    kinds: &[String],
    project: Option<&str>,
    task: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    limit: Option<u32>,
) -> Result<SearchQuery> {
    let terms = terms(q).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let mut parsed = Vec::new();
    for k in kinds.iter().flat_map(|k| k.split(',')) {
        let k = k.trim();
        if k.is_empty() {
            continue;
        }
        let kind: SearchKind = k.parse().map_err(|_| {
            let known: Vec<&str> = SearchKind::ALL.iter().map(|k| k.as_str()).collect();
            EngineError::Invalid(format!("kind '{k}' is not one of: {}", known.join(", ")))
        })?;
        if !parsed.contains(&kind) {
            parsed.push(kind);
        }
    }
    let project = project
        .map(|p| {
            p.parse::<ProjectId>()
                .map_err(|_| EngineError::Invalid(format!("project '{p}' is not a project id")))
        })
        .transpose()?;
    let task = task
        .map(|t| {
            t.parse::<TaskId>()
                .map_err(|_| EngineError::Invalid(format!("task '{t}' is not a task id")))
        })
        .transpose()?;
    let from = from.map(|f| instant("from", f, false)).transpose()?;
    let to = to.map(|t| instant("to", t, true)).transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(EngineError::Invalid("from must be before to".into()));
    }
    let limit = match limit {
        None => DEFAULT_SEARCH_LIMIT,
        Some(0) => return Err(EngineError::Invalid("limit must be at least 1".into())),
        Some(n) if n > MAX_LIMIT => {
            return Err(EngineError::Invalid(format!(
                "limit must be at most {MAX_LIMIT}"
            )));
        }
        Some(n) => n,
    };
    Ok(SearchQuery {
        terms,
        kinds: parsed,
        project,
        task,
        from,
        to,
        limit,
    })
}

/// An RFC 3339 instant, or a `YYYY-MM-DD` day (its start; with `day_end`, the next
/// day's start).
fn instant(field: &str, s: &str, day_end: bool) -> Result<Timestamp> {
    let bad = || {
        EngineError::Invalid(format!(
            "{field} '{s}' is not a date: give YYYY-MM-DD or an RFC 3339 time such as \
             2026-10-01T09:00:00Z"
        ))
    };
    let is_day = s.len() == 10 && s.as_bytes().get(4) == Some(&b'-');
    if is_day {
        let start = Timestamp::parse_rfc3339(&format!("{s}T00:00:00Z")).map_err(|_| bad())?;
        return Ok(if day_end {
            start.plus_millis(86_400_000)
        } else {
            start
        });
    }
    Timestamp::parse_rfc3339(s).map_err(|_| bad())
}

impl Engine {
    /// The user's content matching `query`, best first (see `Store::search`).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn search(&self, user: UserId, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        Ok(self.store().search(user, query).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        q: &str,
        kinds: &[&str],
        from: Option<&str>,
        to: Option<&str>,
        limit: Option<u32>,
    ) -> Result<SearchQuery> {
        let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
        parse_search(q, &kinds, None, None, from, to, limit)
    }

    fn invalid(r: Result<SearchQuery>) -> String {
        match r {
            Err(EngineError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn fields_are_read_or_named_in_the_error() {
        let q = parse("Auth refactor", &["task,plan", "task"], None, None, None).unwrap();
        assert_eq!(q.terms, ["auth", "refactor"]);
        assert_eq!(q.kinds, [SearchKind::Task, SearchKind::Plan]);
        assert_eq!(q.limit, DEFAULT_SEARCH_LIMIT);
        assert!(invalid(parse("", &[], None, None, None)).starts_with("q must not be empty"));
        assert!(invalid(parse("a\0", &[], None, None, None)).contains("NUL"));
        assert!(invalid(parse("x", &["tasks"], None, None, None)).contains("kind 'tasks'"));
        assert!(invalid(parse("x", &[], Some("yesterday"), None, None)).starts_with("from"));
        assert!(invalid(parse("x", &[], None, Some("2026-13-01"), None)).starts_with("to"));
        assert!(invalid(parse("x", &[], None, None, Some(0))).contains("at least 1"));
        assert!(invalid(parse("x", &[], None, None, Some(MAX_LIMIT + 1))).contains("at most"));
        let e = parse_search("x", &[], Some("p"), None, None, None, None);
        assert!(invalid(e).starts_with("project 'p'"));
        let e = parse_search("x", &[], None, Some("t"), None, None, None);
        assert!(invalid(e).starts_with("task 't'"));
        assert!(
            invalid(parse(
                "x",
                &[],
                Some("2026-10-02"),
                Some("2026-10-01"),
                None
            ))
            .contains("before")
        );
    }

    #[test]
    fn a_day_as_the_end_counts_whole() {
        let q = parse("x", &[], Some("2026-10-01"), Some("2026-10-31"), Some(5)).unwrap();
        let day = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        assert_eq!(q.from, Some(day("2026-10-01T00:00:00Z")));
        assert_eq!(q.to, Some(day("2026-11-01T00:00:00Z")));
        assert_eq!(q.limit, 5);
        let q = parse("x", &[], Some("2026-10-01T09:30:00+02:00"), None, None).unwrap();
        assert_eq!(q.from, Some(day("2026-10-01T07:30:00Z")));
    }
}

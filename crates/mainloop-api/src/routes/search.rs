//! `GET /api/search`: the user's history (messages, tasks, questions, plans,
//! transcripts, reviews, notes, digests) by full-text search, best hits first.

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use axum::Json;
use axum::extract::State;
use mainloop_domain::search::{SearchKind, SearchResults};
use mainloop_engine::EngineError;
use utoipa::IntoParams;

/// What to search for. Only documentation: [`SearchParams::parse`] reads the pairs, so
/// that `kind` may repeat.
#[derive(Debug, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// The words to find, as typed: every word must occur (the last may be the start of
    /// one). Only letters, digits and `_` count; everything else separates words, so no
    /// character has a special meaning. At least one letter, digit or `_`; at most 500
    /// characters; no NUL.
    #[param(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000]*\w[^\u0000]*$"
    )]
    pub q: String,
    /// Only hits of these kinds: the parameter repeated (`kind=message&kind=task`) or,
    /// equally, comma-separated (`kind=message,task`). Default: every kind.
    pub kind: Option<Vec<SearchKind>>,
    /// Only hits in this project's tasks.
    #[param(value_type = Option<String>, format = Uuid)]
    pub project: Option<String>,
    /// Only hits of this task (its description, questions, plans, transcript, reviews).
    #[param(value_type = Option<String>, format = Uuid)]
    pub task: Option<String>,
    /// Only hits created on or after this day (UTC), or this RFC 3339 time.
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<String>,
    /// Only hits created up to this day (UTC) included, or before this RFC 3339 time.
    /// Not before `from` (422).
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<String>,
    /// At most this many hits (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

impl SearchParams {
    /// Reads the query's pairs; other parameters are ignored. Each kind must be a kind's
    /// exact name, as the document's enum says (no blanks, no spaces around it).
    fn parse(pairs: &[(String, String)]) -> ApiResult<(Self, Vec<String>)> {
        let mut p = Self::default();
        let mut q = None;
        let mut kinds = Vec::new();
        for (name, value) in pairs {
            let once = |slot: &mut Option<String>| {
                if slot.replace(value.clone()).is_some() {
                    Err(ApiError::bad_request(format!("{name} is given twice")))
                } else {
                    Ok(())
                }
            };
            match name.as_str() {
                "q" => once(&mut q)?,
                "kind" => {
                    for k in value.split(',') {
                        k.parse::<SearchKind>().map_err(|_| {
                            let known = SearchKind::ALL.map(SearchKind::as_str).join(", ");
                            ApiError::from(EngineError::Invalid(format!(
                                "kind '{k}' is not one of: {known}"
                            )))
                        })?;
                        kinds.push(k.to_owned());
                    }
                }
                "project" => once(&mut p.project)?,
                "task" => once(&mut p.task)?,
                "from" => once(&mut p.from)?,
                "to" => once(&mut p.to)?,
                "limit" => {
                    let n: i64 = value
                        .parse()
                        .map_err(|_| ApiError::bad_request("limit must be an integer"))?;
                    // Out of range is the engine's to say; beyond u32 it is out of
                    // range whatever the range is.
                    let n = u32::try_from(n).unwrap_or(u32::MAX);
                    if p.limit.replace(n).is_some() {
                        return Err(ApiError::bad_request("limit is given twice"));
                    }
                }
                _ => {}
            }
        }
        p.q = q.unwrap_or_default();
        Ok((p, kinds))
    }
}

/// Searches the user's history: the conversation, task descriptions, questions and
/// answers, plans, transcripts, review feedback, notes and digests. Best hits first,
/// each with a snippet around the words found (`highlights` marks them) and the task to
/// open. Another user's history is never searched.
#[utoipa::path(
    get,
    path = "/api/search",
    operation_id = "search",
    tag = "search",
    params(SearchParams),
    responses(
        (status = 200, description = "The hits, best first", body = SearchResults),
        (status = 400, description = "Malformed query string, or a parameter given twice", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 422, description = "q missing, without a word, too long or with a NUL; an unknown kind; a malformed id or date; to before from; limit outside 1–100", body = ErrorBody),
    )
)]
pub async fn search(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<Json<SearchResults>> {
    let (p, kinds) = SearchParams::parse(&pairs)?;
    let query = mainloop_engine::parse_search(
        &p.q,
        &kinds,
        p.project.as_deref(),
        p.task.as_deref(),
        p.from.as_deref(),
        p.to.as_deref(),
        p.limit,
    )?;
    let results = state.engine.search(user.id, &query).await?;
    Ok(Json(SearchResults { results }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn kinds_repeat_or_come_comma_separated() {
        let (p, kinds) = SearchParams::parse(&pairs(&[
            ("q", "auth"),
            ("kind", "message,task"),
            ("kind", "plan"),
            ("other", "ignored"),
            ("limit", "7"),
        ]))
        .unwrap();
        assert_eq!(p.q, "auth");
        assert_eq!(p.limit, Some(7));
        assert_eq!(kinds, ["message", "task", "plan"]);
        for bad in ["", "task,", " task", "Task", "tasks"] {
            let e = SearchParams::parse(&pairs(&[("kind", bad)])).unwrap_err();
            assert_eq!(e.code(), "invalid", "{bad:?}");
        }
    }

    #[test]
    fn repeated_or_malformed_parameters_are_refused() {
        for bad in [
            vec![("q", "a"), ("q", "b")],
            vec![("q", "a"), ("task", "x"), ("task", "y")],
            vec![("q", "a"), ("limit", "ten")],
            vec![("q", "a"), ("limit", "1"), ("limit", "2")],
        ] {
            assert_eq!(
                SearchParams::parse(&pairs(&bad)).unwrap_err().code(),
                "bad_request",
                "{bad:?}"
            );
        }
        let (p, _) = SearchParams::parse(&pairs(&[("limit", "-1")])).unwrap();
        assert_eq!((p.q.as_str(), p.limit), ("", Some(u32::MAX)));
    }
}

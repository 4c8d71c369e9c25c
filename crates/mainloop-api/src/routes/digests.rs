//! The temporal pyramid as the API shows it: the user's day, week and month digests
//! (`GET /api/digests`, `GET /api/digests/{id}`) and the time zone whose midnights end
//! the user's days (`GET`/`PUT /api/settings/time-zone`).

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use mainloop_domain::DigestId;
use mainloop_domain::digest::{Digest, Period, SetTimeZone, TimeZoneSetting, parse_date};
use mainloop_engine::EngineError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Digests listed when the query does not say.
pub const DEFAULT_DIGESTS: u32 = 30;
/// The most digests one request lists (the engine's own cap).
pub use mainloop_engine::MAX_DIGESTS;

/// Which digests to list. Every value is checked here, so that a wrong one is a
/// `422 invalid` naming it.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DigestsQuery {
    /// Only digests of this length. Default: every length.
    #[param(value_type = Option<Period>)]
    pub period: Option<String>,
    /// Only digests that start before this local date (`YYYY-MM-DD`): the `start` of
    /// the oldest digest of the previous page, to read further back.
    #[param(value_type = Option<String>, format = Date)]
    pub before: Option<String>,
    /// At most this many digests (default 30).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
}

/// What a [`DigestsQuery`] asks for, checked.
#[derive(Debug, PartialEq, Eq)]
pub struct DigestFilter {
    pub period: Option<Period>,
    /// A date spelled `YYYY-MM-DD` that exists.
    pub before: Option<String>,
    pub limit: u32,
}

impl DigestsQuery {
    /// The filter the query names.
    ///
    /// # Errors
    /// `invalid` for an unknown period, a date not `YYYY-MM-DD`, or a limit that is not
    /// a whole number within 1–200.
    pub fn filter(&self) -> Result<DigestFilter, EngineError> {
        let period = self
            .period
            .as_deref()
            .map(str::parse::<Period>)
            .transpose()
            .map_err(EngineError::Invalid)?;
        let before = self.before.clone().map(checked_date).transpose()?;
        let limit = self.limit.as_deref().map_or(Ok(DEFAULT_DIGESTS), |raw| {
            let n = (!raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()))
                .then(|| raw.parse::<u32>().ok())
                .flatten()
                .filter(|n| (1..=MAX_DIGESTS).contains(n));
            n.ok_or_else(|| {
                EngineError::Invalid(format!(
                    "limit '{raw}' is not a whole number from 1 to {MAX_DIGESTS}"
                ))
            })
        })?;
        Ok(DigestFilter {
            period,
            before,
            limit,
        })
    }
}

/// A local date spelled exactly `YYYY-MM-DD`, as the document's `format: date` says (no
/// other spelling the date parser would also take).
fn checked_date(raw: String) -> Result<String, EngineError> {
    let b = raw.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    if shaped && parse_date(&raw).is_ok() {
        Ok(raw)
    } else {
        Err(EngineError::Invalid(format!(
            "before '{raw}' is not a date (YYYY-MM-DD)"
        )))
    }
}

/// A page of the user's digests, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DigestList {
    pub digests: Vec<Digest>,
    /// The user's time zone now (an IANA name); each digest says the one its days were
    /// counted in.
    pub time_zone: String,
}

/// The user's digests of days, weeks and months, newest first. A day's is made after
/// the user's midnight; a week's (Monday to Sunday) and a month's from their days'.
/// Quiet ones (nothing happened) are listed too.
#[utoipa::path(
    get,
    path = "/api/digests",
    operation_id = "list_digests",
    tag = "digests",
    params(DigestsQuery),
    responses(
        (status = 200, description = "The digests, newest first", body = DigestList),
        (status = 400, description = "Malformed query string, or a parameter given twice", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 422, description = "An unknown period, a date not YYYY-MM-DD, or limit outside 1–200", body = ErrorBody),
    )
)]
pub async fn list(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DigestsQuery>,
) -> ApiResult<Json<DigestList>> {
    let f = q.filter()?;
    let before = f
        .before
        .as_deref()
        .map(parse_date)
        .transpose()
        .map_err(EngineError::Invalid)?;
    let digests = state
        .engine
        .digests(user.id, f.period, before, f.limit)
        .await?;
    let time_zone = state.engine.time_zone(user.id).await?.time_zone;
    Ok(Json(DigestList { digests, time_zone }))
}

/// One of the user's digests.
#[utoipa::path(
    get,
    path = "/api/digests/{id}",
    operation_id = "get_digest",
    tag = "digests",
    params(("id" = DigestId, Path, description = "Digest id")),
    responses(
        (status = 200, description = "The digest", body = Digest),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such digest", body = ErrorBody),
    )
)]
pub async fn get(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<DigestId>,
) -> ApiResult<Json<Digest>> {
    Ok(Json(state.engine.digest(user.id, id).await?))
}

/// The time zone whose midnights end the user's days (and so their digests).
#[utoipa::path(
    get,
    path = "/api/settings/time-zone",
    operation_id = "get_time_zone",
    tag = "digests",
    responses(
        (status = 200, description = "The user's time zone", body = TimeZoneSetting),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn get_time_zone(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<TimeZoneSetting>> {
    Ok(Json(state.engine.time_zone(user.id).await?))
}

/// Sets the user's time zone (an IANA name such as `Europe/Paris`), or with `null` goes
/// back to the server's default. Digests already made keep their dates; later days are
/// counted in the new zone.
#[utoipa::path(
    put,
    path = "/api/settings/time-zone",
    operation_id = "set_time_zone",
    tag = "digests",
    request_body = SetTimeZone,
    responses(
        (status = 200, description = "The user's time zone now", body = TimeZoneSetting),
        (status = 400, description = "Malformed body: not JSON, a wrong type, or an unknown field", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "No time zone has that name", body = ErrorBody),
    )
)]
pub async fn set_time_zone(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SetTimeZone>,
) -> ApiResult<Json<TimeZoneSetting>> {
    Ok(Json(
        state
            .engine
            .set_time_zone(user.id, body.time_zone.as_deref())
            .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(period: Option<&str>, before: Option<&str>, limit: Option<&str>) -> DigestsQuery {
        DigestsQuery {
            period: period.map(str::to_owned),
            before: before.map(str::to_owned),
            limit: limit.map(str::to_owned),
        }
    }

    #[test]
    fn a_query_names_its_filter_or_says_what_is_wrong() {
        assert_eq!(
            query(None, None, None).filter().unwrap(),
            DigestFilter {
                period: None,
                before: None,
                limit: DEFAULT_DIGESTS
            }
        );
        let f = query(Some("week"), Some("2026-11-02"), Some("200"))
            .filter()
            .unwrap();
        assert_eq!(f.period, Some(Period::Week));
        assert_eq!(f.before.as_deref(), Some("2026-11-02"));
        assert_eq!(f.limit, 200);
        for bad in [
            query(Some("Week"), None, None),
            query(Some(""), None, None),
            query(Some("year"), None, None),
            query(None, Some("2026-11-31"), None),
            query(None, Some("20261102"), None),
            query(None, Some(" 2026-11-02"), None),
            query(None, Some("2026-11-02T00:00"), None),
            query(None, Some(""), None),
            query(None, None, Some("0")),
            query(None, None, Some("201")),
            query(None, None, Some("+5")),
            query(None, None, Some("-1")),
            query(None, None, Some("1.0")),
            query(None, None, Some("")),
            query(None, None, Some("99999999999999999999")),
        ] {
            let e = bad.filter().unwrap_err();
            assert!(matches!(e, EngineError::Invalid(_)), "{bad:?}: {e}");
        }
    }
}

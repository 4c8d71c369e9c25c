//! The live event stream (`GET /api/events`): the user's event log as server-sent
//! events, resumable from any event id, so a reconnecting client misses nothing.

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use mainloop_domain::EventId;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use utoipa::IntoParams;

const KEEP_ALIVE: Duration = Duration::from_secs(15);
const LAST_EVENT_ID: &str = "last-event-id";

/// Where to resume. Without either, the stream starts with events committed after
/// the connection opened.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Send the events after this id (for clients that cannot set `Last-Event-ID`).
    /// The header wins when both are given.
    pub after: Option<i64>,
}

fn resume_point(headers: &HeaderMap, query: Option<i64>) -> ApiResult<Option<EventId>> {
    match headers.get(LAST_EVENT_ID) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(|id| Some(EventId(id)))
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event id (an integer)")),
        None => Ok(query.map(EventId)),
    }
}

/// The user's live events, as server-sent events.
///
/// Each message carries `id:` (the event-log id), `event:` (its name) and `data:` (its
/// JSON payload): the schema `ServerEvent`, one alternative per event name, and
/// `EventData`, the payload by name. A comment is sent every 15 s to keep proxies from
/// closing the connection.
#[utoipa::path(
    get,
    path = "/api/events",
    operation_id = "events",
    tag = "events",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id (an integer); wins over `after`"),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Malformed resume point", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn events(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    let after = match resume_point(&headers, q.after)? {
        Some(id) => id,
        None => state.engine.latest_event_id().await?,
    };
    let stream = state
        .engine
        .subscribe(user.id, after)
        .scan((), |(), item| {
            futures::future::ready(match item {
                Ok(e) => Some(Ok::<_, Infallible>(
                    SseEvent::default()
                        .id(e.id.to_string())
                        .event(e.name.as_str())
                        .data(e.payload.to_string()),
                )),
                // The client reconnects with its last id and the replay fills the gap.
                Err(err) => {
                    tracing::warn!(error = %err, "ending an event stream on a storage error");
                    None
                }
            })
        })
        // Open streams would otherwise hold a graceful shutdown forever.
        .take_until(state.shutdown.clone().cancelled_owned());
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    // Reverse proxies (nginx) buffer responses by default, which stalls a stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_wins_over_query_and_must_be_numeric() {
        let mut h = HeaderMap::new();
        assert_eq!(resume_point(&h, None).unwrap(), None);
        assert_eq!(resume_point(&h, Some(4)).unwrap(), Some(EventId(4)));
        h.insert(LAST_EVENT_ID, HeaderValue::from_static("7"));
        assert_eq!(resume_point(&h, Some(4)).unwrap(), Some(EventId(7)));
        h.insert(LAST_EVENT_ID, HeaderValue::from_static("x"));
        assert!(resume_point(&h, None).is_err());
    }
}

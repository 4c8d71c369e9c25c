//! Extractors for bodies, paths and query strings whose rejections are [`ApiError`]s,
//! so malformed input gets the API's JSON error shape (and never a 500).

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A JSON request body. Wrong content type, malformed JSON, missing or mistyped fields
/// and NUL characters in the strings the request reads are `400 bad_request`; a body
/// over the limit is `413 too_large`. Fields the request does not read are ignored,
/// whatever they hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + Serialize, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        // PostgreSQL cannot store NUL in text, so it would fail the write with a 500
        // where SQLite takes it; no field has a use for one, so neither backend gets it.
        // What the request read is what it serialises back to, so an ignored field
        // never counts.
        let read = serde_json::to_vec(&value).map_err(|e| ApiError::internal(&e))?;
        if has_nul(&read) {
            return Err(ApiError::bad_request(
                "JSON strings must not contain NUL characters (\\u0000)",
            ));
        }
        Ok(Self(value))
    }
}

/// An optional JSON body (`Option<ApiJson<T>>`): an empty body is `None`; any other body
/// is read as [`ApiJson`] reads it, with the same errors (a body over the limit too).
impl<T: DeserializeOwned + Serialize, S: Send + Sync> axum::extract::OptionalFromRequest<S>
    for ApiJson<T>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state).await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// Whether a JSON text that parsed holds a NUL character in a string (a name or a
/// value). JSON can only spell one as the escape `\u0000`, which counts when the
/// backslashes right before it are even in number (so the `\` is not itself escaped).
pub(crate) fn has_nul(json: &[u8]) -> bool {
    json.windows(6).enumerate().any(|(i, w)| {
        w == b"\\u0000" && json[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0
    })
}

/// Refuses `value` when it is longer than `max` characters, the limit the document
/// states (`maxLength` counts characters, before any trimming).
///
/// # Errors
/// `422 invalid`, naming the field.
pub(crate) fn at_most(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::from(mainloop_engine::EngineError::Invalid(
            format!("{field} is longer than {max} characters"),
        )));
    }
    Ok(())
}

/// Path parameters. A malformed id is `400 bad_request`.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters. Unparsable values are `400 bad_request`.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The raw request body, for routes that must see the exact bytes (signatures). A body
/// over the limit is `413 too_large`, one that cannot be read `400 bad_request`.
#[derive(Debug, Clone, Default)]
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(Bytes::from_request(req, state).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::has_nul;

    #[test]
    fn nul_escapes_are_found_and_escaped_backslashes_are_not() {
        assert!(has_nul(br#"{"text": "a\u0000b"}"#));
        assert!(has_nul(br#"{"a\u0000": 1}"#));
        assert!(
            has_nul(br#"["\\\u0000"]"#),
            "an escaped backslash, then a NUL"
        );
        assert!(
            !has_nul(br#"{"text": "a\\u0000b"}"#),
            "a backslash, then text"
        );
        assert!(has_nul(br#"{"text": "\u00000"}"#), "a NUL, then a zero");
        assert!(
            !has_nul(br#"{"text": "\\\\u0000"}"#),
            "two backslashes, then text"
        );
        assert!(!has_nul(br#"{"text": "\u0001 u0000"}"#));
        assert!(!has_nul(b""));
    }
}

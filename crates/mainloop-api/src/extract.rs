//! Extractors for bodies, paths and query strings whose rejections are [`ApiError`]s,
//! so malformed input gets the API's JSON error shape (and never a 500).

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts};

/// A JSON request body. Wrong content type, malformed JSON and missing or mistyped
/// fields are `400 bad_request`; a body over the limit is `413 too_large`.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path parameters. A malformed id is `400 bad_request`.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters. Unparsable values are `400 bad_request`.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

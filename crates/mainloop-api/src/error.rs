//! The API's one error type: every failure, from a bad request to an engine error,
//! leaves as `{"error":{"code":"…","message":"…"}}` with a fitting status.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mainloop_engine::EngineError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable `code` and a human-readable `message`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `too_large`, `invalid`, `wrong_state`, `conflict`,
    /// `unavailable`, `internal`.
    pub code: String,
    pub message: String,
}

/// A failed request.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    #[must_use]
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    #[must_use]
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    #[must_use]
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    #[must_use]
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    #[must_use]
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    #[must_use]
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// A server-side failure. The details go to the log only: they may name files,
    /// queries or hosts the client has no business seeing.
    #[must_use]
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "request failed with an internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    #[must_use]
    pub const fn status(&self) -> StatusCode {
        self.status
    }

    #[must_use]
    pub const fn code(&self) -> &'static str {
        self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => Self::not_found(format!("{what} not found")),
            EngineError::Invalid(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            EngineError::Answers(a) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("invalid answers: {a}"),
            ),
            EngineError::WrongState(t) => {
                Self::new(StatusCode::CONFLICT, "wrong_state", t.to_string())
            }
            EngineError::Conflict(m) => {
                // The store's conflict text is a database message; keep it in the log.
                tracing::info!(detail = %m, "request hit a conflict");
                Self::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "a concurrent change won; reload and try again",
                )
            }
            EngineError::Unavailable(m) => {
                tracing::warn!(error = %m, "storage is unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    unavailable_reason(&m),
                )
            }
            EngineError::Internal(m) => Self::internal(&m),
            EngineError::RunnerLost(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "runner_unavailable", m)
            }
        }
    }
}

/// What the user is told when storage is away: the cause in plain words when the
/// database's own message names one the user can act on, from a fixed list so that no
/// database text (hosts, paths, SQL) reaches the answer.
fn unavailable_reason(detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    if d.contains("disk is full")
        || d.contains("no space left")
        || d.contains("could not extend file")
        || d.contains("disk full")
    {
        "the database's disk is full; reading works, and writing will again once space is freed"
    } else if d.contains("refuses writes") || d.contains("read-only") || d.contains("readonly") {
        "the database is refusing writes for now; reading works, try again later"
    } else if d.contains("database is locked") || d.contains("database is busy") {
        "the database is locked by another program; try again shortly"
    } else {
        "storage is unavailable; try again shortly"
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::too_large("the request body is too large");
        }
        match r {
            JsonRejection::MissingJsonContentType(_) => {
                Self::bad_request("expected a JSON body with `Content-Type: application/json`")
            }
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::too_large("the request body is too large");
        }
        Self::bad_request(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        match r {
            PathRejection::FailedToDeserializePathParams(e) => {
                Self::bad_request(format!("malformed path: {}", e.body_text()))
            }
            // A route declared without the parameter its handler reads: our bug.
            other => Self::internal(&other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::unavailable_reason;

    #[test]
    fn storage_outages_name_a_cause_the_user_can_act_on_and_nothing_else() {
        let disk = [
            "database unavailable: error returned from database: (code: 13) database or disk is full",
            "database unavailable: could not extend file \"base/16384/2619\": No space left on device",
        ];
        for d in disk {
            assert!(unavailable_reason(d).contains("disk is full"), "{d}");
        }
        let refused = "database unavailable: the database refuses writes: cannot execute INSERT in a read-only transaction";
        assert!(unavailable_reason(refused).contains("refusing writes"));
        let locked =
            "database unavailable: error returned from database: (code: 5) database is locked";
        assert!(unavailable_reason(locked).contains("locked by another program"));
        let other = "database unavailable: pool timed out while waiting for an open connection to db.internal:5432";
        assert_eq!(
            unavailable_reason(other),
            "storage is unavailable; try again shortly"
        );
        for d in [disk[0], disk[1], refused, locked, other] {
            let told = unavailable_reason(d);
            assert!(!told.contains("code") && !told.contains("5432") && !told.contains("INSERT"));
        }
    }
}

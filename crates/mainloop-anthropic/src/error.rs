//! Maps Anthropic's error payloads and HTTP statuses onto the port's `ModelError`.

use mainloop_model::ModelError;
use serde_json::Value;
use std::time::Duration;

/// The error for a non-success HTTP reply. `body` should already be free of secrets.
pub fn from_status(status: u16, retry_after: Option<Duration>, body: &str) -> ModelError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| message_of(&v))
        .unwrap_or_else(|| {
            // Proxies answer with HTML or plain text; a short excerpt is enough to diagnose.
            let excerpt: String = body.trim().chars().take(300).collect();
            if excerpt.is_empty() {
                format!("HTTP {status}")
            } else {
                excerpt
            }
        });
    match status {
        401 | 403 => ModelError::Unauthorized(message),
        429 => ModelError::RateLimited { retry_after },
        529 => ModelError::Overloaded { retry_after },
        400..=499 => ModelError::BadRequest(message),
        _ => ModelError::Server { status, message },
    }
}

/// The error for an `error` event inside an otherwise successful stream, where only the
/// payload's `error.type` says what went wrong.
pub fn from_event(data: &Value) -> ModelError {
    let kind = data
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("unknown_error");
    let message = message_of(data).unwrap_or_else(|| kind.to_owned());
    match kind {
        "overloaded_error" => ModelError::Overloaded { retry_after: None },
        "rate_limit_error" => ModelError::RateLimited { retry_after: None },
        "authentication_error" | "permission_error" => ModelError::Unauthorized(message),
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            ModelError::BadRequest(message)
        }
        "timeout_error" => ModelError::Server {
            status: 504,
            message,
        },
        // `api_error` and anything newer: the provider failed, not us.
        _ => ModelError::Server {
            status: 500,
            message,
        },
    }
}

/// `Retry-After` in its delay-seconds form; the HTTP-date form is not used by the API.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

fn message_of(payload: &Value) -> Option<String> {
    payload
        .pointer("/error/message")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_map_to_port_errors() {
        let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: required"}}"#;
        assert_eq!(
            from_status(400, None, body),
            ModelError::BadRequest("max_tokens: required".into())
        );
        assert_eq!(
            from_status(403, None, ""),
            ModelError::Unauthorized("HTTP 403".into())
        );
        assert_eq!(
            from_status(413, None, "too big"),
            ModelError::BadRequest("too big".into())
        );
        let wait = Some(Duration::from_secs(2));
        assert_eq!(
            from_status(529, wait, body),
            ModelError::Overloaded { retry_after: wait }
        );
        assert_eq!(
            from_status(502, None, "<html>bad gateway</html>"),
            ModelError::Server {
                status: 502,
                message: "<html>bad gateway</html>".into()
            }
        );
    }

    #[test]
    fn stream_error_events_map_by_type() {
        let event = |kind: &str| json!({"type": "error", "error": {"type": kind, "message": "m"}});
        assert_eq!(
            from_event(&event("overloaded_error")),
            ModelError::Overloaded { retry_after: None }
        );
        assert_eq!(
            from_event(&event("rate_limit_error")),
            ModelError::RateLimited { retry_after: None }
        );
        assert_eq!(
            from_event(&event("permission_error")),
            ModelError::Unauthorized("m".into())
        );
        assert_eq!(
            from_event(&event("api_error")),
            ModelError::Server {
                status: 500,
                message: "m".into()
            }
        );
        assert_eq!(
            from_event(&json!("garbage")),
            ModelError::Server {
                status: 500,
                message: "unknown_error".into()
            }
        );
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("1e300"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}

//! Maps Anthropic's error payloads and HTTP statuses onto the port's `ModelError`.

use mainloop_model::ModelError;
use serde_json::Value;
use std::time::Duration;

/// The headers that classify a failed reply beyond its status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// `retry-after`, in its delay-seconds form.
    pub retry_after: Option<Duration>,
    /// `anthropic-ratelimit-unified-status: rejected`: the account's usage allowance
    /// (a subscription window or a spend limit) is spent, not a momentary rate limit.
    pub unified_rejected: bool,
    /// `anthropic-ratelimit-unified-reset`, unix seconds.
    pub unified_reset: Option<u64>,
}

impl Limits {
    /// Reads the headers through `get` (a header map lookup, lower-case names).
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self {
            retry_after: get("retry-after").and_then(parse_retry_after),
            unified_rejected: get("anthropic-ratelimit-unified-status")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("rejected")),
            unified_reset: get("anthropic-ratelimit-unified-reset")
                .and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// The error for a non-success HTTP reply. `body` should already be free of secrets.
pub fn from_status(status: u16, limits: Limits, body: &str) -> ModelError {
    let retry_after = limits.retry_after;
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
        429 if limits.unified_rejected => ModelError::UsageLimit {
            resets_at: limits.unified_reset,
        },
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
            from_status(400, Limits::default(), body),
            ModelError::BadRequest("max_tokens: required".into())
        );
        assert_eq!(
            from_status(403, Limits::default(), ""),
            ModelError::Unauthorized("HTTP 403".into())
        );
        assert_eq!(
            from_status(413, Limits::default(), "too big"),
            ModelError::BadRequest("too big".into())
        );
        let wait = Some(Duration::from_secs(2));
        assert_eq!(
            from_status(
                529,
                Limits {
                    retry_after: wait,
                    ..Limits::default()
                },
                body
            ),
            ModelError::Overloaded { retry_after: wait }
        );
        assert_eq!(
            from_status(502, Limits::default(), "<html>bad gateway</html>"),
            ModelError::Server {
                status: 502,
                message: "<html>bad gateway</html>".into()
            }
        );
    }

    #[test]
    fn a_rejected_unified_limit_is_a_usage_limit_and_a_plain_429_a_rate_limit() {
        let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}"#;
        let rejected: &[(&str, &str)] = &[
            ("retry-after", "3600"),
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", "1796529488"),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour",
            ),
            ("anthropic-ratelimit-unified-overage-status", "rejected"),
        ];
        let limits = |headers: &'static [(&'static str, &'static str)]| {
            Limits::from_headers(|name| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v))
        };
        assert_eq!(
            from_status(429, limits(rejected), body),
            ModelError::UsageLimit {
                resets_at: Some(1_796_529_488)
            }
        );
        assert_eq!(
            from_status(
                429,
                limits(&[("anthropic-ratelimit-unified-status", "rejected")]),
                body
            ),
            ModelError::UsageLimit { resets_at: None }
        );
        assert_eq!(
            from_status(429, limits(&[("retry-after", "1")]), body),
            ModelError::RateLimited {
                retry_after: Some(Duration::from_secs(1))
            }
        );
        assert_eq!(
            from_status(
                429,
                limits(&[("anthropic-ratelimit-unified-status", "allowed")]),
                body
            ),
            ModelError::RateLimited { retry_after: None }
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

//! Errors: the crate's own (setting up the client, the askpass script, git URLs) and the
//! mapping of GitHub's HTTP answers onto the port's `ForgeError`.

use crate::ratelimit::{self, RateLimit};
use mainloop_forge::{ForgeError, MergeOutcome};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// What can go wrong before any request is made.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// The configuration cannot work (a URL that does not parse, a token that is not a
    /// valid header value, a git URL template without placeholders, …).
    #[error("invalid GitHub configuration: {0}")]
    Config(String),
    /// Writing the askpass script failed.
    #[error("cannot write the git askpass script {path}: {source}")]
    Askpass {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// GitHub's documented advice for a secondary rate limit without headers: wait a minute.
const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// The `ForgeError` for a non-success answer. `body` is the raw body; its `message` (and
/// the validation `errors`) are quoted so the caller sees what GitHub objected to.
pub fn from_status(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> ForgeError {
    let message = message_of(status, body);
    if matches!(status, 403 | 429) {
        if let Some(wait) = rate_limit_wait(headers, now) {
            return ForgeError::RateLimited(wait);
        }
        // Secondary limits sometimes come without headers; the message says so.
        if status == 429 || message.to_ascii_lowercase().contains("rate limit") {
            return ForgeError::RateLimited(SECONDARY_LIMIT_WAIT);
        }
    }
    match status {
        401 | 403 => ForgeError::Unauthorized(message),
        404 | 410 => ForgeError::NotFound(message),
        400 | 405 | 409 | 422 => ForgeError::Rejected(message),
        500..=599 => ForgeError::Unavailable(message),
        _ => ForgeError::Protocol(message),
    }
}

/// A refused merge as an outcome when it is one: GitHub answers 409 when the base (or
/// head) branch moved while it merged, and 405 when the pull request cannot be merged as
/// it stands (a conflict, a draft, a branch rule; also "Base branch was modified").
/// Anything else stays an error.
pub fn merge_refusal(e: ForgeError) -> Result<MergeOutcome, ForgeError> {
    let ForgeError::Rejected(message) = e else {
        return Err(e);
    };
    // `message_of` starts every message with the status.
    let status = message
        .strip_prefix("HTTP ")
        .and_then(|m| m.get(..3))
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(409) => Ok(MergeOutcome::Raced(message)),
        Some(405) if message.contains("was modified") => Ok(MergeOutcome::Raced(message)),
        Some(405) => Ok(MergeOutcome::NotMergeable(message)),
        _ => Err(ForgeError::Rejected(message)),
    }
}

/// How long a 403/429 says to wait: `retry-after` first (secondary limits), else the
/// primary limit's reset when it is exhausted.
fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(secs) = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(secs));
    }
    let limit = RateLimit::from_headers(headers)?;
    (limit.remaining == 0).then(|| ratelimit::wait_until(limit.reset, now))
}

/// `HTTP <status>: <message>[ (<field errors>)]`, or an excerpt of a non-JSON body.
fn message_of(status: u16, body: &[u8]) -> String {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let main = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            // Proxies answer with HTML or text; a short excerpt is enough to diagnose.
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(200)
                .collect()
        });
    let details: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| match e {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => o
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| {
                            let field = o.get("field").and_then(Value::as_str)?;
                            let code = o.get("code").and_then(Value::as_str).unwrap_or("invalid");
                            Some(format!("{field}: {code}"))
                        }),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = format!("HTTP {status}");
    if !main.is_empty() {
        out.push_str(": ");
        out.push_str(&main);
    }
    if !details.is_empty() {
        out.push_str(" (");
        out.push_str(&details.join("; "));
        out.push(')');
    }
    out
}

/// A transport failure (connection refused, reset, timeout): always worth retrying.
pub fn transport(e: reqwest::Error) -> ForgeError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // Without the URL: a log download's URL is a signed capability.
    let e = e.without_url();
    ForgeError::Unavailable(format!("{what}: {}", chain(&e)))
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Reading an answer that should have been JSON of a known shape.
pub fn protocol(what: &str, e: &serde_json::Error) -> ForgeError {
    ForgeError::Protocol(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = v.parse() {
                h.insert(*k, v);
            }
        }
        h
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn map(status: u16, h: &[(&'static str, &str)], body: &str) -> ForgeError {
        from_status(status, &headers(h), body.as_bytes(), now())
    }

    #[test]
    fn merge_refusals_that_updating_or_waiting_cures_are_outcomes() {
        let raced = |status, msg: &str| {
            merge_refusal(map(status, &[], &format!(r#"{{"message":"{msg}"}}"#)))
        };
        assert!(matches!(
            raced(
                409,
                "Base branch was modified. Review and try the merge again."
            ),
            Ok(MergeOutcome::Raced(_))
        ));
        assert!(matches!(
            raced(
                409,
                "Head branch was modified. Review and try the merge again."
            ),
            Ok(MergeOutcome::Raced(_))
        ));
        assert!(matches!(
            raced(
                405,
                "Base branch was modified. Review and try the merge again."
            ),
            Ok(MergeOutcome::Raced(_))
        ));
        assert!(matches!(
            raced(405, "Pull Request is not mergeable"),
            Ok(MergeOutcome::NotMergeable(m)) if m.contains("not mergeable")
        ));
        assert!(matches!(
            raced(422, "Validation Failed"),
            Err(ForgeError::Rejected(_))
        ));
        assert!(matches!(
            raced(503, "unavailable"),
            Err(ForgeError::Unavailable(_))
        ));
    }

    #[test]
    fn primary_rate_limit_waits_until_reset() {
        let e = map(
            403,
            &[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000090"),
                ("x-ratelimit-resource", "core"),
            ],
            r#"{"message":"API rate limit exceeded for user ID 1.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}"#,
        );
        assert!(
            matches!(e, ForgeError::RateLimited(d) if d == Duration::from_secs(90)),
            "{e:?}"
        );
        // A reset already past still means "retry shortly", never zero.
        let e = map(
            429,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1600000000"),
            ],
            "{}",
        );
        assert!(
            matches!(e, ForgeError::RateLimited(d) if d == Duration::from_secs(1)),
            "{e:?}"
        );
    }

    #[test]
    fn secondary_rate_limit_uses_retry_after_or_a_minute() {
        let e = map(
            403,
            &[("retry-after", "30")],
            r#"{"message":"You have exceeded a secondary rate limit."}"#,
        );
        assert!(
            matches!(e, ForgeError::RateLimited(d) if d == Duration::from_secs(30)),
            "{e:?}"
        );
        let e = map(
            403,
            &[],
            r#"{"message":"You have exceeded a secondary rate limit."}"#,
        );
        assert!(
            matches!(e, ForgeError::RateLimited(d) if d == Duration::from_secs(60)),
            "{e:?}"
        );
        let e = map(429, &[], "");
        assert!(matches!(e, ForgeError::RateLimited(_)), "{e:?}");
    }

    #[test]
    fn auth_and_not_found() {
        let e = map(401, &[], r#"{"message":"Bad credentials"}"#);
        assert!(
            matches!(&e, ForgeError::Unauthorized(m) if m == "HTTP 401: Bad credentials"),
            "{e:?}"
        );
        // 403 with quota left is a permission problem, not a rate limit.
        let e = map(
            403,
            &[
                ("x-ratelimit-remaining", "4999"),
                ("x-ratelimit-reset", "1700000090"),
            ],
            r#"{"message":"Resource not accessible by integration"}"#,
        );
        assert!(matches!(e, ForgeError::Unauthorized(_)), "{e:?}");
        assert!(matches!(
            map(404, &[], r#"{"message":"Not Found"}"#),
            ForgeError::NotFound(_)
        ));
        assert!(matches!(
            map(410, &[], r#"{"message":"Issues are disabled"}"#),
            ForgeError::NotFound(_)
        ));
    }

    #[test]
    fn rejections_quote_github() {
        let e = map(
            422,
            &[],
            r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists for octo:feature."},{"resource":"Issue","field":"title","code":"missing_field"}],"documentation_url":"https://docs.github.com/rest"}"#,
        );
        assert_eq!(
            e.to_string(),
            "the forge rejected the request: HTTP 422: Validation Failed (A pull request already exists for octo:feature.; title: missing_field)"
        );
        assert!(
            matches!(map(405, &[], r#"{"message":"Pull Request is not mergeable"}"#), ForgeError::Rejected(m) if m.contains("not mergeable"))
        );
        assert!(matches!(
            map(409, &[], r#"{"message":"Head branch was modified."}"#),
            ForgeError::Rejected(_)
        ));
    }

    #[test]
    fn server_errors_are_transient() {
        for status in [500, 502, 503, 504] {
            let e = map(status, &[], "<html>Bad gateway</html>");
            assert!(e.is_transient(), "{status}: {e:?}");
            assert!(e.to_string().contains("Bad gateway"), "{e}");
        }
        assert!(matches!(map(418, &[], ""), ForgeError::Protocol(m) if m == "HTTP 418"));
    }
}

//! Forge webhooks: `POST /api/webhooks/github` checks GitHub's HMAC signature, then wakes
//! the watch of every task mirrored to the issue or pull request the delivery is about,
//! so a comment, review, merge or CI result is acted on at once (polling stays the
//! fallback for missed deliveries).

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiBytes;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use utoipa::ToSchema;

/// What a delivery did.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookOutcome {
    /// Tasks whose watch was woken.
    pub woken: usize,
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`,
/// compared in constant time.
#[must_use]
pub fn signature_valid(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The issue and pull request numbers a delivery is about.
fn numbers(payload: &Value) -> Vec<i64> {
    let mut out = Vec::new();
    for key in ["issue", "pull_request"] {
        if let Some(n) = payload
            .get(key)
            .and_then(|o| o.get("number"))
            .and_then(Value::as_i64)
        {
            out.push(n);
        }
    }
    for key in ["check_run", "check_suite"] {
        if let Some(prs) = payload
            .get(key)
            .and_then(|o| o.get("pull_requests"))
            .and_then(Value::as_array)
        {
            out.extend(
                prs.iter()
                    .filter_map(|p| p.get("number").and_then(Value::as_i64)),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Receives a GitHub webhook delivery.
#[utoipa::path(
    post,
    path = "/api/webhooks/github",
    operation_id = "github_webhook",
    tag = "webhooks",
    security(()),
    request_body(content = Object, description = "A GitHub webhook payload, signed in `X-Hub-Signature-256`"),
    params(
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of the body under the webhook secret"),
        ("X-GitHub-Event" = String, Header, description = "The event name (`ping`, `issue_comment`, `pull_request_review`, …)"),
    ),
    responses(
        (status = 202, description = "Accepted; matching tasks poll GitHub now", body = WebhookOutcome),
        (status = 400, description = "Not a JSON payload", body = ErrorBody),
        (status = 401, description = "Missing or wrong signature", body = ErrorBody),
        (status = 404, description = "Webhooks are not configured (no secret)", body = ErrorBody),
    )
)]
pub async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<(StatusCode, Json<WebhookOutcome>)> {
    let Some(secret) = state.engine.config().forge_webhook_secret.clone() else {
        return Err(ApiError::not_found("webhooks are not configured"));
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !signature_valid(secret.0.as_bytes(), &body, signature) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "the X-Hub-Signature-256 signature does not match this payload",
        ));
    }
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if event == "ping" {
        return Ok((StatusCode::ACCEPTED, Json(WebhookOutcome { woken: 0 })));
    }
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the payload is not JSON: {e}")))?;
    let Some(repo) = payload
        .get("repository")
        .and_then(|r| r.get("full_name"))
        .and_then(Value::as_str)
        // No mirrored repository has a NUL in its name, and PostgreSQL would refuse
        // the lookup with an error rather than find nothing.
        .filter(|r| !r.contains('\0'))
    else {
        return Ok((StatusCode::ACCEPTED, Json(WebhookOutcome { woken: 0 })));
    };
    let woken = state.engine.forge_webhook(repo, &numbers(&payload)).await?;
    Ok((StatusCode::ACCEPTED, Json(WebhookOutcome { woken })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_verify_and_forgeries_do_not() {
        let body = br#"{"action":"created"}"#;
        let good = sign(b"s3cret", body);
        assert!(signature_valid(b"s3cret", body, &good));
        assert!(!signature_valid(b"other", body, &good), "wrong secret");
        assert!(
            !signature_valid(b"s3cret", br#"{"action":"deleted"}"#, &good),
            "changed body"
        );
        assert!(!signature_valid(
            b"s3cret",
            body,
            &good.replace("sha256=", "sha1=")
        ));
        assert!(!signature_valid(b"s3cret", body, "sha256=zz"));
        assert!(!signature_valid(b"s3cret", body, ""));
        let mut flipped = good.into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert!(!signature_valid(
            b"s3cret",
            body,
            &String::from_utf8(flipped).unwrap()
        ));
    }

    #[test]
    fn numbers_come_from_issues_pull_requests_and_checks() {
        let v: Value = serde_json::json!({
            "issue": {"number": 4},
            "check_run": {"pull_requests": [{"number": 9}, {"number": 4}]}
        });
        assert_eq!(numbers(&v), vec![4, 9]);
        assert!(numbers(&serde_json::json!({"zen": "hi"})).is_empty());
    }
}

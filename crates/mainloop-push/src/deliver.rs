//! One delivery attempt over HTTP: a Web Push request to one subscription's endpoint, or
//! a POST to an ntfy topic, classified as delivered, gone, rejected or worth a retry.

use crate::{PushConfig, PushError, encrypt, vapid};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mainloop_domain::TaskId;
use mainloop_engine::{Notification, NotificationKind};
use mainloop_engine::{PushSubscription, VapidKeys};
use reqwest::StatusCode;
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest notification body sent: a lock screen shows a few lines, and the encrypted
/// message must fit one 4 KiB record.
const MAX_BODY_CHARS: usize = 1_000;

/// The JSON the web app's service worker receives (a contract with the web app).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PushMessage {
    pub title: String,
    pub body: String,
    /// A path in the web app: `/tasks/<task_id>?item=<item_id>`, `/inbox` or `/settings`.
    pub url: String,
    /// The notification's tag: a second message for the same item replaces the first.
    pub tag: String,
    pub item_id: String,
    pub task_id: Option<TaskId>,
    pub kind: NotificationKind,
}

impl PushMessage {
    #[must_use]
    pub fn from_notification(n: &Notification) -> Self {
        Self {
            title: n.title.clone(),
            body: truncate(&n.body, MAX_BODY_CHARS),
            url: n.url(),
            tag: n.item_id.clone(),
            item_id: n.item_id.clone(),
            task_id: n.task_id,
            kind: n.kind,
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{}…", cut.trim_end())
    }
}

/// The `Topic` header for an item: at most 32 characters of the base64url alphabet
/// (RFC 8030 §5.4), so the push service replaces an undelivered earlier copy.
#[must_use]
pub fn push_topic(item_id: &str) -> String {
    item_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(32)
        .collect()
}

/// How one delivery went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// The subscription no longer exists (404/410): forget it.
    Gone,
    /// Refused for good (another 4xx, or our own bad data): retrying would not help.
    Rejected(String),
    /// Worth another attempt later (429, 5xx, network).
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
}

fn classify(status: StatusCode, retry_after: Option<Duration>, what: &str) -> Outcome {
    if status.is_success() {
        Outcome::Delivered
    } else if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        Outcome::Gone
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Outcome::Retry {
            message: format!("{what} answered {status}"),
            retry_after,
        }
    } else {
        Outcome::Rejected(format!("{what} answered {status}"))
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The origin of a URL, for logs: endpoints are capabilities and must not be logged whole.
pub(crate) fn origin_of(endpoint: &str) -> String {
    url::Url::parse(endpoint).map_or_else(
        |_| "(invalid URL)".to_owned(),
        |u| u.origin().ascii_serialization(),
    )
}

fn prepare(
    sub: &PushSubscription,
    keys: &VapidKeys,
    config: &PushConfig,
    message: &PushMessage,
) -> Result<(url::Url, String, Vec<u8>), PushError> {
    let endpoint =
        url::Url::parse(&sub.endpoint).map_err(|e| PushError::Endpoint(e.to_string()))?;
    let auth_header = vapid::authorization(keys, &endpoint, &config.vapid_subject, unix_now())?;
    let p256dh = URL_SAFE_NO_PAD
        .decode(&sub.p256dh)
        .map_err(|_| PushError::Key("p256dh is not base64url".into()))?;
    let auth = URL_SAFE_NO_PAD
        .decode(&sub.auth)
        .map_err(|_| PushError::Key("auth is not base64url".into()))?;
    let json = serde_json::to_vec(message).map_err(|e| PushError::Client(e.to_string()))?;
    let body = encrypt(&json, &p256dh, &auth)?;
    Ok((endpoint, auth_header, body))
}

/// Sends one Web Push message to one subscription.
pub async fn send_web_push(
    client: &reqwest::Client,
    sub: &PushSubscription,
    keys: &VapidKeys,
    config: &PushConfig,
    message: &PushMessage,
) -> Outcome {
    let (endpoint, auth_header, body) = match prepare(sub, keys, config, message) {
        Ok(parts) => parts,
        Err(e) => return Outcome::Rejected(e.to_string()),
    };
    let urgency = if message.kind.urgent() {
        "high"
    } else {
        "normal"
    };
    let result = client
        .post(endpoint)
        .header(reqwest::header::AUTHORIZATION, auth_header)
        .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header("TTL", config.ttl.as_secs().to_string())
        .header("Urgency", urgency)
        .header("Topic", push_topic(&message.item_id))
        .body(body)
        .send()
        .await;
    match result {
        Ok(resp) => classify(resp.status(), retry_after(&resp), "the push service"),
        Err(e) => Outcome::Retry {
            message: format!("the push service is unreachable: {e}"),
            retry_after: None,
        },
    }
}

/// A header value ntfy reads as UTF-8: plain ASCII as is, anything else as an RFC 2047
/// encoded word (HTTP header values cannot carry raw UTF-8).
fn ntfy_header(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.is_ascii() {
        clean
    } else {
        format!("=?UTF-8?B?{}?=", STANDARD.encode(clean.as_bytes()))
    }
}

fn ntfy_tags(kind: NotificationKind) -> &'static str {
    // ntfy shows known tags as emoji.
    match kind {
        NotificationKind::Question => "question",
        NotificationKind::PlanReview => "memo",
        NotificationKind::Review => "eyes",
        NotificationKind::Failed => "x",
        NotificationKind::Budget => "moneybag",
        NotificationKind::Test => "bell",
    }
}

/// POSTs the notification to an ntfy topic URL.
pub async fn send_ntfy(
    client: &reqwest::Client,
    url: &str,
    config: &PushConfig,
    message: &PushMessage,
) -> Outcome {
    let priority = if message.kind.urgent() {
        "high"
    } else {
        "default"
    };
    let mut request = client
        .post(url)
        .header("Title", ntfy_header(&message.title))
        .header("Priority", priority)
        .header("Tags", ntfy_tags(message.kind))
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(message.body.clone());
    if let Some(base) = &config.public_url {
        request = request.header(
            "Click",
            format!("{}{}", base.trim_end_matches('/'), message.url),
        );
    }
    match request.send().await {
        Ok(resp) => classify(resp.status(), retry_after(&resp), "ntfy"),
        Err(e) => Outcome::Retry {
            message: format!("ntfy is unreachable: {e}"),
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mainloop_domain::Timestamp;
    use serde_json::json;

    #[test]
    fn the_payload_has_the_web_apps_shape() {
        let task = TaskId::new_v7(Timestamp::from_millis(1));
        let n = Notification {
            user_id: None,
            item_id: "0190a0b1-c2d3-7e4f-8a9b-0c1d2e3f4a5b".into(),
            task_id: Some(task),
            kind: NotificationKind::PlanReview,
            title: "Plan ready: x".into(),
            body: "y".repeat(5_000),
        };
        let m = PushMessage::from_notification(&n);
        let v = serde_json::to_value(&m).unwrap();
        // Sorted: the map's own order depends on serde_json's `preserve_order` feature.
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["body", "item_id", "kind", "tag", "task_id", "title", "url"]
        );
        assert_eq!(v["kind"], "plan_review");
        assert_eq!(v["tag"], n.item_id);
        assert_eq!(v["task_id"], json!(task.to_string()));
        assert_eq!(v["url"], format!("/tasks/{task}?item={}", n.item_id));
        assert_eq!(m.body.chars().count(), MAX_BODY_CHARS);
        let none = PushMessage::from_notification(&Notification { task_id: None, ..n });
        assert_eq!(serde_json::to_value(&none).unwrap()["task_id"], json!(null));
        assert_eq!(none.url, "/inbox");
    }

    #[test]
    fn topics_are_short_and_url_safe() {
        let t = push_topic("0190a0b1-c2d3-7e4f-8a9b-0c1d2e3f4a5b");
        assert_eq!(t, "0190a0b1c2d37e4f8a9b0c1d2e3f4a5b");
        assert!(push_topic(&"z".repeat(100)).len() == 32);
    }

    #[test]
    fn statuses_are_classified() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), None, "x");
        assert_eq!(c(201), Outcome::Delivered);
        assert_eq!(c(404), Outcome::Gone);
        assert_eq!(c(410), Outcome::Gone);
        assert!(matches!(c(429), Outcome::Retry { .. }));
        assert!(matches!(c(503), Outcome::Retry { .. }));
        assert!(matches!(c(400), Outcome::Rejected(_)));
        assert!(matches!(c(403), Outcome::Rejected(_)));
    }

    #[test]
    fn ntfy_headers_carry_utf8_as_encoded_words() {
        assert_eq!(ntfy_header("Plain\ntitle"), "Plain title");
        assert_eq!(ntfy_header("Fix — it"), "=?UTF-8?B?Rml4IOKAlCBpdA==?=");
    }
}

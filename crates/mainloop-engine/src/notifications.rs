//! Notifications for the human: the durable `notify` job enqueued with every new inbox
//! item, the VAPID key pair (made on first need), and the services behind the
//! notification settings (push subscriptions, the ntfy topic URL, a test message).
//! Delivery itself is a job handler in another crate (`mainloop-push`).

use crate::{Engine, EngineError, Result, now};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mainloop_domain::inbox::InboxKind;
use mainloop_domain::records::InboxItem;
use mainloop_domain::{PushSubscriptionId, TaskId, Timestamp, UserId};
use mainloop_store::{NewPushSubscription, PushSubscription, Tx, VapidKeys};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde::{Deserialize, Serialize};

const MAX_URL: usize = 2_048;
const MAX_USER_AGENT: usize = 512;

/// What a notification is about (the inbox kinds' names, plus `test`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Question,
    PlanReview,
    Review,
    Failed,
    Budget,
    /// Sent from the settings page to check the channels work.
    Test,
}

impl From<InboxKind> for NotificationKind {
    fn from(kind: InboxKind) -> Self {
        match kind {
            InboxKind::Question => Self::Question,
            InboxKind::PlanReview => Self::PlanReview,
            InboxKind::Review => Self::Review,
            InboxKind::Failed => Self::Failed,
            InboxKind::Budget => Self::Budget,
        }
    }
}

impl NotificationKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Question => "question",
            Self::PlanReview => "plan_review",
            Self::Review => "review",
            Self::Failed => "failed",
            Self::Budget => "budget",
            Self::Test => "test",
        }
    }

    /// A worker is blocked until the human answers questions or a plan.
    #[must_use]
    pub const fn urgent(self) -> bool {
        matches!(self, Self::Question | Self::PlanReview)
    }
}

/// The `notify` job's payload: everything delivery needs, fixed when the item opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Whom it is for (absent in jobs queued by earlier versions: the job row's user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The inbox item's id (a fresh uuid for a test). It names the message everywhere
    /// (push `Topic`, the browser notification's tag), so a resend replaces the first.
    pub item_id: String,
    pub task_id: Option<TaskId>,
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
}

impl Notification {
    /// The notification for a new inbox item.
    #[must_use]
    pub fn for_item(item: &InboxItem) -> Self {
        Self {
            user_id: None,
            item_id: item.id.to_string(),
            task_id: item.task_id,
            kind: item.kind.into(),
            title: item.title.clone(),
            body: item.body.clone(),
        }
    }

    /// Where the web app shows it (a path; clients prefix their origin).
    #[must_use]
    pub fn url(&self) -> String {
        match (self.kind, self.task_id) {
            (NotificationKind::Test, _) => "/settings".to_owned(),
            (_, Some(task)) => format!("/tasks/{task}?item={}", self.item_id),
            (_, None) => "/inbox".to_owned(),
        }
    }
}

/// Enqueues delivery of a new inbox item's notification, inside the transaction that
/// opens the item, so the item and its notification commit (or vanish) together.
pub(crate) async fn enqueue_notification(
    tx: &mut Tx,
    user: UserId,
    item: &InboxItem,
    at: Timestamp,
) -> Result<()> {
    enqueue(tx, user, &Notification::for_item(item), at).await
}

async fn enqueue(tx: &mut Tx, user: UserId, n: &Notification, at: Timestamp) -> Result<()> {
    let job = Notification {
        user_id: Some(user),
        ..n.clone()
    };
    crate::jobs::enqueue(tx, &job, at, at).await
}

/// The notification settings page: the key browsers subscribe with, and the channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationOverview {
    /// The VAPID public key, base64url without padding (65-byte uncompressed point).
    pub vapid_public_key: String,
    pub ntfy_url: Option<String>,
    pub subscriptions: Vec<PushSubscription>,
}

/// A browser's subscription as it arrives (keys base64url, padding optional).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterPush {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    pub user_agent: Option<String>,
}

/// A new random VAPID key pair.
fn generate_vapid_keys() -> VapidKeys {
    let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let public = secret.public_key().to_encoded_point(false);
    VapidKeys {
        public_key: URL_SAFE_NO_PAD.encode(public.as_bytes()),
        private_key: URL_SAFE_NO_PAD.encode(secret.to_bytes()),
    }
}

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::Invalid(message.into())
}

/// Parses an http(s) URL with a host, at most [`MAX_URL`] bytes long.
fn parse_http_url(raw: &str, what: &str) -> Result<url::Url> {
    if raw.len() > MAX_URL {
        return Err(invalid(format!("{what} is longer than {MAX_URL} bytes")));
    }
    let url =
        url::Url::parse(raw).map_err(|e| invalid(format!("{what} must be an http(s) URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(format!("{what} must be an http(s) URL")));
    }
    Ok(url)
}

/// A push endpoint must be https; plain http is accepted for loopback hosts only (a
/// local test service), since a push message's metadata would otherwise travel in clear.
pub fn validate_push_endpoint(raw: &str) -> Result<()> {
    let url = parse_http_url(raw, "endpoint")?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        return Err(invalid(
            "endpoint must be an https URL (http only for loopback hosts)",
        ));
    }
    Ok(())
}

/// Decodes a base64url key (padding optional; standard base64 tolerated).
fn decode_key(raw: &str, what: &str) -> Result<Vec<u8>> {
    let normalised: String = raw
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD
        .decode(normalised)
        .map_err(|_| invalid(format!("{what} must be base64url")))
}

/// Checks a subscription and returns it normalised (keys base64url without padding).
pub fn validate_push_subscription(req: &RegisterPush) -> Result<NewPushSubscription> {
    validate_push_endpoint(&req.endpoint)?;
    let p256dh = decode_key(&req.p256dh, "keys.p256dh")?;
    if p256dh.len() != 65 || p256dh.first() != Some(&4) {
        return Err(invalid(
            "keys.p256dh must be an uncompressed P-256 public key (65 bytes)",
        ));
    }
    if p256::PublicKey::from_sec1_bytes(&p256dh).is_err() {
        return Err(invalid("keys.p256dh is not a point on the P-256 curve"));
    }
    let auth = decode_key(&req.auth, "keys.auth")?;
    if auth.len() != 16 {
        return Err(invalid("keys.auth must be a 16-byte secret"));
    }
    let user_agent = req
        .user_agent
        .as_deref()
        .map(|ua| {
            ua.chars()
                .filter(|c| !c.is_control())
                .take(MAX_USER_AGENT)
                .collect::<String>()
        })
        .filter(|ua| !ua.trim().is_empty());
    Ok(NewPushSubscription {
        endpoint: req.endpoint.clone(),
        p256dh: URL_SAFE_NO_PAD.encode(p256dh),
        auth: URL_SAFE_NO_PAD.encode(auth),
        user_agent,
    })
}

/// An ntfy topic URL: http(s) (ntfy servers on a home network often use plain http).
/// Blank means none.
pub fn validate_ntfy_url(raw: Option<&str>) -> Result<Option<String>> {
    match raw.map(str::trim).filter(|u| !u.is_empty()) {
        None => Ok(None),
        Some(u) => {
            parse_http_url(u, "url")?;
            Ok(Some(u.to_owned()))
        }
    }
}

impl Engine {
    /// The VAPID key pair, made and stored on first need and kept forever (browsers
    /// subscribed with its public half; a new pair would orphan every subscription).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn vapid_keys(&self) -> Result<VapidKeys> {
        if let Some(keys) = self.store().vapid_keys().await? {
            return Ok(keys);
        }
        let mut tx = self.store().begin().await?;
        if tx.insert_vapid_keys(&generate_vapid_keys(), now()).await? {
            tracing::info!("created the VAPID key pair for Web Push");
        }
        tx.commit().await?;
        // Whichever pair won a race is the one stored.
        self.store()
            .vapid_keys()
            .await?
            .ok_or_else(|| EngineError::Internal("the VAPID key pair vanished".into()))
    }

    /// The user's notification settings with the key browsers subscribe with.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn notification_overview(&self, user: UserId) -> Result<NotificationOverview> {
        let keys = self.vapid_keys().await?;
        let settings = self.store().notification_settings(user).await?;
        let subscriptions = self.store().push_subscriptions(user).await?;
        Ok(NotificationOverview {
            vapid_public_key: keys.public_key,
            ntfy_url: settings.ntfy_url,
            subscriptions,
        })
    }

    /// Registers (or refreshes, by endpoint) a browser's push subscription.
    ///
    /// # Errors
    /// `Invalid` for a bad endpoint or keys; storage failures.
    pub async fn register_push_subscription(
        &self,
        user: UserId,
        req: &RegisterPush,
    ) -> Result<PushSubscription> {
        let sub = validate_push_subscription(req)?;
        let mut tx = self.store().begin().await?;
        let stored = tx.upsert_push_subscription(user, &sub, now()).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Forgets one of the user's push subscriptions.
    ///
    /// # Errors
    /// Not found (also for another user's); storage failures.
    pub async fn delete_push_subscription(
        &self,
        user: UserId,
        id: PushSubscriptionId,
    ) -> Result<()> {
        if self.store().delete_push_subscription(user, id).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound("push subscription"))
        }
    }

    /// Sets or clears the user's ntfy topic URL.
    ///
    /// # Errors
    /// `Invalid` for anything but an http(s) URL; storage failures.
    pub async fn set_ntfy_url(&self, user: UserId, url: Option<&str>) -> Result<()> {
        let url = validate_ntfy_url(url)?;
        let mut tx = self.store().begin().await?;
        tx.set_ntfy_url(user, url.as_deref(), now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sends a test notification to all the user's channels, through the same durable
    /// job as real ones.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn send_test_notification(&self, user: UserId) -> Result<()> {
        let at = now();
        let n = Notification {
            user_id: Some(user),
            item_id: uuid::Uuid::now_v7().to_string(),
            task_id: None,
            kind: NotificationKind::Test,
            title: "mainloop test notification".to_owned(),
            body: "Notifications reach you here.".to_owned(),
        };
        let mut tx = self.store().begin().await?;
        enqueue(&mut tx, user, &n, at).await?;
        tx.commit().await?;
        self.wake_dispatcher();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256DH: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn req(endpoint: &str, p256dh: &str, auth: &str) -> RegisterPush {
        RegisterPush {
            endpoint: endpoint.into(),
            p256dh: p256dh.into(),
            auth: auth.into(),
            user_agent: Some("Firefox\n".into()),
        }
    }

    #[test]
    fn endpoints_must_be_https_or_loopback_http() {
        for ok in [
            "https://fcm.googleapis.com/fcm/send/abc",
            "http://127.0.0.1:9000/push/1",
            "http://localhost/push",
            "http://[::1]:80/p",
        ] {
            assert!(validate_push_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "not a url",
            "ftp://example.com/x",
            "http://example.com/push",
            "http://10.0.0.1/push",
            "javascript:alert(1)",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(validate_push_endpoint(bad), Err(EngineError::Invalid(_))),
                "{bad}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        assert!(validate_push_endpoint(&long).is_err());
    }

    #[test]
    fn keys_must_be_a_curve_point_and_a_16_byte_secret() {
        let ok = validate_push_subscription(&req("https://p.example/1", P256DH, AUTH)).unwrap();
        assert_eq!(ok.p256dh, P256DH);
        assert_eq!(ok.user_agent.as_deref(), Some("Firefox"));
        // Padding and the standard alphabet are tolerated, and normalised away.
        let padded = format!("{}==", AUTH.replace('_', "/"));
        let norm = validate_push_subscription(&req("https://p.example/1", P256DH, &padded));
        assert_eq!(norm.unwrap().auth, AUTH);

        let not_on_curve = URL_SAFE_NO_PAD.encode([4_u8; 65]);
        let compressed = URL_SAFE_NO_PAD.encode([2_u8; 33]);
        for (p, a) in [
            ("", AUTH),
            ("!!!", AUTH),
            (not_on_curve.as_str(), AUTH),
            (compressed.as_str(), AUTH),
            (P256DH, ""),
            (P256DH, "AAAA"),
            (P256DH, P256DH),
        ] {
            assert!(
                matches!(
                    validate_push_subscription(&req("https://p.example/1", p, a)),
                    Err(EngineError::Invalid(_))
                ),
                "{p} {a}"
            );
        }
    }

    #[test]
    fn ntfy_urls_are_http_or_blank() {
        assert_eq!(validate_ntfy_url(None).unwrap(), None);
        assert_eq!(validate_ntfy_url(Some("  ")).unwrap(), None);
        assert_eq!(
            validate_ntfy_url(Some("http://ntfy.lan/t"))
                .unwrap()
                .as_deref(),
            Some("http://ntfy.lan/t")
        );
        for bad in ["ntfy.sh/topic", "mailto:a@b", "https://"] {
            assert!(validate_ntfy_url(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_vapid_keys_are_a_matching_p256_pair() {
        let keys = generate_vapid_keys();
        let public = URL_SAFE_NO_PAD.decode(&keys.public_key).unwrap();
        let private = URL_SAFE_NO_PAD.decode(&keys.private_key).unwrap();
        assert_eq!(public.len(), 65);
        assert_eq!(private.len(), 32);
        let secret = p256::SecretKey::from_slice(&private).unwrap();
        assert_eq!(
            secret.public_key().to_encoded_point(false).as_bytes(),
            public.as_slice()
        );
        assert!(!format!("{keys:?}").contains(&keys.private_key));
    }

    #[test]
    fn urls_point_at_the_task_or_the_inbox() {
        let mut n = Notification {
            user_id: None,
            item_id: "i".into(),
            task_id: None,
            kind: NotificationKind::Question,
            title: String::new(),
            body: String::new(),
        };
        assert_eq!(n.url(), "/inbox");
        let task = TaskId::new_v7(Timestamp::from_millis(1));
        n.task_id = Some(task);
        assert_eq!(n.url(), format!("/tasks/{task}?item=i"));
        n.kind = NotificationKind::Test;
        assert_eq!(n.url(), "/settings");
        assert!(NotificationKind::PlanReview.urgent() && !NotificationKind::Failed.urgent());
    }
}

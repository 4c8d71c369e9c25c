//! Notification state: the server's VAPID key pair, each browser's Web Push
//! subscription, and per-user notification settings (the ntfy topic URL).

use crate::{Result, Store, Tx, parse};
use mainloop_domain::{PushSubscriptionId, Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

/// The server's VAPID key pair (RFC 8292), both halves base64url without padding: the
/// 32-byte P-256 private scalar and the 65-byte uncompressed public point.
#[derive(Clone, PartialEq, Eq)]
pub struct VapidKeys {
    pub public_key: String,
    /// Secret: whoever holds it can push to every subscribed browser.
    pub private_key: String,
}

impl std::fmt::Debug for VapidKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKeys")
            .field("public_key", &self.public_key)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

/// A push subscription to register (what a browser's `PushSubscription` holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPushSubscription {
    pub endpoint: String,
    /// The browser's P-256 public key, base64url.
    pub p256dh: String,
    /// The browser's 16-byte authentication secret, base64url.
    pub auth: String,
    pub user_agent: Option<String>,
}

/// A stored push subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSubscription {
    pub id: PushSubscriptionId,
    pub user_id: UserId,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    pub user_agent: Option<String>,
    pub created_at: Timestamp,
}

/// A user's notification settings; the defaults when never set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotificationSettings {
    pub ntfy_url: Option<String>,
}

const SUB_COLS: &str = "id, user_id, endpoint, p256dh, auth, user_agent, created_at";

fn sub_from_row(row: &AnyRow) -> Result<PushSubscription> {
    Ok(PushSubscription {
        id: parse(&row.try_get::<String, _>("id")?, "push subscription id")?,
        user_id: parse(&row.try_get::<String, _>("user_id")?, "user id")?,
        endpoint: row.try_get("endpoint")?,
        p256dh: row.try_get("p256dh")?,
        auth: row.try_get("auth")?,
        user_agent: row.try_get("user_agent")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

impl Tx {
    /// Stores the VAPID key pair unless one exists. Returns whether this one was stored;
    /// either way the stored pair is the one to use (read it back), so two processes
    /// racing to create it agree.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_vapid_keys(&mut self, keys: &VapidKeys, now: Timestamp) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO vapid_keys (id, public_key, private_key, created_at) \
             VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&keys.public_key)
        .bind(&keys.private_key)
        .bind(now.as_millis())
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Registers a push subscription, or updates the one with the same endpoint (a
    /// browser re-subscribing, possibly with new keys or signed in as another user: an
    /// endpoint belongs to one browser profile, so the latest registration wins). Keeps
    /// the id and creation time of an existing one.
    ///
    /// # Errors
    /// On database failure.
    pub async fn upsert_push_subscription(
        &mut self,
        user: UserId,
        sub: &NewPushSubscription,
        now: Timestamp,
    ) -> Result<PushSubscription> {
        let row = sqlx::query(&format!(
            "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, user_agent, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (endpoint) DO UPDATE SET user_id = excluded.user_id, \
                 p256dh = excluded.p256dh, auth = excluded.auth, user_agent = excluded.user_agent \
             RETURNING {SUB_COLS}"
        ))
        .bind(PushSubscriptionId::new_v7(now).to_string())
        .bind(user.to_string())
        .bind(&sub.endpoint)
        .bind(&sub.p256dh)
        .bind(&sub.auth)
        .bind(&sub.user_agent)
        .bind(now.as_millis())
        .fetch_one(self.conn())
        .await?;
        sub_from_row(&row)
    }

    /// Deletes one of the user's subscriptions. False when it is not theirs or unknown.
    ///
    /// # Errors
    /// On database failure.
    pub async fn delete_push_subscription(
        &mut self,
        user: UserId,
        id: PushSubscriptionId,
    ) -> Result<bool> {
        let n = sqlx::query("DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2")
            .bind(id.to_string())
            .bind(user.to_string())
            .execute(self.conn())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Sets (or with `None` clears) the user's ntfy topic URL.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_ntfy_url(
        &mut self,
        user: UserId,
        url: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO notification_settings (user_id, ntfy_url, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET ntfy_url = excluded.ntfy_url, \
                 updated_at = excluded.updated_at",
        )
        .bind(user.to_string())
        .bind(url)
        .bind(now.as_millis())
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// The VAPID key pair, if it was made.
    ///
    /// # Errors
    /// On database failure.
    pub async fn vapid_keys(&self) -> Result<Option<VapidKeys>> {
        let row = sqlx::query("SELECT public_key, private_key FROM vapid_keys WHERE id = 1")
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| {
            Ok(VapidKeys {
                public_key: r.try_get("public_key")?,
                private_key: r.try_get("private_key")?,
            })
        })
        .transpose()
    }

    /// The user's push subscriptions, oldest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn push_subscriptions(&self, user: UserId) -> Result<Vec<PushSubscription>> {
        let rows = sqlx::query(&format!(
            "SELECT {SUB_COLS} FROM push_subscriptions WHERE user_id = $1 ORDER BY created_at, id"
        ))
        .bind(user.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(sub_from_row).collect()
    }

    /// Deletes one of the user's subscriptions (a push service said it is gone).
    ///
    /// # Errors
    /// On database failure.
    pub async fn delete_push_subscription(
        &self,
        user: UserId,
        id: PushSubscriptionId,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let deleted = tx.delete_push_subscription(user, id).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// The user's notification settings (defaults when never set).
    ///
    /// # Errors
    /// On database failure.
    pub async fn notification_settings(&self, user: UserId) -> Result<NotificationSettings> {
        let row = sqlx::query("SELECT ntfy_url FROM notification_settings WHERE user_id = $1")
            .bind(user.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => NotificationSettings {
                ntfy_url: r.try_get("ntfy_url")?,
            },
            None => NotificationSettings::default(),
        })
    }
}

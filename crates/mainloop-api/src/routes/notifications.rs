//! Notification settings: the VAPID key browsers subscribe with, registering and
//! removing push subscriptions, the ntfy topic URL, and a test notification.

use crate::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mainloop_domain::{PushSubscriptionId, Timestamp};
use mainloop_engine::{NotificationOverview, PushSubscription, RegisterPush};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One browser's push subscription (its keys are never returned).
#[derive(Debug, Serialize, ToSchema)]
pub struct PushSubscriptionView {
    pub id: PushSubscriptionId,
    pub endpoint: String,
    pub user_agent: Option<String>,
    pub created_at: Timestamp,
}

impl From<PushSubscription> for PushSubscriptionView {
    fn from(s: PushSubscription) -> Self {
        Self {
            id: s.id,
            endpoint: s.endpoint,
            user_agent: s.user_agent,
            created_at: s.created_at,
        }
    }
}

/// The user's notification settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationSettings {
    /// The server's VAPID public key for `PushManager.subscribe`: base64url without
    /// padding, the 65-byte uncompressed P-256 point.
    pub vapid_public_key: String,
    /// The ntfy topic URL notifications are also posted to, if any.
    pub ntfy_url: Option<String>,
    pub subscriptions: Vec<PushSubscriptionView>,
}

impl From<NotificationOverview> for NotificationSettings {
    fn from(o: NotificationOverview) -> Self {
        Self {
            vapid_public_key: o.vapid_public_key,
            ntfy_url: o.ntfy_url,
            subscriptions: o.subscriptions.into_iter().map(Into::into).collect(),
        }
    }
}

/// A subscription's keys, as `PushSubscription.toJSON()` has them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PushKeys {
    /// The browser's P-256 public key, base64url without padding: a 65-byte
    /// uncompressed point on the curve.
    #[schema(pattern = r"^B[A-Za-z0-9_-]{85}[AEIMQUYcgkosw048]$")]
    pub p256dh: String,
    /// The browser's authentication secret, base64url without padding (16 bytes).
    #[schema(pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$")]
    pub auth: String,
}

/// A browser's push subscription (`PushSubscription.toJSON()` plus an optional label).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterPushRequest {
    /// The push service URL: https, or http for a loopback host.
    #[schema(
        max_length = 2048,
        pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@]+(?:[/?#]\S*)?$"
    )]
    pub endpoint: String,
    pub keys: PushKeys,
    /// Which browser this is, to tell subscriptions apart in the settings (control
    /// characters are dropped, and what is left is cut to 512 characters).
    pub user_agent: Option<String>,
}

/// Sets or clears the ntfy topic URL.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NtfyRequest {
    /// An http(s) ntfy topic URL, e.g. `https://ntfy.sh/my-topic`; `null` or empty
    /// clears it.
    pub url: Option<String>,
}

async fn overview(
    state: &AppState,
    user: mainloop_domain::UserId,
) -> ApiResult<Json<NotificationSettings>> {
    Ok(Json(state.engine.notification_overview(user).await?.into()))
}

/// The notification settings, with the key to subscribe browsers with.
#[utoipa::path(
    get,
    path = "/api/notifications",
    operation_id = "get_notifications",
    tag = "notifications",
    responses(
        (status = 200, description = "The settings", body = NotificationSettings),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn get(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<NotificationSettings>> {
    overview(&state, user.id).await
}

/// Registers this browser's push subscription (again: idempotent on the endpoint).
#[utoipa::path(
    post,
    path = "/api/notifications/push",
    operation_id = "register_push_subscription",
    tag = "notifications",
    request_body = RegisterPushRequest,
    responses(
        (status = 201, description = "The subscription", body = PushSubscriptionView),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 422, description = "Not an acceptable endpoint or keys", body = ErrorBody),
    )
)]
pub async fn register_push(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterPushRequest>,
) -> ApiResult<(StatusCode, Json<PushSubscriptionView>)> {
    let sub = state
        .engine
        .register_push_subscription(
            user.id,
            &RegisterPush {
                endpoint: body.endpoint,
                p256dh: body.keys.p256dh,
                auth: body.keys.auth,
                user_agent: body.user_agent,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(sub.into())))
}

/// Removes a push subscription.
#[utoipa::path(
    delete,
    path = "/api/notifications/push/{id}",
    operation_id = "delete_push_subscription",
    tag = "notifications",
    params(("id" = PushSubscriptionId, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
    )
)]
pub async fn delete_push(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<PushSubscriptionId>,
) -> ApiResult<StatusCode> {
    state.engine.delete_push_subscription(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets or clears the ntfy topic URL.
#[utoipa::path(
    put,
    path = "/api/notifications/ntfy",
    operation_id = "set_ntfy_url",
    tag = "notifications",
    request_body = NtfyRequest,
    responses(
        (status = 200, description = "The settings", body = NotificationSettings),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 422, description = "Not an http(s) URL", body = ErrorBody),
    )
)]
pub async fn set_ntfy(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NtfyRequest>,
) -> ApiResult<Json<NotificationSettings>> {
    state
        .engine
        .set_ntfy_url(user.id, body.url.as_deref())
        .await?;
    overview(&state, user.id).await
}

/// Sends a test notification to every channel (delivered by the same durable job).
#[utoipa::path(
    post,
    path = "/api/notifications/test",
    operation_id = "send_test_notification",
    tag = "notifications",
    responses(
        (status = 202, description = "Queued for delivery"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
    )
)]
pub async fn test(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<StatusCode> {
    state.engine.send_test_notification(user.id).await?;
    Ok(StatusCode::ACCEPTED)
}

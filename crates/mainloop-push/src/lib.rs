//! Notification delivery: the handler of the engine's durable `notify` job, which sends
//! each new inbox item to every Web Push subscription of the user (payload encrypted
//! per RFC 8291, authorised with VAPID per RFC 8292) and to their ntfy topic, if any.
//! A push service's 404/410 removes the subscription; 429, 5xx and network errors make
//! the job retry with the dispatcher's backoff.

mod deliver;
mod ece;
mod error;
mod handler;
mod vapid;

pub use deliver::{Outcome, PushMessage, push_topic};
pub use ece::encrypt;
pub use error::PushError;
pub use handler::NotifyHandler;
pub use vapid::{MAX_TOKEN_LIFETIME_SECS, authorization};

use mainloop_engine::{Engine, Notification, Pool};
use std::sync::Arc;
use std::time::Duration;

/// Delivery settings (a slice of the binary's config).
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// VAPID `sub`: how a push service's operator reaches whoever runs this server.
    pub vapid_subject: String,
    /// Externally reachable base URL for absolute links (ntfy's `Click`); none if unset.
    pub public_url: Option<String>,
    /// How long a push service keeps an undelivered message (the `TTL` header).
    pub ttl: Duration,
    /// Per-request timeout towards push services and ntfy.
    pub request_timeout: Duration,
}

impl PushConfig {
    #[must_use]
    pub fn new(vapid_subject: impl Into<String>, public_url: Option<String>) -> Self {
        Self {
            vapid_subject: vapid_subject.into(),
            public_url,
            ttl: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Registers the `notify` job handler (and its pool) with the engine. Call before
/// [`Engine::start`].
///
/// # Errors
/// When the HTTP client cannot be built.
pub fn install(engine: &Engine, config: PushConfig) -> Result<(), PushError> {
    let handler = NotifyHandler::new(config)?;
    // Their own pool (`Pool::Notify`), so a slow push service never holds up chat
    // turns, and the other way round.
    engine.set_pool_size(Pool::Notify, 2);
    engine.register::<Notification>(Arc::new(handler));
    Ok(())
}

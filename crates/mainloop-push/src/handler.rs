//! The `notify` job: delivers one notification to every channel of its user. A retry
//! sends again to every channel; push services replace the duplicate by its `Topic`
//! and the web app by its tag.

use crate::deliver::{Outcome, PushMessage, origin_of, send_ntfy, send_web_push};
use crate::{PushConfig, PushError};
use futures::future::BoxFuture;
use mainloop_engine::{Handler, JobContext, JobError, Notification};
use std::sync::Arc;
use std::time::Duration;

/// Handles `notify` jobs.
#[derive(Debug, Clone)]
pub struct NotifyHandler {
    client: reqwest::Client,
    config: Arc<PushConfig>,
}

impl NotifyHandler {
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: PushConfig) -> Result<Self, PushError> {
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            // A push endpoint is the user's input: never follow it elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PushError::Client(e.to_string()))?;
        Ok(Self {
            client,
            config: Arc::new(config),
        })
    }

    async fn deliver(&self, n: Notification, ctx: JobContext) -> Result<(), JobError> {
        let user = n
            .user_id
            .or(ctx.job.user_id)
            .ok_or_else(|| JobError::fatal("a notify job without a user"))?;
        let engine = &ctx.engine;
        let subs = engine
            .push_subscriptions(user)
            .await
            .map_err(|e| JobError::retry(e.to_string()))?;
        let settings = engine
            .notification_settings(user)
            .await
            .map_err(|e| JobError::retry(e.to_string()))?;
        let message = PushMessage::from_notification(&n);

        let mut retries: Vec<(String, Option<Duration>)> = Vec::new();
        if !subs.is_empty() {
            let keys = engine
                .vapid_keys()
                .await
                .map_err(|e| JobError::retry(e.to_string()))?;
            let sends = subs
                .iter()
                .map(|sub| send_web_push(&self.client, sub, &keys, &self.config, &message));
            let outcomes = futures::future::join_all(sends).await;
            for (sub, outcome) in subs.iter().zip(outcomes) {
                let origin = origin_of(&sub.endpoint);
                match outcome {
                    Outcome::Delivered => {
                        tracing::debug!(push_service = %origin, "push delivered");
                    }
                    Outcome::Gone => {
                        tracing::info!(push_service = %origin, "push subscription expired; removing it");
                        if let Err(e) = engine.forget_push_subscription(user, sub.id).await {
                            retries.push((e.to_string(), None));
                        }
                    }
                    Outcome::Rejected(why) => {
                        tracing::warn!(push_service = %origin, reason = %why, "push refused; not retrying");
                    }
                    Outcome::Retry {
                        message,
                        retry_after,
                    } => retries.push((message, retry_after)),
                }
            }
        }
        if let Some(url) = &settings.ntfy_url {
            match send_ntfy(&self.client, url, &self.config, &message).await {
                Outcome::Delivered => tracing::debug!("ntfy delivered"),
                Outcome::Gone | Outcome::Rejected(_) => {
                    tracing::warn!(ntfy = %origin_of(url), "ntfy refused the notification; not retrying");
                }
                Outcome::Retry {
                    message,
                    retry_after,
                } => retries.push((message, retry_after)),
            }
        }
        if retries.is_empty() {
            return Ok(());
        }
        let retry_after = retries.iter().filter_map(|(_, d)| *d).max();
        let message = retries
            .into_iter()
            .map(|(m, _)| m)
            .collect::<Vec<_>>()
            .join("; ");
        Err(JobError {
            message,
            retryable: true,
            retry_after,
        })
    }
}

impl Handler<Notification> for NotifyHandler {
    fn run(&self, n: Notification, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        let this = self.clone();
        Box::pin(async move { this.deliver(n, ctx).await })
    }
}

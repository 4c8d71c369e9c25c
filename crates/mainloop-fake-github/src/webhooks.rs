//! Webhook delivery: one background sender posts each event, in order, to every
//! registered receiver with GitHub's headers and `X-Hub-Signature-256`. A receiver that
//! is down only costs a log line.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub(crate) struct Hook {
    pub id: u64,
    pub url: String,
    pub secret: String,
}

#[derive(Debug)]
pub(crate) struct Delivery {
    pub event: String,
    pub payload: Value,
    pub hooks: Vec<Hook>,
}

/// `sha256=<hex HMAC-SHA256 of the body>`, GitHub's `X-Hub-Signature-256`.
pub(crate) fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) fn spawn_sender(mut rx: mpsc::UnboundedReceiver<Delivery>) {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook client; webhooks are off");
                return;
            }
        };
        while let Some(d) = rx.recv().await {
            let body = match serde_json::to_vec(&d.payload) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialise a webhook payload");
                    continue;
                }
            };
            for hook in &d.hooks {
                let sent = client
                    .post(&hook.url)
                    .header("content-type", "application/json")
                    .header("user-agent", "GitHub-Hookshot/fake")
                    .header("x-github-event", &d.event)
                    .header("x-github-delivery", uuid::Uuid::new_v4().to_string())
                    .header("x-github-hook-id", hook.id.to_string())
                    .header("x-github-hook-installation-target-type", "repository")
                    .header("x-hub-signature-256", signature(&hook.secret, &body))
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(resp) if resp.status().is_success() => {}
                    Ok(resp) => tracing::warn!(
                        url = %hook.url, event = %d.event, status = %resp.status(),
                        "webhook receiver refused a delivery"
                    ),
                    Err(e) => tracing::warn!(
                        url = %hook.url, event = %d.event, error = %e,
                        "webhook delivery failed"
                    ),
                }
            }
        }
    });
}

//! The model-provider port: the request the main thread sends, the streamed reply it
//! gets back, and the errors a provider may report. Implementations live in adapter
//! crates (e.g. `mainloop-anthropic`); the binary picks one. A main thread that is an
//! agent session of its own (Claude Code) is the [`session`] port instead.

pub mod session;

pub use session::{ProviderStatus, SessionEvent, SessionProvider, SessionTurn, TurnUsage};

use futures::stream::BoxStream;
use mainloop_domain::chat::{ContentBlock, ModelMessage};
use mainloop_domain::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

/// One request for a reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    pub system: String,
    pub messages: Vec<ModelMessage>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
}

/// Token usage as reported by the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

/// A complete reply: the content blocks exactly as the provider produced them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    /// The provider's message id.
    pub id: String,
    pub model: String,
    pub content: Vec<ContentBlock>,
    /// `end_turn`, `tool_use`, `max_tokens`, …
    pub stop_reason: Option<String>,
    pub usage: Usage,
}

impl ModelResponse {
    /// The tool calls in the reply, in order: `(id, name, input)`.
    #[must_use]
    pub fn tool_uses(&self) -> Vec<(&str, &str, &Value)> {
        self.content
            .iter()
            .filter_map(ContentBlock::as_tool_use)
            .collect()
    }
}

/// What a reply stream yields: text as it arrives, then exactly one `Done`.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    TextDelta(String),
    Done(ModelResponse),
}

/// Why a provider could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("the provider rejected the credentials: {0}")]
    Unauthorized(String),
    #[error("rate limited by the provider")]
    RateLimited { retry_after: Option<Duration> },
    /// The account's usage allowance is spent until `resets_at` (unix seconds, when
    /// known). Retrying before then is pointless, so `retry_after` stays `None`: the
    /// caller, which has a clock, waits until the reset.
    #[error("the model's usage limit is reached{}", resets_text(*resets_at))]
    UsageLimit { resets_at: Option<u64> },
    #[error("the provider is overloaded")]
    Overloaded { retry_after: Option<Duration> },
    #[error("the provider refused the request: {0}")]
    BadRequest(String),
    #[error("the provider failed with status {status}: {message}")]
    Server { status: u16, message: String },
    #[error("could not reach the provider: {0}")]
    Transport(String),
    #[error("the provider's reply could not be understood: {0}")]
    Protocol(String),
    /// The provider could not reach mainloop's tools (its MCP connection failed), so it
    /// must not answer without them.
    #[error("the model could not reach mainloop's tools: {0}")]
    ToolsUnavailable(String),
}

impl ModelError {
    /// Worth retrying later with backoff (as opposed to a configuration problem).
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::UsageLimit { .. }
                | Self::Overloaded { .. }
                | Self::Server { .. }
                | Self::Transport(_)
                | Self::Protocol(_)
                | Self::ToolsUnavailable(_)
        )
    }

    /// How long the provider asked us to wait, if it said.
    #[must_use]
    pub const fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Overloaded { retry_after } => *retry_after,
            _ => None,
        }
    }
}

fn resets_text(resets_at: Option<u64>) -> String {
    resets_at
        .and_then(|secs| i64::try_from(secs).ok())
        .map(|secs| {
            let at = Timestamp::from_millis(secs.saturating_mul(1000));
            format!("; it resets at {}", at.to_rfc3339())
        })
        .unwrap_or_default()
}

/// A language model that can stream a reply.
pub trait ModelProvider: Send + Sync + std::fmt::Debug + 'static {
    /// The model name replies come from (for logs and the UI).
    fn model(&self) -> &str;

    /// Streams the reply to `request`: zero or more `TextDelta`s, then one `Done`.
    /// An `Err` item ends the stream.
    fn stream(&self, request: ModelRequest) -> BoxStream<'static, Result<StreamEvent, ModelError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors() {
        assert!(ModelError::RateLimited { retry_after: None }.is_retryable());
        assert!(ModelError::Transport("reset".into()).is_retryable());
        assert!(!ModelError::Unauthorized("bad key".into()).is_retryable());
        assert!(!ModelError::BadRequest("too long".into()).is_retryable());
        assert_eq!(
            ModelError::Overloaded {
                retry_after: Some(Duration::from_secs(3))
            }
            .retry_after(),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn a_usage_limit_says_when_it_resets_and_leaves_the_wait_to_the_caller() {
        let limit = ModelError::UsageLimit {
            resets_at: Some(1_796_571_000),
        };
        assert!(limit.is_retryable());
        assert_eq!(limit.retry_after(), None);
        assert_eq!(
            limit.to_string(),
            "the model's usage limit is reached; it resets at 2026-12-06T15:30:00Z"
        );
        assert_eq!(
            ModelError::UsageLimit { resets_at: None }.to_string(),
            "the model's usage limit is reached"
        );
    }

    #[test]
    fn tool_uses_are_listed_in_order() {
        let r = ModelResponse {
            id: "m".into(),
            model: "x".into(),
            content: vec![
                ContentBlock::text("ok"),
                ContentBlock::tool_use("t1", "a", Value::Null),
                ContentBlock::tool_use("t2", "b", Value::Null),
            ],
            stop_reason: Some("tool_use".into()),
            usage: Usage::default(),
        };
        let names: Vec<_> = r.tool_uses().into_iter().map(|(_, n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
    }
}

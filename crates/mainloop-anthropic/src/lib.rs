//! A thin, hand-written streaming client for the Anthropic Messages API, implementing the
//! `ModelProvider` port. No SDK: we parse the wire format ourselves so the content blocks
//! we persist are exactly the ones the model produced, unknown kinds included.

mod error;
mod events;
pub mod sse;

use events::Assembler;
use futures::StreamExt;
use futures::stream::BoxStream;
use mainloop_domain::chat::ModelMessage;
use mainloop_model::{ModelError, ModelProvider, ModelRequest, StreamEvent, ToolSpec};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use sse::SseParser;
use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// How to reach the API. `Debug` shows the key as `[REDACTED]` (via `secrecy`).
#[derive(Clone, Debug)]
pub struct AnthropicConfig {
    pub api_key: SecretString,
    /// Without the `/v1/...` path; tests point this at a local fake.
    pub base_url: String,
    pub model: String,
    pub anthropic_version: String,
    pub connect_timeout: Duration,
    /// Longest silence between bytes. The API pings idle streams, so a long silence
    /// means a dead connection rather than a slow model.
    pub read_timeout: Duration,
    /// Cap on a whole request, streamed body included. `None` by default because a long
    /// reply is not a failure; `read_timeout` catches stalls.
    pub timeout: Option<Duration>,
}

impl AnthropicConfig {
    /// A config for the public API with sensible timeouts.
    #[must_use]
    pub fn new(api_key: SecretString, model: impl Into<String>) -> Self {
        Self {
            api_key,
            base_url: DEFAULT_BASE_URL.to_owned(),
            model: model.into(),
            anthropic_version: DEFAULT_ANTHROPIC_VERSION.to_owned(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            timeout: None,
        }
    }
}

/// The Anthropic Messages API as a `ModelProvider`. Cheap to clone.
#[derive(Clone)]
pub struct AnthropicProvider {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    model: String,
    /// Kept only to scrub it from error bodies; the client sends it as a header.
    api_key: SecretString,
}

impl fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("base_url", &self.inner.base_url)
            .field("model", &self.inner.model)
            .finish_non_exhaustive()
    }
}

impl AnthropicProvider {
    /// Builds the HTTP client. Fails only on a key or version that cannot be sent as a
    /// header, or if the TLS backend cannot start.
    pub fn new(config: AnthropicConfig) -> Result<Self, ModelError> {
        let mut key = HeaderValue::from_str(config.api_key.expose_secret()).map_err(|_| {
            ModelError::Unauthorized("the API key is not a valid header value".into())
        })?;
        key.set_sensitive(true);
        let version = HeaderValue::from_str(&config.anthropic_version).map_err(|_| {
            ModelError::BadRequest("anthropic_version is not a valid header value".into())
        })?;
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", key);
        headers.insert("anthropic-version", version);
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout);
        if let Some(timeout) = config.timeout {
            builder = builder.timeout(timeout);
        }
        let http = builder.build().map_err(|e| transport(&e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url: config.base_url.trim_end_matches('/').to_owned(),
                model: config.model,
                api_key: config.api_key,
            }),
        })
    }

    /// How many input tokens `request` would use (`/v1/messages/count_tokens`).
    pub async fn count_tokens(&self, request: &ModelRequest) -> Result<u64, ModelError> {
        let body = self.inner.body(request, false);
        let response = self.inner.post("/v1/messages/count_tokens", body).await?;
        let bytes = response.bytes().await.map_err(|e| transport(&e))?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("input_tokens").and_then(Value::as_u64))
            .ok_or_else(|| ModelError::Protocol("count_tokens reply without input_tokens".into()))
    }
}

/// The request body; borrowed so building it copies nothing.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "str::is_empty")]
    system: &'a str,
    messages: &'a [ModelMessage],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tools: &'a [ToolSpec],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

impl Inner {
    /// `count_tokens` takes neither `max_tokens` nor `stream`, so both follow `streaming`.
    fn body(&self, request: &ModelRequest, streaming: bool) -> Result<Vec<u8>, ModelError> {
        serde_json::to_vec(&Body {
            model: &self.model,
            max_tokens: streaming.then_some(request.max_tokens),
            system: &request.system,
            messages: &request.messages,
            tools: &request.tools,
            stream: streaming,
        })
        .map_err(|e| ModelError::Protocol(format!("could not encode the request: {e}")))
    }

    /// POSTs `body` and returns the response if it succeeded, else the mapped error.
    async fn post(
        &self,
        path: &str,
        body: Result<Vec<u8>, ModelError>,
    ) -> Result<reqwest::Response, ModelError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header(CONTENT_TYPE, "application/json")
            .body(body?)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers();
        let limits =
            error::Limits::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()));
        // The status alone is enough to classify the error, so a body that fails to
        // arrive just means a less specific message.
        let bytes = response.bytes().await.unwrap_or_default();
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        let key = self.api_key.expose_secret();
        // Proxies sometimes echo request headers back; the key must not reach our logs.
        if !key.is_empty() {
            text = text.replace(key, "[REDACTED]");
        }
        Err(error::from_status(status.as_u16(), limits, &text))
    }
}

impl ModelProvider for AnthropicProvider {
    fn model(&self) -> &str {
        &self.inner.model
    }

    fn stream(&self, request: ModelRequest) -> BoxStream<'static, Result<StreamEvent, ModelError>> {
        let inner = Arc::clone(&self.inner);
        let body = inner.body(&request, true);
        Box::pin(async_stream::try_stream! {
            let response = inner.post("/v1/messages", body).await?;
            let mut chunks = response.bytes_stream();
            let mut parser = SseParser::default();
            let mut assembler = Assembler::default();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| transport(&e))?;
                for frame in parser.push(&chunk) {
                    if let Some(event) = assembler.handle(&frame)? {
                        let done = matches!(event, StreamEvent::Done(_));
                        yield event;
                        if done {
                            return;
                        }
                    }
                }
            }
            Err(ModelError::Protocol("the stream ended before message_stop".into()))?;
        })
    }
}

/// reqwest's top-level message hides the cause ("error sending request"), so the
/// source chain is appended. Neither contains headers, hence never the key.
fn transport(error: &reqwest::Error) -> ModelError {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ModelError::Transport(message)
}

//! A scripted fake model server for tests and benchmarks that run our client, the real
//! `claude`, `codex` or `gemini` CLI against it. It speaks three wire formats from one
//! script: the Anthropic Messages API (`POST /v1/messages`), the OpenAI Responses API
//! (`POST /v1/responses`) and the Gemini API (`POST /v1beta/models/{model}:{method}`);
//! the latter two are normalised into the Messages shape before the rules see them.
//! See the README for the script format.

mod gemini;
mod openai;
mod responses;
mod script;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use script::{
    ErrorSpec, Fallback, Match, NO_MATCH_TEXT, ReplyBlock, RequestView, Rule, Script, ToolUseSpec,
    conditions_hold,
};
pub use server::{LoggedRequest, Shared};

/// One script rule, as YAML for a `rules:` list, that answers the requests `when`
/// matches (a YAML flow mapping such as `{user_contains: "task", times: 1}`) with the 429
/// the Messages API sends when an account's usage limit is reached: a
/// `rate_limit_error` with the unified rate-limit headers saying it is rejected until
/// `reset` (Unix seconds), as for a subscription's spent 5-hour window.
#[must_use]
pub fn usage_limit_rule(name: &str, when: &str, reset: u64) -> String {
    format!(
        r#"  - name: {name}
    match: {when}
    status: 429
    error:
      type: rate_limit_error
      message: "This request would exceed your account's rate limit. Please try again later."
    retry_after: 3600
    headers:
      anthropic-ratelimit-unified-status: rejected
      anthropic-ratelimit-unified-reset: "{reset}"
      anthropic-ratelimit-unified-representative-claim: five_hour
      anthropic-ratelimit-unified-overage-status: rejected
"#
    )
}

/// Every endpoint of the fake, every wire format, over `shared`.
pub fn router(shared: Shared) -> axum::Router {
    server::router(shared.clone())
        .merge(responses::routes(shared.clone()))
        .merge(gemini::routes(shared))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("script {0} must end in .json, .yaml or .yml")]
    ScriptExtension(PathBuf),
    /// A client sent something the real API would reject with 400.
    #[error("{0}")]
    BadRequest(String),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(msg) => {
                server::error_response(StatusCode::BAD_REQUEST, "invalid_request_error", &msg)
            }
            other => server::error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                &other.to_string(),
            ),
        }
    }
}

/// A running fake; the server stops when this is dropped.
#[derive(Debug)]
pub struct FakeAnthropic {
    addr: SocketAddr,
    shared: Shared,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakeAnthropic {
    /// Serves `script` on an ephemeral port of 127.0.0.1.
    pub async fn start(script: Script) -> Result<Self, Error> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), script).await
    }

    pub async fn bind(addr: SocketAddr, script: Script) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(script);
        let app = router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // Either an explicit stop or a dropped handle ends the server.
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "fake-anthropic server failed");
            }
        });
        Ok(Self {
            addr,
            shared,
            shutdown: Some(tx),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, suitable for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.requests()
    }

    /// Only the model calls (`POST /v1/messages`, `POST /v1/responses` and Gemini's
    /// `:streamGenerateContent`/`:generateContent`), which is what
    /// tests usually inspect. Each `body` is as the client sent it, in its own wire format.
    pub fn message_requests(&self) -> Vec<LoggedRequest> {
        let is_model_call = |r: &LoggedRequest| {
            let path = r.path.split('?').next().unwrap_or_default();
            path == "/v1/messages" || path == "/v1/responses" || gemini::model_call(path).is_some()
        };
        self.requests().into_iter().filter(is_model_call).collect()
    }

    /// Model requests received and not yet fully answered (a streamed reply with a
    /// `delay_ms` counts until its last event is sent).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    pub fn set_script(&self, script: Script) {
        self.shared.set_script(script);
    }

    pub fn reset(&self) {
        self.shared.reset();
    }
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

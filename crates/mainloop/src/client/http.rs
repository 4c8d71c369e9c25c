//! The client's HTTP calls to the public API, and its one error type: what went wrong,
//! what to do about it, and the exit code scripts rely on.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// How long an ordinary request may take (the event stream has no limit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client command failed. Each variant is one exit code (see `docs/CLI.md`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request: wrong state, invalid input (a 4xx). Exit 1.
    #[error("{0}")]
    Refused(String),
    /// Something on this machine failed (reading stdin, writing the login file). Exit 1.
    #[error("{0}")]
    Local(String),
    /// The command line asks for something impossible (an ambiguous id). Exit 2.
    #[error("{0}")]
    Usage(String),
    /// No such task, item or message. Exit 3.
    #[error("{0}")]
    NotFound(String),
    /// The server cannot be reached, or no usable token. Exit 4.
    #[error("{0}")]
    Unreachable(String),
    /// The server refused the token. Exit 4.
    #[error("{0}")]
    Auth(String),
    /// The server failed (a 5xx). Exit 5.
    #[error("{0}")]
    Server(String),
}

impl ClientError {
    /// The process exit code for this failure.
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::Refused(_) | Self::Local(_) => 1,
            Self::Usage(_) => 2,
            Self::NotFound(_) => 3,
            Self::Unreachable(_) | Self::Auth(_) => 4,
            Self::Server(_) => 5,
        }
    }

    /// A failure on this machine, with what was being done.
    pub fn local(doing: &str, e: impl std::fmt::Display) -> Self {
        Self::Local(format!("{doing}: {e}"))
    }
}

/// The error for a response with a failing status: the server's own message (from the
/// API's `{"error":{"code","message"}}` body) and what to do next.
#[must_use]
pub fn status_error(status: u16, body: &str, base: &str) -> ClientError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let detail = |key: &str| {
        parsed
            .as_ref()
            .and_then(|v| v["error"][key].as_str())
            .map(str::to_owned)
    };
    let message = detail("message").unwrap_or_else(|| {
        let text = body.trim();
        if text.is_empty() {
            format!("HTTP {status}")
        } else {
            text.chars().take(300).collect()
        }
    });
    let code = detail("code").unwrap_or_else(|| status.to_string());
    match status {
        401 => ClientError::Auth(format!(
            "{base} refused the token ({message}); run `mainloop login {base}` to sign in \
             again, or pass --token"
        )),
        404 => ClientError::NotFound(message),
        503 => ClientError::Server(format!(
            "the server is unavailable: {message}; try again shortly"
        )),
        500..=599 => ClientError::Server(format!(
            "the server failed ({status} {code}): {message}; see the server's log"
        )),
        _ => ClientError::Refused(format!("{message} ({code})")),
    }
}

/// Where to send requests and with which token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

impl Api {
    /// A client for the server at `base` (no trailing slash).
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS roots).
    pub fn new(base: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("mainloop-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::local("starting the HTTP client", e))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
        })
    }

    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    #[must_use]
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A request to `path` (starting with `/api/`), authenticated when a token is set.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends `request` (with the ordinary time limit unless `stream`) and returns the
    /// response when its status is a success.
    ///
    /// # Errors
    /// Unreachable server, or the status's error.
    pub async fn send(
        &self,
        request: RequestBuilder,
        stream: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let request = if stream {
            request
        } else {
            request.timeout(REQUEST_TIMEOUT)
        };
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(status_error(status.as_u16(), &body, &self.base))
    }

    /// The error for a request that never got an answer.
    #[must_use]
    pub fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        let why = if e.is_timeout() {
            "it did not answer in time".to_owned()
        } else {
            // The innermost cause names the problem (connection refused, DNS).
            let mut source: &dyn std::error::Error = e;
            while let Some(next) = source.source() {
                source = next;
            }
            source.to_string()
        };
        ClientError::Unreachable(format!(
            "cannot reach the server at {} ({why}); check that it runs and the URL is \
             right, or run `mainloop login URL`",
            self.base
        ))
    }

    async fn json(&self, request: RequestBuilder) -> Result<Value, ClientError> {
        let response = self.send(request, false).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        serde_json::from_str(&text).map_err(|e| {
            ClientError::Server(format!(
                "the server at {} answered something other than JSON ({e}); is it a \
                 mainloop server?",
                self.base
            ))
        })
    }

    /// `GET path` with a query, as JSON.
    ///
    /// # Errors
    /// See [`Api::send`].
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, path).query(query))
            .await
    }

    /// `POST path` with a JSON body (none when `body` is `None`), as JSON.
    ///
    /// # Errors
    /// See [`Api::send`].
    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let r = self.request(Method::POST, path);
        let r = match body {
            Some(b) => r.json(b),
            None => r,
        };
        self.json(r).await
    }

    /// `PUT path` with a JSON body, as JSON.
    ///
    /// # Errors
    /// See [`Api::send`].
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(self.request(Method::PUT, path).json(body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_exit_codes_with_the_servers_message() {
        let body = r#"{"error":{"code":"wrong_state","message":"task is merged"}}"#;
        let e = status_error(409, body, "http://h");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "task is merged (wrong_state)");
        assert_eq!(status_error(404, "{}", "http://h").exit_code(), 3);
        let auth = status_error(401, "", "http://h:1");
        assert_eq!(auth.exit_code(), 4);
        assert!(
            auth.to_string().contains("mainloop login http://h:1"),
            "{auth}"
        );
        assert_eq!(status_error(500, "oops", "http://h").exit_code(), 5);
        let away = status_error(
            503,
            r#"{"error":{"code":"unavailable","message":"the disk is full"}}"#,
            "http://h",
        );
        assert_eq!(away.exit_code(), 5);
        assert!(away.to_string().contains("the disk is full"), "{away}");
        assert_eq!(
            status_error(422, "", "http://h").to_string(),
            "HTTP 422 (422)"
        );
    }

    #[test]
    fn the_token_never_prints() {
        let api = Api::new("http://h/", Some("mlt_secret")).unwrap();
        assert_eq!(api.base(), "http://h");
        assert!(!format!("{api:?}").contains("mlt_secret"));
    }
}

//! How to reach GitHub: API and GraphQL addresses, the token, timeouts and the quota
//! reserve.

use crate::GithubError;
use mainloop_config::Secret;
use std::time::Duration;

/// The public API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// How to reach GitHub. `Debug` shows the token as `[redacted]` (it is a [`Secret`]).
#[derive(Clone, Debug)]
pub struct GithubConfig {
    /// REST base: `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise.
    pub api_url: String,
    /// GraphQL endpoint; `None` derives it from `api_url` (see [`Self::graphql_url`]).
    pub graphql_url: Option<String>,
    pub token: Secret,
    /// Cap on one request, body included (a log download is one request too).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Sent as `User-Agent`, which GitHub requires.
    pub user_agent: String,
    /// Below this many remaining calls (until the reset) requests are refused with
    /// `RateLimited` before they are sent. `0` turns the reserve off.
    pub min_remaining: u64,
}

impl GithubConfig {
    /// The public API with sensible timeouts and a reserve of 50 calls.
    #[must_use]
    pub fn new(token: Secret) -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_owned(),
            graphql_url: None,
            token,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("mainloop/", env!("CARGO_PKG_VERSION")).to_owned(),
            min_remaining: 50,
        }
    }

    /// From the server configuration's `[github]` section.
    ///
    /// # Errors
    /// When no token is configured.
    pub fn from_config(config: &mainloop_config::GithubConfig) -> Result<Self, GithubError> {
        let token = config.token.clone().ok_or_else(|| {
            GithubError::Config("no token (set GITHUB_TOKEN or github.token)".into())
        })?;
        Ok(Self {
            api_url: config.api_url.clone(),
            request_timeout: std::time::Duration::from_secs(config.request_timeout_secs.max(1)),
            ..Self::new(token)
        })
    }

    /// The GraphQL endpoint: the override if set; `https://api.github.com/graphql` for the
    /// public API; for Enterprise (`https://HOST/api/v3`) `https://HOST/api/graphql`.
    #[must_use]
    pub fn graphql_url(&self) -> String {
        if let Some(url) = &self.graphql_url {
            return url.clone();
        }
        let base = self.api_url.trim_end_matches('/');
        let base = base.strip_suffix("/v3").unwrap_or(base);
        format!("{base}/graphql")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graphql(api: &str) -> String {
        GithubConfig {
            api_url: api.to_owned(),
            ..GithubConfig::new(Secret::new("t"))
        }
        .graphql_url()
    }

    #[test]
    fn derives_graphql_for_public_and_enterprise() {
        assert_eq!(
            graphql("https://api.github.com"),
            "https://api.github.com/graphql"
        );
        assert_eq!(
            graphql("https://api.github.com/"),
            "https://api.github.com/graphql"
        );
        assert_eq!(
            graphql("https://ghe.corp.example/api/v3"),
            "https://ghe.corp.example/api/graphql"
        );
        assert_eq!(
            graphql("https://ghe.corp.example/api/v3/"),
            "https://ghe.corp.example/api/graphql"
        );
        assert_eq!(
            graphql("http://127.0.0.1:9000"),
            "http://127.0.0.1:9000/graphql"
        );
        let overridden = GithubConfig {
            graphql_url: Some("https://x.example/gql".into()),
            ..GithubConfig::new(Secret::new("t"))
        };
        assert_eq!(overridden.graphql_url(), "https://x.example/gql");
    }

    #[test]
    fn debug_redacts_the_token() {
        let config = GithubConfig::new(Secret::new("ghp_supersecret123"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("ghp_supersecret123"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn from_config_needs_a_token_and_keeps_the_api_url() {
        let mut server = mainloop_config::GithubConfig::default();
        assert!(GithubConfig::from_config(&server).is_err());
        server.token = Some(Secret::new("t"));
        server.api_url = "https://ghe.example/api/v3".into();
        let config = GithubConfig::from_config(&server);
        assert_eq!(
            config.map(|c| c.graphql_url()).ok().as_deref(),
            Some("https://ghe.example/api/graphql")
        );
    }
}

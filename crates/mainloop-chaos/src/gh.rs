//! The human's side of GitHub (the fake, reached directly, never through the proxy):
//! reading issues, pull requests and comments, answering, approving, reporting CI.

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::{Value, json};

pub const OWNER: &str = "octo";
pub const REPO: &str = "app";
/// The token mainloop uses (its own account).
pub const BOT_TOKEN: &str = "bot-token";
pub const BOT: &str = "mainloop-bot";
/// The human, trusted to steer workers.
pub const ALICE_TOKEN: &str = "alice-token";
pub const ALICE: &str = "alice";

#[derive(Clone, Debug)]
pub struct Gh {
    http: reqwest::Client,
    base: String,
}

impl Gh {
    pub fn new(http: reqwest::Client, base: String) -> Self {
        Self { http, base }
    }

    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("user-agent", "mainloop-chaos");
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path}: {status} {v}");
        }
        Ok(v)
    }

    /// Every page of a list.
    async fn list(&self, path: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for page in 1.. {
            let sep = if path.contains('?') { '&' } else { '?' };
            let v = self
                .call(
                    ALICE_TOKEN,
                    Method::GET,
                    &format!("{path}{sep}per_page=100&page={page}"),
                    None,
                )
                .await?;
            let items = v.as_array().cloned().unwrap_or_default();
            let n = items.len();
            out.extend(items);
            if n < 100 {
                break;
            }
        }
        Ok(out)
    }

    fn repo_path(rest: &str) -> String {
        format!("/repos/{OWNER}/{REPO}{rest}")
    }

    /// Issues and pull requests alike (GitHub lists both as issues), open and closed.
    pub async fn issues(&self) -> Result<Vec<Value>> {
        self.list(&Self::repo_path("/issues?state=all")).await
    }

    pub async fn pulls(&self) -> Result<Vec<Value>> {
        self.list(&Self::repo_path("/pulls?state=all")).await
    }

    pub async fn comments(&self, number: u64) -> Result<Vec<Value>> {
        self.list(&Self::repo_path(&format!("/issues/{number}/comments")))
            .await
    }

    pub async fn comment(&self, number: u64, body: &str) -> Result<Value> {
        self.call(
            ALICE_TOKEN,
            Method::POST,
            &Self::repo_path(&format!("/issues/{number}/comments")),
            Some(json!({"body": body})),
        )
        .await
    }

    /// Posts as mainloop's own account (only to plant a duplicate for the self-test).
    pub async fn comment_as_bot(&self, number: u64, body: &str) -> Result<Value> {
        self.call(
            BOT_TOKEN,
            Method::POST,
            &Self::repo_path(&format!("/issues/{number}/comments")),
            Some(json!({"body": body})),
        )
        .await
    }

    pub async fn thumbs_up(&self, comment: u64) -> Result<()> {
        self.call(
            ALICE_TOKEN,
            Method::POST,
            &Self::repo_path(&format!("/issues/comments/{comment}/reactions")),
            Some(json!({"content": "+1"})),
        )
        .await
        .map(drop)
    }

    pub async fn ci_success(&self, sha: &str) -> Result<()> {
        self.call(
            ALICE_TOKEN,
            Method::POST,
            &Self::repo_path("/check-runs"),
            Some(json!({"name": "build", "head_sha": sha, "status": "completed", "conclusion": "success"})),
        )
        .await
        .map(drop)
    }
}

//! GitHub (and GitHub Enterprise) behind the forge port: REST API version 2022-11-28
//! plus the GraphQL `markPullRequestReadyForReview` mutation, and git credentials that
//! never put the token in a URL.
//!
//! Written on plain `reqwest` rather than an SDK such as octocrab because polling a
//! pull request every minute for hours is only cheap with exact control of
//! conditional requests (`ETag`/`If-None-Match`, 304s cost no quota), `Link` pagination
//! and the rate-limit headers; and log downloads must not carry the token to the storage
//! host GitHub redirects to.
//!
//! - Every GET is conditional against an in-memory cache of `(ETag, body)` by URL.
//!   Polling reads also accept a validator persisted in their [`Cursor`], so a restarted
//!   server still gets 304s for an unchanged pull request.
//! - Lists follow `rel="next"` with `per_page=100`, at most 50 pages.
//! - The rate-limit state of the last answer is kept ([`GithubForge::rate_limit`]); when
//!   fewer than [`GithubConfig::min_remaining`] calls are left before the reset, calls
//!   return `RateLimited` without being sent (the calling job retries after the reset).
//! - Nothing retries by itself: the jobs calling the port retry with backoff.

mod client;
mod config;
mod error;
mod git;
mod link;
mod ratelimit;
mod wire;

pub use client::{MAX_PAGES, PER_PAGE, tail_utf8};
pub use config::{DEFAULT_API_URL, GithubConfig};
pub use error::GithubError;
pub use git::{ASKPASS_FILE_NAME, DEFAULT_GIT_URL, GitEnv, PASSWORD_VAR, git_url, install_askpass};
pub use link::next as next_link;
pub use ratelimit::RateLimit;

use bytes::Bytes;
use client::Api;
use futures::future::BoxFuture;
use mainloop_forge::{
    CiStatus, Comment, CommitSummary, Cursor, Feedback, FeedbackCursor, Forge, ForgeError,
    IssueRef, MergeOutcome, NewPullRequest, PrSummary, PullRequest, RepoRef, Result,
};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt;
use url::Url;

/// The forge port over GitHub's API.
pub struct GithubForge {
    api: Api,
}

impl fmt::Debug for GithubForge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubForge")
            .field("api_url", &self.api.base().as_str())
            .finish_non_exhaustive()
    }
}

fn parse<T: DeserializeOwned>(what: &str, body: &Bytes) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| error::protocol(what, &e))
}

fn items<T: DeserializeOwned>(what: &str, items: Vec<Value>) -> Result<Vec<T>> {
    items
        .into_iter()
        .map(|v| serde_json::from_value(v).map_err(|e| error::protocol(what, &e)))
        .collect()
}

const PER_PAGE_STR: &str = "100";

impl GithubForge {
    /// Builds the HTTP clients.
    ///
    /// # Errors
    /// URLs that do not parse, a token that cannot be a header, a TLS backend that fails.
    pub fn new(config: &GithubConfig) -> std::result::Result<Self, GithubError> {
        Ok(Self {
            api: Api::new(config)?,
        })
    }

    /// The quota state of the last answer that reported one, for logging.
    #[must_use]
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.api.rate_limit()
    }

    /// The quota state last reported for one resource (`core`, `graphql`).
    #[must_use]
    pub fn rate_limit_for(&self, resource: &str) -> Option<RateLimit> {
        self.api.limits.get(resource)
    }

    fn repo_url(&self, repo: &RepoRef, rest: &[&str], query: &[(&str, &str)]) -> Url {
        let mut segments = vec!["repos", repo.owner.as_str(), repo.name.as_str()];
        segments.extend_from_slice(rest);
        self.api.url(&segments, query)
    }

    /// A polling read of one list: items with ids above the cursor, by id, and the new
    /// cursor.
    async fn poll<T: DeserializeOwned>(
        &self,
        url: Url,
        what: &str,
        cursor: &Cursor,
        id: impl Fn(&T) -> u64,
    ) -> Result<(Vec<T>, Cursor)> {
        let listing = self
            .api
            .list(url, None, cursor.etag.as_deref(), None)
            .await?;
        if listing.unchanged {
            return Ok((Vec::new(), cursor.clone()));
        }
        let mut new: Vec<T> = items::<T>(what, listing.items)?
            .into_iter()
            .filter(|item| id(item) > cursor.seen_id)
            .collect();
        new.sort_by_key(|item| id(item));
        let seen_id = new.last().map_or(cursor.seen_id, &id);
        Ok((
            new,
            Cursor {
                seen_id,
                etag: listing.etag,
            },
        ))
    }

    async fn set_state(&self, repo: &RepoRef, kind: &str, number: u64) -> Result<()> {
        let number = number.to_string();
        let url = self.repo_url(repo, &[kind, &number], &[]);
        self.api
            .write(Method::PATCH, url, &json!({ "state": "closed" }))
            .await
            .map(drop)
    }
}

impl Forge for GithubForge {
    fn current_user(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            #[derive(serde::Deserialize)]
            struct Me {
                login: String,
            }
            let url = self.api.url(&["user"], &[]);
            let body = self.api.get(url).await?;
            Ok(parse::<Me>("the current user", &body)?.login)
        })
    }

    fn create_issue<'a>(
        &'a self,
        repo: &'a RepoRef,
        title: &'a str,
        body: &'a str,
        labels: &'a [&'a str],
    ) -> BoxFuture<'a, Result<IssueRef>> {
        Box::pin(async move {
            let url = self.repo_url(repo, &["issues"], &[]);
            let payload = json!({ "title": title, "body": body, "labels": labels });
            let answer = self.api.write(Method::POST, url, &payload).await?;
            let issue: wire::Issue = parse("an issue", &answer)?;
            Ok(IssueRef {
                number: issue.number,
                url: issue.html_url,
            })
        })
    }

    fn find_issue<'a>(
        &'a self,
        repo: &'a RepoRef,
        label: &'a str,
        marker: &'a str,
    ) -> BoxFuture<'a, Result<Option<IssueRef>>> {
        Box::pin(async move {
            const RECENT: usize = 100;
            let url = self.repo_url(
                repo,
                &["issues"],
                &[
                    ("labels", label),
                    ("state", "all"),
                    ("sort", "created"),
                    ("direction", "desc"),
                    ("per_page", PER_PAGE_STR),
                ],
            );
            let listing = self.api.list(url, None, None, Some(RECENT)).await?;
            Ok(items::<wire::Issue>("an issue", listing.items)?
                .into_iter()
                .filter(|i| i.pull_request.is_none())
                .find(|i| i.body.as_deref().is_some_and(|b| b.contains(marker)))
                .map(|i| IssueRef {
                    number: i.number,
                    url: i.html_url,
                }))
        })
    }

    fn comment<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Comment>> {
        Box::pin(async move {
            let number = number.to_string();
            let url = self.repo_url(repo, &["issues", &number, "comments"], &[]);
            let answer = self
                .api
                .write(Method::POST, url, &json!({ "body": body }))
                .await?;
            let comment: wire::IssueComment = parse("a comment", &answer)?;
            Ok(comment.into_comment())
        })
    }

    fn comments_since<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
        cursor: &'a Cursor,
    ) -> BoxFuture<'a, Result<(Vec<Comment>, Cursor)>> {
        Box::pin(async move {
            let number = number.to_string();
            let url = self.repo_url(
                repo,
                &["issues", &number, "comments"],
                &[("per_page", PER_PAGE_STR)],
            );
            let (comments, cursor) = self
                .poll(url, "a comment", cursor, |c: &wire::IssueComment| c.id)
                .await?;
            Ok((
                comments
                    .into_iter()
                    .map(wire::IssueComment::into_comment)
                    .collect(),
                cursor,
            ))
        })
    }

    fn thumbs_up<'a>(
        &'a self,
        repo: &'a RepoRef,
        comment_id: u64,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let id = comment_id.to_string();
            let url = self.repo_url(
                repo,
                &["issues", "comments", &id, "reactions"],
                &[("content", "+1"), ("per_page", PER_PAGE_STR)],
            );
            let listing = self.api.list(url, None, None, None).await?;
            let mut logins: Vec<String> = items::<wire::Reaction>("a reaction", listing.items)?
                .into_iter()
                .filter_map(wire::Reaction::thumbs_up_login)
                .collect();
            logins.dedup();
            Ok(logins)
        })
    }

    fn close_issue<'a>(&'a self, repo: &'a RepoRef, number: u64) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.set_state(repo, "issues", number))
    }

    fn open_pull_request<'a>(
        &'a self,
        repo: &'a RepoRef,
        pr: NewPullRequest<'a>,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        Box::pin(async move {
            let url = self.repo_url(repo, &["pulls"], &[]);
            let payload = json!({
                "title": pr.title,
                "head": pr.head,
                "base": pr.base,
                "body": pr.body,
                "draft": pr.draft,
            });
            let answer = self.api.write(Method::POST, url, &payload).await?;
            Ok(parse::<wire::Pull>("a pull request", &answer)?.into_pull_request())
        })
    }

    fn pull_request<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
    ) -> BoxFuture<'a, Result<PullRequest>> {
        Box::pin(async move {
            let number = number.to_string();
            let answer = self
                .api
                .get(self.repo_url(repo, &["pulls", &number], &[]))
                .await?;
            Ok(parse::<wire::Pull>("a pull request", &answer)?.into_pull_request())
        })
    }

    fn ci_status<'a>(&'a self, repo: &'a RepoRef, sha: &'a str) -> BoxFuture<'a, Result<CiStatus>> {
        Box::pin(async move {
            let url = self.repo_url(
                repo,
                &["commits", sha, "check-runs"],
                &[("per_page", PER_PAGE_STR)],
            );
            let listing = self.api.list(url, Some("check_runs"), None, None).await?;
            let runs: Vec<wire::CheckRun> = items("a check run", listing.items)?;
            Ok(wire::classify(&runs))
        })
    }

    fn job_log_tail<'a>(
        &'a self,
        repo: &'a RepoRef,
        job_id: u64,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let id = job_id.to_string();
            let url = self.repo_url(repo, &["actions", "jobs", &id, "logs"], &[]);
            self.api.log_tail(url, max_bytes).await
        })
    }

    fn mark_ready_for_review<'a>(
        &'a self,
        _repo: &'a RepoRef,
        pr: &'a PullRequest,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if pr.node_id.is_empty() {
                return Err(ForgeError::Rejected(format!(
                    "pull request #{} has no node id",
                    pr.number
                )));
            }
            const MUTATION: &str = "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) { pullRequest { isDraft } } }";
            self.api
                .graphql(MUTATION, json!({ "id": pr.node_id }))
                .await
                .map(drop)
        })
    }

    fn feedback_since<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
        cursor: &'a FeedbackCursor,
    ) -> BoxFuture<'a, Result<(Vec<Feedback>, FeedbackCursor)>> {
        Box::pin(async move {
            let n = number.to_string();
            let per_page = [("per_page", PER_PAGE_STR)];
            let reviews_url = self.repo_url(repo, &["pulls", &n, "reviews"], &per_page);
            let lines_url = self.repo_url(repo, &["pulls", &n, "comments"], &per_page);
            let comments_url = self.repo_url(repo, &["issues", &n, "comments"], &per_page);
            let (reviews, reviews_cursor) = self
                .poll(
                    reviews_url,
                    "a review",
                    &cursor.reviews,
                    |r: &wire::Review| r.id,
                )
                .await?;
            let (lines, lines_cursor) = self
                .poll(
                    lines_url,
                    "a review comment",
                    &cursor.line_comments,
                    |c: &wire::ReviewComment| c.id,
                )
                .await?;
            let (comments, comments_cursor) = self
                .poll(
                    comments_url,
                    "a comment",
                    &cursor.comments,
                    |c: &wire::IssueComment| c.id,
                )
                .await?;
            let mut timed: Vec<wire::Timed> = reviews
                .into_iter()
                .filter_map(wire::Review::into_feedback)
                .collect();
            timed.extend(lines.into_iter().map(wire::ReviewComment::into_feedback));
            timed.extend(comments.into_iter().map(wire::IssueComment::into_feedback));
            Ok((
                wire::merge_feedback(timed),
                FeedbackCursor {
                    reviews: reviews_cursor,
                    line_comments: lines_cursor,
                    comments: comments_cursor,
                },
            ))
        })
    }

    fn merge_pull_request<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
    ) -> BoxFuture<'a, Result<MergeOutcome>> {
        Box::pin(async move {
            let number = number.to_string();
            let url = self.repo_url(repo, &["pulls", &number, "merge"], &[]);
            let answer = match self.api.write(Method::PUT, url, &json!({})).await {
                Ok(answer) => answer,
                Err(e) => return error::merge_refusal(e),
            };
            let merged = serde_json::from_slice::<Value>(&answer)
                .ok()
                .and_then(|v| v.get("merged").and_then(Value::as_bool))
                .unwrap_or(true);
            Ok(if merged {
                MergeOutcome::Merged
            } else {
                MergeOutcome::NotMergeable(format!("pull request #{number} was not merged"))
            })
        })
    }

    fn close_pull_request<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.set_state(repo, "pulls", number))
    }

    fn open_pull_requests<'a>(
        &'a self,
        repo: &'a RepoRef,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PrSummary>>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let per_page = limit.min(PER_PAGE).to_string();
            let url = self.repo_url(
                repo,
                &["pulls"],
                &[
                    ("state", "open"),
                    ("sort", "created"),
                    ("direction", "desc"),
                    ("per_page", &per_page),
                ],
            );
            let listing = self.api.list(url, None, None, Some(limit)).await?;
            let mut pulls: Vec<PrSummary> = items::<wire::Pull>("a pull request", listing.items)?
                .into_iter()
                .map(wire::Pull::into_summary)
                .collect();
            pulls.truncate(limit);
            Ok(pulls)
        })
    }

    fn recent_commits<'a>(
        &'a self,
        repo: &'a RepoRef,
        branch: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CommitSummary>>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let per_page = limit.min(PER_PAGE).to_string();
            // No branch: the repository's default branch.
            let query: Vec<(&str, &str)> = if branch.is_empty() {
                vec![("per_page", &per_page)]
            } else {
                vec![("sha", branch), ("per_page", &per_page)]
            };
            let url = self.repo_url(repo, &["commits"], &query);
            let listing = self.api.list(url, None, None, Some(limit)).await?;
            let mut commits: Vec<CommitSummary> = items::<wire::Commit>("a commit", listing.items)?
                .into_iter()
                .map(wire::Commit::into_summary)
                .collect();
            commits.truncate(limit);
            Ok(commits)
        })
    }
}

//! The forge port: the narrow interface the worker lifecycle uses to mirror a task onto a
//! code host (a plan issue, a draft pull request, CI, reviews), with the data it reads
//! back. GitHub implements it (`mainloop-github`); tests drive it against the fake GitHub
//! server. Polling reads take and return a [`Cursor`], so nothing posted between two
//! polls is skipped, and an unchanged resource costs a conditional request only.

pub mod replies;
mod repo;

pub use repo::{RepoRef, RepoRefError};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// What went wrong talking to the forge.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The forge is unreachable or answered 5xx: try again later.
    #[error("the forge is unavailable: {0}")]
    Unavailable(String),
    /// Out of API quota; retry after the given time.
    #[error("rate limited; retry in {0:?}")]
    RateLimited(Duration),
    /// The token is missing, wrong, or lacks a permission.
    #[error("the forge refused the credentials: {0}")]
    Unauthorized(String),
    /// No such repository, issue, pull request or comment.
    #[error("not found: {0}")]
    NotFound(String),
    /// The forge rejected the request (validation, a merge conflict, …).
    #[error("the forge rejected the request: {0}")]
    Rejected(String),
    /// The forge answered something this client cannot read.
    #[error("unexpected answer from the forge: {0}")]
    Protocol(String),
}

impl ForgeError {
    /// Whether waiting and retrying can help (the lifecycle keeps watching; it never
    /// gives up silently on these).
    #[must_use]
    pub const fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::RateLimited(_))
    }
}

pub type Result<T> = std::result::Result<T, ForgeError>;

/// Where a polling read left off: the newest item id seen, and the validator of the
/// last full answer (an `ETag`), so an unchanged resource costs a 304 only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Items with an id at or below this were already returned.
    pub seen_id: u64,
    /// The `ETag` of the last full answer, sent back as `If-None-Match`.
    pub etag: Option<String>,
}

/// An issue or pull request, by number, with its web address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRef {
    pub number: u64,
    pub url: String,
}

/// A comment on an issue or pull request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub id: u64,
    pub author: String,
    pub body: String,
    pub url: String,
}

/// A pull request as the lifecycle needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    /// The GraphQL node id (needed to mark it ready for review).
    pub node_id: String,
    pub url: String,
    pub head_sha: String,
    pub draft: bool,
    pub state: PrState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrState {
    Open,
    Merged,
    /// Closed without merging.
    Closed,
}

/// The combined state of a commit's check runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CiStatus {
    /// The commit has no check runs at all: reported as "no CI", never as green.
    None,
    /// Some checks have not finished.
    Pending { total: usize, completed: usize },
    /// Every check finished and none failed.
    Passed { total: usize },
    /// At least one check failed; the failing ones, with their job ids for the logs.
    Failed {
        total: usize,
        failures: Vec<FailedCheck>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedCheck {
    pub name: String,
    pub conclusion: String,
    /// The Actions job behind the check run, when there is one (its log can be read).
    pub job_id: Option<u64>,
    pub url: String,
}

/// Human feedback on a pull request since the last poll: a review (with its state), a
/// review comment on a line, or a plain comment on the conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    pub id: u64,
    pub kind: FeedbackKind,
    pub author: String,
    pub body: String,
    /// For line comments: the file and line.
    pub path: Option<String>,
    pub line: Option<u64>,
    pub url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackKind {
    /// A review that requests changes.
    ChangesRequested,
    /// A review that approves.
    Approved,
    /// A review with a body but no verdict.
    Commented,
    /// A comment on a line of the diff.
    LineComment,
    /// A comment on the pull request's conversation.
    Comment,
}

/// An open pull request, for the projects view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrSummary {
    pub number: u64,
    pub title: String,
    pub url: String,
    pub author: String,
    pub draft: bool,
    pub head: String,
}

/// A commit on the default branch, for the projects view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSummary {
    pub sha: String,
    pub message: String,
    pub author: String,
    pub url: String,
}

/// What came of asking the forge to merge a pull request, when the call itself worked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum MergeOutcome {
    Merged,
    /// The base or head branch moved while the forge was merging (GitHub: 409 "Base
    /// branch was modified. Review and try the merge again."): nothing changed, and the
    /// same merge may well work on fresh state.
    Raced(String),
    /// The forge will not merge the pull request as it stands (GitHub: 405 "Pull Request
    /// is not mergeable"): it conflicts with its base, is already merged or closed, is a
    /// draft, or a branch rule holds it back.
    NotMergeable(String),
}

/// A new pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPullRequest<'a> {
    pub head: &'a str,
    pub base: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub draft: bool,
}

/// What mainloop asks of a code host. Every method is one or a few API calls; none
/// retries by itself (the job that calls it does, with backoff).
pub trait Forge: Send + Sync + fmt::Debug + 'static {
    /// The login the token acts as.
    fn current_user(&self) -> BoxFuture<'_, Result<String>>;
    /// Opens an issue with labels.
    fn create_issue<'a>(
        &'a self,
        repo: &'a RepoRef,
        title: &'a str,
        body: &'a str,
        labels: &'a [&'a str],
    ) -> BoxFuture<'a, Result<IssueRef>>;
    /// The most recent issue with `label` whose body contains `marker`, open or closed:
    /// finds an issue whose creation went unrecorded (the caller died after the forge
    /// made it). Looks at recent issues only.
    fn find_issue<'a>(
        &'a self,
        repo: &'a RepoRef,
        label: &'a str,
        marker: &'a str,
    ) -> BoxFuture<'a, Result<Option<IssueRef>>>;
    /// Comments on an issue or pull request.
    fn comment<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
        body: &'a str,
    ) -> BoxFuture<'a, Result<Comment>>;
    /// Comments posted after the cursor (all pages), oldest first, and the new cursor.
    fn comments_since<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
        cursor: &'a Cursor,
    ) -> BoxFuture<'a, Result<(Vec<Comment>, Cursor)>>;
    /// The logins that reacted 👍 (`+1`) to a comment.
    fn thumbs_up<'a>(
        &'a self,
        repo: &'a RepoRef,
        comment_id: u64,
    ) -> BoxFuture<'a, Result<Vec<String>>>;
    /// Closes an issue (not planned, or completed).
    fn close_issue<'a>(&'a self, repo: &'a RepoRef, number: u64) -> BoxFuture<'a, Result<()>>;
    /// Opens a pull request.
    fn open_pull_request<'a>(
        &'a self,
        repo: &'a RepoRef,
        pr: NewPullRequest<'a>,
    ) -> BoxFuture<'a, Result<PullRequest>>;
    /// A pull request's current state and head.
    fn pull_request<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
    ) -> BoxFuture<'a, Result<PullRequest>>;
    /// The check runs of a commit, combined (all pages).
    fn ci_status<'a>(&'a self, repo: &'a RepoRef, sha: &'a str) -> BoxFuture<'a, Result<CiStatus>>;
    /// The last `max_bytes` of an Actions job's log.
    fn job_log_tail<'a>(
        &'a self,
        repo: &'a RepoRef,
        job_id: u64,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<String>>;
    /// Marks a draft pull request ready for review (GraphQL).
    fn mark_ready_for_review<'a>(
        &'a self,
        repo: &'a RepoRef,
        pr: &'a PullRequest,
    ) -> BoxFuture<'a, Result<()>>;
    /// Reviews, line comments and conversation comments after the cursor, oldest first.
    fn feedback_since<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
        cursor: &'a FeedbackCursor,
    ) -> BoxFuture<'a, Result<(Vec<Feedback>, FeedbackCursor)>>;
    /// Merges a pull request; a refusal that waiting or updating the branch can cure is
    /// an outcome, not an error.
    fn merge_pull_request<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
    ) -> BoxFuture<'a, Result<MergeOutcome>>;
    /// Closes a pull request without merging.
    fn close_pull_request<'a>(
        &'a self,
        repo: &'a RepoRef,
        number: u64,
    ) -> BoxFuture<'a, Result<()>>;
    /// Open pull requests, newest first (at most `limit`).
    fn open_pull_requests<'a>(
        &'a self,
        repo: &'a RepoRef,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PrSummary>>>;
    /// Recent commits on a branch, newest first (at most `limit`).
    fn recent_commits<'a>(
        &'a self,
        repo: &'a RepoRef,
        branch: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CommitSummary>>>;
}

/// Where a pull request's feedback poll left off, per source (reviews, line comments,
/// conversation comments each have their own ids and validators).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackCursor {
    pub reviews: Cursor,
    pub line_comments: Cursor,
    pub comments: Cursor,
}

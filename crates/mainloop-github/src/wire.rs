//! GitHub's JSON (REST API 2022-11-28) as far as mainloop reads it, and its mapping onto
//! the port's types: pull request states, check-run classification, feedback.

use mainloop_forge::{
    CiStatus, Comment, CommitSummary, FailedCheck, Feedback, FeedbackKind, PrState, PrSummary,
    PullRequest,
};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Deserialize)]
pub struct User {
    pub login: String,
}

/// Deleted accounts come back as `null`; GitHub's web UI shows them as "ghost".
fn login(user: Option<&User>) -> String {
    user.map_or_else(|| "ghost".to_owned(), |u| u.login.clone())
}

#[derive(Debug, Deserialize)]
pub struct Issue {
    pub number: u64,
    pub html_url: String,
    #[serde(default)]
    pub body: Option<String>,
    /// Present when the "issue" is a pull request (GitHub lists both as issues).
    #[serde(default)]
    pub pull_request: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub struct IssueComment {
    pub id: u64,
    pub user: Option<User>,
    #[serde(default)]
    pub body: Option<String>,
    pub html_url: String,
    #[serde(default)]
    pub created_at: Option<String>,
}

impl IssueComment {
    pub fn into_comment(self) -> Comment {
        Comment {
            id: self.id,
            author: login(self.user.as_ref()),
            body: self.body.unwrap_or_default(),
            url: self.html_url,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Review {
    pub id: u64,
    pub user: Option<User>,
    #[serde(default)]
    pub body: Option<String>,
    pub state: String,
    pub html_url: String,
    #[serde(default)]
    pub submitted_at: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ReviewComment {
    pub id: u64,
    pub user: Option<User>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub line: Option<u64>,
    #[serde(default)]
    pub original_line: Option<u64>,
    pub html_url: String,
    #[serde(default)]
    pub created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Head {
    pub sha: String,
    #[serde(rename = "ref", default)]
    pub branch: String,
}

#[derive(Debug, Deserialize)]
pub struct Pull {
    pub number: u64,
    #[serde(default)]
    pub node_id: String,
    pub html_url: String,
    pub head: Head,
    #[serde(default)]
    pub draft: Option<bool>,
    pub state: String,
    /// Only in the single-pull answer; lists carry `merged_at` alone.
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merged_at: Option<String>,
    #[serde(default)]
    pub title: String,
    pub user: Option<User>,
}

impl Pull {
    pub fn pr_state(&self) -> PrState {
        let merged = self.merged.unwrap_or(self.merged_at.is_some());
        match (self.state.as_str(), merged) {
            (_, true) => PrState::Merged,
            ("open", false) => PrState::Open,
            _ => PrState::Closed,
        }
    }

    pub fn into_pull_request(self) -> PullRequest {
        let state = self.pr_state();
        PullRequest {
            number: self.number,
            node_id: self.node_id,
            url: self.html_url,
            head_sha: self.head.sha,
            draft: self.draft.unwrap_or(false),
            state,
        }
    }

    pub fn into_summary(self) -> PrSummary {
        PrSummary {
            number: self.number,
            author: login(self.user.as_ref()),
            title: self.title,
            url: self.html_url,
            draft: self.draft.unwrap_or(false),
            head: self.head.branch,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct App {
    #[serde(default)]
    pub slug: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CheckRun {
    pub id: u64,
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub details_url: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub app: Option<App>,
}

/// Conclusions that mean the commit is not good; `success`, `neutral` and `skipped` do
/// not block.
const FAILING: &[&str] = &[
    "failure",
    "timed_out",
    "cancelled",
    "action_required",
    "startup_failure",
    "stale",
];

impl CheckRun {
    /// The Actions job behind the run: the `…/job/<id>` of its details URL, else (for
    /// GitHub Actions, whose check run ids are job ids) its own id.
    pub fn job_id(&self) -> Option<u64> {
        let from_url = self.details_url.as_deref().and_then(|url| {
            let path = url.split(['?', '#']).next()?;
            let mut segments = path.rsplit('/').filter(|s| !s.is_empty());
            let id = segments.next()?;
            (segments.next()? == "job").then(|| id.parse().ok())?
        });
        from_url.or_else(|| {
            let actions = self
                .app
                .as_ref()
                .and_then(|a| a.slug.as_deref())
                .is_some_and(|s| s == "github-actions");
            actions.then_some(self.id)
        })
    }
}

/// The combined state: no runs is "no CI"; anything unfinished is pending; otherwise
/// failed if any run failed.
pub fn classify(runs: &[CheckRun]) -> CiStatus {
    let total = runs.len();
    if total == 0 {
        return CiStatus::None;
    }
    let completed = runs.iter().filter(|r| r.status == "completed").count();
    if completed < total {
        return CiStatus::Pending { total, completed };
    }
    let failures: Vec<FailedCheck> = runs
        .iter()
        .filter_map(|r| {
            let conclusion = r.conclusion.as_deref()?;
            FAILING.contains(&conclusion).then(|| FailedCheck {
                name: r.name.clone(),
                conclusion: conclusion.to_owned(),
                job_id: r.job_id(),
                url: r
                    .html_url
                    .clone()
                    .or_else(|| r.details_url.clone())
                    .unwrap_or_default(),
            })
        })
        .collect();
    if failures.is_empty() {
        CiStatus::Passed { total }
    } else {
        CiStatus::Failed { total, failures }
    }
}

#[derive(Debug, Deserialize)]
pub struct GitAuthor {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct GitCommit {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub author: Option<GitAuthor>,
}

#[derive(Debug, Deserialize)]
pub struct Commit {
    pub sha: String,
    pub html_url: String,
    pub commit: GitCommit,
    /// The GitHub account, when the commit's email maps to one.
    #[serde(default)]
    pub author: Option<User>,
}

impl Commit {
    pub fn into_summary(self) -> CommitSummary {
        let author = self
            .author
            .map(|u| u.login)
            .or_else(|| self.commit.author.and_then(|a| a.name))
            .unwrap_or_default();
        CommitSummary {
            sha: self.sha,
            message: self.commit.message,
            author,
            url: self.html_url,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Reaction {
    pub user: Option<User>,
    pub content: String,
}

impl Reaction {
    pub fn thumbs_up_login(self) -> Option<String> {
        (self.content == "+1").then(|| login(self.user.as_ref()))
    }
}

/// A feedback item with the time it was made, for merging the three sources in order.
#[derive(Debug)]
pub struct Timed {
    pub at: Option<OffsetDateTime>,
    pub feedback: Feedback,
}

fn parse_time(s: Option<&str>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s?, &Rfc3339).ok()
}

impl Review {
    /// `None` for reviews that are not feedback yet or any more: `PENDING` (still being
    /// written), `DISMISSED`, and the empty `COMMENTED` review GitHub wraps around a
    /// single line comment (the line comment itself carries the words).
    pub fn into_feedback(self) -> Option<Timed> {
        let body = self.body.unwrap_or_default();
        let kind = match self.state.as_str() {
            "APPROVED" => FeedbackKind::Approved,
            "CHANGES_REQUESTED" => FeedbackKind::ChangesRequested,
            "COMMENTED" if !body.trim().is_empty() => FeedbackKind::Commented,
            _ => return None,
        };
        Some(Timed {
            at: parse_time(self.submitted_at.as_deref()),
            feedback: Feedback {
                id: self.id,
                kind,
                author: login(self.user.as_ref()),
                body,
                path: None,
                line: None,
                url: self.html_url,
            },
        })
    }
}

impl ReviewComment {
    pub fn into_feedback(self) -> Timed {
        Timed {
            at: parse_time(self.created_at.as_deref()),
            feedback: Feedback {
                id: self.id,
                kind: FeedbackKind::LineComment,
                author: login(self.user.as_ref()),
                body: self.body.unwrap_or_default(),
                path: self.path,
                // `line` is null once the diff moved on; the original still says where.
                line: self.line.or(self.original_line),
                url: self.html_url,
            },
        }
    }
}

impl IssueComment {
    pub fn into_feedback(self) -> Timed {
        let at = parse_time(self.created_at.as_deref());
        let c = self.into_comment();
        Timed {
            at,
            feedback: Feedback {
                id: c.id,
                kind: FeedbackKind::Comment,
                author: c.author,
                body: c.body,
                path: None,
                line: None,
                url: c.url,
            },
        }
    }
}

/// Oldest first; items without a time go last, by id.
pub fn merge_feedback(mut items: Vec<Timed>) -> Vec<Feedback> {
    items.sort_by(|a, b| match (a.at, b.at) {
        (Some(x), Some(y)) => x.cmp(&y).then(a.feedback.id.cmp(&b.feedback.id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.feedback.id.cmp(&b.feedback.id),
    });
    items.into_iter().map(|t| t.feedback).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runs(v: serde_json::Value) -> Vec<CheckRun> {
        serde_json::from_value(v).unwrap_or_default()
    }

    fn run(id: u64, name: &str, status: &str, conclusion: Option<&str>) -> serde_json::Value {
        json!({
            "id": id,
            "head_sha": "ce587453ced02b1526dfb4cb910479d431683101",
            "node_id": "MDg6Q2hlY2tSdW40",
            "external_id": "",
            "url": format!("https://api.github.com/repos/octo/hello/check-runs/{id}"),
            "html_url": format!("https://github.com/octo/hello/runs/{id}"),
            "details_url": format!("https://github.com/octo/hello/actions/runs/99/job/{id}"),
            "status": status,
            "conclusion": conclusion,
            "started_at": "2018-05-04T01:14:52Z",
            "completed_at": null,
            "output": {"title": null, "summary": null, "text": null, "annotations_count": 0},
            "name": name,
            "check_suite": {"id": 5},
            "app": {"id": 1, "slug": "github-actions", "name": "GitHub Actions"},
            "pull_requests": []
        })
    }

    #[test]
    fn no_runs_is_no_ci() {
        assert_eq!(classify(&[]), CiStatus::None);
    }

    #[test]
    fn unfinished_runs_are_pending() {
        let r = runs(json!([
            run(1, "build", "completed", Some("success")),
            run(2, "test", "in_progress", None),
            run(3, "lint", "queued", None),
        ]));
        assert_eq!(
            classify(&r),
            CiStatus::Pending {
                total: 3,
                completed: 1
            }
        );
    }

    #[test]
    fn neutral_and_skipped_pass() {
        let r = runs(json!([
            run(1, "build", "completed", Some("success")),
            run(2, "docs", "completed", Some("skipped")),
            run(3, "optional", "completed", Some("neutral")),
        ]));
        assert_eq!(classify(&r), CiStatus::Passed { total: 3 });
    }

    #[test]
    fn failures_carry_job_ids() {
        let mut external = run(7, "external", "completed", Some("timed_out"));
        external["details_url"] = json!("https://ci.example.com/builds/7");
        external["app"] = json!({"slug": "some-ci"});
        let mut actions_no_url = run(8, "actions", "completed", Some("cancelled"));
        actions_no_url["details_url"] = json!(null);
        let r = runs(json!([
            run(1, "build", "completed", Some("success")),
            run(2, "test", "completed", Some("failure")),
            external,
            actions_no_url,
        ]));
        let CiStatus::Failed { total, failures } = classify(&r) else {
            panic!("expected a failure: {:?}", classify(&r));
        };
        assert_eq!(total, 4);
        let got: Vec<(&str, &str, Option<u64>)> = failures
            .iter()
            .map(|f| (f.name.as_str(), f.conclusion.as_str(), f.job_id))
            .collect();
        assert_eq!(
            got,
            vec![
                ("test", "failure", Some(2)),
                ("external", "timed_out", None),
                ("actions", "cancelled", Some(8)),
            ]
        );
        assert_eq!(failures[0].url, "https://github.com/octo/hello/runs/2");
    }

    #[test]
    fn every_failing_conclusion_fails() {
        for c in FAILING {
            let r = runs(json!([run(1, "x", "completed", Some(*c))]));
            assert!(matches!(classify(&r), CiStatus::Failed { .. }), "{c}");
        }
    }

    fn pull(state: &str, merged: Option<bool>, merged_at: Option<&str>) -> Pull {
        serde_json::from_value(json!({
            "number": 1347,
            "node_id": "MDExOlB1bGxSZXF1ZXN0MQ==",
            "html_url": "https://github.com/octo/hello/pull/1347",
            "state": state,
            "title": "Amazing new feature",
            "user": {"login": "octocat", "id": 1},
            "head": {"ref": "new-topic", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"},
            "base": {"ref": "main", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"},
            "draft": true,
            "merged": merged,
            "merged_at": merged_at,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pull_states() {
        assert_eq!(pull("open", Some(false), None).pr_state(), PrState::Open);
        assert_eq!(
            pull("closed", Some(false), None).pr_state(),
            PrState::Closed
        );
        assert_eq!(pull("closed", Some(true), None).pr_state(), PrState::Merged);
        // List answers have no `merged`, only `merged_at`.
        assert_eq!(
            pull("closed", None, Some("2011-01-26T19:01:12Z")).pr_state(),
            PrState::Merged
        );
        let pr = pull("open", Some(false), None).into_pull_request();
        assert!(pr.draft);
        assert_eq!(pr.node_id, "MDExOlB1bGxSZXF1ZXN0MQ==");
        assert_eq!(pr.head_sha, "6dcb09b5b57875f334f61aebed695e2e4193db5e");
    }

    #[test]
    fn reviews_map_and_skip() {
        let review = |id: u64, state: &str, body: &str, at: &str| -> Review {
            serde_json::from_value(json!({
                "id": id, "node_id": "x", "user": {"login": "alice"}, "body": body,
                "state": state, "html_url": format!("https://github.com/o/r/pull/1#pullrequestreview-{id}"),
                "submitted_at": at, "commit_id": "abc"
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(
            review(1, "PENDING", "draft", "2024-01-01T00:00:00Z")
                .into_feedback()
                .is_none()
        );
        assert!(
            review(2, "DISMISSED", "x", "2024-01-01T00:00:00Z")
                .into_feedback()
                .is_none()
        );
        assert!(
            review(3, "COMMENTED", "", "2024-01-01T00:00:00Z")
                .into_feedback()
                .is_none()
        );
        let kinds: Vec<FeedbackKind> = [
            review(4, "APPROVED", "", "2024-01-01T00:00:03Z"),
            review(5, "CHANGES_REQUESTED", "fix it", "2024-01-01T00:00:01Z"),
            review(6, "COMMENTED", "hmm", "2024-01-01T00:00:02Z"),
        ]
        .into_iter()
        .filter_map(Review::into_feedback)
        .map(|t| t.feedback.kind)
        .collect();
        assert_eq!(
            kinds,
            vec![
                FeedbackKind::Approved,
                FeedbackKind::ChangesRequested,
                FeedbackKind::Commented
            ]
        );
    }

    #[test]
    fn feedback_merges_by_time_across_sources() {
        let line: ReviewComment = serde_json::from_value(json!({
            "id": 900, "user": {"login": "bob"}, "body": "typo", "path": "src/lib.rs",
            "line": null, "original_line": 12,
            "html_url": "https://github.com/o/r/pull/1#discussion_r900",
            "created_at": "2024-01-01T00:00:02Z"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let comment: IssueComment = serde_json::from_value(json!({
            "id": 5, "user": null, "body": "first",
            "html_url": "https://github.com/o/r/pull/1#issuecomment-5",
            "created_at": "2024-01-01T00:00:01Z"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let merged = merge_feedback(vec![line.into_feedback(), comment.into_feedback()]);
        assert_eq!(merged[0].kind, FeedbackKind::Comment);
        assert_eq!(merged[0].author, "ghost");
        assert_eq!(merged[1].kind, FeedbackKind::LineComment);
        assert_eq!(merged[1].path.as_deref(), Some("src/lib.rs"));
        assert_eq!(merged[1].line, Some(12));
    }

    #[test]
    fn commits_prefer_the_account_login() {
        let c: Commit = serde_json::from_value(json!({
            "sha": "abc", "html_url": "https://github.com/o/r/commit/abc",
            "commit": {"message": "Fix all the bugs\n\nDetails", "author": {"name": "Monalisa Octocat"}},
            "author": null
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.into_summary().author, "Monalisa Octocat");
    }
}

//! GitHub's JSON for each object, as its REST API renders them (users, repositories,
//! issues, comments, reactions, pull requests, reviews, review comments, check runs).

use crate::state::{
    CheckRun, IssueComment, Live, Reaction, Repo, Review, ReviewComment, Shared, Thread, node_id,
    ts, ts_opt,
};
use serde_json::{Value, json};

impl Shared {
    pub(crate) fn user(&self, login: &str) -> Value {
        let id = self.user_id(login);
        json!({
            "login": login,
            "id": id,
            "node_id": node_id("U", id),
            "type": "User",
            "site_admin": false,
            "avatar_url": format!("{}/_fake/avatars/{login}", self.base_url),
            "url": format!("{}/users/{login}", self.base_url),
            "html_url": format!("{}/{login}", self.base_url),
        })
    }

    pub(crate) fn repo_json(&self, r: &Repo) -> Value {
        let full = r.full_name();
        json!({
            "id": r.id,
            "node_id": node_id("R", r.id),
            "name": r.name,
            "full_name": full,
            "owner": self.user(&r.owner),
            "private": false,
            "visibility": "public",
            "default_branch": r.default_branch,
            "html_url": format!("{}/{full}", self.base_url),
            "url": format!("{}/repos/{full}", self.base_url),
            "clone_url": format!("file://{}", r.path.display()),
            "created_at": ts(r.created_at),
        })
    }

    pub(crate) fn issue_json(&self, r: &Repo, t: &Thread) -> Value {
        let full = r.full_name();
        let api = format!("{}/repos/{full}/issues/{}", self.base_url, t.number);
        let comments = r.comments.iter().filter(|c| c.number == t.number).count();
        let mut v = json!({
            "id": t.id,
            "node_id": node_id("I", t.id),
            "number": t.number,
            "title": t.title,
            "body": t.body,
            "state": if t.open { "open" } else { "closed" },
            "state_reason": t.state_reason,
            "locked": false,
            "labels": t.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
            "user": self.user(&t.user),
            "comments": comments,
            "url": api,
            "comments_url": format!("{api}/comments"),
            "html_url": format!("{}/{full}/issues/{}", self.base_url, t.number),
            "created_at": ts(t.created_at),
            "updated_at": ts(t.updated_at),
            "closed_at": ts_opt(t.closed_at),
        });
        if let Some(pr) = &t.pr {
            v["html_url"] = json!(format!("{}/{full}/pull/{}", self.base_url, t.number));
            v["pull_request"] = json!({
                "url": format!("{}/repos/{full}/pulls/{}", self.base_url, t.number),
                "html_url": format!("{}/{full}/pull/{}", self.base_url, t.number),
                "merged_at": ts_opt(pr.merged_at),
            });
            v["draft"] = json!(pr.draft);
        }
        v
    }

    pub(crate) fn comment_json(&self, r: &Repo, c: &IssueComment) -> Value {
        let full = r.full_name();
        let is_pr = r.threads.get(&c.number).is_some_and(|t| t.pr.is_some());
        let html = if is_pr { "pull" } else { "issues" };
        json!({
            "id": c.id,
            "node_id": node_id("IC", c.id),
            "body": c.body,
            "user": self.user(&c.user),
            "author_association": "CONTRIBUTOR",
            "url": format!("{}/repos/{full}/issues/comments/{}", self.base_url, c.id),
            "html_url": format!("{}/{full}/{html}/{}#issuecomment-{}", self.base_url, c.number, c.id),
            "issue_url": format!("{}/repos/{full}/issues/{}", self.base_url, c.number),
            "created_at": ts(c.created_at),
            "updated_at": ts(c.updated_at),
        })
    }

    pub(crate) fn reaction_json(&self, x: &Reaction) -> Value {
        json!({
            "id": x.id,
            "node_id": node_id("REA", x.id),
            "content": x.content,
            "user": self.user(&x.user),
            "created_at": ts(x.created_at),
        })
    }

    /// `live` is the pull request's head/base tips and mergeability read from git just
    /// now (only the single-PR endpoint computes mergeability, as on GitHub).
    pub(crate) fn pr_json(&self, r: &Repo, t: &Thread, live: &Live) -> Value {
        let Some(pr) = &t.pr else {
            return Value::Null;
        };
        let full = r.full_name();
        let api = format!("{}/repos/{full}/pulls/{}", self.base_url, t.number);
        let repo = self.repo_json(r);
        let merged = pr.merged_at.is_some();
        let mut v = json!({
            "id": pr.id,
            "node_id": node_id("PR", pr.id),
            "number": t.number,
            "title": t.title,
            "body": t.body,
            "state": if t.open { "open" } else { "closed" },
            "locked": false,
            "draft": pr.draft,
            "merged": merged,
            "merged_at": ts_opt(pr.merged_at),
            "merged_by": pr.merged_by.as_deref().map(|l| self.user(l)),
            "merge_commit_sha": pr.merge_commit_sha,
            "labels": t.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
            "user": self.user(&t.user),
            "url": api,
            "html_url": format!("{}/{full}/pull/{}", self.base_url, t.number),
            "issue_url": format!("{}/repos/{full}/issues/{}", self.base_url, t.number),
            "comments_url": format!("{}/repos/{full}/issues/{}/comments", self.base_url, t.number),
            "review_comments_url": format!("{api}/comments"),
            "commits_url": format!("{api}/commits"),
            "head": {
                "ref": pr.head_ref,
                "sha": live.head_sha,
                "label": format!("{}:{}", r.owner, pr.head_ref),
                "user": self.user(&r.owner),
                "repo": repo,
            },
            "base": {
                "ref": pr.base_ref,
                "sha": live.base_sha,
                "label": format!("{}:{}", r.owner, pr.base_ref),
                "user": self.user(&r.owner),
                "repo": repo,
            },
            "created_at": ts(t.created_at),
            "updated_at": ts(t.updated_at),
            "closed_at": ts_opt(t.closed_at),
        });
        if let Some(m) = live.mergeable {
            v["mergeable"] = m.map_or(Value::Null, Value::Bool);
            v["mergeable_state"] = json!(match m {
                _ if merged || !t.open => "unknown",
                _ if pr.draft => "draft",
                Some(true) => "clean",
                Some(false) => "dirty",
                None => "unknown",
            });
            v["rebaseable"] = v["mergeable"].clone();
        }
        v
    }

    pub(crate) fn review_json(&self, r: &Repo, x: &Review) -> Value {
        let full = r.full_name();
        json!({
            "id": x.id,
            "node_id": node_id("PRR", x.id),
            "user": self.user(&x.user),
            "body": x.body,
            "state": x.state,
            "author_association": "CONTRIBUTOR",
            "html_url": format!("{}/{full}/pull/{}#pullrequestreview-{}", self.base_url, x.number, x.id),
            "pull_request_url": format!("{}/repos/{full}/pulls/{}", self.base_url, x.number),
            "submitted_at": ts_opt(x.submitted_at),
            "commit_id": x.commit_id,
        })
    }

    pub(crate) fn review_comment_json(&self, r: &Repo, c: &ReviewComment) -> Value {
        let full = r.full_name();
        let mut v = json!({
            "id": c.id,
            "node_id": node_id("PRRC", c.id),
            "pull_request_review_id": c.review_id,
            "user": self.user(&c.user),
            "body": c.body,
            "path": c.path,
            "line": c.line,
            "original_line": c.line,
            "side": c.side,
            "subject_type": if c.line.is_some() { "line" } else { "file" },
            "diff_hunk": "",
            "commit_id": c.commit_id,
            "original_commit_id": c.commit_id,
            "author_association": "CONTRIBUTOR",
            "url": format!("{}/repos/{full}/pulls/comments/{}", self.base_url, c.id),
            "html_url": format!("{}/{full}/pull/{}#discussion_r{}", self.base_url, c.number, c.id),
            "pull_request_url": format!("{}/repos/{full}/pulls/{}", self.base_url, c.number),
            "created_at": ts(c.created_at),
            "updated_at": ts(c.updated_at),
        });
        if let Some(id) = c.in_reply_to {
            v["in_reply_to_id"] = json!(id);
        }
        v
    }

    pub(crate) fn check_run_json(&self, r: &Repo, c: &CheckRun) -> Value {
        let full = r.full_name();
        let html = if c.log.is_some() {
            format!("{}/{full}/actions/runs/1/job/{}", self.base_url, c.id)
        } else {
            format!("{}/{full}/runs/{}", self.base_url, c.id)
        };
        let details = if c.log.is_some() {
            Some(html.clone())
        } else {
            c.details_url.clone()
        };
        json!({
            "id": c.id,
            "node_id": node_id("CR", c.id),
            "name": c.name,
            "head_sha": c.head_sha,
            "external_id": c.external_id,
            "status": c.status,
            "conclusion": c.conclusion,
            "url": format!("{}/repos/{full}/check-runs/{}", self.base_url, c.id),
            "html_url": html,
            "details_url": details.unwrap_or(html),
            "started_at": ts_opt(c.started_at),
            "completed_at": ts_opt(c.completed_at),
            "output": c.output,
            "app": if c.log.is_some() {
                json!({"slug": "github-actions", "name": "GitHub Actions"})
            } else {
                Value::Null
            },
            "pull_requests": [],
        })
    }
}

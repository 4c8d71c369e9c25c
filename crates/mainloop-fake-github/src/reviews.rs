//! Reviews and review comments on pull requests: verdicts, pending reviews with their
//! draft line comments, and comments on lines of the diff.

use crate::Error;
use crate::http::{Body, Login, json, listed, num, paginate};
use crate::pulls::{live, pull_thread};
use crate::state::{Review, ReviewComment, Shared, now};
use axum::extract::{Extension, Path, State};
use axum::http::Uri;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type Repo3 = Path<(String, String, String)>;

#[derive(Debug, Deserialize)]
pub(crate) struct DraftComment {
    path: String,
    #[serde(default)]
    line: Option<u64>,
    #[serde(default)]
    side: Option<String>,
    body: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewReview {
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    commit_id: Option<String>,
    #[serde(default)]
    comments: Vec<DraftComment>,
}

fn unprocessable(why: &str) -> Error {
    Error::Api {
        status: 422,
        message: "Unprocessable Entity".to_owned(),
        errors: Some(json!([why])),
    }
}

pub(crate) async fn create_review(
    State(s): State<Arc<Shared>>,
    Extension(Login(login)): Extension<Login>,
    Path((o, r, n)): Repo3,
    Body(b): Body<NewReview>,
) -> Result<Response, Error> {
    let n = num(&n)?;
    let repo = s.repo(&o, &r)?;
    let t = pull_thread(&repo, n)?;
    let state = match b.event.as_deref() {
        Some("APPROVE") => "APPROVED",
        Some("REQUEST_CHANGES") => "CHANGES_REQUESTED",
        Some("COMMENT") => "COMMENTED",
        None | Some("") => "PENDING",
        Some(_) => {
            return Err(Error::validation(json!([
                {"resource": "PullRequestReview", "field": "event", "code": "invalid"}
            ])));
        }
    };
    let body = b.body.unwrap_or_default();
    if t.user == login && state == "APPROVED" {
        return Err(unprocessable("Can not approve your own pull request"));
    }
    if t.user == login && state == "CHANGES_REQUESTED" {
        return Err(unprocessable(
            "Can not request changes on your own pull request",
        ));
    }
    if body.trim().is_empty()
        && (state == "CHANGES_REQUESTED" || (state == "COMMENTED" && b.comments.is_empty()))
    {
        return Err(unprocessable(
            "Review body is required for REQUEST_CHANGES and COMMENT events",
        ));
    }
    if b.comments
        .iter()
        .any(|c| c.path.is_empty() || c.body.trim().is_empty())
    {
        return Err(unprocessable("Review comments need a path and a body"));
    }
    let l = live(&repo, t, None, false).await?;
    let commit_id = b.commit_id.unwrap_or_else(|| l.head_sha.clone());
    let (review, comments, repo_now) = {
        let mut st = s.lock();
        let id = st.id();
        let ids: Vec<u64> = b.comments.iter().map(|_| st.id()).collect();
        let repo = st.repo(&o, &r)?;
        let at = now();
        let review = Review {
            id,
            number: n,
            user: login.clone(),
            body,
            state: state.to_owned(),
            commit_id: commit_id.clone(),
            submitted_at: (state != "PENDING").then_some(at),
        };
        repo.reviews.push(review.clone());
        let comments: Vec<ReviewComment> = b
            .comments
            .into_iter()
            .zip(ids)
            .map(|(c, cid)| ReviewComment {
                id: cid,
                number: n,
                review_id: id,
                user: login.clone(),
                body: c.body,
                path: c.path,
                line: c.line,
                side: c.side.unwrap_or_else(|| "RIGHT".to_owned()),
                commit_id: commit_id.clone(),
                in_reply_to: None,
                created_at: at,
                updated_at: at,
            })
            .collect();
        repo.review_comments.extend(comments.iter().cloned());
        if let Some(t) = repo.threads.get_mut(&n) {
            t.updated_at = at;
        }
        (review, comments, repo.clone())
    };
    let v = s.review_json(&repo_now, &review);
    if state != "PENDING" {
        let t = pull_thread(&repo_now, n)?;
        let pr = s.pr_json(&repo_now, t, &l);
        for c in &comments {
            s.emit(
                "pull_request_review_comment",
                "created",
                &repo_now,
                &login,
                json!({"comment": s.review_comment_json(&repo_now, c), "pull_request": pr}),
            );
        }
        s.emit(
            "pull_request_review",
            "submitted",
            &repo_now,
            &login,
            json!({"review": v, "pull_request": pr}),
        );
    }
    Ok(json(200, &v))
}

pub(crate) async fn list_reviews(
    State(s): State<Arc<Shared>>,
    Path((o, r, n)): Repo3,
    uri: Uri,
) -> Result<Response, Error> {
    let n = num(&n)?;
    let repo = s.repo(&o, &r)?;
    pull_thread(&repo, n)?;
    let reviews: Vec<&Review> = repo.reviews.iter().filter(|x| x.number == n).collect();
    let (page, link) = paginate(&s.base_url, &uri, reviews);
    let items: Vec<Value> = page.into_iter().map(|x| s.review_json(&repo, x)).collect();
    Ok(listed(&Value::Array(items), link))
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewReviewComment {
    body: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    line: Option<u64>,
    #[serde(default)]
    side: Option<String>,
    #[serde(default)]
    commit_id: Option<String>,
    #[serde(default)]
    in_reply_to: Option<u64>,
}

pub(crate) async fn create_review_comment(
    State(s): State<Arc<Shared>>,
    Extension(Login(login)): Extension<Login>,
    Path((o, r, n)): Repo3,
    Body(b): Body<NewReviewComment>,
) -> Result<Response, Error> {
    let n = num(&n)?;
    let repo = s.repo(&o, &r)?;
    let t = pull_thread(&repo, n)?;
    if b.body.trim().is_empty() {
        return Err(Error::validation(json!([
            {"resource": "PullRequestReviewComment", "field": "body", "code": "missing_field"}
        ])));
    }
    let parent = match b.in_reply_to {
        Some(id) => Some(
            repo.review_comments
                .iter()
                .find(|c| c.id == id && c.number == n)
                .cloned()
                .ok_or_else(Error::not_found)?,
        ),
        None => None,
    };
    let Some(path) = b.path.or_else(|| parent.as_ref().map(|p| p.path.clone())) else {
        return Err(Error::validation(json!([
            {"resource": "PullRequestReviewComment", "field": "path", "code": "missing_field"}
        ])));
    };
    let l = live(&repo, t, None, false).await?;
    let commit_id = b
        .commit_id
        .or_else(|| parent.as_ref().map(|p| p.commit_id.clone()))
        .unwrap_or_else(|| l.head_sha.clone());
    let (c, repo_now) = {
        let mut st = s.lock();
        let review_id = st.id();
        let id = st.id();
        let repo = st.repo(&o, &r)?;
        let at = now();
        // A lone line comment is a review of its own on GitHub (state COMMENTED).
        repo.reviews.push(Review {
            id: review_id,
            number: n,
            user: login.clone(),
            body: String::new(),
            state: "COMMENTED".to_owned(),
            commit_id: commit_id.clone(),
            submitted_at: Some(at),
        });
        let c = ReviewComment {
            id,
            number: n,
            review_id,
            user: login.clone(),
            body: b.body,
            path,
            line: b.line.or_else(|| parent.as_ref().and_then(|p| p.line)),
            side: b
                .side
                .or_else(|| parent.as_ref().map(|p| p.side.clone()))
                .unwrap_or_else(|| "RIGHT".to_owned()),
            commit_id,
            in_reply_to: parent.map(|p| p.id),
            created_at: at,
            updated_at: at,
        };
        repo.review_comments.push(c.clone());
        if let Some(t) = repo.threads.get_mut(&n) {
            t.updated_at = at;
        }
        (c, repo.clone())
    };
    let v = s.review_comment_json(&repo_now, &c);
    let t = pull_thread(&repo_now, n)?;
    s.emit(
        "pull_request_review_comment",
        "created",
        &repo_now,
        &login,
        json!({"comment": v, "pull_request": s.pr_json(&repo_now, t, &l)}),
    );
    Ok(json(201, &v))
}

pub(crate) async fn list_review_comments(
    State(s): State<Arc<Shared>>,
    Path((o, r, n)): Repo3,
    uri: Uri,
) -> Result<Response, Error> {
    let n = num(&n)?;
    let repo = s.repo(&o, &r)?;
    pull_thread(&repo, n)?;
    let comments: Vec<&ReviewComment> = repo
        .review_comments
        .iter()
        .filter(|c| c.number == n)
        .collect();
    let (page, link) = paginate(&s.base_url, &uri, comments);
    let items: Vec<Value> = page
        .into_iter()
        .map(|c| s.review_comment_json(&repo, c))
        .collect();
    Ok(listed(&Value::Array(items), link))
}

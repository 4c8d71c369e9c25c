//! Users, repositories, issues, issue comments and comment reactions.

use crate::Error;
use crate::http::{Body, Login, json, listed, num, paginate, query_get};
use crate::pulls;
use crate::state::{IssueComment, Reaction, Shared, Thread, now};
use axum::extract::{Extension, Path, State};
use axum::http::Uri;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

type Repo2 = Path<(String, String)>;
type Repo3 = Path<(String, String, String)>;

const REACTIONS: &[&str] = &[
    "+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes",
];

/// A label given by name or as `{"name": …}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum LabelIn {
    Name(String),
    Object { name: String },
}

impl LabelIn {
    fn into_name(self) -> String {
        match self {
            Self::Name(n) | Self::Object { name: n } => n,
        }
    }
}

pub(crate) async fn get_user(
    State(s): State<Arc<Shared>>,
    Extension(Login(login)): Extension<Login>,
) -> Response {
    json(200, &s.user(&login))
}

pub(crate) async fn get_repo(
    State(s): State<Arc<Shared>>,
    Path((o, r)): Repo2,
) -> Result<Response, Error> {
    let repo = s.repo(&o, &r)?;
    Ok(json(200, &s.repo_json(&repo)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewIssue {
    title: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    labels: Vec<LabelIn>,
}

pub(crate) async fn create_issue(
    State(s): State<Arc<Shared>>,
    Extension(Login(login)): Extension<Login>,
    Path((o, r)): Repo2,
    Body(b): Body<NewIssue>,
) -> Result<Response, Error> {
    if b.title.trim().is_empty() {
        return Err(Error::validation(json!([
            {"resource": "Issue", "code": "missing_field", "field": "title"}
        ])));
    }
    let mut st = s.lock();
    let id = st.id();
    let repo = st.repo(&o, &r)?;
    let number = repo.take_number();
    let t = now();
    let thread = Thread {
        id,
        number,
        title: b.title,
        body: b.body,
        user: login,
        labels: b.labels.into_iter().map(LabelIn::into_name).collect(),
        open: true,
        state_reason: None,
        created_at: t,
        updated_at: t,
        closed_at: None,
        pr: None,
    };
    let v = s.issue_json(repo, &thread);
    repo.threads.insert(number, thread);
    Ok(json(201, &v))
}

fn state_filter(uri: &Uri) -> Result<(bool, bool), Error> {
    match query_get(uri, "state").as_deref() {
        None | Some("open") => Ok((true, false)),
        Some("closed") => Ok((false, true)),
        Some("all") => Ok((true, true)),
        Some(_) => Err(Error::validation(json!([
            {"resource": "Issue", "code": "invalid", "field": "state"}
        ]))),
    }
}

pub(crate) async fn list_issues(
    State(s): State<Arc<Shared>>,
    Path((o, r)): Repo2,
    uri: Uri,
) -> Result<Response, Error> {
    let (open, closed) = state_filter(&uri)?;
    let repo = s.repo(&o, &r)?;
    let threads: Vec<&Thread> = repo
        .threads
        .values()
        .rev()
        .filter(|t| if t.open { open } else { closed })
        .collect();
    let (page, link) = paginate(&s.base_url, &uri, threads);
    let items: Vec<Value> = page.into_iter().map(|t| s.issue_json(&repo, t)).collect();
    Ok(listed(&Value::Array(items), link))
}

pub(crate) async fn get_issue(
    State(s): State<Arc<Shared>>,
    Path((o, r, n)): Repo3,
) -> Result<Response, Error> {
    let n = num(&n)?;
    let repo = s.repo(&o, &r)?;
    let t = repo.threads.get(&n).ok_or_else(Error::not_found)?;
    Ok(json(200, &s.issue_json(&repo, t)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct IssuePatch {
    title: Option<String>,
    body: Option<String>,
    state: Option<String>,
    state_reason: Option<String>,
    labels: Option<Vec<LabelIn>>,
}

pub(crate) async fn update_issue(
    State(s): State<Arc<Shared>>,
    Extension(Login(login)): Extension<Login>,
    Path((o, r, n)): Repo3,
    Body(b): Body<IssuePatch>,
) -> Result<Response, Error> {
    let n = num(&n)?;
    let (v, pr_event) = {
        let mut st = s.lock();
        let repo = st.repo(&o, &r)?;
        let t = repo.threads.get_mut(&n).ok_or_else(Error::not_found)?;
        let was_open = t.open;
        apply_patch(t, b)?;
        let pr_event = match (t.pr.is_some(), was_open, t.open) {
            (true, true, false) => Some("closed"),
            (true, false, true) => Some("reopened"),
            _ => None,
        };
        let t = t.clone();
        (s.issue_json(repo, &t), pr_event)
    };
    if let Some(action) = pr_event {
        pulls::emit_pull(&s, &o, &r, n, action, &login).await;
    }
    Ok(json(200, &v))
}

fn apply_patch(t: &mut Thread, b: IssuePatch) -> Result<(), Error> {
    if let Some(title) = b.title {
        t.title = title;
    }
    if let Some(body) = b.body {
        t.body = Some(body);
    }
    if let Some(labels) = b.labels {
        t.labels = labels.into_iter().map(LabelIn::into_name).collect();
    }
    if let Some(reason) = &b.state_reason
        && !["completed", "not_planned", "reopened"].contains(&reason.as_str())
    {
        return Err(Error::validation(json!([
            {"resource": "Issue", "code": "invalid", "field": "state_reason"}
        ])));
    }
    match b.state.as_deref() {
        None => {}
        Some("closed") => {
            if t.open {
                t.open = false;
                t.closed_at = Some(now());
            }
            t.state_reason = Some(b.state_reason.unwrap_or_else(|| "completed".to_owned()));
        }
        Some("open") if !t.open => {
            if t.pr.as_ref().is_some_and(|p| p.merged_at.is_some()) {
                return Err(Error::validation(json!([{
                    "resource": "PullRequest", "code": "custom", "field": "state",
                    "message": "state cannot be changed. The pull request has been merged."
                }])));
            }
            t.open = true;
            t.closed_at = None;
            t.state_reason = Some("reopened".to_owned());
        }
        Some("open") => {}
        Some(_) => {
            return Err(Error::validation(json!([
                {"resource": "Issue", "code": "invalid", "field": "state"}
            ])));
        }
    }
    t.updated_at = now();
    Ok(())
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewComment {
    body: String,
}

pub(crate) async fn create_comment(
    State(s): State<Arc<Shared>>,
    Extension(Login(login)): Extension<Login>,
    Path((o, r, n)): Repo3,
    Body(b): Body<NewComment>,
) -> Result<Response, Error> {
    let n = num(&n)?;
    if b.body.trim().is_empty() {
        return Err(Error::validation(json!([
            {"resource": "IssueComment", "code": "missing_field", "field": "body"}
        ])));
    }
    let (v, repo, thread) = {
        let mut st = s.lock();
        let id = st.id();
        let repo = st.repo(&o, &r)?;
        let t = now();
        let thread = repo.threads.get_mut(&n).ok_or_else(Error::not_found)?;
        thread.updated_at = t;
        let c = IssueComment {
            id,
            number: n,
            body: b.body,
            user: login.clone(),
            created_at: t,
            updated_at: t,
        };
        repo.comments.push(c.clone());
        let thread = repo.threads.get(&n).cloned();
        (s.comment_json(repo, &c), repo.clone(), thread)
    };
    if let Some(thread) = thread {
        s.emit(
            "issue_comment",
            "created",
            &repo,
            &login,
            json!({"issue": s.issue_json(&repo, &thread), "comment": v}),
        );
    }
    Ok(json(201, &v))
}

fn parse_since(uri: &Uri) -> Result<Option<OffsetDateTime>, Error> {
    query_get(uri, "since")
        .map(|v| {
            OffsetDateTime::parse(&v, &Rfc3339).map_err(|_| {
                Error::api(422, format!("Invalid request.\n\n{v} is not a timestamp."))
            })
        })
        .transpose()
}

pub(crate) async fn list_comments(
    State(s): State<Arc<Shared>>,
    Path((o, r, n)): Repo3,
    uri: Uri,
) -> Result<Response, Error> {
    let n = num(&n)?;
    let since = parse_since(&uri)?;
    let repo = s.repo(&o, &r)?;
    if !repo.threads.contains_key(&n) {
        return Err(Error::not_found());
    }
    let comments: Vec<&IssueComment> = repo
        .comments
        .iter()
        .filter(|c| c.number == n && since.is_none_or(|t| c.updated_at >= t))
        .collect();
    let (page, link) = paginate(&s.base_url, &uri, comments);
    let items: Vec<Value> = page.into_iter().map(|c| s.comment_json(&repo, c)).collect();
    Ok(listed(&Value::Array(items), link))
}

pub(crate) async fn get_comment(
    State(s): State<Arc<Shared>>,
    Path((o, r, id)): Repo3,
) -> Result<Response, Error> {
    let id = num(&id)?;
    let repo = s.repo(&o, &r)?;
    let c = repo
        .comments
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(Error::not_found)?;
    Ok(json(200, &s.comment_json(&repo, c)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewReaction {
    content: String,
}

pub(crate) async fn create_reaction(
    State(s): State<Arc<Shared>>,
    Extension(Login(login)): Extension<Login>,
    Path((o, r, id)): Repo3,
    Body(b): Body<NewReaction>,
) -> Result<Response, Error> {
    let id = num(&id)?;
    if !REACTIONS.contains(&b.content.as_str()) {
        return Err(Error::validation(json!([
            {"resource": "Reaction", "code": "invalid", "field": "content"}
        ])));
    }
    let mut st = s.lock();
    let rid = st.id();
    let repo = st.repo(&o, &r)?;
    if !repo.comments.iter().any(|c| c.id == id) {
        return Err(Error::not_found());
    }
    // Reacting twice with the same content answers the existing reaction with 200.
    if let Some(x) = repo
        .reactions
        .iter()
        .find(|x| x.comment_id == id && x.user == login && x.content == b.content)
    {
        return Ok(json(200, &s.reaction_json(x)));
    }
    let x = Reaction {
        id: rid,
        comment_id: id,
        content: b.content,
        user: login,
        created_at: now(),
    };
    let v = s.reaction_json(&x);
    repo.reactions.push(x);
    Ok(json(201, &v))
}

pub(crate) async fn list_reactions(
    State(s): State<Arc<Shared>>,
    Path((o, r, id)): Repo3,
    uri: Uri,
) -> Result<Response, Error> {
    let id = num(&id)?;
    let content = query_get(&uri, "content");
    let repo = s.repo(&o, &r)?;
    if !repo.comments.iter().any(|c| c.id == id) {
        return Err(Error::not_found());
    }
    let xs: Vec<&Reaction> = repo
        .reactions
        .iter()
        .filter(|x| x.comment_id == id && content.as_ref().is_none_or(|c| *c == x.content))
        .collect();
    let (page, link) = paginate(&s.base_url, &uri, xs);
    let items: Vec<Value> = page.into_iter().map(|x| s.reaction_json(x)).collect();
    Ok(listed(&Value::Array(items), link))
}

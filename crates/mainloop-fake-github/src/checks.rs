//! Check runs, the Actions job logs behind them (a 302 to fake blob storage, as GitHub
//! redirects to its own), and the commit list read from `git log`.

use crate::Error;
use crate::git;
use crate::http::{Body, json, listed, num, paginate, query_get};
use crate::state::{CheckRun, Repo, Shared, node_id, now};
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

type Repo2 = Path<(String, String)>;
type Repo3 = Path<(String, String, String)>;

const STATUSES: &[&str] = &[
    "queued",
    "in_progress",
    "completed",
    "waiting",
    "requested",
    "pending",
];
const CONCLUSIONS: &[&str] = &[
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
];

fn invalid(field: &str) -> Error {
    Error::validation(json!([{"resource": "CheckRun", "field": field, "code": "invalid"}]))
}

fn parse_ts(v: Option<&str>, field: &str) -> Result<Option<OffsetDateTime>, Error> {
    v.map(|s| OffsetDateTime::parse(s, &Rfc3339).map_err(|_| invalid(field)))
        .transpose()
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewCheckRun {
    name: String,
    head_sha: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    details_url: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    completed_at: Option<String>,
    #[serde(default)]
    output: Option<Value>,
}

/// Applies status/conclusion the way GitHub does: a conclusion implies `completed`,
/// `completed` needs a conclusion.
fn settle(
    run: &mut CheckRun,
    status: Option<String>,
    conclusion: Option<String>,
    completed_at: Option<OffsetDateTime>,
) -> Result<(), Error> {
    if let Some(c) = &conclusion
        && !CONCLUSIONS.contains(&c.as_str())
    {
        return Err(invalid("conclusion"));
    }
    if let Some(st) = &status
        && !STATUSES.contains(&st.as_str())
    {
        return Err(invalid("status"));
    }
    let status = match (status, &conclusion) {
        (Some(s), Some(_)) if s != "completed" => return Err(invalid("status")),
        (_, Some(_)) => "completed".to_owned(),
        (Some(s), None) => s,
        (None, None) => run.status.clone(),
    };
    if status == "completed" && conclusion.is_none() && run.conclusion.is_none() {
        return Err(Error::validation(json!([{
            "resource": "CheckRun", "field": "conclusion", "code": "missing_field"
        }])));
    }
    if status != "queued" && run.started_at.is_none() {
        run.started_at = Some(now());
    }
    if status == "completed" {
        if conclusion.is_some() {
            run.conclusion = conclusion;
        }
        if run.completed_at.is_none() || completed_at.is_some() {
            run.completed_at = Some(completed_at.unwrap_or_else(now));
        }
    } else {
        run.conclusion = None;
        run.completed_at = None;
    }
    run.status = status;
    Ok(())
}

pub(crate) async fn create_check_run(
    State(s): State<Arc<Shared>>,
    axum::extract::Extension(crate::http::Login(login)): axum::extract::Extension<
        crate::http::Login,
    >,
    Path((o, r)): Repo2,
    Body(b): Body<NewCheckRun>,
) -> Result<Response, Error> {
    let repo = s.repo(&o, &r)?;
    if b.name.trim().is_empty() {
        return Err(invalid("name"));
    }
    let Some(head_sha) = git::resolve(&repo.path, &b.head_sha)
        .await?
        .filter(|sha| sha.starts_with(&b.head_sha.to_lowercase()))
    else {
        return Err(Error::api(
            422,
            format!("No commit found for SHA: {}", b.head_sha),
        ));
    };
    let started = parse_ts(b.started_at.as_deref(), "started_at")?;
    let completed = parse_ts(b.completed_at.as_deref(), "completed_at")?;
    let mut run = CheckRun {
        id: 0,
        name: b.name,
        head_sha,
        status: "queued".to_owned(),
        conclusion: None,
        details_url: b.details_url,
        external_id: b.external_id,
        output: b.output.unwrap_or_else(
            || json!({"title": null, "summary": null, "text": null, "annotations_count": 0}),
        ),
        started_at: started,
        completed_at: None,
        log: None,
    };
    settle(&mut run, b.status, b.conclusion, completed)?;
    if run.started_at.is_none() {
        run.started_at = Some(now());
    }
    let repo_now = {
        let mut st = s.lock();
        run.id = st.id();
        let repo = st.repo(&o, &r)?;
        repo.check_runs.push(run.clone());
        repo.clone()
    };
    let v = s.check_run_json(&repo_now, &run);
    s.emit(
        "check_run",
        "created",
        &repo_now,
        &login,
        json!({"check_run": v}),
    );
    if run.status == "completed" {
        s.emit(
            "check_run",
            "completed",
            &repo_now,
            &login,
            json!({"check_run": v}),
        );
    }
    Ok(json(201, &v))
}

fn find_run(repo: &Repo, id: u64) -> Result<&CheckRun, Error> {
    repo.check_runs
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(Error::not_found)
}

pub(crate) async fn get_check_run(
    State(s): State<Arc<Shared>>,
    Path((o, r, id)): Repo3,
) -> Result<Response, Error> {
    let id = num(&id)?;
    let repo = s.repo(&o, &r)?;
    Ok(json(200, &s.check_run_json(&repo, find_run(&repo, id)?)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CheckRunPatch {
    name: Option<String>,
    status: Option<String>,
    conclusion: Option<String>,
    details_url: Option<String>,
    external_id: Option<String>,
    completed_at: Option<String>,
    output: Option<Value>,
}

pub(crate) async fn update_check_run(
    State(s): State<Arc<Shared>>,
    axum::extract::Extension(crate::http::Login(login)): axum::extract::Extension<
        crate::http::Login,
    >,
    Path((o, r, id)): Repo3,
    Body(b): Body<CheckRunPatch>,
) -> Result<Response, Error> {
    let id = num(&id)?;
    let completed = parse_ts(b.completed_at.as_deref(), "completed_at")?;
    let (run, was_completed, repo_now) = {
        let mut st = s.lock();
        let repo = st.repo(&o, &r)?;
        let run = repo
            .check_runs
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(Error::not_found)?;
        let mut next = run.clone();
        let was_completed = next.status == "completed";
        settle(&mut next, b.status, b.conclusion, completed)?;
        if let Some(name) = b.name {
            next.name = name;
        }
        if b.details_url.is_some() {
            next.details_url = b.details_url;
        }
        if b.external_id.is_some() {
            next.external_id = b.external_id;
        }
        if let Some(output) = b.output {
            next.output = output;
        }
        *run = next.clone();
        (next, was_completed, repo.clone())
    };
    let v = s.check_run_json(&repo_now, &run);
    if run.status == "completed" && !was_completed {
        s.emit(
            "check_run",
            "completed",
            &repo_now,
            &login,
            json!({"check_run": v}),
        );
    }
    Ok(json(200, &v))
}

pub(crate) async fn list_check_runs(
    State(s): State<Arc<Shared>>,
    Path((o, r, rev)): Repo3,
    uri: Uri,
) -> Result<Response, Error> {
    let repo = s.repo(&o, &r)?;
    let Some(sha) = git::resolve(&repo.path, &rev).await? else {
        return Err(Error::api(422, format!("No commit found for SHA: {rev}")));
    };
    let name = query_get(&uri, "check_name");
    let status = query_get(&uri, "status");
    let all = match query_get(&uri, "filter").as_deref() {
        None | Some("latest") => false,
        Some("all") => true,
        Some(_) => return Err(invalid("filter")),
    };
    let mut runs: Vec<&CheckRun> = repo
        .check_runs
        .iter()
        .rev()
        .filter(|c| {
            c.head_sha == sha
                && name.as_ref().is_none_or(|n| *n == c.name)
                && status.as_ref().is_none_or(|st| *st == c.status)
        })
        .collect();
    if !all {
        // `filter=latest` (the default): only the newest run of each name.
        let mut seen = std::collections::HashSet::new();
        runs.retain(|c| seen.insert(c.name.clone()));
    }
    let total = runs.len();
    let (page, link) = paginate(&s.base_url, &uri, runs);
    let items: Vec<Value> = page
        .into_iter()
        .map(|c| s.check_run_json(&repo, c))
        .collect();
    Ok(listed(
        &json!({"total_count": total, "check_runs": items}),
        link,
    ))
}

pub(crate) async fn job_logs(
    State(s): State<Arc<Shared>>,
    Path((o, r, id)): Repo3,
) -> Result<Response, Error> {
    let id = num(&id)?;
    let repo = s.repo(&o, &r)?;
    let run = find_run(&repo, id)?;
    if run.log.is_none() {
        return Err(Error::not_found());
    }
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    let location = format!("{}/_fake/blob/logs/{id}", s.base_url);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

/// Which configured user a commit's author is, by name or noreply address.
fn author_login(s: &Shared, name: &str, email: &str) -> Option<String> {
    if s.is_user(name) {
        return Some(name.to_owned());
    }
    let local = email.strip_suffix("@users.noreply.github.com")?;
    let login = local.split_once('+').map_or(local, |(_, l)| l);
    s.is_user(login).then(|| login.to_owned())
}

pub(crate) async fn list_commits(
    State(s): State<Arc<Shared>>,
    Path((o, r)): Repo2,
    uri: Uri,
) -> Result<Response, Error> {
    let repo = s.repo(&o, &r)?;
    let rev = query_get(&uri, "sha").unwrap_or_else(|| repo.default_branch.clone());
    let Some(sha) = git::resolve(&repo.path, &rev).await? else {
        return Err(Error::not_found());
    };
    let log = git::log(&repo.path, &sha).await?;
    let (page, link) = paginate(&s.base_url, &uri, log);
    let full = repo.full_name();
    let items: Vec<Value> = page
        .into_iter()
        .map(|c| {
            let author = author_login(&s, &c.author_name, &c.author_email).map(|l| s.user(&l));
            let committer =
                author_login(&s, &c.committer_name, &c.committer_email).map(|l| s.user(&l));
            json!({
                "sha": c.sha,
                "node_id": node_id("C", u64::from_str_radix(&c.sha[..12.min(c.sha.len())], 16).unwrap_or(0)),
                "url": format!("{}/repos/{full}/commits/{}", s.base_url, c.sha),
                "html_url": format!("{}/{full}/commit/{}", s.base_url, c.sha),
                "commit": {
                    "message": c.message,
                    "author": {"name": c.author_name, "email": c.author_email, "date": utc(&c.author_date)},
                    "committer": {"name": c.committer_name, "email": c.committer_email, "date": utc(&c.committer_date)},
                },
                "author": author,
                "committer": committer,
            })
        })
        .collect();
    Ok(listed(&Value::Array(items), link))
}

/// Git's ISO dates carry the author's offset; GitHub shows UTC with a `Z`.
fn utc(date: &str) -> String {
    OffsetDateTime::parse(date, &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).ok())
        .unwrap_or_else(|| date.to_owned())
}

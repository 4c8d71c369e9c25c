//! Pull requests over the bare repositories: creation checked against the real branches,
//! heads that follow pushes, real merges (merge commit or squash) moved onto the base
//! branch by compare-and-swap, and marking a draft ready.

use crate::Error;
use crate::git::{self, Identity, MergeProbe};
use crate::http::{Body, Login, json, listed, num, paginate, query_get};
use crate::state::{Live, Pr, Repo, Shared, Thread, now};
use axum::extract::{Extension, Path, State};
use axum::http::Uri;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

type Repo2 = Path<(String, String)>;
type Repo3 = Path<(String, String, String)>;

/// Reads a pull request's tips (and, when asked, mergeability) from git. A closed pull
/// request keeps the tips it had when it closed.
pub(crate) async fn live(
    repo: &Repo,
    t: &Thread,
    tips: Option<&HashMap<String, String>>,
    with_mergeable: bool,
) -> Result<Live, Error> {
    let Some(pr) = &t.pr else {
        return Err(Error::not_found());
    };
    if !t.open {
        return Ok(Live {
            head_sha: pr.head_sha.clone(),
            base_sha: pr.base_sha.clone(),
            mergeable: with_mergeable.then_some(None),
        });
    }
    let owned;
    let tips = if let Some(t) = tips {
        t
    } else {
        owned = git::branches(&repo.path).await?;
        &owned
    };
    let head_sha = tips
        .get(&pr.head_ref)
        .cloned()
        .unwrap_or_else(|| pr.head_sha.clone());
    let base_sha = tips
        .get(&pr.base_ref)
        .cloned()
        .unwrap_or_else(|| pr.base_sha.clone());
    let mergeable = if with_mergeable {
        Some(Some(matches!(
            git::probe_merge(&repo.path, &base_sha, &head_sha).await?,
            MergeProbe::Clean { .. }
        )))
    } else {
        None
    };
    Ok(Live {
        head_sha,
        base_sha,
        mergeable,
    })
}

/// Remembers the tips last seen, so a closed pull request (or a deleted branch) still
/// shows where it was.
fn remember(s: &Shared, o: &str, r: &str, n: u64, l: &Live) {
    let mut st = s.lock();
    if let Ok(repo) = st.repo(o, r)
        && let Some(pr) = repo.threads.get_mut(&n).and_then(|t| t.pr.as_mut())
    {
        pr.head_sha.clone_from(&l.head_sha);
        pr.base_sha.clone_from(&l.base_sha);
    }
}

pub(crate) fn pull_thread(repo: &Repo, n: u64) -> Result<&Thread, Error> {
    repo.threads
        .get(&n)
        .filter(|t| t.pr.is_some())
        .ok_or_else(Error::not_found)
}

/// Sends a `pull_request` webhook with the pull request as it is now.
pub(crate) async fn emit_pull(s: &Shared, o: &str, r: &str, n: u64, action: &str, sender: &str) {
    let Ok(repo) = s.repo(o, r) else { return };
    let Ok(t) = pull_thread(&repo, n) else { return };
    match live(&repo, t, None, false).await {
        Ok(l) => {
            let pr = s.pr_json(&repo, t, &l);
            s.emit(
                "pull_request",
                action,
                &repo,
                sender,
                json!({"number": n, "pull_request": pr}),
            );
        }
        Err(e) => tracing::warn!(error = %e, "cannot read a pull request for its webhook"),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewPull {
    title: String,
    head: String,
    base: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    draft: bool,
}

fn invalid(field: &str) -> Error {
    Error::validation(json!([{"resource": "PullRequest", "field": field, "code": "invalid"}]))
}

fn custom(message: &str) -> Error {
    Error::validation(json!([{"resource": "PullRequest", "code": "custom", "message": message}]))
}

pub(crate) async fn create_pull(
    State(s): State<Arc<Shared>>,
    Extension(Login(login)): Extension<Login>,
    Path((o, r)): Repo2,
    Body(b): Body<NewPull>,
) -> Result<Response, Error> {
    let repo = s.repo(&o, &r)?;
    let head_ref = match b.head.split_once(':') {
        Some((owner, branch)) if owner.eq_ignore_ascii_case(&repo.owner) => branch.to_owned(),
        Some(_) => return Err(invalid("head")),
        None => b.head.clone(),
    };
    if b.title.trim().is_empty() {
        return Err(Error::validation(json!([
            {"resource": "PullRequest", "field": "title", "code": "missing_field"}
        ])));
    }
    let tips = git::branches(&repo.path).await?;
    let base_sha = tips.get(&b.base).cloned().ok_or_else(|| invalid("base"))?;
    let head_sha = tips
        .get(&head_ref)
        .cloned()
        .ok_or_else(|| invalid("head"))?;
    if git::ahead(&repo.path, &base_sha, &head_sha).await? == 0 {
        return Err(custom(&format!(
            "No commits between {} and {head_ref}",
            b.base
        )));
    }
    let (v, repo_now, n) = {
        let mut st = s.lock();
        let issue_id = st.id();
        let pr_id = st.id();
        let repo = st.repo(&o, &r)?;
        let exists = repo.threads.values().any(|t| {
            t.open
                && t.pr
                    .as_ref()
                    .is_some_and(|p| p.head_ref == head_ref && p.base_ref == b.base)
        });
        if exists {
            return Err(custom(&format!(
                "A pull request already exists for {}:{head_ref}.",
                repo.owner
            )));
        }
        let number = repo.take_number();
        let t = now();
        let thread = Thread {
            id: issue_id,
            number,
            title: b.title,
            body: b.body,
            user: login.clone(),
            labels: Vec::new(),
            open: true,
            state_reason: None,
            created_at: t,
            updated_at: t,
            closed_at: None,
            pr: Some(Pr {
                id: pr_id,
                head_ref,
                base_ref: b.base,
                head_sha: head_sha.clone(),
                base_sha: base_sha.clone(),
                draft: b.draft,
                merged_at: None,
                merged_by: None,
                merge_commit_sha: None,
            }),
        };
        let l = Live {
            head_sha,
            base_sha,
            mergeable: None,
        };
        let v = s.pr_json(repo, &thread, &l);
        repo.threads.insert(number, thread);
        (v, repo.clone(), number)
    };
    s.emit(
        "pull_request",
        "opened",
        &repo_now,
        &login,
        json!({"number": n, "pull_request": v}),
    );
    Ok(json(201, &v))
}

pub(crate) async fn list_pulls(
    State(s): State<Arc<Shared>>,
    Path((o, r)): Repo2,
    uri: Uri,
) -> Result<Response, Error> {
    let (open, closed) = match query_get(&uri, "state").as_deref() {
        None | Some("open") => (true, false),
        Some("closed") => (false, true),
        Some("all") => (true, true),
        Some(_) => return Err(invalid("state")),
    };
    let head = query_get(&uri, "head");
    let base = query_get(&uri, "base");
    let repo = s.repo(&o, &r)?;
    let threads: Vec<&Thread> = repo
        .threads
        .values()
        .rev()
        .filter(|t| {
            let Some(pr) = &t.pr else { return false };
            (if t.open { open } else { closed })
                && head.as_ref().is_none_or(|h| {
                    *h == format!("{}:{}", repo.owner, pr.head_ref) || *h == pr.head_ref
                })
                && base.as_ref().is_none_or(|b| *b == pr.base_ref)
        })
        .collect();
    let (page, link) = paginate(&s.base_url, &uri, threads);
    let tips = git::branches(&repo.path).await?;
    let mut items = Vec::with_capacity(page.len());
    for t in page {
        let l = live(&repo, t, Some(&tips), false).await?;
        items.push(s.pr_json(&repo, t, &l));
    }
    Ok(listed(&Value::Array(items), link))
}

pub(crate) async fn get_pull(
    State(s): State<Arc<Shared>>,
    Path((o, r, n)): Repo3,
) -> Result<Response, Error> {
    let n = num(&n)?;
    let repo = s.repo(&o, &r)?;
    let t = pull_thread(&repo, n)?;
    let l = live(&repo, t, None, true).await?;
    if t.open {
        remember(&s, &o, &r, n, &l);
    }
    Ok(json(200, &s.pr_json(&repo, t, &l)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PullPatch {
    title: Option<String>,
    body: Option<String>,
    state: Option<String>,
    base: Option<String>,
}

pub(crate) async fn update_pull(
    State(s): State<Arc<Shared>>,
    Extension(Login(login)): Extension<Login>,
    Path((o, r, n)): Repo3,
    Body(b): Body<PullPatch>,
) -> Result<Response, Error> {
    let n = num(&n)?;
    let repo = s.repo(&o, &r)?;
    let t = pull_thread(&repo, n)?;
    // Tips are taken before a close so the closed pull request keeps them.
    let l = live(&repo, t, None, false).await?;
    if let Some(base) = &b.base
        && git::branch_sha(&repo.path, base).await?.is_none()
    {
        return Err(invalid("base"));
    }
    let action = {
        let mut st = s.lock();
        let repo = st.repo(&o, &r)?;
        let t = repo.threads.get_mut(&n).ok_or_else(Error::not_found)?;
        let Some(pr) = t.pr.as_mut() else {
            return Err(Error::not_found());
        };
        if t.open {
            pr.head_sha.clone_from(&l.head_sha);
            pr.base_sha.clone_from(&l.base_sha);
        }
        if let Some(base) = b.base {
            pr.base_ref = base;
        }
        let merged = pr.merged_at.is_some();
        if let Some(title) = b.title {
            t.title = title;
        }
        if let Some(body) = b.body {
            t.body = Some(body);
        }
        let action = match (b.state.as_deref(), t.open) {
            (None, _) | (Some("closed"), false) | (Some("open"), true) => None,
            (Some("closed"), true) => {
                t.open = false;
                t.closed_at = Some(now());
                Some("closed")
            }
            (Some("open"), false) if merged => {
                return Err(custom(
                    "state cannot be changed. The pull request has been merged.",
                ));
            }
            (Some("open"), false) => {
                t.open = true;
                t.closed_at = None;
                Some("reopened")
            }
            (Some(_), _) => return Err(invalid("state")),
        };
        t.updated_at = now();
        action
    };
    let repo = s.repo(&o, &r)?;
    let t = pull_thread(&repo, n)?;
    let l = live(&repo, t, None, false).await?;
    let v = s.pr_json(&repo, t, &l);
    if let Some(action) = action {
        s.emit(
            "pull_request",
            action,
            &repo,
            &login,
            json!({"number": n, "pull_request": v}),
        );
    }
    Ok(json(200, &v))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct MergeIn {
    commit_title: Option<String>,
    commit_message: Option<String>,
    sha: Option<String>,
    merge_method: Option<String>,
}

pub(crate) async fn merge_pull(
    State(s): State<Arc<Shared>>,
    Extension(Login(login)): Extension<Login>,
    Path((o, r, n)): Repo3,
    Body(b): Body<MergeIn>,
) -> Result<Response, Error> {
    let n = num(&n)?;
    let method = b.merge_method.as_deref().unwrap_or("merge");
    if !["merge", "squash", "rebase"].contains(&method) {
        return Err(Error::validation(json!([
            {"resource": "PullRequest", "field": "merge_method", "code": "invalid"}
        ])));
    }
    let _guard = s.git_lock.lock().await;
    let repo = s.repo(&o, &r)?;
    let t = pull_thread(&repo, n)?;
    let Some(pr) = &t.pr else {
        return Err(Error::not_found());
    };
    if !t.open || pr.merged_at.is_some() {
        return Err(Error::api(405, "Pull Request is not mergeable"));
    }
    if pr.draft {
        return Err(Error::api(405, "Pull Request is still a draft"));
    }
    let l = live(&repo, t, None, false).await?;
    if b.sha.as_ref().is_some_and(|sha| *sha != l.head_sha) {
        return Err(Error::api(
            409,
            "Head branch was modified. Review and try the merge again.",
        ));
    }
    let MergeProbe::Clean { tree } = git::probe_merge(&repo.path, &l.base_sha, &l.head_sha).await?
    else {
        return Err(Error::api(405, "Pull Request is not mergeable"));
    };
    let email = format!("{}+{login}@users.noreply.github.com", s.user_id(&login));
    let who = Identity {
        name: &login,
        email: &email,
    };
    let title = b.commit_title.unwrap_or_else(|| match method {
        "merge" => format!(
            "Merge pull request #{n} from {}/{}",
            repo.owner, pr.head_ref
        ),
        _ => format!("{} (#{n})", t.title),
    });
    let message = b.commit_message.unwrap_or_else(|| match method {
        "merge" => t.title.clone(),
        _ => String::new(),
    });
    let full = if message.is_empty() {
        format!("{title}\n")
    } else {
        format!("{title}\n\n{message}\n")
    };
    let new = match method {
        "merge" => {
            git::commit_tree(&repo.path, &tree, &[&l.base_sha, &l.head_sha], &full, who).await?
        }
        // Rebase is approximated: a fast-forward when possible, else one new commit.
        "rebase" if git::ahead(&repo.path, &l.head_sha, &l.base_sha).await? == 0 => {
            l.head_sha.clone()
        }
        _ => git::commit_tree(&repo.path, &tree, &[&l.base_sha], &full, who).await?,
    };
    if s.merge_race_hit() {
        // Another pull request's merge lands first: the base moves under this one.
        let tree = git::tree_of(&repo.path, &l.base_sha).await?;
        let other = git::commit_tree(
            &repo.path,
            &tree,
            &[&l.base_sha],
            &format!("{}\n", crate::RACE_COMMIT_SUBJECT),
            who,
        )
        .await?;
        git::move_branch(&repo.path, &pr.base_ref, &other, &l.base_sha).await?;
    }
    if !git::move_branch(&repo.path, &pr.base_ref, &new, &l.base_sha).await? {
        return Err(Error::api(
            409,
            "Base branch was modified. Review and try the merge again.",
        ));
    }
    {
        let mut st = s.lock();
        let repo = st.repo(&o, &r)?;
        if let Some(t) = repo.threads.get_mut(&n)
            && let Some(pr) = t.pr.as_mut()
        {
            let at = now();
            t.open = false;
            t.closed_at = Some(at);
            t.updated_at = at;
            pr.merged_at = Some(at);
            pr.merged_by = Some(login.clone());
            pr.merge_commit_sha = Some(new.clone());
            pr.head_sha.clone_from(&l.head_sha);
            pr.base_sha.clone_from(&l.base_sha);
        }
    }
    emit_pull(&s, &o, &r, n, "closed", &login).await;
    Ok(json(
        200,
        &json!({"sha": new, "merged": true, "message": "Pull Request successfully merged"}),
    ))
}

pub(crate) async fn is_merged(
    State(s): State<Arc<Shared>>,
    Path((o, r, n)): Repo3,
) -> Result<Response, Error> {
    let n = num(&n)?;
    let repo = s.repo(&o, &r)?;
    let t = pull_thread(&repo, n)?;
    if t.pr.as_ref().is_some_and(|p| p.merged_at.is_some()) {
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.status_mut() = axum::http::StatusCode::NO_CONTENT;
        Ok(resp)
    } else {
        Err(Error::not_found())
    }
}

/// Sets `draft = false` on the pull request with this node id (the GraphQL mutation);
/// returns its number, or `None` when no pull request has that id.
pub(crate) async fn mark_ready(s: &Shared, node_id: &str, sender: &str) -> Option<(u64, String)> {
    let found = {
        let mut st = s.lock();
        st.repos.values_mut().find_map(|repo| {
            repo.threads.values_mut().find_map(|t| {
                let pr = t.pr.as_mut()?;
                if crate::state::node_id("PR", pr.id) != node_id {
                    return None;
                }
                let was_draft = pr.draft;
                pr.draft = false;
                Some((repo.owner.clone(), repo.name.clone(), t.number, was_draft))
            })
        })
    };
    let (o, r, n, was_draft) = found?;
    if was_draft {
        emit_pull(s, &o, &r, n, "ready_for_review", sender).await;
    }
    Some((n, node_id.to_owned()))
}

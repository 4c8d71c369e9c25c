//! End-to-end tests of the fake GitHub through a real HTTP client and real `git`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hmac::{Hmac, Mac};
use mainloop_fake_github::{Config, FakeGithub};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

const BOT: &str = "bot-token";
const ALICE: &str = "alice-token";

struct Env {
    fake: FakeGithub,
    http: reqwest::Client,
    dir: TempDir,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn remaining(&self) -> u64 {
        self.header("x-ratelimit-remaining")
            .unwrap()
            .parse()
            .unwrap()
    }
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeGithub::start(Config::new(
        dir.path().join("root"),
        &[(BOT, "mainloop-bot"), (ALICE, "alice")],
    ))
    .await
    .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Env { fake, http, dir }
}

impl Env {
    async fn call_with(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.fake.base_url())
        };
        let mut req = self
            .http
            .request(method, url)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    async fn get(&self, url: &str, token: &str) -> Reply {
        self.call_with(Method::GET, url, Some(token), None, &[])
            .await
    }

    async fn send(&self, method: Method, url: &str, token: &str, body: Value) -> Reply {
        self.call_with(method, url, Some(token), Some(body), &[])
            .await
    }

    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call_with(method, path, None, body, &[]).await
    }

    /// A working clone of a fake repository, with an identity for commits.
    fn clone(&self, owner: &str, name: &str) -> std::path::PathBuf {
        let work = self.dir.path().join(format!("work-{owner}-{name}"));
        git(
            self.dir.path(),
            &[
                "clone",
                "--quiet",
                &self.fake.clone_url(owner, name),
                work.to_str().unwrap(),
            ],
        );
        git(&work, &["config", "user.name", "Mainloop Bot"]);
        git(&work, &["config", "user.email", "bot@example.com"]);
        work
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn commit_file(work: &Path, file: &str, content: &str, message: &str) -> String {
    std::fs::write(work.join(file), content).unwrap();
    git(work, &["add", file]);
    git(work, &["commit", "--quiet", "-m", message]);
    git(work, &["rev-parse", "HEAD"])
}

async fn repo(e: &Env) {
    let r = e
        .control(
            Method::POST,
            "/_fake/repos",
            Some(json!({"owner": "acme", "name": "app", "default_branch": "main"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Parses `Link` into (rel, url) pairs.
fn links(r: &Reply) -> Vec<(String, String)> {
    let Some(link) = r.header("link") else {
        return Vec::new();
    };
    link.split(", ")
        .map(|part| {
            let (url, rel) = part.split_once("; ").unwrap();
            let url = url.trim_start_matches('<').trim_end_matches('>');
            let rel = rel.trim_start_matches("rel=\"").trim_end_matches('"');
            (rel.to_owned(), url.to_owned())
        })
        .collect()
}

fn rel<'a>(links: &'a [(String, String)], name: &str) -> Option<&'a str> {
    links
        .iter()
        .find(|(r, _)| r == name)
        .map(|(_, u)| u.as_str())
}

#[tokio::test]
async fn authentication_and_bad_input() {
    let e = env().await;
    repo(&e).await;
    let none = e
        .call_with(Method::GET, "/repos/acme/app", None, None, &[])
        .await;
    assert_eq!(none.status, 401);
    assert_eq!(none.body["message"], "Bad credentials");
    assert!(none.body["documentation_url"].is_string());
    assert!(none.header("x-ratelimit-limit").is_some());

    let wrong = e.get("/repos/acme/app", "nope").await;
    assert_eq!(wrong.status, 401);

    let token_scheme = e
        .call_with(
            Method::GET,
            "/repos/acme/app",
            None,
            None,
            &[("authorization", "token alice-token")],
        )
        .await;
    assert_eq!(token_scheme.status, 200);
    let r = token_scheme.body;
    assert_eq!(r["full_name"], "acme/app");
    assert_eq!(r["name"], "app");
    assert_eq!(r["owner"]["login"], "acme");
    assert_eq!(r["default_branch"], "main");
    assert_eq!(r["private"], false);
    assert!(r["node_id"].is_string() && r["id"].is_u64());
    assert_eq!(
        r["clone_url"],
        e.fake.clone_url("acme", "app"),
        "clients push to the bare repository"
    );

    let user = e.get("/user", ALICE).await;
    assert_eq!(user.body["login"], "alice");

    assert_eq!(e.get("/repos/acme/nope", BOT).await.status, 404);
    assert_eq!(
        e.get("/repos/acme/app/issues/99", BOT).await.body["message"],
        "Not Found"
    );
    assert_eq!(e.get("/repos/acme/app/issues/abc", BOT).await.status, 404);
    assert_eq!(e.get("/no/such/route", BOT).await.status, 404);

    let bad = e
        .http
        .post(format!("{}/repos/acme/app/issues", e.fake.base_url()))
        .header("authorization", format!("Bearer {BOT}"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["message"], "Problems parsing JSON");

    let missing = e
        .send(
            Method::POST,
            "/repos/acme/app/issues",
            BOT,
            json!({"body": "x"}),
        )
        .await;
    assert_eq!(missing.status, 422);

    // Creating the same repository twice is a validation error, not a crash.
    let again = e
        .control(
            Method::POST,
            "/_fake/repos",
            Some(json!({"owner": "acme", "name": "app"})),
        )
        .await;
    assert_eq!(again.status, 422);
}

#[tokio::test]
async fn issues_comments_and_link_pagination() {
    let e = env().await;
    repo(&e).await;
    let issue = e
        .send(
            Method::POST,
            "/repos/acme/app/issues",
            BOT,
            json!({"title": "Plan: fix login", "body": "the plan", "labels": ["mainloop"]}),
        )
        .await;
    assert_eq!(issue.status, 201, "{}", issue.text);
    let i = &issue.body;
    assert_eq!(i["number"], 1);
    assert_eq!(i["state"], "open");
    assert_eq!(i["state_reason"], Value::Null);
    assert_eq!(i["labels"][0]["name"], "mainloop");
    assert_eq!(i["user"]["login"], "mainloop-bot");
    assert!(
        i["html_url"]
            .as_str()
            .unwrap()
            .ends_with("/acme/app/issues/1")
    );
    assert!(i["created_at"].as_str().unwrap().ends_with('Z'));

    let got = e.get("/repos/acme/app/issues/1", ALICE).await;
    assert_eq!(got.body["title"], "Plan: fix login");

    let mut ids = Vec::new();
    for k in 0..75 {
        let c = e
            .send(
                Method::POST,
                "/repos/acme/app/issues/1/comments",
                if k % 2 == 0 { ALICE } else { BOT },
                json!({"body": format!("comment {k}")}),
            )
            .await;
        assert_eq!(c.status, 201);
        ids.push(c.body["id"].as_u64().unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
    let first = e.get("/repos/acme/app/issues/1/comments", BOT).await;
    assert_eq!(first.body.as_array().unwrap().len(), 30, "default per_page");
    let c0 = &first.body[0];
    assert_eq!(c0["body"], "comment 0");
    assert_eq!(c0["user"]["login"], "alice");
    assert!(
        c0["issue_url"]
            .as_str()
            .unwrap()
            .ends_with("/repos/acme/app/issues/1")
    );
    assert!(c0["html_url"].as_str().unwrap().contains("#issuecomment-"));

    // Walk the `next` links; each keeps per_page and the other parameters.
    let mut url = format!(
        "{}/repos/acme/app/issues/1/comments?per_page=20&since=2000-01-01T00:00:00Z",
        e.fake.base_url()
    );
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = e.get(&url, BOT).await;
        assert_eq!(r.status, 200);
        pages += 1;
        for c in r.body.as_array().unwrap() {
            seen.push(c["id"].as_u64().unwrap());
        }
        let l = links(&r);
        if pages == 1 {
            assert!(rel(&l, "prev").is_none() && rel(&l, "first").is_none());
            let last = rel(&l, "last").unwrap();
            assert!(
                last.contains("page=4") && last.contains("per_page=20"),
                "{last}"
            );
            assert!(last.contains("since="), "{last}");
            assert!(last.starts_with("http://"), "absolute: {last}");
        }
        match rel(&l, "next") {
            Some(next) => url = next.to_owned(),
            None => {
                assert!(rel(&l, "prev").unwrap().contains("page=3"));
                assert!(rel(&l, "first").unwrap().contains("page=1"));
                assert!(rel(&l, "last").is_none());
                break;
            }
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, ids, "every comment once, oldest first");

    let capped = e
        .get("/repos/acme/app/issues/1/comments?per_page=500", BOT)
        .await;
    assert_eq!(
        capped.body.as_array().unwrap().len(),
        75,
        "per_page max is 100"
    );

    let future = e
        .get(
            "/repos/acme/app/issues/1/comments?since=2999-01-01T00:00:00Z",
            BOT,
        )
        .await;
    assert_eq!(future.body.as_array().unwrap().len(), 0);

    let closed = e
        .send(
            Method::PATCH,
            "/repos/acme/app/issues/1",
            BOT,
            json!({"state": "closed", "state_reason": "not_planned"}),
        )
        .await;
    assert_eq!(closed.status, 200);
    assert_eq!(closed.body["state"], "closed");
    assert_eq!(closed.body["state_reason"], "not_planned");
    assert!(closed.body["closed_at"].is_string());
}

#[tokio::test]
async fn etags_give_free_304s() {
    let e = env().await;
    repo(&e).await;
    e.send(
        Method::POST,
        "/repos/acme/app/issues",
        BOT,
        json!({"title": "t"}),
    )
    .await;
    let a = e.get("/repos/acme/app/issues/1/comments", BOT).await;
    let etag = a.header("etag").unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let before = a.remaining();
    assert_eq!(a.header("x-ratelimit-resource"), Some("core"));
    assert!(
        a.header("x-ratelimit-reset")
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );

    let b = e
        .call_with(
            Method::GET,
            "/repos/acme/app/issues/1/comments",
            Some(BOT),
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(b.status, 304);
    assert!(b.text.is_empty());
    assert_eq!(b.remaining(), before, "a 304 costs no quota");

    e.send(
        Method::POST,
        "/repos/acme/app/issues/1/comments",
        ALICE,
        json!({"body": "new"}),
    )
    .await;
    let c = e
        .call_with(
            Method::GET,
            "/repos/acme/app/issues/1/comments",
            Some(BOT),
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(c.status, 200, "changed resource answers in full");
    assert_ne!(c.header("etag").unwrap(), etag);
    assert_eq!(c.remaining(), before - 1);
    assert_eq!(e.fake.stats().not_modified, 1);
}

#[tokio::test]
async fn reactions() {
    let e = env().await;
    repo(&e).await;
    e.send(
        Method::POST,
        "/repos/acme/app/issues",
        BOT,
        json!({"title": "t"}),
    )
    .await;
    let c = e
        .send(
            Method::POST,
            "/repos/acme/app/issues/1/comments",
            BOT,
            json!({"body": "Proceed?"}),
        )
        .await;
    let id = c.body["id"].as_u64().unwrap();
    let path = format!("/repos/acme/app/issues/comments/{id}/reactions");
    let r = e
        .send(Method::POST, &path, ALICE, json!({"content": "+1"}))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["content"], "+1");
    assert_eq!(r.body["user"]["login"], "alice");
    let again = e
        .send(Method::POST, &path, ALICE, json!({"content": "+1"}))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["id"], r.body["id"]);
    e.send(Method::POST, &path, BOT, json!({"content": "eyes"}))
        .await;
    let bad = e
        .send(Method::POST, &path, BOT, json!({"content": "nope"}))
        .await;
    assert_eq!(bad.status, 422);
    let list = e.get(&path, BOT).await;
    assert_eq!(list.body.as_array().unwrap().len(), 2);
    let thumbs = e.get(&format!("{path}?content=%2B1"), BOT).await;
    assert_eq!(thumbs.body.as_array().unwrap().len(), 1);
    assert_eq!(thumbs.body[0]["user"]["login"], "alice");
    assert_eq!(
        e.get("/repos/acme/app/issues/comments/999999/reactions", BOT)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn pull_requests_reviews_checks_and_merge() {
    let e = env().await;
    repo(&e).await;
    let work = e.clone("acme", "app");
    git(&work, &["checkout", "--quiet", "-b", "mainloop/1-login"]);
    let first = commit_file(&work, "login.rs", "fn login() {}\n", "Fix login");
    git(&work, &["push", "--quiet", "origin", "mainloop/1-login"]);

    // An issue first, so the pull request shares the number sequence.
    e.send(
        Method::POST,
        "/repos/acme/app/issues",
        BOT,
        json!({"title": "plan"}),
    )
    .await;
    let missing = e
        .send(
            Method::POST,
            "/repos/acme/app/pulls",
            BOT,
            json!({"title": "x", "head": "nope", "base": "main"}),
        )
        .await;
    assert_eq!(missing.status, 422);
    assert_eq!(missing.body["message"], "Validation Failed");
    assert!(missing.body["errors"].is_array());

    let pr = e
        .send(
            Method::POST,
            "/repos/acme/app/pulls",
            BOT,
            json!({"title": "Fix login", "head": "mainloop/1-login", "base": "main",
                   "body": "Closes #1", "draft": true}),
        )
        .await;
    assert_eq!(pr.status, 201, "{}", pr.text);
    let p = &pr.body;
    assert_eq!(p["number"], 2);
    assert_eq!(p["draft"], true);
    assert_eq!(p["state"], "open");
    assert_eq!(p["merged"], false);
    assert_eq!(p["head"]["ref"], "mainloop/1-login");
    assert_eq!(p["head"]["sha"], first.as_str());
    assert_eq!(p["head"]["label"], "acme:mainloop/1-login");
    assert_eq!(p["base"]["ref"], "main");
    assert_eq!(p["user"]["login"], "mainloop-bot");
    let node_id = p["node_id"].as_str().unwrap().to_owned();
    let dup = e
        .send(
            Method::POST,
            "/repos/acme/app/pulls",
            BOT,
            json!({"title": "again", "head": "acme:mainloop/1-login", "base": "main"}),
        )
        .await;
    assert_eq!(dup.status, 422, "one open pull request per head");

    // A second push moves head.sha.
    let second = commit_file(&work, "login.rs", "fn login() { check() }\n", "Check");
    git(&work, &["push", "--quiet", "origin", "mainloop/1-login"]);
    let got = e.get("/repos/acme/app/pulls/2", BOT).await;
    assert_eq!(got.body["head"]["sha"], second.as_str());
    assert_eq!(got.body["mergeable"], true);
    let as_issue = e.get("/repos/acme/app/issues/2", BOT).await;
    assert!(as_issue.body["pull_request"].is_object());

    let list = e.get("/repos/acme/app/pulls?state=all", BOT).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    assert_eq!(list.body[0]["head"]["sha"], second.as_str());

    // A draft cannot merge.
    let draft = e
        .send(Method::PUT, "/repos/acme/app/pulls/2/merge", BOT, json!({}))
        .await;
    assert_eq!(draft.status, 405);

    // Reviews and line comments (the author cannot approve their own).
    let own = e
        .send(
            Method::POST,
            "/repos/acme/app/pulls/2/reviews",
            BOT,
            json!({"event": "APPROVE"}),
        )
        .await;
    assert_eq!(own.status, 422);
    let review = e
        .send(
            Method::POST,
            "/repos/acme/app/pulls/2/reviews",
            ALICE,
            json!({"body": "Needs a test", "event": "REQUEST_CHANGES",
                   "comments": [{"path": "login.rs", "line": 1, "body": "why?"}]}),
        )
        .await;
    assert_eq!(review.status, 200, "{}", review.text);
    assert_eq!(review.body["state"], "CHANGES_REQUESTED");
    assert_eq!(review.body["user"]["login"], "alice");
    assert_eq!(review.body["commit_id"], second.as_str());
    assert!(review.body["submitted_at"].is_string());
    let review_id = review.body["id"].as_u64().unwrap();
    let line = e
        .send(
            Method::POST,
            "/repos/acme/app/pulls/2/comments",
            ALICE,
            json!({"body": "and here", "path": "login.rs", "line": 1, "commit_id": second}),
        )
        .await;
    assert_eq!(line.status, 201, "{}", line.text);
    let comments = e.get("/repos/acme/app/pulls/2/comments", BOT).await;
    let comments = comments.body.as_array().unwrap();
    assert_eq!(comments.len(), 2);
    assert_eq!(comments[0]["body"], "why?");
    assert_eq!(comments[0]["path"], "login.rs");
    assert_eq!(comments[0]["line"], 1);
    assert_eq!(comments[0]["side"], "RIGHT");
    assert_eq!(comments[0]["pull_request_review_id"], review_id);
    assert!(
        comments[1]["html_url"]
            .as_str()
            .unwrap()
            .contains("#discussion_r")
    );
    let reviews = e.get("/repos/acme/app/pulls/2/reviews", BOT).await;
    assert_eq!(
        reviews.body.as_array().unwrap().len(),
        2,
        "a lone comment is a review"
    );

    // Check runs, and a job log behind one of them.
    let ok_run = e
        .send(
            Method::POST,
            "/repos/acme/app/check-runs",
            BOT,
            json!({"name": "build", "head_sha": second, "status": "completed", "conclusion": "success"}),
        )
        .await;
    assert_eq!(ok_run.status, 201, "{}", ok_run.text);
    let test_run = e
        .send(
            Method::POST,
            "/repos/acme/app/check-runs",
            BOT,
            json!({"name": "test", "head_sha": second, "status": "in_progress"}),
        )
        .await;
    let run_id = test_run.body["id"].as_u64().unwrap();
    assert_eq!(test_run.body["conclusion"], Value::Null);
    let done = e
        .send(
            Method::PATCH,
            &format!("/repos/acme/app/check-runs/{run_id}"),
            BOT,
            json!({"conclusion": "failure"}),
        )
        .await;
    assert_eq!(done.body["status"], "completed");
    assert!(done.body["completed_at"].is_string());
    let log = e
        .control(
            Method::POST,
            &format!("/_fake/repos/acme/app/check-runs/{run_id}/log"),
            Some(json!({"log": "line 1\nerror: test failed\n"})),
        )
        .await;
    assert_eq!(log.status, 200);
    let by_branch = e
        .get(
            "/repos/acme/app/commits/mainloop%2F1-login/check-runs?per_page=1",
            BOT,
        )
        .await;
    assert_eq!(by_branch.body["total_count"], 2);
    assert_eq!(by_branch.body["check_runs"].as_array().unwrap().len(), 1);
    assert!(rel(&links(&by_branch), "next").is_some());
    let by_sha = e
        .get(&format!("/repos/acme/app/commits/{second}/check-runs"), BOT)
        .await;
    let failed = by_sha.body["check_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "test")
        .unwrap()
        .clone();
    let details = failed["details_url"].as_str().unwrap();
    assert!(
        details.ends_with(&format!("/actions/runs/1/job/{run_id}")),
        "{details}"
    );
    let redirect = e
        .get(&format!("/repos/acme/app/actions/jobs/{run_id}/logs"), BOT)
        .await;
    assert_eq!(redirect.status, 302);
    let location = redirect.header("location").unwrap().to_owned();
    let blob = e.http.get(&location).send().await.unwrap();
    assert_eq!(blob.status(), 200);
    assert!(
        blob.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(blob.text().await.unwrap(), "line 1\nerror: test failed\n");
    let ok_id = ok_run.body["id"].as_u64().unwrap();
    assert_eq!(
        e.get(&format!("/repos/acme/app/actions/jobs/{ok_id}/logs"), BOT)
            .await
            .status,
        404
    );

    // GraphQL: ready for review.
    let gql = e
        .send(
            Method::POST,
            "/graphql",
            BOT,
            json!({"query": "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) { pullRequest { id isDraft number } } }",
                   "variables": {"id": node_id}}),
        )
        .await;
    assert_eq!(gql.status, 200);
    let pr_out = &gql.body["data"]["markPullRequestReadyForReview"]["pullRequest"];
    assert_eq!(pr_out["isDraft"], false);
    assert_eq!(pr_out["number"], 2);
    assert_eq!(pr_out["id"], node_id.as_str());
    assert_eq!(gql.header("x-ratelimit-resource"), Some("graphql"));
    let other = e
        .send(
            Method::POST,
            "/graphql",
            BOT,
            json!({"query": "{ viewer { login } }"}),
        )
        .await;
    assert_eq!(other.status, 200);
    assert!(other.body["errors"][0]["message"].is_string());
    assert_eq!(
        e.get("/repos/acme/app/pulls/2", BOT).await.body["draft"],
        false
    );

    // A moved head refuses the merge; the right sha merges for real.
    let stale = e
        .send(
            Method::PUT,
            "/repos/acme/app/pulls/2/merge",
            BOT,
            json!({"sha": first}),
        )
        .await;
    assert_eq!(stale.status, 409);
    // Main moves on meanwhile, so this is a true merge, not a fast-forward.
    git(&work, &["checkout", "--quiet", "main"]);
    commit_file(&work, "other.txt", "x\n", "Other work");
    git(&work, &["push", "--quiet", "origin", "main"]);
    let merged = e
        .send(
            Method::PUT,
            "/repos/acme/app/pulls/2/merge",
            BOT,
            json!({"sha": second, "merge_method": "merge"}),
        )
        .await;
    assert_eq!(merged.status, 200, "{}", merged.text);
    assert_eq!(merged.body["merged"], true);
    let merge_sha = merged.body["sha"].as_str().unwrap().to_owned();
    let bare = e.fake.repo_path("acme", "app");
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/main"]), merge_sha);
    assert_eq!(
        git(&bare, &["show", "refs/heads/main:login.rs"]),
        "fn login() { check() }"
    );
    assert_eq!(git(&bare, &["show", "refs/heads/main:other.txt"]), "x");
    let parents = git(
        &bare,
        &["rev-list", "--parents", "-n", "1", "refs/heads/main"],
    );
    assert_eq!(parents.split(' ').count(), 3, "a merge commit");
    let after = e.get("/repos/acme/app/pulls/2", BOT).await;
    assert_eq!(after.body["merged"], true);
    assert_eq!(after.body["state"], "closed");
    assert!(after.body["merged_at"].is_string());
    assert_eq!(
        e.send(Method::PUT, "/repos/acme/app/pulls/2/merge", BOT, json!({}))
            .await
            .status,
        405
    );

    let commits = e
        .get("/repos/acme/app/commits?sha=main&per_page=2", BOT)
        .await;
    let cs = commits.body.as_array().unwrap();
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0]["sha"], merge_sha.as_str());
    assert!(
        cs[0]["commit"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Merge pull request #2")
    );
    assert_eq!(cs[0]["author"]["login"], "mainloop-bot");
    assert_eq!(cs[1]["commit"]["author"]["name"], "Mainloop Bot");
    assert_eq!(cs[1]["author"], Value::Null);
    assert!(
        cs[1]["commit"]["author"]["date"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(rel(&links(&commits), "next").is_some());
}

#[tokio::test]
async fn conflicts_and_closing() {
    let e = env().await;
    repo(&e).await;
    let work = e.clone("acme", "app");
    git(&work, &["checkout", "--quiet", "-b", "feature"]);
    commit_file(&work, "README.md", "feature\n", "Feature readme");
    git(&work, &["push", "--quiet", "origin", "feature"]);
    git(&work, &["checkout", "--quiet", "main"]);
    commit_file(&work, "README.md", "main\n", "Main readme");
    git(&work, &["push", "--quiet", "origin", "main"]);
    let pr = e
        .send(
            Method::POST,
            "/repos/acme/app/pulls",
            BOT,
            json!({"title": "Conflict", "head": "feature", "base": "main"}),
        )
        .await;
    assert_eq!(pr.status, 201);
    let got = e.get("/repos/acme/app/pulls/1", BOT).await;
    assert_eq!(got.body["mergeable"], false);
    let main_before = git(&e.fake.repo_path("acme", "app"), &["rev-parse", "main"]);
    let m = e
        .send(Method::PUT, "/repos/acme/app/pulls/1/merge", BOT, json!({}))
        .await;
    assert_eq!(m.status, 405);
    assert_eq!(
        git(&e.fake.repo_path("acme", "app"), &["rev-parse", "main"]),
        main_before,
        "a refused merge leaves the base alone"
    );
    let closed = e
        .send(
            Method::PATCH,
            "/repos/acme/app/pulls/1",
            BOT,
            json!({"state": "closed"}),
        )
        .await;
    assert_eq!(closed.status, 200);
    assert_eq!(closed.body["state"], "closed");
    assert_eq!(closed.body["merged"], false);
    let open = e.get("/repos/acme/app/pulls", BOT).await;
    assert_eq!(open.body.as_array().unwrap().len(), 0);
    let closed_list = e.get("/repos/acme/app/pulls?state=closed", BOT).await;
    assert_eq!(closed_list.body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn pull_list_is_newest_first_and_paginated() {
    let e = env().await;
    repo(&e).await;
    let work = e.clone("acme", "app");
    for k in 0..3 {
        git(
            &work,
            &["checkout", "--quiet", "-B", &format!("b{k}"), "origin/main"],
        );
        commit_file(&work, &format!("f{k}"), "x\n", "work");
        git(&work, &["push", "--quiet", "origin", &format!("b{k}")]);
        let r = e
            .send(
                Method::POST,
                "/repos/acme/app/pulls",
                BOT,
                json!({"title": format!("pr {k}"), "head": format!("b{k}"), "base": "main"}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let page = e.get("/repos/acme/app/pulls?per_page=2", BOT).await;
    let items = page.body.as_array().unwrap();
    assert_eq!(items[0]["number"], 3);
    assert_eq!(items[1]["number"], 2);
    let next = rel(&links(&page), "next").unwrap().to_owned();
    let rest = e.get(&next, BOT).await;
    assert_eq!(rest.body[0]["number"], 1);
}

#[tokio::test]
async fn outages_and_rate_limits() {
    let e = env().await;
    repo(&e).await;
    let r = e
        .control(
            Method::POST,
            "/_fake/outage",
            Some(json!({"status": 503, "requests": 2})),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(e.get("/repos/acme/app", BOT).await.status, 503);
    assert_eq!(e.get("/repos/acme/app", BOT).await.status, 503);
    assert_eq!(e.get("/repos/acme/app", BOT).await.status, 200);
    e.control(Method::POST, "/_fake/outage", Some(json!({"status": 502})))
        .await;
    for _ in 0..3 {
        assert_eq!(e.get("/repos/acme/app", BOT).await.status, 502);
    }
    e.control(Method::DELETE, "/_fake/outage", None).await;
    assert_eq!(e.get("/repos/acme/app", BOT).await.status, 200);

    e.control(
        Method::POST,
        "/_fake/rate-limit",
        Some(json!({"remaining": 1, "reset_in_secs": 2})),
    )
    .await;
    let last = e.get("/repos/acme/app", BOT).await;
    assert_eq!(last.status, 200);
    assert_eq!(last.remaining(), 0);
    let limited = e.get("/repos/acme/app", BOT).await;
    assert_eq!(limited.status, 403);
    assert!(
        limited.body["message"]
            .as_str()
            .unwrap()
            .starts_with("API rate limit exceeded for user")
    );
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    let reset: i64 = limited
        .header("x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(reset >= now && reset <= now + 3, "{reset} vs {now}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let back = e.get("/repos/acme/app", BOT).await;
    assert_eq!(back.status, 200, "the window reset");
    assert_eq!(back.remaining(), 4999);

    e.control(
        Method::POST,
        "/_fake/rate-limit",
        Some(json!({"retry_after_secs": 7, "requests": 2})),
    )
    .await;
    let s1 = e.get("/repos/acme/app", BOT).await;
    assert_eq!(s1.status, 429);
    assert_eq!(s1.header("retry-after"), Some("7"));
    assert_eq!(e.get("/repos/acme/app", BOT).await.status, 429);
    assert_eq!(e.get("/repos/acme/app", BOT).await.status, 200);
}

async fn comments(e: &Env, issue: u64) -> usize {
    let r = e
        .get(&format!("/repos/acme/app/issues/{issue}/comments"), BOT)
        .await;
    r.body.as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn hangs_answer_late_time_out_or_lose_the_answer_of_a_change_made() {
    let e = env().await;
    repo(&e).await;
    e.send(
        Method::POST,
        "/repos/acme/app/issues",
        BOT,
        json!({"title": "t"}),
    )
    .await;
    let bad = e
        .control(
            Method::POST,
            "/_fake/hang",
            Some(json!({"delay_ms": 1, "status": 200})),
        )
        .await;
    assert_eq!(bad.status, 422);

    // Slow: answered normally, only late; GETs are spared when the hang names POST.
    e.control(
        Method::POST,
        "/_fake/hang",
        Some(json!({"delay_ms": 300, "method": "POST", "requests": 1})),
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(e.get("/repos/acme/app", BOT).await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(300), "a GET hung");
    let slow = e
        .send(
            Method::POST,
            "/repos/acme/app/issues/1/comments",
            BOT,
            json!({"body": "a"}),
        )
        .await;
    assert_eq!(slow.status, 201);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(comments(&e, 1).await, 1);

    // Timed out before anything happened: nothing changed.
    e.control(
        Method::POST,
        "/_fake/hang",
        Some(json!({"delay_ms": 50, "status": 504, "requests": 1})),
    )
    .await;
    let lost = e
        .send(
            Method::POST,
            "/repos/acme/app/issues/1/comments",
            BOT,
            json!({"body": "b"}),
        )
        .await;
    assert_eq!(lost.status, 504);
    assert!(lost.body["message"].as_str().unwrap().contains("in time"));
    assert_eq!(comments(&e, 1).await, 1);

    // Timed out after the change was made: the comment exists, the answer says 504.
    // Only that route hangs.
    e.control(
        Method::POST,
        "/_fake/hang",
        Some(
            json!({"delay_ms": 50, "status": 504, "applied": true, "requests": 1,
                    "route": "POST /repos/{o}/{r}/issues/{n}/comments"}),
        ),
    )
    .await;
    let other = e
        .send(
            Method::POST,
            "/repos/acme/app/issues",
            BOT,
            json!({"title": "u"}),
        )
        .await;
    assert_eq!(other.status, 201);
    let made = e
        .send(
            Method::POST,
            "/repos/acme/app/issues/1/comments",
            BOT,
            json!({"body": "c"}),
        )
        .await;
    assert_eq!(made.status, 504);
    assert_eq!(comments(&e, 1).await, 2);

    // A queue: each request takes the first hang that matches it, so a comment's hang
    // waits for a comment however many other requests come first.
    e.control(
        Method::POST,
        "/_fake/hang",
        Some(json!([
            {"delay_ms": 10, "status": 504, "requests": 1,
             "route": "POST /repos/{o}/{r}/issues/{n}/comments"},
            {"delay_ms": 10, "status": 502, "requests": 1, "method": "POST"},
        ])),
    )
    .await;
    assert_eq!(e.get("/repos/acme/app", BOT).await.status, 200);
    for expected in [504, 502, 201] {
        let sent = e
            .send(
                Method::POST,
                "/repos/acme/app/issues/1/comments",
                BOT,
                json!({"body": "d"}),
            )
            .await;
        assert_eq!(sent.status, expected);
    }
    assert_eq!(comments(&e, 1).await, 3);

    // Until cleared, every request hangs.
    e.control(Method::POST, "/_fake/hang", Some(json!({"delay_ms": 10})))
        .await;
    e.get("/repos/acme/app", BOT).await;
    e.get("/repos/acme/app", BOT).await;
    e.control(Method::DELETE, "/_fake/hang", None).await;
    let injected = e.fake.stats().injected;
    assert_eq!(injected.get("hang"), Some(&3), "{injected:?}");
    assert_eq!(injected.get("hang 504"), Some(&3), "{injected:?}");
    assert_eq!(injected.get("hang 502"), Some(&1), "{injected:?}");
}

#[tokio::test]
async fn stats_count_routes_and_304s() {
    let e = env().await;
    repo(&e).await;
    e.send(
        Method::POST,
        "/repos/acme/app/issues",
        BOT,
        json!({"title": "t"}),
    )
    .await;
    e.control(Method::DELETE, "/_fake/stats", None).await;
    let a = e.get("/repos/acme/app/issues/1", BOT).await;
    let etag = a.header("etag").unwrap().to_owned();
    e.call_with(
        Method::GET,
        "/repos/acme/app/issues/1",
        Some(BOT),
        None,
        &[("if-none-match", &etag)],
    )
    .await;
    e.get("/repos/acme/app", BOT).await;
    let s = e.control(Method::GET, "/_fake/stats", None).await;
    assert_eq!(s.body["requests"], 3);
    assert_eq!(s.body["not_modified"], 1);
    assert_eq!(s.body["by_route"]["GET /repos/{o}/{r}/issues/{n}"], 2);
    assert_eq!(s.body["by_route"]["GET /repos/{o}/{r}"], 1);
    e.control(Method::DELETE, "/_fake/stats", None).await;
    assert_eq!(e.fake.stats().requests, 0);
}

type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

async fn receiver() -> (String, Received) {
    use axum::routing::post;
    let got: Received = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let mut h = HeaderMap::new();
                    for (k, v) in &headers {
                        h.insert(
                            reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
                            reqwest::header::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
                        );
                    }
                    sink.lock().unwrap().push((h, body.to_vec()));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/hook"), got)
}

async fn wait_for(got: &Received, n: usize) -> Vec<(HeaderMap, Vec<u8>)> {
    for _ in 0..100 {
        if got.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got.lock().unwrap().clone()
}

#[tokio::test]
async fn webhooks_are_signed() {
    let e = env().await;
    repo(&e).await;
    let (url, got) = receiver().await;
    let hook = e
        .control(
            Method::POST,
            "/_fake/webhooks",
            Some(json!({"url": url, "secret": "s3cret"})),
        )
        .await;
    assert_eq!(hook.status, 201);
    // A dead receiver is logged, never fatal.
    e.fake.add_webhook("http://127.0.0.1:9/dead", "x");
    e.send(
        Method::POST,
        "/repos/acme/app/issues",
        BOT,
        json!({"title": "t"}),
    )
    .await;
    e.send(
        Method::POST,
        "/repos/acme/app/issues/1/comments",
        ALICE,
        json!({"body": "hello"}),
    )
    .await;
    let deliveries = wait_for(&got, 1).await;
    assert_eq!(deliveries.len(), 1);
    let (headers, body) = &deliveries[0];
    assert_eq!(headers["x-github-event"], "issue_comment");
    assert_eq!(headers["content-type"], "application/json");
    assert!(uuid::Uuid::parse_str(headers["x-github-delivery"].to_str().unwrap()).is_ok());
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(headers["x-hub-signature-256"].to_str().unwrap(), expected);
    let payload: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["action"], "created");
    assert_eq!(payload["repository"]["full_name"], "acme/app");
    assert_eq!(payload["repository"]["owner"]["login"], "acme");
    assert_eq!(payload["sender"]["login"], "alice");
    assert_eq!(payload["issue"]["number"], 1);
    assert_eq!(payload["comment"]["body"], "hello");

    // A check run that completes.
    let sha = git(&e.fake.repo_path("acme", "app"), &["rev-parse", "main"]);
    let run = e
        .send(
            Method::POST,
            "/repos/acme/app/check-runs",
            BOT,
            json!({"name": "ci", "head_sha": sha, "status": "in_progress"}),
        )
        .await;
    e.send(
        Method::PATCH,
        &format!("/repos/acme/app/check-runs/{}", run.body["id"]),
        BOT,
        json!({"status": "completed", "conclusion": "success"}),
    )
    .await;
    let deliveries = wait_for(&got, 3).await;
    let (h, b) = deliveries.last().unwrap();
    assert_eq!(h["x-github-event"], "check_run");
    let p: Value = serde_json::from_slice(b).unwrap();
    assert_eq!(p["action"], "completed");
    assert_eq!(p["check_run"]["conclusion"], "success");
}

#[tokio::test]
async fn binary_prints_its_address() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mainloop-fake-github"))
        .args(["--listen", "127.0.0.1:0", "--root"])
        .arg(dir.path())
        .args(["--token", "t1=mainloop-bot", "--token", "t2=alice"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let base = line
        .strip_prefix("fake github listening on ")
        .unwrap()
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    let http = reqwest::Client::new();
    let user: Value = http
        .get(format!("{base}/user"))
        .header("authorization", "Bearer t2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["login"], "alice");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_merge_that_loses_a_race_on_its_base_answers_409_and_merges_when_tried_again() {
    let e = env().await;
    repo(&e).await;
    let work = e.clone("acme", "app");
    git(&work, &["checkout", "--quiet", "-b", "feature"]);
    commit_file(&work, "feature.txt", "feature\n", "Feature");
    git(&work, &["push", "--quiet", "origin", "feature"]);
    let pr = e
        .send(
            Method::POST,
            "/repos/acme/app/pulls",
            BOT,
            json!({"title": "Race", "head": "feature", "base": "main"}),
        )
        .await;
    assert_eq!(pr.status, 201);
    let bare = e.fake.repo_path("acme", "app");
    let before = git(&bare, &["rev-parse", "main"]);
    e.fake.race_next_merges(1);
    let lost = e
        .send(Method::PUT, "/repos/acme/app/pulls/1/merge", BOT, json!({}))
        .await;
    assert_eq!(lost.status, 409, "{}", lost.text);
    assert_eq!(
        lost.body["message"],
        "Base branch was modified. Review and try the merge again."
    );
    let moved = git(&bare, &["rev-parse", "main"]);
    assert_ne!(moved, before, "the other merge landed");
    assert_eq!(e.fake.stats().injected.get("merge race"), Some(&1));
    let open = e.get("/repos/acme/app/pulls/1", BOT).await;
    assert_eq!(open.body["state"], "open");
    let merged = e
        .send(Method::PUT, "/repos/acme/app/pulls/1/merge", BOT, json!({}))
        .await;
    assert_eq!(merged.status, 200, "{}", merged.text);
    let parents = git(&bare, &["rev-list", "--parents", "-n", "1", "main"]);
    assert!(
        parents.contains(&moved),
        "merged onto the moved base: {parents}"
    );
}

//! The GitHub forge against the fake GitHub (real wire format: ETag/304, Link pages,
//! rate-limit headers, GraphQL, job logs behind a 302), and against a tiny local server
//! where the fake cannot show what was sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mainloop_config::Secret;
use mainloop_fake_github::{Config, FakeGithub, Outage, RateLimit, SecondaryLimit};
use mainloop_forge::{
    CiStatus, Cursor, FeedbackCursor, FeedbackKind, Forge, ForgeError, MergeOutcome,
    NewPullRequest, PrState, RepoRef,
};
use mainloop_github::{GitEnv, GithubConfig, GithubForge, git_url, install_askpass};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

const BOT: &str = "bot-token-1234567890";
const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";
const CI: &str = "ci-token";

struct Env {
    fake: FakeGithub,
    dir: TempDir,
    repo: RepoRef,
    forge: GithubForge,
    http: reqwest::Client,
}

fn forge_for(base: &str, token: &str) -> GithubForge {
    GithubForge::new(&GithubConfig {
        api_url: base.to_owned(),
        request_timeout: Duration::from_secs(10),
        ..GithubConfig::new(Secret::new(token))
    })
    .unwrap()
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeGithub::start(Config::new(
        dir.path().join("github"),
        &[
            (BOT, "mainloop-bot"),
            (ALICE, "alice"),
            (BOB, "bob"),
            (CI, "ci-bot"),
        ],
    ))
    .await
    .unwrap();
    fake.create_repo("octo", "hello", "main").await.unwrap();
    let forge = forge_for(&fake.base_url(), BOT);
    Env {
        repo: RepoRef {
            owner: "octo".into(),
            name: "hello".into(),
        },
        forge,
        fake,
        dir,
        http: reqwest::Client::new(),
    }
}

impl Env {
    /// Acts on the fake as another user (a reviewer, CI), outside the code under test.
    async fn call(&self, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method, format!("{}{path}", self.fake.base_url()))
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("user-agent", "test")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method, format!("{}{path}", self.fake.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    async fn stats(&self) -> Value {
        self.control(reqwest::Method::GET, "/_fake/stats", Value::Null)
            .await
    }

    async fn reset_stats(&self) {
        self.control(reqwest::Method::DELETE, "/_fake/stats", Value::Null)
            .await;
    }

    /// Pushes a branch with one new file (through the git URL template and askpass env,
    /// as the worker does) and returns its head sha.
    fn push_branch(&self, branch: &str, file: &str) -> String {
        let root = self.fake.repo_path("octo", "hello");
        let template = format!(
            "file://{}/{{owner}}/{{name}}.git",
            root.parent().unwrap().parent().unwrap().display()
        );
        let url = git_url(&template, &self.repo).unwrap();
        assert_eq!(url, self.fake.clone_url("octo", "hello"));
        let askpass = install_askpass(&self.dir.path().join("bin")).unwrap();
        let env = GitEnv::new(askpass, Secret::new(BOT));
        let work = self.dir.path().join(format!("work-{branch}"));
        let git = |cwd: &Path, args: &[&str]| {
            let out = Command::new("git")
                .args(args)
                .current_dir(cwd)
                .envs(env.vars())
                .env("GIT_AUTHOR_NAME", "mainloop-bot")
                .env("GIT_AUTHOR_EMAIL", "bot@example.com")
                .env("GIT_COMMITTER_NAME", "mainloop-bot")
                .env("GIT_COMMITTER_EMAIL", "bot@example.com")
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        git(
            self.dir.path(),
            &["clone", "-q", &url, work.to_str().unwrap()],
        );
        git(&work, &["checkout", "-q", "-b", branch]);
        std::fs::write(work.join(file), format!("{file}\n")).unwrap();
        git(&work, &["add", file]);
        git(&work, &["commit", "-q", "-m", &format!("Add {file}")]);
        git(&work, &["push", "-q", "origin", branch]);
        git(&work, &["rev-parse", "HEAD"])
    }

    async fn open_pr(&self, branch: &str, draft: bool) -> mainloop_forge::PullRequest {
        self.push_branch(branch, &format!("{branch}.txt"));
        self.forge
            .open_pull_request(
                &self.repo,
                NewPullRequest {
                    head: branch,
                    base: "main",
                    title: &format!("Work on {branch}"),
                    body: "Body",
                    draft,
                },
            )
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn comments_paginate_and_repeated_polls_are_304s() {
    let e = env().await;
    let issue = e
        .forge
        .create_issue(&e.repo, "Plan: fix login", "The plan", &["mainloop"])
        .await
        .unwrap();
    assert!(
        issue.url.contains(&format!("/issues/{}", issue.number)),
        "{}",
        issue.url
    );
    let issue_json = e
        .call(
            ALICE,
            reqwest::Method::GET,
            &format!("/repos/octo/hello/issues/{}", issue.number),
            Value::Null,
        )
        .await;
    assert_eq!(issue_json["labels"][0]["name"], "mainloop");

    let mut posted = Vec::new();
    for i in 0..130 {
        let c = e
            .forge
            .comment(&e.repo, issue.number, &format!("comment {i}"))
            .await
            .unwrap();
        assert_eq!(c.author, "mainloop-bot");
        posted.push(c.id);
    }
    let (comments, cursor) = e
        .forge
        .comments_since(&e.repo, issue.number, &Cursor::default())
        .await
        .unwrap();
    assert_eq!(comments.len(), 130);
    assert_eq!(comments.iter().map(|c| c.id).collect::<Vec<_>>(), posted);
    assert_eq!(comments[129].body, "comment 129");
    assert_eq!(cursor.seen_id, posted[129]);

    // Nothing new: both pages revalidate with 304s.
    e.reset_stats().await;
    let (none, same) = e
        .forge
        .comments_since(&e.repo, issue.number, &cursor)
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(same.seen_id, cursor.seen_id);
    let stats = e.stats().await;
    assert_eq!(stats["requests"], 2, "{stats}");
    assert_eq!(stats["not_modified"], 2, "{stats}");

    // A comment from someone else between polls is returned once.
    let alice = e
        .call(
            ALICE,
            reqwest::Method::POST,
            &format!("/repos/octo/hello/issues/{}/comments", issue.number),
            json!({"body": "approve the plan"}),
        )
        .await;
    let (new, cursor2) = e
        .forge
        .comments_since(&e.repo, issue.number, &same)
        .await
        .unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].author, "alice");
    assert_eq!(new[0].id, alice["id"].as_u64().unwrap());
    let (again, _) = e
        .forge
        .comments_since(&e.repo, issue.number, &cursor2)
        .await
        .unwrap();
    assert!(again.is_empty());
}

#[tokio::test]
async fn a_full_last_page_does_not_hide_the_next_one() {
    let e = env().await;
    let issue = e
        .forge
        .create_issue(&e.repo, "Plan", "p", &[])
        .await
        .unwrap();
    for i in 0..100 {
        e.forge
            .comment(&e.repo, issue.number, &format!("c{i}"))
            .await
            .unwrap();
    }
    let (all, cursor) = e
        .forge
        .comments_since(&e.repo, issue.number, &Cursor::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(cursor.etag, None, "a full page's validator proves nothing");
    e.forge
        .comment(&e.repo, issue.number, "number 101")
        .await
        .unwrap();
    let (new, _) = e
        .forge
        .comments_since(&e.repo, issue.number, &cursor)
        .await
        .unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].body, "number 101");
}

#[tokio::test]
async fn a_persisted_cursor_gets_304s_after_a_restart() {
    let e = env().await;
    let issue = e
        .forge
        .create_issue(&e.repo, "Plan", "p", &[])
        .await
        .unwrap();
    e.forge.comment(&e.repo, issue.number, "one").await.unwrap();
    let (first, cursor) = e
        .forge
        .comments_since(&e.repo, issue.number, &Cursor::default())
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(cursor.etag.is_some());
    // Persisted and read back by a new process with an empty cache.
    let stored: Cursor = serde_json::from_str(&serde_json::to_string(&cursor).unwrap()).unwrap();
    let restarted = forge_for(&e.fake.base_url(), BOT);
    e.reset_stats().await;
    let (none, same) = restarted
        .comments_since(&e.repo, issue.number, &stored)
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(same, stored);
    let stats = e.stats().await;
    assert_eq!(stats["requests"], 1, "{stats}");
    assert_eq!(stats["not_modified"], 1, "{stats}");

    e.call(
        BOB,
        reqwest::Method::POST,
        &format!("/repos/octo/hello/issues/{}/comments", issue.number),
        json!({"body": "two"}),
    )
    .await;
    let (new, _) = restarted
        .comments_since(&e.repo, issue.number, &stored)
        .await
        .unwrap();
    assert_eq!(
        new.iter().map(|c| c.body.as_str()).collect::<Vec<_>>(),
        ["two"]
    );
}

#[tokio::test]
async fn an_issue_is_found_by_the_marker_in_its_body_open_or_closed() {
    let e = env().await;
    let tag = "<!-- mainloop-key:issue:42 -->";
    assert!(
        e.forge
            .find_issue(&e.repo, "mainloop", tag)
            .await
            .unwrap()
            .is_none()
    );
    e.forge
        .create_issue(&e.repo, "Other", "another task", &["mainloop"])
        .await
        .unwrap();
    let mine = e
        .forge
        .create_issue(
            &e.repo,
            "Mine",
            &format!("the task\n\n{tag}"),
            &["mainloop"],
        )
        .await
        .unwrap();
    e.forge.close_issue(&e.repo, mine.number).await.unwrap();
    let found = e.forge.find_issue(&e.repo, "mainloop", tag).await.unwrap();
    assert_eq!(found, Some(mine));
}

#[tokio::test]
async fn reactions_and_closing_issues() {
    let e = env().await;
    let issue = e
        .forge
        .create_issue(&e.repo, "Plan", "p", &[])
        .await
        .unwrap();
    let c = e
        .forge
        .comment(&e.repo, issue.number, "OK to proceed?")
        .await
        .unwrap();
    assert!(e.forge.thumbs_up(&e.repo, c.id).await.unwrap().is_empty());
    let path = format!("/repos/octo/hello/issues/comments/{}/reactions", c.id);
    e.call(
        ALICE,
        reqwest::Method::POST,
        &path,
        json!({"content": "+1"}),
    )
    .await;
    e.call(
        BOB,
        reqwest::Method::POST,
        &path,
        json!({"content": "heart"}),
    )
    .await;
    e.call(BOB, reqwest::Method::POST, &path, json!({"content": "+1"}))
        .await;
    let mut who = e.forge.thumbs_up(&e.repo, c.id).await.unwrap();
    who.sort();
    assert_eq!(who, ["alice", "bob"]);

    e.forge.close_issue(&e.repo, issue.number).await.unwrap();
    let v = e
        .call(
            ALICE,
            reqwest::Method::GET,
            &format!("/repos/octo/hello/issues/{}", issue.number),
            Value::Null,
        )
        .await;
    assert_eq!(v["state"], "closed");
    assert!(matches!(
        e.forge.thumbs_up(&e.repo, 999_999).await,
        Err(ForgeError::NotFound(_))
    ));
}

#[tokio::test]
async fn pull_requests_open_ready_merge_close_and_list() {
    let e = env().await;
    let pr = e.open_pr("feature-a", true).await;
    assert!(pr.draft);
    assert_eq!(pr.state, PrState::Open);
    assert!(!pr.node_id.is_empty());
    let got = e.forge.pull_request(&e.repo, pr.number).await.unwrap();
    assert_eq!(got, pr);

    e.forge.mark_ready_for_review(&e.repo, &pr).await.unwrap();
    let ready = e.forge.pull_request(&e.repo, pr.number).await.unwrap();
    assert!(!ready.draft);

    let bogus = mainloop_forge::PullRequest {
        node_id: "PR_doesnotexist".into(),
        ..pr.clone()
    };
    let err = e
        .forge
        .mark_ready_for_review(&e.repo, &bogus)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ForgeError::NotFound(_) | ForgeError::Rejected(_)),
        "{err:?}"
    );

    let other = e.open_pr("feature-b", false).await;
    let listed = e.forge.open_pull_requests(&e.repo, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.number).collect::<Vec<_>>(),
        [other.number, pr.number],
        "newest first"
    );
    assert_eq!(listed[0].head, "feature-b");
    assert_eq!(listed[0].author, "mainloop-bot");
    assert_eq!(
        e.forge.open_pull_requests(&e.repo, 1).await.unwrap().len(),
        1
    );

    // A merge that loses a race on the base is an outcome to retry, not an error.
    e.fake.race_next_merges(1);
    assert!(matches!(
        e.forge.merge_pull_request(&e.repo, pr.number).await,
        Ok(MergeOutcome::Raced(m)) if m.contains("Base branch was modified")
    ));
    assert_eq!(
        e.forge
            .merge_pull_request(&e.repo, pr.number)
            .await
            .unwrap(),
        MergeOutcome::Merged
    );
    assert_eq!(
        e.forge
            .pull_request(&e.repo, pr.number)
            .await
            .unwrap()
            .state,
        PrState::Merged
    );
    e.forge
        .close_pull_request(&e.repo, other.number)
        .await
        .unwrap();
    assert_eq!(
        e.forge
            .pull_request(&e.repo, other.number)
            .await
            .unwrap()
            .state,
        PrState::Closed
    );
    assert!(
        e.forge
            .open_pull_requests(&e.repo, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let commits = e.forge.recent_commits(&e.repo, "main", 5).await.unwrap();
    assert!(!commits.is_empty());
    assert!(commits.len() <= 5);
    assert!(
        commits.iter().any(|c| c.message.contains("feature-a")),
        "{commits:?}"
    );

    // Merging twice is refused as not mergeable; a pull request without commits is
    // rejected with GitHub's words.
    let again = e.forge.merge_pull_request(&e.repo, pr.number).await;
    assert!(
        matches!(again, Ok(MergeOutcome::NotMergeable(_))),
        "{again:?}"
    );
    let empty = e
        .forge
        .open_pull_request(
            &e.repo,
            NewPullRequest {
                head: "main",
                base: "main",
                title: "nothing",
                body: "",
                draft: false,
            },
        )
        .await;
    assert!(matches!(empty, Err(ForgeError::Rejected(_))), "{empty:?}");
    assert!(matches!(
        e.forge.pull_request(&e.repo, 4242).await,
        Err(ForgeError::NotFound(_))
    ));
}

#[tokio::test]
async fn check_runs_none_pending_failed_with_log_then_passed() {
    let e = env().await;
    let sha = e.push_branch("ci", "ci.txt");
    assert_eq!(
        e.forge.ci_status(&e.repo, &sha).await.unwrap(),
        CiStatus::None
    );

    let runs = "/repos/octo/hello/check-runs";
    let build = e
        .call(
            CI,
            reqwest::Method::POST,
            runs,
            json!({"name": "build", "head_sha": sha, "status": "in_progress"}),
        )
        .await;
    let lint = e
        .call(
            CI,
            reqwest::Method::POST,
            runs,
            json!({"name": "lint", "head_sha": sha, "conclusion": "success"}),
        )
        .await;
    assert_eq!(lint["status"], "completed");
    assert_eq!(
        e.forge.ci_status(&e.repo, &sha).await.unwrap(),
        CiStatus::Pending {
            total: 2,
            completed: 1
        }
    );

    let build_id = build["id"].as_u64().unwrap();
    let log: String = (0..2000).map(|i| format!("line {i}\n")).collect::<String>()
        + "error[E0425]: cannot find value `x` — ünïcode\n";
    e.fake
        .attach_job_log("octo", "hello", build_id, &log)
        .unwrap();
    e.call(
        CI,
        reqwest::Method::PATCH,
        &format!("{runs}/{build_id}"),
        json!({"conclusion": "failure"}),
    )
    .await;
    let CiStatus::Failed { total, failures } = e.forge.ci_status(&e.repo, &sha).await.unwrap()
    else {
        panic!("expected a failure")
    };
    assert_eq!(total, 2);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].name, "build");
    assert_eq!(failures[0].conclusion, "failure");
    assert_eq!(failures[0].job_id, Some(build_id));

    let tail = e.forge.job_log_tail(&e.repo, build_id, 60).await.unwrap();
    assert!(tail.len() <= 60);
    assert!(log.ends_with(&tail));
    assert!(tail.ends_with("ünïcode\n"), "{tail:?}");
    let whole = e
        .forge
        .job_log_tail(&e.repo, build_id, 1 << 20)
        .await
        .unwrap();
    assert_eq!(whole, log);
    assert!(matches!(
        e.forge
            .job_log_tail(&e.repo, lint["id"].as_u64().unwrap(), 100)
            .await,
        Err(ForgeError::NotFound(_))
    ));

    // A re-run succeeds: a new commit with green checks.
    let sha2 = e.push_branch("ci2", "ci2.txt");
    for name in ["build", "docs"] {
        let conclusion = if name == "docs" { "skipped" } else { "success" };
        e.call(
            CI,
            reqwest::Method::POST,
            runs,
            json!({"name": name, "head_sha": sha2, "conclusion": conclusion}),
        )
        .await;
    }
    assert_eq!(
        e.forge.ci_status(&e.repo, &sha2).await.unwrap(),
        CiStatus::Passed { total: 2 }
    );
}

#[tokio::test]
async fn feedback_cursors_skip_nothing_between_polls() {
    let e = env().await;
    let pr = e.open_pr("review-me", false).await;
    let n = pr.number;
    let (none, cursor) = e
        .forge
        .feedback_since(&e.repo, n, &FeedbackCursor::default())
        .await
        .unwrap();
    assert!(none.is_empty());

    e.call(
        ALICE,
        reqwest::Method::POST,
        &format!("/repos/octo/hello/issues/{n}/comments"),
        json!({"body": "looks promising"}),
    )
    .await;
    e.call(
        ALICE,
        reqwest::Method::POST,
        &format!("/repos/octo/hello/pulls/{n}/comments"),
        json!({"body": "rename this", "path": "review-me.txt", "line": 1, "side": "RIGHT", "commit_id": pr.head_sha}),
    )
    .await;
    e.call(
        BOB,
        reqwest::Method::POST,
        &format!("/repos/octo/hello/pulls/{n}/reviews"),
        json!({"body": "please add tests", "event": "REQUEST_CHANGES"}),
    )
    .await;
    let (items, cursor) = e.forge.feedback_since(&e.repo, n, &cursor).await.unwrap();
    let kinds: Vec<(FeedbackKind, &str)> =
        items.iter().map(|f| (f.kind, f.author.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (FeedbackKind::Comment, "alice"),
            (FeedbackKind::LineComment, "alice"),
            (FeedbackKind::ChangesRequested, "bob"),
        ]
    );
    assert_eq!(items[1].path.as_deref(), Some("review-me.txt"));
    assert_eq!(items[1].line, Some(1));
    assert_eq!(items[2].body, "please add tests");

    // Unchanged: every source answers 304.
    e.reset_stats().await;
    let (none, same) = e.forge.feedback_since(&e.repo, n, &cursor).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(same.reviews.seen_id, cursor.reviews.seen_id);
    let stats = e.stats().await;
    assert_eq!(stats["requests"], 3, "{stats}");
    assert_eq!(stats["not_modified"], 3, "{stats}");

    // More arrives in every source between two polls; all of it comes back once.
    e.call(
        ALICE,
        reqwest::Method::POST,
        &format!("/repos/octo/hello/pulls/{n}/reviews"),
        json!({"event": "APPROVE"}),
    )
    .await;
    e.call(
        BOB,
        reqwest::Method::POST,
        &format!("/repos/octo/hello/issues/{n}/comments"),
        json!({"body": "ship it"}),
    )
    .await;
    let (items, cursor) = e.forge.feedback_since(&e.repo, n, &same).await.unwrap();
    let kinds: Vec<FeedbackKind> = items.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FeedbackKind::Approved, FeedbackKind::Comment]);
    let (none, _) = e.forge.feedback_since(&e.repo, n, &cursor).await.unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn outages_are_unavailable_and_pass() {
    let e = env().await;
    let pr = e.open_pr("outage", false).await;
    e.fake.set_outage(Some(Outage {
        status: 503,
        requests: Some(1),
    }));
    let err = e.forge.pull_request(&e.repo, pr.number).await.unwrap_err();
    assert!(matches!(err, ForgeError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(
        e.forge
            .pull_request(&e.repo, pr.number)
            .await
            .unwrap()
            .number,
        pr.number
    );

    // Nobody listening at all.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gone = forge_for(&format!("http://127.0.0.1:{port}"), BOT);
    let err = gone.pull_request(&e.repo, 1).await.unwrap_err();
    assert!(matches!(err, ForgeError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn rate_limits_are_reported_and_spared() {
    let e = env().await;
    let pr = e.open_pr("limits", false).await;
    let before = e.forge.rate_limit().unwrap();
    assert_eq!(before.resource, "core");
    assert!(before.remaining > 50);

    // Primary limit exhausted: wait until the reset.
    e.fake.set_rate_limit(RateLimit {
        remaining: 0,
        reset_in_secs: 120,
    });
    let err = e.forge.pull_request(&e.repo, pr.number).await.unwrap_err();
    let ForgeError::RateLimited(wait) = err else {
        panic!("{err:?}")
    };
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(121),
        "{wait:?}"
    );
    assert_eq!(e.forge.rate_limit().unwrap().remaining, 0);

    // Spent quota is spared proactively: no request goes out until the reset.
    e.reset_stats().await;
    let err = e.forge.pull_request(&e.repo, pr.number).await.unwrap_err();
    assert!(matches!(err, ForgeError::RateLimited(_)), "{err:?}");
    assert_eq!(e.stats().await["requests"], 0);

    // A fresh client (no memory of the quota) and a secondary limit with retry-after.
    let fresh = forge_for(&e.fake.base_url(), BOT);
    e.control(reqwest::Method::DELETE, "/_fake/rate-limit", Value::Null)
        .await;
    e.fake.set_secondary_limit(SecondaryLimit {
        retry_after_secs: 30,
        requests: Some(1),
    });
    let err = fresh.pull_request(&e.repo, pr.number).await.unwrap_err();
    assert!(
        matches!(err, ForgeError::RateLimited(d) if d == Duration::from_secs(30)),
        "{err:?}"
    );
    assert_eq!(
        fresh.pull_request(&e.repo, pr.number).await.unwrap().number,
        pr.number
    );

    // Low but not spent: below the reserve of 50, calls stop before being sent.
    e.fake.set_rate_limit(RateLimit {
        remaining: 10,
        reset_in_secs: 600,
    });
    let low = forge_for(&e.fake.base_url(), BOT);
    low.pull_request(&e.repo, pr.number).await.unwrap();
    assert!(low.rate_limit().unwrap().remaining < 10);
    let err = low.pull_request(&e.repo, pr.number).await.unwrap_err();
    assert!(matches!(err, ForgeError::RateLimited(_)), "{err:?}");
}

#[tokio::test]
async fn bad_tokens_are_unauthorized_and_never_shown() {
    let e = env().await;
    let secret = "ghp_wrongwrongwrong";
    let forge = forge_for(&e.fake.base_url(), secret);
    assert!(!format!("{forge:?}").contains(secret));
    let err = forge.pull_request(&e.repo, 1).await.unwrap_err();
    assert!(matches!(err, ForgeError::Unauthorized(_)), "{err:?}");
    assert!(!format!("{err:?} {err}").contains(secret));
    let config = GithubConfig::new(Secret::new(secret));
    assert!(!format!("{config:?}").contains(secret));
}

/// What a tiny server saw: the fake cannot show the headers of its blob downloads.
#[tokio::test]
async fn log_downloads_leave_the_token_behind() {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::routing::get;
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // The storage "host": the same server under another name, so only the origin differs.
    let storage = base.replace("127.0.0.1", "localhost");
    let record = |path: &'static str| {
        move |State(seen): State<Seen>, headers: HeaderMap| async move {
            let auth = headers
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            seen.lock().unwrap().push((path.to_owned(), auth));
        }
    };
    let app = axum::Router::new()
        .route(
            "/repos/o/r/actions/jobs/7/logs",
            get(move |s: State<Seen>, h: HeaderMap| async move {
                record("api")(s, h).await;
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, format!("{storage}/blob?sig=abc"))],
                )
            }),
        )
        .route(
            // Storage on the API's own origin (GitHub Enterprise may do that) gets no
            // token either.
            "/repos/o/r/actions/jobs/8/logs",
            get(move |s: State<Seen>, h: HeaderMap| async move {
                record("api")(s, h).await;
                (StatusCode::FOUND, [(header::LOCATION, "/blob?sig=def")])
            }),
        )
        .route(
            "/blob",
            get(move |s: State<Seen>, h: HeaderMap| async move {
                record("blob")(s, h).await;
                "first line\nlast line\n"
            }),
        )
        .with_state(seen.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let forge = forge_for(&base, BOT);
    let repo = RepoRef {
        owner: "o".into(),
        name: "r".into(),
    };
    let tail = forge.job_log_tail(&repo, 7, 10).await.unwrap();
    assert_eq!(tail, "last line\n");
    let tail = forge.job_log_tail(&repo, 8, 10).await.unwrap();
    assert_eq!(tail, "last line\n");
    let seen = seen.lock().unwrap().clone();
    let api = ("api".to_owned(), Some(format!("Bearer {BOT}")));
    let blob = ("blob".to_owned(), None);
    assert_eq!(seen, [api.clone(), blob.clone(), api, blob]);
}

//! Git over smart HTTP for runners, with the real `git` on both ends: the runner holding
//! a task's lease clones it (Bearer or Basic), sees only the task's branch and its base,
//! cannot fetch another branch's commit by id, pushes to the task branch and nowhere
//! else; a runner without the lease, a revoked one, a user's token and no token are
//! refused; a malformed push body is a 4xx; none of it changes the repository.

use super::{App, Cred, assert_error, json_of, server};
use flate2::Compression;
use flate2::write::GzEncoder;
use mainloop_domain::{RunnerId, TaskId};
use mainloop_test_support::GitRepo;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;

const BRANCH: &str = "mainloop/abc-work";

/// A server, a repository with `main`, the task branch and a `secret` branch (and a
/// tag), a task on it with its run leased to runner A, and runner B with no lease.
struct World {
    app: App,
    repo: GitRepo,
    task: TaskId,
    a: (RunnerId, String),
    b: (RunnerId, String),
    secret: String,
    clones: tempfile::TempDir,
}

impl World {
    async fn new() -> Self {
        let app = server(None).await;
        let repo = GitRepo::new();
        repo.git(&["checkout", "-q", "-b", BRANCH]);
        std::fs::write(repo.path().join("work.txt"), "task work\n").unwrap();
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-q", "-m", "task work"]);
        repo.git(&["checkout", "-q", "-b", "secret", "main"]);
        std::fs::write(repo.path().join("secret.txt"), "not for runners\n").unwrap();
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-q", "-m", "secret"]);
        repo.git(&["tag", "v1"]);
        let secret = repo.git(&["rev-parse", "secret"]).trim().to_owned();
        // The user's checkout stays on `secret`: HEAD must not show it either.

        let (status, task) = app
            .post(
                "/api/tasks",
                json!({"description": "Work on a runner", "repo": repo.path().display().to_string(), "skip_plan": true}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let task: TaskId = task["id"].as_str().unwrap().parse().unwrap();
        app.engine
            .set_task_workspace(task, BRANCH, "/nonexistent/worktree", "main")
            .await
            .unwrap();
        let a = runner(&app, "a").await;
        let b = runner(&app, "b").await;
        assert_eq!(app.engine.lease_run(task, a.0).await.unwrap(), 1);
        Self {
            app,
            repo,
            task,
            a,
            b,
            secret,
            clones: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        self.app.url(&format!("/api/runners/git/{}", self.task))
    }

    /// Every ref of the server's repository with its commit.
    fn refs(&self) -> String {
        self.repo
            .git(&["for-each-ref", "--format=%(refname) %(objectname)"])
    }

    fn rev(&self, name: &str) -> String {
        self.repo.git(&["rev-parse", name]).trim().to_owned()
    }

    fn dir(&self, name: &str) -> std::path::PathBuf {
        self.clones.path().join(name)
    }

    async fn info_refs(&self, cred: Cred<'_>, service: &str) -> (StatusCode, Value, String) {
        let path = format!("/api/runners/git/{}/info/refs?service={service}", self.task);
        let resp = self
            .app
            .request(cred, Method::GET, &path)
            .send()
            .await
            .unwrap();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        // An advertisement is pkt-lines, an error JSON.
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, body, challenge)
    }

    async fn post_rpc(
        &self,
        token: &str,
        service: &str,
        body: Vec<u8>,
        gzip: bool,
    ) -> reqwest::Response {
        let path = format!("/api/runners/git/{}/git-{service}", self.task);
        let mut rb = self
            .app
            .request(Cred::Bearer(token), Method::POST, &path)
            .header(
                "content-type",
                format!("application/x-git-{service}-request"),
            )
            .body(body);
        if gzip {
            rb = rb.header("content-encoding", "gzip");
        }
        rb.send().await.unwrap()
    }
}

async fn runner(app: &App, name: &str) -> (RunnerId, String) {
    let (status, body) = app.post("/api/runners", json!({"name": name})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["runner"]["id"].as_str().unwrap().parse().unwrap(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

/// Runs git in `dir`, isolated from the machine's configuration, never prompting;
/// `bearer` goes in `http.extraHeader` through the environment, never the command line.
async fn git(dir: &Path, bearer: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.args([
        "-c",
        "user.name=runner",
        "-c",
        "user.email=runner@example.com",
    ])
    .args(args)
    .current_dir(dir)
    .env("GIT_CONFIG_NOSYSTEM", "1")
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .env("GIT_TERMINAL_PROMPT", "0")
    .env_remove("GIT_ASKPASS")
    .env_remove("SSH_ASKPASS")
    .kill_on_drop(true);
    if let Some(token) = bearer {
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Bearer {token}"),
            );
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("git finishes in time")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(text)
    }
}

fn pkt(payload: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_git_clone_sees_only_the_task_and_base_and_pushes_only_the_task_branch() {
    let w = World::new().await;
    let token = w.a.1.clone();
    let url = w.url();
    let root = w.clones.path();

    let listed = git(root, Some(&token), &["ls-remote", &url]).await.unwrap();
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    assert_eq!(
        names,
        ["refs/heads/main", &format!("refs/heads/{BRANCH}")],
        "{listed}"
    );
    assert!(!listed.contains(&w.secret), "{listed}");

    git(
        root,
        Some(&token),
        &["clone", "-q", "--branch", BRANCH, &url, "clone"],
    )
    .await
    .unwrap();
    let clone = w.dir("clone");
    assert_eq!(
        std::fs::read_to_string(clone.join("work.txt")).unwrap(),
        "task work\n"
    );
    let remotes = git(&clone, None, &["branch", "-r", "--format=%(refname)"])
        .await
        .unwrap();
    assert_eq!(
        remotes.lines().collect::<Vec<_>>(),
        [
            "refs/remotes/origin/main".to_owned(),
            format!("refs/remotes/origin/{BRANCH}")
        ]
    );
    let tags = git(&clone, None, &["tag"]).await.unwrap();
    assert!(tags.is_empty(), "{tags}");
    // A hidden branch's commit cannot be fetched by its id.
    let by_id = git(&clone, Some(&token), &["fetch", "origin", &w.secret]).await;
    assert!(by_id.is_err(), "{by_id:?}");
    assert!(
        git(&clone, None, &["cat-file", "-e", &w.secret])
            .await
            .is_err()
    );

    // Basic auth, as a credential helper sends it (after the server's challenge).
    let basic = url.replacen("http://", &format!("http://runner:{token}@"), 1);
    git(
        root,
        None,
        &["clone", "-q", "--branch", BRANCH, &basic, "basic"],
    )
    .await
    .unwrap();

    // A push to the task branch lands in the server's repository.
    std::fs::write(clone.join("work.txt"), "more work\n").unwrap();
    git(&clone, None, &["commit", "-q", "-am", "more work"])
        .await
        .unwrap();
    let pushed = git(&clone, None, &["rev-parse", "HEAD"]).await.unwrap();
    git(&clone, Some(&token), &["push", "-q", "origin", BRANCH])
        .await
        .unwrap();
    assert_eq!(w.rev(BRANCH), pushed.trim());

    // So does the task's snapshot of uncommitted work, which is then fetched back.
    let snapshot = mainloop_engine::snapshot_ref(w.task);
    git(
        &clone,
        Some(&token),
        &["push", "-q", "origin", &format!("HEAD~1:{snapshot}")],
    )
    .await
    .unwrap();
    assert_eq!(w.rev(&snapshot), w.rev(&format!("{BRANCH}~1")));
    git(
        &clone,
        Some(&token),
        &["fetch", "-q", "origin", &format!("{snapshot}:refs/got")],
    )
    .await
    .unwrap();

    // Anything else is refused, and changes nothing.
    let before = w.refs();
    let other_task =
        mainloop_engine::snapshot_ref(TaskId::new_v7(mainloop_domain::Timestamp::from_millis(1)));
    for refspec in [
        format!("HEAD:{other_task}"),
        "HEAD:refs/heads/main".to_owned(),
        "HEAD:refs/heads/elsewhere".to_owned(),
        "HEAD:refs/tags/v2".to_owned(),
        format!(":refs/heads/{BRANCH}"),
        "+HEAD:refs/heads/secret".to_owned(),
    ] {
        let refused = git(&clone, Some(&token), &["push", "origin", &refspec]).await;
        let err = refused.expect_err(&refspec);
        assert!(err.contains("403"), "{refspec}: {err}");
        assert_eq!(w.refs(), before, "{refspec}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_git_only_the_lease_holder_with_a_runner_token_gets_in() {
    let w = World::new().await;
    let before = w.refs();
    let (a, b) = (w.a.1.as_str(), w.b.1.as_str());
    let basic = |token: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("x:{token}"))
        )
    };

    let (status, body, _) = w.info_refs(Cred::Bearer(a), "git-upload-pack").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let advertised = body.as_str().unwrap();
    assert!(
        advertised.starts_with("001e# service=git-upload-pack\n0000"),
        "{advertised}"
    );
    let basic_a = basic(a);
    let (status, _, _) = w
        .info_refs(Cred::Header("authorization", &basic_a), "git-receive-pack")
        .await;
    assert_eq!(status, StatusCode::OK);

    // No credential, a user's token (as Bearer or Basic), a wrong token: a challenge.
    let user_basic = basic(&w.app.token);
    let wrong = basic("mlr_not-a-token");
    for cred in [
        Cred::None,
        Cred::Bearer(&w.app.token),
        Cred::Header("authorization", &user_basic),
        Cred::Header("authorization", &wrong),
        Cred::Bearer("mlr_not-a-token"),
    ] {
        let (status, body, challenge) = w.info_refs(cred, "git-upload-pack").await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(challenge, "Basic realm=\"mainloop runners\"");
    }
    // A runner token is nothing anywhere else.
    let (status, body) = w
        .app
        .call(Cred::Bearer(a), Method::GET, "/api/tasks", None)
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    // Runner B holds no lease: the task is not there for it, as an unknown one is not.
    let (status, body, _) = w.info_refs(Cred::Bearer(b), "git-upload-pack").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let unknown = TaskId::new_v7(mainloop_domain::Timestamp::from_millis(1));
    let (status, body) = w
        .app
        .call(
            Cred::Bearer(a),
            Method::GET,
            &format!("/api/runners/git/{unknown}/info/refs?service=git-upload-pack"),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body, _) = w.info_refs(Cred::Bearer(a), "git-archive").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let root = w.clones.path();
    let clone = git(root, Some(b), &["clone", "-q", &w.url(), "b"]).await;
    assert!(clone.is_err(), "{clone:?}");

    // Once the lease moves to B, A is the one shut out.
    git(
        root,
        Some(a),
        &["clone", "-q", "--branch", BRANCH, &w.url(), "a"],
    )
    .await
    .unwrap();
    let a_clone = w.dir("a");
    git(
        &a_clone,
        None,
        &["commit", "-q", "--allow-empty", "-m", "stale"],
    )
    .await
    .unwrap();
    assert_eq!(w.app.engine.lease_run(w.task, w.b.0).await.unwrap(), 2);
    let stale = git(&a_clone, Some(a), &["push", "origin", BRANCH]).await;
    assert!(stale.is_err(), "{stale:?}");
    assert_eq!(w.refs(), before);

    // Revoked, B's token opens nothing, though it still holds the lease.
    let (status, _) = w
        .app
        .call(
            Cred::Bearer(&w.app.token),
            Method::DELETE,
            &format!("/api/runners/{}", w.b.0),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body, _) = w.info_refs(Cred::Bearer(b), "git-receive-pack").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let revoked = git(&a_clone, Some(b), &["push", "origin", BRANCH]).await;
    assert!(revoked.is_err(), "{revoked:?}");
    assert_eq!(w.refs(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_git_malformed_or_overreaching_bodies_are_refused_before_git_sees_them() {
    let w = World::new().await;
    let before = w.refs();
    let token = w.a.1.as_str();
    let main = w.rev("main");
    let task = w.rev(BRANCH);
    let zero = "0".repeat(40);
    let update = |old: &str, new: &str, r: &str| {
        let mut body = pkt(&format!("{old} {new} {r}\0report-status side-band-64k"));
        body.extend_from_slice(b"0000");
        body
    };

    let cases: Vec<(&str, Vec<u8>, bool, StatusCode)> = vec![
        (
            "not pkt-lines",
            b"hello world".to_vec(),
            false,
            StatusCode::BAD_REQUEST,
        ),
        (
            "a delimiter",
            b"0001".to_vec(),
            false,
            StatusCode::BAD_REQUEST,
        ),
        (
            "truncated",
            b"00ff1111".to_vec(),
            false,
            StatusCode::BAD_REQUEST,
        ),
        ("empty", Vec::new(), false, StatusCode::BAD_REQUEST),
        (
            "too long a line",
            b"fff1".to_vec(),
            false,
            StatusCode::BAD_REQUEST,
        ),
        (
            "not a command",
            [pkt("hello\n"), b"0000".to_vec()].concat(),
            false,
            StatusCode::BAD_REQUEST,
        ),
        ("not gzip", b"0000".to_vec(), true, StatusCode::BAD_REQUEST),
        (
            "another branch",
            update(&task, &main, "refs/heads/main"),
            false,
            StatusCode::FORBIDDEN,
        ),
        (
            "a deletion",
            update(&task, &zero, &format!("refs/heads/{BRANCH}")),
            false,
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, body, gzip, want) in cases {
        let resp = w.post_rpc(token, "receive-pack", body, gzip).await;
        let (status, body) = json_of(resp).await;
        assert_eq!(status, want, "{what}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
        assert_eq!(w.refs(), before, "{what}");
    }
    let (status, body) = json_of(
        w.post_rpc(token, "upload-pack", b"zzzz".to_vec(), false)
            .await,
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    // A gzip request, as git sends a large negotiation, is read like a plain one.
    let mut request = pkt(&format!("want {main} side-band-64k ofs-delta\n"));
    request.extend_from_slice(b"0000");
    request.extend_from_slice(&pkt("done\n"));
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&request).unwrap();
    let resp = w
        .post_rpc(token, "upload-pack", gz.finish().unwrap(), true)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/x-git-upload-pack-result"
    );
    let pack = resp.bytes().await.unwrap();
    assert!(pack.windows(4).any(|w| w == b"PACK"), "{pack:?}");
    // The secret's commit, asked for by id, is refused by git itself.
    let mut request = pkt(&format!("want {} side-band-64k\n", w.secret));
    request.extend_from_slice(b"0000");
    request.extend_from_slice(&pkt("done\n"));
    let resp = w.post_rpc(token, "upload-pack", request, false).await;
    let answer = resp.bytes().await.unwrap_or_default();
    assert!(!answer.windows(4).any(|w| w == b"PACK"), "{answer:?}");
    assert_eq!(w.refs(), before);
}

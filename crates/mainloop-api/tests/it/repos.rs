//! Hostile repository names given to `POST /api/tasks`, with the real worker runtime and
//! git behind the API: whatever the name, no command runs, nothing is cloned or checked
//! out, the agent never starts, and the user is told why.

use super::{App, Setup, app_from};
use mainloop_agent::{Agent, AgentError, AgentSession, Placement, RunSpec};
use mainloop_git::Git;
use mainloop_worker::{Runtime, WorkerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// An agent that counts the times it is asked to start, and never does.
#[derive(Debug, Default)]
struct NoAgent {
    starts: AtomicUsize,
}

impl Agent for NoAgent {
    fn name(&self) -> &str {
        "none"
    }

    fn start(
        &self,
        _spec: RunSpec,
        _placement: &dyn Placement,
    ) -> Result<Box<dyn AgentSession>, AgentError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Err(AgentError::Spawn("this test's agent never runs".into()))
    }
}

fn git(cwd: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// Entries in a directory; none if it does not exist.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until the task has failed, and returns it.
async fn failed(app: &App, id: &str) -> Value {
    super::eventually(&format!("task {id} to fail"), async || {
        let (_, task) = app.get(&format!("/api/tasks/{id}")).await;
        (task["state"] == "failed").then_some(task)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_repositories_run_nothing_and_create_nothing() {
    let app = app_from(Setup {
        start: false,
        ..Setup::default()
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let outside = std::fs::canonicalize(outside.path()).unwrap();
    // A real repository, a subdirectory of it, a plain directory, and symlinks to them.
    let repo = outside.join("repo");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let plain = outside.join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::os::unix::fs::symlink("/etc", outside.join("to-etc")).unwrap();
    std::os::unix::fs::symlink(repo.join("sub"), outside.join("to-sub")).unwrap();
    let marker = outside.join("pwned");
    let tmp_x = Path::new("/tmp/x");
    let tmp_x_existed = tmp_x.exists();

    let agent = Arc::new(NoAgent::default());
    let runtime = Runtime::new(
        app.engine.clone(),
        agent.clone(),
        // File URLs are off, as they are by default; local repositories must be in
        // `outside` (workers.repo_roots).
        Git::new(data.path().join("repos"), data.path().join("worktrees"))
            .with_repo_roots(vec![outside.clone()]),
        WorkerConfig {
            max_agents: 4,
            labels: std::collections::BTreeSet::new(),
            runner_grace: std::time::Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            inactivity_timeout: Duration::from_secs(60),
            api_retries: 0,
            api_retry_delay: Duration::from_secs(1),
            check_timeout: Duration::from_secs(60),
            check_output_bytes: 16 * 1024,
            model: None,
            agent_env: Vec::new(),
            plans_dir: data.path().join("home/.claude/plans"),
            pid_dir: data.path().join("agents"),
            forge: None,
            port_range: mainloop_worker::DEFAULT_PORT_RANGE,
            task_databases: None,
            retention: mainloop_engine::Retention::default(),
            launcher: None,
            sandbox: None,
        },
    );
    runtime.install();
    app.engine.start(app.shutdown.clone()).await.unwrap();
    drop(runtime.spawn(app.shutdown.clone()));

    let at = |p: &Path| p.display().to_string();
    let m = at(&marker);
    // (repo, what the failure must say); "" for names refused before a task exists:
    // relative paths (they would depend on the server's working directory), paths
    // outside the roots (also through a symlink or `..`), paths that do not exist,
    // every transport trick and control character.
    let not_a_repo = "is not a git repository";
    let cases: Vec<(String, &str)> = vec![
        ("../../etc".into(), ""),
        (".".into(), ""),
        ("acme/widgets".into(), ""),
        ("/etc".into(), ""),
        (format!("{}/../..", at(&outside)), ""),
        (at(&outside.join("to-etc")), ""),
        (at(&outside.join("missing")), ""),
        (at(&plain), not_a_repo),
        (at(&repo.join("sub")), not_a_repo),
        (at(&outside.join("to-sub")), not_a_repo),
        (format!("file://{}", at(&repo)), ""),
        (format!("ext::sh -c touch% {m}"), ""),
        ("ext::sh -c touch /tmp/x".into(), ""),
        ("fd::3".into(), ""),
        (format!("--upload-pack=touch {m}"), ""),
        ("--upload-pack=touch /tmp/x".into(), ""),
        (format!("ssh://-oProxyCommand=touch {m}/x"), ""),
        ("ssh://-oProxyCommand=touch%20/tmp/x/y".into(), ""),
        ("git@-oProxyCommand=touch:x".into(), ""),
        ("git@host:-oProxyCommand=x".into(), ""),
        ("http://127.0.0.1:1/a.git".into(), ""),
        ("git://127.0.0.1:1/a.git".into(), ""),
        ("https://example.com/a b.git".into(), ""),
        (
            format!("https://example.com/a\n--upload-pack=touch {m}"),
            "",
        ),
        ("https://example.com/a\r.git".into(), ""),
        ("https://example.com/\t.git".into(), ""),
        ("https://example.com/a\0.git".into(), ""),
        // An ssh URL to any host is a legitimate repository; this one cannot be reached.
        (
            "ssh://git@127.0.0.1:1/a.git".into(),
            "could not prepare the workspace",
        ),
    ];

    // The worker moves tasks along meanwhile; which tasks exist is what must not change.
    let task_ids = async || -> Vec<Value> {
        let (_, list) = app.get("/api/tasks").await;
        list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].clone())
            .collect()
    };
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (repo, reason) in &cases {
        let before = task_ids().await;
        let (status, body) = app
            .post(
                "/api/tasks",
                json!({"description": "hostile repository", "repo": repo, "skip_plan": true}),
            )
            .await;
        if reason.is_empty() {
            assert!(status.is_client_error(), "{repo:?}: {status} {body}");
            assert!(body["error"]["message"].is_string(), "{body}");
            assert_eq!(task_ids().await, before, "{repo:?}");
            refused += 1;
        } else {
            // The API takes a repository as a name; the worker judges it.
            assert_eq!(status, StatusCode::CREATED, "{repo:?}: {body}");
            accepted.push((body["id"].as_str().unwrap().to_owned(), repo, *reason));
        }
    }
    for (id, repo, reason) in &accepted {
        let task = failed(&app, id).await;
        let error = task["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{repo:?} failed with {error:?}");
        assert_eq!(task["worktree"], Value::Null, "{repo:?}");
        assert_eq!(task["branch"], Value::Null, "{repo:?}");
    }
    // The user hears of every one in the inbox.
    let (_, inbox) = app.get("/api/inbox").await;
    let failures = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "failed")
        .count();
    assert_eq!(failures, accepted.len());

    assert_eq!(agent.starts.load(Ordering::SeqCst), 0, "an agent started");
    assert!(!marker.exists(), "a command ran");
    if !tmp_x_existed {
        assert!(!tmp_x.exists(), "a command ran");
    }
    // Nothing was cloned or checked out; the repository pointed into is untouched.
    assert_eq!(entries(&data.path().join("repos")), Vec::<String>::new());
    assert_eq!(
        entries(&data.path().join("worktrees")),
        Vec::<String>::new()
    );
    let branches = std::process::Command::new("git")
        .args(["for-each-ref", "--format=%(refname)"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&branches.stdout), "");
    assert_eq!(
        entries(&outside),
        ["plain", "repo", "to-etc", "to-sub"].map(str::to_owned),
        "only what the test made"
    );
    assert_eq!(accepted.len(), 4);
    assert_eq!(refused, cases.len() - accepted.len());
}

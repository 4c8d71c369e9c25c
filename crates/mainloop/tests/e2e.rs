//! The real `mainloop` binary, started and killed as a user (or a crash) would: chat
//! through the fake model, SIGKILL mid-turn, restarts, and the CLI commands.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use mainloop_fake_anthropic::{FakeAnthropic, Script};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mainloop");

fn command(data: &Path, model_url: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", data)
        .env("MAINLOOP_DATA_DIR", data)
        .env("MAINLOOP_LOG__FILTER", "warn")
        .env("MAINLOOP_DISPATCHER__BACKOFF_BASE_MS", "50")
        .env("MAINLOOP_DISPATCHER__BACKOFF_MAX_MS", "200");
    if let Some(url) = model_url {
        cmd.env("ANTHROPIC_BASE_URL", url)
            .env("ANTHROPIC_API_KEY", "sk-planted-secret-4242");
    }
    cmd
}

struct Server {
    child: Child,
    base: String,
    token: Option<String>,
}

impl Server {
    fn start(data: &Path, model_url: Option<&str>) -> Self {
        Self::spawn(command(data, model_url))
    }

    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut token = None;
        let base = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if line.starts_with("created the owner") {
                token = Some(lines.next().unwrap().unwrap());
            } else if let Some(addr) = line.strip_prefix("mainloop listening on ") {
                break addr.to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, base, token }
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(base: &str, token: &str, path: &str) -> Value {
    let r = client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().await.unwrap()
}

async fn post(base: &str, token: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn messages(base: &str, token: &str) -> Vec<Value> {
    get(
        base,
        token,
        "/api/chat/messages?limit=200&include_tool_results=true",
    )
    .await["messages"]
        .as_array()
        .unwrap()
        .clone()
}

/// The finished assistant replies to one user message.
async fn replies(base: &str, token: &str, message_id: &str) -> Vec<Value> {
    messages(base, token)
        .await
        .into_iter()
        .filter(|m| {
            m["role"] == "assistant"
                && m["turn_id"] == message_id
                && m["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|b| b["type"] != "tool_use")
        })
        .collect()
}

async fn wait_reply(base: &str, token: &str, message_id: &str) -> Value {
    for _ in 0..400 {
        if let Some(r) = replies(base, token, message_id).await.pop() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no reply to {message_id}");
}

const SCRIPT: &str = r#"
rules:
  - name: propose
    match: {user_contains: "flaky test", times: 1}
    reply: [{text: "I can spawn a worker to fix the flaky test in /src/app. Shall I?"}]
  - name: spawn
    match: {user_contains: "yes please"}
    reply:
      - {text: "On it."}
      - tool_use: {name: spawn_task, input: {description: "Fix the flaky test in tests/login.rs", repo: "/src/app"}}
  - name: spawned
    match: {tool_result_for: spawn_task}
    reply: [{text: "Spawned the worker."}]
  - name: slow
    match: {user_contains: "take your time"}
    delay_ms: 150
    reply: [{text: "A slow and careful answer."}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_spawns_a_task_and_everything_survives_sigkill() {
    let fake = FakeAnthropic::start(Script::from_yaml(SCRIPT).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), Some(&fake.base_url()));
    let token = server.token.clone().expect("first start prints the token");
    let base = server.base.clone();

    let health = client()
        .get(format!("{base}/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");

    let (status, body) = post(
        &base,
        &token,
        "/api/chat",
        json!({"text": "the flaky test in /src/app again"}),
    )
    .await;
    assert_eq!(status, 202);
    let ask = body["message_id"].as_str().unwrap().to_owned();
    let proposal = wait_reply(&base, &token, &ask).await;
    assert!(proposal["text"].as_str().unwrap().contains("Shall I?"));
    assert!(
        get(&base, &token, "/api/tasks").await["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let (_, body) = post(&base, &token, "/api/chat", json!({"text": "yes please"})).await;
    let yes = body["message_id"].as_str().unwrap().to_owned();
    let done = wait_reply(&base, &token, &yes).await;
    assert_eq!(done["text"], "Spawned the worker.");

    let tasks = get(&base, &token, "/api/tasks").await["tasks"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["state"], "queued");
    assert_eq!(tasks[0]["repo"], "/src/app");
    let task_id = tasks[0]["id"].as_str().unwrap().to_owned();
    let thread = messages(&base, &token).await;
    assert!(
        thread
            .iter()
            .any(|m| m["role"] == "event" && m["task_id"] == task_id.as_str())
    );
    let task = get(&base, &token, &format!("/api/tasks/{task_id}")).await;
    for field in [
        "id",
        "state",
        "description",
        "repo",
        "branch",
        "questions",
        "plan",
        "cost_usd",
        "created_at",
        "updated_at",
    ] {
        assert!(task.get(field).is_some(), "task has {field}");
    }

    // Crash and come back: the conversation and the task are all there.
    server.sigkill();
    let server = Server::start(data.path(), Some(&fake.base_url()));
    assert!(server.token.is_none(), "the owner already exists");
    // Everything said before the crash is still there, in order (workers may have
    // added updates since: the task's repository does not exist, so it fails).
    let after = messages(&server.base, &token).await;
    assert_eq!(after[..thread.len()], thread[..]);
    assert_eq!(
        get(&server.base, &token, "/api/tasks").await["tasks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_but_not_answered_is_answered_once_after_sigkill() {
    let fake = FakeAnthropic::start(Script::from_yaml(SCRIPT).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), Some(&fake.base_url()));
    let token = server.token.clone().unwrap();

    let (status, body) = post(
        &server.base,
        &token,
        "/api/chat",
        json!({"text": "take your time"}),
    )
    .await;
    assert_eq!(status, 202, "stored");
    let id = body["message_id"].as_str().unwrap().to_owned();
    // The fake streams slowly; kill the server before the reply can be stored.
    server.sigkill();
    assert!(
        fake.message_requests().len() <= 1,
        "at most the one interrupted model call so far"
    );

    let server = Server::start(data.path(), Some(&fake.base_url()));
    let reply = wait_reply(&server.base, &token, &id).await;
    assert_eq!(reply["text"], "A slow and careful answer.");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        replies(&server.base, &token, &id).await.len(),
        1,
        "answered exactly once"
    );
    let user_messages = messages(&server.base, &token)
        .await
        .into_iter()
        .filter(|m| m["role"] == "user")
        .count();
    assert_eq!(user_messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_token_users_config_and_safety_checks() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = command(data.path(), Some("http://127.0.0.1:9"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, token, _) = run(&["token"]);
    assert!(ok);
    let token = token.trim().to_owned();
    assert!(token.starts_with("mlt_"));
    assert_eq!(run(&["token"]).1.trim(), token, "stable across calls");

    let (ok, out, _) = run(&["user", "add", "bob"]);
    assert!(ok, "{out}");
    let bob = out.lines().last().unwrap().trim().to_owned();
    assert!(!run(&["user", "add", "bob"]).0, "duplicate user refused");
    assert!(run(&["user", "list"]).1.contains("bob"));

    let (ok, config, _) = run(&["print-config"]);
    assert!(ok);
    assert!(config.contains("[redacted]"), "{config}");
    assert!(!config.contains("sk-planted-secret-4242"), "{config}");

    assert!(run(&["migrate"]).0);

    // Bob's token works against a running server and sees nothing of the owner's.
    let server = Server::start(data.path(), None);
    let me = get(&server.base, &bob, "/api/auth/me").await;
    assert_eq!(me["name"], "bob");
    assert!(
        get(&server.base, &bob, "/api/tasks").await["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = client()
        .get(format!("{}/api/tasks", server.base))
        .bearer_auth("mlt_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The embedded web app: `/` is its HTML with the CSP, a client-side route falls back
    // to the same page, and `/api` keeps its JSON 404.
    let page = |path: &'static str| {
        let url = format!("{}{path}", server.base);
        async move { client().get(url).send().await.unwrap() }
    };
    let root = page("/").await;
    assert_eq!(root.status(), 200);
    assert!(
        root.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = root.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = root.text().await.unwrap();
    assert!(html.contains("<div id=\"app\">"), "{html}");
    let inbox = page("/inbox").await;
    assert_eq!(inbox.status(), 200);
    assert_eq!(inbox.text().await.unwrap(), html);
    let missing = page("/api/no-such-route").await;
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("\"not_found\""));

    // A second server on the same data directory is refused.
    let (ok, _, err) = {
        let out = command(data.path(), None)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::new(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(!ok);
    assert!(err.contains("another mainloop server"), "{err}");
    drop(server);

    // Listening beyond loopback without auth is refused.
    let out = command(data.path(), None)
        .env("MAINLOOP_AUTH__ENABLED", "false")
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing"));
}

/// Whether `pid` runs (a zombie waiting for init to reap it does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

fn claude_path() -> Option<std::path::PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/claude");
    if p.exists() {
        Some(p)
    } else {
        // CI installs it (`npm ci` in scripts/test); there a missing CLI is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing",
            p.display()
        );
        eprintln!("skipping: {} is missing (run `npm ci`)", p.display());
        None
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_with_workers(data: &Path, fake: &FakeAnthropic, claude: &Path) -> Server {
    let mut cmd = command(data, Some(&fake.base_url()));
    cmd.env("MAINLOOP_WORKERS__CLAUDE_COMMAND", claude)
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    Server::spawn(cmd)
}

const LONG_JOB: &str = r##"
rules:
  - name: relaunched
    match: {user_contains: "mainloop restarted"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'done\\n' > result.txt", description: "Finish"}}
  - name: first-step
    match: {user_contains: "long job", times: 1}
    reply:
      - tool_use: {name: Bash, input: {command: "echo step one", description: "Start"}}
  - name: slow-work
    match: {tool_result_for: Bash, tool_result_contains: "step one", times: 1}
    delay_ms: 500
    reply:
      - text: "Step one is done; now a long piece of work: step two, step three, step four."
  - name: started-again
    match: {user_contains: "long job"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'done\\n' > result.txt", description: "Finish"}}
  - name: finish
    match: {tool_result_for: Bash}
    reply: [{text: "Finished after the restart."}]
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_mid_implementation_finishes_after_restart() {
    let Some(claude) = claude_path() else { return };
    let fake = FakeAnthropic::start(Script::from_yaml(LONG_JOB).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("README.md"), "x\n").unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "init"]);

    let server = start_with_workers(data.path(), &fake, &claude);
    let token = server.token.clone().unwrap();
    let (status, task) = post(
        &server.base,
        &token,
        "/api/tasks",
        json!({"description": "long job", "repo": repo.path(), "skip_plan": true}),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();

    // Kill the server while the agent is mid-reply.
    for _ in 0..400 {
        if fake
            .message_requests()
            .iter()
            .any(|r| r.rule_name.as_deref() == Some("slow-work"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let before = get(&server.base, &token, &format!("/api/tasks/{id}")).await;
    assert_eq!(before["state"], "implementing");
    let record = std::fs::read_to_string(data.path().join("agents").join(&id)).unwrap();
    let orphan: u32 = record.split_whitespace().next().unwrap().parse().unwrap();
    server.sigkill();
    assert!(alive(orphan), "the agent outlived the server");

    let server = start_with_workers(data.path(), &fake, &claude);
    let mut state = Value::Null;
    for _ in 0..600 {
        state = get(&server.base, &token, &format!("/api/tasks/{id}")).await;
        if state["state"] == "review" || state["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["state"], "review", "{state}");
    assert!(
        !alive(orphan),
        "the restarted server stopped the orphaned agent"
    );
    assert_eq!(
        state["session_id"], before["session_id"],
        "the same session was resumed"
    );
    let rules: Vec<_> = fake
        .message_requests()
        .into_iter()
        .filter_map(|r| r.rule_name)
        .collect();
    let transcript = get(&server.base, &token, &format!("/api/tasks/{id}/transcript")).await;
    // The session was saved (a tool call had completed), so it is resumed and told to
    // continue rather than given the task again.
    assert!(
        rules.contains(&"relaunched".to_owned()),
        "{rules:?} {transcript:#}"
    );
    assert!(!rules.contains(&"started-again".to_owned()), "{rules:?}");
    let diff = get(&server.base, &token, &format!("/api/tasks/{id}/diff")).await;
    assert!(diff["text"].as_str().unwrap().contains("+done"), "{diff}");
    let transcript = get(&server.base, &token, &format!("/api/tasks/{id}/transcript")).await;
    assert!(!transcript["entries"].as_array().unwrap().is_empty());
}

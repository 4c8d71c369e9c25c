//! The real `mainloop` binary, started and killed as a user (or a crash) would: chat
//! through the fake model, SIGKILL mid-turn, restarts, the CLI commands, and
//! infrastructure faults (PostgreSQL restarted or refusing writes, SQLite locked by
//! another process or on a full disk, the model API and GitHub misbehaving).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use mainloop_fake_anthropic::{FakeAnthropic, Script};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
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

    fn spawn(cmd: Command) -> Self {
        Self::spawn_logging_to(cmd, Stdio::inherit())
    }

    /// Like [`Server::spawn`], with the server's log (stderr) sent to `log`.
    fn spawn_logging_to(mut cmd: Command, log: Stdio) -> Self {
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(log)
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
    // The task's repository must exist to be accepted; it is not a git repository, so
    // the worker fails the task, which is not what this test is about.
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path().display().to_string();
    let fake = FakeAnthropic::start(Script::from_yaml(&SCRIPT.replace("/src/app", &repo)).unwrap())
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
    assert_eq!(tasks[0]["repo"], repo.as_str());
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
    // added updates since: the task's repository is not one, so it fails).
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
    let path = std::env::var_os("PATH");
    if mainloop_sandbox::which("bwrap", path.as_deref()).is_some() {
        // A sandboxed agent dies with the server that started it (bubblewrap's
        // --die-with-parent): nothing is left running unsupervised.
        for _ in 0..100 {
            if !alive(orphan) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!alive(orphan), "the sandboxed agent died with the server");
    } else {
        // Unsandboxed, it outlives the server, and the restart must reap it.
        assert!(alive(orphan), "the agent outlived the server");
    }

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

// ---------------------------------------------------------------------------------
// GitHub: the lifecycle against the fake GitHub (REST wire format, bare git remote),
// with the real binary, the real claude CLI and the fake model.

const GH_SCRIPT: &str = r##"
rules:
  - name: fix-ci
    match: {user_contains: "checks failed"}
    reply:
      - text: "Fixing CI."
      - tool_use: {name: Bash, input: {command: "date +%s%N > ci-fix.txt", description: "Fix CI"}}
  - name: review-fix
    match: {user_contains: "reviewer asked for changes"}
    reply:
      - text: "Addressing the review."
      - tool_use: {name: Bash, input: {command: "printf 'hello, reviewed\\n' > greeting.txt", description: "Apply the review"}}
  - name: answered-after-resume
    match: {user_contains: "Answers to your questions"}
    reply:
      - tool_use:
          name: Write
          input: {file_path: "{{plan_file}}", content: "# Plan\n\nA greeter.\n"}
  - name: approved-after-resume
    match: {user_contains: "Your plan was approved"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'hello\\n' > greeting.txt", description: "Write the greeting"}}
  - name: restarted
    match: {user_contains: "mainloop restarted"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'hello\\n' > greeting.txt", description: "Write the greeting"}}
  - name: ask
    match: {user_contains: "build the greeter", tool_offered: AskUserQuestion}
    reply:
      - tool_use:
          name: AskUserQuestion
          input:
            questions:
              - question: "Which language?"
                header: "Language"
                options:
                  - {label: "Rust", description: "fast"}
                  - {label: "Go", description: "simple"}
                multiSelect: false
              - question: "Which extras?"
                header: "Extras"
                options:
                  - {label: "Tests", description: "unit tests"}
                  - {label: "Docs", description: "a README"}
                multiSelect: true
  - name: write-plan
    match: {tool_result_for: AskUserQuestion}
    reply:
      - tool_use:
          name: Write
          input: {file_path: "{{plan_file}}", content: "# Plan\n\nA greeter.\n"}
  - name: exit-plan
    match: {tool_result_for: Write, tool_result_contains: "/.claude/plans/"}
    reply:
      - tool_use: {name: ExitPlanMode, input: {}}
  - name: implement
    match: {tool_result_for: ExitPlanMode, tool_result_contains: "User has approved your plan"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'hello\\n' > greeting.txt", description: "Write the greeting"}}
  - name: just-do-it
    match: {user_contains: "quick fix"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'quick\\n' > quick.txt", description: "Quick fix"}}
  - name: done
    match: {tool_result_for: Bash}
    reply:
      - text: "Done."
"##;

const BOT: &str = "bot-token";
const ALICE: &str = "alice-token";
const MALLORY: &str = "mallory-token";
const HOOK_SECRET: &str = "hook-secret-31337";

struct Gh {
    fake: mainloop_fake_github::FakeGithub,
    base: String,
}

impl Gh {
    async fn start(root: &Path) -> Self {
        let fake = mainloop_fake_github::FakeGithub::start(mainloop_fake_github::Config::new(
            root,
            &[
                (BOT, "mainloop-bot"),
                (ALICE, "alice"),
                (MALLORY, "mallory"),
            ],
        ))
        .await
        .unwrap();
        fake.create_repo("octo", "app", "main").await.unwrap();
        let base = fake.base_url();
        Self { fake, base }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.call_as(ALICE, method, path, body).await
    }

    async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut rb = client()
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("user-agent", "e2e");
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let v = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Comments on issue/PR `n` (none while it does not exist yet).
    async fn comments(&self, n: u64) -> Vec<Value> {
        let r = client()
            .get(format!(
                "{}/repos/octo/app/issues/{n}/comments?per_page=100",
                self.base
            ))
            .header("authorization", format!("Bearer {ALICE}"))
            .header("user-agent", "e2e")
            .send()
            .await
            .unwrap();
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Vec::new();
        }
        r.json::<Value>().await.unwrap().as_array().unwrap().clone()
    }

    /// Waits for a comment on issue/PR `n` containing `needle`; returns it.
    async fn wait_comment(&self, n: u64, needle: &str) -> Value {
        for _ in 0..600 {
            if let Some(c) = self
                .comments(n)
                .await
                .into_iter()
                .find(|c| c["body"].as_str().unwrap_or_default().contains(needle))
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no comment containing {needle:?} on #{n}: {:?}",
            self.comments(n).await
        );
    }

    async fn pr(&self, n: u64) -> Value {
        let r = client()
            .get(format!("{}/repos/octo/app/pulls/{n}", self.base))
            .header("authorization", format!("Bearer {ALICE}"))
            .header("user-agent", "e2e")
            .send()
            .await
            .unwrap();
        r.json().await.unwrap_or(Value::Null)
    }

    /// Waits until PR `n`'s head differs from `old`; returns the new head sha.
    async fn wait_push(&self, n: u64, old: Option<&str>) -> String {
        for _ in 0..600 {
            let sha = self.pr(n).await["head"]["sha"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if !sha.is_empty() && Some(sha.as_str()) != old {
                return sha;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("PR #{n} was not pushed to");
    }

    /// Reports a completed check run on `sha`, with a job log when it failed.
    async fn ci(&self, sha: &str, conclusion: &str) {
        let run = self
            .post(
                "/repos/octo/app/check-runs",
                json!({"name": "build", "head_sha": sha, "status": "completed", "conclusion": conclusion}),
            )
            .await;
        if conclusion == "failure" {
            self.fake
                .attach_job_log(
                    "octo",
                    "app",
                    run["id"].as_u64().unwrap(),
                    "compiling...\nerror[E0308]: mismatched types in src/main.rs\n",
                )
                .unwrap();
        }
    }
}

/// What every GitHub test runs against: a temp dir, the fake GitHub with `octo/app`,
/// the fake model with [`GH_SCRIPT`], and the claude CLI (`None`: not installed here).
async fn github_world() -> Option<(tempfile::TempDir, Gh, FakeAnthropic, std::path::PathBuf)> {
    let claude = claude_path()?;
    let dir = tempfile::tempdir().unwrap();
    let gh = Gh::start(&dir.path().join("github")).await;
    let fake = FakeAnthropic::bind(
        "127.0.0.1:0".parse().unwrap(),
        Script::from_yaml(GH_SCRIPT).unwrap(),
    )
    .await
    .unwrap();
    Some((dir, gh, fake, claude))
}

fn start_with_github(data: &Path, fake: &FakeAnthropic, claude: &Path, gh: &Gh) -> Server {
    start_with_github_env(data, fake, claude, gh, &[])
}

fn start_with_github_env(
    data: &Path,
    fake: &FakeAnthropic,
    claude: &Path,
    gh: &Gh,
    extra: &[(&str, &str)],
) -> Server {
    Server::spawn(github_command(data, fake, claude, gh, extra))
}

fn github_command(
    data: &Path,
    fake: &FakeAnthropic,
    claude: &Path,
    gh: &Gh,
    extra: &[(&str, &str)],
) -> Command {
    let mut cmd = command(data, Some(&fake.base_url()));
    cmd.envs(extra.iter().copied());
    cmd.env("MAINLOOP_WORKERS__CLAUDE_COMMAND", claude)
        .env("MAINLOOP_WORKERS__ALLOW_FILE_URLS", "true")
        .env("GITHUB_TOKEN", BOT)
        .env("GITHUB_API_URL", &gh.base)
        .env(
            "MAINLOOP_GITHUB__GIT_URL",
            format!(
                "file://{}/{{owner}}/{{name}}.git",
                gh.fake
                    .repo_path("octo", "app")
                    .parent()
                    .unwrap()
                    .parent()
                    .unwrap()
                    .display()
            ),
        )
        .env("MAINLOOP_GITHUB__POLL_INTERVAL_SECS", "1")
        .env("MAINLOOP_GITHUB__CI_APPEAR_TIMEOUT_SECS", "3")
        .env("MAINLOOP_GITHUB__WEBHOOK_SECRET", HOOK_SECRET)
        .env("MAINLOOP_GITHUB__TRUSTED_USERS", "alice")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    cmd
}

async fn wait_task_state(base: &str, token: &str, id: &str, state: &str) -> Value {
    for _ in 0..900 {
        let t = get(base, token, &format!("/api/tasks/{id}")).await;
        if t["state"] == state {
            return t;
        }
        assert!(
            !(t["state"] == "failed" && state != "failed"),
            "task failed while waiting for {state}: {}",
            t["error"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "task {id} never reached {state}: {}",
        get(base, token, &format!("/api/tasks/{id}")).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_plan_issue_reaction_draft_pr_ci_loop_review_and_merge() {
    let Some((dir, gh, fake, claude)) = github_world().await else {
        return;
    };
    let data = dir.path().join("data");
    let server = start_with_github(&data, &fake, &claude, &gh);
    let token = server.token.clone().unwrap();
    let base = server.base.clone();

    // A task on octo/app gets a labelled plan issue, and its questions appear there.
    let (status, task) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "build the greeter", "repo": "https://github.com/octo/app"}),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    assert_eq!(task["repo"], "octo/app");
    let questions = gh.wait_comment(1, "The worker has questions").await;
    assert!(
        questions["body"]
            .as_str()
            .unwrap()
            .contains("*(choose any)*")
    );
    let issue = gh.get("/repos/octo/app/issues/1").await;
    assert_eq!(issue["labels"][0]["name"], "mainloop");
    assert_eq!(issue["title"], "build the greeter");

    // Answered on GitHub (one of them a multi-select); a bad attempt is explained first.
    gh.post(
        "/repos/octo/app/issues/1/comments",
        json!({"body": "1: Rust"}),
    )
    .await;
    gh.wait_comment(1, "missing: 2").await;
    gh.post(
        "/repos/octo/app/issues/1/comments",
        json!({"body": "Here you go:\n1: Rust\n2: 1, docs"}),
    )
    .await;
    gh.wait_comment(1, "Thanks @alice").await;
    let t = wait_task_state(&base, &token, &id, "waiting_plan_review").await;
    assert_eq!(
        t["answers"],
        json!({"q1": ["Rust"], "q2": ["Tests", "Docs"]})
    );

    // The plan is posted; a 👍 on it approves.
    let plan = gh.wait_comment(1, "The worker's plan").await;
    let plan_id = plan["id"].as_u64().unwrap();
    // A stranger cannot approve it, by comment or by reaction.
    gh.call_as(
        MALLORY,
        reqwest::Method::POST,
        "/repos/octo/app/issues/1/comments",
        Some(json!({"body": "/approve"})),
    )
    .await;
    gh.call_as(
        MALLORY,
        reqwest::Method::POST,
        &format!("/repos/octo/app/issues/comments/{plan_id}/reactions"),
        Some(json!({"content": "+1"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get(&base, &token, &format!("/api/tasks/{id}")).await["state"],
        "waiting_plan_review"
    );
    gh.post(
        &format!("/repos/octo/app/issues/comments/{plan_id}/reactions"),
        json!({"content": "+1"}),
    )
    .await;
    gh.wait_comment(1, "approved by @alice's 👍").await;

    // Implemented, pushed, and a draft PR that closes the issue.
    gh.wait_comment(1, "Draft pull request").await;
    let pr = gh.pr(2).await;
    assert_eq!(pr["draft"], true);
    assert!(pr["body"].as_str().unwrap().contains("Closes #1"));
    let mut sha = gh.wait_push(2, None).await;
    wait_task_state(&base, &token, &id, "checking").await;

    // CI fails twice (the agent gets the log tail each time), then passes.
    for round in 1..=2 {
        gh.ci(&sha, "failure").await;
        gh.wait_comment(2, "CI failed").await;
        sha = gh.wait_push(2, Some(&sha)).await;
        let transcript = get(
            &base,
            &token,
            &format!("/api/tasks/{id}/transcript?limit=1000"),
        )
        .await;
        assert!(
            transcript.to_string().contains("mismatched types"),
            "round {round}: the failing job's log reached the agent"
        );
    }
    gh.ci(&sha, "success").await;
    wait_task_state(&base, &token, &id, "review").await;
    gh.wait_comment(2, "Ready for review").await;
    assert_eq!(
        gh.pr(2).await["draft"],
        false,
        "marked ready through GraphQL"
    );
    let inbox = get(&base, &token, "/api/inbox").await;
    let item = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "review" && i["resolved_at"].is_null())
        .cloned()
        .expect("a review item");
    let body = item["body"].as_str().unwrap();
    assert!(
        body.contains("Pull request: ") && body.contains("/pull/2"),
        "{body}"
    );
    assert!(body.contains("CI: green"), "{body}");

    // A review requesting changes goes back to the agent; its push is checked again.
    gh.post(
        "/repos/octo/app/pulls/2/reviews",
        json!({"event": "REQUEST_CHANGES", "body": "Make it friendlier.", "comments": [{"path": "greeting.txt", "line": 1, "body": "say reviewed"}]}),
    )
    .await;
    gh.wait_comment(2, "addressing this feedback").await;
    sha = gh.wait_push(2, Some(&sha)).await;
    wait_task_state(&base, &token, &id, "checking").await;
    gh.ci(&sha, "success").await;
    wait_task_state(&base, &token, &id, "review").await;

    // The projects view shows the open pull request and the default branch's commits.
    let projects = get(&base, &token, "/api/projects").await;
    let project = &projects["projects"][0];
    assert_eq!(project["repo"], "octo/app");
    assert_eq!(
        project["forge"]["open_pull_requests"][0]["number"], 2,
        "{project}"
    );
    assert!(
        !project["forge"]["recent_commits"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{project}"
    );
    let one = get(
        &base,
        &token,
        &format!("/api/projects/{}", project["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(one["forge"]["open_pull_requests"][0]["draft"], false);

    // Merged on GitHub: detected.
    gh.call(
        reqwest::Method::PUT,
        "/repos/octo/app/pulls/2/merge",
        Some(json!({})),
    )
    .await;
    wait_task_state(&base, &token, &id, "merged").await;
    let bare = gh.fake.repo_path("octo", "app");
    let out = Command::new("git")
        .args([
            "--git-dir",
            bare.to_str().unwrap(),
            "show",
            "main:greeting.txt",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello, reviewed\n");

    // The token never reached git's configuration or the transcript.
    let transcript = get(
        &base,
        &token,
        &format!("/api/tasks/{id}/transcript?limit=1000"),
    )
    .await;
    assert!(!transcript.to_string().contains(BOT));
    drop(server);
}

fn sign(body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(base: &str, event: &str, body: &str, signature: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{base}/api/webhooks/github"))
        .header("x-github-event", event)
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn transcript_text(base: &str, token: &str, id: &str) -> String {
    get(
        base,
        token,
        &format!("/api/tasks/{id}/transcript?limit=1000"),
    )
    .await
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_no_ci_outage_close_webhooks_restart_app_answers_and_cancel() {
    let Some((dir, gh, fake, claude)) = github_world().await else {
        return;
    };
    let data = dir.path().join("data");
    let mut server = start_with_github(&data, &fake, &claude, &gh);
    let token = server.token.clone().unwrap();

    // A repository without CI is reported as such, never as green.
    let (_, t1) = post(
        &server.base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix the typo", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let t1 = t1["id"].as_str().unwrap().to_owned();
    gh.wait_comment(1, "Draft pull request").await;
    wait_task_state(&server.base, &token, &t1, "review").await;
    let ready = gh.wait_comment(2, "Ready for review").await;
    assert!(ready["body"].as_str().unwrap().contains("no CI"), "{ready}");
    assert!(
        !ready["body"].as_str().unwrap().contains("green"),
        "{ready}"
    );

    // Webhooks: a forged delivery is refused; a signed one wakes the task's watch.
    let body = json!({"action": "created", "repository": {"full_name": "octo/app"}, "issue": {"number": 2}, "comment": {"body": "hi"}}).to_string();
    let (status, _) = deliver(&server.base, "issue_comment", &body, "sha256=00").await;
    assert_eq!(status, 401);
    let forged = body.replace("\"hi\"", "\"/revise delete everything\"");
    let (status, _) = deliver(
        &server.base,
        "issue_comment",
        &forged,
        &sign(body.as_bytes()),
    )
    .await;
    assert_eq!(status, 401, "a signature over another body");
    let (status, _) = deliver(&server.base, "ping", "{}", &sign(b"{}")).await;
    assert_eq!(status, 202);
    let (status, woke) =
        deliver(&server.base, "issue_comment", &body, &sign(body.as_bytes())).await;
    assert_eq!((status, woke), (202, json!({"woken": 1})));

    // GitHub goes down: the watch keeps trying (and says so), then carries on.
    gh.fake.set_outage(Some(mainloop_fake_github::Outage {
        status: 503,
        requests: None,
    }));
    for _ in 0..100 {
        if transcript_text(&server.base, &token, &t1)
            .await
            .contains("GitHub trouble")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        transcript_text(&server.base, &token, &t1)
            .await
            .contains("GitHub trouble")
    );
    gh.fake.set_outage(None);
    // Closed unmerged on GitHub: the task is cancelled.
    gh.call(
        reqwest::Method::PATCH,
        "/repos/octo/app/pulls/2",
        Some(json!({"state": "closed"})),
    )
    .await;
    wait_task_state(&server.base, &token, &t1, "cancelled").await;
    assert!(
        transcript_text(&server.base, &token, &t1)
            .await
            .contains("GitHub is reachable again")
    );

    // A second task reaches review; mainloop is killed while it waits there.
    let (_, t2) = post(
        &server.base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix two", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let t2 = t2["id"].as_str().unwrap().to_owned();
    wait_task_state(&server.base, &token, &t2, "review").await;
    let sha = gh.wait_push(4, None).await;
    server.sigkill();
    // Feedback arrives while mainloop is down; after the restart it is picked up.
    gh.post(
        "/repos/octo/app/issues/4/comments",
        json!({"body": "@mainloop please say reviewed"}),
    )
    .await;
    server = start_with_github(&data, &fake, &claude, &gh);
    gh.wait_comment(4, "addressing this feedback").await;
    gh.wait_push(4, Some(&sha)).await;
    wait_task_state(&server.base, &token, &t2, "review").await;

    // Cancelling in mainloop closes the pull request and the issue, one comment each.
    let (status, _) = post(
        &server.base,
        &token,
        &format!("/api/tasks/{t2}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    for _ in 0..100 {
        if gh.pr(4).await["state"] == "closed"
            && gh.get("/repos/octo/app/issues/3").await["state"] == "closed"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gh.pr(4).await["state"], "closed");
    assert_eq!(gh.get("/repos/octo/app/issues/3").await["state"], "closed");
    for n in [3, 4] {
        let cancelled = gh
            .comments(n)
            .await
            .into_iter()
            .filter(|c| {
                c["body"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("Cancelled in mainloop")
            })
            .count();
        assert_eq!(cancelled, 1, "#{n}");
    }

    // Answered in the app first: the issue is told, and a late answer there is refused.
    let (_, t3) = post(
        &server.base,
        &token,
        "/api/tasks",
        json!({"description": "build the greeter", "repo": "octo/app"}),
    )
    .await;
    let t3 = t3["id"].as_str().unwrap().to_owned();
    wait_task_state(&server.base, &token, &t3, "waiting_answers").await;
    gh.wait_comment(5, "The worker has questions").await;
    let (status, _) = post(
        &server.base,
        &token,
        &format!("/api/tasks/{t3}/answers"),
        json!({"answers": {"q1": ["Go"], "q2": ["Docs"]}}),
    )
    .await;
    assert_eq!(status, 200);
    gh.wait_comment(5, "Answered in mainloop").await;
    gh.post(
        "/repos/octo/app/issues/5/comments",
        json!({"body": "1: Rust\n2: 1"}),
    )
    .await;
    gh.wait_comment(5, "already answered in mainloop").await;
    let t = get(&server.base, &token, &format!("/api/tasks/{t3}")).await;
    assert_eq!(t["answers"], json!({"q1": ["Go"], "q2": ["Docs"]}));
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_ci_is_rechecked_after_the_last_round_and_pending_times_out() {
    let Some((dir, gh, fake, claude)) = github_world().await else {
        return;
    };
    let server = start_with_github_env(
        &dir.path().join("data"),
        &fake,
        &claude,
        &gh,
        &[
            ("MAINLOOP_GITHUB__MAX_CI_ROUNDS", "1"),
            ("MAINLOOP_GITHUB__CI_PENDING_TIMEOUT_SECS", "4"),
        ],
    );
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());

    // One fix round allowed: the fix is pushed and checked again; red again fails the task.
    let (_, t) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix one", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    let sha = gh.wait_push(2, None).await;
    wait_task_state(&base, &token, &id, "checking").await;
    gh.ci(&sha, "failure").await;
    let fixed = gh.wait_push(2, Some(&sha)).await;
    gh.ci(&fixed, "failure").await;
    let failed = wait_task_state(&base, &token, &id, "failed").await;
    assert!(
        failed["error"].as_str().unwrap().contains("check"),
        "{failed}"
    );
    gh.wait_comment(2, "The worker failed").await;

    // CI that never finishes fails the task after the pending timeout.
    let (_, t) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix two", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    let sha = gh.wait_push(4, None).await;
    gh.post(
        "/repos/octo/app/check-runs",
        json!({"name": "build", "head_sha": sha, "status": "in_progress"}),
    )
    .await;
    let failed = wait_task_state(&base, &token, &id, "failed").await;
    assert!(
        failed["error"].as_str().unwrap().contains("did not finish"),
        "{failed}"
    );

    // GitHub is down when a task starts: mirroring waits it out, far beyond the
    // dispatcher's own retry budget (8 attempts within a second or two here), and then
    // catches up.
    gh.fake.set_outage(Some(mainloop_fake_github::Outage {
        status: 502,
        requests: None,
    }));
    let (_, t) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix three", "repo": "octo/app"}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        transcript_text(&base, &token, &id)
            .await
            .contains("GitHub trouble")
    );
    gh.fake.set_outage(None);
    // The plan issue appears once GitHub answers again.
    for _ in 0..100 {
        let r = client()
            .get(format!("{}/repos/octo/app/issues/5", gh.base))
            .header("authorization", format!("Bearer {ALICE}"))
            .header("user-agent", "e2e")
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let issue = gh.get("/repos/octo/app/issues/5").await;
    assert_eq!(issue["title"], "quick fix three");
    drop(server);
}

/// Planted secrets (the model API key, the GitHub token, the webhook secret, the owner's
/// API token) never reach the server's log, even at debug level, nor a task transcript
/// or the chat, through a chat turn and a whole GitHub task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_never_reach_logs_or_transcripts() {
    let Some((dir, gh, fake, claude)) = github_world().await else {
        return;
    };
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = github_command(&dir.path().join("data"), &fake, &claude, &gh, &[]);
    cmd.env("MAINLOOP_LOG__FILTER", "debug");
    let server = Server::spawn_logging_to(cmd, Stdio::from(log));
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());

    let (status, _) = post(&base, &token, "/api/chat", json!({"text": "hello there"})).await;
    assert_eq!(status, 202);
    let (_, t) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix the log", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    let mut state = Value::Null;
    for _ in 0..1200 {
        state = get(&base, &token, &format!("/api/tasks/{id}")).await["state"].clone();
        if state == "review" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if state != "review" {
        // Say why, from the server's own account of it.
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let forge: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("forge") || l.contains("WARN") || l.contains("ERROR"))
            .collect();
        let tail = forge[forge.len().saturating_sub(60)..].join("\n");
        panic!(
            "the task is {state}, not in review; transcript: {}\nserver log:\n{tail}",
            transcript_text(&base, &token, &id).await
        );
    }
    let (status, _) = deliver(&base, "ping", "{}", &sign(b"{}")).await;
    assert_eq!(status, 202);
    let chat = messages(&base, &token).await;
    let transcript = transcript_text(&base, &token, &id).await;
    drop(server);

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.len() > 1000,
        "the debug log was written ({} bytes)",
        log.len()
    );
    for (name, secret) in [
        ("the model API key", "sk-planted-secret-4242"),
        ("the GitHub token", BOT),
        ("the webhook secret", HOOK_SECRET),
        ("the owner's API token", token.as_str()),
    ] {
        assert!(!log.contains(secret), "{name} is in the server log");
        assert!(!transcript.contains(secret), "{name} is in the transcript");
        assert!(
            !serde_json::to_string(&chat).unwrap().contains(secret),
            "{name} is in the chat"
        );
    }
}

// ---------------------------------------------------------------------------------
// Infrastructure faults under the running server: PostgreSQL restarted or refusing
// writes, the model API and GitHub misbehaving. Each test counts what it injects.

/// What one API request made during a fault got back.
#[derive(Debug, Clone)]
struct Probe {
    what: &'static str,
    /// 0: no answer within [`PROBE_BOUND`] (a hang), or the connection failed.
    status: u16,
    code: String,
    message: String,
    elapsed: Duration,
}

/// The longest an API request may take while the database is away: the pool's acquire
/// timeout (10 s) plus slack for a loaded machine. Beyond it a request counts as hung.
const PROBE_BOUND: Duration = Duration::from_secs(14);

async fn probe(
    what: &'static str,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Probe {
    probe_within(PROBE_BOUND, what, method, url, token, body).await
}

/// [`probe`] with another bound on the answer's time.
async fn probe_within(
    bound: Duration,
    what: &'static str,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Probe {
    let started = std::time::Instant::now();
    let mut rb = reqwest::Client::builder()
        .timeout(bound)
        .build()
        .unwrap()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let (status, v) = match rb.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
        Err(e) => (
            0,
            json!({"error": {"code": "transport", "message": e.to_string()}}),
        ),
    };
    Probe {
        what,
        status,
        code: v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        message: v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        elapsed: started.elapsed(),
    }
}

/// Every probe either worked or was refused with a clear 503 (`unavailable`, with a
/// message) in bounded time: never a 500, never a hang.
fn assert_refused_cleanly(probes: &[Probe]) {
    for p in probes {
        let ok = (200..300).contains(&p.status);
        let unavailable = p.status == 503 && p.code == "unavailable" && !p.message.is_empty();
        assert!(ok || unavailable, "{} answered {p:?}", p.what);
        assert!(p.elapsed < PROBE_BOUND, "{} took {:?}", p.what, p.elapsed);
    }
}

/// A client of `/api/events` that behaves like the web app: when the stream ends it
/// reconnects with `Last-Event-ID`, and it records every event id it is given.
struct EventFollower {
    ids: std::sync::Arc<std::sync::Mutex<Vec<i64>>>,
    reconnects: std::sync::Arc<std::sync::atomic::AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl EventFollower {
    fn start(base: &str, token: &str) -> Self {
        use futures::StreamExt as _;
        let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reconnects = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (base, token) = (base.to_owned(), token.to_owned());
        let (seen, again) = (ids.clone(), reconnects.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let last = seen.lock().unwrap().last().copied().unwrap_or(0);
                let response = http
                    .get(format!("{base}/api/events"))
                    .bearer_auth(&token)
                    .header("last-event-id", last.to_string())
                    .send()
                    .await;
                if let Ok(r) = response.and_then(reqwest::Response::error_for_status) {
                    let mut stream = r.bytes_stream();
                    let mut buf = String::new();
                    while let Some(Ok(chunk)) = stream.next().await {
                        buf.push_str(&String::from_utf8_lossy(&chunk));
                        while let Some(end) = buf.find("\n\n") {
                            let block: String = buf.drain(..end + 2).collect();
                            if let Some(id) = block
                                .lines()
                                .find_map(|l| l.strip_prefix("id:"))
                                .and_then(|v| v.trim().parse::<i64>().ok())
                            {
                                seen.lock().unwrap().push(id);
                            }
                        }
                    }
                }
                again.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            ids,
            reconnects,
            task,
        }
    }

    fn ids(&self) -> Vec<i64> {
        self.ids.lock().unwrap().clone()
    }

    /// Waits until the follower has seen event `id` (or later).
    async fn wait_for(&self, id: i64) {
        for _ in 0..400 {
            if self.ids().last().is_some_and(|l| *l >= id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the event follower never reached event {id}: {:?}",
            self.ids()
        );
    }
}

impl Drop for EventFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every event id of the user's log, read back from the start.
async fn all_event_ids(base: &str, token: &str) -> Vec<i64> {
    all_events(base, token)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect()
}

fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

fn strictly_increasing(ids: &[i64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

/// Starts a server whose log (warnings and errors) goes to `server.log` beside `data`
/// instead of the test's output: fault tests make it long. Returns the log's path.
fn spawn_logged(cmd: Command, data: &Path) -> (Server, std::path::PathBuf) {
    let path = data.with_extension("log");
    let log = std::fs::File::create(&path).unwrap();
    (Server::spawn_logging_to(cmd, Stdio::from(log)), path)
}

/// How many lines of the server's log contain `needle`.
fn log_lines(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits until the server's log has a line containing `needle`.
async fn wait_log(path: &Path, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while log_lines(path, needle) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the log never said {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server process is still running (it did not exit on the fault).
fn assert_running(server: &mut Server) {
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
}

/// A server on PostgreSQL (`database_url`), with the real claude CLI as its worker
/// agent when there is one.
fn postgres_command(
    data: &Path,
    fake: &FakeAnthropic,
    database_url: &str,
    claude: Option<&Path>,
) -> Command {
    let mut cmd = command(data, Some(&fake.base_url()));
    cmd.env("DATABASE_URL", database_url)
        // Short leases: an attempt whose end could not be recorded while the database
        // was away is handed out again within seconds, not a minute.
        .env("MAINLOOP_DISPATCHER__LEASE_SECS", "3")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    if let Some(claude) = claude {
        cmd.env("MAINLOOP_WORKERS__CLAUDE_COMMAND", claude);
    }
    cmd
}

fn git_repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("README.md"), "x\n").unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "init"]);
    repo
}

const STEADY: &str = r##"
rules:
  - name: probe
    match: {user_contains: "probe question"}
    reply: [{text: "A quick answer."}]
  - name: chat
    match: {user_contains: "question"}
    delay_ms: 120
    reply: [{text: "An answer in pieces: one, two, three, four, five, six, seven."}]
  - name: task-work
    match: {user_contains: "steady work"}
    delay_ms: 150
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'steady\\n' > steady.txt", description: "Work"}}
  - name: task-done
    match: {tool_result_for: Bash}
    delay_ms: 150
    reply: [{text: "Done with the steady work."}]
"##;

/// Posts a chat message; returns its id when it was stored (202), else the probe.
async fn try_chat(base: &str, token: &str, text: &str) -> Result<String, Probe> {
    let started = std::time::Instant::now();
    let r = client()
        .post(format!("{base}/api/chat"))
        .bearer_auth(token)
        .json(&json!({ "text": text }))
        .send()
        .await;
    match r {
        Ok(r) if r.status() == 202 => {
            let v: Value = r.json().await.unwrap();
            Ok(v["message_id"].as_str().unwrap().to_owned())
        }
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            Err(Probe {
                what: "POST /api/chat",
                status,
                code: v["error"]["code"].as_str().unwrap_or_default().to_owned(),
                message: v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                elapsed: started.elapsed(),
            })
        }
        Err(e) => Err(Probe {
            what: "POST /api/chat",
            status: 0,
            code: "transport".into(),
            message: e.to_string(),
            elapsed: started.elapsed(),
        }),
    }
}

/// Requests a user makes while something is wrong: reads and writes, one round.
async fn probe_round(base: &str, token: &str, n: usize) -> Vec<Probe> {
    let get = |what, path: &str| {
        probe(
            what,
            reqwest::Method::GET,
            format!("{base}{path}"),
            token,
            None,
        )
    };
    let (a, b, c, d) = tokio::join!(
        get("GET /api/tasks", "/api/tasks"),
        get("GET /api/chat/messages", "/api/chat/messages?limit=5"),
        get("GET /api/health", "/api/health"),
        probe(
            "POST /api/chat",
            reqwest::Method::POST,
            format!("{base}/api/chat"),
            token,
            Some(json!({ "text": format!("probe question {n}") })),
        ),
    );
    vec![a, b, c, d]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_a_running_server_loses_nothing() {
    let started = std::time::Instant::now();
    let cluster = mainloop_testpg::OwnCluster::start().await.unwrap();
    let url = cluster.fresh_database_url().await.unwrap();
    let fake = FakeAnthropic::start(Script::from_yaml(STEADY).unwrap())
        .await
        .unwrap();
    let claude = claude_path();
    let data = tempfile::tempdir().unwrap();
    let repo = git_repo();
    let (mut server, log) = spawn_logged(
        postgres_command(data.path(), &fake, &url, claude.as_deref()),
        data.path(),
    );
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let follower = EventFollower::start(&base, &token);

    // Work in flight: three chat turns (one lane, answered in turn, each streaming for
    // a second) and, with the CLI, a task whose agent talks to a slow model.
    let mut sent = Vec::new();
    for n in 1..=3 {
        sent.push(
            try_chat(&base, &token, &format!("question {n}"))
                .await
                .unwrap(),
        );
    }
    let task = if claude.is_some() {
        let (status, t) = post(
            &base,
            &token,
            "/api/tasks",
            json!({"description": "steady work", "repo": repo.path(), "skip_plan": true}),
        )
        .await;
        assert_eq!(status, 201, "{t}");
        Some(t["id"].as_str().unwrap().to_owned())
    } else {
        None
    };
    for _ in 0..400 {
        let rules: Vec<String> = fake
            .message_requests()
            .into_iter()
            .filter_map(|r| r.rule_name)
            .collect();
        if rules.iter().any(|r| r == "chat")
            && (task.is_none() || rules.iter().any(|r| r == "task-work"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Restart PostgreSQL twice while requests keep coming: at once, then staying down
    // for two seconds (as a real server with a large cache or crash recovery does).
    let restarts = 2;
    let stop = stop_flag();
    let load = {
        let (base, token, stop) = (base.clone(), token.clone(), stop.clone());
        tokio::spawn(async move {
            let mut probes = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                probes.extend(probe_round(&base, &token, n).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            probes
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.outage(Duration::from_secs(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let probes = load.await.unwrap();
    assert_running(&mut server);
    assert_refused_cleanly(&probes);
    let refused = probes.iter().filter(|p| p.status == 503).count();
    // Requests made while the server was down were refused, or waited for it (the pool
    // reconnects within its acquire timeout): either way some met the outage.
    let waited = probes
        .iter()
        .filter(|p| p.status != 503 && p.elapsed >= Duration::from_secs(1))
        .count();
    assert!(refused + waited > 0, "nothing met the outage: {probes:?}");

    // Writes work again without anyone's help.
    let mut after = None;
    for _ in 0..100 {
        match try_chat(&base, &token, "question after the restart").await {
            Ok(id) => {
                after = Some(id);
                break;
            }
            Err(p) => {
                assert_refused_cleanly(&[p]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    sent.push(after.expect("writes work again after the restart"));
    for p in probes.iter().filter(|p| p.what == "POST /api/chat") {
        assert!(p.status == 202 || p.status == 503, "{p:?}");
    }

    // Every stored message is answered exactly once, and only stored ones exist.
    let thread = messages(&base, &token).await;
    let stored_users: Vec<String> = thread
        .iter()
        .filter(|m| m["role"] == "user" && m["kind"] == "text")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let accepted = probes
        .iter()
        .filter(|p| p.what == "POST /api/chat" && p.status == 202)
        .count();
    assert_eq!(
        stored_users.len(),
        sent.len() + accepted,
        "a refused message left nothing"
    );
    for id in &stored_users {
        wait_reply(&base, &token, id).await;
    }
    if let Some(id) = &task {
        let t = wait_task_state(&base, &token, id, "review").await;
        assert!(t["error"].is_null(), "{t}");
    }
    // Quiet now: nothing more is pending, and nothing was answered twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &stored_users {
        assert_eq!(
            replies(&base, &token, id).await.len(),
            1,
            "answered once: {id}"
        );
    }

    // Event ids: strictly increasing for the live client across its reconnects, and it
    // was given every event the log holds.
    let all = all_event_ids(&base, &token).await;
    assert!(strictly_increasing(&all), "{all:?}");
    follower.wait_for(*all.last().unwrap()).await;
    let live = follower.ids();
    assert!(
        strictly_increasing(&live),
        "duplicated or reordered: {live:?}"
    );
    assert_eq!(live, all, "the live client missed events");
    let reconnects = follower
        .reconnects
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(log_lines(&log, "job failed for good"), 0);
    eprintln!(
        "faults: {restarts} PostgreSQL restarts; {} API requests during them, {refused} refused \
         with 503, {waited} waited for the server, max latency {:?}; background: {} job attempts and {} claims met the outage; \
         the event stream reconnected {reconnects} times; {} events; {:?}",
        probes.len(),
        probes.iter().map(|p| p.elapsed).max().unwrap_or_default(),
        log_lines(&log, "job attempt failed; will retry"),
        log_lines(&log, "could not claim jobs"),
        all.len(),
        started.elapsed()
    );
}

/// Chat answers slowly (a turn is in flight when the database freezes); a task asks
/// two questions, then plans.
const FROZEN: &str = r##"
rules:
  - name: probe
    match: {user_contains: "probe question"}
    reply: [{text: "A quick answer."}]
  - name: chat
    match: {user_contains: "chat question"}
    delay_ms: 250
    reply: [{text: "An answer in pieces: one, two, three, four, five, six, seven."}]
  - name: ask
    match: {user_contains: "build the greeter", tool_offered: AskUserQuestion}
    reply:
      - tool_use:
          name: AskUserQuestion
          input:
            questions:
              - question: "Which language?"
                header: "Language"
                options:
                  - {label: "Rust", description: "fast"}
                  - {label: "Go", description: "simple"}
                multiSelect: false
  - name: answered-after-resume
    match: {user_contains: "Answers to your questions"}
    reply:
      - tool_use:
          name: Write
          input: {file_path: "{{plan_file}}", content: "# Plan\n\nA greeter.\n"}
  - name: write-plan
    match: {tool_result_for: AskUserQuestion}
    reply:
      - tool_use:
          name: Write
          input: {file_path: "{{plan_file}}", content: "# Plan\n\nA greeter.\n"}
  - name: exit-plan
    match: {tool_result_for: Write, tool_result_contains: "/.claude/plans/"}
    reply:
      - tool_use: {name: ExitPlanMode, input: {}}
"##;

/// Rows that would mean a write was cut in half. Each count must stay 0.
const HALF_WRITTEN: &[(&str, &str)] = &[
    (
        "a user message without its chat.turn job",
        "SELECT count(*) FROM messages m WHERE m.role = 'user' AND m.kind = 'text' \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.key = 'chat:' || m.id)",
    ),
    (
        "a user message without its chat.message event",
        "SELECT count(*) FROM messages m WHERE m.role = 'user' AND m.kind = 'text' \
         AND NOT EXISTS (SELECT 1 FROM events e WHERE e.name = 'chat.message' \
         AND e.payload LIKE '%' || m.id || '%')",
    ),
    (
        "a task without its 'Task created' update",
        "SELECT count(*) FROM tasks t \
         WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.task_id = t.id)",
    ),
    (
        "a task waiting for answers without an open inbox item",
        "SELECT count(*) FROM tasks t WHERE t.state = 'waiting_answers' AND NOT EXISTS \
         (SELECT 1 FROM inbox_items i WHERE i.task_id = t.id AND i.resolved_at IS NULL)",
    ),
];

async fn assert_nothing_half_written(url: &str) {
    for (what, sql) in HALF_WRITTEN {
        assert_eq!(
            mainloop_testpg::query_i64(url, sql).await.unwrap(),
            0,
            "{what}"
        );
    }
}

async fn count(url: &str, sql: &str) -> i64 {
    mainloop_testpg::query_i64(url, sql).await.unwrap()
}

/// Sends `request` until it is accepted (within 10 s), as a user pressing "retry" on a
/// 503 would; every refusal on the way must be a clean 503. Returns the accepted probe
/// and how many refusals it met.
async fn until_accepted<F, Fut>(mut request: F) -> (Probe, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Probe>,
{
    let mut refused = 0;
    for _ in 0..100 {
        let p = request().await;
        if (200..300).contains(&p.status) {
            return (p, refused);
        }
        assert_refused_cleanly(std::slice::from_ref(&p));
        refused += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never accepted after {refused} refusals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusing_writes_gets_503s_keeps_reads_and_recovers_without_a_restart() {
    let started = std::time::Instant::now();
    let cluster = mainloop_testpg::OwnCluster::start().await.unwrap();
    let url = cluster.fresh_database_url().await.unwrap();
    let fake = FakeAnthropic::start(Script::from_yaml(FROZEN).unwrap())
        .await
        .unwrap();
    let claude = claude_path();
    let data = tempfile::tempdir().unwrap();
    let repo = git_repo();
    let mut cmd = postgres_command(data.path(), &fake, &url, claude.as_deref());
    // The default lease (60 s): a turn refused mid-way must not wait it out.
    cmd.env_remove("MAINLOOP_DISPATCHER__LEASE_SECS");
    let (mut server, log) = spawn_logged(cmd, data.path());
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let follower = EventFollower::start(&base, &token);
    let at = |path: &str| format!("{base}{path}");

    // A task waiting for an answer, with its inbox item (needs the claude CLI).
    let asking = if claude.is_some() {
        let (status, t) = post(
            &base,
            &token,
            "/api/tasks",
            json!({"description": "build the greeter", "repo": repo.path()}),
        )
        .await;
        assert_eq!(status, 201, "{t}");
        let id = t["id"].as_str().unwrap().to_owned();
        wait_task_state(&base, &token, &id, "waiting_answers").await;
        let inbox = get(&base, &token, "/api/inbox").await;
        let item = inbox["items"][0]["id"].as_str().unwrap().to_owned();
        Some((id, item))
    } else {
        None
    };
    // A chat turn in flight: its reply streams for a couple of seconds.
    let in_flight = try_chat(&base, &token, "chat question in flight")
        .await
        .unwrap();
    for _ in 0..200 {
        if fake
            .message_requests()
            .iter()
            .any(|r| r.rule_name.as_deref() == Some("chat"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let tasks_before = count(&url, "SELECT count(*) FROM tasks").await;
    let messages_before = count(&url, "SELECT count(*) FROM messages").await;

    // The database is frozen for maintenance.
    let cut = cluster.refuse_writes(&url).await.unwrap();
    let mut refusals = 0;
    let mut writes = vec![
        probe(
            "POST /api/chat",
            reqwest::Method::POST,
            at("/api/chat"),
            &token,
            Some(json!({"text": "probe question while frozen"})),
        )
        .await,
        probe(
            "POST /api/tasks",
            reqwest::Method::POST,
            at("/api/tasks"),
            &token,
            Some(json!({"description": "a task while frozen", "repo": repo.path()})),
        )
        .await,
    ];
    if let Some((id, item)) = &asking {
        writes.push(
            probe(
                "POST /api/tasks/{id}/answers",
                reqwest::Method::POST,
                at(&format!("/api/tasks/{id}/answers")),
                &token,
                Some(json!({"answers": {"q1": ["Rust"]}})),
            )
            .await,
        );
        writes.push(
            probe(
                "POST /api/inbox/{id}/read",
                reqwest::Method::POST,
                at(&format!("/api/inbox/{item}/read")),
                &token,
                Some(json!({"read": true})),
            )
            .await,
        );
    }
    for w in &writes {
        assert_eq!((w.status, w.code.as_str()), (503, "unavailable"), "{w:?}");
    }
    assert_refused_cleanly(&writes);
    refusals += writes.len();
    let mut reads = Vec::new();
    for (what, path) in [
        ("GET /api/tasks", "/api/tasks"),
        ("GET /api/chat/messages", "/api/chat/messages"),
        ("GET /api/inbox", "/api/inbox"),
        ("GET /api/health", "/api/health"),
    ] {
        reads.push(probe(what, reqwest::Method::GET, at(path), &token, None).await);
    }
    for r in &reads {
        assert_eq!(r.status, 200, "reads keep working: {r:?}");
    }
    // Let background work (the chat turn, job claims) meet the refusal too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_running(&mut server);
    assert_eq!(
        count(&url, "SELECT count(*) FROM tasks").await,
        tasks_before
    );
    assert_eq!(
        count(&url, "SELECT count(*) FROM messages").await,
        messages_before
    );
    assert_nothing_half_written(&url).await;
    assert!(
        replies(&base, &token, &in_flight).await.is_empty(),
        "the turn could not store its reply while frozen"
    );

    // Writes are allowed again: the same server takes the same requests.
    cluster.allow_writes(&url).await.unwrap();
    let (chat, r1) = until_accepted(|| {
        probe(
            "POST /api/chat",
            reqwest::Method::POST,
            at("/api/chat"),
            &token,
            Some(json!({"text": "probe question after the freeze"})),
        )
    })
    .await;
    let (_, r2) = until_accepted(|| {
        probe(
            "POST /api/tasks",
            reqwest::Method::POST,
            at("/api/tasks"),
            &token,
            Some(json!({"description": "a task after the freeze", "repo": std::env::temp_dir()})),
        )
    })
    .await;
    let mut after_refusals = r1 + r2;
    if let Some((id, item)) = &asking {
        let (_, r3) = until_accepted(|| {
            probe(
                "POST /api/tasks/{id}/answers",
                reqwest::Method::POST,
                at(&format!("/api/tasks/{id}/answers")),
                &token,
                Some(json!({"answers": {"q1": ["Rust"]}})),
            )
        })
        .await;
        let (_, r4) = until_accepted(|| {
            probe(
                "POST /api/inbox/{id}/read",
                reqwest::Method::POST,
                at(&format!("/api/inbox/{item}/read")),
                &token,
                Some(json!({"read": true})),
            )
        })
        .await;
        after_refusals += r3 + r4;
        // The answer reached the agent: it planned on.
        wait_task_state(&base, &token, id, "waiting_plan_review").await;
    }
    assert!(chat.status == 202, "{chat:?}");

    // The turn refused mid-way is answered exactly once, and so is the new message.
    wait_reply(&base, &token, &in_flight).await;
    let thread = messages(&base, &token).await;
    let users: Vec<String> = thread
        .iter()
        .filter(|m| m["role"] == "user" && m["kind"] == "text")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        users.len(),
        2,
        "the refused message left nothing: {thread:#?}"
    );
    for id in &users {
        wait_reply(&base, &token, id).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &users {
        assert_eq!(replies(&base, &token, id).await.len(), 1, "answered once");
    }
    assert_nothing_half_written(&url).await;
    assert_eq!(
        count(&url, "SELECT count(*) FROM jobs WHERE state = 'failed'").await,
        0,
        "no background job was given up on"
    );
    assert!(count(&url, "SELECT count(*) FROM messages WHERE role = 'user'").await >= 2);
    assert_running(&mut server);

    let all = all_event_ids(&base, &token).await;
    follower.wait_for(*all.last().unwrap()).await;
    assert!(strictly_increasing(&follower.ids()));
    assert_eq!(follower.ids(), all, "the live client missed events");
    assert_eq!(log_lines(&log, "job failed for good"), 0);
    eprintln!(
        "faults: writes refused once ({cut} sessions cut); {refusals} API writes refused with 503 \
         during it, {} reads served; background: {} job attempts, {} outcome records and {} \
         claims refused and retried; {after_refusals} refusals after writes returned; {:?}",
        reads.len(),
        log_lines(&log, "job attempt failed; will retry"),
        log_lines(&log, "could not record a job's outcome yet"),
        log_lines(&log, "could not claim jobs"),
        started.elapsed()
    );
}

/// Every event of the user's log, read back from the start: (id, name, payload).
async fn all_events(base: &str, token: &str) -> Vec<(i64, String, Value)> {
    use futures::StreamExt as _;
    let r = client()
        .get(format!("{base}/api/events?after=0"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    // The replay comes first and at once; a quiet half second means it is over.
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_millis(500), stream.next()).await
    {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            if let (Some(id), Some(name), Some(data)) =
                (field("id:"), field("event:"), field("data:"))
            {
                events.push((
                    id.parse().unwrap(),
                    name,
                    serde_json::from_str(&data).unwrap(),
                ));
            }
        }
    }
    events
}

/// The main thread's model misbehaves, one way per message: rate limited (429 with
/// `retry-after`), failing (500), overloaded (529), too slow, and refusing the key.
const MISBEHAVING: &str = r#"
rules:
  - name: limited
    match: {user_contains: "rate limited please", times: 2}
    status: 429
    retry_after: 1
  - name: failing
    match: {user_contains: "server error please", times: 2}
    status: 500
  - name: overloaded
    match: {user_contains: "overloaded please", times: 1}
    status: 529
  - name: slow
    match: {user_contains: "slow please", times: 1}
    delay_ms: 700
    reply: [{text: "This reply streams too slowly to arrive in time: one, two, three."}]
  - name: refused
    match: {user_contains: "bad key please"}
    status: 401
    error: {message: "invalid x-api-key"}
  - name: answer
    match: {system_contains: "You are mainloop"}
    reply: [{text: "Answered."}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_model_api_still_answers_each_message_once_and_says_so() {
    let started = std::time::Instant::now();
    let fake = FakeAnthropic::start(Script::from_yaml(MISBEHAVING).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cmd = command(data.path(), Some(&fake.base_url()));
    // A reply slower than this is cut off and tried again.
    cmd.env("MAINLOOP_MODEL__REQUEST_TIMEOUT_SECS", "2");
    let (mut server, _log) = spawn_logged(cmd, data.path());
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());

    // (message, faults the fake serves it, what the final reply must say)
    let cases = [
        ("rate limited please", 2, "Answered."),
        ("server error please", 2, "Answered."),
        ("overloaded please", 1, "Answered."),
        ("slow please", 1, "Answered."),
        ("bad key please", 1, "I could not reply"),
    ];
    let mut ids = Vec::new();
    let mut took = Vec::new();
    for (text, _, expected) in cases {
        let t = std::time::Instant::now();
        let id = try_chat(&base, &token, text).await.unwrap();
        let reply = wait_reply(&base, &token, &id).await;
        took.push(t.elapsed());
        assert!(
            reply["text"].as_str().unwrap().contains(expected),
            "{text}: {reply}"
        );
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (id, (text, ..)) in ids.iter().zip(cases) {
        assert_eq!(
            replies(&base, &token, id).await.len(),
            1,
            "{text}: answered once"
        );
    }
    assert_running(&mut server);

    // Exactly one model call per fault plus the one that worked (none for the key the
    // provider refused: retrying cannot help).
    let log = fake.message_requests();
    let calls = |needle: &str| -> Vec<_> {
        log.iter()
            .filter(|r| {
                let messages = r.body["messages"].as_array().unwrap();
                messages.last().unwrap().to_string().contains(needle)
            })
            .cloned()
            .collect()
    };
    for (text, faults, _) in cases {
        let expected = if text == "bad key please" {
            1
        } else {
            faults + 1
        };
        assert_eq!(calls(text).len(), expected, "{text}");
    }
    // The rate limit's `retry-after: 1` was honoured before each new attempt.
    let limited = calls("rate limited please");
    for w in limited.windows(2) {
        assert!(
            w[1].at_ms - w[0].at_ms >= 1000,
            "retried {} ms after a 429",
            w[1].at_ms - w[0].at_ms
        );
    }
    // The slow reply was cut off at the timeout and tried again at once.
    let slow = calls("slow please");
    let cut_after = slow[1].at_ms - slow[0].at_ms;
    assert!(
        (2000..6000).contains(&cut_after),
        "retried {cut_after} ms after the slow start"
    );

    // The user was told each time: one `chat.error` per failed attempt, saying whether
    // it is being retried, and nothing else for the turn but its one reply.
    let events = all_events(&base, &token).await;
    let errors: Vec<&Value> = events
        .iter()
        .filter(|(_, name, _)| name == "chat.error")
        .map(|(_, _, data)| data)
        .collect();
    let retrying = errors.iter().filter(|e| e["retrying"] == true).count();
    let final_errors = errors.iter().filter(|e| e["retrying"] == false).count();
    assert_eq!((retrying, final_errors), (6, 1), "{errors:#?}");
    for e in &errors {
        assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
    }
    let served: usize = log.iter().filter(|r| r.status != 200).count();
    eprintln!(
        "faults: model API served {served} error responses (2×429 retry-after 1 s, 2×500, 1×529, \
         1×401) and 1 reply slower than the 2 s timeout; the user got {retrying} retry notices \
         and 1 final error; per message {took:?}; {:?}",
        started.elapsed()
    );
}

/// A worker's model calls fail: briefly for the first task (the claude CLI's own
/// retries ride it out), overloaded three times in a row for the second (the CLI gives
/// up; mainloop resumes it later), six times for the third (it gives up twice: more
/// than the one resume the test allows).
const FLAKY_WORKER_MODEL: &str = r##"
rules:
  - name: brief-500
    match: {user_contains: "briefly flaky work", times: 2}
    status: 500
  - name: brief-429
    match: {user_contains: "briefly flaky work", times: 1}
    status: 429
    retry_after: 1
  - name: brief-work
    match: {user_contains: "briefly flaky work"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'brief\\n' >> brief.txt", description: "Work"}}
  - name: down-529
    match: {user_contains: "long outage work", times: 3}
    status: 529
  - name: endless-529
    match: {user_contains: "endless outage work", times: 6}
    status: 529
  - name: endless-work
    match: {user_contains: "endless outage work"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'endless\\n' >> endless.txt", description: "Work"}}
  - name: down-continue
    match: {user_contains: "mainloop restarted"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'outage\\n' >> outage.txt", description: "Work"}}
  - name: down-work
    match: {user_contains: "long outage work"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'outage\\n' >> outage.txt", description: "Work"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Finished."}]
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_model_outages_are_ridden_out_and_a_longer_one_fails_the_task_until_retried() {
    let Some(claude) = claude_path() else { return };
    let started = std::time::Instant::now();
    let fake = FakeAnthropic::start(Script::from_yaml(FLAKY_WORKER_MODEL).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = git_repo();
    let mut cmd = command(data.path(), Some(&fake.base_url()));
    cmd.env("MAINLOOP_WORKERS__CLAUDE_COMMAND", &claude)
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("MAINLOOP_WORKERS__API_RETRIES", "1")
        .env("MAINLOOP_WORKERS__API_RETRY_DELAY_SECS", "1");
    let (mut server, _log) = spawn_logged(cmd, data.path());
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let create = |description: &'static str| {
        let (base, token, repo) = (base.clone(), token.clone(), repo.path().to_owned());
        async move {
            let (status, t) = post(
                &base,
                &token,
                "/api/tasks",
                json!({"description": description, "repo": repo, "skip_plan": true}),
            )
            .await;
            assert_eq!(status, 201, "{t}");
            t["id"].as_str().unwrap().to_owned()
        }
    };
    let rules = || -> Vec<(String, u16, u64)> {
        fake.message_requests()
            .into_iter()
            .map(|r| (r.rule_name.unwrap_or_default(), r.status, r.at_ms))
            .collect()
    };

    // Two 500s and a 429: the CLI retries by itself and the task never notices.
    let brief = create("briefly flaky work").await;
    wait_task_state(&base, &token, &brief, "review").await;
    let seen = rules();
    let brief_calls: Vec<_> = seen.iter().filter(|r| r.0.starts_with("brief")).collect();
    let statuses: Vec<u16> = brief_calls.iter().map(|r| r.1).collect();
    assert_eq!(statuses, [500, 500, 429, 200], "{seen:?}");
    // The CLI waited at least the `retry-after` second before its next call.
    assert!(brief_calls[3].2 - brief_calls[2].2 >= 1000, "{seen:?}");
    let diff = get(&base, &token, &format!("/api/tasks/{brief}/diff")).await;
    assert_eq!(
        diff["text"].as_str().unwrap().matches("+brief").count(),
        1,
        "the work ran once: {diff}"
    );

    // Three 529s in a row: the CLI gives up on an overloaded API after three, whatever
    // its retry setting. mainloop says so, waits, and resumes the session, which
    // finishes the work, once, with nobody's help.
    let outage = create("long outage work").await;
    wait_task_state(&base, &token, &outage, "review").await;
    let down: Vec<_> = rules().into_iter().filter(|r| r.0 == "down-529").collect();
    assert_eq!(down.len(), 3, "{:?}", rules());
    let transcript = transcript_text(&base, &token, &outage).await;
    assert!(
        transcript.contains("the model API is failing") && transcript.contains("1 of 1"),
        "{transcript}"
    );
    let diff = get(&base, &token, &format!("/api/tasks/{outage}/diff")).await;
    assert_eq!(
        diff["text"].as_str().unwrap().matches("+outage").count(),
        1,
        "the work ran once: {diff}"
    );
    let inbox = get(&base, &token, "/api/inbox").await;
    let kinds: Vec<&str> = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["task_id"] == outage.as_str())
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["review"],
        "only the review needs the human: {inbox}"
    );

    // An outage that outlasts the resumes (one here) fails the task, saying why; the
    // human's retry finishes the work, once.
    let endless = create("endless outage work").await;
    let failed = wait_task_state(&base, &token, &endless, "failed").await;
    let reason = failed["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("529") && reason.contains("still failing after 1 retry"),
        "{failed}"
    );
    let down: Vec<_> = rules()
        .into_iter()
        .filter(|r| r.0 == "endless-529")
        .collect();
    assert_eq!(down.len(), 6, "{:?}", rules());
    let (status, _) = post(
        &base,
        &token,
        &format!("/api/tasks/{endless}/retry"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    wait_task_state(&base, &token, &endless, "review").await;
    let diff = get(&base, &token, &format!("/api/tasks/{endless}/diff")).await;
    assert_eq!(
        diff["text"].as_str().unwrap().matches("+endless").count(),
        1,
        "the work ran once: {diff}"
    );
    assert_running(&mut server);
    let served = rules().iter().filter(|r| r.1 != 200).count();
    eprintln!(
        "faults: the worker's model served {served} errors (2×500 and 1×429 ridden out by the \
         CLI's own retries; 3×529 made the CLI give up and mainloop resumed it; 6×529 outlasted \
         the resume, failing the task with {reason:?}, and a retry finished it); {:?}",
        started.elapsed()
    );
}

impl Gh {
    /// Every issue (pull requests excluded) and every pull request of `octo/app`.
    async fn issues_and_pulls(&self) -> (Vec<Value>, Vec<Value>) {
        let all = self
            .get("/repos/octo/app/issues?state=all&per_page=100")
            .await;
        let issues = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i.get("pull_request").is_none())
            .cloned()
            .collect();
        let pulls = self
            .get("/repos/octo/app/pulls?state=all&per_page=100")
            .await
            .as_array()
            .unwrap()
            .clone();
        (issues, pulls)
    }

    /// Waits until the fake has served `n` faults of `kind` (see `Stats::injected`).
    async fn wait_injected(&self, kind: &str, n: u64) {
        for _ in 0..600 {
            if self.fake.stats().injected.get(kind).copied().unwrap_or(0) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("only {:?} faults served", self.fake.stats().injected);
    }
}

/// Comment bodies that appear more than once (mainloop's own words twice is a
/// duplicated post).
fn repeated(comments: &[Value]) -> Vec<String> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for c in comments {
        *seen
            .entry(c["body"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(b, _)| b)
        .collect()
}

/// A request to `route` (as `Stats::by_route` names it) hangs for half a second and
/// then times out with a 504, once; `applied`: after GitHub made the change.
fn timeout_on(route: &str, applied: bool) -> mainloop_fake_github::Hang {
    mainloop_fake_github::Hang {
        delay_ms: 500,
        status: Some(504),
        applied,
        cut: false,
        method: None,
        route: Some(route.to_owned()),
        requests: Some(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_rate_limits_errors_and_timeouts_delay_a_task_but_duplicate_nothing() {
    use mainloop_fake_github::{Hang, Outage, SecondaryLimit};
    let Some((dir, gh, fake, claude)) = github_world().await else {
        return;
    };
    let started = std::time::Instant::now();
    let data = dir.path().join("data");
    // A short client timeout, so a GitHub that does not answer in time is met for real.
    let (mut server, log) = spawn_logged(
        github_command(
            &data,
            &fake,
            &claude,
            &gh,
            &[("MAINLOOP_GITHUB__REQUEST_TIMEOUT_SECS", "2")],
        ),
        &data,
    );
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());

    // The task's first GitHub calls meet a secondary rate limit (429, retry-after 2 s)
    // and errors (500), two of each; creating its issue times out after GitHub made it
    // (set up front: a retry may come as soon as the last error is served).
    gh.fake
        .set_hang(Some(timeout_on("POST /repos/{o}/{r}/issues", true)));
    gh.fake.set_secondary_limit(SecondaryLimit {
        retry_after_secs: 2,
        requests: Some(2),
    });
    gh.fake.set_outage(Some(Outage {
        status: 500,
        requests: Some(2),
    }));
    let (_, t) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix under a flaky GitHub", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    gh.wait_injected("secondary 429", 2).await;
    gh.wait_injected("outage 500", 2).await;

    // Then each step's write times out (504 after a hang), most of them after GitHub
    // made the change, so only the answer is lost: a client that retries blindly
    // duplicates the issue, the pull request or the comment. One comment's connection
    // is cut mid-answer instead, after GitHub posted it. The fake counts a hang when the
    // request arrives, so the next one is set while this one still hangs.
    gh.wait_injected("hang 504", 1).await;
    let mut timeouts = 1;
    for (route, applied, cut) in [
        ("POST /repos/{o}/{r}/pulls", true, false),
        ("POST /repos/{o}/{r}/issues/{n}/comments", false, false),
        ("POST /repos/{o}/{r}/issues/{n}/comments", true, true),
        ("POST /graphql", true, false),
    ] {
        gh.fake.set_hang(Some(mainloop_fake_github::Hang {
            cut,
            ..timeout_on(route, applied)
        }));
        if cut {
            gh.wait_injected("hang cut", 1).await;
        } else {
            timeouts += 1;
            gh.wait_injected("hang 504", timeouts).await;
        }
    }
    wait_task_state(&base, &token, &id, "review").await;
    let (issues, pulls) = gh.issues_and_pulls().await;
    assert_eq!(issues.len(), 1, "one plan issue: {issues:#?}");
    assert_eq!(pulls.len(), 1, "one pull request: {pulls:#?}");
    let (issue, pr) = (
        issues[0]["number"].as_u64().unwrap(),
        pulls[0]["number"].as_u64().unwrap(),
    );
    gh.wait_comment(pr, "Ready for review").await;
    assert_eq!(gh.pr(pr).await["draft"], false);

    // A slow GitHub: the next two requests are answered 1.5 s late, within the client's
    // timeout; then two reads take longer than it (4 s against 2 s): mainloop gives up
    // on them and polls again later.
    gh.fake.set_hang(Some(Hang {
        delay_ms: 1500,
        status: None,
        applied: false,
        cut: false,
        method: None,
        route: None,
        requests: Some(2),
    }));
    gh.wait_injected("hang", 2).await;
    gh.fake.set_hang(Some(Hang {
        delay_ms: 4000,
        status: None,
        applied: false,
        cut: false,
        method: Some("GET".into()),
        route: None,
        requests: Some(2),
    }));
    gh.wait_injected("hang", 4).await;
    wait_log(&log, "unavailable: timed out").await;

    // Approved in the app; the merge's answer is lost after GitHub merged.
    gh.fake
        .set_hang(Some(timeout_on("PUT /repos/{o}/{r}/pulls/{n}/merge", true)));
    let (status, _) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/review"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200);
    gh.wait_injected("hang 504", timeouts + 1).await;
    wait_task_state(&base, &token, &id, "merged").await;
    assert_eq!(gh.pr(pr).await["merged"], true);

    // Nothing was posted twice, on the issue or the pull request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (issues, pulls) = gh.issues_and_pulls().await;
    assert_eq!((issues.len(), pulls.len()), (1, 1));
    for n in [issue, pr] {
        let comments = gh.comments(n).await;
        assert!(repeated(&comments).is_empty(), "#{n}: {comments:#?}");
    }
    assert_running(&mut server);
    let transcript = transcript_text(&base, &token, &id).await;
    assert!(
        transcript.contains("GitHub trouble"),
        "the outage was reported"
    );
    let injected = gh.fake.stats().injected;
    eprintln!(
        "faults: GitHub served {injected:?}; {} forge job attempts put off for later; {:?}",
        log_lines(&log, "GitHub call failed; trying again later"),
        started.elapsed()
    );
}

/// The longest an API write may wait while another process holds SQLite's write lock:
/// its turn among this process's writers (the pool's acquire timeout, 10 s) plus the
/// busy timeout (10 s), with slack for a loaded machine.
const SQLITE_WRITE_BOUND: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_process_gets_bounded_answers_and_loses_nothing() {
    let started = std::time::Instant::now();
    let fake = FakeAnthropic::start(Script::from_yaml(FROZEN).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let (mut server, log) = spawn_logged(command(data.path(), Some(&fake.base_url())), data.path());
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let at = |path: &str| format!("{base}{path}");

    // A turn in flight when the lock is taken.
    let in_flight = try_chat(&base, &token, "chat question in flight")
        .await
        .unwrap();
    for _ in 0..200 {
        if fake
            .message_requests()
            .iter()
            .any(|r| r.rule_name.as_deref() == Some("chat"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Another process (a backup script's `BEGIN IMMEDIATE`, the sqlite3 shell) takes
    // the database's write lock and keeps it longer than the busy timeout.
    let db = format!("sqlite://{}/mainloop.db", data.path().display());
    let other = mainloop_store::Store::connect(&db, &mainloop_store::StoreOptions::default())
        .await
        .unwrap();
    let owner = other.owner().await.unwrap().unwrap();
    let mut lock = other.begin().await.unwrap();
    lock.append_event(
        owner.id,
        mainloop_domain::event::EventName::ChatMessage,
        &json!({"from": "another process"}),
        mainloop_domain::Timestamp::from_millis(1),
    )
    .await
    .unwrap();
    let locked_for = Duration::from_secs(12);
    let writes = {
        let (base, token) = (base.clone(), token.clone());
        tokio::spawn(async move {
            let bounded = |what, path: &str, body| {
                probe_within(
                    SQLITE_WRITE_BOUND,
                    what,
                    reqwest::Method::POST,
                    format!("{base}{path}"),
                    &token,
                    Some(body),
                )
            };
            let (a, b) = tokio::join!(
                bounded(
                    "POST /api/chat",
                    "/api/chat",
                    json!({"text": "probe question while locked"})
                ),
                bounded(
                    "POST /api/tasks",
                    "/api/tasks",
                    json!({"description": "a task while locked", "repo": std::env::temp_dir()}),
                ),
            );
            vec![a, b]
        })
    };
    // Reads go on meanwhile, at their usual speed.
    let mut reads = Vec::new();
    while started.elapsed() < locked_for {
        for (what, path) in [
            ("GET /api/tasks", "/api/tasks"),
            ("GET /api/chat/messages", "/api/chat/messages"),
            ("GET /api/health", "/api/health"),
        ] {
            reads.push(probe(what, reqwest::Method::GET, at(path), &token, None).await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for r in &reads {
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.elapsed < Duration::from_secs(2), "{r:?}");
    }
    let held = started.elapsed();
    drop(lock);
    let writes = writes.await.unwrap();
    for w in &writes {
        let accepted = w.status == 201 || w.status == 202;
        let refused = w.status == 503 && w.code == "unavailable" && !w.message.is_empty();
        assert!(accepted || refused, "{w:?}");
        assert!(w.elapsed < SQLITE_WRITE_BOUND, "{w:?}");
    }
    assert!(
        log_lines(&log, "database is locked") > 0,
        "background work met the lock"
    );

    // Writes work again; every stored message is answered once; nothing was given up.
    let (after, _) = until_accepted(|| {
        probe(
            "POST /api/chat",
            reqwest::Method::POST,
            at("/api/chat"),
            &token,
            Some(json!({"text": "probe question after the lock"})),
        )
    })
    .await;
    assert_eq!(after.status, 202);
    let thread = messages(&base, &token).await;
    let users: Vec<String> = thread
        .iter()
        .filter(|m| m["role"] == "user" && m["kind"] == "text")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let accepted_chat = usize::from(writes[0].status == 202);
    assert_eq!(users.len(), 2 + accepted_chat, "{thread:#?}");
    assert!(users.contains(&in_flight));
    for id in &users {
        wait_reply(&base, &token, id).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &users {
        assert_eq!(replies(&base, &token, id).await.len(), 1, "answered once");
    }
    assert_eq!(
        other
            .count_jobs(mainloop_store::JobState::Failed)
            .await
            .unwrap(),
        0
    );
    assert_eq!(log_lines(&log, "job failed for good"), 0);
    assert_running(&mut server);
    eprintln!(
        "faults: SQLite write lock held by another process for {held:?}; API writes during it: \
         {:?}; {} reads served; background: {} lock refusals logged; {:?}",
        writes
            .iter()
            .map(|w| (w.what, w.status, w.elapsed))
            .collect::<Vec<_>>(),
        reads.len(),
        log_lines(&log, "database is locked"),
        started.elapsed()
    );
}

/// The process started as the only child of `parent` (bubblewrap's sandboxed process).
fn only_child_of(parent: u32) -> u32 {
    for _ in 0..100 {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid …": the name may hold spaces and parentheses.
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{parent} has no child");
}

/// A disk that fills up under SQLite. The server runs in a mount namespace of its own
/// (bubblewrap) whose data directory is a small tmpfs; the test fills that disk through
/// `/proc/<pid>/root` — no root, loop device or real disk needed — and frees it later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_refuses_writes_clearly_keeps_reads_and_recovers() {
    const DATA: &str = "/tmp/mainloop-disk";
    let started = std::time::Instant::now();
    let bwrap = mainloop_sandbox::which("bwrap", std::env::var_os("PATH").as_deref())
        .expect("bubblewrap is needed (.ci/run installs it)");
    let fake = FakeAnthropic::start(Script::from_yaml(FROZEN).unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plain = command(Path::new(DATA), Some(&fake.base_url()));
    let mut cmd = Command::new(bwrap);
    cmd.env_clear()
        .envs(plain.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env("MAINLOOP_WORKERS__SANDBOX", "off")
        .args(["--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev"])
        .args(["--proc", "/proc", "--tmpfs", "/tmp", "--size"])
        .arg((24_u64 << 20).to_string())
        .args(["--tmpfs", DATA, "--", BIN]);
    let (mut server, log) = spawn_logged(cmd, &dir.path().join("data"));
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let at = |path: &str| format!("{base}{path}");
    let inner = only_child_of(server.child.id());
    let disk = PathBuf::from(format!("/proc/{inner}/root{DATA}"));
    assert!(disk.join("mainloop.db").exists(), "{}", disk.display());

    let before = try_chat(&base, &token, "probe question before")
        .await
        .unwrap();
    wait_reply(&base, &token, &before).await;
    // A turn in flight when the disk fills: its reply cannot be stored until space is
    // back (meanwhile no job can even be claimed).
    let in_flight = try_chat(&base, &token, "chat question in flight")
        .await
        .unwrap();
    for _ in 0..200 {
        if fake
            .message_requests()
            .iter()
            .any(|r| r.rule_name.as_deref() == Some("chat"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Fill the disk to the last byte.
    let ballast = disk.join("ballast");
    let mut file = std::fs::File::create(&ballast).unwrap();
    let chunk = vec![0_u8; 1 << 16];
    let mut filled = 0_usize;
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {
        filled += chunk.len();
    }
    drop(file);

    // Writes are refused with a clear 503 (those that still fit in SQLite's log are
    // taken); reads go on.
    // Long messages, so what still fits in SQLite's log is used up in a few.
    let long = "x".repeat(90_000);
    let full_since = std::time::Instant::now();
    let mut accepted = vec![before.clone(), in_flight.clone()];
    let mut refused = Vec::new();
    let mut reads = Vec::new();
    for n in 0..200 {
        match try_chat(
            &base,
            &token,
            &format!("probe question while full {n} {long}"),
        )
        .await
        {
            Ok(id) => accepted.push(id),
            Err(p) => refused.push(p),
        }
        for (what, path) in [
            ("GET /api/chat/messages", "/api/chat/messages"),
            ("GET /api/tasks", "/api/tasks"),
        ] {
            reads.push(probe(what, reqwest::Method::GET, at(path), &token, None).await);
        }
        if refused.len() >= 3 {
            break;
        }
    }
    assert!(
        refused.len() >= 3,
        "never refused: {} accepted",
        accepted.len()
    );
    assert!(
        accepted.len() < 40,
        "{} taken on a full disk",
        accepted.len()
    );
    assert_refused_cleanly(&refused);
    for p in &refused {
        assert_eq!(p.status, 503, "{p:?}");
        assert!(p.message.contains("disk is full"), "says why: {p:?}");
    }
    for r in &reads {
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_running(&mut server);

    // Full for a while: background work keeps meeting it.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(full_since.elapsed())).await;
    assert_running(&mut server);

    // Space comes back: writes are taken again without a restart, and every message
    // taken is stored once and answered once.
    std::fs::remove_file(&ballast).unwrap();
    let (after, refused_after) = until_accepted(|| {
        probe(
            "POST /api/chat",
            reqwest::Method::POST,
            at("/api/chat"),
            &token,
            Some(json!({"text": "probe question after the disk was freed"})),
        )
    })
    .await;
    assert_eq!(after.status, 202);
    let thread = messages(&base, &token).await;
    let users: Vec<&str> = thread
        .iter()
        .filter(|m| m["role"] == "user" && m["kind"] == "text")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        users.len(),
        accepted.len() + 1,
        "{} user messages; taken {accepted:?}; thread {thread:#?}",
        users.len()
    );
    for id in &accepted {
        assert_eq!(users.iter().filter(|u| *u == id).count(), 1, "{id}");
    }
    for id in &users {
        wait_reply(&base, &token, id).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &users {
        assert_eq!(
            replies(&base, &token, id).await.len(),
            1,
            "{id} answered once"
        );
    }

    // Nothing is corrupt. SQLite resolves `/proc/<pid>/root` back to this namespace, so
    // the database and its log are copied out, with the server paused meanwhile.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &inner.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    for name in ["mainloop.db", "mainloop.db-wal"] {
        if disk.join(name).exists() {
            std::fs::copy(disk.join(name), copy.join(name)).unwrap();
        }
    }
    signal("-CONT");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(copy.join("mainloop.db")),
    )
    .await
    .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    assert_running(&mut server);
    eprintln!(
        "faults: a {} MiB disk filled ({} MiB of ballast): {} messages taken while full, {} \
         refused with 503 ({:?}), {} reads answered, {refused_after} refusals after it was \
         freed, the in-flight turn asked the model {} times, integrity ok, {} background \
         errors logged; {:?}",
        24,
        filled >> 20,
        accepted.len() - 2,
        refused.len(),
        refused.first().map(|p| p.message.clone()),
        reads.len(),
        fake.message_requests()
            .iter()
            .filter(|r| r.rule_name.as_deref() == Some("chat"))
            .count(),
        log_lines(&log, "full"),
        started.elapsed()
    );
}

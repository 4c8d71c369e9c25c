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

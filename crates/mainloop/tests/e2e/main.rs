//! The real `mainloop` binary, started and killed as a user (or a crash) would: chat
//! through the fake model, SIGKILL mid-turn, restarts, the CLI commands, and
//! infrastructure faults (PostgreSQL restarted or refusing writes, SQLite locked by
//! another process or on a full disk, the model API and GitHub misbehaving). One test
//! binary; a module per area. The world (fake model, scripts, git repositories, waits)
//! comes from `mainloop-test-support`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod agent_journey;
mod agent_world;
mod agents_codex;
mod agents_gemini;
mod agents_opencode;
mod budgets;
mod chat;
mod cli;
mod cli_digests;
mod cli_search;
mod cli_usage;
mod faults;
mod github;
mod github_faults;
mod github_lifecycle;
mod kubernetes;
mod kubernetes_env;
mod main_quota;
mod main_thread;
mod mcp;
mod memory;
mod model_faults;
mod postgres;
mod preview;
mod restart;
mod runner_acp;
mod runner_exec;
mod runner_faults;
mod runner_github;
mod runner_run;
mod runner_workspace;
mod runners;
mod sqlite;
mod task_env;
mod usage_limits;

use mainloop_fake_anthropic::{FakeAnthropic, Script};
use mainloop_test_support::{
    GitRepo, claude_path, git, jobs_idle, script, settled, try_jobs_idle, try_wait_for, wait_for,
    wait_for_within,
};
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
    fn spawn_logging_to(cmd: Command, log: Stdio) -> Self {
        Self::spawn_on(cmd, log, "127.0.0.1:0")
    }

    /// Like [`Server::spawn_logging_to`], listening on `listen` (a fixed port for a
    /// restart that clients must find again).
    fn spawn_on(mut cmd: Command, log: Stdio, listen: &str) -> Self {
        let mut child = cmd
            .args(["serve", "--listen", listen])
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
    send(reqwest::Method::POST, base, token, path, body).await
}

async fn put(base: &str, token: &str, path: &str, body: Value) -> (u16, Value) {
    send(reqwest::Method::PUT, base, token, path, body).await
}

/// A JSON request; its status and JSON reply (null when it has none).
async fn send(
    method: reqwest::Method,
    base: &str,
    token: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let r = client()
        .request(method, format!("{base}{path}"))
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
    wait_for(format!("a reply to {message_id}"), || async {
        replies(base, token, message_id).await.pop()
    })
    .await
}

/// Whether `pid` runs (a zombie waiting for init to reap it does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

fn start_with_workers(data: &Path, fake: &FakeAnthropic, claude: &Path) -> Server {
    Server::spawn(worker_command(data, fake, claude))
}

/// The server on `data` with the fake model and the real `claude` as its workers' agent.
fn worker_command(data: &Path, fake: &FakeAnthropic, claude: &Path) -> Command {
    let mut cmd = command(data, Some(&fake.base_url()));
    cmd.env("MAINLOOP_WORKERS__CLAUDE_COMMAND", claude)
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    cmd
}

async fn wait_task_state(base: &str, token: &str, id: &str, state: &str) -> Value {
    wait_for(format!("task {id} to reach {state}"), || async {
        let t = get(base, token, &format!("/api/tasks/{id}")).await;
        assert!(
            !(t["state"] == "failed" && state != "failed"),
            "task failed while waiting for {state}: {}",
            t["error"]
        );
        (t["state"] == state).then_some(t)
    })
    .await
}

/// The database of a server whose data directory is `data` (SQLite, the default).
fn sqlite_url(data: &Path) -> String {
    format!("sqlite://{}/mainloop.db", data.display())
}

/// Waits until nothing more will happen: no job pending or running (however far out it
/// is scheduled), and the fake model has answered every request. A test proves that
/// something did not happen (a message answered twice) after this, not after a fixed wait.
async fn settle(fake: &FakeAnthropic, database_url: &str) {
    wait_for("the job queue to be empty", || async {
        jobs_idle(database_url, Duration::from_secs(3600))
            .await
            .then_some(())
    })
    .await;
    settled(fake).await;
}

/// Waits until the fake model has answered a request with the rule named `rule`.
async fn wait_rule(fake: &FakeAnthropic, rule: &str) {
    wait_for(format!("the model's rule {rule:?} to be used"), || async {
        fake.message_requests()
            .iter()
            .any(|r| r.rule_name.as_deref() == Some(rule))
            .then_some(())
    })
    .await;
}

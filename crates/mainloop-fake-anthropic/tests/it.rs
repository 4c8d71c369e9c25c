//! End-to-end tests: the HTTP wire format, the control endpoints, the binary, and the real
//! `claude` CLI driven through a question and a plan approval.

// A skipped CLI test says so on stderr; that is the point of the message.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mainloop_fake_anthropic::{FakeAnthropic, LoggedRequest, NO_MATCH_TEXT, Script};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn start(yaml: &str) -> TestResult<FakeAnthropic> {
    Ok(FakeAnthropic::start(Script::from_yaml(yaml)?).await?)
}

async fn post(url: &str, body: &Value) -> TestResult<reqwest::Response> {
    Ok(reqwest::Client::new()
        .post(url)
        .header("x-api-key", "sk-test")
        .json(body)
        .send()
        .await?)
}

fn user(text: &str, stream: bool) -> Value {
    json!({"model": "claude-test", "max_tokens": 100, "stream": stream,
           "messages": [{"role": "user", "content": text}],
           "tools": [{"name": "Write", "input_schema": {"type": "object"}}]})
}

/// `(event name, data)` pairs of an SSE body.
fn parse_sse(body: &str) -> TestResult<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for frame in body.split("\n\n").filter(|f| !f.trim().is_empty()) {
        let mut name = None;
        let mut data = None;
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str::<Value>(v)?);
            }
        }
        out.push((
            name.ok_or("frame without event")?,
            data.ok_or("frame without data")?,
        ));
    }
    Ok(out)
}

const TOOL_SCRIPT: &str = r#"
rules:
  - name: tool
    match: {user_contains: "write it", tool_offered: Write}
    reply:
      - text: "Writing the file now."
      - tool_use: {name: Write, input: {file_path: /tmp/x.txt, content: "héllo\nwörld", nested: {list: [1, 2, 3]}}}
"#;

#[tokio::test]
async fn streaming_reply_uses_the_real_event_sequence() -> TestResult {
    let fake = start(TOOL_SCRIPT).await?;
    let resp = post(
        &format!("{}/v1/messages?beta=true", fake.base_url()),
        &user("please write it", true),
    )
    .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = parse_sse(&resp.text().await?)?;
    for (name, data) in &events {
        assert_eq!(
            data["type"],
            name.as_str(),
            "event name and data type agree"
        );
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let squeezed: Vec<&str> = names.iter().copied().fold(Vec::new(), |mut acc, n| {
        if acc.last() != Some(&n) {
            acc.push(n);
        }
        acc
    });
    assert_eq!(
        squeezed,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let start = &events[0].1["message"];
    assert_eq!(start["model"], "claude-test");
    assert_eq!(start["content"], json!([]));

    let deltas = |index: u64, kind: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|(n, d)| {
                n == "content_block_delta" && d["index"] == index && d["delta"]["type"] == kind
            })
            .map(|(_, d)| d["delta"].clone())
            .collect()
    };
    let text: String = deltas(0, "text_delta")
        .iter()
        .filter_map(|d| d["text"].as_str())
        .collect();
    assert_eq!(text, "Writing the file now.");

    let tool_start = events
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["index"] == 1)
        .ok_or("no tool block")?;
    let block = &tool_start.1["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "Write");
    assert!(
        block["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("toolu_fake_"))
    );
    let parts = deltas(1, "input_json_delta");
    assert!(parts.len() > 1, "tool input is split into several chunks");
    let json_text: String = parts
        .iter()
        .filter_map(|d| d["partial_json"].as_str())
        .collect();
    let input: Value = serde_json::from_str(&json_text)?;
    assert_eq!(
        input,
        json!({"file_path": "/tmp/x.txt", "content": "héllo\nwörld", "nested": {"list": [1, 2, 3]}})
    );

    let (_, message_delta) = &events[events.len() - 2];
    assert_eq!(message_delta["delta"]["stop_reason"], "tool_use");
    assert!(
        message_delta["usage"]["output_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );

    let log = fake.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].path, "/v1/messages?beta=true");
    assert_eq!(log[0].rule_name.as_deref(), Some("tool"));
    assert_eq!(log[0].body["messages"][0]["content"], "please write it");
    Ok(())
}

#[tokio::test]
async fn non_streaming_reply_is_a_full_message() -> TestResult {
    let fake = start(TOOL_SCRIPT).await?;
    let resp = post(
        &format!("{}/v1/messages", fake.base_url()),
        &user("write it", false),
    )
    .await?;
    assert_eq!(resp.status(), 200);
    let msg: Value = resp.json().await?;
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["stop_reason"], "tool_use");
    assert_eq!(
        msg["content"][0],
        json!({"type": "text", "text": "Writing the file now."})
    );
    assert_eq!(
        msg["content"][1]["input"]["nested"],
        json!({"list": [1, 2, 3]})
    );
    Ok(())
}

#[tokio::test]
async fn error_rule_answers_with_status_retry_after_and_error_shape() -> TestResult {
    let fake = start(
        r#"
rules:
  - name: busy
    match: {times: 1}
    status: 529
    retry_after: 3
  - name: limited
    match: {user_contains: limit}
    status: 429
    error: {message: "slow down"}
    headers:
      anthropic-ratelimit-unified-status: rejected
      anthropic-ratelimit-unified-reset: "1796529488"
  - reply: [{text: recovered}]
"#,
    )
    .await?;
    let url = format!("{}/v1/messages", fake.base_url());
    let resp = post(&url, &user("hi", true)).await?;
    assert_eq!(resp.status(), 529);
    assert_eq!(resp.headers()["retry-after"], "3");
    let body: Value = resp.json().await?;
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "fake overloaded_error"}})
    );

    let resp = post(&url, &user("limit me", false)).await?;
    assert_eq!(resp.status(), 429);
    let header = |name: &str| resp.headers()[name].to_str().unwrap_or_default().to_owned();
    assert_eq!(header("anthropic-ratelimit-unified-status"), "rejected");
    assert_eq!(header("anthropic-ratelimit-unified-reset"), "1796529488");
    assert!(resp.headers().get("retry-after").is_none());
    let body: Value = resp.json().await?;
    assert_eq!(
        body["error"],
        json!({"type": "rate_limit_error", "message": "slow down"})
    );

    let msg: Value = post(&url, &user("hi", false)).await?.json().await?;
    assert_eq!(
        msg["content"][0]["text"], "recovered",
        "the error rule was consumed"
    );
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [529, 429, 200]);
    Ok(())
}

#[tokio::test]
async fn times_consumes_a_rule_then_the_fallback_answers() -> TestResult {
    let fake = start("rules: [{name: once, match: {times: 1}, reply: [{text: first}]}]").await?;
    let url = format!("{}/v1/messages", fake.base_url());
    let first: Value = post(&url, &user("a", false)).await?.json().await?;
    assert_eq!(first["content"][0]["text"], "first");
    let second: Value = post(&url, &user("b", false)).await?.json().await?;
    assert_eq!(second["content"][0]["text"], NO_MATCH_TEXT);
    assert_eq!(second["stop_reason"], "end_turn");
    let log = fake.message_requests();
    assert_eq!((log[0].matched, log[1].matched), (true, false));
    assert_eq!(log[1].rule, None);

    // Reset clears the log and restores consumed rules.
    fake.reset();
    assert!(fake.requests().is_empty());
    let again: Value = post(&url, &user("c", false)).await?.json().await?;
    assert_eq!(again["content"][0]["text"], "first");
    Ok(())
}

#[tokio::test]
async fn echo_fallback_repeats_the_users_last_text_block() -> TestResult {
    let fake = start("fallback: echo").await?;
    let body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>ctx</system-reminder>"}, {"type": "text", "text": "ping"}]}]});
    let msg: Value = post(&format!("{}/v1/messages", fake.base_url()), &body)
        .await?
        .json()
        .await?;
    assert_eq!(msg["content"][0]["text"], "echo: ping");
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_anthropic_errors_and_are_logged() -> TestResult {
    let fake = start("rules: []").await?;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/messages", fake.base_url());
    for body in ["{not json", "[1,2]", r#"{"model":"m"}"#] {
        let resp = client.post(&url).body(body).send().await?;
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await?;
        assert_eq!(err["type"], "error");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    let resp = client
        .get(format!("{}/v1/unknown/thing", fake.base_url()))
        .send()
        .await?;
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().await?;
    assert_eq!(err["error"]["type"], "not_found_error");
    let log = fake.requests();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0].body, json!("{not json"));
    assert_eq!(log[3].path, "/v1/unknown/thing");
    Ok(())
}

#[tokio::test]
async fn control_endpoints_and_count_tokens() -> TestResult {
    let fake = start("rules: []").await?;
    let base = fake.base_url();
    let client = reqwest::Client::new();
    let counted: Value = post(
        &format!("{base}/v1/messages/count_tokens"),
        &user(&"x".repeat(400), false),
    )
    .await?
    .json()
    .await?;
    assert!(counted["input_tokens"].as_u64().is_some_and(|n| n >= 100));

    let script = json!({"rules": [{"name": "new", "reply": [{"text": "from new script"}]}]});
    let resp = client
        .post(format!("{base}/_fake/script"))
        .json(&script)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let msg: Value = post(&format!("{base}/v1/messages"), &user("hi", false))
        .await?
        .json()
        .await?;
    assert_eq!(msg["content"][0]["text"], "from new script");
    let resp = client
        .post(format!("{base}/_fake/script"))
        .body("{\"rules\": 5}")
        .send()
        .await?;
    assert_eq!(resp.status(), 400);

    let log: Vec<LoggedRequest> = client
        .get(format!("{base}/_fake/requests"))
        .send()
        .await?
        .json()
        .await?;
    let paths: Vec<&str> = log.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/v1/messages/count_tokens", "/v1/messages"]);
    assert_eq!(log[1].rule_name.as_deref(), Some("new"));

    client.post(format!("{base}/_fake/reset")).send().await?;
    let log: Vec<LoggedRequest> = client
        .get(format!("{base}/_fake/requests"))
        .send()
        .await?
        .json()
        .await?;
    assert!(log.is_empty());
    Ok(())
}

#[tokio::test]
async fn delayed_stream_still_arrives_whole() -> TestResult {
    let fake = start("rules: [{delay_ms: 5, reply: [{text: slow and steady}]}]").await?;
    let started = std::time::Instant::now();
    let resp = post(
        &format!("{}/v1/messages", fake.base_url()),
        &user("hi", true),
    )
    .await?;
    let events = parse_sse(&resp.text().await?)?;
    assert!(started.elapsed() >= Duration::from_millis(5 * (events.len() as u64 - 1)));
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("message_stop"));
    Ok(())
}

#[tokio::test]
async fn binary_prints_its_address_and_serves_the_script() -> TestResult {
    let script = crate_dir().join("scripts/hello.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mainloop-fake-anthropic"))
        .args(["--listen", "127.0.0.1:0", "--script"])
        .arg(&script)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .ok_or("no output")?;
    let base = line
        .strip_prefix("listening on ")
        .ok_or("unexpected first line")?;
    let msg: Value = post(&format!("{base}/v1/messages"), &user("hello", false))
        .await?
        .json()
        .await?;
    assert_eq!(msg["content"][0]["text"], "Hello from the fake model.");
    let msg: Value = post(&format!("{base}/v1/messages"), &user("hello", false))
        .await?
        .json()
        .await?;
    assert_eq!(
        msg["content"][0]["text"], "echo: hello",
        "times: 1 then the echo fallback"
    );
    child.kill().await?;
    Ok(())
}

/// The real CLI over stream-json: lines in on stdin, lines out on stdout.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Cli {
    fn spawn(claude: &Path, base_url: &str, home: &Path, cwd: &Path) -> TestResult<Self> {
        let mut child = Command::new(claude)
            .args([
                "-p",
                "--input-format",
                "stream-json",
                "--output-format",
                "stream-json",
                "--verbose",
            ])
            .args([
                "--permission-prompt-tool",
                "stdio",
                "--permission-mode",
                "plan",
            ])
            .current_dir(cwd)
            // A clean environment keeps a developer's own Claude settings and keys out.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("ANTHROPIC_BASE_URL", base_url)
            .env("ANTHROPIC_API_KEY", "sk-test")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    async fn send(&mut self, msg: Value) -> TestResult {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin.write_all(format!("{msg}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Reads lines until one satisfies `want`; a `result` line first is an error unless wanted.
    async fn until(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> TestResult<Value> {
        while let Some(line) = self.lines.next_line().await? {
            let v: Value = serde_json::from_str(&line)?;
            if want(&v) {
                return Ok(v);
            }
            if v["type"] == "result" {
                return Err(format!("wanted {what}, got result: {line}").into());
            }
        }
        Err(format!("CLI exited while waiting for {what}").into())
    }

    async fn can_use_tool(&mut self, tool: &str) -> TestResult<Value> {
        self.until(tool, |v| {
            v["type"] == "control_request" && v["request"]["subtype"] == "can_use_tool"
        })
        .await
        .and_then(|v| {
            if v["request"]["tool_name"] == tool {
                Ok(v)
            } else {
                Err(format!("expected {tool}, got {v}").into())
            }
        })
    }

    async fn respond(&mut self, request: &Value, response: Value) -> TestResult {
        let id = request["request_id"].clone();
        self.send(json!({"type": "control_response", "response": {"subtype": "success", "request_id": id, "response": response}})).await
    }
}

fn git(dir: &Path, args: &[&str]) -> TestResult {
    let status = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("git {args:?} failed").into())
    }
}

fn latest_tool_result(req: &LoggedRequest) -> String {
    let messages = req.body["messages"].as_array().cloned().unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .cloned()
        .unwrap_or_default();
    last_user["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| b["content"].to_string())
        .collect()
}

#[tokio::test]
async fn real_claude_cli_asks_plans_and_gets_approval() -> TestResult {
    let claude = crate_dir().join("../../node_modules/.bin/claude");
    if !claude.exists() {
        eprintln!(
            "SKIPPED real_claude_cli_asks_plans_and_gets_approval: {} not found (run `npm install` at the repo root)",
            claude.display()
        );
        return Ok(());
    }
    let fake = FakeAnthropic::start(Script::from_path(
        &crate_dir().join("scripts/claude-ask-and-plan.yaml"),
    )?)
    .await?;
    let home = tempfile::tempdir()?;
    let repo = tempfile::tempdir()?;
    git(repo.path(), &["init", "-q"])?;
    git(
        repo.path(),
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "init",
        ],
    )?;

    let mut cli = Cli::spawn(&claude, &fake.base_url(), home.path(), repo.path())?;
    let run = async {
        cli.send(json!({"type": "control_request", "request_id": "init-1", "request": {"subtype": "initialize"}})).await?;
        cli.send(json!({"type": "user", "message": {"role": "user", "content": "pick a color for the shed"}})).await?;
        let init = cli
            .until("system/init", |v| {
                v["type"] == "system" && v["subtype"] == "init"
            })
            .await?;
        assert!(
            init["tools"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("AskUserQuestion")))
        );

        let ask = cli.can_use_tool("AskUserQuestion").await?;
        let mut input = ask["request"]["input"].clone();
        assert_eq!(input["questions"][0]["question"], "Which color?");
        assert_eq!(input["questions"][0]["options"][1]["label"], "Blue");
        input["answers"] = json!({"Which color?": "Red"});
        cli.respond(&ask, json!({"behavior": "allow", "updatedInput": input}))
            .await?;

        let exit = cli.can_use_tool("ExitPlanMode").await?;
        let plan_input = &exit["request"]["input"];
        assert_eq!(
            plan_input["plan"],
            "# Plan\n\nPaint the shed in the chosen color.\n"
        );
        assert!(
            plan_input["planFilePath"]
                .as_str()
                .is_some_and(|p| p.starts_with(&*home.path().to_string_lossy()))
        );
        cli.respond(
            &exit,
            json!({"behavior": "deny", "message": "Please add a second coat."}),
        )
        .await?;

        let exit = cli.can_use_tool("ExitPlanMode").await?;
        assert!(
            exit["request"]["input"]["plan"]
                .as_str()
                .is_some_and(|p| p.contains("revised"))
        );
        cli.respond(
            &exit,
            json!({"behavior": "allow", "updatedInput": exit["request"]["input"].clone()}),
        )
        .await?;

        let result = cli.until("result", |v| v["type"] == "result").await?;
        cli.stdin = None;
        let status = cli.child.wait().await?;
        TestResult::Ok((result, status))
    };
    let (result, status) = tokio::time::timeout(Duration::from_secs(120), run).await??;
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(result["result"], "Plan approved; starting work.");
    assert!(status.success(), "claude exited with {status}");

    let log = fake.message_requests();
    let rules: Vec<&str> = log.iter().filter_map(|r| r.rule_name.as_deref()).collect();
    assert_eq!(
        rules,
        [
            "ask-color",
            "write-plan",
            "exit-plan",
            "revise-plan",
            "exit-plan",
            "approved"
        ]
    );
    assert!(log.iter().all(|r| r.matched));
    assert!(
        latest_tool_result(&log[1]).contains(r#"\"Which color?\"=\"Red\""#),
        "answer reached the model: {}",
        latest_tool_result(&log[1])
    );
    assert!(latest_tool_result(&log[3]).contains("Please add a second coat."));
    Ok(())
}

#[tokio::test]
async fn a_slow_reply_is_in_flight_until_its_last_event_is_sent() -> TestResult {
    let fake = start(
        r#"
rules:
  - match: {user_contains: "slow"}
    delay_ms: 100
    reply: [{text: "one two three"}]
"#,
    )
    .await?;
    assert_eq!(fake.in_flight(), 0);
    let response = post(
        &format!("{}/v1/messages", fake.base_url()),
        &user("slow", true),
    )
    .await?;
    // The headers are out; the events are still coming.
    assert_eq!(fake.in_flight(), 1);
    let body = response.text().await?;
    assert!(body.contains("message_stop"), "{body}");
    assert_eq!(fake.in_flight(), 0, "answered in full");
    Ok(())
}

#[tokio::test]
async fn a_test_puts_its_own_rules_in_front_of_a_shared_script() -> TestResult {
    let own = Script::from_yaml(
        r#"
rules:
  - name: own
    match: {user_contains: "hello"}
    reply: [{text: "mine"}]
"#,
    )?;
    let shared = Script::from_path(&crate_dir().join("scripts/claude-ask-and-plan.yaml"))?;
    let script = own.then(shared);
    assert_eq!(script.rules[0].name.as_deref(), Some("own"));
    assert_eq!(script.rules[1].name.as_deref(), Some("greet"));
    let fake = FakeAnthropic::start(script).await?;
    let r = post(
        &format!("{}/v1/messages", fake.base_url()),
        &user("hello", false),
    )
    .await?;
    assert_eq!(r.json::<Value>().await?["content"][0]["text"], "mine");
    Ok(())
}

#[tokio::test]
async fn the_shared_greeter_script_loads() -> TestResult {
    let greeter = Script::from_path(&crate_dir().join("scripts/greeter.yaml"))?;
    assert!(
        greeter
            .rules
            .iter()
            .any(|r| r.name.as_deref() == Some("ask"))
    );
    Ok(())
}

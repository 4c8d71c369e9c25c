//! The OpenAI Responses endpoint over HTTP, and the real `codex` CLI running a command and
//! applying a patch against it.

// A skipped CLI test says so on stderr; that is the point of the message.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mainloop_fake_anthropic::{FakeAnthropic, Script};
use serde_json::{Value, json};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn post(url: &str, body: &Value) -> TestResult<reqwest::Response> {
    Ok(reqwest::Client::new()
        .post(url)
        .bearer_auth("sk-test")
        .json(body)
        .send()
        .await?)
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

const SCRIPT: &str = r#"
rules:
  - name: run
    match: {user_contains: "run it", tool_offered: exec_command}
    reply:
      - text: "Running."
      - tool_use: {name: exec_command, input: {cmd: "echo hi"}}
  - name: patch
    match: {tool_result_for: exec_command, tool_result_contains: "hi"}
    reply:
      - tool_use: {name: apply_patch, input: {patch: "*** Begin Patch\n*** End Patch\n"}}
  - name: busy
    match: {user_contains: "busy"}
    status: 429
    retry_after: 2
  - name: broke
    match: {user_contains: "broke"}
    status: 500
    error: {type: server_error, message: "it broke"}
  - name: spent
    match: {user_contains: "spent"}
    status: 429
    error:
      type: usage_limit_reached
      message: "The usage limit has been reached"
      fields: {plan_type: plus, resets_at: 1796571057}
    headers: {x-codex-primary-used-percent: "100", x-codex-primary-reset-at: "1796571057"}
"#;

fn request(input: &Value) -> Value {
    json!({"model": "gpt-5.5", "instructions": "You are Codex.", "stream": true, "input": input,
           "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
                     {"type": "custom", "name": "apply_patch"}]})
}

#[tokio::test]
async fn responses_stream_a_message_and_calls_then_match_their_outputs() -> TestResult {
    let fake = FakeAnthropic::start(Script::from_yaml(SCRIPT)?).await?;
    let url = format!("{}/v1/responses", fake.base_url());
    let first = request(&json!([
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sandbox"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "please run it"}]}
    ]));
    let r = post(&url, &first).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let events = parse_sse(&r.text().await?)?;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.output_item.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_item.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert!(events.iter().all(|(n, d)| d["type"] == n.as_str()));
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(text, "Running.");
    let call = &events[5].1["item"];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "exec_command");
    assert_eq!(call["arguments"], r#"{"cmd":"echo hi"}"#);
    let usage = &events[6].1["response"]["usage"];
    assert!(usage["input_tokens"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["input_tokens"].as_u64().unwrap_or(0)
                + usage["output_tokens"].as_u64().unwrap_or(0)
        )
    );

    // The next turn carries the call and its output; `tool_result_for` sees it.
    let mut second = first.clone();
    if let Some(input) = second["input"].as_array_mut() {
        input.push(call.clone());
        input.push(json!({"type": "function_call_output", "call_id": call["call_id"], "output": "Process exited with code 0\nOutput:\nhi\n"}));
    }
    let r = post(&url, &second).await?;
    let events = parse_sse(&r.text().await?)?;
    let patch = &events
        .iter()
        .find(|(n, _)| n == "response.output_item.done")
        .ok_or("no item")?
        .1["item"];
    assert_eq!(patch["type"], "custom_tool_call");
    assert_eq!(patch["name"], "apply_patch");
    assert_eq!(patch["input"], "*** Begin Patch\n*** End Patch\n");

    // Not streamed: the whole response object.
    let mut plain = first.clone();
    plain["stream"] = json!(false);
    let body: Value = post(&url, &plain).await?.json().await?;
    assert_eq!(body["object"], "response");
    assert_eq!(body["output"][1]["name"], "exec_command");

    let log = fake.message_requests();
    let rules: Vec<Option<&str>> = log.iter().map(|r| r.rule_name.as_deref()).collect();
    assert_eq!(rules, [Some("run"), Some("patch"), Some("run")]);
    assert_eq!(log[0].path, "/v1/responses");
    assert_eq!(log[0].body, first, "the log keeps the body as sent");
    assert_eq!(fake.in_flight(), 0);
    Ok(())
}

#[tokio::test]
async fn responses_errors_have_openai_shape_and_bad_bodies_are_logged() -> TestResult {
    let fake = FakeAnthropic::start(Script::from_yaml(SCRIPT)?).await?;
    let url = format!("{}/v1/responses", fake.base_url());
    let r = post(&url, &request(&json!("busy now"))).await?;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_exceeded");

    // A usage limit: fields beside the error's own, and the headers Codex reads.
    let r = post(&url, &request(&json!("all spent"))).await?;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-codex-primary-used-percent"], "100");
    assert_eq!(r.headers()["x-codex-primary-reset-at"], "1796571057");
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["type"], "usage_limit_reached");
    assert_eq!(body["error"]["plan_type"], "plus");
    assert_eq!(body["error"]["resets_at"], 1_796_571_057);
    assert_eq!(body["error"]["message"], "The usage limit has been reached");

    let r = post(&url, &request(&json!("it broke"))).await?;
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["message"], "it broke");
    assert_eq!(body["error"]["code"], "server_error");

    let r = post(&url, &json!({"model": "gpt-5.5"})).await?;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let r = reqwest::Client::new()
        .post(&url)
        .body("not json")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert!(
        r.json::<Value>().await?["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("JSON"))
    );

    // No rule: the fallback text, logged as unmatched.
    let r = post(&url, &request(&json!("something else"))).await?;
    let events = parse_sse(&r.text().await?)?;
    assert!(events.iter().any(|(_, d)| d["item"]["content"][0]["text"]
        == mainloop_fake_anthropic::NO_MATCH_TEXT));

    let statuses: Vec<(u16, bool)> = fake
        .message_requests()
        .iter()
        .map(|r| (r.status, r.matched))
        .collect();
    assert_eq!(
        statuses,
        [
            (429, true),
            (429, true),
            (500, true),
            (400, true),
            (400, true),
            (200, false)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_delayed_response_is_in_flight_until_its_last_event() -> TestResult {
    let script = "rules: [{reply: [{text: slow reply}], delay_ms: 30}]";
    let fake = FakeAnthropic::start(Script::from_yaml(script)?).await?;
    let url = format!("{}/v1/responses", fake.base_url());
    let r = post(&url, &request(&json!("hi"))).await?;
    assert_eq!(fake.in_flight(), 1, "headers arrived, events still coming");
    let events = parse_sse(&r.text().await?)?;
    assert_eq!(
        events.last().map(|(n, _)| n.as_str()),
        Some("response.completed")
    );
    assert_eq!(fake.in_flight(), 0);
    Ok(())
}

#[tokio::test]
async fn the_shared_codex_greeter_script_loads() -> TestResult {
    let script = Script::from_path(&crate_dir().join("scripts/codex-greeter.yaml"))?;
    assert!(
        script
            .rules
            .iter()
            .any(|r| r.name.as_deref() == Some("write-greeting"))
    );
    Ok(())
}

/// A directory under `<repo>/target/test-homes/`, removed when dropped: Codex refuses
/// to set up its sandbox helpers when its home is under the temporary directory.
struct TestHome(PathBuf);

impl TestHome {
    fn new(name: &str) -> TestResult<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let dir = crate_dir()
            .join("../../target/test-homes")
            .join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(std::fs::canonicalize(dir)?))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pinned `codex` CLI, or None (the test skips) when `npm install` has not run;
/// under CI a missing CLI is a failure.
fn codex_path() -> Option<PathBuf> {
    let path = crate_dir().join("../../node_modules/.bin/codex");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing",
        path.display()
    );
    None
}

/// `codex exec` with the fake as its model provider (`gpt-5.5`, so `apply_patch` is
/// offered; no retries) in `work`, with its home, `HOME` and `TMPDIR` under `home`.
async fn codex_exec(
    codex: &Path,
    fake: &FakeAnthropic,
    home: &Path,
    sandbox: &str,
    prompt: &str,
) -> TestResult<std::process::Output> {
    let (codex_home, tmp, work) = (home.join("codex"), home.join("tmp"), home.join("work"));
    for dir in [&codex_home, &tmp, &work] {
        std::fs::create_dir_all(dir)?;
    }
    let provider = format!(
        r#"model_providers.fake={{name="Fake",base_url="{}/v1",wire_api="responses",env_key="FAKE_API_KEY",request_max_retries=0,stream_max_retries=0}}"#,
        fake.base_url()
    );
    let mut cmd = tokio::process::Command::new(codex);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CODEX_HOME", &codex_home)
        .env("TMPDIR", &tmp)
        .env("FAKE_API_KEY", "sk-fake")
        .args(["exec", "--skip-git-repo-check", "--sandbox", sandbox])
        .args([
            "-m",
            "gpt-5.5",
            "-c",
            "model_provider=fake",
            "-c",
            &provider,
        ])
        .arg("-C")
        .arg(&work)
        .arg(prompt)
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), cmd.output()).await??;
    let rules: Vec<Option<String>> = fake
        .message_requests()
        .into_iter()
        .map(|r| r.rule_name)
        .collect();
    assert!(
        output.status.success(),
        "codex exited with {}\nstdout:\n{}\nstderr:\n{}\nrules: {rules:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    Ok(output)
}

/// The shared `codex-greeter` script played by the real CLI: in a read-only sandbox it
/// plans; in a writable one it runs a command, whose output comes back to the model,
/// and adds a file with `apply_patch`.
#[tokio::test]
async fn real_codex_cli_plays_the_codex_greeter() -> TestResult {
    let Some(codex) = codex_path() else {
        eprintln!(
            "SKIPPED real_codex_cli_plays_the_codex_greeter: node_modules/.bin/codex not found (run `npm install` at the repo root)"
        );
        return Ok(());
    };
    let script = Script::from_path(&crate_dir().join("scripts/codex-greeter.yaml"))?;
    let fake = FakeAnthropic::start(script).await?;
    let home = TestHome::new("fake-codex")?;
    let work = home.path().join("work");
    let rule_names = |fake: &FakeAnthropic| -> Vec<Option<String>> {
        let log = fake.message_requests();
        log.into_iter().map(|r| r.rule_name).collect()
    };

    let plan = codex_exec(&codex, &fake, home.path(), "read-only", "build the greeter").await?;
    assert_eq!(rule_names(&fake), [Some("plan".to_owned())]);
    assert!(String::from_utf8_lossy(&plan.stdout).contains("# Plan"));
    assert!(!work.join("greeting.txt").exists());

    fake.reset();
    let done = codex_exec(
        &codex,
        &fake,
        home.path(),
        "workspace-write",
        "build the greeter",
    )
    .await?;
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert_eq!(
        rule_names(&fake),
        ["implement", "write-greeting", "done"].map(|r| Some(r.to_owned())),
        "stdout:\n{stdout}"
    );
    let greeting = std::fs::read_to_string(work.join("greeting.txt"))
        .map_err(|e| format!("greeting.txt was not written ({e}); stdout:\n{stdout}"))?;
    assert_eq!(greeting, "hello\n");
    assert!(
        stdout.contains("All done."),
        "the last message is printed: {stdout}"
    );

    // What Codex sent: both tools offered; the command's output went back as a
    // `function_call_output`, the patch's result as a `custom_tool_call_output`.
    let log = fake.message_requests();
    let tools = log[0].body["tools"].to_string();
    assert!(tools.contains(r#""exec_command""#) && tools.contains(r#""apply_patch""#));
    let input = log[1].body["input"].to_string();
    assert!(input.contains("function_call_output"), "{input}");
    assert!(input.contains("greeter-started-42"), "{input}");
    let input = log[2].body["input"].to_string();
    assert!(input.contains("custom_tool_call_output"), "{input}");
    assert!(input.contains("A greeting.txt"), "{input}");
    Ok(())
}

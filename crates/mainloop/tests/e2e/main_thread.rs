//! The main thread on Claude Code: no API key, the real `claude` CLI (against the fake
//! model) answering the chat with mainloop's tools over MCP, and a SIGKILL mid-turn.

use super::*;

/// The main thread's rules, in front of the shared greeter (which the worker plays).
const SCRIPT: &str = r#"
rules:
  - name: propose
    match: {system_contains: "You are mainloop", user_contains: "greeter please"}
    reply: [{text: "I can spawn a worker to build the greeter in REPO. Shall I?"}]
  - name: spawn
    match: {system_contains: "You are mainloop", user_contains: "yes, go"}
    reply:
      - {text: "Spawning."}
      - tool_use: {name: mcp__mainloop__spawn_task, input: {description: "build the greeter", repo: "REPO"}}
  - name: spawn-second
    match: {system_contains: "You are mainloop", user_contains: "another one"}
    reply:
      - tool_use: {name: mcp__mainloop__spawn_task, input: {description: "build the greeter, second copy", repo: "REPO"}}
  # The first answer after the second spawn hangs, so the server dies mid-turn.
  - name: second-spawned-slowly
    match: {system_contains: "You are mainloop", tool_result_for: mcp__mainloop__spawn_task, tool_result_contains: "second copy", times: 1}
    delay_ms: 60000
    reply: [{text: "This answer never arrives."}]
  - name: spawned
    match: {system_contains: "You are mainloop", tool_result_for: mcp__mainloop__spawn_task}
    reply: [{text: "Spawned the worker."}]
"#;

fn start(data: &Path, fake: &FakeAnthropic, claude: &Path) -> Server {
    let mut cmd = command(data, None);
    // No API key anywhere: the user's own Claude Code answers, signed in by token.
    cmd.env("ANTHROPIC_BASE_URL", fake.base_url())
        .env("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-fake")
        .env("MAINLOOP_WORKERS__CLAUDE_COMMAND", claude)
        // Idle processes stop soon, so a later turn also resumes in a new one.
        .env("MAINLOOP_WORKERS__IDLE_TIMEOUT_SECS", "3")
        .env("MAINLOOP_LOG__FILTER", "warn")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    Server::spawn(cmd)
}

async fn tasks_named(base: &str, token: &str, description: &str) -> Vec<Value> {
    get(base, token, "/api/tasks").await["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["description"] == description)
        .cloned()
        .collect()
}

async fn say(base: &str, token: &str, text: &str) -> String {
    let (status, body) = post(base, token, "/api/chat", json!({"text": text})).await;
    assert_eq!(status, 202, "{body}");
    body["message_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_answers_the_chat_and_spawns_once_across_a_sigkill() {
    let repo = GitRepo::new();
    let repo_path = repo.path().display().to_string();
    let script = Script::from_yaml(&SCRIPT.replace("REPO", &repo_path))
        .unwrap()
        .then(script("greeter"));
    let fake = FakeAnthropic::start(script).await.unwrap();
    let claude = claude_path().expect("the pinned claude CLI (npm ci at the root)");
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &fake, &claude);
    let token = server.token.clone().unwrap();
    let base = server.base.clone();

    let model = get(&base, &token, "/api/model").await;
    assert_eq!(model["provider"], "claude-code", "{model}");
    assert_eq!(model["ready"], true, "{model}");

    // Ask, then confirm: the model calls mainloop's tool over MCP.
    let ask = say(&base, &token, "a greeter please").await;
    let proposal = wait_reply(&base, &token, &ask).await;
    assert!(
        proposal["text"].as_str().unwrap().contains("Shall I?"),
        "{proposal}"
    );
    let go = say(&base, &token, "yes, go").await;
    let done = wait_reply(&base, &token, &go).await;
    assert_eq!(done["text"], "Spawned the worker.");
    let first = tasks_named(&base, &token, "build the greeter").await;
    assert_eq!(first.len(), 1, "{first:?}");
    let id = first[0]["id"].as_str().unwrap().to_owned();
    // It runs: the worker (the greeter) asks its questions.
    wait_task_state(&base, &token, &id, "waiting_answers").await;
    // The turn's messages are stored like the API provider's: the tool call under the
    // tool's own name, then its result, then the reply.
    let turn: Vec<Value> = messages(&base, &token)
        .await
        .into_iter()
        .filter(|m| m["turn_id"] == go.as_str())
        .collect();
    assert!(
        turn.iter().any(|m| m["content"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["type"] == "tool_use" && b["name"] == "spawn_task")),
        "{turn:?}"
    );
    let model = get(&base, &token, "/api/model").await;
    assert!(model["usage"]["turns"].as_i64().unwrap() >= 2, "{model}");

    // The second spawn happens, then the server dies before the answer.
    let again = say(&base, &token, "another one").await;
    // Killed once the model is answering after the tool ran (the slow answer asked).
    wait_for("the slow answer to be asked for", || async {
        fake.message_requests()
            .iter()
            .any(|r| r.rule_name.as_deref() == Some("second-spawned-slowly"))
            .then_some(())
    })
    .await;
    assert_eq!(
        tasks_named(&base, &token, "build the greeter, second copy")
            .await
            .len(),
        1
    );
    server.sigkill();
    let server = start(data.path(), &fake, &claude);
    let answer = wait_reply(&server.base, &token, &again).await;
    assert_eq!(answer["text"], "Spawned the worker.");
    assert_eq!(
        tasks_named(&server.base, &token, "build the greeter, second copy")
            .await
            .len(),
        1,
        "the replayed turn spawned again"
    );
    assert_eq!(replies(&server.base, &token, &again).await.len(), 1);
    assert_eq!(replies(&server.base, &token, &go).await.len(), 1);

    // Idle, the process is stopped (its record goes with it); the next turn resumes.
    let running = || {
        std::fs::read_dir(data.path().join("agents"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("main-thread-"))
            })
            .unwrap_or(false)
    };
    wait_for("the idle main thread to stop", || async {
        (!running()).then_some(())
    })
    .await;
    let later = say(&server.base, &token, "a greeter please").await;
    let reply = wait_reply(&server.base, &token, &later).await;
    assert!(
        reply["text"].as_str().unwrap().contains("Shall I?"),
        "{reply}"
    );
}

/// How far ahead the usage limit resets: long enough to see the turn wait.
const LIMIT_RESET_IN_SECS: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_at_its_subscription_limit_answers_by_itself_after_the_reset() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let reset = now() + LIMIT_RESET_IN_SECS;
    let limit = mainloop_fake_anthropic::usage_limit_rule(
        "limit",
        r#"{system_contains: "You are mainloop", user_contains: "limit please", times: 1}"#,
        reset,
    );
    let yaml = format!(
        "rules:\n{limit}  - name: after\n    match: {{system_contains: \"You are mainloop\", \
         user_contains: \"limit please\"}}\n    reply: [{{text: \"Answered after the reset.\"}}]\n"
    );
    let fake = FakeAnthropic::start(Script::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let claude = claude_path().expect("the pinned claude CLI (npm ci at the root)");
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &fake, &claude);
    let token = server.token.clone().unwrap();
    let base = server.base.clone();

    let ask = say(&base, &token, "limit please").await;
    let answer = wait_for_within(
        Duration::from_secs(LIMIT_RESET_IN_SECS + 60),
        "the answer after the reset",
        || async { replies(&base, &token, &ask).await.pop() },
    )
    .await;
    assert_eq!(answer["text"], "Answered after the reset.", "{answer}");
    let rules: Vec<String> = fake
        .message_requests()
        .into_iter()
        .filter_map(|r| r.rule_name)
        .collect();
    assert_eq!(
        rules.iter().filter(|r| *r == "limit").count(),
        1,
        "{rules:?}"
    );
    // Answered once the window reset, not retried while it was spent.
    let at =
        mainloop_domain::Timestamp::parse_rfc3339(answer["created_at"].as_str().unwrap()).unwrap();
    let reset_ms = i64::try_from(reset * 1000).unwrap();
    assert!(at.as_millis() >= reset_ms, "{answer} before {reset}");
    assert_eq!(replies(&base, &token, &ask).await.len(), 1);
}

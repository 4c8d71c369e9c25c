//! The main thread on Claude Code reports its subscription's quota windows: the real
//! `claude` CLI (signed in by token, no API key) against the fake model, whose reply
//! carries the API's `anthropic-ratelimit-unified-*` headers of an account with room
//! left; after one chat turn, `GET /api/usage` lists the `claude` agent's windows.

use super::*;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A reply with the unified rate-limit headers: the 5-hour window 42% used, the weekly
/// one 10%.
fn script(five_hour_reset: u64, weekly_reset: u64) -> String {
    format!(
        r#"
rules:
  - name: hello
    match: {{system_contains: "You are mainloop", user_contains: "hello there"}}
    reply:
      - text: "Hello."
    headers:
      anthropic-ratelimit-unified-status: allowed
      anthropic-ratelimit-unified-reset: "{five_hour_reset}"
      anthropic-ratelimit-unified-representative-claim: five_hour
      anthropic-ratelimit-unified-5h-status: allowed
      anthropic-ratelimit-unified-5h-utilization: "0.42"
      anthropic-ratelimit-unified-5h-reset: "{five_hour_reset}"
      anthropic-ratelimit-unified-7d-status: allowed
      anthropic-ratelimit-unified-7d-utilization: "0.1"
      anthropic-ratelimit-unified-7d-reset: "{weekly_reset}"
"#
    )
}

fn start(data: &Path, fake: &FakeAnthropic, claude: &Path) -> Server {
    let mut cmd = command(data, None);
    // No API key anywhere: the user's own Claude Code answers, on a subscription.
    cmd.env("ANTHROPIC_BASE_URL", fake.base_url())
        .env("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-fake")
        .env("MAINLOOP_WORKERS__CLAUDE_COMMAND", claude)
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    Server::spawn(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_turn_on_claude_code_shows_the_subscriptions_windows_in_the_usage() {
    // Whole seconds from now, as the API sends them.
    let five_hour_reset = now_secs() + 3 * 3600;
    let weekly_reset = now_secs() + 5 * 86_400;
    let yaml = script(five_hour_reset, weekly_reset);
    let fake = FakeAnthropic::start(Script::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let claude = claude_path().expect("the pinned claude CLI (npm ci at the root)");
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &fake, &claude);
    let token = server.token.clone().unwrap();
    let base = server.base.clone();
    let model = get(&base, &token, "/api/model").await;
    assert_eq!(model["provider"], "claude-code", "{model}");

    let before = get(&base, &token, "/api/usage").await;
    assert_eq!(before["windows"], json!([]), "{before}");

    let (status, body) = post(&base, &token, "/api/chat", json!({"text": "hello there"})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["message_id"].as_str().unwrap().to_owned();
    let reply = wait_reply(&base, &token, &id).await;
    assert_eq!(reply["text"], "Hello.", "{reply}");

    // Kept during the turn, before its reply was stored.
    let usage = get(&base, &token, "/api/usage").await;
    let windows = usage["windows"].as_array().unwrap();
    let window = |name: &str| {
        windows
            .iter()
            .find(|w| w["agent"] == "claude" && w["window"] == name)
            .unwrap_or_else(|| panic!("no claude {name} window in {usage}"))
    };
    let five = window("five_hour");
    assert!(
        (five["used_percent"].as_f64().unwrap() - 42.0).abs() < 1e-6,
        "{five}"
    );
    let reset_ms = i64::try_from(five_hour_reset * 1000).unwrap();
    let resets_at =
        mainloop_domain::Timestamp::parse_rfc3339(five["resets_at"].as_str().unwrap()).unwrap();
    assert_eq!(resets_at.as_millis(), reset_ms, "{five}");
    assert_eq!(five["limited"], false, "{five}");
    let weekly = window("seven_day");
    assert!(
        (weekly["used_percent"].as_f64().unwrap() - 10.0).abs() < 1e-6,
        "{weekly}"
    );
}

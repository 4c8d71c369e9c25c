//! A task that meets its agent's usage limit, the fake model refusing it as the real API
//! does (Claude Code on a subscription, and Codex): it holds until the reset the API
//! gave, the server is killed with SIGKILL during the wait, and the restarted server
//! lets it go on by itself at the reset and reach review, leaving no process behind.

use super::*;
use crate::agent_world::{AgentWorld, Cli};
use crate::faults::{ServerLog, spawn_logged};
use mainloop_domain::Timestamp;

/// Unix seconds now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Far enough ahead for the task to meet the limit and the server to be killed and
/// started again before it.
const RESET_IN_SECS: u64 = 20;

/// The Messages API's 429 when a subscription's 5-hour window is spent, for the task's
/// first request; the task's later requests are answered.
fn claude_script(reset: u64) -> String {
    format!(
        r##"
rules:
  - name: done
    match: {{tool_result_for: Bash}}
    reply: [{{text: "Done after the reset."}}]
{limit}  - name: went-on
    match: {{user_contains: "stopped before finishing"}}
    reply:
      - tool_use: {{name: Bash, input: {{command: "printf 'held\\n' > held.txt", description: "Go on"}}}}
  - name: started-again
    match: {{user_contains: "the held task"}}
    reply:
      - tool_use: {{name: Bash, input: {{command: "printf 'held\\n' > held.txt", description: "Again"}}}}
"##,
        limit = mainloop_fake_anthropic::usage_limit_rule(
            "limit",
            r#"{user_contains: "the held task", times: 1}"#,
            reset
        )
    )
}

/// The Responses API's 429 when a Codex plan's 5-hour window is used up, in front of
/// the shared Codex greeter.
fn codex_script(reset: u64) -> String {
    let weekly = reset + 5 * 86_400;
    let rules = format!(
        r##"
rules:
  - name: limit
    match: {{user_contains: "the held task", times: 1}}
    status: 429
    error:
      type: usage_limit_reached
      message: "The usage limit has been reached"
      fields: {{plan_type: plus, resets_at: {reset}}}
    headers:
      x-codex-primary-used-percent: "100"
      x-codex-primary-window-minutes: "300"
      x-codex-primary-reset-at: "{reset}"
      x-codex-secondary-used-percent: "40"
      x-codex-secondary-window-minutes: "10080"
      x-codex-secondary-reset-at: "{weekly}"
  - name: went-on
    match: {{user_contains: "stopped before finishing"}}
    reply:
      - tool_use: {{name: exec_command, input: {{cmd: "printf 'held\\n' > held.txt"}}}}
  - name: started-again
    match: {{user_contains: "the held task"}}
    reply:
      - tool_use: {{name: exec_command, input: {{cmd: "printf 'held\\n' > held.txt"}}}}
  - name: done
    match: {{tool_result_for: exec_command}}
    reply: [{{text: "Done after the reset."}}]
"##
    );
    let greeter = include_str!("../../../mainloop-fake-anthropic/scripts/codex-greeter.yaml");
    let shared = greeter.split_once("\nrules:\n").map_or(greeter, |(_, l)| l);
    format!("{}\n{shared}", rules.trim_end())
}

/// Whether the thread's messages hold `text`.
async fn thread_says(base: &str, token: &str, text: &str) -> bool {
    messages(base, token)
        .await
        .iter()
        .any(|m| m.to_string().contains(text))
}

/// Waits until the task's agent process, if one was recorded, is gone.
async fn no_agent_process(data: &Path, id: &str) {
    let record = data.join("agents").join(id);
    wait_for("no agent process for the task", || async {
        let pid = std::fs::read_to_string(&record)
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok());
        pid.is_none_or(|pid| !alive(pid)).then_some(())
    })
    .await;
}

/// The task "the held task" meets the limit that resets at `reset` (Unix seconds) on a
/// server from `start` on `data`; the server is killed during the hold and started
/// again; the task goes on at the reset and reaches review.
async fn held_through_a_restart(
    start: &dyn Fn() -> (Server, ServerLog),
    data: &Path,
    repo: &Path,
    fake: &FakeAnthropic,
    reset: u64,
) {
    let started = std::time::Instant::now();
    let rules = || -> Vec<String> {
        fake.message_requests()
            .into_iter()
            .map(|r| r.rule_name.unwrap_or_else(|| "<none>".to_owned()))
            .collect()
    };
    let (server, _log) = start();
    let token = server.token.clone().unwrap();
    let body = json!({"description": "the held task", "repo": repo, "skip_plan": true});
    let (status, created) = post(&server.base, &token, "/api/tasks", body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let held = wait_task_state(&server.base, &token, &id, "on_hold").await;
    let until: Timestamp = serde_json::from_value(held["hold"]["until"].clone()).unwrap();
    let reset_ms = i64::try_from(reset * 1000).unwrap();
    assert_eq!(
        until.as_millis(),
        reset_ms,
        "the reset the API gave: {held:#}"
    );
    assert_eq!(held["hold"]["resume_in"], "implementing", "{held:#}");
    assert!(held["error"].is_null(), "{held:#}");
    no_agent_process(data, &id).await;
    let base = server.base.clone();
    wait_for("the on-hold update in the thread", || async {
        thread_says(&base, &token, "on hold: the agent's usage limit")
            .await
            .then_some(())
    })
    .await;
    assert!(
        unix_now() < reset,
        "the limit reset before the server could be killed during the wait"
    );
    server.sigkill();

    // The restarted server keeps the first one's token and the scheduled wake.
    let (server, _log) = start();
    let base = server.base.clone();
    let done = wait_for_within(
        Duration::from_secs(RESET_IN_SECS + 60),
        "the task to go on after the reset",
        || async {
            let t = get(&base, &token, &format!("/api/tasks/{id}")).await;
            (t["state"] == "review" || t["state"] == "failed").then_some(t)
        },
    )
    .await;
    assert_eq!(done["state"], "review", "{done:#} {:?}", rules());
    assert!(done["hold"].is_null(), "{done:#}");
    let woke = mainloop_domain::Timestamp::parse_rfc3339(done["updated_at"].as_str().unwrap());
    assert!(
        woke.is_ok_and(|t| t.as_millis() >= reset_ms),
        "went on only after the reset: {done:#}"
    );
    let rules = rules();
    assert_eq!(
        rules.iter().filter(|r| *r == "limit").count(),
        1,
        "{rules:?}"
    );
    // Its session was kept: resumed and told to go on, not given the task again.
    assert!(rules.iter().any(|r| r == "went-on"), "{rules:?}");
    assert!(!rules.iter().any(|r| r == "started-again"), "{rules:?}");
    let diff = get(&base, &token, &format!("/api/tasks/{id}/diff")).await;
    assert!(diff["text"].as_str().unwrap().contains("+held"), "{diff}");
    assert!(thread_says(&base, &token, "the usage limit reset").await);
    no_agent_process(data, &id).await;
    drop(server);
    let took = started.elapsed().as_secs_f64();
    eprintln!("held through a restart: {took:.1}s, rules {rules:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_at_its_subscription_limit_holds_through_a_restart_and_goes_on_at_the_reset() {
    let Some(claude) = claude_path() else { return };
    let reset = unix_now() + RESET_IN_SECS;
    let fake = FakeAnthropic::start(Script::from_yaml(&claude_script(reset)).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    let start = || {
        let mut cmd = command(data.path(), Some(&fake.base_url()));
        // A subscription, as the CLI learns the reset only on one; the main thread
        // keeps its API key.
        cmd.env_remove("ANTHROPIC_API_KEY")
            .env("MAINLOOP_MODEL__API_KEY", "sk-planted-secret-4242")
            .env("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-fake")
            .env("MAINLOOP_WORKERS__CLAUDE_COMMAND", &claude)
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
        spawn_logged(cmd, data.path())
    };
    held_through_a_restart(&start, data.path(), repo.path(), &fake, reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_at_its_plan_limit_holds_through_a_restart_and_goes_on_at_the_reset() {
    let reset = unix_now() + RESET_IN_SECS;
    let Some(world) = AgentWorld::new(Cli::Codex, &codex_script(reset)).await else {
        return;
    };
    let start = || world.start();
    held_through_a_restart(&start, &world.data.0, world.repo.path(), &world.fake, reset).await;
}

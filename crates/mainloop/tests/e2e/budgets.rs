//! Budgets and the pause with the real `claude` against the fake model: a task past its
//! cost cap of a fraction of a cent holds at its next run with a needs-you item until
//! "continue once"; a daily cap keeps a new task's agent from starting; a pause keeps a
//! task queued across a SIGKILL and a restart, and resume lets it run to review.

use super::*;
use crate::faults::spawn_logged;

/// The check fails until the agent writes `fixed.txt`: the failure is the task's second
/// run, which its cap meets.
const CHECK: &str = "check = \"test -f fixed.txt || { echo 'fixed.txt is missing'; exit 1; }\"\n";

const SCRIPT: &str = r#"
rules:
  - name: fix
    match: {user_contains: "fixed.txt is missing"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'fixed\n' > fixed.txt", description: "Fix"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done."}]
  - name: costly
    match: {user_contains: "the costly task"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'work\n' > work.txt", description: "Work"}}
  - name: second
    match: {user_contains: "the second task"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'second\n' > second.txt", description: "Second"}}
  - name: paused
    match: {user_contains: "the paused task"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'paused\n' > paused.txt", description: "Paused"}}
"#;

fn start(data: &Path, fake: &FakeAnthropic, claude: &Path) -> (Server, crate::faults::ServerLog) {
    spawn_logged(worker_command(data, fake, claude), data)
}

async fn create(base: &str, token: &str, repo: &Path, what: &str) -> String {
    let body = json!({"description": what, "repo": repo, "skip_plan": true});
    let (status, created) = post(base, token, "/api/tasks", body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// How many of the fake's requests matched `rule`.
fn asked(fake: &FakeAnthropic, rule: &str) -> usize {
    fake.message_requests()
        .into_iter()
        .filter(|r| r.rule_name.as_deref() == Some(rule))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_cap_holds_until_continued_once_and_a_daily_cap_starts_nothing() {
    let Some(claude) = claude_path() else { return };
    let fake = FakeAnthropic::start(Script::from_yaml(SCRIPT).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    std::fs::write(repo.path().join(".mainloop.toml"), CHECK).unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "checks"]);
    let (server, _log) = start(data.path(), &fake, &claude);
    let (base, token) = (server.base.as_str(), server.token.clone().unwrap());
    let token = token.as_str();

    let (status, set) = put(base, token, "/api/budgets", json!({"task_usd": 0.0001})).await;
    assert_eq!(status, 200, "{set}");
    let id = create(base, token, repo.path(), "the costly task").await;
    let held = wait_task_state(base, token, &id, "on_hold").await;
    assert_eq!(held["hold"]["kind"], "budget", "{held:#}");
    assert_eq!(held["hold"]["budget"], "task", "{held:#}");
    assert_eq!(held["hold"]["resume_in"], "implementing", "{held:#}");
    let cost = held["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0001, "the first run's cost is recorded: {held:#}");
    let reason = held["hold"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("This task's budget of $0.0001 is reached"),
        "{reason}"
    );
    // The failing check's output has not reached the agent yet: the hold keeps it.
    assert_eq!(asked(&fake, "fix"), 0);
    let inbox = get(base, token, "/api/inbox").await;
    let item = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["task_id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(item["kind"], "budget", "{item:#}");
    assert!(inbox["needs_you"].as_i64().unwrap() >= 1, "{inbox:#}");

    // A raise not above what is spent is refused and changes nothing.
    let path = format!("/api/tasks/{id}/budget");
    let (status, refused) = post(
        base,
        token,
        &path,
        json!({"action": "raise", "usd": 0.0001}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    let (status, once) = post(base, token, &path, json!({"action": "continue_once"})).await;
    assert_eq!(status, 200, "{once}");
    let review = wait_task_state(base, token, &id, "review").await;
    assert_eq!(
        asked(&fake, "fix"),
        1,
        "the check's output reached the agent"
    );
    assert!(review["cost_usd"].as_f64().unwrap() > cost, "{review:#}");
    let (status, again) = post(base, token, &path, json!({"action": "continue_once"})).await;
    assert_eq!(status, 409, "{again}");

    // Today's cap, already spent: a new task's agent never starts.
    let (status, _) = put(base, token, "/api/budgets", json!({"daily_usd": 0.0001})).await;
    assert_eq!(status, 200);
    let second = create(base, token, repo.path(), "the second task").await;
    let held = wait_task_state(base, token, &second, "on_hold").await;
    assert_eq!(held["hold"]["budget"], "day", "{held:#}");
    assert_eq!(asked(&fake, "second"), 0, "the agent did not start");
    // Raising today's budget lets it go on.
    let (status, raised) = post(
        base,
        token,
        &format!("/api/tasks/{second}/budget"),
        json!({"action": "raise", "usd": 100}),
    )
    .await;
    assert_eq!(status, 200, "{raised}");
    wait_task_state(base, token, &second, "review").await;
    assert_eq!(get(base, token, "/api/budgets").await["daily_usd"], 100.0);

    let usage = get(base, token, "/api/usage?days=7").await;
    let today = usage["days"].as_array().unwrap().last().unwrap().clone();
    assert!(today["cost_usd"].as_f64().unwrap() > 0.0, "{usage:#}");
    assert_eq!(today["sources"][0]["source"], "claude", "{usage:#}");
    assert_eq!(usage["tasks"].as_array().unwrap().len(), 2, "{usage:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_keeps_work_queued_across_a_sigkill_and_resume_runs_it() {
    let Some(claude) = claude_path() else { return };
    let fake = FakeAnthropic::start(Script::from_yaml(SCRIPT).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    let (server, _log) = start(data.path(), &fake, &claude);
    let token = server.token.clone().unwrap();
    let (status, paused) = post(&server.base, &token, "/api/pause", json!(null)).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["paused"], true);
    let id = create(&server.base, &token, repo.path(), "the paused task").await;
    // Several scheduler rounds pass and the task stays queued.
    let base = server.base.clone();
    for _ in 0..8 {
        let t = get(&base, &token, &format!("/api/tasks/{id}")).await;
        assert_eq!(t["state"], "queued", "{t:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    server.sigkill();

    let (server, _log) = start(data.path(), &fake, &claude);
    let base = server.base.clone();
    let pause = get(&base, &token, "/api/pause").await;
    assert_eq!(pause, paused, "the pause outlives the process");
    assert_eq!(
        get(&base, &token, &format!("/api/tasks/{id}")).await["state"],
        "queued"
    );
    assert_eq!(asked(&fake, "paused"), 0);
    let (status, resumed) = post(&base, &token, "/api/resume", json!(null)).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed, json!({"paused": false, "since": null}));
    wait_task_state(&base, &token, &id, "review").await;
}

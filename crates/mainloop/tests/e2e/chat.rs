//! Chat through the fake model, and a server SIGKILLed mid-turn.

use super::*;

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
    // The worker may have taken it up already, and failed it (it is no repository).
    assert!(
        ["queued", "planning", "failed"].contains(&tasks[0]["state"].as_str().unwrap()),
        "{}",
        tasks[0]
    );
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
    settle(&fake, &sqlite_url(data.path())).await;
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

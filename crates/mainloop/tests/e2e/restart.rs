//! A task's agent killed with the server mid-implementation, and finished after the
//! restart.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_mid_implementation_finishes_after_restart() {
    let Some(claude) = claude_path() else { return };
    let fake = FakeAnthropic::start(script("long-job")).await.unwrap();
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
    wait_rule(&fake, "slow-work").await;
    let before = get(&server.base, &token, &format!("/api/tasks/{id}")).await;
    assert_eq!(before["state"], "implementing");
    let record = std::fs::read_to_string(data.path().join("agents").join(&id)).unwrap();
    let orphan: u32 = record.split_whitespace().next().unwrap().parse().unwrap();
    // Sandboxed, the agent dies with the server; unsandboxed, it outlives it and the
    // restart must reap it.
    crate::agent_journey::sigkill(server, orphan, true).await;

    let server = start_with_workers(data.path(), &fake, &claude);
    let state = wait_for("the task to finish", || async {
        let t = get(&server.base, &token, &format!("/api/tasks/{id}")).await;
        (t["state"] == "review" || t["state"] == "failed").then_some(t)
    })
    .await;
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

//! A task held at its agent's usage limit, with the real `claude` CLI on a subscription
//! refused by the fake model as the API refuses it: the task waits for the reset the
//! API gave, holding no slot, while the same agent's new work queues and another
//! agent's runs; at the reset it goes on by itself, before the queued task.

use super::{World, claude_path};
use mainloop_domain::TaskId;
use mainloop_domain::records::Task;
use mainloop_domain::task::TaskState;
use mainloop_engine::CreateTask;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The held task's first request meets the 429 the API sends when a subscription's
/// 5-hour window is spent, resetting at `reset` (Unix seconds); every later request is
/// answered. The other agent's task answers slowly, so it is seen running.
fn script(reset: u64) -> String {
    format!(
        r##"
rules:
  - name: done
    match: {{tool_result_for: Bash}}
    reply: [{{text: "Done."}}]
{limit}  - name: went-on
    match: {{user_contains: "stopped before finishing"}}
    reply:
      - tool_use: {{name: Bash, input: {{command: "printf 'held\\n' > held.txt", description: "Go on"}}}}
  - name: held-again
    match: {{user_contains: "held task"}}
    reply:
      - tool_use: {{name: Bash, input: {{command: "printf 'held\\n' > held.txt", description: "Again"}}}}
  - name: queued
    match: {{user_contains: "queued task"}}
    reply:
      - tool_use: {{name: Bash, input: {{command: "printf 'queued\\n' > queued.txt", description: "Queued"}}}}
  - name: other
    match: {{user_contains: "other agent's task"}}
    delay_ms: 1500
    reply:
      - tool_use: {{name: Bash, input: {{command: "printf 'other\\n' > other.txt", description: "Other"}}}}
"##,
        limit = mainloop_fake_anthropic::usage_limit_rule(
            "limit",
            r#"{user_contains: "held task", times: 1}"#,
            reset
        )
    )
}

async fn create(w: &World, description: &str, agent: &str) -> Task {
    w.engine
        .create_task(
            w.user,
            &CreateTask {
                description: description.into(),
                repo: w.repo.path().display().to_string(),
                skip_plan: true,
                model: None,
                agent: Some(agent.into()),
                budget_usd: None,
            },
        )
        .await
        .unwrap()
}

async fn states(w: &World, ids: &[TaskId]) -> Vec<TaskState> {
    let mut out = Vec::new();
    for id in ids {
        out.push(w.task(*id).await.state);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_at_its_usage_limit_holds_no_slot_and_goes_on_after_the_reset() {
    let Some(claude) = claude_path() else { return };
    // Far enough ahead to see the other agent's task run meanwhile.
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 12;
    let agents = [("claude", None), ("claude-other", None)];
    let timeouts = (Duration::from_secs(600), Duration::from_secs(120));
    let w = World::assemble_with_auth(
        vec![claude.display().to_string()],
        Some(&script(reset)),
        1,
        None,
        timeouts,
        false,
        &agents,
        // A subscription: the CLI learns the reset only on one.
        &[("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-fake")],
    )
    .await;
    let held = create(&w, "the held task", "claude").await;
    let on_hold = w.wait_state(held.id, TaskState::OnHold).await;
    let hold = on_hold.hold.clone().unwrap();
    let until = i64::try_from(reset * 1000).unwrap();
    assert_eq!(hold.until.map(|t| t.as_millis()), Some(until), "{hold:?}");
    assert_eq!(hold.resume_in, TaskState::Implementing);
    assert!(hold.reason.contains("hit your"), "{}", hold.reason);
    assert!(on_hold.error.is_none(), "{:?}", on_hold.error);
    // The CLI's notice of the spent window is kept for the usage view.
    let windows = w.engine.usage(w.user, 1).await.unwrap().windows;
    assert!(
        windows.iter().any(|q| q.agent.to_string() == "claude"
            && q.window == "five_hour"
            && q.limited
            && q.resets_at.map(|t| t.as_millis()) == Some(until)),
        "{windows:?}"
    );
    // No process and no slot: the run ended.
    let store = w.engine.store_for_tests();
    mainloop_test_support::wait_for("the held run to end", async || {
        (store.count_unfinished("task.run_agent").await.unwrap() == 0).then_some(())
    })
    .await;
    assert!(!w.runtime.is_parked(held.id));

    // The same agent's new work queues; another agent's takes the one slot.
    let queued = create(&w, "the queued task", "claude").await;
    let other = create(&w, "the other agent's task", "claude-other").await;
    let ids = [held.id, queued.id, other.id];
    let seen = mainloop_test_support::wait_for("the other agent's task to run", async || {
        let s = states(&w, &ids).await;
        assert!(!s.contains(&TaskState::Failed), "{s:?}");
        (s[2] == TaskState::Implementing).then_some(s)
    })
    .await;
    assert_eq!(
        seen[..2],
        [TaskState::OnHold, TaskState::Queued],
        "the held agent's task waits while another agent's runs"
    );
    w.wait_state(other.id, TaskState::Review).await;

    // At the reset the held task goes on by itself, first; then the queued one runs.
    let done = w.wait_state(held.id, TaskState::Review).await;
    assert!(done.hold.is_none(), "{:?}", done.hold);
    let after = w.task(queued.id).await;
    assert!(
        matches!(
            after.state,
            TaskState::Queued | TaskState::Implementing | TaskState::Checking
        ),
        "the queued task ran before the held one went on: {}",
        after.state
    );
    w.wait_state(queued.id, TaskState::Review).await;
    let rules = w.rules();
    assert_eq!(
        rules.iter().filter(|r| *r == "limit").count(),
        1,
        "{rules:?}"
    );
    assert!(
        rules.iter().any(|r| r == "went-on" || r == "held-again"),
        "{rules:?}"
    );
    let first_queued = rules.iter().position(|r| r == "queued").unwrap();
    let went_on = rules
        .iter()
        .position(|r| r == "went-on" || r == "held-again")
        .unwrap();
    assert!(
        went_on < first_queued,
        "the held task went on first: {rules:?}"
    );
    let (thread, _) = w
        .engine
        .chat_messages(w.user, None, 100, false)
        .await
        .unwrap();
    let updates: Vec<_> = thread.iter().map(|m| m.text.as_str()).collect();
    for said in ["on hold: the agent's usage limit", "the usage limit reset"] {
        assert!(updates.iter().any(|t| t.contains(said)), "{updates:?}");
    }
}

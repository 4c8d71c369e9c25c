//! Failures that say what to do: an agent command that does not exist fails the task
//! with the instruction that fixes it (the raw error kept in the transcript), and a run
//! that changes nothing fails instead of reaching review, retry staying open.

use super::World;
use mainloop_domain::inbox::InboxKind;
use mainloop_domain::task::{TaskEvent, TaskState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_agent_command_fails_with_the_instruction_that_fixes_it() {
    let w = World::new(vec!["/nonexistent/bin/claude".into()], None, 1, None).await;
    let task = w.spawn("add the greeting", true).await;
    let failed = w.wait_state(task.id, TaskState::Failed).await;
    let error = failed.error.unwrap_or_default();
    assert!(
        error.starts_with("The agent command `/nonexistent/bin/claude` was not found"),
        "{error}"
    );
    assert!(error.contains("workers.claude_command"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
    // The raw text stays available in the transcript.
    assert!(
        w.transcript_says(
            task.id,
            "could not start the agent: /nonexistent/bin/claude"
        )
        .await
    );
    let inbox = w.engine.inbox(w.user, 10, 0).await.unwrap();
    assert_eq!(inbox[0].kind, InboxKind::Failed);
}

/// The agent claims it wrote a file and writes nothing; retried, it writes it.
const CLAIMS: &str = r##"
rules:
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done: GREETING.md added, really."}]
  - name: retried-with-feedback
    match: {user_contains: "Use the shell to write GREETING.md"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'hello\\n' > GREETING.md", description: "Write"}}
  - name: retried
    match: {user_contains: "Your last run changed no files"}
    reply: [{text: "The retry was not told what to do differently."}]
  - name: claim
    match: {user_contains: "add the greeting"}
    reply: [{text: "Done: GREETING.md added."}]
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_changes_nothing_fails_instead_of_reaching_review() {
    let Some(claude) = mainloop_test_support::claude_path() else {
        return;
    };
    let w = World::new(vec![claude.display().to_string()], Some(CLAIMS), 1, None).await;
    let task = w.spawn("add the greeting", true).await;
    // Review waits for the human: a task that had reached it would still be there.
    let failed = w.wait_state(task.id, TaskState::Failed).await;
    assert_eq!(failed.error.as_deref(), Some("The worker made no changes."));
    assert!(failed.diffstat.is_none(), "{:?}", failed.diffstat);
    assert!(w.transcript_says(task.id, "Done: GREETING.md added.").await);
    let inbox = w.engine.inbox(w.user, 10, 0).await.unwrap();
    let kinds: Vec<InboxKind> = inbox.iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [InboxKind::Failed]);

    // Retried with feedback, the agent is told its run changed nothing and what to do
    // differently; this time it writes the file.
    w.engine
        .apply_task_event(
            Some(w.user),
            task.id,
            TaskEvent::RetryRequested(Some("Use the shell to write GREETING.md.".into())),
        )
        .await
        .unwrap();
    let review = w.wait_state(task.id, TaskState::Review).await;
    assert!(review.error.is_none());
    assert!(
        review
            .diffstat
            .as_deref()
            .unwrap_or_default()
            .contains("GREETING.md"),
        "{:?}",
        review.diffstat
    );
}

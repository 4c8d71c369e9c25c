//! Failures that say what to do: an agent command that does not exist fails the task
//! with the instruction that fixes it (the raw error kept in the transcript).

use super::World;
use mainloop_domain::inbox::InboxKind;
use mainloop_domain::task::TaskState;

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

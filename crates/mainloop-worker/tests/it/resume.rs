//! A resumed agent holds its previous turn in full: with the real `claude` CLI against
//! the scripted fake model, the worker ends each session the normal way (its input
//! closed, its exit awaited), so the next round's `--resume` continues from the end of
//! the last one — after checks failed, and after a session waiting for an answer was
//! stopped at the idle timeout.

use super::World;
use mainloop_domain::question::Answer;
use mainloop_domain::task::TaskState;
use mainloop_fake_anthropic::LoggedRequest;
use std::path::Path;
use std::time::Duration;

/// This test's rules, in front of the shared resume script.
const RULES: &str = r##"
rules:
  - name: fix-checks
    match: {user_contains: "checks failed"}
    reply:
      - tool_use: {name: Bash, input: {command: "touch fixed.txt", description: "Fix"}}
  - name: answered-after-resume
    match: {user_contains: "Answers to your questions"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'green\\n' > colour.txt", description: "Answered"}}
"##;

async fn world(claude: &Path, check: Option<&str>, idle: Duration) -> World {
    let shared = include_str!("../../../mainloop-fake-anthropic/scripts/resume.yaml");
    let (_, rules) = shared.split_once("\nrules:\n").unwrap();
    World::with_idle(
        vec![claude.display().to_string()],
        Some(&format!("{RULES}{rules}")),
        1,
        check,
        idle,
    )
    .await
}

/// The request the fake model answered with `rule`.
fn request(w: &World, rule: &str) -> LoggedRequest {
    let requests = w
        .fake
        .as_ref()
        .map(|f| f.message_requests())
        .unwrap_or_default();
    let rules: Vec<Option<String>> = requests.iter().map(|r| r.rule_name.clone()).collect();
    requests
        .into_iter()
        .find(|r| r.rule_name.as_deref() == Some(rule))
        .unwrap_or_else(|| panic!("no request answered by {rule}: {rules:?}"))
}

fn assert_carries(request: &LoggedRequest, earlier: &[&str]) {
    let sent = request.body["messages"].to_string();
    for text in earlier {
        assert!(
            sent.contains(text),
            "the resumed request lacks {text:?}: {sent}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_after_failed_checks_resumes_from_the_end_of_the_first() {
    let Some(claude) = mainloop_test_support::claude_path() else {
        return;
    };
    let w = world(&claude, Some("test -f fixed.txt"), Duration::from_secs(600)).await;
    let task = w.spawn("write the note", true).await;
    let done = w.wait_state(task.id, TaskState::Review).await;
    assert_eq!(
        done.core.check_round, 1,
        "one failed check round, then green"
    );
    assert_carries(
        &request(&w, "fix-checks"),
        &[
            "write the note",
            "Writing the note.",
            "TOOL-OUTPUT-MARK",
            "The note is written: FINAL-REPLY-MARK.",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_the_idle_timeout_resumes_the_question_it_answers() {
    let Some(claude) = mainloop_test_support::claude_path() else {
        return;
    };
    let w = world(&claude, None, Duration::ZERO).await;
    let task = w.spawn("this needs a decision", true).await;
    w.wait_state(task.id, TaskState::WaitingAnswers).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while w.runtime.is_parked(task.id) {
        assert!(tokio::time::Instant::now() < deadline, "never unparked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answers = [("q1".to_owned(), Answer::Text("green".into()))]
        .into_iter()
        .collect();
    w.engine
        .answer_questions(w.user, task.id, answers)
        .await
        .unwrap();
    w.wait_state(task.id, TaskState::Review).await;
    let said = serde_json::to_string(
        &w.engine
            .task_transcript(w.user, task.id, 0, 500)
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(said.contains("ASKING-MARK"), "{said}");
    assert!(
        !said.contains("session was missing"),
        "the stopped session was lost: {said}"
    );
    assert_carries(
        &request(&w, "answered-after-resume"),
        &["this needs a decision", "ASKING-MARK", "Which colour?"],
    );
}

//! The API main thread at the account's usage limit: the real Anthropic client meets the
//! 429 the API sends then (`anthropic-ratelimit-unified-status: rejected`), the user is
//! told once when the thread will answer, and the turn is answered after the reset with
//! nobody doing anything — however few attempts the dispatcher allows.

use super::*;
use std::time::{SystemTime, UNIX_EPOCH};

fn script(reset: u64) -> String {
    format!(
        "rules:\n{}  - name: answer\n    reply: [{{text: \"Back after the reset.\"}}]\n",
        mainloop_fake_anthropic::usage_limit_rule("limit", "{times: 1}", reset)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_at_the_usage_limit_waits_for_the_reset_and_answers_by_itself() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let reset = now.as_secs() + 4;
    let fake = FakeAnthropic::start(Script::from_yaml(&script(reset)).unwrap())
        .await
        .unwrap();
    // One attempt only: a wait that spent attempts would give up at once.
    let h = sqlite_harness(
        Some(&fake),
        EngineConfig {
            max_attempts: 1,
            ..fast_config()
        },
    )
    .await;
    let (engine, user) = (&h.engine, h.user);
    let mut events = engine.subscribe(user, EventId(0));
    let msg = engine.post_chat(user, "hello?").await.unwrap();

    let error = loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a chat error event")
            .unwrap()
            .unwrap();
        if e.name == EventName::ChatError {
            break e.payload.clone();
        }
    };
    let at = mainloop_domain::Timestamp::from_millis(i64::try_from(reset * 1000).unwrap());
    assert_eq!(error["retrying"], true, "{error}");
    assert_eq!(
        error["message"],
        format!(
            "the model's usage limit is reached; it resets at {}. I will answer then.",
            at.to_rfc3339()
        ),
        "{error}"
    );

    let answer = reply_to(engine, user, &msg).await;
    assert_eq!(answer.text, "Back after the reset.");
    let answered_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!(
        answered_at.as_secs() >= reset,
        "answered before the reset: {answered_at:?} < {reset}"
    );
    let rules: Vec<_> = fake
        .message_requests()
        .into_iter()
        .map(|r| r.rule_name)
        .collect();
    assert_eq!(
        rules,
        [Some("limit".to_owned()), Some("answer".to_owned())],
        "asked once at the limit and once after the reset"
    );
    let (thread, _) = engine.chat_messages(user, None, 100, false).await.unwrap();
    assert!(
        !thread.iter().any(|m| m.text.contains("I could not reply")),
        "the turn was not given up"
    );
}

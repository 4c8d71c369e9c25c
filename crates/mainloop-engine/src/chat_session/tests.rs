//! What a session is told for a turn.

use super::*;
use mainloop_domain::{MessageId, Timestamp};

fn msg(pos: i64, role: Role, kind: MessageKind, text: &str) -> ChatMessage {
    ChatMessage {
        id: MessageId::new_v7(Timestamp::from_millis(pos)),
        role,
        kind,
        text: text.to_owned(),
        content: vec![ContentBlock::text(text)],
        turn_id: None,
        task_id: None,
        seq: pos,
        thread_pos: pos,
        summary_id: None,
        created_at: Timestamp::from_millis(pos),
    }
}

fn thread() -> Vec<ChatMessage> {
    vec![
        msg(1, Role::User, MessageKind::Text, "hello"),
        msg(2, Role::Assistant, MessageKind::Text, "hi there"),
        msg(
            3,
            Role::Event,
            MessageKind::Text,
            "task 1 is ready for review",
        ),
        msg(4, Role::User, MessageKind::Text, "merge it"),
    ]
}

#[test]
fn a_known_session_hears_only_what_is_new_in_order() {
    let t = thread();
    let sent = input(None, &t, Some(2), &t[3]);
    assert_eq!(
        sent,
        format!("{EVENT_PREFIX}task 1 is ready for review\n\nmerge it")
    );
}

#[test]
fn a_replayed_turn_says_so_and_resends_only_its_message() {
    let t = thread();
    let sent = input(None, &t, Some(4), &t[3]);
    assert!(sent.starts_with(REPLAYED), "{sent}");
    assert!(sent.ends_with("\n\nmerge it"));
    assert!(!sent.contains("hello"));
}

#[test]
fn a_new_session_hears_the_summary_and_the_thread_so_far() {
    let t = thread();
    let sent = input(Some("they like short answers"), &t, None, &t[3]);
    assert!(sent.starts_with(CONTINUED), "{sent}");
    assert!(sent.contains("<summary>\nthey like short answers\n</summary>"));
    let order: Vec<usize> = [
        "[user] hello",
        "[you] hi there",
        "ready for review",
        "merge it",
    ]
    .iter()
    .map(|s| sent.find(s).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{sent}");
    // A first message in a fresh thread is just the message.
    assert_eq!(input(None, &t[..1], None, &t[0]), "hello");
}

#[test]
fn a_long_thread_is_cut_to_its_newest_part() {
    let mut t: Vec<ChatMessage> = (1..=200)
        .map(|i| {
            msg(
                i,
                Role::User,
                MessageKind::Text,
                &format!("{i:03} {}", "x".repeat(1000)),
            )
        })
        .collect();
    t.push(msg(201, Role::User, MessageKind::Text, "now"));
    let sent = input(None, &t, None, &t[200]);
    assert!(sent.chars().count() < PRIMER_CHARS + 2_000);
    assert!(sent.contains("[user] 200 "));
    assert!(!sent.contains("[user] 001 "));
}

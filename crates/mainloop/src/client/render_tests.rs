//! How the command-line client renders tasks, holds, entries and the inbox.

use super::*;
use crate::client::views::read;
use serde_json::json;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-12-06 12:00:00 UTC);

#[test]
fn times_states_and_ids_in_words() {
    assert_eq!(ago("2026-12-06T11:59:58Z", NOW), "just now");
    assert_eq!(ago("2026-12-06T11:59:30Z", NOW), "30 s ago");
    assert_eq!(ago("2026-12-06T11:55:00Z", NOW), "5 min ago");
    assert_eq!(ago("2026-12-06T09:00:00Z", NOW), "3 h ago");
    assert_eq!(ago("2026-12-01T12:00:00Z", NOW), "5 d ago");
    assert_eq!(ago("whenever", NOW), "whenever");
    assert_eq!(state_words("waiting_answers"), "waiting for answers");
    assert_eq!(state_words("something_new"), "something_new");
    assert_eq!(short_id("0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"), "3e4f5a6b");
    assert_eq!(one_line("\n  first line  \nsecond", 100), "first line");
    assert_eq!(one_line("abcdef", 4), "abc…");
}

#[test]
fn task_tables_align() {
    let list: Vec<TaskView> = [
        json!({"id": "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b", "state": "waiting_answers",
               "repo": "/src/app", "description": "build the greeter\nwith tests",
               "updated_at": "2026-12-06T11:58:00Z"}),
        json!({"id": "0193a2b4-5c6d-7e8f-9a0b-ffffffffffff", "state": "merged",
               "repo": "octo/app", "description": "fix it", "updated_at": "2026-12-05T12:00:00Z"}),
    ]
    .iter()
    .map(read)
    .collect();
    let out = tasks(&list, NOW);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "ID        STATE                UPDATED    REPO      DESCRIPTION"
    );
    assert_eq!(
        lines[1],
        "3e4f5a6b  waiting for answers  2 min ago  /src/app  build the greeter"
    );
    assert_eq!(
        lines[2],
        "ffffffff  merged               1 d ago    octo/app  fix it"
    );
    assert_eq!(tasks(&[], NOW), "No tasks.\n");
}

#[test]
fn a_waiting_task_shows_its_questions_and_what_to_do() {
    let t: TaskView = read(&json!({
        "id": "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b", "state": "waiting_answers",
        "repo": "/r", "description": "d", "created_at": "2026-12-06T11:00:00Z",
        "updated_at": "2026-12-06T11:00:00Z",
        "questions": [{"id": "q1", "header": "Language", "question": "Which language?",
                       "options": [{"label": "Rust", "description": "fast"}, {"label": "Go"}]}]
    }));
    let out = task(&t, NOW);
    assert!(out.contains("State:    waiting for answers"), "{out}");
    assert!(out.contains("mainloop answer 3e4f5a6b"), "{out}");
    assert!(
        out.contains("1/1 [Language] Which language?\n  1. Rust — fast\n  2. Go\n"),
        "{out}"
    );
}

#[test]
fn an_on_hold_task_says_when_it_goes_on() {
    let held = |until: serde_json::Value| -> TaskView {
        read(&json!({
            "id": "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b", "state": "on_hold",
            "repo": "/r", "description": "build it", "created_at": "2026-12-06T11:00:00Z",
            "updated_at": "2026-12-06T11:58:00Z",
            "hold": {"reason": "You've hit your 5-hour limit · resets 3:30pm (UTC)",
                     "until": until, "resume_in": "implementing"}
        }))
    };
    let t = held(json!("2026-12-06T15:30:00Z"));
    let out = task(&t, NOW);
    assert!(out.contains("State:    on hold\n"), "{out}");
    assert!(
        out.contains(
            "On hold: the agent's usage limit is reached; it goes on by itself at \
             2026-12-06 15:30 UTC (in 3 h 30 min).\n  You've hit your 5-hour limit · \
             resets 3:30pm (UTC)\n(nothing to do meanwhile; `mainloop cancel 3e4f5a6b` \
             stops it)\n"
        ),
        "{out}"
    );
    assert!(!out.contains("retry"), "{out}");
    let list = tasks(std::slice::from_ref(&t), NOW);
    assert!(
        list.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("3e4f5a6b  on hold, resets in 3 h 30 min  2 min ago")),
        "{list}"
    );
    assert_eq!(
        state_change(&t, NOW),
        "── on hold: the agent's usage limit is reached; it goes on by itself at \
         2026-12-06 15:30 UTC (in 3 h 30 min) ──\n"
    );
    // A reset in another offset is the same instant.
    let offset = held(json!("2026-12-07T01:30:00+10:00"));
    assert!(task(&offset, NOW).contains("at 2026-12-06 15:30 UTC (in 3 h 30 min)"));

    // No reset time, an unreadable one, or one already past.
    for until in [json!(null), json!("soon")] {
        let t = held(until);
        let out = task(&t, NOW);
        assert!(
            out.contains("it tries again by itself after a while (the reset time is unknown)."),
            "{out}"
        );
        assert_eq!(state_cell(&t, NOW), "on hold");
    }
    let past = held(json!("2026-12-06T11:30:00Z"));
    assert!(task(&past, NOW).contains("it goes on now (the limit has reset)."));
    assert_eq!(state_cell(&past, NOW), "on hold, reset");
    assert_eq!(
        state_change(&read(&json!({"state": "checking"})), NOW),
        "── checking ──\n"
    );
}

#[test]
fn waits_round_up_to_whole_units() {
    assert_eq!(wait_words(Duration::seconds(1)), "1 min");
    assert_eq!(wait_words(Duration::ZERO), "1 min");
    assert_eq!(wait_words(Duration::minutes(59)), "59 min");
    assert_eq!(wait_words(Duration::minutes(60)), "1 h");
    assert_eq!(wait_words(Duration::seconds(61 * 60 + 1)), "1 h 2 min");
    assert_eq!(wait_words(Duration::hours(48)), "2 d");
    assert_eq!(wait_words(Duration::hours(53)), "2 d 5 h");
}

#[test]
fn transcript_entries_as_lines() {
    let e =
        |kind: &str, payload| entry(&read(&json!({"kind": kind, "payload": payload, "seq": 1})));
    assert_eq!(e("text", json!({"text": "Hello"})), "Hello");
    assert_eq!(
        e(
            "tool_call",
            json!({"id": "t", "name": "Bash", "summary": "ls"})
        ),
        "→ Bash ls"
    );
    assert_eq!(
        e(
            "tool_result",
            json!({"tool_use_id": "t", "summary": "boom\nmore", "is_error": true})
        ),
        "  ✗ boom"
    );
    assert_eq!(
        e(
            "checks",
            json!({"command": "cargo test", "output": "a\nb", "passed": false})
        ),
        "· checks failed: cargo test\n    a\n    b"
    );
    assert_eq!(
        e("finished", json!({"is_error": false, "cost_usd": 0.5})),
        "✓ turn finished ($0.5000)"
    );
    assert_eq!(e("novel", json!({})), "· [novel]");
}

#[test]
fn inbox_lists_open_items_only() {
    let items: Vec<InboxView> = [
        json!({"id": "i1", "kind": "question", "priority": "high", "title": "Two questions",
               "task_id": "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b", "created_at": "2026-12-06T11:00:00Z"}),
        json!({"id": "i2", "kind": "review", "priority": "normal", "title": "Done",
               "resolved_at": "2026-12-06T11:30:00Z", "created_at": "2026-12-06T11:00:00Z"}),
    ]
    .iter()
    .map(read)
    .collect();
    let out = inbox(&items, 1, NOW);
    assert!(
        out.contains("3e4f5a6b  questions  high      1 h ago  Two questions"),
        "{out}"
    );
    assert!(!out.contains("Done"), "{out}");
    assert_eq!(inbox(&items[1..], 0, NOW), "Nothing needs you.\n");
}

#[test]
fn budget_and_pause_holds_say_what_ends_them() {
    let held = |hold: serde_json::Value| -> TaskView {
        read(&json!({
            "id": "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b", "state": "on_hold",
            "repo": "/r", "description": "build it", "created_at": "2026-12-06T11:00:00Z",
            "updated_at": "2026-12-06T11:58:00Z", "budget_usd": 0.25, "hold": hold
        }))
    };
    let budget = held(json!({
        "reason": "This task's budget of $0.05 is reached ($0.06 spent): raise it, or continue once.",
        "until": null, "resume_in": "implementing", "kind": "budget", "budget": "task"
    }));
    let out = task(&budget, NOW);
    assert!(
        out.contains("Budget:   $0.25 (this task's own cap)\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "\nOn hold: a budget is reached; it waits for you to raise it or let it continue \
             once.\n  This task's budget of $0.05 is reached ($0.06 spent): raise it, or \
             continue once.\n(`mainloop budget raise 3e4f5a6b USD` raises it; `mainloop budget \
             continue 3e4f5a6b` lets it run once more)\n"
        ),
        "{out}"
    );
    assert!(!out.contains("usage limit"), "{out}");
    assert_eq!(state_cell(&budget, NOW), "on hold, budget reached");
    assert_eq!(
        state_change(&budget, NOW),
        "── on hold: a budget is reached; it waits for you to raise it or let it continue \
         once ──\n"
    );

    let paused = held(json!({
        "reason": "All work is paused; it goes on when you resume.",
        "until": null, "resume_in": "planning", "kind": "paused"
    }));
    let out = task(&paused, NOW);
    assert!(
        out.contains(
            "\nOn hold: all work is paused; it goes on when you resume.\n(`mainloop resume` \
             resumes all work)\n"
        ),
        "{out}"
    );
    assert_eq!(state_cell(&paused, NOW), "on hold, paused");
    assert_eq!(
        state_change(&paused, NOW),
        "── on hold: all work is paused; it goes on when you resume ──\n"
    );
}

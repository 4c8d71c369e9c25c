//! Human-readable output: aligned tables, relative times, states in words, transcript
//! entries as lines. Pure functions of the API's data and the current time.

use super::views::{EntryView, HoldView, InboxView, MessageView, QuestionView, TaskView};
use std::fmt::Write as _;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, UtcOffset};

/// A task state in words.
#[must_use]
pub fn state_words(state: &str) -> &str {
    match state {
        "waiting_answers" => "waiting for answers",
        "waiting_plan_review" => "plan to review",
        "review" => "ready for review",
        "on_hold" => "on hold",
        other => other,
    }
}

/// A wait in whole units, rounded up so it never reads as none: "45 min", "2 h 5 min",
/// "3 d 4 h".
#[must_use]
pub fn wait_words(wait: Duration) -> String {
    let minutes = ((wait.whole_seconds() + 59) / 60).max(1);
    match minutes {
        ..60 => format!("{minutes} min"),
        60..1440 if minutes % 60 == 0 => format!("{} h", minutes / 60),
        60..1440 => format!("{} h {} min", minutes / 60, minutes % 60),
        _ => {
            let hours = minutes / 60;
            if hours % 24 == 0 {
                format!("{} d", hours / 24)
            } else {
                format!("{} d {} h", hours / 24, hours % 24)
            }
        }
    }
}

/// A hold's reset time, if it has a readable one.
fn reset_of(hold: &HoldView) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(hold.until.as_deref()?, &Rfc3339).ok()
}

/// When an on-hold task goes on, in words: "goes on by itself at 2026-12-06 15:30 UTC
/// (in 3 h 30 min)"; without a reset time the server tries again after a while.
#[must_use]
pub fn hold_words(hold: &HoldView, now: OffsetDateTime) -> String {
    match reset_of(hold) {
        Some(at) if at > now => {
            let utc = at.to_offset(UtcOffset::UTC);
            let clock = utc
                .format(format_description!("[year]-[month]-[day] [hour]:[minute]"))
                .unwrap_or_else(|_| hold.until.clone().unwrap_or_default());
            format!(
                "goes on by itself at {clock} UTC (in {})",
                wait_words(at - now)
            )
        }
        Some(_) => "goes on now (the limit has reset)".into(),
        None => "tries again by itself after a while (the reset time is unknown)".into(),
    }
}

/// A task's state for the list: an on-hold task's says how long it waits.
#[must_use]
pub fn state_cell(t: &TaskView, now: OffsetDateTime) -> String {
    match (&t.hold, t.state.as_str()) {
        (Some(hold), "on_hold") => match reset_of(hold) {
            Some(at) if at > now => format!("on hold, resets in {}", wait_words(at - now)),
            Some(_) => "on hold, reset".into(),
            None => "on hold".into(),
        },
        _ => state_words(&t.state).to_owned(),
    }
}

/// The line `--follow` prints when the task moves to a new state.
#[must_use]
pub fn state_change(t: &TaskView, now: OffsetDateTime) -> String {
    match (&t.hold, t.state.as_str()) {
        (Some(hold), "on_hold") => format!(
            "── on hold: the agent's usage limit is reached; it {} ──\n",
            hold_words(hold, now)
        ),
        _ => format!("── {} ──\n", state_words(&t.state)),
    }
}

/// How long ago `at` (RFC 3339) was, in the largest whole unit: "just now", "5 min ago",
/// "3 h ago", "2 d ago"; the text itself when it is not a time.
#[must_use]
pub fn ago(at: &str, now: OffsetDateTime) -> String {
    let Ok(t) = OffsetDateTime::parse(at, &Rfc3339) else {
        return at.to_owned();
    };
    let secs = (now - t).whole_seconds();
    match secs {
        i64::MIN..10 => "just now".into(),
        10..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// The id as the tables show it: its last eight hex digits, the random part (a task's
/// branch is named by the same digits). [`super::ids`] accepts it, or any unique start
/// of it or of the full id.
#[must_use]
pub fn short_id(id: &str) -> String {
    let hex: String = id.chars().filter(char::is_ascii_hexdigit).collect();
    hex.get(hex.len().saturating_sub(8)..)
        .unwrap_or(&hex)
        .to_owned()
}

/// The first line of `text`, cut to `max` characters.
#[must_use]
pub fn one_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// Rows under a header, each column padded to its widest cell; the last column is not
/// padded.
#[must_use]
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The task list.
#[must_use]
pub fn tasks(list: &[TaskView], now: OffsetDateTime) -> String {
    if list.is_empty() {
        return "No tasks.\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                short_id(&t.id),
                state_cell(t, now),
                ago(&t.updated_at, now),
                one_line(&t.repo, 40),
                one_line(&t.description, 60),
            ]
        })
        .collect();
    table(&["ID", "STATE", "UPDATED", "REPO", "DESCRIPTION"], &rows)
}

/// One task in full: what it is, where it stands, and what it waits for.
#[must_use]
pub fn task(t: &TaskView, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Task {}  ({})", t.id, short_id(&t.id));
    let _ = writeln!(out, "State:    {}", state_words(&t.state));
    let _ = writeln!(out, "Repo:     {}", t.repo);
    if let Some(branch) = &t.branch {
        let base = t.base_branch.as_deref().map(|b| format!(" (onto {b})"));
        let _ = writeln!(out, "Branch:   {branch}{}", base.unwrap_or_default());
    }
    let _ = writeln!(
        out,
        "Created:  {}; updated {}",
        ago(&t.created_at, now),
        ago(&t.updated_at, now)
    );
    if t.cost_usd > 0.0 || t.input_tokens > 0 {
        let _ = writeln!(
            out,
            "Cost:     ${:.4} ({} tokens in, {} out)",
            t.cost_usd, t.input_tokens, t.output_tokens
        );
    }
    if let Some(d) = &t.diffstat {
        let _ = writeln!(out, "Changes:  {d}");
    }
    let _ = writeln!(out, "\n{}", t.description.trim_end());
    if let Some(e) = &t.error {
        let _ = writeln!(
            out,
            "\nFailed: {e}\n(run `mainloop retry {}`)",
            short_id(&t.id)
        );
    }
    if let (Some(hold), "on_hold") = (&t.hold, t.state.as_str()) {
        let _ = writeln!(
            out,
            "\nOn hold: the agent's usage limit is reached; it {}.",
            hold_words(hold, now)
        );
        if !hold.reason.trim().is_empty() {
            let _ = writeln!(out, "{}", indent(hold.reason.trim_end(), "  "));
        }
        let _ = writeln!(
            out,
            "(nothing to do meanwhile; `mainloop cancel {}` stops it)",
            short_id(&t.id)
        );
    }
    if t.state == "waiting_answers" && !t.questions.is_empty() {
        let _ = writeln!(
            out,
            "\nQuestions (answer with `mainloop answer {}`):",
            short_id(&t.id)
        );
        for (i, q) in t.questions.iter().enumerate() {
            out.push_str(&question(q, i + 1, t.questions.len()));
        }
    }
    if let Some(plan) = &t.plan {
        let _ = writeln!(out, "\nPlan:\n{}", indent(plan.trim_end(), "  "));
        if t.state == "waiting_plan_review" {
            let _ = writeln!(
                out,
                "(decide with `mainloop plan {} approve|revise TEXT|cancel`)",
                short_id(&t.id)
            );
        }
    }
    if t.state == "review" {
        let _ = writeln!(
            out,
            "\nReady for review: `mainloop review {} approve|changes TEXT`",
            short_id(&t.id)
        );
    }
    out
}

/// A question with its options numbered from 1.
#[must_use]
pub fn question(q: &QuestionView, n: usize, of: usize) -> String {
    let mut out = String::new();
    let header = if q.header.is_empty() {
        String::new()
    } else {
        format!(" [{}]", q.header)
    };
    let _ = writeln!(out, "\n{n}/{of}{header} {}", q.question);
    for (i, o) in q.options.iter().enumerate() {
        if o.description.is_empty() {
            let _ = writeln!(out, "  {}. {}", i + 1, o.label);
        } else {
            let _ = writeln!(out, "  {}. {} — {}", i + 1, o.label, o.description);
        }
    }
    out
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One transcript entry as lines of text.
#[must_use]
pub fn entry(e: &EntryView) -> String {
    let p = &e.payload;
    let s = |key: &str| p[key].as_str().unwrap_or_default().to_owned();
    match e.kind.as_str() {
        "text" => s("text"),
        "tool_call" => format!("→ {} {}", s("name"), s("summary"))
            .trim_end()
            .to_owned(),
        "tool_result" if p["is_error"] == true => format!("  ✗ {}", one_line(&s("summary"), 200)),
        "tool_result" => format!("  ← {}", one_line(&s("summary"), 200)),
        "permission" => {
            let verdict = if p["allowed"] == true {
                "allowed"
            } else {
                "denied"
            };
            format!("· permission for {}: {verdict}", s("tool"))
        }
        "question" => {
            let qs: Vec<String> = p["questions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|q| q["question"].as_str().unwrap_or("?").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            format!("? asked: {}", qs.join(" / "))
        }
        "plan" => format!("Plan proposed:\n{}", indent(s("plan").trim_end(), "  ")),
        "finished" => {
            let cost = p["cost_usd"].as_f64().unwrap_or(0.0);
            if p["is_error"] == true {
                format!("✗ turn ended with an error (${cost:.4}): {}", s("result"))
            } else {
                format!("✓ turn finished (${cost:.4})")
            }
        }
        "status" => format!("· {}", s("text")),
        "checks" => {
            let verdict = match p["passed"].as_bool() {
                Some(true) => "passed",
                Some(false) if p["timed_out"] == true => "timed out",
                Some(false) => "failed",
                None => "nothing checked (no CI)",
            };
            let mut line = format!("· checks {verdict}: {}", s("command"));
            if p["passed"] == false {
                let output = s("output");
                let tail: Vec<&str> = output.lines().rev().take(10).collect();
                for l in tail.into_iter().rev() {
                    let _ = write!(line, "\n    {l}");
                }
            }
            line
        }
        "session" => format!("· session {} ({})", s("session_id"), s("model")),
        "error" => format!("✗ agent failed: {}", s("text")),
        "malformed" => format!("· unreadable agent output: {}", one_line(&s("error"), 200)),
        other => format!("· [{other}]"),
    }
}

/// The inbox.
#[must_use]
pub fn inbox(items: &[InboxView], needs_you: i64, now: OffsetDateTime) -> String {
    let open: Vec<&InboxView> = items.iter().filter(|i| i.resolved_at.is_none()).collect();
    if open.is_empty() {
        return "Nothing needs you.\n".into();
    }
    let rows: Vec<Vec<String>> = open
        .iter()
        .map(|i| {
            vec![
                i.task_id.as_deref().map(short_id).unwrap_or_default(),
                kind_words(&i.kind).to_owned(),
                i.priority.clone(),
                ago(&i.created_at, now),
                one_line(&i.title, 70),
            ]
        })
        .collect();
    let mut out = table(&["TASK", "WHAT", "PRIORITY", "SINCE", "TITLE"], &rows);
    let _ = writeln!(out, "\n{needs_you} need you.");
    out
}

fn kind_words(kind: &str) -> &str {
    match kind {
        "question" => "questions",
        "plan_review" => "plan review",
        "review" => "review",
        "failed" => "failed",
        other => other,
    }
}

/// A stored chat message as the interactive session shows it.
#[must_use]
pub fn message(m: &MessageView) -> Option<String> {
    if m.text.trim().is_empty() {
        return None;
    }
    let who = match m.role.as_str() {
        "user" => "you",
        "assistant" => "mainloop",
        _ => "update",
    };
    Some(format!("{who}: {}", m.text.trim_end()))
}

#[cfg(test)]
mod tests {
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
            list.lines().nth(1).is_some_and(
                |l| l.starts_with("3e4f5a6b  on hold, resets in 3 h 30 min  2 min ago")
            ),
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
        let e = |kind: &str, payload| {
            entry(&read(&json!({"kind": kind, "payload": payload, "seq": 1})))
        };
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
}

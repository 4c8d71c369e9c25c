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

/// Why a task is on hold and what ends it, in a sentence without its full stop.
#[must_use]
pub fn hold_headline(hold: &HoldView, now: OffsetDateTime) -> String {
    if hold.is_budget() {
        "a budget is reached; it waits for you to raise it or let it continue once".into()
    } else if hold.is_paused() {
        "all work is paused; it goes on when you resume".into()
    } else {
        format!(
            "the agent's usage limit is reached; it {}",
            hold_words(hold, now)
        )
    }
}

/// A task's state for the list: an on-hold task's says how long it waits.
#[must_use]
pub fn state_cell(t: &TaskView, now: OffsetDateTime) -> String {
    match (&t.hold, t.state.as_str()) {
        (Some(hold), "on_hold") if hold.is_budget() => "on hold, budget reached".into(),
        (Some(hold), "on_hold") if hold.is_paused() => "on hold, paused".into(),
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
        (Some(hold), "on_hold") => format!("── on hold: {} ──\n", hold_headline(hold, now)),
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
    if let Some(cap) = t.budget_usd {
        let _ = writeln!(
            out,
            "Budget:   {} (this task's own cap)",
            mainloop_domain::usage::dollars(cap)
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
        let _ = writeln!(out, "\nOn hold: {}.", hold_headline(hold, now));
        if !hold.reason.trim().is_empty() && !hold.is_paused() {
            let _ = writeln!(out, "{}", indent(hold.reason.trim_end(), "  "));
        }
        let id = short_id(&t.id);
        let _ = if hold.is_budget() {
            writeln!(
                out,
                "(`mainloop budget raise {id} USD` raises it; `mainloop budget continue {id}` \
                 lets it run once more)"
            )
        } else if hold.is_paused() {
            writeln!(out, "(`mainloop resume` resumes all work)")
        } else {
            writeln!(
                out,
                "(nothing to do meanwhile; `mainloop cancel {id}` stops it)"
            )
        };
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
        "budget" => "budget reached",
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
#[path = "render_tests.rs"]
mod tests;

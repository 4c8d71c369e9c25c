//! What a digest says: the facts of a day gathered from its records (what was asked,
//! spawned, decided, merged, failed, cancelled, still open, spent), a week's or month's
//! merged from its days, and the plain text the model reads and search indexes.

use super::{Period, Span};
use crate::notes::NoteKind;
use crate::task::TaskState;
use crate::{DigestId, MessageId, NoteId, TaskId, Timestamp};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use utoipa::ToSchema;

/// Asks kept per digest (the count says how many there were).
pub const ASKED_KEPT: usize = 10;
/// Items of each list a digest's text names (the rest are counted).
const LISTED: usize = 15;
/// Characters of an ask or a task title kept.
const LINE_CHARS: usize = 120;

/// A stored digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Digest {
    pub id: DigestId,
    pub period: Period,
    /// The local date the span starts on (`YYYY-MM-DD`; a Monday for a week).
    #[schema(value_type = String, format = Date)]
    pub start: Date,
    /// The local date after its last day.
    #[schema(value_type = String, format = Date)]
    pub end: Date,
    /// "Tuesday 3 November 2026", "Week of 2 November 2026", "November 2026".
    pub title: String,
    /// The time zone its days were counted in.
    pub time_zone: String,
    /// Nothing was asked, spawned, decided or ended: kept so the span counts as made,
    /// but neither searched nor given to the model.
    pub quiet: bool,
    /// What the model reads and search finds.
    pub text: String,
    pub facts: DigestFacts,
    pub created_at: Timestamp,
}

/// A message the user sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Asked {
    pub message_id: MessageId,
    pub text: String,
}

/// A task named in a digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskLine {
    pub task_id: TaskId,
    /// The first line of its description.
    pub title: String,
    /// Its state (still open), or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Something decided: a note of a decision, an approved plan, answered questions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Decided {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note_id: Option<NoteId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
}

/// The facts of a span, with links (message, task and note ids).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DigestFacts {
    /// The first [`ASKED_KEPT`] things asked.
    pub asked: Vec<Asked>,
    /// How many messages the user sent.
    pub asked_total: u32,
    pub spawned: Vec<TaskLine>,
    pub decided: Vec<Decided>,
    pub merged: Vec<TaskLine>,
    pub failed: Vec<TaskLine>,
    pub cancelled: Vec<TaskLine>,
    /// Tasks not merged, failed or cancelled at the span's end.
    pub still_open: Vec<TaskLine>,
    /// What agents and the main thread cost.
    pub spent_usd: f64,
}

impl DigestFacts {
    /// Nothing happened (tasks left open from before do not count).
    #[must_use]
    pub fn is_quiet(&self) -> bool {
        self.asked_total == 0
            && self.spawned.is_empty()
            && self.decided.is_empty()
            && self.merged.is_empty()
            && self.failed.is_empty()
            && self.cancelled.is_empty()
    }
}

/// A task's change of state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub task_id: TaskId,
    pub title: String,
    pub from: Option<TaskState>,
    pub to: TaskState,
    /// The task's error, for a failure.
    pub error: Option<String>,
}

/// What the store read of one day, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DayRecords {
    /// The user's messages in the main thread.
    pub asked: Vec<(MessageId, String)>,
    /// Tasks created (id, description).
    pub spawned: Vec<(TaskId, String)>,
    /// Notes written (decisions and facts).
    pub notes: Vec<(NoteId, NoteKind, String)>,
    pub transitions: Vec<Transition>,
    /// Tasks open at the day's end, with their state then.
    pub still_open: Vec<(TaskId, String, TaskState)>,
    pub spent_usd: f64,
}

/// The first line of `text`, trimmed and cut at [`LINE_CHARS`] characters.
#[must_use]
pub fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() <= LINE_CHARS {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(LINE_CHARS - 1).collect();
    cut.push('…');
    cut
}

fn line(task_id: TaskId, description: &str, detail: Option<String>) -> TaskLine {
    TaskLine {
        task_id,
        title: first_line(description),
        detail,
    }
}

/// The facts of one day.
#[must_use]
pub fn compose_day(r: &DayRecords) -> DigestFacts {
    let mut f = DigestFacts {
        asked: r
            .asked
            .iter()
            .filter(|(_, t)| !t.trim().is_empty())
            .take(ASKED_KEPT)
            .map(|(id, t)| Asked {
                message_id: *id,
                text: first_line(t),
            })
            .collect(),
        asked_total: u32::try_from(r.asked.len()).unwrap_or(u32::MAX),
        spawned: r.spawned.iter().map(|(id, d)| line(*id, d, None)).collect(),
        spent_usd: r.spent_usd,
        ..DigestFacts::default()
    };
    for (id, kind, text) in &r.notes {
        let prefix = match kind {
            NoteKind::Decision => "",
            NoteKind::Fact => "Noted: ",
        };
        f.decided.push(Decided {
            text: format!("{prefix}{}", first_line(text)),
            note_id: Some(*id),
            task_id: None,
        });
    }
    for t in &r.transitions {
        let decided = match (t.from, t.to) {
            (Some(TaskState::WaitingPlanReview), to) if to != TaskState::Cancelled => {
                Some("Approved the plan")
            }
            (Some(TaskState::WaitingAnswers), to) if to != TaskState::Cancelled => {
                Some("Answered the questions")
            }
            _ => None,
        };
        if let Some(what) = decided {
            f.decided.push(Decided {
                text: format!("{what} of \"{}\"", first_line(&t.title)),
                note_id: None,
                task_id: Some(t.task_id),
            });
        }
        let list = match t.to {
            TaskState::Merged => &mut f.merged,
            TaskState::Failed => &mut f.failed,
            TaskState::Cancelled => &mut f.cancelled,
            _ => continue,
        };
        let detail = t.error.as_deref().map(first_line);
        push_unique(list, line(t.task_id, &t.title, detail));
    }
    f.still_open = r
        .still_open
        .iter()
        .map(|(id, d, s)| line(*id, d, Some(s.as_str().replace('_', " "))))
        .collect();
    f
}

/// Adds `l`, or replaces the line of the same task (its latest word wins).
fn push_unique(list: &mut Vec<TaskLine>, l: TaskLine) {
    match list.iter_mut().find(|x| x.task_id == l.task_id) {
        Some(x) => *x = l,
        None => list.push(l),
    }
}

/// A week's or a month's facts from its parts (oldest first): everything each part
/// names, once; still open what the last part left open.
#[must_use]
pub fn merge(parts: &[&DigestFacts]) -> DigestFacts {
    let mut f = DigestFacts::default();
    for p in parts {
        for a in &p.asked {
            if f.asked.len() < ASKED_KEPT {
                f.asked.push(a.clone());
            }
        }
        f.asked_total = f.asked_total.saturating_add(p.asked_total);
        for (into, from) in [
            (&mut f.spawned, &p.spawned),
            (&mut f.merged, &p.merged),
            (&mut f.failed, &p.failed),
            (&mut f.cancelled, &p.cancelled),
        ] {
            for l in from {
                push_unique(into, l.clone());
            }
        }
        f.decided.extend(p.decided.iter().cloned());
        f.spent_usd += p.spent_usd;
    }
    if let Some(last) = parts.last() {
        f.still_open.clone_from(&last.still_open);
    }
    // A task merged or cancelled later in the span is no longer open, nor failed.
    let ended: Vec<TaskId> = f
        .merged
        .iter()
        .chain(&f.cancelled)
        .map(|l| l.task_id)
        .collect();
    f.failed.retain(|l| !ended.contains(&l.task_id));
    f
}

/// The digest's text: its title, then a line per kind of fact that has any.
#[must_use]
pub fn render(span: Span, zone: &str, f: &DigestFacts) -> String {
    let mut out = format!("{} ({zone})", span.title());
    if f.is_quiet() {
        out.push_str("\nNothing was asked, started or finished.");
        if !f.still_open.is_empty() {
            section(
                &mut out,
                "Still open",
                &tasks(&f.still_open),
                f.still_open.len(),
            );
        }
        return out;
    }
    if f.asked_total > 0 {
        let asks: Vec<String> = f.asked.iter().map(|a| format!("\"{}\"", a.text)).collect();
        section(
            &mut out,
            "Asked",
            &asks,
            usize::try_from(f.asked_total).unwrap_or(usize::MAX),
        );
    }
    for (label, list) in [
        ("Spawned", &f.spawned),
        ("Merged", &f.merged),
        ("Failed", &f.failed),
        ("Cancelled", &f.cancelled),
    ] {
        section(&mut out, label, &tasks(list), list.len());
    }
    let decided: Vec<String> = f.decided.iter().map(|d| d.text.clone()).collect();
    section(&mut out, "Decided", &decided, decided.len());
    section(
        &mut out,
        "Still open",
        &tasks(&f.still_open),
        f.still_open.len(),
    );
    if f.spent_usd >= 0.005 {
        let _ = write!(out, "\nSpent: ${:.2}", f.spent_usd);
    }
    out
}

fn tasks(list: &[TaskLine]) -> Vec<String> {
    list.iter()
        .map(|l| match &l.detail {
            Some(d) => format!("{} [task {}] ({d})", l.title, l.task_id),
            None => format!("{} [task {}]", l.title, l.task_id),
        })
        .collect()
}

/// `\n<label> (<total>): a; b; … and N more`, when there is anything.
fn section(out: &mut String, label: &str, items: &[String], total: usize) {
    if total == 0 {
        return;
    }
    let shown: Vec<&str> = items.iter().take(LISTED).map(String::as_str).collect();
    let _ = write!(out, "\n{label} ({total}): {}", shown.join("; "));
    if total > shown.len() {
        let _ = write!(out, "; and {} more", total - shown.len());
    }
}

//! Inbox rules: what kinds of item exist, how urgent each is, and the order they show in.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

use crate::Timestamp;

/// Why an item is in the inbox. Only things that need the human get an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InboxKind {
    /// A worker asked questions.
    Question,
    /// A plan waits for approval.
    PlanReview,
    /// Work is ready for review.
    Review,
    /// A task failed.
    Failed,
    /// A budget is reached: raise it, or let the task continue once.
    Budget,
}

impl InboxKind {
    pub const ALL: [Self; 5] = [
        Self::Question,
        Self::PlanReview,
        Self::Review,
        Self::Failed,
        Self::Budget,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Question => "question",
            Self::PlanReview => "plan_review",
            Self::Review => "review",
            Self::Failed => "failed",
            Self::Budget => "budget",
        }
    }

    /// A worker is blocked on the human for questions and plans, so they come first;
    /// review can wait a little; failures are listed in their own section.
    #[must_use]
    pub const fn priority(self) -> Priority {
        match self {
            Self::Question | Self::PlanReview | Self::Budget => Priority::High,
            Self::Review => Priority::Normal,
            Self::Failed => Priority::Low,
        }
    }

    /// Everything but failures asks the human to act for the work to go on.
    #[must_use]
    pub const fn needs_you(self) -> bool {
        !matches!(self, Self::Failed)
    }

    /// The item's title, from the task's description.
    #[must_use]
    pub fn title(self, task_description: &str) -> String {
        let what = first_line(task_description, 80);
        match self {
            Self::Question => format!("Question: {what}"),
            Self::PlanReview => format!("Plan ready: {what}"),
            Self::Review => format!("Ready for review: {what}"),
            Self::Failed => format!("Failed: {what}"),
            Self::Budget => format!("Budget reached: {what}"),
        }
    }
}

impl fmt::Display for InboxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InboxKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown inbox kind '{s}'"))
    }
}

/// Urgency, most urgent first when sorted ascending.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Urgent,
    High,
    Normal,
    Low,
}

impl Priority {
    /// Stored as a small integer so the database can sort by it.
    #[must_use]
    pub const fn rank(self) -> i64 {
        match self {
            Self::Urgent => 0,
            Self::High => 1,
            Self::Normal => 2,
            Self::Low => 3,
        }
    }

    #[must_use]
    pub const fn from_rank(rank: i64) -> Self {
        match rank {
            i64::MIN..=0 => Self::Urgent,
            1 => Self::High,
            2 => Self::Normal,
            _ => Self::Low,
        }
    }
}

/// Inbox order: open before resolved, then most urgent, then longest waiting.
#[must_use]
pub fn inbox_order(a: (bool, Priority, Timestamp), b: (bool, Priority, Timestamp)) -> Ordering {
    let (a_resolved, a_prio, a_at) = a;
    let (b_resolved, b_prio, b_at) = b;
    a_resolved
        .cmp(&b_resolved)
        .then(a_prio.cmp(&b_prio))
        .then(a_at.cmp(&b_at))
}

/// The first line of `text`, cut to at most `max` characters on a char boundary.
#[must_use]
pub fn first_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{}…", cut.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_workers_outrank_review_and_failures() {
        assert!(InboxKind::Question.priority() < InboxKind::Review.priority());
        assert!(InboxKind::PlanReview.priority() < InboxKind::Review.priority());
        assert!(InboxKind::Review.priority() < InboxKind::Failed.priority());
        assert!(InboxKind::Question.needs_you());
        assert!(!InboxKind::Failed.needs_you());
    }

    #[test]
    fn ordering_is_open_then_priority_then_age() {
        let t = Timestamp::from_millis;
        let mut items = vec![
            (true, Priority::Urgent, t(1)),
            (false, Priority::Normal, t(1)),
            (false, Priority::High, t(5)),
            (false, Priority::High, t(2)),
        ];
        items.sort_by(|a, b| inbox_order(*a, *b));
        assert_eq!(
            items,
            vec![
                (false, Priority::High, t(2)),
                (false, Priority::High, t(5)),
                (false, Priority::Normal, t(1)),
                (true, Priority::Urgent, t(1)),
            ]
        );
    }

    #[test]
    fn ranks_round_trip() {
        for p in [
            Priority::Urgent,
            Priority::High,
            Priority::Normal,
            Priority::Low,
        ] {
            assert_eq!(Priority::from_rank(p.rank()), p);
        }
        assert_eq!(Priority::from_rank(99), Priority::Low);
        assert_eq!(Priority::from_rank(-4), Priority::Urgent);
    }

    #[test]
    fn kinds_round_trip_and_titles_are_short() {
        for k in InboxKind::ALL {
            assert_eq!(k.as_str().parse::<InboxKind>().unwrap(), k);
        }
        assert!("nope".parse::<InboxKind>().is_err());
        let long = "x".repeat(500);
        assert!(InboxKind::Review.title(&long).chars().count() < 110);
        assert_eq!(
            InboxKind::Question.title("\n\nFix login\nmore"),
            "Question: Fix login"
        );
    }

    #[test]
    fn first_line_cuts_on_char_boundaries() {
        assert_eq!(first_line("héllo wörld", 6), "héllo…");
        assert_eq!(first_line("", 5), "");
    }
}

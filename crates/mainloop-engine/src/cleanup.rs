//! Cleaning up after finished tasks: how long each kind of finished task keeps its
//! worktree and private home (`Retention` and the pure `due_for_cleanup`), which tasks
//! are due, the mark that one was cleaned, and what mainloop holds on disk
//! (`Engine::system_report`, the disk part asked of the workspaces port).

use std::time::Duration;

use mainloop_domain::task::TaskState;
use mainloop_domain::{TaskId, Timestamp};
use mainloop_store::{TaskCounts, TaskFootprint};

use crate::{Engine, Result};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// How long a finished task keeps its worktree, private home and environment after its
/// last change. Its branch is never removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub merged: Duration,
    pub failed: Duration,
    pub cancelled: Duration,
}

impl Default for Retention {
    /// Merged work at once; failed and cancelled work a week, so it can be retried or
    /// looked at.
    fn default() -> Self {
        Self {
            merged: Duration::ZERO,
            failed: 7 * DAY,
            cancelled: 7 * DAY,
        }
    }
}

impl Retention {
    /// From the configured hours and days.
    #[must_use]
    pub fn from_config(merged_hours: u64, failed_days: u64, cancelled_days: u64) -> Self {
        Self {
            merged: HOUR.saturating_mul(u32::try_from(merged_hours).unwrap_or(u32::MAX)),
            failed: DAY.saturating_mul(u32::try_from(failed_days).unwrap_or(u32::MAX)),
            cancelled: DAY.saturating_mul(u32::try_from(cancelled_days).unwrap_or(u32::MAX)),
        }
    }

    /// How long a task in `state` is kept; `None` for a state whose task is never
    /// cleaned (every state but merged, failed and cancelled).
    #[must_use]
    pub const fn of(&self, state: TaskState) -> Option<Duration> {
        match state {
            TaskState::Merged => Some(self.merged),
            TaskState::Failed => Some(self.failed),
            TaskState::Cancelled => Some(self.cancelled),
            TaskState::Queued
            | TaskState::Planning
            | TaskState::WaitingAnswers
            | TaskState::WaitingPlanReview
            | TaskState::Implementing
            | TaskState::OnHold
            | TaskState::Checking
            | TaskState::Review => None,
        }
    }

    /// The longest any finished task is kept: how long an unused cached clone stays.
    #[must_use]
    pub fn longest(&self) -> Duration {
        self.merged.max(self.failed).max(self.cancelled)
    }
}

/// Whether a task in `state`, last changed at `updated_at`, is to be cleaned at `now`:
/// finished (merged, failed, cancelled) for at least its retention.
#[must_use]
pub fn due_for_cleanup(
    retention: &Retention,
    state: TaskState,
    updated_at: Timestamp,
    now: Timestamp,
) -> bool {
    retention.of(state).is_some_and(|keep| {
        let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        now.as_millis().saturating_sub(updated_at.as_millis()) >= keep
    })
}

/// What the task workspaces hold on disk, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub worktrees_bytes: u64,
    pub homes_bytes: u64,
    pub clones_bytes: u64,
}

/// What mainloop holds: its directories, its database and its tasks by footprint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemReport {
    pub disk: DiskUsage,
    pub database_bytes: u64,
    pub tasks: TaskCounts,
}

impl SystemReport {
    #[must_use]
    pub const fn total_bytes(&self) -> u64 {
        self.disk
            .worktrees_bytes
            .saturating_add(self.disk.homes_bytes)
            .saturating_add(self.disk.clones_bytes)
            .saturating_add(self.database_bytes)
    }
}

impl Engine {
    /// Every task not cleaned since its last change (live ones included), oldest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn uncleaned_tasks(&self) -> Result<Vec<TaskFootprint>> {
        Ok(self.store().uncleaned_tasks().await?)
    }

    /// The finished tasks due for cleaning at `now`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn tasks_due_for_cleanup(
        &self,
        retention: &Retention,
        now: Timestamp,
    ) -> Result<Vec<TaskFootprint>> {
        let mut tasks = self.uncleaned_tasks().await?;
        tasks.retain(|t| due_for_cleanup(retention, t.state, t.updated_at, now));
        Ok(tasks)
    }

    /// Records that task `id`'s worktree and home are gone, unless it changed since
    /// `seen`. Whether it was recorded.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn mark_task_cleaned(
        &self,
        id: TaskId,
        seen: Timestamp,
        at: Timestamp,
    ) -> Result<bool> {
        Ok(self.store().mark_task_cleaned(id, seen, at).await?)
    }

    /// What mainloop holds on disk and how many tasks hold it.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn system_report(&self) -> Result<SystemReport> {
        let workspaces = self.inner.workspaces.read().ok().and_then(|w| w.clone());
        let disk = match workspaces {
            Some(w) => w.disk_usage().await,
            None => DiskUsage::default(),
        };
        let database_bytes = u64::try_from(self.store().database_bytes().await?).unwrap_or(0);
        let tasks = self.store().task_counts().await?;
        Ok(SystemReport {
            disk,
            database_bytes,
            tasks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(T0 + ms)
    }

    const H: i64 = 3_600_000;
    const D: i64 = 24 * H;

    #[test]
    fn each_state_is_kept_for_its_retention_counted_from_its_last_change() {
        let defaults = Retention::default();
        let configured = Retention::from_config(2, 3, 1);
        #[rustfmt::skip]
        let table: &[(&Retention, TaskState, i64, bool)] = &[
            // Merged work is cleaned at once by default.
            (&defaults, TaskState::Merged, 0, true),
            (&defaults, TaskState::Failed, 0, false),
            (&defaults, TaskState::Failed, 7 * D - 1, false),
            (&defaults, TaskState::Failed, 7 * D, true),
            (&defaults, TaskState::Cancelled, 6 * D, false),
            (&defaults, TaskState::Cancelled, 8 * D, true),
            (&configured, TaskState::Merged, 2 * H - 1, false),
            (&configured, TaskState::Merged, 2 * H, true),
            (&configured, TaskState::Failed, 3 * D - 1, false),
            (&configured, TaskState::Failed, 3 * D, true),
            (&configured, TaskState::Cancelled, D, true),
            // A clock behind the last change never makes a task due early.
            (&configured, TaskState::Cancelled, -5 * D, false),
        ];
        for (retention, state, elapsed, due) in table {
            assert_eq!(
                due_for_cleanup(retention, *state, at(0), at(*elapsed)),
                *due,
                "{state:?} after {elapsed} ms with {retention:?}"
            );
        }
    }

    #[test]
    fn a_task_in_any_other_state_is_never_due() {
        let none = Retention::from_config(0, 0, 0);
        for state in TaskState::ALL {
            let finished = matches!(
                state,
                TaskState::Merged | TaskState::Failed | TaskState::Cancelled
            );
            assert_eq!(
                due_for_cleanup(&none, state, at(0), at(365 * D)),
                finished,
                "{state:?}"
            );
        }
    }

    #[test]
    fn huge_retentions_saturate_instead_of_overflowing() {
        let long = Retention::from_config(u64::MAX, u64::MAX, u64::MAX);
        assert!(!due_for_cleanup(
            &long,
            TaskState::Failed,
            at(0),
            at(100 * 365 * D)
        ));
        assert_eq!(long.longest(), long.failed);
    }

    #[test]
    fn the_total_adds_every_part() {
        let report = SystemReport {
            disk: DiskUsage {
                worktrees_bytes: 1,
                homes_bytes: 2,
                clones_bytes: 4,
            },
            database_bytes: 8,
            tasks: TaskCounts::default(),
        };
        assert_eq!(report.total_bytes(), 15);
    }
}

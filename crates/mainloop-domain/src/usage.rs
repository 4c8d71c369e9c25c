//! Spending: the budgets a user sets, the pure check of a run against them, the spending
//! windows (a UTC day, a week from Monday), and the shapes of the usage report.

use crate::Timestamp;
use crate::agents::AgentName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The largest budget accepted, in US dollars: anything above is a typo.
pub const MAX_BUDGET_USD: f64 = 1_000_000.0;

/// What a user allows to be spent, in US dollars; every cap is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// The most one task may cost (a task's own cap, once raised, replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1_000_000.0, exclusive_minimum = 0.0)]
    pub task_usd: Option<f64>,
    /// The most all work may cost in a day (UTC), the main thread included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1_000_000.0, exclusive_minimum = 0.0)]
    pub daily_usd: Option<f64>,
    /// The most all work may cost in a week (from Monday 00:00 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1_000_000.0, exclusive_minimum = 0.0)]
    pub weekly_usd: Option<f64>,
    /// Caps of one agent's runs, by the agent's configured name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, AgentBudget>)]
    pub agents: BTreeMap<AgentName, AgentBudget>,
}

/// Caps of one agent's runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1_000_000.0, exclusive_minimum = 0.0)]
    pub daily_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1_000_000.0, exclusive_minimum = 0.0)]
    pub weekly_usd: Option<f64>,
}

/// A budget amount that is not a positive number of dollars up to [`MAX_BUDGET_USD`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} must be a positive number of US dollars, at most 1000000")]
pub struct BadBudget(pub String);

/// Checks one amount.
///
/// # Errors
/// Not finite, not positive, or too large.
pub fn check_amount(what: &str, usd: f64) -> Result<f64, BadBudget> {
    if usd.is_finite() && usd > 0.0 && usd <= MAX_BUDGET_USD {
        Ok(usd)
    } else {
        Err(BadBudget(what.to_owned()))
    }
}

impl Budgets {
    /// Checks every amount.
    ///
    /// # Errors
    /// The first amount out of range, named.
    pub fn validate(&self) -> Result<(), BadBudget> {
        let check = |what: &str, v: Option<f64>| v.map_or(Ok(0.0), |v| check_amount(what, v));
        check("task_usd", self.task_usd)?;
        check("daily_usd", self.daily_usd)?;
        check("weekly_usd", self.weekly_usd)?;
        for (name, b) in &self.agents {
            check(&format!("agents.{name}.daily_usd"), b.daily_usd)?;
            check(&format!("agents.{name}.weekly_usd"), b.weekly_usd)?;
        }
        Ok(())
    }

    /// The cap of `scope` (for `agent`'s scopes, that agent's).
    #[must_use]
    pub fn limit(
        &self,
        scope: BudgetScope,
        task_cap: Option<f64>,
        agent: &AgentName,
    ) -> Option<f64> {
        let own = self.agents.get(agent);
        match scope {
            BudgetScope::Task => task_cap.or(self.task_usd),
            BudgetScope::Day => self.daily_usd,
            BudgetScope::Week => self.weekly_usd,
            BudgetScope::AgentDay => own.and_then(|b| b.daily_usd),
            BudgetScope::AgentWeek => own.and_then(|b| b.weekly_usd),
        }
    }

    /// Sets the cap of `scope` to `usd` (a task's own cap is the task's, not here).
    pub fn set(&mut self, scope: BudgetScope, agent: &AgentName, usd: f64) {
        match scope {
            BudgetScope::Task => self.task_usd = Some(usd),
            BudgetScope::Day => self.daily_usd = Some(usd),
            BudgetScope::Week => self.weekly_usd = Some(usd),
            BudgetScope::AgentDay => {
                self.agents.entry(agent.clone()).or_default().daily_usd = Some(usd);
            }
            BudgetScope::AgentWeek => {
                self.agents.entry(agent.clone()).or_default().weekly_usd = Some(usd);
            }
        }
    }
}

/// Which budget a run met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// The task's own cost cap.
    Task,
    /// The user's spending today.
    Day,
    /// The user's spending this week.
    Week,
    /// The task's agent's spending today.
    AgentDay,
    /// The task's agent's spending this week.
    AgentWeek,
}

impl BudgetScope {
    pub const ALL: [Self; 5] = [
        Self::Task,
        Self::Day,
        Self::Week,
        Self::AgentDay,
        Self::AgentWeek,
    ];
}

/// What has been spent, in US dollars, in each scope a run of a task counts against.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spend {
    pub task: f64,
    pub day: f64,
    pub week: f64,
    pub agent_day: f64,
    pub agent_week: f64,
}

impl Spend {
    #[must_use]
    pub const fn of(&self, scope: BudgetScope) -> f64 {
        match scope {
            BudgetScope::Task => self.task,
            BudgetScope::Day => self.day,
            BudgetScope::Week => self.week,
            BudgetScope::AgentDay => self.agent_day,
            BudgetScope::AgentWeek => self.agent_week,
        }
    }
}

/// A budget a run would go past.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reached {
    pub scope: BudgetScope,
    pub limit_usd: f64,
    pub spent_usd: f64,
}

/// The first budget (task, day, week, the agent's day, its week) that `spend` has
/// reached, if any: a run starts only below every cap.
#[must_use]
pub fn reached(
    budgets: &Budgets,
    task_cap: Option<f64>,
    agent: &AgentName,
    spend: &Spend,
) -> Option<Reached> {
    BudgetScope::ALL.into_iter().find_map(|scope| {
        let limit = budgets.limit(scope, task_cap, agent)?;
        let spent = spend.of(scope);
        (spent >= limit).then_some(Reached {
            scope,
            limit_usd: limit,
            spent_usd: spent,
        })
    })
}

/// The words for a budget reached, naming what to do.
#[must_use]
pub fn reason(r: &Reached, agent: &AgentName) -> String {
    let what = match r.scope {
        BudgetScope::Task => "This task's budget".to_owned(),
        BudgetScope::Day => "Today's budget".to_owned(),
        BudgetScope::Week => "This week's budget".to_owned(),
        BudgetScope::AgentDay => format!("Today's budget for {agent}"),
        BudgetScope::AgentWeek => format!("This week's budget for {agent}"),
    };
    format!(
        "{what} of {} is reached ({} spent): raise it, or continue once.",
        dollars(r.limit_usd),
        dollars(r.spent_usd)
    )
}

/// `$0.05`, `$12.30`: cents, or up to four decimals below one cent (`$0.0042`).
#[must_use]
pub fn dollars(usd: f64) -> String {
    if usd > 0.0 && usd < 0.01 {
        let text = format!("{usd:.4}");
        let text = text.trim_end_matches('0');
        if text == "0." {
            "<$0.0001".to_owned()
        } else {
            format!("${text}")
        }
    } else {
        format!("${usd:.2}")
    }
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The start (UTC midnight) of the day holding `t`.
#[must_use]
pub const fn day_start(t: Timestamp) -> Timestamp {
    Timestamp::from_millis(t.as_millis().div_euclid(DAY_MS) * DAY_MS)
}

/// The start (Monday 00:00 UTC) of the week holding `t`.
#[must_use]
pub const fn week_start(t: Timestamp) -> Timestamp {
    // Day 0 of the epoch was a Thursday: Monday is 3 days on.
    let day = t.as_millis().div_euclid(DAY_MS);
    let monday = day - (day + 3).rem_euclid(7);
    Timestamp::from_millis(monday * DAY_MS)
}

/// When the day and week holding `t` end: the resets of the daily and weekly caps.
#[must_use]
pub const fn next_resets(t: Timestamp) -> (Timestamp, Timestamp) {
    (
        day_start(t).plus_millis(DAY_MS),
        week_start(t).plus_millis(7 * DAY_MS),
    )
}

/// The human's answer to a budget hold: `POST /api/tasks/{id}/budget`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum BudgetAnswer {
    /// Raise the budget that was reached to `usd` (above what it has spent); every task
    /// it held goes on.
    Raise {
        #[schema(minimum = 0.0, maximum = 1_000_000.0, exclusive_minimum = 0.0)]
        usd: f64,
    },
    /// Let this task run once past the budget; its next run is checked again.
    ContinueOnce,
}

/// Whether the user's work is paused (no new runs; running ones park at their turn's
/// end).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PauseState {
    pub paused: bool,
    /// Since when, while paused.
    pub since: Option<Timestamp>,
}

/// What an agent said about one of its account's quota windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaWindow {
    /// The agent's configured name.
    #[schema(value_type = String)]
    pub agent: AgentName,
    /// The window's name: `five_hour`, `seven_day`, or another the agent reported.
    pub window: String,
    /// How much of the window is used, 0 to 100, when said.
    pub used_percent: Option<f64>,
    /// When the window resets, when said.
    pub resets_at: Option<Timestamp>,
    /// The window is used up: the agent's work waits for its reset.
    pub limited: bool,
    /// When the agent said it.
    pub observed_at: Timestamp,
}

impl QuotaWindow {
    /// A window as an agent reports it, its reset in Unix seconds.
    #[must_use]
    pub fn reported(
        agent: AgentName,
        window: String,
        (used_percent, resets_at_secs): (Option<f64>, Option<u64>),
        limited: bool,
        observed_at: Timestamp,
    ) -> Self {
        let resets_at = resets_at_secs.map(|secs| {
            let secs = i64::try_from(secs).unwrap_or(i64::MAX);
            Timestamp::from_millis(secs.saturating_mul(1000))
        });
        Self {
            agent,
            window,
            used_percent,
            resets_at,
            limited,
            observed_at,
        }
    }
}

/// Cost and tokens of some runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Totals {
    pub cost_usd: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Agent runs and main-thread turns counted.
    pub runs: i64,
}

impl Totals {
    pub fn add(&mut self, other: &Self) {
        self.cost_usd += other.cost_usd;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.runs += other.runs;
    }
}

/// What spent: an agent by name, or the main thread (`main_thread`, never an agent's
/// name).
pub const MAIN_THREAD_SOURCE: &str = "main_thread";

/// The spending of one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SourceTotals {
    /// An agent's name, or `main_thread`.
    pub source: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// One day of spending.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageDay {
    /// The day (UTC), `YYYY-MM-DD`.
    pub date: String,
    #[serde(flatten)]
    pub totals: Totals,
    /// The day's spending by source, largest first.
    pub sources: Vec<SourceTotals>,
}

/// One task's spending in the period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskUsage {
    pub task_id: crate::TaskId,
    /// The task description's first line.
    pub title: String,
    #[schema(value_type = String)]
    pub agent: AgentName,
    #[schema(value_type = String)]
    pub state: crate::task::TaskState,
    #[serde(flatten)]
    pub totals: Totals,
}

/// The usage report: `GET /api/usage`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// The first and last day reported (UTC), `YYYY-MM-DD`.
    pub from: String,
    pub to: String,
    /// Every day of the period, oldest first, days without spending included.
    pub days: Vec<UsageDay>,
    /// The period's spending by source, largest first.
    pub sources: Vec<SourceTotals>,
    /// The costliest tasks of the period (at most 10), costliest first.
    pub tasks: Vec<TaskUsage>,
    /// Spent today and this week, against `budgets`.
    pub today: Totals,
    pub week: Totals,
    /// When today's and this week's caps reset.
    pub day_resets_at: Timestamp,
    pub week_resets_at: Timestamp,
    pub budgets: Budgets,
    pub pause: PauseState,
    /// The agents' quota windows, as they last reported them.
    pub windows: Vec<QuotaWindow>,
}

/// `YYYY-MM-DD` of the UTC day holding `t`.
#[must_use]
pub fn date_of(t: Timestamp) -> String {
    t.to_rfc3339().chars().take(10).collect()
}

/// The day number (days since the epoch, UTC) holding `t`.
#[must_use]
pub const fn day_number(t: Timestamp) -> i64 {
    t.as_millis().div_euclid(DAY_MS)
}

/// The timestamp at the start of day number `day`.
#[must_use]
pub const fn day_at(day: i64) -> Timestamp {
    Timestamp::from_millis(day * DAY_MS)
}

#[cfg(test)]
mod tests;

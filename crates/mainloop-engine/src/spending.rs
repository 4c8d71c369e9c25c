//! Spending: the user's budgets and pause (checked before every agent run), the answers
//! to a budget hold, the usage report, and what the agents say of their quota windows.

use std::collections::{BTreeMap, BTreeSet};

use mainloop_domain::event::EventName;
use mainloop_domain::inbox::first_line;
use mainloop_domain::records::Task;
use mainloop_domain::task::{HoldKind, TaskEvent, TaskState, TransitionError};
use mainloop_domain::usage::{
    self, BudgetAnswer, BudgetScope, Budgets, PauseState, QuotaWindow, Reached, SourceTotals,
    Spend, TaskUsage, Totals, Usage, UsageDay,
};
use mainloop_domain::{TaskId, Timestamp, UserId};

use crate::{Engine, EngineError, Result, now};

/// Why a run may not start now.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// The user paused all work.
    Paused,
    /// A budget is reached.
    Budget(Reached),
}

/// The most days a usage report covers.
pub const MAX_USAGE_DAYS: u32 = 366;

/// The costliest tasks a usage report lists.
const TOP_TASKS: i64 = 10;

impl Engine {
    /// The user's budgets.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn budgets(&self, user: UserId) -> Result<Budgets> {
        Ok(self.store().spending_settings(user).await?.0)
    }

    /// Replaces the user's budgets; tasks held by a budget the new ones allow go on.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for an amount out of range; storage failures.
    pub async fn set_budgets(&self, user: UserId, budgets: Budgets) -> Result<Budgets> {
        budgets
            .validate()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let mut tx = self.store().begin().await?;
        tx.set_budgets(user, &budgets).await?;
        self.announce_spending(&mut tx, user).await?;
        tx.commit().await?;
        self.release_budget_holds(user, None).await?;
        Ok(budgets)
    }

    /// Whether the user's work is paused.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn pause_state(&self, user: UserId) -> Result<PauseState> {
        Ok(self.store().spending_settings(user).await?.1)
    }

    /// Pauses the user's work: no run starts until [`Engine::resume`]; a running agent
    /// finishes its turn, and its task's next run holds instead of starting.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn pause(&self, user: UserId) -> Result<PauseState> {
        self.set_paused(user, Some(now())).await
    }

    /// Resumes the user's work: every paused task goes on.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn resume(&self, user: UserId) -> Result<PauseState> {
        let state = self.set_paused(user, None).await?;
        for task in self.held_tasks(user, HoldKind::Paused).await? {
            self.end_hold(user, task.id).await?;
        }
        Ok(state)
    }

    async fn set_paused(&self, user: UserId, at: Option<Timestamp>) -> Result<PauseState> {
        let mut tx = self.store().begin().await?;
        tx.set_paused(user, at).await?;
        self.announce_spending(&mut tx, user).await?;
        tx.commit().await?;
        self.pause_state(user).await
    }

    /// Sends the user's pause and budgets as a `usage.updated` event. Read inside the
    /// writing transaction, so the event carries what it committed.
    async fn announce_spending(&self, tx: &mut mainloop_store::Tx, user: UserId) -> Result<()> {
        let (budgets, pause) = tx.spending_settings(user).await?;
        let payload = serde_json::json!({"pause": pause, "budgets": budgets});
        tx.append_event(user, EventName::UsageUpdated, &payload, now())
            .await?;
        Ok(())
    }

    /// The users whose work is paused: the scheduler starts none of their tasks.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn paused_users(&self) -> Result<BTreeSet<UserId>> {
        Ok(self.store().paused_users().await?.into_iter().collect())
    }

    /// Whether a run of `task` may start now: not while its user is paused, nor past a
    /// budget (unless the human let this run go past it once).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn spending_gate(&self, user: UserId, task: &Task) -> Result<Option<Gate>> {
        let (budgets, pause) = self.store().spending_settings(user).await?;
        if pause.paused {
            return Ok(Some(Gate::Paused));
        }
        if task.core.budget_waived || !has_caps(&budgets, task.budget_usd) {
            return Ok(None);
        }
        let spend = self.spend_of(user, task).await?;
        Ok(usage::reached(&budgets, task.budget_usd, &task.agent, &spend).map(Gate::Budget))
    }

    async fn spend_of(&self, user: UserId, task: &Task) -> Result<Spend> {
        let at = now();
        let windows = (usage::day_start(at), usage::week_start(at));
        Ok(self
            .store()
            .spend(user, task.id, &task.agent, windows)
            .await?)
    }

    /// The human's answer to a budget hold: raise the budget reached (every task it held
    /// goes on), or let this task continue once.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for another user's task; [`EngineError::WrongState`]
    /// when it is not on a budget hold; [`EngineError::Invalid`] for an amount out of
    /// range or not above what is spent.
    pub async fn answer_budget(
        &self,
        user: UserId,
        id: TaskId,
        answer: BudgetAnswer,
    ) -> Result<Task> {
        let task = self.task(user, id).await?;
        let scope = match task.core.hold.as_ref() {
            Some(h) if task.state == TaskState::OnHold && h.kind == HoldKind::Budget => {
                h.budget.unwrap_or(BudgetScope::Task)
            }
            _ => {
                return Err(EngineError::WrongState(TransitionError {
                    state: task.state,
                    event: "budget_answered",
                }));
            }
        };
        let usd = match answer {
            BudgetAnswer::ContinueOnce => {
                return self
                    .apply_task_event(Some(user), id, TaskEvent::BudgetWaived)
                    .await;
            }
            BudgetAnswer::Raise { usd } => {
                usage::check_amount("usd", usd).map_err(|e| EngineError::Invalid(e.to_string()))?
            }
        };
        let spent = self.spend_of(user, &task).await?.of(scope);
        if usd <= spent {
            return Err(EngineError::Invalid(format!(
                "usd must be above what is already spent ({})",
                usage::dollars(spent)
            )));
        }
        let mut tx = self.store().begin().await?;
        if scope == BudgetScope::Task {
            tx.set_task_budget(id, usd).await?;
        } else {
            let (mut budgets, _) = tx.spending_settings(user).await?;
            budgets.set(scope, &task.agent, usd);
            tx.set_budgets(user, &budgets).await?;
            self.announce_spending(&mut tx, user).await?;
        }
        tx.commit().await?;
        self.release_budget_holds(user, Some(id)).await?;
        self.task(user, id).await
    }

    /// Ends the budget holds of `user`'s tasks that no budget holds any more; `raised`,
    /// the task whose answer raised a budget, goes on in any case (its next run holds
    /// again, with the right words, if another budget is reached).
    async fn release_budget_holds(&self, user: UserId, raised: Option<TaskId>) -> Result<()> {
        for task in self.held_tasks(user, HoldKind::Budget).await? {
            let go = Some(task.id) == raised || self.spending_gate(user, &task).await?.is_none();
            if go {
                self.end_hold(user, task.id).await?;
            }
        }
        Ok(())
    }

    async fn held_tasks(&self, user: UserId, kind: HoldKind) -> Result<Vec<Task>> {
        let held = self
            .store()
            .tasks(user, &[TaskState::OnHold], 10_000)
            .await?;
        Ok(held
            .into_iter()
            .filter(|t| t.core.hold.as_ref().is_some_and(|h| h.kind == kind))
            .collect())
    }

    async fn end_hold(&self, user: UserId, id: TaskId) -> Result<()> {
        match self
            .apply_task_event(Some(user), id, TaskEvent::HoldEnded)
            .await
        {
            Ok(_) | Err(EngineError::WrongState(_) | EngineError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Keeps what an agent said of its quota windows.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn record_quota(&self, user: UserId, windows: &[QuotaWindow]) -> Result<()> {
        if windows.is_empty() {
            return Ok(());
        }
        let mut tx = self.store().begin().await?;
        tx.record_quota(user, windows).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The usage report over the last `days` days (today included).
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for a period outside 1 to [`MAX_USAGE_DAYS`]; storage
    /// failures.
    pub async fn usage(&self, user: UserId, days: u32) -> Result<Usage> {
        if !(1..=MAX_USAGE_DAYS).contains(&days) {
            return Err(EngineError::Invalid(format!(
                "days must be between 1 and {MAX_USAGE_DAYS}"
            )));
        }
        let at = now();
        let last = usage::day_number(at);
        let first = last - i64::from(days) + 1;
        let week = usage::week_start(at);
        let since = usage::day_at(first).min(week);
        let store = self.store();
        let rows = store.spending_by_day(user, since).await?;
        let mut by_day: BTreeMap<i64, Vec<SourceTotals>> = BTreeMap::new();
        let (mut today, mut this_week) = (Totals::default(), Totals::default());
        let mut sources: BTreeMap<String, Totals> = BTreeMap::new();
        for row in rows {
            if row.day == last {
                today.add(&row.totals);
            }
            if usage::day_at(row.day) >= week {
                this_week.add(&row.totals);
            }
            if row.day >= first {
                sources
                    .entry(row.source.clone())
                    .or_default()
                    .add(&row.totals);
                by_day.entry(row.day).or_default().push(SourceTotals {
                    source: row.source,
                    totals: row.totals,
                });
            }
        }
        let days = (first..=last)
            .map(|day| {
                let mut sources = by_day.remove(&day).unwrap_or_default();
                sort_sources(&mut sources);
                let mut totals = Totals::default();
                sources.iter().for_each(|s| totals.add(&s.totals));
                UsageDay {
                    date: usage::date_of(usage::day_at(day)),
                    totals,
                    sources,
                }
            })
            .collect();
        let mut sources: Vec<SourceTotals> = sources
            .into_iter()
            .map(|(source, totals)| SourceTotals { source, totals })
            .collect();
        sort_sources(&mut sources);
        let tasks = store
            .costliest_tasks(user, usage::day_at(first), TOP_TASKS)
            .await?
            .into_iter()
            .map(|t| TaskUsage {
                task_id: t.task_id,
                title: first_line(&t.description, 80),
                agent: t.agent,
                state: t.state,
                totals: t.totals,
            })
            .collect();
        let (budgets, pause) = store.spending_settings(user).await?;
        let (day_resets_at, week_resets_at) = usage::next_resets(at);
        Ok(Usage {
            from: usage::date_of(usage::day_at(first)),
            to: usage::date_of(at),
            days,
            sources,
            tasks,
            today,
            week: this_week,
            day_resets_at,
            week_resets_at,
            budgets,
            pause,
            windows: store.quota_windows(user).await?,
        })
    }
}

/// Whether any cap could hold a run.
fn has_caps(budgets: &Budgets, task_cap: Option<f64>) -> bool {
    *budgets != Budgets::default() || task_cap.is_some()
}

/// Largest first; equal ones by name, so the order is stable.
fn sort_sources(sources: &mut [SourceTotals]) {
    sources.sort_by(|a, b| {
        b.totals
            .cost_usd
            .total_cmp(&a.totals.cost_usd)
            .then_with(|| b.totals.input_tokens.cmp(&a.totals.input_tokens))
            .then_with(|| a.source.cmp(&b.source))
    });
}

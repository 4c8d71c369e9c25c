//! Tasks: creation, and every lifecycle change as one transaction that saves the new
//! state, writes inbox items and worker updates, enqueues effect jobs, and appends the
//! events that tell clients — all or nothing.

use crate::jobs::{ForgeSync, Step, TaskJob, enqueue};
use crate::{Engine, EngineError, Result, now};
use mainloop_domain::chat::{ContentBlock, Role};
use mainloop_domain::event::EventName;
use mainloop_domain::inbox::{InboxKind, first_line};
use mainloop_domain::question::{Answers, validate_answers};
use mainloop_domain::records::{ChatMessage, InboxItem, MessageKind, Task, Workplace};
use mainloop_domain::task::{Announcement, Effect, HoldKind, TaskEvent, TaskState, transition};
use mainloop_domain::{InboxItemId, TaskId, Timestamp, UserId};
use mainloop_store::{NewMessage, NewTask, TaskForge, Tx};
use serde_json::json;
use std::collections::BTreeSet;

const MAX_DESCRIPTION: usize = 20_000;
const MAX_REPO: usize = 2_048;
const MAX_FEEDBACK: usize = 20_000;
/// Attempts at a transition that lost an optimistic-concurrency race.
const SAVE_ATTEMPTS: usize = 5;

/// A task to spawn.
#[derive(Clone, Debug)]
pub struct CreateTask {
    pub description: String,
    pub repo: String,
    pub skip_plan: bool,
    /// The agent's model for this task; `None` for the configured default.
    pub model: Option<String>,
    /// The configured agent to run; `None`: the project's default, else the configured
    /// default.
    pub agent: Option<String>,
    /// The task's own cost cap in US dollars; `None`: the user's `task_usd`, if any.
    pub budget_usd: Option<f64>,
}

impl CreateTask {
    fn validate(&self) -> Result<()> {
        let description = self.description.trim();
        if description.is_empty() {
            return Err(EngineError::Invalid("description must not be empty".into()));
        }
        // Characters, as the API document states them (a byte limit would refuse
        // multibyte text the document allows).
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(EngineError::Invalid(format!(
                "description is longer than {MAX_DESCRIPTION} characters"
            )));
        }
        let repo = self.repo.trim();
        if repo.is_empty() {
            return Err(EngineError::Invalid("repo must not be empty".into()));
        }
        if repo.chars().count() > MAX_REPO || repo.chars().any(char::is_control) {
            return Err(EngineError::Invalid(
                "repo must be a path, URL or owner/name without control characters".into(),
            ));
        }
        let valid_model = |m: &str| {
            !m.is_empty()
                && m.len() <= 100
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._:/@".contains(c))
        };
        if self.model.as_deref().is_some_and(|m| !valid_model(m)) {
            return Err(EngineError::Invalid(
                "model must be a model name such as claude-opus-4-1".into(),
            ));
        }
        if let Some(usd) = self.budget_usd {
            mainloop_domain::usage::check_amount("budget_usd", usd)
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
        }
        Ok(())
    }
}

fn announcement_text(task: &Task, a: &Announcement) -> String {
    let what = first_line(&task.description, 80);
    match a {
        Announcement::Started => format!("Started: {what}"),
        Announcement::QuestionsAsked { count } => {
            let s = if *count == 1 { "" } else { "s" };
            format!("{what} — {count} question{s} need your answer.")
        }
        Announcement::PlanReady => format!("{what} — a plan is ready for review."),
        Announcement::ReadyForReview => format!("{what} — ready for review."),
        Announcement::ChecksFailed { round } => {
            format!("{what} — checks failed; the agent is fixing them (round {round}).")
        }
        Announcement::Merged => format!("{what} — merged."),
        Announcement::Failed { reason } => format!("{what} — failed: {reason}"),
        Announcement::Cancelled => format!("{what} — cancelled."),
        Announcement::Retrying => format!("{what} — retrying."),
        Announcement::OnHold { until } => match until {
            Some(at) => format!(
                "{what} — on hold: the agent's usage limit is reached; it goes on by itself \
                 at {}.",
                at.to_rfc3339()
            ),
            None => format!(
                "{what} — on hold: the agent's usage limit is reached; it tries again in {} \
                 minutes.",
                crate::holds::UNKNOWN_RESET_WAIT_MS / 60_000
            ),
        },
        Announcement::Resumed => format!("{what} — the usage limit reset; the agent goes on."),
        Announcement::BudgetReached { reason } => format!("{what} — on hold: {reason}"),
        Announcement::Paused => format!("{what} — paused."),
        Announcement::Continued { after } => match after {
            HoldKind::Budget => format!("{what} — the budget allows it; the agent goes on."),
            _ => format!("{what} — resumed; the agent goes on."),
        },
        Announcement::Answered => format!("{what} — answers received; the agent continues."),
        Announcement::PlanApproved => format!("{what} — plan approved; implementing."),
        Announcement::RevisingPlan => format!("{what} — revising the plan."),
        Announcement::Checking => format!("{what} — work done; running checks."),
        Announcement::Merging => format!("{what} — approved; merging."),
        Announcement::ChangesRequested => {
            format!("{what} — changes requested; the agent is on it.")
        }
        Announcement::MergeConflict => {
            format!("{what} — merging conflicted; the agent is resolving it.")
        }
    }
}

fn inbox_body(task: &Task, kind: InboxKind) -> String {
    match kind {
        InboxKind::Question => task
            .questions
            .iter()
            .map(|q| {
                let opts: Vec<String> = q
                    .options
                    .iter()
                    .map(|o| format!("- {}: {}", o.label, o.description))
                    .collect();
                format!("{}\n{}", q.question, opts.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
        InboxKind::PlanReview => task.plan.clone().unwrap_or_default(),
        InboxKind::Review => format!(
            "Branch {} → {}\n\n{}",
            task.branch.as_deref().unwrap_or("(none)"),
            task.base_branch.as_deref().unwrap_or("(base)"),
            task.diffstat.as_deref().unwrap_or("")
        )
        .trim_end()
        .to_owned(),
        InboxKind::Failed => task.error.clone().unwrap_or_default(),
        InboxKind::Budget => task
            .core
            .hold
            .as_ref()
            .map(|h| h.reason.clone())
            .unwrap_or_default(),
    }
}

/// Writes a worker update into the user's main thread, with its event.
pub(crate) async fn post_event_message(
    tx: &mut Tx,
    user: UserId,
    task: Option<TaskId>,
    text: String,
    at: Timestamp,
) -> Result<ChatMessage> {
    let msg = tx
        .insert_message(
            user,
            &NewMessage {
                role: Role::Event,
                kind: MessageKind::Text,
                content: vec![ContentBlock::text(text)],
                turn_id: None,
                task_id: task,
            },
            at,
        )
        .await?;
    tx.append_event(
        user,
        EventName::ChatMessage,
        &serde_json::to_value(&msg).map_err(internal)?,
        at,
    )
    .await?;
    Ok(msg)
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

async fn task_event(tx: &mut Tx, user: UserId, task: &Task, at: Timestamp) -> Result<()> {
    tx.append_event(
        user,
        EventName::TaskUpdated,
        &serde_json::to_value(task).map_err(internal)?,
        at,
    )
    .await?;
    Ok(())
}

async fn inbox_event(tx: &mut Tx, user: UserId, item: &InboxItem, at: Timestamp) -> Result<()> {
    tx.append_event(
        user,
        EventName::InboxUpdated,
        &serde_json::to_value(item).map_err(internal)?,
        at,
    )
    .await?;
    Ok(())
}

/// Creates a task inside `tx`: project, task row, worker update and events. Its runs
/// require `runner_labels` and its project's. With an `origin_key` already used,
/// returns the existing task and writes nothing.
pub(crate) async fn create_task_in(
    tx: &mut Tx,
    engine: &Engine,
    user: UserId,
    req: &CreateTask,
    runner_labels: &BTreeSet<String>,
    origin_key: Option<String>,
    at: Timestamp,
) -> Result<Task> {
    req.validate()?;
    crate::task_labels::check_task(runner_labels)?;
    // A repository on the configured forge is named one way (`owner/name`) whatever the
    // spelling, so its tasks share one project and one mirror.
    let forge_repo = engine
        .config()
        .forge_host
        .as_deref()
        .and_then(|host| mainloop_forge::RepoRef::parse(&req.repo, host).ok());
    let normalized = forge_repo.as_ref().map(ToString::to_string);
    let repo = normalized.as_deref().unwrap_or_else(|| req.repo.trim());
    if forge_repo.is_none() {
        engine
            .check_repo(repo)
            .map_err(|reason| EngineError::Invalid(format!("repo: {reason}")))?;
    }
    let project = tx.upsert_project(user, repo, at).await?;
    let agent = engine
        .config()
        .agents
        .choose(
            req.agent.as_deref(),
            project.settings.get("agent").and_then(|a| a.as_str()),
        )
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    let runner_labels = crate::task_labels::required(runner_labels, &project)?;
    let (task, created) = tx
        .insert_task_requiring(
            user,
            project.id,
            &NewTask {
                description: req.description.trim().to_owned(),
                repo: repo.to_owned(),
                workplace: if forge_repo.is_some() {
                    Workplace::Forge
                } else {
                    Workplace::Local
                },
                skip_plan: req.skip_plan,
                max_check_rounds: if forge_repo.is_some() {
                    engine.config().forge_max_ci_rounds
                } else {
                    engine.config().max_check_rounds
                },
                model: req.model.clone(),
                agent,
                origin_key,
                budget_usd: req.budget_usd,
            },
            &runner_labels,
            at,
        )
        .await?;
    if created {
        if let Some(r) = &forge_repo {
            tx.put_task_forge(&TaskForge {
                task_id: task.id,
                repo: r.to_string(),
                issue_number: None,
                pr_number: None,
                data: json!({}),
                updated_at: at,
            })
            .await?;
            enqueue_forge_sync(tx, task.id, task.version, at).await?;
        }
        let plan = if req.skip_plan {
            " (skipping the plan)"
        } else {
            ""
        };
        let text = format!(
            "Task created{plan}: {} — in {}",
            first_line(&task.description, 80),
            task.repo
        );
        post_event_message(tx, user, Some(task.id), text, at).await?;
        task_event(tx, user, &task, at).await?;
    }
    Ok(task)
}

/// Applies a lifecycle event inside `tx`; see [`Engine::apply_task_event`].
pub(crate) async fn apply_in(
    tx: &mut Tx,
    owner: UserId,
    id: TaskId,
    event: TaskEvent,
    at: Timestamp,
) -> Result<Task> {
    let task = tx
        .task(Some(owner), id)
        .await?
        .ok_or(EngineError::NotFound("task"))?;
    // The state decides first (409), then the content (422).
    let step = transition(&task.core, event.clone())?;
    match &event {
        TaskEvent::Answered(answers) => validate_answers(&task.questions, answers)?,
        TaskEvent::PlanRevisionRequested(f) | TaskEvent::ChangesRequested(f) => check_feedback(f)?,
        // A retry's feedback is optional: blank is none.
        TaskEvent::RetryRequested(Some(f)) if !f.trim().is_empty() => check_feedback(f)?,
        _ => {}
    }
    let mut next = task.clone();
    next.core = step.core;
    next.state = next.core.state;
    match &event {
        TaskEvent::QuestionsAsked(qs) => {
            next.questions.clone_from(qs);
            next.answers = None;
        }
        TaskEvent::Answered(a) => next.answers = Some(a.clone()),
        TaskEvent::PlanProposed(p) => next.plan = Some(p.clone()),
        TaskEvent::RetryRequested(_) => next.error = None,
        _ => {}
    }
    for effect in &step.effects {
        if let Effect::Announce(Announcement::Failed { reason }) = effect {
            next.error = Some(reason.clone());
        }
    }
    let saved = tx.save_task(&next, at).await?;
    // Every plan is kept, with the feedback that asked for the next.
    match &event {
        TaskEvent::PlanProposed(p) => {
            tx.record_plan_revision(saved.id, p, at).await?;
        }
        TaskEvent::PlanRevisionRequested(f) => tx.record_plan_feedback(saved.id, f).await?,
        // Review feedback is kept nowhere else: the index is its record.
        TaskEvent::ChangesRequested(f) => tx.index_review(owner, &saved, f, at).await?,
        _ => {}
    }
    for (i, effect) in step.effects.iter().enumerate() {
        match effect {
            Effect::ResolveInbox => {
                for item in tx.resolve_task_inbox(saved.id, at).await? {
                    inbox_event(tx, owner, &item, at).await?;
                }
            }
            Effect::OpenInbox { kind } => {
                let item = tx
                    .open_inbox_item(
                        owner,
                        Some(saved.id),
                        *kind,
                        &kind.title(&saved.description),
                        &inbox_body(&saved, *kind),
                        at,
                    )
                    .await?;
                inbox_event(tx, owner, &item, at).await?;
                // Every kind of item needs the human (or tells of a failure): reach
                // them where they are, committed with the item itself.
                crate::notifications::enqueue_notification(tx, owner, &item, at).await?;
            }
            Effect::Announce(a) => {
                post_event_message(tx, owner, Some(saved.id), announcement_text(&saved, a), at)
                    .await?;
            }
            other => {
                let step = Step {
                    task_id: saved.id,
                    version: saved.version,
                    index: i,
                };
                if let Some(job) = TaskJob::for_effect(step, other) {
                    enqueue_task_job(tx, &job, at).await?;
                }
            }
        }
    }
    if saved.workplace == Workplace::Forge {
        enqueue_forge_sync(tx, saved.id, saved.version, at).await?;
    }
    task_event(tx, owner, &saved, at).await?;
    Ok(saved)
}

/// Enqueues the job a transition's effect became, committed with the transition.
async fn enqueue_task_job(tx: &mut Tx, job: &TaskJob, at: Timestamp) -> Result<()> {
    match job {
        TaskJob::RunAgent(j) => enqueue(tx, j, at, at).await,
        TaskJob::StopAgent(j) => enqueue(tx, j, at, at).await,
        TaskJob::CommitWork(j) => enqueue(tx, j, at, at).await,
        TaskJob::RunChecks(j) => enqueue(tx, j, at, at).await,
        TaskJob::Merge(j) => enqueue(tx, j, at, at).await,
        // Run at the reset; enqueued now.
        TaskJob::WakeTask(j) => enqueue(tx, j, crate::holds::wake_time(j.at, at), at).await,
    }
}

/// Enqueues the mirror of a forge task's new state, committed with the transition.
async fn enqueue_forge_sync(tx: &mut Tx, task: TaskId, version: i64, at: Timestamp) -> Result<()> {
    enqueue(
        tx,
        &ForgeSync {
            task_id: task,
            version,
        },
        at,
        at,
    )
    .await
}

impl Engine {
    /// Saves a task's forge record (the worker's mirror bookkeeping).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn put_task_forge(&self, record: &TaskForge) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.put_task_forge(record).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Spawns a task (from the API; the chat's `spawn_task` tool uses the same path).
    ///
    /// # Errors
    /// Invalid input; storage failures.
    pub async fn create_task(&self, user: UserId, req: &CreateTask) -> Result<Task> {
        let at = now();
        let mut tx = self.store().begin().await?;
        let task = create_task_in(&mut tx, self, user, req, &BTreeSet::new(), None, at).await?;
        tx.commit().await?;
        self.wake_dispatcher();
        Ok(task)
    }

    /// Applies a lifecycle event to one of `user`'s tasks (or, with `None`, to any task —
    /// for workers). Retries a few times when a concurrent change wins the race.
    ///
    /// # Errors
    /// Not found; the state does not allow the event; invalid answers; storage failures.
    pub async fn apply_task_event(
        &self,
        user: Option<UserId>,
        id: TaskId,
        event: TaskEvent,
    ) -> Result<Task> {
        self.apply_task_event_saving(user, id, event, None).await
    }

    /// Applies a lifecycle event that a forge reply caused, saving the task's forge
    /// record (the cursor past that reply) in the same transaction: the reply is then
    /// acted on exactly once, whenever the process dies.
    ///
    /// # Errors
    /// As [`Engine::apply_task_event`].
    pub async fn apply_task_event_with_forge(
        &self,
        id: TaskId,
        event: TaskEvent,
        record: &TaskForge,
    ) -> Result<Task> {
        self.apply_task_event_saving(None, id, event, Some(record))
            .await
    }

    async fn apply_task_event_saving(
        &self,
        user: Option<UserId>,
        id: TaskId,
        event: TaskEvent,
        record: Option<&TaskForge>,
    ) -> Result<Task> {
        let user = match user {
            Some(u) => u,
            None => {
                self.store()
                    .task_any_user(id)
                    .await?
                    .ok_or(EngineError::NotFound("task"))?
                    .0
            }
        };
        let mut last = None;
        for _ in 0..SAVE_ATTEMPTS {
            let at = now();
            let mut tx = self.store().begin().await?;
            if let Some(record) = record {
                tx.put_task_forge(record).await?;
            }
            match apply_in(&mut tx, user, id, event.clone(), at).await {
                Ok(task) => {
                    tx.commit().await?;
                    self.wake_dispatcher();
                    return Ok(task);
                }
                Err(EngineError::Conflict(m)) => last = Some(m),
                Err(e) => return Err(e),
            }
        }
        Err(EngineError::Conflict(last.unwrap_or_default()))
    }

    /// Answers a task's pending questions.
    ///
    /// # Errors
    /// As [`Engine::apply_task_event`].
    pub async fn answer_questions(
        &self,
        user: UserId,
        id: TaskId,
        answers: Answers,
    ) -> Result<Task> {
        self.apply_task_event(Some(user), id, TaskEvent::Answered(answers))
            .await
    }

    /// Approves a plan, asks for a revision, or cancels.
    ///
    /// # Errors
    /// Feedback missing or too long for a revision; otherwise as [`Engine::apply_task_event`].
    pub async fn plan_action(&self, user: UserId, id: TaskId, action: PlanAction) -> Result<Task> {
        let event = match action {
            PlanAction::Approve => TaskEvent::PlanApproved,
            PlanAction::Revise(feedback) => {
                TaskEvent::PlanRevisionRequested(feedback.unwrap_or_default().trim().to_owned())
            }
            PlanAction::Cancel => TaskEvent::CancelRequested,
        };
        self.apply_task_event(Some(user), id, event).await
    }

    /// Approves the work for merging, or asks for changes.
    ///
    /// # Errors
    /// As [`Engine::plan_action`].
    pub async fn review_action(
        &self,
        user: UserId,
        id: TaskId,
        action: ReviewAction,
    ) -> Result<Task> {
        let event = match action {
            ReviewAction::Approve => TaskEvent::ReviewApproved,
            ReviewAction::Changes(feedback) => {
                TaskEvent::ChangesRequested(feedback.unwrap_or_default().trim().to_owned())
            }
        };
        self.apply_task_event(Some(user), id, event).await
    }

    /// One of `user`'s tasks.
    ///
    /// # Errors
    /// Not found; storage failures.
    pub async fn task(&self, user: UserId, id: TaskId) -> Result<Task> {
        self.store()
            .task(user, id)
            .await?
            .map(|t| self.with_forge_addresses(t))
            .ok_or(EngineError::NotFound("task"))
    }

    /// The task with the forge addresses its mirror did not record derived from the
    /// forge's web host.
    fn with_forge_addresses(&self, mut task: Task) -> Task {
        if let Some(host) = self.config().forge_host.as_deref() {
            task.forge = task.forge.take().map(|links| links.with_web_host(host));
        }
        task
    }

    /// `user`'s tasks, newest first, optionally only in `states`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn tasks(&self, user: UserId, states: &[TaskState], limit: i64) -> Result<Vec<Task>> {
        Ok(self
            .store()
            .tasks(user, states, limit.clamp(1, 1000))
            .await?
            .into_iter()
            .map(|t| self.with_forge_addresses(t))
            .collect())
    }

    /// `user`'s inbox: open items most urgent first, then recently resolved ones.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn inbox(&self, user: UserId, limit: i64, resolved: i64) -> Result<Vec<InboxItem>> {
        Ok(self
            .store()
            .inbox(user, limit.clamp(1, 1000), resolved.clamp(0, 1000))
            .await?)
    }

    /// Marks an inbox item read or unread.
    ///
    /// # Errors
    /// Not found; storage failures.
    pub async fn set_inbox_read(
        &self,
        user: UserId,
        id: InboxItemId,
        read: bool,
    ) -> Result<InboxItem> {
        let at = now();
        let mut tx = self.store().begin().await?;
        let item = tx
            .set_inbox_read(user, id, read)
            .await?
            .ok_or(EngineError::NotFound("inbox item"))?;
        inbox_event(&mut tx, user, &item, at).await?;
        tx.commit().await?;
        Ok(item)
    }
}

/// What the human decided about a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanAction {
    Approve,
    Revise(Option<String>),
    Cancel,
}

/// What the human decided about finished work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewAction {
    Approve,
    Changes(Option<String>),
}

fn check_feedback(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(EngineError::Invalid("feedback is required".into()));
    }
    if text.chars().count() > MAX_FEEDBACK {
        return Err(EngineError::Invalid(format!(
            "feedback is longer than {MAX_FEEDBACK} characters"
        )));
    }
    Ok(())
}

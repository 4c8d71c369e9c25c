//! Tasks. Saves are optimistic: a save names the version it read, and a concurrent
//! change makes it fail with a conflict instead of silently overwriting.

use crate::{Result, Store, StoreError, Tx, parse};
use mainloop_domain::agents::AgentName;
use mainloop_domain::records::{Task, TaskForgeLinks, Workplace};
use mainloop_domain::task::{TaskCore, TaskState};
use mainloop_domain::{ProjectId, TaskId, Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeSet;

/// A task to create.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub description: String,
    pub repo: String,
    pub workplace: Workplace,
    pub skip_plan: bool,
    pub max_check_rounds: u32,
    /// The model the task's agent runs; `None` for the configured default.
    pub model: Option<String>,
    /// The coding agent the task runs.
    pub agent: AgentName,
    /// Idempotency key of whatever created the task (e.g. the model's tool_use id), so
    /// a replayed request creates it once.
    pub origin_key: Option<String>,
    /// The task's own cost cap in US dollars.
    pub budget_usd: Option<f64>,
}

const COLS: &str = "id, user_id, project_id, state, core, description, repo, branch, questions, \
                    answers, plan, session_id, cost_usd, input_tokens, output_tokens, error, \
                    version, created_at, updated_at, worktree, base_branch, agent_input_key, model, diffstat, workplace, agent, budget_usd, runner_labels, \
                    (SELECT repo FROM task_forge f WHERE f.task_id = tasks.id) AS forge_repo, \
                    (SELECT issue_number FROM task_forge f WHERE f.task_id = tasks.id) AS forge_issue, \
                    (SELECT pr_number FROM task_forge f WHERE f.task_id = tasks.id) AS forge_pr, \
                    (SELECT data FROM task_forge f WHERE f.task_id = tasks.id) AS forge_data";

/// The forge links of a task with a `task_forge` row. The addresses are the forge's own,
/// as the worker recorded them in its mirror (`issue_url`, `pr.url`), when it did.
fn forge_links_from_row(row: &AnyRow) -> Result<Option<TaskForgeLinks>> {
    let Some(repo) = row.try_get::<Option<String>, _>("forge_repo")? else {
        return Ok(None);
    };
    let data: Option<String> = row.try_get("forge_data")?;
    let data: serde_json::Value = data
        .and_then(|d| serde_json::from_str(&d).ok())
        .unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    Ok(Some(TaskForgeLinks {
        repo,
        issue_number: row.try_get("forge_issue")?,
        issue_url: text(&data["issue_url"]),
        pull_request_number: row.try_get("forge_pr")?,
        pull_request_url: text(&data["pr"]["url"]),
    }))
}

fn task_from_row(row: &AnyRow) -> Result<Task> {
    let core: String = row.try_get("core")?;
    let core: TaskCore = serde_json::from_str(&core)?;
    let questions: String = row.try_get("questions")?;
    let answers: Option<String> = row.try_get("answers")?;
    let runner_labels: String = row.try_get("runner_labels")?;
    Ok(Task {
        id: parse(&row.try_get::<String, _>("id")?, "task id")?,
        project_id: parse::<ProjectId>(&row.try_get::<String, _>("project_id")?, "project id")?,
        state: parse::<TaskState>(&row.try_get::<String, _>("state")?, "task state")?,
        description: row.try_get("description")?,
        repo: row.try_get("repo")?,
        workplace: parse::<Workplace>(&row.try_get::<String, _>("workplace")?, "workplace")?,
        branch: row.try_get("branch")?,
        skip_plan: core.skip_plan,
        questions: serde_json::from_str(&questions)?,
        answers: answers.map(|a| serde_json::from_str(&a)).transpose()?,
        plan: row.try_get("plan")?,
        session_id: row.try_get("session_id")?,
        worktree: row.try_get("worktree")?,
        base_branch: row.try_get("base_branch")?,
        agent_input_key: row.try_get("agent_input_key")?,
        model: row.try_get("model")?,
        agent: parse::<AgentName>(&row.try_get::<String, _>("agent")?, "agent")?,
        runner_labels: serde_json::from_str(&runner_labels)?,
        diffstat: row.try_get("diffstat")?,
        forge: forge_links_from_row(row)?,
        cost_usd: row.try_get("cost_usd")?,
        budget_usd: row.try_get("budget_usd")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        error: row.try_get("error")?,
        hold: core.hold.clone(),
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
        core,
        version: row.try_get("version")?,
    })
}

async fn fetch_task(
    conn: &mut sqlx::AnyConnection,
    user: Option<UserId>,
    id: TaskId,
) -> Result<Option<Task>> {
    let row = match user {
        Some(user) => {
            sqlx::query(&format!(
                "SELECT {COLS} FROM tasks WHERE id = $1 AND user_id = $2"
            ))
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(&format!("SELECT {COLS} FROM tasks WHERE id = $1"))
                .bind(id.to_string())
                .fetch_optional(&mut *conn)
                .await?
        }
    };
    row.as_ref().map(task_from_row).transpose()
}

impl Tx {
    /// Creates a queued task, or returns the existing one with the same origin key.
    /// The flag says whether it was created now.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_task(
        &mut self,
        user: UserId,
        project: ProjectId,
        new: &NewTask,
        now: Timestamp,
    ) -> Result<(Task, bool)> {
        self.insert_task_requiring(user, project, new, &BTreeSet::new(), now)
            .await
    }

    /// [`Tx::insert_task`] for a task whose runs require `runner_labels` (validated by
    /// the caller) of the site they run on.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_task_requiring(
        &mut self,
        user: UserId,
        project: ProjectId,
        new: &NewTask,
        runner_labels: &BTreeSet<String>,
        now: Timestamp,
    ) -> Result<(Task, bool)> {
        if let Some(key) = &new.origin_key {
            let row = sqlx::query(&format!("SELECT {COLS} FROM tasks WHERE origin_key = $1"))
                .bind(key)
                .fetch_optional(self.conn())
                .await?;
            if let Some(row) = row {
                return Ok((task_from_row(&row)?, false));
            }
        }
        let id = TaskId::new_v7(now);
        let core = TaskCore::new(new.skip_plan, new.max_check_rounds);
        sqlx::query(
            "INSERT INTO tasks (id, user_id, project_id, state, core, description, repo, \
                 origin_key, created_at, updated_at, model, workplace, agent, budget_usd, \
                 runner_labels) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13, $14)",
        )
        .bind(id.to_string())
        .bind(user.to_string())
        .bind(project.to_string())
        .bind(core.state.as_str())
        .bind(serde_json::to_string(&core)?)
        .bind(&new.description)
        .bind(&new.repo)
        .bind(&new.origin_key)
        .bind(now.as_millis())
        .bind(&new.model)
        .bind(new.workplace.as_str())
        .bind(new.agent.as_str())
        .bind(new.budget_usd)
        .bind(serde_json::to_string(runner_labels)?)
        .execute(self.conn())
        .await?;
        let task = fetch_task(self.conn(), None, id)
            .await?
            .ok_or(StoreError::NotFound("task"))?;
        self.index_task(user, &task).await?;
        self.record_transition(user, task.id, None, task.state, now)
            .await?;
        Ok((task, true))
    }

    /// Reads a task inside the transaction.
    ///
    /// # Errors
    /// On database failure.
    pub async fn task(&mut self, user: Option<UserId>, id: TaskId) -> Result<Option<Task>> {
        fetch_task(self.conn(), user, id).await
    }

    /// Writes the lifecycle fields of `task` (state, core, questions, answers, plan,
    /// error), provided nobody saved it since it was read (its `version`). Runtime
    /// fields (workspace, session, usage) have their own setters, so a transition never
    /// overwrites them with a stale copy. Returns the task as stored.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the task changed meanwhile.
    pub async fn save_task(&mut self, task: &Task, now: Timestamp) -> Result<Task> {
        let answers = task
            .answers
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        // What was asked and answered before, to index questions and answers that change.
        let before =
            sqlx::query("SELECT user_id, state, questions, answers FROM tasks WHERE id = $1")
                .bind(task.id.to_string())
                .fetch_optional(self.conn())
                .await?;
        let n = sqlx::query(
            "UPDATE tasks SET state = $1, core = $2, questions = $3, answers = $4, \
                 plan = $5, error = $6, updated_at = $7, version = version + 1 \
             WHERE id = $8 AND version = $9",
        )
        .bind(task.core.state.as_str())
        .bind(serde_json::to_string(&task.core)?)
        .bind(serde_json::to_string(&task.questions)?)
        .bind(answers)
        .bind(&task.plan)
        .bind(&task.error)
        .bind(now.as_millis())
        .bind(task.id.to_string())
        .bind(task.version)
        .execute(self.conn())
        .await?
        .rows_affected();
        if n != 1 {
            return Err(StoreError::Conflict(format!(
                "task {} changed concurrently",
                task.id
            )));
        }
        let saved = fetch_task(self.conn(), None, task.id)
            .await?
            .ok_or(StoreError::NotFound("task"))?;
        if let Some(before) = before {
            let user = parse(&before.try_get::<String, _>("user_id")?, "user id")?;
            let questions: String = before.try_get("questions")?;
            let answers: Option<String> = before.try_get("answers")?;
            self.index_questions(user, &saved, &questions, answers.as_deref(), now)
                .await?;
            let from: TaskState = parse(&before.try_get::<String, _>("state")?, "task state")?;
            if from != saved.state {
                self.record_transition(user, saved.id, Some(from), saved.state, now)
                    .await?;
            }
        }
        Ok(saved)
    }
}

impl Tx {
    /// Records the task's git workspace.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_task_workspace(
        &mut self,
        id: TaskId,
        branch: &str,
        worktree: &str,
        base_branch: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE tasks SET branch = $1, worktree = $2, base_branch = $3 WHERE id = $4")
            .bind(branch)
            .bind(worktree)
            .bind(base_branch)
            .bind(id.to_string())
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Records the agent session and which job's input it has received.
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_task_session(
        &mut self,
        id: TaskId,
        session_id: &str,
        input_key: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE tasks SET session_id = $1, agent_input_key = $2 WHERE id = $3")
            .bind(session_id)
            .bind(input_key)
            .bind(id.to_string())
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Records the work's diffstat (shown when the task enters review).
    ///
    /// # Errors
    /// On database failure.
    pub async fn set_task_diffstat(&mut self, id: TaskId, diffstat: &str) -> Result<()> {
        sqlx::query("UPDATE tasks SET diffstat = $1 WHERE id = $2")
            .bind(diffstat)
            .bind(id.to_string())
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Adds an agent run's cost and token usage to the task's totals.
    ///
    /// # Errors
    /// On database failure.
    pub async fn add_task_usage(
        &mut self,
        id: TaskId,
        cost_usd: f64,
        input_tokens: i64,
        output_tokens: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET cost_usd = cost_usd + $1, input_tokens = input_tokens + $2, \
                 output_tokens = output_tokens + $3 WHERE id = $4",
        )
        .bind(cost_usd)
        .bind(input_tokens)
        .bind(output_tokens)
        .bind(id.to_string())
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// One of the user's tasks (`None` for another user's).
    ///
    /// # Errors
    /// On database failure.
    pub async fn task(&self, user: UserId, id: TaskId) -> Result<Option<Task>> {
        let mut conn = self.pool().acquire().await?;
        fetch_task(&mut conn, Some(user), id).await
    }

    /// A task by id regardless of owner (for workers and jobs).
    ///
    /// # Errors
    /// On database failure.
    pub async fn task_any_user(&self, id: TaskId) -> Result<Option<(UserId, Task)>> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM tasks WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => {
                let user = parse(&row.try_get::<String, _>("user_id")?, "user id")?;
                Ok(Some((user, task_from_row(&row)?)))
            }
            None => Ok(None),
        }
    }

    /// The user's tasks, newest first; optionally only those in `states`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn tasks(&self, user: UserId, states: &[TaskState], limit: i64) -> Result<Vec<Task>> {
        let filter = if states.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = (0..states.len()).map(|i| format!("${}", i + 3)).collect();
            format!("AND state IN ({})", list.join(", "))
        };
        let sql = format!(
            "SELECT {COLS} FROM tasks WHERE user_id = $1 {filter} \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let mut q = sqlx::query(&sql).bind(user.to_string()).bind(limit);
        for s in states {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Tasks of every user in `states`, oldest first (the worker runtime's view).
    ///
    /// # Errors
    /// On database failure.
    pub async fn tasks_in_states(
        &self,
        states: &[TaskState],
        limit: i64,
    ) -> Result<Vec<(UserId, Task)>> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (0..states.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT {COLS} FROM tasks WHERE state IN ({}) ORDER BY created_at, id LIMIT $1",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(limit);
        for s in states {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                let user = parse(&row.try_get::<String, _>("user_id")?, "user id")?;
                Ok((user, task_from_row(row)?))
            })
            .collect()
    }

    /// Unfinished (pending or running) jobs of `kind` in task lanes, counted by the
    /// task's agent: the agent slots each agent holds.
    ///
    /// # Errors
    /// On database failure.
    pub async fn unfinished_by_agent(&self, kind: &str) -> Result<Vec<(AgentName, i64)>> {
        let rows = sqlx::query(
            "SELECT t.agent AS agent, COUNT(*) AS n FROM jobs j \
             JOIN tasks t ON j.lane = 'task:' || t.id \
             WHERE j.kind = $1 AND j.state IN ('pending', 'running') GROUP BY t.agent",
        )
        .bind(kind)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let agent = parse(&row.try_get::<String, _>("agent")?, "agent")?;
                Ok((agent, row.try_get::<i64, _>("n")?))
            })
            .collect()
    }
}

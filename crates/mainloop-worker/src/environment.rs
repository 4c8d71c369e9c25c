//! A task's environment, prepared before the first agent run in its worktree: the spec
//! read at the base branch (the project's settings win), untracked files copied from
//! the main checkout, ports and a database taken, then the setup commands run in the
//! task's confinement with its variables; and released (database dropped, ports freed)
//! when the task is over. On a runner, the repository's variables and setup only; on a
//! runner launched for the run, its ports and database too (`environment_launched.rs`).

use std::ops::RangeInclusive;
use std::time::Duration;

use mainloop_domain::UserId;
use mainloop_domain::environment::{EnvSpec, TaskDatabase};
use mainloop_domain::records::Task;
use mainloop_engine::{EngineError, JobError, TaskDatabaseInfo};
use mainloop_git::{CONFIG_FILE, Worktree};
use tokio_util::sync::CancellationToken;

use crate::Runtime;
use crate::confine::with_vars;
use crate::delivery::Delivery;
use crate::on_runner::OnRunner;
use crate::on_runner_steps::Lost;
use crate::steps::Destination;
use crate::task::{fail, retry, status};

/// Where task ports come from unless configured.
pub const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 20000..=29999;

/// The admin URL of the server task databases are made on. Never shown: it carries a
/// password.
#[derive(Clone)]
pub struct TaskDatabaseUrl(String);

impl TaskDatabaseUrl {
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TaskDatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskDatabaseUrl([redacted])")
    }
}

/// Why preparation stopped.
pub(crate) enum Stop {
    /// The task fails with this.
    Fail(String),
    /// Storage was away; the job tries again.
    Retry(JobError),
    /// The run was cancelled.
    Cancelled,
}

impl From<Lost> for Stop {
    fn from(lost: Lost) -> Self {
        Self::Retry(lost.into())
    }
}

impl From<EngineError> for Stop {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Unavailable(_) | EngineError::Conflict(_) => Self::Retry(retry(e)),
            other => Self::Fail(format!("could not prepare the task's environment: {other}")),
        }
    }
}

impl Runtime {
    /// Prepares task `task`'s environment in `wt` unless its setup has passed already.
    /// Whether the run may go on: `false` when the task failed (with the reason) or the
    /// run was cancelled.
    pub(crate) async fn prepare_environment(
        &self,
        user: UserId,
        task: &Task,
        wt: &Worktree,
        cancel: &CancellationToken,
    ) -> Result<bool, JobError> {
        match self.prepare(user, task, wt, cancel).await {
            Ok(()) => Ok(true),
            Err(Stop::Cancelled) => Ok(false),
            Err(Stop::Retry(e)) => Err(e),
            Err(Stop::Fail(reason)) => fail(self, task.id, reason).await.map(|()| false),
        }
    }

    async fn prepare(
        &self,
        user: UserId,
        task: &Task,
        wt: &Worktree,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let engine = &self.inner.engine;
        if engine
            .task_env(task.id)
            .await?
            .is_some_and(|env| env.setup_done)
        {
            return Ok(());
        }
        let spec = self.spec(user, task, wt).await?;
        if spec.is_empty() {
            return Ok(());
        }
        if !spec.copy.is_empty() {
            self.copy(user, task, wt, &spec.copy).await?;
        }
        let database = match spec.database {
            None => None,
            Some(TaskDatabase::Postgres) => Some(self.configured_database(user, task).await?),
        };
        let env = engine
            .prepare_task_env(
                task.id,
                &spec,
                self.inner.config.port_range.clone(),
                database,
            )
            .await?;
        if !env.ports.is_empty() {
            let ports: Vec<String> = env.ports.iter().map(u16::to_string).collect();
            status(self, user, task.id, &format!("ports: {}", ports.join(", "))).await;
        }
        self.setup(user, task, wt, &spec, cancel).await?;
        engine.set_task_setup_done(task.id, true).await?;
        Ok(())
    }

    /// The task's database on the server configured for task databases.
    pub(crate) async fn configured_database(
        &self,
        user: UserId,
        task: &Task,
    ) -> Result<TaskDatabaseInfo, Stop> {
        let Some(server) = &self.inner.config.task_databases else {
            return Err(Stop::Fail(format!(
                "{CONFIG_FILE} asks for database = \"postgres\", but this server has no \
                 workers.task_database_url to make it on; set it (an admin URL of a \
                 PostgreSQL server), or remove `database`"
            )));
        };
        let admin = server.admin_url().await.map_err(|why| {
            Stop::Fail(format!(
                "{CONFIG_FILE} asks for database = \"postgres\", but {why}"
            ))
        })?;
        let info = self
            .inner
            .engine
            .create_task_database(task.id, admin.expose())
            .await?;
        let name = info.name.as_deref().unwrap_or_default();
        status(self, user, task.id, &format!("database {name} ready")).await;
        Ok(info)
    }

    /// The spec from `.mainloop.toml` at the base branch with the project's settings of
    /// the same names in place of its values.
    async fn spec(&self, user: UserId, task: &Task, wt: &Worktree) -> Result<EnvSpec, Stop> {
        let settings = match self.inner.engine.project(user, task.project_id).await {
            Ok(p) => p.settings,
            Err(EngineError::NotFound(_)) => serde_json::Value::Null,
            Err(e) => return Err(e.into()),
        };
        let file = self
            .inner
            .git
            .config_at_base(wt)
            .await
            .map_err(|e| Stop::Fail(format!("cannot read {CONFIG_FILE}: {e}")))?;
        EnvSpec::with_settings(&file, &settings).map_err(|m| {
            Stop::Fail(format!(
                "invalid {CONFIG_FILE} on {} (or the project's settings): {m}",
                wt.base
            ))
        })
    }

    /// Copies `patterns` from the repository's main checkout, when it has one.
    async fn copy(
        &self,
        user: UserId,
        task: &Task,
        wt: &Worktree,
        patterns: &[String],
    ) -> Result<(), Stop> {
        let main = match Destination::of(self, task) {
            Destination::Local(local) => {
                let source = local.source(task);
                self.inner
                    .git
                    .resolve_repo(&source)
                    .await
                    .ok()
                    .and_then(|repo| self.inner.git.main_checkout(&repo))
            }
            Destination::Hosted(_) => None,
        };
        let Some(main) = main else {
            status(
                self,
                user,
                task.id,
                "`copy`: the repository has no local checkout to copy from; skipped",
            )
            .await;
            return Ok(());
        };
        let (root, patterns) = (wt.path.clone(), patterns.to_vec());
        let report = tokio::task::spawn_blocking(move || {
            mainloop_git::copy_into_worktree(&main, &root, &patterns)
        })
        .await
        .map_err(|e| Stop::Fail(format!("the copy stopped: {e}")))?
        .map_err(|e| Stop::Fail(format!("refused to copy files into the worktree: {e}")))?;
        let mut lines = Vec::new();
        if !report.copied.is_empty() {
            lines.push(format!("copied {}", report.copied.join(", ")));
        }
        if !report.kept.is_empty() {
            lines.push(format!("kept the worktree's {}", report.kept.join(", ")));
        }
        if !report.unmatched.is_empty() {
            lines.push(format!("nothing matched {}", report.unmatched.join(", ")));
        }
        if !lines.is_empty() {
            status(self, user, task.id, &lines.join("; ")).await;
        }
        Ok(())
    }

    /// Runs each setup command in the task's confinement; the first that fails fails
    /// the task with its output.
    async fn setup(
        &self,
        user: UserId,
        task: &Task,
        wt: &Worktree,
        spec: &EnvSpec,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        if spec.setup.is_empty() {
            return Ok(());
        }
        let confined = self.confine(task.id, wt).await.map_err(Stop::Fail)?;
        let timeout = Duration::from_secs(spec.setup_timeout_secs);
        for command in &spec.setup {
            status(self, user, task.id, &format!("setup: {command}")).await;
            // Dropping the run on cancel kills its whole process group.
            let outcome = tokio::select! {
                () = cancel.cancelled() => return Err(Stop::Cancelled),
                outcome = mainloop_git::run_check(
                    &wt.path,
                    command,
                    &confined.env,
                    &confined.wrapper,
                    timeout,
                    self.inner.config.check_output_bytes,
                ) => outcome,
            };
            self.setup_outcome(user, task, command, &outcome, timeout)
                .await?;
        }
        Ok(())
    }

    /// Reports one setup command's outcome; `Err` fails the task with its output.
    async fn setup_outcome(
        &self,
        user: UserId,
        task: &Task,
        command: &str,
        outcome: &mainloop_git::CheckOutcome,
        timeout: Duration,
    ) -> Result<(), Stop> {
        let tail = outcome.output_tail.trim_end();
        if !tail.is_empty() {
            status(self, user, task.id, &format!("$ {command}\n{tail}")).await;
        }
        if outcome.passed {
            return Ok(());
        }
        let why = if outcome.timed_out {
            format!("timed out after {} s", timeout.as_secs())
        } else {
            outcome
                .exit_code
                .map_or_else(|| "killed".to_owned(), |c| format!("exit {c}"))
        };
        Err(Stop::Fail(format!(
            "setup failed ({why}): $ {command}\n{tail}"
        )))
    }

    /// On a runner: the repository's `env` for the task's processes there, with its
    /// setup run in the runner's copy unless it passed there already. Ports, the
    /// database, `copy` and previews are this machine's, not made for a run on a runner
    /// — except on one launched for the run, which gets the task's ports and database.
    /// `None` when the run may not go on (the task failed, or the run was cancelled).
    pub(crate) async fn prepare_environment_on(
        &self,
        user: UserId,
        task: &Task,
        wt: &Worktree,
        on: &OnRunner,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<(String, String)>>, JobError> {
        match self.prepare_on(user, task, wt, on, cancel).await {
            Ok(vars) => Ok(Some(vars)),
            Err(Stop::Cancelled) => Ok(None),
            Err(Stop::Retry(e)) => Err(e),
            Err(Stop::Fail(reason)) => fail(self, task.id, reason).await.map(|()| None),
        }
    }

    pub(crate) async fn prepare_on(
        &self,
        user: UserId,
        task: &Task,
        wt: &Worktree,
        on: &OnRunner,
        cancel: &CancellationToken,
    ) -> Result<Vec<(String, String)>, Stop> {
        let spec = self.spec(user, task, wt).await?;
        let vars: Vec<(String, String)> = if on.launched.is_some() {
            self.launched_env(user, task, &spec, cancel).await?
        } else {
            spec.env.clone().into_iter().collect()
        };
        if spec.setup.is_empty() || self.setup_done_on(user, task, on).await? {
            return Ok(vars);
        }
        let env = with_vars(self.inner.config.agent_env.clone(), vars.clone());
        let timeout = Duration::from_secs(spec.setup_timeout_secs);
        for command in &spec.setup {
            status(
                self,
                user,
                task.id,
                &format!("setup on its runner: {command}"),
            )
            .await;
            // Dropping the run on cancel kills it and everything it started there.
            let outcome = tokio::select! {
                () = cancel.cancelled() => return Err(Stop::Cancelled),
                outcome = self.run_on_runner(user, task, on, command, env.clone(), timeout) => outcome?,
            };
            self.setup_outcome(user, task, command, &outcome, timeout)
                .await?;
        }
        self.mark_setup_done_on(user, task, on).await?;
        Ok(vars)
    }

    /// Drops the task's database and frees its ports, once the task is over.
    pub(crate) async fn release_environment(&self, task: &Task) -> Result<(), String> {
        let engine = &self.inner.engine;
        if let Some(name) = engine
            .task_database(task.id)
            .await
            .map_err(|e| e.to_string())?
        {
            let Some(server) = &self.inner.config.task_databases else {
                return Err(format!(
                    "database {name} stays: workers.task_database_url is no longer set"
                ));
            };
            let admin = server
                .admin_url()
                .await
                .map_err(|why| format!("database {name} stays: {why}"))?;
            engine
                .drop_task_database(admin.expose(), &name)
                .await
                .map_err(|e| format!("could not drop database {name}: {e}"))?;
        }
        engine
            .release_task_env(task.id)
            .await
            .map_err(|e| e.to_string())
    }
}

//! The runner labels a task requires: its own (checked when it is created), its
//! project's `runner_labels` setting (checked when the settings are written, and again
//! when a task reads them), and their union, fixed on the task at creation.

use crate::tasks::{CreateTask, create_task_in};
use crate::{Engine, EngineError, Result, now};
use mainloop_domain::placement::{PROJECT_SETTING, check_labels, project_labels, requirement};
use mainloop_domain::records::{Project, Task};
use mainloop_domain::{ProjectId, UserId};
use serde_json::Value;
use std::collections::BTreeSet;

/// Checks the labels a task asks for itself.
pub(crate) fn check_task(labels: &BTreeSet<String>) -> Result<()> {
    check_labels(labels).map_err(|e| EngineError::Invalid(format!("runner_labels: {e}")))
}

/// What a new task of `project` requires: `own` and the project's setting.
pub(crate) fn required(own: &BTreeSet<String>, project: &Project) -> Result<BTreeSet<String>> {
    // Settings may have been written by hand; a bad value refuses the task rather than
    // letting it run anywhere.
    let theirs = project_labels(&project.settings).map_err(|e| {
        EngineError::Invalid(format!(
            "the project's {PROJECT_SETTING} setting: {e}; fix it in the project's settings"
        ))
    })?;
    Ok(requirement(own, &theirs))
}

impl Engine {
    /// Spawns a task whose runs require `runner_labels` (each a runner label, at most
    /// 8), and its project's `runner_labels`, of the site they run on.
    ///
    /// # Errors
    /// Invalid input, labels included; storage failures.
    pub async fn create_task_requiring(
        &self,
        user: UserId,
        req: &CreateTask,
        runner_labels: &BTreeSet<String>,
    ) -> Result<Task> {
        let at = now();
        let mut tx = self.store().begin().await?;
        let task = create_task_in(&mut tx, self, user, req, runner_labels, None, at).await?;
        tx.commit().await?;
        self.wake_dispatcher();
        Ok(task)
    }

    /// Replaces the settings of one of `user`'s projects: an object whose
    /// `runner_labels`, when present, is a list of runner labels. Tasks already made
    /// keep what they require.
    ///
    /// # Errors
    /// Not found; a settings value that breaks a rule; storage failures.
    pub async fn set_project_settings(
        &self,
        user: UserId,
        id: ProjectId,
        settings: &Value,
    ) -> Result<Project> {
        if !settings.is_object() {
            return Err(EngineError::Invalid(
                "settings must be a JSON object".into(),
            ));
        }
        project_labels(settings)
            .map_err(|e| EngineError::Invalid(format!("settings.{PROJECT_SETTING}: {e}")))?;
        let mut tx = self.store().begin().await?;
        let project = tx
            .set_project_settings(user, id, settings)
            .await?
            .ok_or(EngineError::NotFound("project"))?;
        tx.commit().await?;
        Ok(project)
    }
}

//! The reads the API, the worker runtime, notification delivery and the command line
//! make: through the engine, which alone holds the store.

use crate::{BackgroundJob, Engine, EngineError, Result};
use mainloop_domain::records::{Project, Task, User};
use mainloop_domain::task::TaskState;
use mainloop_domain::{EventId, ProjectId, PushSubscriptionId, TaskId, UserId};
use mainloop_store::{Backend, NotificationSettings, PushSubscription, TaskForge};

impl Engine {
    /// The owner account, once made.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn owner(&self) -> Result<Option<User>> {
        Ok(self.store().owner().await?)
    }

    /// Every user, oldest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn users(&self) -> Result<Vec<User>> {
        Ok(self.store().users().await?)
    }

    /// A user by name.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        Ok(self.store().user_by_name(name).await?)
    }

    /// Whether the database answers; an error is always [`EngineError::Unavailable`].
    ///
    /// # Errors
    /// The database does not answer.
    pub async fn ping(&self) -> Result<()> {
        self.store()
            .ping()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))
    }

    /// The database engine behind the store.
    #[must_use]
    pub fn database_backend(&self) -> Backend {
        self.store().backend()
    }

    /// Closes the database's connections (at shutdown, after everything stopped).
    pub async fn close(&self) {
        self.store().close().await;
    }

    /// The newest event's id: where a client that asks for no history starts.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn latest_event_id(&self) -> Result<EventId> {
        Ok(self.store().latest_event_id().await?)
    }

    /// `user`'s projects.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn projects(&self, user: UserId) -> Result<Vec<Project>> {
        Ok(self.store().projects(user).await?)
    }

    /// One of `user`'s projects.
    ///
    /// # Errors
    /// Not found; storage failures.
    pub async fn project(&self, user: UserId, id: ProjectId) -> Result<Project> {
        self.store()
            .project(user, id)
            .await?
            .ok_or(EngineError::NotFound("project"))
    }

    /// How many open inbox items need `user`, counted up to `cap`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn count_needs_you(&self, user: UserId, cap: i64) -> Result<i64> {
        Ok(self.store().count_needs_you(user, cap).await?)
    }

    /// `user`'s Web Push subscriptions.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn push_subscriptions(&self, user: UserId) -> Result<Vec<PushSubscription>> {
        Ok(self.store().push_subscriptions(user).await?)
    }

    /// Forgets a subscription its push service no longer knows (404/410).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn forget_push_subscription(
        &self,
        user: UserId,
        id: PushSubscriptionId,
    ) -> Result<bool> {
        Ok(self.store().delete_push_subscription(user, id).await?)
    }

    /// `user`'s notification channels besides Web Push.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn notification_settings(&self, user: UserId) -> Result<NotificationSettings> {
        Ok(self.store().notification_settings(user).await?)
    }

    /// A task with its owner, whoever that is (for the worker runtime's jobs); `None`
    /// when it no longer exists.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn task_any_user(&self, id: TaskId) -> Result<Option<(UserId, Task)>> {
        Ok(self.store().task_any_user(id).await?)
    }

    /// Tasks in `states`, oldest first, with their owners (the slot scheduler's queue).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn tasks_in_states(
        &self,
        states: &[TaskState],
        limit: i64,
    ) -> Result<Vec<(UserId, Task)>> {
        Ok(self.store().tasks_in_states(states, limit).await?)
    }

    /// A forge task's mirror record.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn task_forge(&self, id: TaskId) -> Result<Option<TaskForge>> {
        Ok(self.store().task_forge(id).await?)
    }

    /// How many jobs of kind `J` are queued or running (agent slots in use).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn count_unfinished<J: BackgroundJob>(&self) -> Result<i64> {
        Ok(self.store().count_unfinished(J::KIND).await?)
    }

    /// Queued or running jobs of kind `J` in task lanes, by the task's agent (each
    /// agent's slots in use).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn unfinished_by_agent<J: BackgroundJob>(
        &self,
    ) -> Result<Vec<(mainloop_domain::agents::AgentName, i64)>> {
        Ok(self.store().unfinished_by_agent(J::KIND).await?)
    }
}

//! The stored entities as the API shows them: tasks, inbox items, messages, projects,
//! users, events and the event payloads that are not records themselves. Plain data;
//! the store builds them and the API serialises them.

use crate::agents::AgentName;
use crate::chat::{ContentBlock, Role};
use crate::event::EventName;
use crate::inbox::{InboxKind, Priority};
use crate::question::{Answers, Question};
use crate::task::{TaskCore, TaskState};
use crate::{EventId, InboxItemId, MessageId, ProjectId, TaskId, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A person using mainloop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub is_owner: bool,
    pub created_at: Timestamp,
}

/// A repository a user works in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: ProjectId,
    /// A local path, a git URL, or `owner/name`.
    pub repo: String,
    pub name: String,
    /// Per-project settings (e.g. the check command), free-form JSON.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    pub created_at: Timestamp,
}

/// Where a task's work happens, decided when the task is created and never looked up
/// again: in a local repository (a worktree, the project's check command, a git merge)
/// or in a repository on the configured forge (the branch pushed there, a pull request,
/// the forge's CI, the pull request merged; questions and the plan mirrored to an issue).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Workplace {
    #[default]
    Local,
    Forge,
}

impl Workplace {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Forge => "forge",
        }
    }
}

impl std::str::FromStr for Workplace {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "forge" => Ok(Self::Forge),
            other => Err(format!("unknown workplace '{other}'")),
        }
    }
}

/// A worker task.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Task {
    pub id: TaskId,
    pub project_id: ProjectId,
    pub state: TaskState,
    pub description: String,
    pub repo: String,
    pub workplace: Workplace,
    pub branch: Option<String>,
    pub skip_plan: bool,
    /// The coding agent the task runs (a configured agent's name).
    #[serde(default)]
    pub agent: AgentName,
    /// The runner labels the task requires: its own and its project's `runner_labels`
    /// when it was created. Its runs go only where every one of them is.
    #[serde(default)]
    pub runner_labels: std::collections::BTreeSet<String>,
    /// Pending or last-asked questions.
    pub questions: Vec<Question>,
    /// The human's answers to `questions`, once given.
    #[schema(value_type = Option<Object>)]
    pub answers: Option<Answers>,
    /// The latest plan (markdown).
    pub plan: Option<String>,
    /// The agent session this task resumes.
    pub session_id: Option<String>,
    /// The task's git worktree, once created.
    pub worktree: Option<String>,
    /// The branch the work is based on and merged into.
    pub base_branch: Option<String>,
    /// The model the agent runs (`None`: the configured default).
    pub model: Option<String>,
    /// Files changed, lines added and removed, as of the last passing checks.
    pub diffstat: Option<String>,
    /// The plan issue and pull request, for a task mirrored on a forge.
    pub forge: Option<TaskForgeLinks>,
    pub cost_usd: f64,
    /// The task's own cost cap, once the human raised it (else the user's `task_usd`).
    #[serde(default)]
    pub budget_usd: Option<f64>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Why the task failed, when it did.
    pub error: Option<String>,
    /// Why and until when the task is on hold (state `on_hold`).
    #[serde(default)]
    pub hold: Option<crate::task::Hold>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Lifecycle bookkeeping the state machine reads and writes.
    #[serde(skip)]
    pub core: TaskCore,
    /// Every save increments it: of two copies of a task, the higher version is newer
    /// (clients keep the newer of a write's reply and a `task.updated` event).
    #[serde(default)]
    pub version: i64,
    /// The job whose input the agent session already received.
    #[serde(skip)]
    pub agent_input_key: Option<String>,
}

/// Where a forge task is on the forge: its repository, plan issue and pull request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskForgeLinks {
    /// `owner/name`.
    pub repo: String,
    pub issue_number: Option<i64>,
    pub issue_url: Option<String>,
    pub pull_request_number: Option<i64>,
    pub pull_request_url: Option<String>,
}

impl TaskForgeLinks {
    /// Fills the addresses the forge did not give from its web host (`github.com`, or a
    /// GitHub Enterprise host): `https://{host}/{repo}/issues/{n}` and `…/pull/{n}`.
    #[must_use]
    pub fn with_web_host(mut self, host: &str) -> Self {
        let host = host.trim_end_matches('/');
        if host.is_empty() {
            return self;
        }
        if self.issue_url.is_none() {
            self.issue_url = self
                .issue_number
                .map(|n| format!("https://{host}/{}/issues/{n}", self.repo));
        }
        if self.pull_request_url.is_none() {
            self.pull_request_url = self
                .pull_request_number
                .map(|n| format!("https://{host}/{}/pull/{n}", self.repo));
        }
        self
    }
}

/// One inbox item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InboxItem {
    pub id: InboxItemId,
    pub kind: InboxKind,
    pub priority: Priority,
    pub task_id: Option<TaskId>,
    pub title: String,
    pub body: String,
    pub created_at: Timestamp,
    pub read: bool,
    pub resolved_at: Option<Timestamp>,
}

/// What a stored message is, beyond its role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Human or model text (possibly with tool calls).
    Text,
    /// The results of the model's tool calls (API role `user`).
    ToolResult,
}

impl MessageKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::ToolResult => "tool_result",
        }
    }
}

/// One stored main-thread message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatMessage {
    pub id: MessageId,
    pub role: Role,
    pub kind: MessageKind,
    /// The readable text (text blocks joined).
    pub text: String,
    /// The exact content blocks, including tool calls and tool results.
    #[schema(value_type = Vec<Object>)]
    pub content: Vec<ContentBlock>,
    /// The user message whose turn produced this message.
    pub turn_id: Option<MessageId>,
    /// The task an `event` message is about.
    pub task_id: Option<TaskId>,
    /// Per-user sequence number, in order of storage.
    pub seq: i64,
    /// Sort key for display and context: a turn's messages follow its user message.
    pub thread_pos: i64,
    /// Set once the message is folded into the rolling summary.
    pub summary_id: Option<i64>,
    pub created_at: Timestamp,
}

/// One entry of a user's event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: EventId,
    pub user_id: UserId,
    pub name: EventName,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub created_at: Timestamp,
}

/// One file's share of a diff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileStat {
    pub path: String,
    pub added: u64,
    pub removed: u64,
}

/// A task's work as a unified diff against its base, with stats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskDiff {
    pub base: String,
    pub branch: String,
    pub files: Vec<FileStat>,
    pub added: u64,
    pub removed: u64,
    /// The unified diff.
    pub text: String,
}

/// The `chat.delta` event: a piece of an assistant reply as it streams (the whole reply
/// follows as a `chat.message`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChatDelta {
    /// The user message being answered.
    pub turn_id: MessageId,
    pub text: String,
}

/// The `chat.error` event: a chat turn failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChatError {
    /// The user message being answered.
    pub turn_id: MessageId,
    pub message: String,
    /// The turn is tried again later; otherwise it gave up.
    pub retrying: bool,
}

#[cfg(test)]
mod tests {
    use super::TaskForgeLinks;

    fn links(issue_url: Option<&str>) -> TaskForgeLinks {
        TaskForgeLinks {
            repo: "octo/app".into(),
            issue_number: Some(3),
            issue_url: issue_url.map(Into::into),
            pull_request_number: Some(4),
            pull_request_url: None,
        }
    }

    #[test]
    fn forge_links_keep_given_addresses_and_derive_the_rest_from_the_web_host() {
        let l = links(Some("https://github.com/octo/app/issues/3#x")).with_web_host("github.com");
        assert_eq!(
            l.issue_url.as_deref(),
            Some("https://github.com/octo/app/issues/3#x")
        );
        assert_eq!(
            l.pull_request_url.as_deref(),
            Some("https://github.com/octo/app/pull/4")
        );
        let l = links(None).with_web_host("ghe.example/");
        assert_eq!(
            l.issue_url.as_deref(),
            Some("https://ghe.example/octo/app/issues/3")
        );
        assert_eq!(
            l.pull_request_url.as_deref(),
            Some("https://ghe.example/octo/app/pull/4")
        );
        let l = TaskForgeLinks {
            pull_request_number: None,
            ..links(None)
        }
        .with_web_host("");
        assert_eq!((l.issue_url, l.pull_request_url), (None, None));
    }
}

//! The parts of the API's JSON the client shows, read leniently: a field this version
//! does not know is ignored and a missing one takes its default, so the client works
//! with a server a version apart. `--json` prints the API's own JSON instead.

use serde::Deserialize;
use serde_json::Value;

/// A worker task (`Task` in the API document).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskView {
    pub id: String,
    pub state: String,
    pub description: String,
    pub repo: String,
    pub branch: Option<String>,
    pub base_branch: Option<String>,
    pub skip_plan: bool,
    pub plan: Option<String>,
    pub questions: Vec<QuestionView>,
    pub error: Option<String>,
    pub diffstat: Option<String>,
    pub cost_usd: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub created_at: String,
    pub updated_at: String,
    /// Set while the task is on hold at its agent's usage limit.
    pub hold: Option<HoldView>,
}

/// Why and until when a task is on hold (`Hold`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct HoldView {
    /// The agent's own words about the limit.
    pub reason: String,
    /// When the limit resets (RFC 3339), if the agent said.
    pub until: Option<String>,
}

/// A worker's question (`Question`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct QuestionView {
    pub id: String,
    pub header: String,
    pub question: String,
    pub options: Vec<OptionView>,
    pub multi_select: bool,
}

/// One option of a question (`QuestionOption`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct OptionView {
    pub label: String,
    pub description: String,
}

/// An inbox item (`InboxItem`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct InboxView {
    pub id: String,
    pub kind: String,
    pub priority: String,
    pub title: String,
    pub body: String,
    pub task_id: Option<String>,
    pub created_at: String,
    pub resolved_at: Option<String>,
    pub read: bool,
}

/// A stored main-thread message (`ChatMessage`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct MessageView {
    pub id: String,
    pub role: String,
    pub kind: String,
    pub text: String,
    pub content: Vec<Value>,
    pub turn_id: Option<String>,
    pub created_at: String,
}

impl MessageView {
    /// The assistant's last message of a turn: no tool call left to run.
    #[must_use]
    pub fn ends_turn(&self, turn: &str) -> bool {
        self.role == "assistant"
            && self.turn_id.as_deref() == Some(turn)
            && self.content.iter().all(|b| b["type"] != "tool_use")
    }
}

/// A transcript entry (`TranscriptRecord`): `kind` and its `payload`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EntryView {
    pub task_id: String,
    pub seq: i64,
    pub kind: String,
    pub payload: Value,
    pub created_at: String,
}

/// Reads `value` as `T`, tolerating anything (a view never fails the command).
#[must_use]
pub fn read<T: for<'de> Deserialize<'de> + Default>(value: &Value) -> T {
    T::deserialize(value).unwrap_or_default()
}

/// Whether a task in `state` will never change again.
#[must_use]
pub fn is_final(state: &str) -> bool {
    matches!(state, "merged" | "failed" | "cancelled")
}

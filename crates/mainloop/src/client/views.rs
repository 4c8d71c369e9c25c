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
    /// Set while the task is on hold: at a usage limit, a budget, or a pause.
    pub hold: Option<HoldView>,
    /// The task's own cost cap, once raised.
    pub budget_usd: Option<f64>,
}

/// Why and until when a task is on hold (`Hold`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct HoldView {
    /// What holds the task, in words (for a usage limit, the agent's own).
    pub reason: String,
    /// When the limit resets (RFC 3339), if the agent said.
    pub until: Option<String>,
    /// `usage_limit` (also when absent: a server from before budgets), `budget` or
    /// `paused`.
    pub kind: String,
    /// For a budget hold, the budget reached: `task`, `day`, `week`, `agent_day`,
    /// `agent_week`.
    pub budget: Option<String>,
}

impl HoldView {
    /// Whether the task waits for the human to raise a budget or let it continue once.
    #[must_use]
    pub fn is_budget(&self) -> bool {
        self.kind == "budget"
    }

    /// Whether the task waits for the user to resume all work.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.kind == "paused"
    }
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

/// Cost and tokens of some runs (`Totals`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct TotalsView {
    pub cost_usd: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub runs: i64,
}

impl TotalsView {
    #[must_use]
    pub const fn tokens(&self) -> i64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// One source's spending (`SourceTotals`): an agent, or `main_thread`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SourceView {
    pub source: String,
    #[serde(flatten)]
    pub totals: TotalsView,
}

/// One day of spending (`UsageDay`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct DayView {
    pub date: String,
    #[serde(flatten)]
    pub totals: TotalsView,
}

/// One task's spending (`TaskUsage`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskUsageView {
    pub task_id: String,
    pub title: String,
    pub agent: String,
    pub state: String,
    #[serde(flatten)]
    pub totals: TotalsView,
}

/// One agent's caps (`AgentBudget`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct AgentBudgetView {
    pub daily_usd: Option<f64>,
    pub weekly_usd: Option<f64>,
}

/// What a user allows to be spent (`Budgets`); absent is no cap.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct BudgetsView {
    pub task_usd: Option<f64>,
    pub daily_usd: Option<f64>,
    pub weekly_usd: Option<f64>,
    pub agents: std::collections::BTreeMap<String, AgentBudgetView>,
}

/// Whether all work is paused (`PauseState`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PauseView {
    pub paused: bool,
    pub since: Option<String>,
}

/// An agent's quota window (`QuotaWindow`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct WindowView {
    pub agent: String,
    pub window: String,
    pub used_percent: Option<f64>,
    pub resets_at: Option<String>,
    pub limited: bool,
    pub observed_at: String,
}

/// The usage report (`Usage`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct UsageView {
    pub from: String,
    pub to: String,
    pub days: Vec<DayView>,
    pub sources: Vec<SourceView>,
    pub tasks: Vec<TaskUsageView>,
    pub today: TotalsView,
    pub week: TotalsView,
    pub day_resets_at: String,
    pub week_resets_at: String,
    pub budgets: BudgetsView,
    pub pause: PauseView,
    pub windows: Vec<WindowView>,
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

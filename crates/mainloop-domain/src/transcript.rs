//! The task transcript contract: every normalised event a task's worker records
//! (`TranscriptEntry`, tagged by `kind`), and the stored, numbered form the API returns
//! and the `task.output` event streams (`TranscriptRecord`). The worker writes it, the
//! engine stores it, the API and the web app read it; nothing else spells its shape.

use crate::question::Question;
use crate::{TaskId, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What happened, by `kind`; `payload` holds the kind's fields.
///
/// A stored entry this version cannot read (a kind it does not know, or a payload of
/// another shape) reads back as `unknown`, with what was stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum TranscriptEntry {
    /// The agent session started (or resumed).
    Session(SessionEntry),
    /// The agent's prose.
    Text(TextEntry),
    /// The agent called a tool.
    ToolCall(ToolCallEntry),
    /// A tool call's result.
    ToolResult(ToolResultEntry),
    /// A permission request and the policy's decision.
    Permission(PermissionEntry),
    /// The agent asked the human.
    Question(QuestionEntry),
    /// The agent proposed a plan.
    Plan(PlanEntry),
    /// The agent's turn ended.
    Finished(FinishedEntry),
    /// An output line the agent adapter could not read; the session went on.
    Malformed(MalformedEntry),
    /// The agent process failed.
    Error(ErrorEntry),
    /// A note from the worker about the task's progress.
    Status(StatusEntry),
    /// The checks ran on the task's work (the project's command, or the forge's CI).
    Checks(ChecksEntry),
    /// A stored entry this version cannot read.
    Unknown(UnknownEntry),
}

/// `session`: the agent's session id and model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionEntry {
    pub session_id: String,
    pub model: String,
}

/// `text`: a piece of the agent's prose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TextEntry {
    pub text: String,
}

/// `status`: what the worker is doing or what happened to the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusEntry {
    pub text: String,
}

/// `tool_call`: a tool call, with a one-line summary of its input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ToolCallEntry {
    pub id: String,
    pub name: String,
    pub summary: String,
}

/// `tool_result`: a tool call's result text (shortened).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ToolResultEntry {
    pub tool_use_id: String,
    pub summary: String,
    pub is_error: bool,
}

/// `permission`: a tool the agent asked to use, and whether it was allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PermissionEntry {
    pub tool: String,
    pub allowed: bool,
}

/// `question`: the questions put to the human.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuestionEntry {
    pub questions: Vec<Question>,
}

/// `plan`: the proposed plan (markdown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanEntry {
    pub plan: String,
}

/// `finished`: how the agent's turn ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FinishedEntry {
    pub is_error: bool,
    /// The agent's final reply, or its error.
    pub result: Option<String>,
    pub session_id: Option<String>,
    /// What the turn cost, in US dollars.
    pub cost_usd: f64,
    /// The turn met the agent's usage limit: the task waits for the reset, it did not
    /// fail.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_limit: bool,
}

/// `malformed`: an unreadable output line (cut to 500 bytes) and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MalformedEntry {
    pub line: String,
    pub error: String,
}

/// `error`: the agent process ended unexpectedly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorEntry {
    pub text: String,
    /// The end of the agent's standard error.
    #[serde(default)]
    pub stderr: String,
}

/// `checks`: one run of the checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChecksEntry {
    /// The command that ran, or `GitHub CI`.
    pub command: String,
    /// `null` when nothing was checked (a forge repository without CI).
    pub passed: Option<bool>,
    /// The command's exit code (none when it was killed or on a forge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The command ran out of time and was stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// The end of the output, or the forge's report.
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The forge repository has no CI, so nothing checked the work.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_ci: bool,
}

/// `unknown`: a stored entry as it was stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UnknownEntry {
    /// The stored kind.
    pub kind: String,
    /// The stored payload.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl TranscriptEntry {
    /// The stored kind (for `unknown`, the kind it was stored under).
    #[must_use]
    pub fn kind(&self) -> &str {
        match self {
            Self::Session(_) => "session",
            Self::Text(_) => "text",
            Self::ToolCall(_) => "tool_call",
            Self::ToolResult(_) => "tool_result",
            Self::Permission(_) => "permission",
            Self::Question(_) => "question",
            Self::Plan(_) => "plan",
            Self::Finished(_) => "finished",
            Self::Malformed(_) => "malformed",
            Self::Error(_) => "error",
            Self::Status(_) => "status",
            Self::Checks(_) => "checks",
            Self::Unknown(u) => &u.kind,
        }
    }

    /// The stored payload: the kind's fields (for `unknown`, what was stored).
    #[must_use]
    pub fn payload(&self) -> serde_json::Value {
        if let Self::Unknown(u) = self {
            return u.payload.clone();
        }
        serde_json::to_value(self)
            .ok()
            .and_then(|mut v| v.get_mut("payload").map(serde_json::Value::take))
            .unwrap_or_default()
    }

    /// Reads a stored `(kind, payload)`; what does not fit a known kind is `unknown`,
    /// so an entry written by another version never fails a read.
    #[must_use]
    pub fn from_stored(kind: &str, payload: serde_json::Value) -> Self {
        if kind != "unknown" {
            let tagged = serde_json::json!({"kind": kind, "payload": payload});
            if let Ok(entry) = serde_json::from_value(tagged) {
                return entry;
            }
        }
        Self::Unknown(UnknownEntry {
            kind: kind.to_owned(),
            payload,
        })
    }

    /// The entry's text, for the kinds that are prose (`text`, `status`, `error`).
    #[must_use]
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text(TextEntry { text })
            | Self::Status(StatusEntry { text })
            | Self::Error(ErrorEntry { text, .. }) => Some(text),
            _ => None,
        }
    }

    /// A `text` entry.
    pub fn text_entry(text: impl Into<String>) -> Self {
        Self::Text(TextEntry { text: text.into() })
    }

    /// A `status` entry.
    pub fn status(text: impl Into<String>) -> Self {
        Self::Status(StatusEntry { text: text.into() })
    }
}

/// One stored transcript entry: the body of `GET /api/tasks/{id}/transcript`'s entries
/// and of the `task.output` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TranscriptRecord {
    pub task_id: TaskId,
    /// Position in the task's transcript, from 1.
    pub seq: i64,
    #[serde(flatten)]
    pub entry: TranscriptEntry,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Each kind's payload exactly as the worker writes it.
    fn written() -> Vec<(&'static str, Value)> {
        vec![
            (
                "session",
                json!({"session_id": "s-1", "model": "claude-sonnet-4-5"}),
            ),
            ("text", json!({"text": "Hello"})),
            (
                "tool_call",
                json!({"id": "t1", "name": "Write", "summary": "hello.txt"}),
            ),
            (
                "tool_result",
                json!({"tool_use_id": "t1", "summary": "ok", "is_error": false}),
            ),
            ("permission", json!({"tool": "Bash", "allowed": false})),
            (
                "question",
                json!({"questions": [{"id": "q1", "header": "DB", "question": "Which?",
                    "options": [{"label": "SQLite", "description": "small"}], "multi_select": false}]}),
            ),
            ("plan", json!({"plan": "1. write"})),
            (
                "finished",
                json!({"is_error": false, "result": "done", "session_id": "s-1", "cost_usd": 0.01}),
            ),
            (
                "finished",
                json!({"is_error": true, "result": null, "session_id": null, "cost_usd": 0.0}),
            ),
            ("malformed", json!({"line": "{oops", "error": "EOF"})),
            (
                "error",
                json!({"text": "agent exited (1)", "stderr": "boom"}),
            ),
            ("status", json!({"text": "starting it again"})),
            (
                "checks",
                json!({"command": "make test", "passed": true, "exit_code": 0, "timed_out": false,
                    "output": "ok", "duration_ms": 12}),
            ),
            (
                "checks",
                json!({"command": "make test", "passed": false, "exit_code": null, "timed_out": true,
                    "output": "", "duration_ms": 60000}),
            ),
            (
                "checks",
                json!({"command": "GitHub CI", "passed": null, "no_ci": true, "output": "no check runs"}),
            ),
            (
                "checks",
                json!({"command": "GitHub CI", "passed": false, "output": "build: failed"}),
            ),
        ]
    }

    #[test]
    fn every_kind_the_worker_writes_reads_typed_and_keeps_its_kind() {
        for (kind, payload) in written() {
            let entry = TranscriptEntry::from_stored(kind, payload.clone());
            assert!(
                !matches!(entry, TranscriptEntry::Unknown(_)),
                "{kind} {payload}"
            );
            assert_eq!(entry.kind(), kind);
            // What is stored again reads back the same.
            assert_eq!(
                TranscriptEntry::from_stored(entry.kind(), entry.payload()),
                entry
            );
            let wire = serde_json::to_value(&entry).unwrap();
            assert_eq!(wire["kind"], kind);
        }
    }

    #[test]
    fn the_wire_shape_is_kind_and_payload() {
        let record = TranscriptRecord {
            task_id: TaskId(uuid::Uuid::nil()),
            seq: 3,
            entry: TranscriptEntry::text_entry("hi"),
            created_at: Timestamp::from_millis(0),
        };
        let v = serde_json::to_value(&record).unwrap();
        assert_eq!(v["kind"], "text");
        assert_eq!(v["payload"], json!({"text": "hi"}));
        assert_eq!(v["seq"], 3);
        assert_eq!(
            serde_json::from_value::<TranscriptRecord>(v).unwrap(),
            record
        );
    }

    #[test]
    fn unknown_kinds_and_other_shapes_read_as_unknown() {
        for (kind, payload) in [
            ("telemetry", json!({"x": 1})),
            ("text", json!({"i": 2})),
            ("finished", json!("not an object")),
            (
                "unknown",
                json!({"kind": "text", "payload": {"text": "hi"}}),
            ),
            ("", Value::Null),
        ] {
            let entry = TranscriptEntry::from_stored(kind, payload.clone());
            assert_eq!(
                entry,
                TranscriptEntry::Unknown(UnknownEntry {
                    kind: kind.into(),
                    payload: payload.clone()
                })
            );
            assert_eq!(entry.kind(), kind);
            assert_eq!(entry.payload(), payload);
            let wire = serde_json::to_value(&entry).unwrap();
            assert_eq!(wire["kind"], "unknown");
            assert_eq!(wire["payload"]["kind"], kind);
        }
    }

    #[test]
    fn prose_kinds_have_text() {
        assert_eq!(TranscriptEntry::status("s").text(), Some("s"));
        assert_eq!(TranscriptEntry::text_entry("t").text(), Some("t"));
        let plan = TranscriptEntry::from_stored("plan", json!({"plan": "p"}));
        assert_eq!(plan.text(), None);
    }
}

//! The main thread: message roles, content blocks stored exactly as the model produced
//! them, the context sent to the model, and which messages to fold into the summary.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// Who a message is from. `Event` messages are worker updates written by mainloop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    Event,
}

impl Role {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Event => "event",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            "event" => Ok(Self::Event),
            other => Err(format!("unknown role '{other}'")),
        }
    }
}

/// One content block in the Anthropic Messages format. Known blocks are typed; fields
/// this version does not know are kept in `extra`, and unknown block types are kept
/// whole, so a message round-trips byte-for-byte in meaning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ContentBlock {
    Known(Block),
    Unknown(Value),
}

/// The content blocks mainloop acts on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
}

impl ContentBlock {
    #[must_use]
    pub fn text(text: impl Into<String>) -> Self {
        Self::Known(Block::Text {
            text: text.into(),
            extra: Map::new(),
        })
    }

    #[must_use]
    pub fn tool_use(id: impl Into<String>, name: impl Into<String>, input: Value) -> Self {
        Self::Known(Block::ToolUse {
            id: id.into(),
            name: name.into(),
            input,
            extra: Map::new(),
        })
    }

    #[must_use]
    pub fn tool_result(
        tool_use_id: impl Into<String>,
        content: impl Into<String>,
        is_error: bool,
    ) -> Self {
        Self::Known(Block::ToolResult {
            tool_use_id: tool_use_id.into(),
            content: Value::String(content.into()),
            is_error: is_error.then_some(true),
            extra: Map::new(),
        })
    }

    #[must_use]
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Known(Block::Text { text, .. }) => Some(text),
            _ => None,
        }
    }

    /// `(id, name, input)` of a tool call.
    #[must_use]
    pub fn as_tool_use(&self) -> Option<(&str, &str, &Value)> {
        match self {
            Self::Known(Block::ToolUse {
                id, name, input, ..
            }) => Some((id, name, input)),
            _ => None,
        }
    }

    #[must_use]
    pub fn is_tool_result(&self) -> bool {
        matches!(self, Self::Known(Block::ToolResult { .. }))
    }

    /// A rough size, for budgeting context without a network round trip.
    #[must_use]
    pub fn approx_chars(&self) -> usize {
        match self {
            Self::Known(Block::Text { text, .. }) => text.len(),
            Self::Known(Block::ToolUse { name, input, .. }) => name.len() + input.to_string().len(),
            Self::Known(Block::ToolResult { content, .. }) => match content {
                Value::String(s) => s.len(),
                other => other.to_string().len(),
            },
            Self::Unknown(v) => v.to_string().len(),
        }
    }
}

/// The human-readable text of a message: its text blocks joined by blank lines.
#[must_use]
pub fn display_text(content: &[ContentBlock]) -> String {
    content
        .iter()
        .filter_map(ContentBlock::as_text)
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Token estimate used for the context budget (about four characters a token, plus a
/// little per block for framing). Deliberately conservative.
#[must_use]
pub fn estimate_tokens(content: &[ContentBlock]) -> usize {
    content
        .iter()
        .map(|b| b.approx_chars().div_ceil(4) + 8)
        .sum::<usize>()
        + 4
}

/// A stored main-thread message, as far as context building needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadMessage {
    pub role: Role,
    pub content: Vec<ContentBlock>,
}

/// A message in the model's request: only `user` and `assistant` exist there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMessage {
    pub role: ModelRole,
    pub content: Vec<ContentBlock>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelRole {
    User,
    Assistant,
}

/// Prefix the model sees on worker updates, so it can tell them from the human.
pub const EVENT_PREFIX: &str = "[mainloop worker update] ";

/// Builds the model's message list from the rolling summary and the unsummarised
/// messages in thread order. Worker updates become user text; consecutive messages of
/// one role are merged (the API wants alternation), and tool results stay first in
/// their user message as the API requires.
#[must_use]
pub fn build_context(summary: Option<&str>, messages: &[ThreadMessage]) -> Vec<ModelMessage> {
    let mut out: Vec<ModelMessage> = Vec::new();
    let mut push = |role: ModelRole, blocks: Vec<ContentBlock>| {
        if blocks.is_empty() {
            return;
        }
        match out.last_mut() {
            Some(last) if last.role == role => {
                // Tool results must lead a user message: put them before earlier text.
                let (mut results, rest): (Vec<_>, Vec<_>) =
                    blocks.into_iter().partition(ContentBlock::is_tool_result);
                if results.is_empty() {
                    last.content.extend(rest);
                } else {
                    results.append(&mut last.content);
                    results.extend(rest);
                    last.content = results;
                }
            }
            _ => out.push(ModelMessage {
                role,
                content: blocks,
            }),
        }
    };
    if let Some(summary) = summary.filter(|s| !s.trim().is_empty()) {
        push(
            ModelRole::User,
            vec![ContentBlock::text(format!(
                "<conversation_summary>\nSummary of the earlier conversation:\n{summary}\n</conversation_summary>"
            ))],
        );
    }
    for m in messages {
        match m.role {
            Role::User => push(ModelRole::User, m.content.clone()),
            Role::Assistant => push(ModelRole::Assistant, m.content.clone()),
            Role::Event => push(
                ModelRole::User,
                vec![ContentBlock::text(format!(
                    "{EVENT_PREFIX}{}",
                    display_text(&m.content)
                ))],
            ),
        }
    }
    // The API requires the first message to be the user's.
    if out.first().is_some_and(|m| m.role == ModelRole::Assistant) {
        out.insert(
            0,
            ModelMessage {
                role: ModelRole::User,
                content: vec![ContentBlock::text("(earlier conversation omitted)")],
            },
        );
    }
    out
}

/// One unsummarised message as the compaction planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionEntry {
    pub tokens: usize,
    /// A fold may end just before this message: it starts a new exchange (human text or
    /// a worker update), so no tool call is separated from its result.
    pub starts_exchange: bool,
    /// Part of the turn being answered now; never folded.
    pub in_current_turn: bool,
}

/// How many of the oldest unsummarised messages to fold into the summary, or `None`
/// when the context fits in `budget` tokens. Folds down to about half the budget so
/// compaction runs rarely, and only ever at exchange boundaries.
#[must_use]
pub fn plan_compaction(
    summary_tokens: usize,
    entries: &[CompactionEntry],
    budget: usize,
) -> Option<usize> {
    let total: usize = summary_tokens + entries.iter().map(|e| e.tokens).sum::<usize>();
    if total <= budget {
        return None;
    }
    let target = budget / 2;
    let mut remaining = total;
    let mut best = None;
    for (k, entry) in entries.iter().enumerate() {
        if entry.in_current_turn {
            break;
        }
        if k > 0 && entry.starts_exchange {
            best = Some(k);
            if remaining <= target {
                return best;
            }
        }
        remaining -= entry.tokens;
    }
    // Folding everything before the current turn is also a boundary.
    if let Some(k) = entries
        .iter()
        .position(|e| e.in_current_turn)
        .filter(|k| *k > 0)
    {
        best = Some(k);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_blocks_round_trip_exactly() {
        let raw = json!([
            {"type": "text", "text": "hi", "citations": null},
            {"type": "tool_use", "id": "toolu_1", "name": "spawn_task", "input": {"description": "x", "repo": "r"}},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "ok"}], "is_error": false},
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "server_tool_use", "weird": [1, 2]}
        ]);
        let blocks: Vec<ContentBlock> = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(blocks[0].as_text(), Some("hi"));
        assert_eq!(blocks[1].as_tool_use().unwrap().1, "spawn_task");
        assert!(blocks[2].is_tool_result());
        assert!(matches!(blocks[3], ContentBlock::Unknown(_)));
        assert_eq!(serde_json::to_value(&blocks).unwrap(), raw);
    }

    #[test]
    fn display_text_joins_text_blocks_only() {
        let c = vec![
            ContentBlock::text("a"),
            ContentBlock::tool_use("t", "list_tasks", json!({})),
            ContentBlock::text("b"),
        ];
        assert_eq!(display_text(&c), "a\n\nb");
        assert!(estimate_tokens(&c) > 0);
    }

    fn msg(role: Role, blocks: Vec<ContentBlock>) -> ThreadMessage {
        ThreadMessage {
            role,
            content: blocks,
        }
    }

    #[test]
    fn context_merges_roles_and_renders_events() {
        let ctx = build_context(
            Some("we talked about X"),
            &[
                msg(Role::User, vec![ContentBlock::text("hello")]),
                msg(
                    Role::Assistant,
                    vec![ContentBlock::tool_use("t1", "list_tasks", json!({}))],
                ),
                msg(
                    Role::Event,
                    vec![ContentBlock::text("task 1 has a question")],
                ),
                msg(
                    Role::User,
                    vec![ContentBlock::tool_result("t1", "[]", false)],
                ),
                msg(Role::Assistant, vec![ContentBlock::text("none")]),
            ],
        );
        assert_eq!(ctx.len(), 4);
        assert_eq!(ctx[0].role, ModelRole::User);
        assert_eq!(ctx[0].content.len(), 2, "summary and first message merged");
        assert!(
            ctx[0].content[0]
                .as_text()
                .unwrap()
                .contains("we talked about X")
        );
        assert_eq!(ctx[1].role, ModelRole::Assistant);
        // The tool result leads the merged user message even though the event came first.
        assert!(ctx[2].content[0].is_tool_result());
        assert!(
            ctx[2].content[1]
                .as_text()
                .unwrap()
                .starts_with(EVENT_PREFIX)
        );
        assert_eq!(ctx[3].role, ModelRole::Assistant);
    }

    #[test]
    fn context_always_starts_with_the_user() {
        let ctx = build_context(
            None,
            &[msg(Role::Assistant, vec![ContentBlock::text("hi")])],
        );
        assert_eq!(ctx[0].role, ModelRole::User);
        assert!(build_context(None, &[]).is_empty());
        assert!(build_context(Some("  "), &[]).is_empty());
    }

    fn e(tokens: usize, starts: bool, current: bool) -> CompactionEntry {
        CompactionEntry {
            tokens,
            starts_exchange: starts,
            in_current_turn: current,
        }
    }

    #[test]
    fn no_compaction_under_budget() {
        assert_eq!(plan_compaction(10, &[e(10, true, false)], 100), None);
    }

    #[test]
    fn folds_at_exchange_boundaries_down_to_half_budget() {
        // Exchanges of 30 tokens: user(10) assistant(10) user-tool-result(10).
        let mut entries = Vec::new();
        for _ in 0..5 {
            entries.push(e(10, true, false));
            entries.push(e(10, false, false));
            entries.push(e(10, false, false));
        }
        entries.push(e(10, true, true));
        // total 160 > 100; fold until remaining <= 50.
        let k = plan_compaction(0, &entries, 100).unwrap();
        assert_eq!(k % 3, 0, "fold ends at an exchange boundary");
        let remaining: usize = entries[k..].iter().map(|x| x.tokens).sum();
        assert!(remaining <= 50, "remaining {remaining}");
        assert_eq!(k, 12);
    }

    #[test]
    fn never_folds_the_current_turn() {
        let entries = [e(10, true, false), e(500, true, true), e(500, false, true)];
        assert_eq!(plan_compaction(0, &entries, 100), Some(1));
        let only_current = [e(500, true, true)];
        assert_eq!(plan_compaction(0, &only_current, 100), None);
    }

    #[test]
    fn a_single_huge_exchange_is_folded_whole() {
        let entries = [
            e(400, true, false),
            e(400, false, false),
            e(10, true, false),
        ];
        assert_eq!(plan_compaction(0, &entries, 100), Some(2));
    }
}

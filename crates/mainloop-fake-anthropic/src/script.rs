//! The script format (rules, matchers, replies) and how a rule is chosen for a request.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// An ordered list of rules; the first usable rule whose `match` holds answers the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// What to answer when no rule matches.
    #[serde(default)]
    pub fallback: Fallback,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Reply with the text [`NO_MATCH_TEXT`].
    #[default]
    NoMatch,
    /// Reply with `echo: <latest user text>`.
    Echo,
}

pub const NO_MATCH_TEXT: &str = "(fake-anthropic: no rule matched)";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown in the request log; defaults to `#<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub when: Match,
    #[serde(default)]
    pub reply: Vec<ReplyBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Pause between streamed events (and before a non-streamed body).
    #[serde(default)]
    pub delay_ms: u64,
    /// Answer with this HTTP status and an Anthropic error body instead of a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorSpec>,
    /// Seconds for the `retry-after` header of an error reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// More headers of the reply, as the real API sends them (the
    /// `anthropic-ratelimit-unified-*` headers of a usage-limit 429, or of a message
    /// from an account with room left).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// All given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_result_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_result_for: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_tools: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_offered: Option<String>,
    /// Only the n-th (1-based) request satisfying the other conditions uses this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nth: Option<u32>,
    /// The rule is consumed after this many uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

/// Written `{text: ...}` or `{tool_use: {name, input}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawBlock", into = "RawBlock")]
pub enum ReplyBlock {
    Text(String),
    ToolUse(ToolUseSpec),
}

/// The on-disk shape of a [`ReplyBlock`]: serde_yaml reads externally tagged enums only
/// from `!tag` syntax, so a one-key map is parsed through this struct instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_use: Option<ToolUseSpec>,
}

impl TryFrom<RawBlock> for ReplyBlock {
    type Error = String;

    fn try_from(raw: RawBlock) -> Result<Self, String> {
        match (raw.text, raw.tool_use) {
            (Some(text), None) => Ok(Self::Text(text)),
            (None, Some(tool)) => Ok(Self::ToolUse(tool)),
            _ => Err("a reply block needs exactly one of `text` or `tool_use`".into()),
        }
    }
}

impl From<ReplyBlock> for RawBlock {
    fn from(block: ReplyBlock) -> Self {
        match block {
            ReplyBlock::Text(text) => Self {
                text: Some(text),
                tool_use: None,
            },
            ReplyBlock::ToolUse(tool) => Self {
                text: None,
                tool_use: Some(tool),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolUseSpec {
    pub name: String,
    #[serde(default = "empty_object")]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorSpec {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// More fields of the body's `error` object, e.g. the `resets_at` and `plan_type`
    /// of OpenAI's `usage_limit_reached`.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, Value>,
}

impl Script {
    /// Loads YAML for `.yaml`/`.yml`, JSON for `.json`.
    pub fn from_path(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Self::from_yaml(&text),
            Some("json") => Self::from_json(&text),
            _ => Err(Error::ScriptExtension(path.to_path_buf())),
        }
    }

    pub fn from_json(text: &str) -> Result<Self, Error> {
        Ok(serde_json::from_str(text)?)
    }

    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        Ok(serde_yaml::from_str(text)?)
    }

    /// This script's rules, then `later`'s: a test puts its own rules in front of a
    /// shared script. The fallback stays this script's.
    #[must_use]
    pub fn then(mut self, later: Self) -> Self {
        self.rules.extend(later.rules);
        self
    }
}

/// Per-rule counters; kept beside the script so a replaced script starts fresh.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RuleCounter {
    /// Requests that satisfied the rule's conditions (drives `nth`).
    seen: u32,
    /// Times the rule answered (drives `times`).
    used: u32,
}

/// Picks the answering rule and advances the counters. `counters` has one entry per rule.
pub(crate) fn choose(script: &Script, counters: &mut [RuleCounter], req: &Value) -> Option<usize> {
    let view = RequestView::new(req);
    let mut chosen = None;
    for (i, (rule, counter)) in script.rules.iter().zip(counters.iter_mut()).enumerate() {
        if !conditions_hold(&rule.when, &view) {
            continue;
        }
        // Counting every satisfying request, not only those this rule wins, keeps `nth`
        // independent of the rules before it.
        counter.seen += 1;
        if chosen.is_some() {
            continue;
        }
        let nth_ok = rule.when.nth.is_none_or(|n| counter.seen == n);
        let times_ok = rule.when.times.is_none_or(|t| counter.used < t);
        if nth_ok && times_ok {
            counter.used += 1;
            chosen = Some(i);
        }
    }
    chosen
}

/// Whether the rule's conditions hold, ignoring `nth` and `times`.
pub fn conditions_hold(m: &Match, view: &RequestView<'_>) -> bool {
    let contains =
        |hay: &str, needle: &Option<String>| needle.as_deref().is_none_or(|n| hay.contains(n));
    contains(&view.system_text(), &m.system_contains)
        && contains(&view.user_text(), &m.user_contains)
        && contains(&view.tool_result_text(), &m.tool_result_contains)
        && contains(view.model(), &m.model_contains)
        && m.has_tools
            .is_none_or(|want| view.tool_names().next().is_some() == want)
        && m.tool_offered
            .as_deref()
            .is_none_or(|t| view.tool_names().any(|n| n == t))
        && m.tool_result_for
            .as_deref()
            .is_none_or(|t| view.tool_result_names().contains(&t))
}

/// Lenient read-only accessors over a Messages API request body.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    req: &'a Value,
}

impl<'a> RequestView<'a> {
    pub fn new(req: &'a Value) -> Self {
        Self { req }
    }

    pub fn model(&self) -> &'a str {
        self.req
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn messages(&self) -> &'a [Value] {
        self.req
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The top-level `system` plus any `role: "system"` messages: the claude CLI puts its
    /// plan-mode instructions and environment into such a mid-conversation message.
    pub fn system_text(&self) -> String {
        let mut parts: Vec<&str> = texts(self.req.get("system")).collect();
        for m in self.messages().iter().filter(|m| role(m) == "system") {
            parts.extend(texts(m.get("content")));
        }
        parts.join("\n")
    }

    fn latest_user(&self) -> Option<&'a Value> {
        self.messages().iter().rev().find(|m| role(m) == "user")
    }

    fn latest_user_blocks(&self) -> impl Iterator<Item = &'a Value> {
        self.latest_user()
            .and_then(|m| m.get("content"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }

    /// Text blocks of the latest user message, joined by newlines.
    pub fn user_text(&self) -> String {
        let content = self.latest_user().and_then(|m| m.get("content"));
        texts(content).collect::<Vec<_>>().join("\n")
    }

    /// The last text block of the latest user message: the CLI prepends its
    /// `<system-reminder>` blocks, so the user's own words come last.
    pub fn last_user_text(&self) -> Option<String> {
        let content = self.latest_user().and_then(|m| m.get("content"))?;
        texts(Some(content)).last().map(str::to_owned)
    }

    fn tool_results(&self) -> impl Iterator<Item = &'a Value> {
        self.latest_user_blocks()
            .filter(|b| block_type(b) == "tool_result")
    }

    pub fn tool_result_text(&self) -> String {
        self.tool_results()
            .flat_map(|b| texts(b.get("content")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Names of the tools whose calls the latest user message's tool_results answer.
    pub fn tool_result_names(&self) -> Vec<&'a str> {
        let ids: Vec<&str> = self
            .tool_results()
            .filter_map(|b| b.get("tool_use_id")?.as_str())
            .collect();
        let uses = self
            .messages()
            .iter()
            .filter(|m| role(m) == "assistant")
            .filter_map(|m| m.get("content")?.as_array())
            .flatten()
            .filter(|b| block_type(b) == "tool_use");
        uses.filter(|b| {
            b.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| ids.contains(&id))
        })
        .filter_map(|b| b.get("name")?.as_str())
        .collect()
    }

    /// The plan file the CLI's plan-mode text names (`## Plan File Info:` … `<path>.md`);
    /// its name has a random slug, so scripts can only refer to it as `{{plan_file}}`.
    pub fn plan_file(&self) -> Option<String> {
        let system = self.system_text();
        let (_, info) = system.split_once("Plan File Info")?;
        info.split_whitespace()
            .map(|w| {
                w.trim_matches(|c: char| matches!(c, '`' | '"' | '\'' | ',' | ':' | '(' | ')'))
                    .trim_end_matches('.')
            })
            .find(|w| w.starts_with('/') && w.ends_with(".md"))
            .map(str::to_owned)
    }

    pub fn tool_names(&self) -> impl Iterator<Item = &'a str> {
        let tools = self
            .req
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        tools.filter_map(|t| t.get("name")?.as_str())
    }
}

/// Replaces `{{plan_file}}` in every string inside `v`; the only placeholder, because a
/// scripted plan can't be written anywhere else without knowing the CLI's random path.
pub(crate) fn fill_placeholders(v: &mut Value, view: &RequestView<'_>) {
    const PLAN_FILE: &str = "{{plan_file}}";
    match v {
        Value::String(s) if s.contains(PLAN_FILE) => {
            let path = view
                .plan_file()
                .unwrap_or_else(|| "/nonexistent/fake-anthropic-no-plan-file.md".into());
            *s = s.replace(PLAN_FILE, &path);
        }
        Value::Array(items) => items.iter_mut().for_each(|i| fill_placeholders(i, view)),
        Value::Object(map) => map.values_mut().for_each(|i| fill_placeholders(i, view)),
        _ => {}
    }
}

fn role(m: &Value) -> &str {
    m.get("role").and_then(Value::as_str).unwrap_or_default()
}

fn block_type(b: &Value) -> &str {
    b.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// The text of a `content`/`system` value: a string, or an array whose text blocks count.
fn texts(v: Option<&Value>) -> impl Iterator<Item = &str> {
    let (single, blocks) = match v {
        Some(Value::String(s)) => (Some(s.as_str()), None),
        Some(Value::Array(a)) => (None, Some(a.iter())),
        _ => (None, None),
    };
    let from_blocks = blocks
        .into_iter()
        .flatten()
        .filter(|b| block_type(b) == "text")
        .filter_map(|b| b.get("text")?.as_str());
    single.into_iter().chain(from_blocks)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req() -> Value {
        json!({
            "model": "claude-opus-5-5",
            "system": [{"type": "text", "text": "You are a Claude agent"}],
            "tools": [{"name": "AskUserQuestion"}, {"name": "Write"}],
            "messages": [
                {"role": "user", "content": "pick a colour"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "asking"},
                    {"type": "tool_use", "id": "toolu_1", "name": "AskUserQuestion", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "answered: Red"}]},
                    {"type": "text", "text": "<system-reminder>x</system-reminder>"}
                ]},
                {"role": "system", "content": [{"type": "text", "text": "Plan mode is active."}]}
            ]
        })
    }

    fn holds(m: Value) -> bool {
        let m: Match = serde_json::from_value(m).expect("valid match");
        conditions_hold(&m, &RequestView::new(&req()))
    }

    #[test]
    fn each_condition_checks_its_part_of_the_request() {
        assert!(holds(json!({})));
        assert!(holds(json!({"system_contains": "Claude agent"})));
        assert!(holds(json!({"system_contains": "Plan mode is active"})));
        assert!(!holds(json!({"system_contains": "pick"})));
        assert!(holds(json!({"user_contains": "system-reminder"})));
        assert!(
            !holds(json!({"user_contains": "pick a colour"})),
            "only the latest user message counts"
        );
        assert!(
            !holds(json!({"user_contains": "answered"})),
            "tool results are not user text"
        );
        assert!(holds(json!({"tool_result_contains": "Red"})));
        assert!(holds(json!({"tool_result_for": "AskUserQuestion"})));
        assert!(!holds(json!({"tool_result_for": "Write"})));
        assert!(holds(json!({"model_contains": "opus"})));
        assert!(holds(json!({"has_tools": true})));
        assert!(!holds(json!({"has_tools": false})));
        assert!(holds(json!({"tool_offered": "Write"})));
        assert!(!holds(json!({"tool_offered": "Bash"})));
        assert!(!holds(
            json!({"model_contains": "opus", "tool_offered": "Bash"})
        ));
    }

    #[test]
    fn plan_file_placeholder_takes_the_path_from_plan_mode_text() {
        let r = json!({"messages": [{"role": "system", "content": [{"type": "text", "text":
            "Plan mode is active.\n## Plan File Info:\nNo plan file exists yet. You should create your plan at /h/.claude/plans/a-b-c.md using the Write tool."}]}]});
        let view = RequestView::new(&r);
        assert_eq!(
            view.plan_file().as_deref(),
            Some("/h/.claude/plans/a-b-c.md")
        );
        let mut input = json!({"file_path": "{{plan_file}}", "n": [1, "x {{plan_file}}"]});
        fill_placeholders(&mut input, &view);
        assert_eq!(
            input,
            json!({"file_path": "/h/.claude/plans/a-b-c.md", "n": [1, "x /h/.claude/plans/a-b-c.md"]})
        );
        assert_eq!(RequestView::new(&json!({})).plan_file(), None);
    }

    #[test]
    fn string_system_and_content_are_text() {
        let r =
            json!({"system": "sys prompt", "messages": [{"role": "user", "content": "hi there"}]});
        let v = RequestView::new(&r);
        assert_eq!(v.system_text(), "sys prompt");
        assert_eq!(v.user_text(), "hi there");
        assert_eq!(v.last_user_text().as_deref(), Some("hi there"));
        assert!(v.tool_result_names().is_empty());
    }

    #[test]
    fn garbage_request_matches_only_empty_conditions() {
        let r = json!([1, 2, 3]);
        let v = RequestView::new(&r);
        let m: Match = serde_json::from_value(json!({"has_tools": false})).expect("valid");
        assert!(conditions_hold(&m, &v));
        let m: Match = serde_json::from_value(json!({"user_contains": ""})).expect("valid");
        assert!(conditions_hold(&m, &v), "empty needle is always contained");
    }

    fn script(yaml: &str) -> Script {
        Script::from_yaml(yaml).expect("valid script")
    }

    #[test]
    fn first_match_wins_and_times_consumes() {
        let s = script(
            r#"
rules:
  - name: once
    match: {user_contains: hello, times: 1}
    reply: [{text: first}]
  - match: {user_contains: hello}
    reply: [{text: later}]
"#,
        );
        let mut c = vec![RuleCounter::default(); 2];
        let r = json!({"messages": [{"role": "user", "content": "hello"}]});
        assert_eq!(choose(&s, &mut c, &r), Some(0));
        assert_eq!(choose(&s, &mut c, &r), Some(1));
        assert_eq!(choose(&s, &mut c, &r), Some(1));
        let other = json!({"messages": [{"role": "user", "content": "bye"}]});
        assert_eq!(choose(&s, &mut c, &other), None);
    }

    #[test]
    fn nth_counts_satisfying_requests() {
        let s = script(
            r#"
rules:
  - match: {user_contains: go, nth: 2}
    reply: [{text: second}]
  - match: {}
    reply: [{text: other}]
"#,
        );
        let mut c = vec![RuleCounter::default(); 2];
        let go = json!({"messages": [{"role": "user", "content": "go"}]});
        let no = json!({"messages": [{"role": "user", "content": "stop"}]});
        assert_eq!(choose(&s, &mut c, &no), Some(1));
        assert_eq!(choose(&s, &mut c, &go), Some(1));
        assert_eq!(choose(&s, &mut c, &go), Some(0));
        assert_eq!(choose(&s, &mut c, &go), Some(1));
    }

    #[test]
    fn script_parses_from_yaml_and_json() {
        let s = script(
            r#"
fallback: echo
rules:
  - match: {model_contains: haiku}
    reply:
      - text: hi
      - tool_use: {name: Write, input: {file_path: /tmp/x}}
    stop_reason: max_tokens
  - status: 529
    error: {type: overloaded_error, message: busy}
    retry_after: 1
  - status: 429
    error: {type: usage_limit_reached, fields: {resets_at: 1796529488}}
    headers: {anthropic-ratelimit-unified-status: rejected}
"#,
        );
        assert_eq!(s.fallback, Fallback::Echo);
        assert_eq!(s.rules.len(), 3);
        assert_eq!(
            s.rules[2].headers["anthropic-ratelimit-unified-status"],
            "rejected"
        );
        let fields = &s.rules[2].error.as_ref().expect("an error").fields;
        assert_eq!(fields["resets_at"], json!(1_796_529_488));
        assert_eq!(
            s.rules[0].reply[1],
            ReplyBlock::ToolUse(ToolUseSpec {
                name: "Write".into(),
                input: json!({"file_path": "/tmp/x"})
            })
        );
        let j = serde_json::to_string(&s).expect("serialises");
        assert_eq!(Script::from_json(&j).expect("round trip"), s);
        assert!(
            Script::from_yaml("rules: [{mach: {}}]").is_err(),
            "typos are rejected"
        );
        assert!(Script::from_yaml("rules: [{reply: [{text: a, tool_use: {name: X}}]}]").is_err());
        assert!(Script::from_yaml("rules: [{reply: [{}]}]").is_err());
    }
}

//! How an agent without its own plan and question tools hands work to the human: the
//! planning turn's final reply is the plan, and a reply holding a `<mainloop-questions>`
//! block asks clarifying questions. Reading such a reply is a pure function here; the
//! words that teach the convention are in `prompts`.

use mainloop_agent::{AgentOption, AgentQuestion};
use mainloop_domain::agents::{Capabilities, PlanMode, QuestionMode};
use serde_json::Value;

/// The tag around a questions block.
pub const QUESTIONS_TAG: &str = "mainloop-questions";

/// At most this many questions, and options per question, are taken from one block.
const MAX_QUESTIONS: usize = 8;
const MAX_OPTIONS: usize = 12;
/// Longest question text or header kept, in characters.
const MAX_TEXT_CHARS: usize = 2_000;
const MAX_HEADER_CHARS: usize = 40;

/// How an agent plans and asks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lifecycle {
    /// With its own tools (Claude Code's ExitPlanMode and AskUserQuestion), answered
    /// through control requests while the process waits.
    #[default]
    Native,
    /// By the end of a turn: the planning turn's reply is the plan, a questions block
    /// asks; the process ends with the turn and the next input resumes the session.
    ByTurn,
}

impl Lifecycle {
    /// The lifecycle an agent with `caps` follows.
    #[must_use]
    pub const fn of(caps: Capabilities) -> Self {
        match (caps.plan_mode, caps.questions) {
            (PlanMode::Native, QuestionMode::Native) => Self::Native,
            _ => Self::ByTurn,
        }
    }
}

/// What a turn's final reply says, read by the convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A well-formed questions block with at least one question.
    Questions(Vec<AgentQuestion>),
    /// A questions block that could not be read; `error` says why. The rest of the
    /// reply is kept as `text`.
    BadQuestions { text: String, error: String },
    /// No questions block: the reply as written (trimmed).
    Text(String),
}

/// Reads a turn's final reply.
#[must_use]
pub fn read(reply: &str) -> Reply {
    let open = format!("<{QUESTIONS_TAG}>");
    let close = format!("</{QUESTIONS_TAG}>");
    let Some(start) = reply.rfind(&open) else {
        return Reply::Text(reply.trim().to_owned());
    };
    let body_start = start + open.len();
    let (body, end) = match reply[body_start..].find(&close) {
        Some(len) => (
            &reply[body_start..body_start + len],
            body_start + len + close.len(),
        ),
        None => (&reply[body_start..], reply.len()),
    };
    let rest = format!("{}{}", &reply[..start], &reply[end..]);
    match questions(body) {
        Ok(qs) => Reply::Questions(qs),
        Err(error) => Reply::BadQuestions {
            text: rest.trim().to_owned(),
            error,
        },
    }
}

/// The questions of a block's JSON: `{"questions": [...]}` or the array itself.
fn questions(body: &str) -> Result<Vec<AgentQuestion>, String> {
    let body = body
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("the questions block is not JSON: {e}"))?;
    let list = match &value {
        Value::Array(items) => items,
        Value::Object(map) => match map.get("questions") {
            Some(Value::Array(items)) => items,
            _ => return Err("the questions block has no \"questions\" list".to_owned()),
        },
        _ => return Err("the questions block is neither a list nor an object".to_owned()),
    };
    let qs: Vec<AgentQuestion> = list
        .iter()
        .take(MAX_QUESTIONS)
        .filter_map(question)
        .collect();
    if qs.is_empty() {
        return Err("the questions block holds no question with text".to_owned());
    }
    Ok(qs)
}

fn question(v: &Value) -> Option<AgentQuestion> {
    let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::trim);
    let question = text("question").filter(|q| !q.is_empty())?;
    let question: String = question.chars().take(MAX_TEXT_CHARS).collect();
    let header = text("header")
        .filter(|h| !h.is_empty())
        .unwrap_or(&question)
        .chars()
        .take(MAX_HEADER_CHARS)
        .collect();
    let mut options = AgentOption::list_from(v);
    options.retain(|o| !o.label.trim().is_empty());
    options.truncate(MAX_OPTIONS);
    let multi_select = v
        .get("multiSelect")
        .or_else(|| v.get("multi_select"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some(AgentQuestion {
        question,
        header,
        options,
        multi_select,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_reply_without_a_block_is_its_text() {
        assert_eq!(
            read("  # Plan\n1. Do it\n"),
            Reply::Text("# Plan\n1. Do it".into())
        );
    }

    #[test]
    fn a_block_asks_its_questions_with_options_and_defaults() {
        let reply = "I need to know one thing.\n<mainloop-questions>\n```json\n\
            {\"questions\":[{\"question\":\"Which greeting?\",\"header\":\"Greeting\",\
            \"options\":[{\"label\":\"Hello\",\"description\":\"plain\"},{\"label\":\" \"}],\
            \"multiSelect\":true},{\"question\":\"Anything else?\"},{\"header\":\"no text\"}]}\n\
            ```\n</mainloop-questions>";
        let Reply::Questions(qs) = read(reply) else {
            panic!("{:?}", read(reply))
        };
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].header, "Greeting");
        assert!(qs[0].multi_select);
        assert_eq!(qs[0].options.len(), 1, "a blank label is dropped");
        assert_eq!(qs[0].options[0].label, "Hello");
        assert_eq!(qs[1].header, "Anything else?");
        assert!(qs[1].options.is_empty());
        let bare = "<mainloop-questions>[{\"question\":\"Which?\"}]";
        assert!(matches!(read(bare), Reply::Questions(q) if q.len() == 1));
    }

    #[test]
    fn an_unreadable_block_says_why_and_keeps_the_rest() {
        let Reply::BadQuestions { text, error } =
            read("Plan A.\n<mainloop-questions>{not json</mainloop-questions>\nThanks")
        else {
            panic!()
        };
        assert_eq!(text, "Plan A.\n\nThanks");
        assert!(error.contains("not JSON"), "{error}");
        assert!(matches!(
            read("<mainloop-questions>{\"questions\":[]}</mainloop-questions>"),
            Reply::BadQuestions { .. }
        ));
    }

    #[test]
    fn claude_code_is_native_and_the_others_go_by_turn() {
        use mainloop_domain::agents::Protocol;
        assert_eq!(
            Lifecycle::of(Protocol::ClaudeCode.capabilities()),
            Lifecycle::Native
        );
        assert_eq!(
            Lifecycle::of(Protocol::CodexAppServer.capabilities()),
            Lifecycle::ByTurn
        );
        assert_eq!(
            Lifecycle::of(Protocol::Acp.capabilities()),
            Lifecycle::ByTurn
        );
    }

    proptest! {
        #[test]
        fn any_reply_reads_without_panicking(s in ".{0,400}", json in "[\\[\\]{}\",:a-z0-9 ]{0,200}") {
            let _ = read(&s);
            let _ = read(&format!("{s}<mainloop-questions>{json}</mainloop-questions>{s}"));
            let _ = read(&format!("<mainloop-questions>{s}"));
        }

        #[test]
        fn every_question_read_has_text_and_bounded_parts(
            texts in proptest::collection::vec(".{0,3000}", 0..20),
        ) {
            let list: Vec<Value> = texts
                .iter()
                .map(|t| serde_json::json!({"question": t, "options": [{"label": t}]}))
                .collect();
            let reply = format!(
                "<mainloop-questions>{}</mainloop-questions>",
                serde_json::json!({"questions": list})
            );
            if let Reply::Questions(qs) = read(&reply) {
                prop_assert!(qs.len() <= MAX_QUESTIONS);
                for q in qs {
                    prop_assert!(!q.question.trim().is_empty());
                    prop_assert!(q.question.chars().count() <= MAX_TEXT_CHARS);
                    prop_assert!(q.header.chars().count() <= MAX_HEADER_CHARS);
                }
            }
        }
    }
}

#![allow(clippy::unwrap_used, clippy::panic)]

use agent_client_protocol::v1::schema::{PromptResponse, RequestPermissionRequest};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn update(v: Value) -> SessionUpdate {
    serde_json::from_value(v).unwrap()
}

fn text_chunk(text: &str) -> SessionUpdate {
    update(
        json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}}),
    )
}

fn transcript() -> Transcript {
    let mut t = Transcript::new(Path::new("/w"));
    t.begin_turn();
    t
}

#[test]
fn chunks_coalesce_into_one_text_per_message() {
    let mut t = transcript();
    assert!(t.update(&text_chunk("Hello ")).is_empty());
    assert!(t.update(&text_chunk("world")).is_empty());
    let events = t.update(&update(
        json!({"sessionUpdate": "tool_call", "toolCallId": "c1",
        "title": "bash", "kind": "execute", "status": "pending", "rawInput": {}}),
    ));
    assert_eq!(
        events,
        [AgentEvent::Text {
            text: "Hello world".into()
        }],
        "a pending call with no input is not announced yet"
    );
    t.update(&text_chunk("Done."));
    let end = t.end_turn(TurnEnd::Done, "ses_1", (10, 2));
    assert_eq!(
        end[0],
        AgentEvent::Text {
            text: "Done.".into()
        }
    );
    let AgentEvent::Finished {
        result,
        session_id,
        input_tokens,
        ..
    } = &end[1]
    else {
        panic!("{end:?}")
    };
    assert_eq!(result.as_deref(), Some("Done."));
    assert_eq!(session_id.as_deref(), Some("ses_1"));
    assert_eq!(*input_tokens, 10);
}

#[test]
fn opencode_tool_flow_becomes_call_and_result() {
    let mut t = transcript();
    let pending = t.update(&update(
        json!({"sessionUpdate": "tool_call", "toolCallId": "c1",
        "title": "bash", "kind": "execute", "status": "pending", "rawInput": {}}),
    ));
    assert!(pending.is_empty());
    let running = t.update(&update(
        json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1",
        "status": "in_progress", "rawInput": {"command": "npm test", "description": "Run tests"}}),
    ));
    assert_eq!(
        running,
        [AgentEvent::ToolCall {
            id: "c1".into(),
            name: "Bash".into(),
            summary: "Bash: npm test".into()
        }]
    );
    let done = t.update(&update(
        json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1",
        "status": "completed", "rawOutput": {"output": "ok\n", "metadata": {}}}),
    ));
    assert_eq!(
        done,
        [AgentEvent::ToolResult {
            tool_use_id: "c1".into(),
            summary: "ok\n".into(),
            is_error: false
        }]
    );
    let again = t.update(&update(
        json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1",
        "status": "completed"}),
    ));
    assert!(again.is_empty(), "a result is reported once");
}

#[test]
fn a_call_is_announced_once_its_input_is_known() {
    // OpenCode's order: pending and in_progress without the command, then the
    // permission request carrying it.
    let mut t = transcript();
    let quiet = [
        json!({"sessionUpdate": "tool_call", "toolCallId": "c3", "title": "bash",
               "kind": "execute", "status": "pending", "rawInput": {}}),
        json!({"sessionUpdate": "tool_call_update", "toolCallId": "c3", "status": "in_progress",
               "rawInput": {}}),
    ];
    for u in quiet {
        assert!(t.update(&update(u)).is_empty());
    }
    let req: RequestPermissionRequest = serde_json::from_value(json!({"sessionId": "s",
        "toolCall": {"toolCallId": "c3", "rawInput": {"command": "cargo test"}},
        "options": []}))
    .unwrap();
    let (tool, events) = t.permission("c3", &req.tool_call.fields);
    assert_eq!(tool.input, json!({"command": "cargo test"}));
    assert_eq!(
        events,
        [AgentEvent::ToolCall {
            id: "c3".into(),
            name: "Bash".into(),
            summary: "Bash: cargo test".into()
        }]
    );
}

#[test]
fn permission_is_normalised_and_announced_once() {
    let mut t = transcript();
    let req: RequestPermissionRequest = serde_json::from_value(json!({"sessionId": "s",
        "toolCall": {"toolCallId": "c2", "title": "write", "kind": "edit",
                     "locations": [{"path": "/w/a.md"}], "rawInput": {"filePath": "/w/a.md", "content": "x"}},
        "options": [{"optionId": "once", "name": "Allow once", "kind": "allow_once"},
                    {"optionId": "always", "name": "Always", "kind": "allow_always"},
                    {"optionId": "reject", "name": "Reject", "kind": "reject_once"}]}))
    .unwrap();
    let (tool, events) = t.permission("c2", &req.tool_call.fields);
    assert_eq!(tool.name, "Write");
    assert_eq!(tool.input, json!({"file_path": "/w/a.md"}));
    assert_eq!(
        events,
        [AgentEvent::ToolCall {
            id: "c2".into(),
            name: "Write".into(),
            summary: "Write /w/a.md".into()
        }]
    );
    let allow = permission_outcome(&req.options, true);
    let deny = permission_outcome(&req.options, false);
    assert_eq!(
        serde_json::to_value(allow).unwrap(),
        json!({"outcome": "selected", "optionId": "once"})
    );
    assert_eq!(
        serde_json::to_value(deny).unwrap(),
        json!({"outcome": "selected", "optionId": "reject"})
    );
    assert_eq!(
        serde_json::to_value(permission_outcome(&req.options[..2], false)).unwrap(),
        json!({"outcome": "cancelled"})
    );
}

#[test]
fn tool_names_follow_the_policy_vocabulary() {
    let cwd = Path::new("/w");
    let n = |kind, title, name, input: Value, diffs: &[(PathBuf, bool)]| {
        normalise_tool(kind, title, name, Some(&input), &[], diffs, cwd)
    };
    let edit = n(
        ToolKind::Edit,
        "edit",
        None,
        json!({"filePath": "src/a.rs", "oldString": "a", "newString": "b"}),
        &[],
    );
    assert_eq!(edit.name, "Edit");
    assert_eq!(edit.input, json!({"file_path": "/w/src/a.rs"}));
    let gemini_write = n(
        ToolKind::Edit,
        "Writing to b.md",
        None,
        json!({"file_path": "/w/b.md", "content": "x"}),
        &[
            (PathBuf::from("/w/b.md"), false),
            (PathBuf::from("/w/c.md"), false),
        ],
    );
    assert_eq!(gemini_write.name, "Write");
    assert_eq!(
        gemini_write.input,
        json!({"file_path": "/w/b.md", "files": ["/w/c.md"]})
    );
    assert_eq!(
        n(
            ToolKind::Edit,
            "x",
            Some("edit"),
            json!({"content": "y"}),
            &[]
        )
        .name,
        "Edit"
    );
    let read = n(
        ToolKind::Read,
        "read",
        None,
        json!({"filePath": "/w/r.txt"}),
        &[],
    );
    assert_eq!(
        (read.name.as_str(), read.input),
        ("Read", json!({"file_path": "/w/r.txt"}))
    );
    let shell = n(ToolKind::Execute, "ls -la", None, json!({}), &[]);
    assert_eq!(shell.input, json!({"command": "ls -la"}));
    let other = n(
        ToolKind::Search,
        " grep ",
        None,
        json!({"pattern": "x"}),
        &[],
    );
    assert_eq!(
        (other.name.as_str(), other.input),
        ("grep", json!({"pattern": "x"}))
    );
    let delete = n(ToolKind::Delete, "rm", None, json!({"path": "/w/z"}), &[]);
    assert_eq!(delete.name, "Edit", "deleting is changing a file");
}

#[test]
fn a_loaded_sessions_replay_is_not_transcript() {
    let mut t = Transcript::new(Path::new("/w"));
    assert!(t.update(&text_chunk("old reply")).is_empty());
    assert!(t
        .update(&update(json!({"sessionUpdate": "tool_call", "toolCallId": "old",
            "title": "bash", "kind": "execute", "status": "completed", "rawInput": {"command": "ls"}})))
        .is_empty());
    assert!(t.flush().is_empty());
    t.update(&update(
        json!({"sessionUpdate": "usage_update", "used": 5, "size": 100,
        "cost": {"amount": 0.25, "currency": "USD"}}),
    ));
    let end = t.end_turn(TurnEnd::Done, "s", (0, 0));
    let [
        AgentEvent::Finished {
            cost_usd, result, ..
        },
    ] = end.as_slice()
    else {
        panic!("{end:?}")
    };
    assert!((cost_usd - 0.25).abs() < f64::EPSILON);
    assert_eq!(*result, None);
}

#[test]
fn stop_reasons_and_errors_end_turns() {
    let r: PromptResponse = serde_json::from_value(json!({"stopReason": "end_turn"})).unwrap();
    assert_eq!(turn_end(r.stop_reason), TurnEnd::Done);
    let r: PromptResponse = serde_json::from_value(json!({"stopReason": "cancelled"})).unwrap();
    assert!(matches!(turn_end(r.stop_reason), TurnEnd::Failed { .. }));
    assert!(matches!(
        failed_turn("API error 429 Too Many Requests"),
        TurnEnd::Failed {
            failure: AgentFailure::ModelUnavailable { .. }
        }
    ));
    for spent in [
        "[API Error: 429 RESOURCE_EXHAUSTED: You exceeded your current quota]",
        "Quota exceeded for quota metric 'Generate Content API requests per day'",
        "You have reached your usage limit.",
    ] {
        assert!(
            matches!(
                failed_turn(spent),
                TurnEnd::Failed {
                    failure: AgentFailure::UsageLimit {
                        resets_at: None,
                        ..
                    }
                }
            ),
            "{spent}"
        );
    }
    assert!(matches!(
        failed_turn("Invalid API key"),
        TurnEnd::Failed {
            failure: AgentFailure::Other { .. }
        }
    ));
}

proptest! {
    /// Whatever updates arrive, a tool call is announced at most once, before its
    /// result, and every result follows its call.
    #[test]
    fn arbitrary_update_sequences_stay_consistent(
        steps in proptest::collection::vec((0u8..3, 0u8..6, any::<bool>()), 0..30)
    ) {
        let mut t = transcript();
        let mut events = Vec::new();
        for (id, what, with_input) in steps {
            let id = format!("c{id}");
            let input = if with_input { json!({"command": "x"}) } else { json!({}) };
            let u = match what {
                0 => text_chunk("t"),
                1 => update(json!({"sessionUpdate": "tool_call", "toolCallId": id, "title": "bash",
                    "kind": "execute", "status": "pending", "rawInput": input})),
                2 => update(json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": "in_progress"})),
                3 => update(json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": "completed"})),
                4 => update(json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": "failed"})),
                _ => update(json!({"sessionUpdate": "agent_thought_chunk", "content": {"type": "text", "text": "hm"}})),
            };
            events.extend(t.update(&u));
        }
        events.extend(t.end_turn(TurnEnd::Done, "s", (0, 0)));
        let mut called = std::collections::HashSet::new();
        let mut resulted = std::collections::HashSet::new();
        for e in &events {
            match e {
                AgentEvent::ToolCall { id, .. } => prop_assert!(called.insert(id.clone())),
                AgentEvent::ToolResult { tool_use_id, .. } => {
                    prop_assert!(called.contains(tool_use_id));
                    prop_assert!(resulted.insert(tool_use_id.clone()));
                }
                AgentEvent::Text { text } => prop_assert!(!text.is_empty()),
                _ => {}
            }
        }
        let finished = matches!(events.last(), Some(AgentEvent::Finished { .. }));
        prop_assert!(finished, "no Finished at the end");
    }
}

//! The conversation against lines recorded from `codex app-server` 0.171.0, and
//! against hostile ones.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use std::path::Path;

mod limits;

fn opening(session: SessionRef, mode: AgentMode) -> Opening {
    Opening {
        cwd: PathBuf::from("/w"),
        session,
        mode,
        model: Some("gpt-5.5".into()),
        instructions: None,
    }
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// A conversation whose thread `t1` is open and whose turn `turn1` runs.
fn running() -> Conversation {
    let mut c = Conversation::new(opening(SessionRef::New("u".into()), AgentMode::Implement));
    c.start();
    c.on_line(r#"{"id":1,"result":{"userAgent":"mainloop/0.171.0","codexHome":"/h","platformFamily":"unix","platformOs":"linux"}}"#);
    let opened = c.on_line(r#"{"id":2,"result":{"thread":{"id":"t1","path":"/h/sessions/r.jsonl"},"model":"gpt-5.5"}}"#);
    assert_eq!(
        opened.events,
        [AgentEvent::SessionStarted {
            session_id: "t1".into(),
            model: "gpt-5.5".into()
        }]
    );
    let sent = c.user_message("hello");
    assert_eq!(
        parse(&sent.lines[0]),
        json!({"jsonrpc":"2.0","id":3,"method":"turn/start","params":{"threadId":"t1",
               "input":[{"type":"text","text":"hello","text_elements":[]}]}})
    );
    let started = c.on_line(r#"{"id":3,"result":{"turn":{"id":"turn1","status":"inProgress","items":[],"error":null}}}"#);
    assert_eq!(started, Effects::default());
    c
}

#[test]
fn the_handshake_opens_a_thread_in_the_mode_asked_for() {
    let mut c = Conversation::new(opening(SessionRef::New("u".into()), AgentMode::Implement));
    let init = c.start();
    assert_eq!(
        parse(&init.lines[0])["method"],
        "initialize",
        "{:?}",
        init.lines
    );
    assert_eq!(parse(&init.lines[0])["id"], 1);
    // A message before the thread exists waits for it.
    assert!(c.user_message("early").lines.is_empty());
    let open = c.on_line(r#"{"id":1,"result":{"userAgent":"x/0.171.0 (Linux; x86_64)","codexHome":"/h","platformFamily":"unix","platformOs":"linux"}}"#);
    assert_eq!(
        parse(&open.lines[0]),
        json!({"jsonrpc":"2.0","method":"initialized"})
    );
    assert_eq!(
        parse(&open.lines[1]),
        json!({"jsonrpc":"2.0","id":2,"method":"thread/start","params":{"cwd":"/w",
               "approvalPolicy":"untrusted","sandbox":"workspace-write","model":"gpt-5.5"}})
    );
    let opened = c.on_line(r#"{"id":2,"result":{"thread":{"id":"01a2494c-aaaa","path":"/h/sessions/rollout.jsonl"},"model":"gpt-5.5","approvalPolicy":"untrusted"}}"#);
    assert!(
        matches!(&opened.events[..], [AgentEvent::SessionStarted { session_id, .. }] if session_id == "01a2494c-aaaa")
    );
    assert_eq!(
        parse(&opened.lines[0])["params"]["input"][0]["text"],
        "early"
    );
    // The thread/started notification repeats what the answer said.
    assert_eq!(
        c.on_line(r#"{"method":"thread/started","params":{"thread":{"id":"01a2494c-aaaa"}}}"#),
        Effects::default()
    );

    let mut plan = Conversation::new(opening(SessionRef::Resume("t9".into()), AgentMode::Plan));
    plan.start();
    let open = plan.on_line(r#"{"id":1,"result":{}}"#);
    assert_eq!(
        parse(&open.lines[1]),
        json!({"jsonrpc":"2.0","id":2,"method":"thread/resume","params":{"cwd":"/w","threadId":"t9",
               "approvalPolicy":"never","sandbox":"read-only","model":"gpt-5.5"}})
    );
    // A thread that was never saved cannot be resumed: the session ends.
    let missing = plan.on_line(
        r#"{"id":2,"error":{"code":-32600,"message":"no rollout found for thread id t9"}}"#,
    );
    assert!(missing.close_input);
    assert!(matches!(
        &missing.events[..],
        [AgentEvent::Finished {
            end: TurnEnd::Failed {
                failure: AgentFailure::SessionMissing
            },
            ..
        }]
    ));
}

#[test]
fn a_text_turn_streams_its_message_and_finishes_with_its_usage() {
    let mut c = running();
    for quiet in [
        r#"{"method":"thread/status/changed","params":{"threadId":"t1","status":{"type":"active"}}}"#,
        r#"{"method":"turn/started","params":{"threadId":"t1","turn":{"id":"turn1","status":"inProgress"}}}"#,
        r#"{"method":"item/started","params":{"item":{"type":"userMessage","id":"u1","content":[]}}}"#,
        r#"{"method":"item/completed","params":{"item":{"type":"userMessage","id":"u1","content":[]}}}"#,
        r#"{"method":"item/started","params":{"item":{"type":"agentMessage","id":"msg_1","text":""}}}"#,
        r#"{"method":"item/agentMessage/delta","params":{"threadId":"t1","turnId":"turn1","itemId":"msg_1","delta":"Hello "}}"#,
    ] {
        assert_eq!(c.on_line(quiet), Effects::default(), "{quiet}");
    }
    assert_eq!(
        c.on_line(r#"{"method":"item/completed","params":{"item":{"type":"agentMessage","id":"msg_1","text":"Hello there"}}}"#).events,
        [AgentEvent::Text { text: "Hello there".into() }]
    );
    let usage = r#"{"method":"thread/tokenUsage/updated","params":{"threadId":"t1","turnId":"turn1","tokenUsage":{"total":{"totalTokens":120,"inputTokens":100,"cachedInputTokens":0,"cacheWriteInputTokens":0,"outputTokens":20,"reasoningOutputTokens":0},"last":{"totalTokens":120,"inputTokens":100,"cachedInputTokens":0,"cacheWriteInputTokens":0,"outputTokens":20,"reasoningOutputTokens":0},"modelContextWindow":258400}}}"#;
    assert_eq!(c.on_line(usage), Effects::default());
    assert_eq!(c.on_line(usage), Effects::default());
    c.on_line(r#"{"method":"account/rateLimits/updated","params":{}}"#);
    let done = c.on_line(r#"{"method":"turn/completed","params":{"threadId":"t1","turn":{"id":"turn1","status":"completed","items":[],"error":null,"durationMs":153}}}"#);
    assert_eq!(
        done.events,
        [AgentEvent::Finished {
            end: TurnEnd::Done,
            result: Some("Hello there".into()),
            session_id: Some("t1".into()),
            cost_usd: 0.0,
            input_tokens: 200,
            output_tokens: 40
        }]
    );
    // The next message starts the next turn at once.
    let next = c.user_message("again");
    assert_eq!(parse(&next.lines[0])["method"], "turn/start");
}

#[test]
fn commands_and_patches_ask_the_policy_in_its_own_words() {
    let mut c = running();
    let started = c.on_line(r#"{"method":"item/started","params":{"item":{"type":"commandExecution","id":"call_1","command":"/bin/bash -lc 'touch made-by-shell.txt && echo hi'","cwd":"/w","status":"inProgress","commandActions":[]}}}"#);
    assert_eq!(
        started.events,
        [AgentEvent::ToolCall {
            id: "call_1".into(),
            name: "Bash".into(),
            summary: "Bash: touch made-by-shell.txt && echo hi".into()
        }]
    );
    let ask = c.on_line(r#"{"method":"item/commandExecution/requestApproval","id":0,"params":{"kind":"command","threadId":"t1","turnId":"turn1","itemId":"call_1","command":"/bin/bash -lc 'touch made-by-shell.txt && echo hi'","cwd":"/w","commandActions":[],"proposedExecpolicyAmendment":["touch","made-by-shell.txt"],"availableDecisions":["accept",{"acceptWithExecpolicyAmendment":{}},"cancel"]}}"#);
    assert_eq!(
        ask.events,
        [AgentEvent::Permission {
            request_id: "0".into(),
            tool: "Bash".into(),
            input: json!({"command": "touch made-by-shell.txt && echo hi"})
        }]
    );
    let allow = ControlReply::Allow {
        updated_input: json!({}),
    };
    assert_eq!(
        parse(&c.reply("0", &allow).unwrap().lines[0]),
        json!({"jsonrpc":"2.0","id":0,"result":{"decision":"accept"}})
    );
    assert!(c.reply("0", &allow).is_err(), "answered once only");
    let ran = c.on_line(r#"{"method":"item/completed","params":{"item":{"type":"commandExecution","id":"call_1","command":"x","cwd":"/w","status":"failed","aggregatedOutput":"hi\n","exitCode":2,"durationMs":5}}}"#);
    assert_eq!(
        ran.events,
        [AgentEvent::ToolResult {
            tool_use_id: "call_1".into(),
            summary: "hi\n".into(),
            is_error: true
        }]
    );

    let patch = c.on_line(r#"{"method":"item/started","params":{"item":{"type":"fileChange","id":"call_2","status":"inProgress","changes":[{"path":"/w/hello.txt","kind":{"type":"add"},"diff":"hello from patch\n"},{"path":"/w/src/a.rs","kind":{"type":"update","move_path":null},"diff":"@@"}]}}}"#);
    assert_eq!(
        patch.events,
        [
            AgentEvent::ToolCall {
                id: "call_2".into(),
                name: "Write".into(),
                summary: "Write hello.txt".into()
            },
            AgentEvent::ToolCall {
                id: "call_2/1".into(),
                name: "Edit".into(),
                summary: "Edit src/a.rs".into()
            }
        ]
    );
    let ask = c.on_line(r#"{"method":"item/fileChange/requestApproval","id":1,"params":{"threadId":"t1","turnId":"turn1","itemId":"call_2","reason":null,"grantRoot":null}}"#);
    assert_eq!(
        ask.events,
        [AgentEvent::Permission {
            request_id: "1".into(),
            tool: "Write".into(),
            input: json!({"file_path": "/w/hello.txt", "files": ["/w/hello.txt", "/w/src/a.rs"]})
        }]
    );
    let deny = |interrupt| ControlReply::Deny {
        message: "no".into(),
        interrupt,
    };
    assert_eq!(
        parse(&c.reply("1", &deny(false)).unwrap().lines[0])["result"],
        json!({"decision": "decline"})
    );
    let applied = c.on_line(r#"{"method":"item/completed","params":{"item":{"type":"fileChange","id":"call_2","status":"declined","changes":[{"path":"/w/hello.txt","kind":{"type":"add"},"diff":""},{"path":"/w/src/a.rs","kind":{"type":"update"},"diff":""}]}}}"#);
    assert_eq!(
        applied.events,
        [
            AgentEvent::ToolResult {
                tool_use_id: "call_2".into(),
                summary: "declined: hello.txt".into(),
                is_error: true
            },
            AgentEvent::ToolResult {
                tool_use_id: "call_2/1".into(),
                summary: "declined: src/a.rs".into(),
                is_error: true
            }
        ]
    );

    // A patch that leaves the worktree names the escaping file for the policy to check.
    c.on_line(r#"{"method":"item/started","params":{"item":{"type":"fileChange","id":"call_3","changes":[{"path":"/w/ok.txt","kind":{"type":"add"}},{"path":"/w/../etc/passwd","kind":{"type":"update"}}]}}}"#);
    let ask = c.on_line(
        r#"{"method":"item/fileChange/requestApproval","id":2,"params":{"itemId":"call_3"}}"#,
    );
    let [AgentEvent::Permission { input, .. }] = &ask.events[..] else {
        panic!("{ask:?}")
    };
    assert_eq!(input["file_path"], "/etc/passwd");
    assert_eq!(
        parse(&c.reply("2", &deny(true)).unwrap().lines[0])["result"],
        json!({"decision": "cancel"})
    );
    // A patch approval for an item never seen names no file: the policy refuses it.
    let ask = c.on_line(
        r#"{"method":"item/fileChange/requestApproval","id":3,"params":{"itemId":"nope"}}"#,
    );
    let [AgentEvent::Permission { input, .. }] = &ask.events[..] else {
        panic!("{ask:?}")
    };
    assert!(input.get("file_path").is_none());

    // The legacy pair answers in its own words.
    let legacy = c.on_line(r#"{"method":"execCommandApproval","id":4,"params":{"conversationId":"t1","callId":"c","command":["bash","-lc","ls -la"],"cwd":"/w"}}"#);
    assert_eq!(
        legacy.events,
        [AgentEvent::Permission {
            request_id: "4".into(),
            tool: "Bash".into(),
            input: json!({"command": "ls -la"})
        }]
    );
    assert_eq!(
        parse(&c.reply("4", &allow).unwrap().lines[0])["result"],
        json!({"decision": "approved"})
    );
}

#[test]
fn codex_questions_become_the_ports_questions() {
    let mut c = running();
    let ask = c.on_line(r#"{"method":"item/tool/requestUserInput","id":5,"params":{"threadId":"t1","turnId":"turn1","itemId":"i1","isBlocking":true,"questions":[{"id":"lang","header":"Language","question":"Which language?","options":[{"label":"Rust","description":"fast"}]},{"id":"name","header":"Name","question":"Whose name?","options":null}]}}"#);
    let [
        AgentEvent::Question {
            request_id,
            questions,
            input,
        },
    ] = &ask.events[..]
    else {
        panic!("{ask:?}")
    };
    assert_eq!(request_id, "5");
    assert_eq!(questions[0].options[0].label, "Rust");
    assert!(questions[1].options.is_empty());
    let given = std::collections::BTreeMap::from([
        ("Which language?".to_owned(), "Rust".to_owned()),
        ("Whose name?".to_owned(), "Ada".to_owned()),
    ]);
    let reply = c.reply("5", &ControlReply::answers(input, &given)).unwrap();
    assert_eq!(
        parse(&reply.lines[0]),
        json!({"jsonrpc":"2.0","id":5,"result":{"answers":{
            "lang":{"answers":["Rust"]},"name":{"answers":["Ada"]}}}})
    );
}

#[test]
fn failures_say_whether_they_pass() {
    let mut c = running();
    c.on_line(r#"{"method":"error","params":{"error":{"message":"retrying"},"willRetry":true}}"#);
    assert!(
        c.on_line(r#"{"method":"error","params":{"error":{"message":"exceeded retry limit, last status: 429 Too Many Requests","codexErrorInfo":{"responseTooManyFailedAttempts":{"httpStatusCode":429}}},"willRetry":false}}"#)
            .events
            .is_empty()
    );
    let failed = c.on_line(r#"{"method":"turn/completed","params":{"threadId":"t1","turn":{"id":"turn1","status":"failed","items":[],"error":null}}}"#);
    assert!(matches!(
        &failed.events[..],
        [AgentEvent::Finished { end: TurnEnd::Failed { failure: AgentFailure::ModelUnavailable { reason } }, result: Some(r), .. }]
            if reason.contains("429") && r == reason
    ));

    for (info, passes) in [
        (
            json!({"httpConnectionFailed": {"httpStatusCode": 503}}),
            true,
        ),
        (
            json!({"httpConnectionFailed": {"httpStatusCode": 401}}),
            false,
        ),
        (json!("serverOverloaded"), true),
        (json!("rateLimitExceeded"), true),
        (json!("contextWindowExceeded"), false),
        (json!("unauthorized"), false),
        (json!(null), false),
    ] {
        let failure = failure_of(Some(&json!({"message": "m", "codexErrorInfo": info})), None);
        assert_eq!(
            matches!(failure, AgentFailure::ModelUnavailable { .. }),
            passes,
            "{info}"
        );
    }

    // An interrupted turn, asked for by the host.
    let mut c = running();
    let interrupt = c.interrupt();
    assert_eq!(
        parse(&interrupt.lines[0]),
        json!({"jsonrpc":"2.0","id":4,"method":"turn/interrupt","params":{"threadId":"t1","turnId":"turn1"}})
    );
    assert_eq!(c.on_line(r#"{"id":4,"result":{}}"#), Effects::default());
    let ended = c.on_line(
        r#"{"method":"turn/completed","params":{"turn":{"id":"turn1","status":"interrupted"}}}"#,
    );
    assert!(matches!(
        &ended.events[..],
        [AgentEvent::Finished {
            end: TurnEnd::Failed {
                failure: AgentFailure::Other { .. }
            },
            ..
        }]
    ));
}

#[test]
fn hostile_lines_are_refused_and_unknown_requests_answered() {
    let mut c = running();
    for bad in [
        "notjson",
        "[1,2]",
        "{}",
        r#"{"method":"thread/teleported","params":{}}"#,
        r#"{"id":99,"result":{}}"#,
        r#"{"method":"item/started","params":{}}"#,
        r#"{"method":"turn/completed","params":{}}"#,
    ] {
        let effects = c.on_line(bad);
        assert!(
            matches!(&effects.events[..], [AgentEvent::Malformed { line, .. }] if line == bad),
            "{bad}: {effects:?}"
        );
        assert!(effects.lines.is_empty(), "{bad}");
    }
    let unknown = c.on_line(r#"{"method":"item/tool/call","id":7,"params":{"tool":"x"}}"#);
    assert!(matches!(
        &unknown.events[..],
        [AgentEvent::Malformed { .. }]
    ));
    let reply = parse(&unknown.lines[0]);
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["error"]["code"], METHOD_NOT_FOUND);

    let huge = Conversation::oversized(&"x".repeat(10_000), MAX_LINE_BYTES + 1, MAX_LINE_BYTES);
    let AgentEvent::Malformed { line, error } = huge else {
        panic!()
    };
    assert!(line.len() < 2200 && error.contains("exceeds"));
}

#[test]
fn paths_and_commands_read_as_people_wrote_them() {
    assert_eq!(items::unwrap_shell("/bin/bash -lc 'npm test'"), "npm test");
    assert_eq!(items::unwrap_shell("bash -lc ls"), "ls");
    assert_eq!(
        items::unwrap_shell("/bin/bash -lc 'echo '\\''x'\\'''"),
        "/bin/bash -lc 'echo '\\''x'\\'''"
    );
    assert_eq!(items::unwrap_shell("cargo test"), "cargo test");
    assert_eq!(items::display_path(Path::new("/w"), "/w/a/b.rs"), "a/b.rs");
    assert_eq!(items::display_path(Path::new("/w"), "/x/b.rs"), "/x/b.rs");
    assert_eq!(items::display_path(Path::new("/w"), "rel.txt"), "rel.txt");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "\\PC{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("item/started"),
                Just("item/completed"),
                Just("turn/completed"),
                Just("commandExecution"),
                Just("fileChange"),
                Just("item/fileChange/requestApproval"),
                Just("item/commandExecution/requestApproval"),
                Just("thread/tokenUsage/updated"),
                Just("error"),
            ]
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("method".to_owned()),
                        Just("id".to_owned()),
                        Just("params".to_owned()),
                        Just("result".to_owned()),
                        Just("error".to_owned()),
                        Just("item".to_owned()),
                        Just("type".to_owned()),
                        Just("changes".to_owned()),
                        Just("turn".to_owned()),
                        Just("status".to_owned()),
                        "[a-z]{1,8}",
                    ],
                    inner,
                    0..6,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_lines_never_panic(line in "\\PC{0,200}") {
            let mut c = running();
            let effects = c.on_line(&line);
            let _ = c.user_message("x");
            let _ = c.interrupt();
            prop_assert!(effects.events.len() <= 1 || serde_json::from_str::<Value>(&line).is_ok());
        }

        #[test]
        fn arbitrary_json_never_panics(value in json_value()) {
            let mut c = running();
            let line = value.to_string();
            let effects = c.on_line(&line);
            // An unknown method is never silently accepted.
            if let Some(method) = value.get("method").and_then(Value::as_str) {
                let known = QUIET_NOTIFICATIONS.contains(&method)
                    || method.starts_with("item/") || method.starts_with("thread/")
                    || method.starts_with("turn/") || method == "error"
                    || method == "account/rateLimits/updated"
                    || method.ends_with("Approval");
                if !known {
                    let malformed = effects.events.iter().any(|e| matches!(e, AgentEvent::Malformed { .. }));
                    prop_assert!(malformed, "{}", line);
                }
            }
            // Whatever came, a request of Codex's is answered now or by the host.
            if value.get("method").is_some() && value.get("id").is_some_and(|i| !i.is_null()) {
                let answered = !effects.lines.is_empty()
                    || effects.events.iter().any(|e| matches!(e, AgentEvent::Permission { .. } | AgentEvent::Malformed { .. }));
                prop_assert!(answered, "{}", line);
            }
        }
    }
}

#[test]
fn a_mode_change_rides_on_the_next_turn_only() {
    let mut c = Conversation::new(opening(SessionRef::Resume("t1".into()), AgentMode::Plan));
    c.start();
    c.on_line(r#"{"id":1,"result":{"userAgent":"x","codexHome":"/h","platformFamily":"unix","platformOs":"linux"}}"#);
    c.on_line(r#"{"id":2,"result":{"thread":{"id":"t1","path":"/h/r.jsonl"},"model":"gpt-5.5"}}"#);
    c.set_mode(AgentMode::Plan);
    let sent = c.user_message("plan it");
    assert!(
        parse(&sent.lines[0])["params"]
            .get("sandboxPolicy")
            .is_none()
    );
    c.on_line(r#"{"id":3,"result":{"turn":{"id":"turn1","status":"inProgress","items":[]}}}"#);
    c.on_line(r#"{"method":"turn/completed","params":{"threadId":"t1","turn":{"id":"turn1","status":"completed","items":[]}}}"#);
    c.set_mode(AgentMode::Implement);
    let sent = c.user_message("Your plan was approved.");
    let params = &parse(&sent.lines[0])["params"];
    assert_eq!(params["approvalPolicy"], "untrusted");
    assert_eq!(params["sandboxPolicy"], json!({"type": "workspaceWrite"}));
    c.on_line(r#"{"id":4,"result":{"turn":{"id":"turn2","status":"inProgress","items":[]}}}"#);
    c.on_line(r#"{"method":"turn/completed","params":{"threadId":"t1","turn":{"id":"turn2","status":"completed","items":[]}}}"#);
    let sent = c.user_message("go on");
    assert!(
        parse(&sent.lines[0])["params"]
            .get("sandboxPolicy")
            .is_none()
    );
}

//! The Claude Code stream-json parser and writers against recorded and hostile lines.

#[test]
fn transient_api_errors_are_told_from_lasting_ones() {
    use super::is_transient_api_error as transient;
    for passing in [
        "API Error: Repeated 529 Overloaded errors. The API is at capacity — this is usually temporary.",
        "API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}",
        "API Error: 500 {\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}",
        "API Error: 503 upstream connect error",
        "API Error: 429 {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\"}}",
        "API Error: 408 request timeout",
        "API Error: Connection error.",
        "API Error: Request timed out.",
        "  API Error (Overloaded)",
    ] {
        assert!(transient(passing), "{passing}");
    }
    for lasting in [
        "API Error: 401 {\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key\"}}",
        "API Error: 400 prompt is too long: 210000 tokens > 200000 maximum",
        "API Error: 403 forbidden",
        "API Error: 404 model not found",
        "Credit balance is too low",
        "aborted",
        "the tests failed: 500 assertions, connection error in fixture",
        "",
    ] {
        assert!(!transient(lasting), "{lasting}");
    }
}

use super::*;

#[test]
fn truncation_respects_char_boundaries() {
    let s = "é".repeat(10);
    let t = truncate_bytes(&s, 5);
    assert!(t.starts_with("éé…"), "{t}");
    assert_eq!(truncate_chars("abcdef", 3), "abc…");
    assert_eq!(truncate_chars("abc", 3), "abc");
}

#[test]
fn args_follow_mode_and_session() {
    let a = claude_args(
        &SessionRef::Resume("s1".into()),
        AgentMode::Implement,
        Some("m"),
        None,
    );
    let joined = a.join(" ");
    assert!(joined.contains("--permission-mode acceptEdits --resume s1 --model m"));
    assert!(!joined.contains("--append-system-prompt"));
}

mod properties {
    use super::super::{control_response_line, parse_line, user_message_line};
    use crate::{AgentEvent, ControlReply};
    use proptest::prelude::*;
    use proptest::strategy::BoxedStrategy;
    use proptest::test_runner::TestCaseError;
    use serde_json::{Value, json};

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("type".to_owned()),
                        Just("subtype".to_owned()),
                        Just("message".to_owned()),
                        Just("content".to_owned()),
                        Just("request".to_owned()),
                        Just("input".to_owned()),
                        Just("name".to_owned()),
                        Just("id".to_owned()),
                        Just("tool_use_id".to_owned()),
                        Just("request_id".to_owned()),
                        Just("text".to_owned()),
                        "[a-z_]{1,10}",
                    ],
                    inner,
                    0..6,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Real message types with arbitrary bodies: the shapes the parser dispatches on.
    fn agent_message() -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                Just("system"),
                Just("assistant"),
                Just("user"),
                Just("result"),
                Just("control_request"),
                Just("control_response"),
                Just("stream_event"),
            ],
            json_value(),
            json_value(),
        )
            .prop_map(|(t, a, b)| {
                json!({"type": t, "subtype": "init", "message": {"content": a}, "request": b,
                       "session_id": "s", "request_id": "r"})
            })
    }

    /// A string field as the CLI might send it, or not: present, absent, mistyped.
    fn maybe(strings: impl Strategy<Value = String>) -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            6 => strings.prop_map(|s| Some(Value::String(s))),
            1 => Just(None),
            1 => json_value().prop_map(Some),
        ]
    }

    /// Ids and names with what breaks line protocols: newlines, quotes, backslashes,
    /// line separators, control characters, astral characters.
    fn awkward_string() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,40}",
            any::<String>(),
            "[\\n\\r\"\\\\\u{2028}\u{2029}\u{0}\u{1b}\u{7f}a-z😀]{0,12}",
        ]
    }

    /// One `AskUserQuestion` question, each field right, wrong or missing; `long`
    /// allows a question text of up to 100 KB.
    fn question(long: bool) -> impl Strategy<Value = Value> {
        let longest: usize = if long { 100_000 } else { 2 };
        let option = (maybe("\\PC{0,12}"), maybe("\\PC{0,12}")).prop_map(|(l, d)| {
            let mut o = serde_json::Map::new();
            o.extend(l.map(|l| ("label".to_owned(), l)));
            o.extend(d.map(|d| ("description".to_owned(), d)));
            Value::Object(o)
        });
        (
            maybe(prop_oneof![
                "\\PC{0,40}",
                (1..longest).prop_map(|n| "?".repeat(n))
            ]),
            maybe("\\PC{0,12}"),
            prop_oneof![
                3 => prop::collection::vec(option, 0..5).prop_map(|o| Some(Value::Array(o))),
                1 => Just(None),
                1 => json_value().prop_map(Some),
            ],
            prop_oneof![
                Just(None),
                any::<bool>().prop_map(|b| Some(json!(b))),
                json_value().prop_map(Some)
            ],
        )
            .prop_map(|(question, header, options, multi)| {
                let mut q = serde_json::Map::new();
                q.extend(question.map(|v| ("question".to_owned(), v)));
                q.extend(header.map(|v| ("header".to_owned(), v)));
                q.extend(options.map(|v| ("options".to_owned(), v)));
                q.extend(multi.map(|v| ("multiSelect".to_owned(), v)));
                Value::Object(q)
            })
    }

    /// The `input` of a `can_use_tool` request for `tool`: shaped like the real
    /// one for the tools we interpret, but malformed, missing or oversized at will.
    fn tool_input(tool: Option<&Value>) -> BoxedStrategy<Option<Value>> {
        let shaped = match tool.and_then(Value::as_str) {
            Some("AskUserQuestion") => prop_oneof![
                3 => prop::collection::vec(question(true), 0..6).prop_map(Value::Array),
                // Far more questions than any form shows.
                1 => (question(false), 100..2_000usize)
                    .prop_map(|(q, n)| Value::Array(vec![q; n])),
                1 => json_value(),
            ]
            .prop_map(|questions| json!({"questions": questions}))
            .boxed(),
            Some("ExitPlanMode") => {
                prop_oneof!["\\PC{0,80}".prop_map(Value::String), json_value(),]
                    .prop_map(|plan| json!({"plan": plan}))
                    .boxed()
            }
            _ => json_value().boxed(),
        };
        prop_oneof![
            5 => shaped.prop_map(Some),
            1 => Just(None),
            1 => Just(Some(Value::Null)),
            1 => json_value().prop_map(Some),
        ]
        .boxed()
    }

    /// A `control_request` line's parts: request id, subtype, tool name, input.
    type ControlRequest = (Option<Value>, Option<Value>, Option<Value>, Option<Value>);

    fn control_request() -> impl Strategy<Value = ControlRequest> {
        let subtype = maybe(prop_oneof![
            6 => Just("can_use_tool".to_owned()),
            1 => Just("hook_callback".to_owned()),
            1 => Just("mcp_message".to_owned()),
            1 => "\\PC{0,16}",
        ]);
        let tool = maybe(prop_oneof![
            Just("AskUserQuestion".to_owned()),
            Just("ExitPlanMode".to_owned()),
            Just("Bash".to_owned()),
            awkward_string(),
        ]);
        (maybe(awkward_string()), subtype, tool).prop_flat_map(|(id, subtype, tool)| {
            let input = tool_input(tool.as_ref());
            (Just(id), Just(subtype), Just(tool), input)
        })
    }

    fn line_of((id, subtype, tool, input): &ControlRequest) -> String {
        let mut request = serde_json::Map::new();
        request.extend(subtype.clone().map(|v| ("subtype".to_owned(), v)));
        request.extend(tool.clone().map(|v| ("tool_name".to_owned(), v)));
        request.extend(input.clone().map(|v| ("input".to_owned(), v)));
        let mut line = serde_json::Map::new();
        line.insert("type".to_owned(), json!("control_request"));
        line.extend(id.clone().map(|v| ("request_id".to_owned(), v)));
        line.insert("request".to_owned(), Value::Object(request));
        Value::Object(line).to_string()
    }

    fn reply() -> impl Strategy<Value = ControlReply> {
        prop_oneof![
            json_value().prop_map(|updated_input| ControlReply::Allow { updated_input }),
            (awkward_string(), any::<bool>())
                .prop_map(|(message, interrupt)| ControlReply::Deny { message, interrupt }),
        ]
    }

    /// Checks a line we write: one line of JSON, a successful control response to
    /// `request_id` carrying `reply`.
    fn assert_response(
        line: &str,
        request_id: &str,
        reply: &ControlReply,
    ) -> Result<(), TestCaseError> {
        prop_assert!(!line.contains(['\n', '\r']), "more than one line: {line:?}");
        let v: Value = serde_json::from_str(line)
            .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {line}")))?;
        prop_assert_eq!(&v["type"], "control_response");
        prop_assert_eq!(&v["response"]["subtype"], "success");
        prop_assert_eq!(v["response"]["request_id"].as_str(), Some(request_id));
        let response = &v["response"]["response"];
        match reply {
            ControlReply::Allow { updated_input } => {
                prop_assert_eq!(&response["behavior"], "allow");
                prop_assert_eq!(&response["updatedInput"], updated_input);
            }
            ControlReply::Deny { message, interrupt } => {
                prop_assert_eq!(&response["behavior"], "deny");
                prop_assert_eq!(response["message"].as_str(), Some(message.as_str()));
                prop_assert_eq!(response["interrupt"].as_bool(), Some(*interrupt));
            }
        }
        Ok(())
    }

    fn check_one_event(request: &ControlRequest) -> Result<(), TestCaseError> {
        let events = parse_line(&line_of(request));
        prop_assert_eq!(events.len(), 1, "{:?}", events);
        let (id, subtype, tool, input) = request;
        let answerable = (
            id.as_ref().and_then(Value::as_str),
            subtype.as_ref().and_then(Value::as_str) == Some("can_use_tool"),
            tool.as_ref().and_then(Value::as_str),
        );
        let sent = input.clone().unwrap_or_else(|| json!({}));
        match (answerable, &events[0]) {
            (
                (Some(id), true, Some("AskUserQuestion")),
                AgentEvent::Question {
                    request_id,
                    questions,
                    input,
                },
            ) => {
                prop_assert_eq!(request_id, id);
                prop_assert_eq!(input, &sent);
                let asked = sent["questions"].as_array().cloned().unwrap_or_default();
                prop_assert_eq!(questions.len(), asked.len());
                for (got, asked) in questions.iter().zip(&asked) {
                    let text = asked["question"].as_str().unwrap_or_default();
                    prop_assert_eq!(got.question.as_str(), text);
                    prop_assert_eq!(got.multi_select, asked["multiSelect"] == json!(true));
                    let options = asked["options"].as_array().map_or(0, Vec::len);
                    prop_assert_eq!(got.options.len(), options);
                }
            }
            (
                (Some(id), true, Some("ExitPlanMode")),
                AgentEvent::Plan {
                    request_id,
                    plan,
                    input,
                },
            ) => {
                prop_assert_eq!(request_id, id);
                prop_assert_eq!(input, &sent);
                let want = sent["plan"].as_str().unwrap_or_default();
                prop_assert_eq!(plan.as_str(), want);
            }
            (
                (Some(id), true, Some(name)),
                AgentEvent::Permission {
                    request_id,
                    tool,
                    input,
                },
            ) if name != "AskUserQuestion" && name != "ExitPlanMode" => {
                prop_assert_eq!(request_id, id);
                prop_assert_eq!(tool, name);
                prop_assert_eq!(input, &sent);
            }
            (
                (None, _, _) | (_, false, _) | (_, _, None),
                AgentEvent::Malformed { line: seen, .. },
            ) => prop_assert!(!seen.is_empty()),
            (want, got) => prop_assert!(false, "{:?} became {:?}", want, got),
        }
        Ok(())
    }

    fn check_round_trip(
        request: &ControlRequest,
        reply: &ControlReply,
    ) -> Result<(), TestCaseError> {
        let sent_id = request.0.as_ref().and_then(Value::as_str);
        for event in parse_line(&line_of(request)) {
            if let AgentEvent::Question { request_id, .. }
            | AgentEvent::Plan { request_id, .. }
            | AgentEvent::Permission { request_id, .. } = &event
            {
                prop_assert_eq!(Some(request_id.as_str()), sent_id);
                let line = control_response_line(request_id, reply);
                assert_response(&line, request_id, reply)?;
            }
        }
        Ok(())
    }

    fn check_answers(
        input: &Value,
        answers: &std::collections::BTreeMap<String, String>,
        request_id: &str,
    ) -> Result<(), TestCaseError> {
        let reply = ControlReply::answers(input, answers);
        let ControlReply::Allow { updated_input } = &reply else {
            return Err(TestCaseError::fail("answers must allow"));
        };
        let Value::Object(updated) = updated_input else {
            return Err(TestCaseError::fail(format!(
                "not an object: {updated_input}"
            )));
        };
        let want: serde_json::Map<String, Value> =
            answers.iter().map(|(q, a)| (q.clone(), json!(a))).collect();
        prop_assert_eq!(&updated["answers"], &Value::Object(want));
        let kept = input.as_object().cloned().unwrap_or_default();
        let added = usize::from(!kept.contains_key("answers"));
        prop_assert_eq!(updated.len(), kept.len() + added);
        for (k, v) in kept.iter().filter(|(k, _)| *k != "answers") {
            prop_assert_eq!(updated.get(k), Some(v));
        }
        let line = control_response_line(request_id, &reply);
        assert_response(&line, request_id, &reply)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every control request is one event: the one its tool calls for, with the
        /// request id and input exactly as sent, or, when it cannot be answered
        /// (no id, not `can_use_tool`, no tool name), `Malformed` so the caller
        /// hears of a CLI left waiting.
        #[test]
        fn control_requests_become_one_event_with_their_id(request in control_request()) {
            check_one_event(&request)?;
        }

        /// Whatever the request id, the reply line echoes it in one line of JSON.
        #[test]
        fn control_responses_are_one_json_line_echoing_the_id(
            request_id in awkward_string(),
            reply in reply(),
        ) {
            let line = control_response_line(&request_id, &reply);
            assert_response(&line, &request_id, &reply)?;
        }

        /// From the CLI's line to ours: the id read is the id written back.
        #[test]
        fn a_parsed_request_is_answered_under_its_own_id(
            request in control_request(),
            reply in reply(),
        ) {
            check_round_trip(&request, &reply)?;
        }

        /// Answers go in beside the agent's own input, whatever that input is, and
        /// come out of the reply line exactly.
        #[test]
        fn answers_keep_the_input_and_add_exactly_the_answers(
            input in json_value(),
            answers in prop::collection::btree_map(awkward_string(), awkward_string(), 0..6),
            request_id in awkward_string(),
        ) {
            check_answers(&input, &answers, &request_id)?;
        }

        /// The other lines we write are single JSON lines too.
        #[test]
        fn user_messages_are_one_json_line(text in awkward_string()) {
            let line = user_message_line(&text);
            prop_assert!(!line.contains(['\n', '\r']));
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(v["message"]["content"].as_str(), Some(text.as_str()));
        }
    }

    proptest! {
        #[test]
        fn garbage_lines_never_panic(line in "\\PC{0,300}") {
            let _ = parse_line(&line);
        }

        #[test]
        fn arbitrary_json_never_panics(v in json_value()) {
            let _ = parse_line(&v.to_string());
        }

        #[test]
        fn message_shaped_json_never_panics(v in agent_message()) {
            let _ = parse_line(&v.to_string());
        }
    }
}

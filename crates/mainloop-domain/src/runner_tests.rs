use super::*;

fn hello(extra: &str) -> String {
    format!(
        r#"{{"type":"hello","protocol":1,"version":"1.2.3","slots":2,"labels":["gpu","linux-x64"],"agents":["claude"]{extra}}}"#
    )
}

#[test]
fn a_well_formed_hello_is_read_whole() {
    let msg = parse_runner_message(&hello("")).unwrap();
    let RunnerMessage::Hello(h) = msg else {
        panic!("not a hello")
    };
    assert_eq!(h.protocol, PROTOCOL_VERSION);
    assert_eq!(h.offer.slots, 2);
    assert!(h.offer.labels.contains("gpu"));
    assert_eq!(h.offer.agents.len(), 1);
    let beat = parse_runner_message(r#"{"type":"heartbeat","busy":1}"#).unwrap();
    assert_eq!(beat, RunnerMessage::Heartbeat { busy: 1 });
}

#[test]
fn every_hostile_message_is_refused_with_a_reason() {
    let huge = format!(
        "{{\"type\":\"heartbeat\",\"busy\":1,\"x\":\"{}\"}}",
        "a".repeat(70_000)
    );
    let many_labels: Vec<String> = (0..40).map(|i| format!("\"l{i}\"")).collect();
    let cases: Vec<(String, &str)> = vec![
        (huge, "bytes"),
        ("".to_owned(), "malformed"),
        ("not json".to_owned(), "malformed"),
        ("[]".to_owned(), "malformed"),
        (r#"{"type":"run_anything"}"#.to_owned(), "malformed"),
        (r#"{"type":"heartbeat"}"#.to_owned(), "malformed"),
        (r#"{"type":"heartbeat","busy":-1}"#.to_owned(), "malformed"),
        (r#"{"type":"heartbeat","busy":65}"#.to_owned(), "busy"),
        (
            r#"{"type":"heartbeat","busy":1,"task":"x"}"#.to_owned(),
            "malformed",
        ),
        (hello(r#","token":"x""#), "malformed"),
        (
            hello("").replace(r#""protocol":1"#, r#""protocol":2"#),
            "protocol 1",
        ),
        (hello("").replace(r#""slots":2"#, r#""slots":0"#), "slots"),
        (hello("").replace(r#""slots":2"#, r#""slots":65"#), "slots"),
        (
            hello("").replace(r#""slots":2"#, r#""slots":70000"#),
            "malformed",
        ),
        (hello("").replace(r#""gpu""#, r#""GPU""#), "label"),
        (hello("").replace(r#""gpu""#, r#""../x""#), "label"),
        (hello("").replace(r#""gpu""#, r#""""#), "label"),
        (
            hello("").replace(
                r#"["gpu","linux-x64"]"#,
                &format!("[{}]", many_labels.join(",")),
            ),
            "labels",
        ),
        (hello("").replace(r#"["claude"]"#, "[]"), "agents"),
        (
            hello("").replace(r#"["claude"]"#, r#"["Claude Code"]"#),
            "malformed",
        ),
        (hello("").replace(r#""1.2.3""#, r#""""#), "version"),
        (hello("").replace(r#""1.2.3""#, "\"a\\u0000b\""), "version"),
    ];
    for (text, why) in cases {
        let err =
            parse_runner_message(&text).expect_err(&text.chars().take(120).collect::<String>());
        let said = err.to_string();
        assert!(
            said.to_lowercase().contains(why),
            "{said:?} should mention {why:?} for {}",
            text.chars().take(120).collect::<String>()
        );
        assert!(said.len() < 400, "{said}");
    }
}

#[test]
fn the_servers_messages_have_one_shape_each() {
    let revoked = serde_json::to_value(ServerMessage::Revoked).unwrap();
    assert_eq!(revoked, serde_json::json!({"type": "revoked"}));
    let refused = serde_json::to_value(ServerMessage::Refused {
        reason: "r".into(),
        retry: false,
    })
    .unwrap();
    assert_eq!(
        refused,
        serde_json::json!({"type": "refused", "reason": "r", "retry": false})
    );
}

#[test]
fn names_and_labels() {
    assert!(check_runner_name("build-box.2").is_ok());
    for bad in ["", "a b", "x/y", &"n".repeat(65), "é"] {
        assert!(check_runner_name(bad).is_err(), "{bad}");
    }
    assert!(is_label("linux-x64"));
    assert!(!is_label("Linux"));
}

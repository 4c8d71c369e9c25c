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

#[test]
fn each_process_message_from_a_runner_is_read_whole() {
    let started = parse_runner_message(r#"{"type":"started","process":7,"pid":4242}"#).unwrap();
    assert_eq!(
        started,
        RunnerMessage::Started {
            process: 7,
            pid: 4242
        }
    );
    let failed = parse_runner_message(
        r#"{"type":"spawn_failed","process":7,"reason":"no such program: nope"}"#,
    )
    .unwrap();
    assert_eq!(
        failed,
        RunnerMessage::SpawnFailed {
            process: 7,
            reason: "no such program: nope".into()
        }
    );
    let out =
        parse_runner_message(r#"{"type":"output","process":7,"stream":"stderr","data":"aGkK"}"#)
            .unwrap();
    assert_eq!(
        out,
        RunnerMessage::Output {
            process: 7,
            stream: Stream::Stderr,
            data: Chunk(b"hi\n".to_vec())
        }
    );
    let exited = parse_runner_message(r#"{"type":"exited","process":7,"code":137}"#).unwrap();
    assert_eq!(
        exited,
        RunnerMessage::Exited {
            process: 7,
            code: 137
        }
    );
    // The largest chunk fits in a message, and round-trips.
    let big = RunnerMessage::Output {
        process: u64::MAX,
        stream: Stream::Stdout,
        data: Chunk(vec![0xff; MAX_CHUNK_BYTES]),
    };
    let text = serde_json::to_string(&big).unwrap();
    assert!(text.len() < MAX_MESSAGE_BYTES, "{}", text.len());
    assert_eq!(parse_runner_message(&text).unwrap(), big);
}

#[test]
fn every_hostile_process_message_is_refused_with_a_reason() {
    let too_big = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        vec![1u8; MAX_CHUNK_BYTES + 1],
    );
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"type":"output","process":1,"stream":"stdout","data":"%%%"}"#.to_owned(),
            "base64",
        ),
        (
            r#"{"type":"output","process":1,"stream":"stdout","data":"aGk"}"#.to_owned(),
            "base64",
        ),
        (
            format!(r#"{{"type":"output","process":1,"stream":"stdout","data":"{too_big}"}}"#),
            "at most 32768",
        ),
        (
            r#"{"type":"output","process":1,"stream":"stdin","data":""}"#.to_owned(),
            "malformed",
        ),
        (
            r#"{"type":"output","process":1,"stream":"stdout","data":"","pid":1}"#.to_owned(),
            "malformed",
        ),
        (
            r#"{"type":"output","process":-1,"stream":"stdout","data":""}"#.to_owned(),
            "malformed",
        ),
        (
            r#"{"type":"started","process":1,"pid":0}"#.to_owned(),
            "pid 0",
        ),
        (r#"{"type":"started","process":1}"#.to_owned(), "malformed"),
        (
            r#"{"type":"spawn_failed","process":1,"reason":""}"#.to_owned(),
            "reason",
        ),
        (
            r#"{"type":"spawn_failed","process":1,"reason":"a\u001b[2Jb"}"#.to_owned(),
            "reason",
        ),
        (
            format!(
                r#"{{"type":"spawn_failed","process":1,"reason":"{}"}}"#,
                "x".repeat(MAX_REASON_BYTES + 1)
            ),
            "reason",
        ),
        (
            r#"{"type":"exited","process":1,"code":4294967296}"#.to_owned(),
            "malformed",
        ),
        (r#"{"type":"spawn","process":1}"#.to_owned(), "malformed"),
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

fn spawn() -> Spawn {
    Spawn {
        process: 3,
        task: crate::TaskId::new_v7(crate::Timestamp::from_millis(1_700_000_000_000)),
        program: Program::Agent(crate::agents::AgentName::parse("claude").unwrap()),
        args: vec!["-p".into()],
        cwd: "sub/dir".into(),
        env: vec![("LANG".into(), "C".into())],
    }
}

#[test]
fn the_servers_process_messages_have_one_shape_each() {
    let s = spawn();
    let value = serde_json::to_value(ServerMessage::Spawn(s.clone())).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"type": "spawn", "process": 3, "task": s.task, "program": {"agent": "claude"},
            "args": ["-p"], "cwd": "sub/dir", "env": [["LANG", "C"]]})
    );
    let back: ServerMessage = serde_json::from_value(value).unwrap();
    assert_eq!(back, ServerMessage::Spawn(s.clone()));
    let path = Spawn {
        program: Program::Path("/bin/sh".into()),
        ..s
    };
    assert_eq!(
        serde_json::to_value(&path).unwrap()["program"],
        serde_json::json!({"path": "/bin/sh"})
    );
    let shapes = [
        (
            ServerMessage::Stdin {
                process: 3,
                data: Chunk(b"hi\n".to_vec()),
            },
            serde_json::json!({"type": "stdin", "process": 3, "data": "aGkK"}),
        ),
        (
            ServerMessage::CloseStdin { process: 3 },
            serde_json::json!({"type": "close_stdin", "process": 3}),
        ),
        (
            ServerMessage::Kill { process: 3 },
            serde_json::json!({"type": "kill", "process": 3}),
        ),
    ];
    for (msg, json) in shapes {
        assert_eq!(serde_json::to_value(&msg).unwrap(), json);
        assert!(check_server_message(&msg).is_ok());
    }
    assert!(format!("{path:?}").contains("LANG") && !format!("{path:?}").contains("\"C\""));
}

#[test]
fn a_spawn_out_of_bounds_is_refused_by_both_sides() {
    assert!(check_spawn(&spawn()).is_ok());
    type Change = Box<dyn Fn(&mut Spawn)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|s| s.cwd = "../x".into()), "leaves"),
        (Box::new(|s| s.cwd = "a/../../x".into()), "leaves"),
        (Box::new(|s| s.cwd = "/etc".into()), "absolute"),
        (Box::new(|s| s.cwd = "a\0b".into()), "nul"),
        (
            Box::new(|s| s.program = Program::Path(String::new())),
            "program",
        ),
        (
            Box::new(|s| s.program = Program::Path("a\0".into())),
            "program",
        ),
        (Box::new(|s| s.args = vec![String::new(); 257]), "arguments"),
        (
            Box::new(|s| s.args = vec!["x".repeat(32 * 1024 + 1)]),
            "argument",
        ),
        (Box::new(|s| s.args = vec!["a\0".into()]), "argument"),
        (
            Box::new(|s| s.env = vec![(String::new(), "v".into())]),
            "environment",
        ),
        (
            Box::new(|s| s.env = vec![("A=B".into(), "v".into())]),
            "environment",
        ),
        (
            Box::new(|s| s.env = vec![("A".into(), "v\0".into())]),
            "environment",
        ),
        (
            Box::new(|s| s.env = vec![("A".into(), "v".into()); 257]),
            "environment variables",
        ),
    ];
    for (change, why) in cases {
        let mut s = spawn();
        change(&mut s);
        let said = check_server_message(&ServerMessage::Spawn(s.clone()))
            .expect_err(&format!("{s:?}"))
            .to_string();
        assert!(said.to_lowercase().contains(why), "{said:?} for {s:?}");
    }
    let big = ServerMessage::Stdin {
        process: 1,
        data: Chunk(vec![0; MAX_CHUNK_BYTES + 1]),
    };
    assert!(check_server_message(&big).is_err());
}

#[test]
fn a_working_directory_stays_inside_the_workspace() {
    for (cwd, rel) in [
        ("", ""),
        (".", ""),
        ("./", ""),
        ("src", "src"),
        ("src/./lib/", "src/lib"),
        ("a//b", "a/b"),
        ("..a/b..", "..a/b.."),
    ] {
        assert_eq!(
            workspace_path(cwd).unwrap(),
            std::path::PathBuf::from(rel),
            "{cwd}"
        );
    }
    for bad in ["..", "../x", "a/..", "a/../b", "/", "/tmp", "a\0"] {
        assert!(workspace_path(bad).is_err(), "{bad}");
    }
    assert!(workspace_path(&"a/".repeat(3000)).is_err());
}

#[test]
fn a_reason_is_made_to_fit() {
    assert_eq!(fit_reason("  no\nsuch\tfile "), "no such file");
    assert_eq!(fit_reason(""), "unknown reason");
    let long = fit_reason(&"é".repeat(MAX_REASON_BYTES));
    assert!(long.len() <= MAX_REASON_BYTES && long.len() > MAX_REASON_BYTES - 2);
    assert!(process::check_reason(&long).is_ok());
}

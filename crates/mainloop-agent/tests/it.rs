//! Integration tests: the stream-json parser on recorded lines, the process plumbing
//! with garbage-spewing commands, the fake agent binary, and the real `claude` CLI
//! driven by a scripted fake model through questions, plan review, implementation,
//! resume, interrupt and kill.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Skipped real-CLI tests and timings are reported on stderr; that is the point.
#![allow(clippy::print_stderr)]

#[path = "it/limits.rs"]
mod limits;
#[path = "it/resume.rs"]
mod resume;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mainloop_agent::{
    Agent, AgentError, AgentEvent, AgentFailure, AgentMode, AgentOption, AgentQuestion,
    AgentSession, ClaudeCode, ControlReply, LocalProcess, RunSpec, SessionRef, TurnEnd, parse_line,
};
use mainloop_fake_anthropic::{FakeAnthropic, LoggedRequest, Script};
use serde_json::{Value, json};

const EVENT_TIMEOUT: Duration = Duration::from_secs(90);

async fn next(s: &mut Box<dyn AgentSession>) -> Option<AgentEvent> {
    tokio::time::timeout(EVENT_TIMEOUT, s.next_event())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no event within {EVENT_TIMEOUT:?}; stderr: {:?}",
                s.stderr_tail()
            )
        })
}

/// Reads events until `want` matches one; anything else is kept in `seen`.
async fn until(
    s: &mut Box<dyn AgentSession>,
    seen: &mut Vec<AgentEvent>,
    what: &str,
    want: impl Fn(&AgentEvent) -> bool,
) -> AgentEvent {
    loop {
        let Some(event) = next(s).await else {
            panic!(
                "session ended while waiting for {what}; seen {seen:#?}; stderr {:?}",
                s.stderr_tail()
            );
        };
        if want(&event) {
            return event;
        }
        if matches!(
            event,
            AgentEvent::Finished { .. }
                | AgentEvent::Question { .. }
                | AgentEvent::Plan { .. }
                | AgentEvent::Malformed { .. }
        ) {
            panic!("wanted {what}, got {event:#?}; seen {seen:#?}");
        }
        seen.push(event);
    }
}

/// Drains a session whose input was closed; returns what arrived after, but for the
/// closing `Exited`, which must come last, once.
async fn drain(s: &mut Box<dyn AgentSession>) -> Vec<AgentEvent> {
    let mut rest = Vec::new();
    while let Some(e) = next(s).await {
        rest.push(e);
    }
    assert!(
        matches!(rest.pop(), Some(AgentEvent::Exited { .. })),
        "no Exited at the end"
    );
    assert!(!rest.iter().any(|e| matches!(e, AgentEvent::Exited { .. })));
    rest
}

/// A local, unsandboxed process.
const LOCAL: &LocalProcess = &LocalProcess::new();

// ---------------------------------------------------------------------------------------
// 1. parse_line on recorded lines

#[test]
fn parse_line_maps_recorded_claude_lines() {
    let init = r#"{"type":"system","subtype":"init","cwd":"/tmp/r","session_id":"5b7c5f0e-1111-4222-8333-944445555666","tools":["Agent","AskUserQuestion","Bash"],"mcp_servers":[],"model":"claude-opus-5-5","permissionMode":"plan","slash_commands":[],"apiKeySource":"ANTHROPIC_API_KEY","output_style":"default","uuid":"u1"}"#;
    assert_eq!(
        parse_line(init),
        [AgentEvent::SessionStarted {
            session_id: "5b7c5f0e-1111-4222-8333-944445555666".into(),
            model: "claude-opus-5-5".into()
        }]
    );

    let text = r#"{"type":"assistant","message":{"id":"msg_fake_1","type":"message","role":"assistant","model":"claude-opus-5-5","content":[{"type":"text","text":"I need one detail first."}],"stop_reason":null,"usage":{"input_tokens":10,"output_tokens":5}},"parent_tool_use_id":null,"session_id":"s","uuid":"u2"}"#;
    assert_eq!(
        parse_line(text),
        [AgentEvent::Text {
            text: "I need one detail first.".into()
        }]
    );

    let tools = r#"{"type":"assistant","message":{"id":"msg_fake_3","role":"assistant","content":[
        {"type":"thinking","thinking":"hmm","signature":"x"},
        {"type":"tool_use","id":"toolu_1","name":"Edit","input":{"file_path":"src/lib.rs","old_string":"a","new_string":"b"}},
        {"type":"tool_use","id":"toolu_2","name":"Bash","input":{"command":"cargo test\n  --all","description":"run tests"}},
        {"type":"tool_use","id":"toolu_3","name":"mcp__thing__do","input":{"x":"VERYLONG"}}]},"session_id":"s"}"#
        .replace('\n', "")
        .replace("VERYLONG", &"y".repeat(500));
    let events = parse_line(&tools);
    assert_eq!(events.len(), 3, "thinking is skipped: {events:?}");
    assert_eq!(
        events[0],
        AgentEvent::ToolCall {
            id: "toolu_1".into(),
            name: "Edit".into(),
            summary: "Edit src/lib.rs".into()
        }
    );
    assert_eq!(
        events[1],
        AgentEvent::ToolCall {
            id: "toolu_2".into(),
            name: "Bash".into(),
            summary: "Bash: cargo test --all".into()
        }
    );
    let AgentEvent::ToolCall { summary, .. } = &events[2] else {
        panic!("{events:?}")
    };
    assert!(summary.starts_with("mcp__thing__do {\"x\":\"yyy"));
    assert!(summary.chars().count() <= 201 && summary.ends_with('…'));

    let result = r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_fake_2","content":"Your questions have been answered: \"Which color?\"=\"Red\". You can now continue with these answers in mind."}]},"parent_tool_use_id":null,"session_id":"s","tool_use_result":{"answers":{"Which color?":"Red"}}}"#;
    assert_eq!(
        parse_line(result),
        [AgentEvent::ToolResult {
            tool_use_id: "toolu_fake_2".into(),
            summary: "Your questions have been answered: \"Which color?\"=\"Red\". You can now continue with these answers in mind.".into(),
            is_error: false
        }]
    );

    let huge = json!({"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t9", "is_error": true,
         "content": [{"type": "text", "text": "é".repeat(100_000)}, {"type": "image", "source": {}}]}]}});
    let events = parse_line(&huge.to_string());
    let [
        AgentEvent::ToolResult {
            summary, is_error, ..
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert!(*is_error);
    assert!(summary.len() < 2200, "{}", summary.len());
    assert!(summary.ends_with("more bytes]"), "{}", &summary[2000..]);

    let interrupted = r#"{"type":"user","message":{"role":"user","content":[{"type":"text","text":"[Request interrupted by user for tool use]"}]},"session_id":"s"}"#;
    assert_eq!(parse_line(interrupted), []);

    let ask = r#"{"type":"control_request","request_id":"a487","request":{"subtype":"can_use_tool","tool_name":"AskUserQuestion","display_name":"AskUserQuestion","input":{"questions":[{"question":"Which color?","header":"Color","options":[{"label":"Red","description":"warm"},{"label":"Blue","description":"cool"}],"multiSelect":false},{"question":"Which extras?","header":"Extras","options":[{"label":"Trim","description":"white"}],"multiSelect":true}]},"tool_use_id":"toolu_fake_2","requires_user_interaction":true}}"#;
    let events = parse_line(ask);
    let [
        AgentEvent::Question {
            request_id,
            questions,
            input,
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(request_id, "a487");
    assert_eq!(
        questions[0],
        AgentQuestion {
            question: "Which color?".into(),
            header: "Color".into(),
            options: vec![
                AgentOption {
                    label: "Red".into(),
                    description: "warm".into()
                },
                AgentOption {
                    label: "Blue".into(),
                    description: "cool".into()
                }
            ],
            multi_select: false
        }
    );
    assert!(questions[1].multi_select);
    let answers = BTreeMap::from([
        ("Which color?".to_owned(), "Red".to_owned()),
        ("Which extras?".to_owned(), "Trim".to_owned()),
    ]);
    let ControlReply::Allow { updated_input } = ControlReply::answers(input, &answers) else {
        panic!("answers must allow")
    };
    assert_eq!(updated_input["questions"], input["questions"]);
    assert_eq!(
        updated_input["answers"],
        json!({"Which color?": "Red", "Which extras?": "Trim"})
    );

    let plan = r##"{"type":"control_request","request_id":"245c","request":{"subtype":"can_use_tool","tool_name":"ExitPlanMode","display_name":"ExitPlanMode","input":{"plan":"# Plan\n\nPaint the shed in the chosen color.\n","planFilePath":"/tmp/h/.claude/plans/pick-a-color-for-effervescent-planet.md"},"tool_use_id":"toolu_fake_70","requires_user_interaction":true}}"##;
    let events = parse_line(plan);
    let [
        AgentEvent::Plan {
            request_id,
            plan,
            input,
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(request_id, "245c");
    assert_eq!(plan, "# Plan\n\nPaint the shed in the chosen color.\n");
    assert!(input["planFilePath"].as_str().unwrap().ends_with(".md"));

    let perm = r#"{"type":"control_request","request_id":"p1","request":{"subtype":"can_use_tool","tool_name":"Write","input":{"file_path":"/w/a.txt","content":"x"},"permission_suggestions":[],"tool_use_id":"toolu_9"}}"#;
    assert_eq!(
        parse_line(perm),
        [AgentEvent::Permission {
            request_id: "p1".into(),
            tool: "Write".into(),
            input: json!({"file_path": "/w/a.txt", "content": "x"})
        }]
    );

    let ok = r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":1234,"num_turns":6,"result":"Plan approved; starting work.","session_id":"s1","total_cost_usd":0.0421,"usage":{"input_tokens":100,"cache_creation_input_tokens":20,"cache_read_input_tokens":3,"output_tokens":50},"terminal_reason":"completed"}"#;
    assert_eq!(
        parse_line(ok),
        [AgentEvent::Finished {
            end: TurnEnd::Done,
            result: Some("Plan approved; starting work.".into()),
            session_id: Some("s1".into()),
            cost_usd: 0.0421,
            input_tokens: 123,
            output_tokens: 50
        }]
    );
    // is_error wins over subtype, both ways.
    let api_error = r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 500","session_id":"s1","total_cost_usd":0}"#;
    assert!(matches!(
        parse_line(api_error).as_slice(),
        [AgentEvent::Finished { end: TurnEnd::Failed { failure: AgentFailure::ModelUnavailable { reason } }, result: Some(r), .. }] if r == "API Error: 500" && reason == r
    ));
    let aborted = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"errors":["aborted"],"session_id":"s1","terminal_reason":"aborted_tools"}"#;
    assert!(matches!(
        parse_line(aborted).as_slice(),
        [AgentEvent::Finished { end: TurnEnd::Failed { failure: AgentFailure::Other { reason } }, result: Some(r), cost_usd, .. }] if r == "aborted" && reason == r && *cost_usd == 0.0
    ));

    // Ignored: our initialize's answer, other system subtypes, partial stream events,
    // unknown types, blank lines.
    for quiet in [
        r#"{"type":"control_response","response":{"subtype":"success","request_id":"init-1","response":{"commands":[]}}}"#,
        r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":570,"error_status":529}"#,
        r#"{"type":"system","subtype":"status","status":null,"permissionMode":"default"}"#,
        r#"{"type":"stream_event","event":{"type":"content_block_delta"}}"#,
        r#"{"type":"control_cancel_request","request_id":"x"}"#,
        r#"{"type":"rate_limit_event","whatever":[1,2]}"#,
        "   ",
    ] {
        assert_eq!(parse_line(quiet), [], "{quiet}");
    }

    // Malformed: not JSON, not an object, no type, known types missing what we act on.
    for bad in [
        "notjson",
        "{\"type\":\"assistant\"",
        "[1,2,3]",
        "{\"no\":\"type\"}",
        r#"{"type":"system","subtype":"init"}"#,
        r#"{"type":"control_request","request":{"subtype":"can_use_tool","tool_name":"Bash"}}"#,
        r#"{"type":"control_request","request_id":"h1","request":{"subtype":"hook_callback"}}"#,
    ] {
        let events = parse_line(bad);
        assert!(
            matches!(events.as_slice(), [AgentEvent::Malformed { line, .. }] if line == bad),
            "{bad}: {events:?}"
        );
    }
    // Odd shapes of known types degrade instead of failing.
    assert_eq!(parse_line(r#"{"type":"assistant","message":null}"#), []);
    assert_eq!(
        parse_line(r#"{"type":"assistant","message":{"content":"plain"}}"#),
        [AgentEvent::Text {
            text: "plain".into()
        }]
    );
    assert!(matches!(
        parse_line(r#"{"type":"result"}"#).as_slice(),
        [AgentEvent::Finished {
            end: TurnEnd::Failed {
                failure: AgentFailure::Other { .. }
            },
            result: None,
            ..
        }]
    ));
}

#[test]
fn control_reply_lines_match_the_cli_protocol() {
    use mainloop_agent::protocol::{control_response_line, initialize_line, user_message_line};
    let v = |s: String| serde_json::from_str::<Value>(&s).unwrap();
    assert_eq!(
        v(initialize_line()),
        json!({"type":"control_request","request_id":"init-1","request":{"subtype":"initialize"}})
    );
    assert_eq!(
        v(user_message_line("hi \"there\"")),
        json!({"type":"user","message":{"role":"user","content":"hi \"there\""}})
    );
    assert_eq!(
        v(control_response_line(
            "r1",
            &ControlReply::Allow {
                updated_input: json!({"a": 1})
            }
        )),
        json!({"type":"control_response","response":{"subtype":"success","request_id":"r1",
               "response":{"behavior":"allow","updatedInput":{"a":1}}}})
    );
    assert_eq!(
        v(control_response_line(
            "r2",
            &ControlReply::Deny {
                message: "no".into(),
                interrupt: true
            }
        )),
        json!({"type":"control_response","response":{"subtype":"success","request_id":"r2",
               "response":{"behavior":"deny","message":"no","interrupt":true}}})
    );
    // A non-object input still yields an object with answers.
    let ControlReply::Allow { updated_input } =
        ControlReply::answers(&Value::Null, &BTreeMap::from([("q".into(), "a".into())]))
    else {
        panic!()
    };
    assert_eq!(updated_input, json!({"answers": {"q": "a"}}));
}

#[test]
fn command_line_and_debug_hide_nothing_but_secrets() {
    let spec = RunSpec {
        cwd: PathBuf::from("/w"),
        session: SessionRef::New("11111111-2222-4333-8444-555555555555".into()),
        mode: AgentMode::Plan,
        model: None,
        append_system_prompt: Some("Be brief.".into()),
        env: vec![("ANTHROPIC_API_KEY".into(), "sk-secret".into())],
    };
    let launch = ClaudeCode::new(vec!["/x/claude".into()])
        .launch(&spec)
        .unwrap();
    let line = LocalProcess::new().command_line(&launch);
    assert_eq!(
        line.join(" "),
        "/x/claude -p --input-format stream-json --output-format stream-json --verbose \
         --permission-prompt-tool stdio --permission-mode plan \
         --session-id 11111111-2222-4333-8444-555555555555 --append-system-prompt Be brief."
    );
    for debug in [format!("{spec:?}"), format!("{launch:?}")] {
        assert!(debug.contains("ANTHROPIC_API_KEY") && !debug.contains("sk-secret"));
    }

    // A sandbox wraps the whole command line.
    let sandboxed = LocalProcess::sandboxed(vec!["/usr/bin/bwrap".into(), "--".into()]);
    let line = sandboxed.command_line(&launch);
    assert_eq!(line[..3], ["/usr/bin/bwrap", "--", "/x/claude"]);
}

// ---------------------------------------------------------------------------------------
// 3. Process plumbing with commands that are not claude

fn sh_spec(cwd: &Path) -> RunSpec {
    RunSpec {
        cwd: cwd.to_path_buf(),
        session: SessionRef::New(uuid::Uuid::new_v4().to_string()),
        mode: AgentMode::Implement,
        model: None,
        append_system_prompt: None,
        env: vec![(
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )],
    }
}

fn sh(script: &str) -> ClaudeCode {
    // The appended claude flags become $0, $1… of the script and are ignored.
    ClaudeCode::new(vec!["/bin/sh".into(), "-c".into(), script.into()])
}

#[tokio::test]
async fn garbage_output_becomes_malformed_and_the_exit_code_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let agent = sh(r#"echo notjson; echo '{"type":"weird"}'; echo oops >&2; exit 3"#);
    let mut s = agent.start(sh_spec(dir.path()), LOCAL).unwrap();
    assert!(s.pid().is_some());
    let mut events = Vec::new();
    while let Some(e) = next(&mut s).await {
        events.push(e);
    }
    assert_eq!(
        events,
        [
            AgentEvent::Malformed {
                line: "notjson".into(),
                error: "expected ident at line 1 column 2".into()
            },
            AgentEvent::Exited {
                code: Some(3),
                failure: Some(AgentFailure::Other {
                    reason: "oops".into()
                })
            }
        ]
    );
    assert_eq!(s.exit_code(), Some(3));
    assert_eq!(s.pid(), None);
    assert!(
        s.stderr_tail().iter().any(|l| l == "oops"),
        "{:?}",
        s.stderr_tail()
    );
    assert_eq!(
        s.send_user_message("anyone?").await,
        Err(AgentError::Closed)
    );
    assert_eq!(next(&mut s).await, None, "None stays None");
    s.kill().await; // harmless once exited
    assert_eq!(s.exit_code(), Some(3));
}

#[tokio::test]
async fn overlong_lines_are_dropped_and_stderr_keeps_a_bounded_tail() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
        head -c 5000 /dev/zero | tr '\0' x; echo
        i=0; while [ $i -lt 100 ]; do echo "err $i" >&2; i=$((i+1)); done
        printf '%s\r\n' '{"type":"result","subtype":"success","is_error":false,"result":"ok","total_cost_usd":0.5}'
        printf 'no newline at the end'
    "#;
    let agent = sh(script).with_max_line_bytes(1000);
    let mut s = agent.start(sh_spec(dir.path()), LOCAL).unwrap();
    let events = drain(&mut s).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let AgentEvent::Malformed { line, error } = &events[0] else {
        panic!("{events:?}")
    };
    assert!(line.starts_with("xxxx") && line.len() <= 1000 + 30);
    assert!(error.contains("5000 bytes"), "{error}");
    assert!(
        matches!(&events[1], AgentEvent::Finished { end: TurnEnd::Done, result: Some(r), cost_usd, .. } if r == "ok" && *cost_usd == 0.5)
    );
    assert!(
        matches!(&events[2], AgentEvent::Malformed { line, .. } if line == "no newline at the end")
    );
    let tail = s.stderr_tail();
    assert_eq!(tail.len(), 40);
    assert_eq!(tail.first().map(String::as_str), Some("err 60"));
    assert_eq!(tail.last().map(String::as_str), Some("err 99"));
    assert_eq!(s.exit_code(), Some(0));
}

#[tokio::test]
async fn the_child_gets_only_the_given_environment_and_the_initialize_line() {
    let dir = tempfile::tempdir().unwrap();
    // Echoes its environment and first stdin line back as JSON-ish text lines.
    let agent = sh(r#"read first; printf '%s\n' "$first"; env | sort >&2"#);
    let mut spec = sh_spec(dir.path());
    spec.env.push(("ONLY_THIS".into(), "yes".into()));
    let mut s = agent.start(spec, LOCAL).unwrap();
    // The script echoes our first line back, so it shows what start() wrote.
    let events = drain(&mut s).await;
    assert!(
        matches!(events.as_slice(), [AgentEvent::Malformed { line, error }]
            if line.contains(r#""subtype":"initialize""#) && error.contains("initialize")),
        "{events:?}"
    );
    let tail = s.stderr_tail();
    assert!(tail.iter().any(|l| l == "ONLY_THIS=yes"), "{tail:?}");
    assert!(!tail.iter().any(|l| l.starts_with("CARGO")), "{tail:?}");
}

#[tokio::test]
async fn start_fails_cleanly_for_a_missing_program_or_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let missing = ClaudeCode::new(vec!["/nonexistent/claude".into()]);
    assert!(matches!(
        missing.start(sh_spec(dir.path()), LOCAL),
        Err(AgentError::Spawn(_))
    ));
    let mut spec = sh_spec(dir.path());
    spec.cwd = dir.path().join("gone");
    assert!(matches!(
        sh("true").start(spec, LOCAL),
        Err(AgentError::Spawn(_))
    ));
    assert!(matches!(
        ClaudeCode::new(vec![]).start(sh_spec(dir.path()), LOCAL),
        Err(AgentError::Spawn(_))
    ));
}

/// Processes of group `pgid` that are not zombies.
fn live_group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …; comm may contain spaces and parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

async fn wait_group_gone(pgid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live_group_members(pgid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "group {pgid} still has {:?}",
            live_group_members(pgid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_group_size(pgid: u32, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while live_group_members(pgid).len() < at_least {
        assert!(Instant::now() < deadline, "group {pgid} never grew");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Live processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let mut want: Vec<u8> = Vec::new();
    for arg in argv {
        want.extend_from_slice(arg.as_bytes());
        want.push(0);
    }
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want) && is_live(*pid)
        })
        .collect()
}

#[tokio::test]
async fn kill_and_drop_take_the_whole_process_group_and_escaped_descendants() {
    let dir = tempfile::tempdir().unwrap();
    // A grandchild in the group, and one in a session of its own (as Claude Code's Bash
    // tool does), both of which would outlive a kill of the leader alone.
    let agent = sh("setsid sleep 299 & sleep 300 & sleep 300; wait");
    for use_drop in [false, true] {
        let mut s = agent.start(sh_spec(dir.path()), LOCAL).unwrap();
        let pid = s.pid().unwrap();
        wait_group_size(pid, 3).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_running(&["sleep", "299"]).is_empty() {
            assert!(Instant::now() < deadline, "setsid sleep never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if use_drop {
            drop(s);
        } else {
            s.kill().await;
            assert_eq!(s.exit_code(), Some(128 + 9));
            assert_eq!(s.pid(), None);
            assert!(matches!(
                next(&mut s).await,
                Some(AgentEvent::Exited {
                    code: Some(137),
                    ..
                })
            ));
            assert_eq!(next(&mut s).await, None);
        }
        wait_group_gone(pid).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_running(&["sleep", "299"]).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the setsid sleep survived (drop: {use_drop})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. The fake agent binary

#[tokio::test]
async fn fake_agent_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let agent = ClaudeCode::new(vec![
        env!("CARGO_BIN_EXE_mainloop-fake-agent").into(),
        "--events".into(),
        "9".into(),
        "--rate".into(),
        "200".into(),
    ]);
    let id = uuid::Uuid::new_v4().to_string();
    let mut spec = sh_spec(dir.path());
    spec.session = SessionRef::New(id.clone());
    spec.model = Some("fake-model".into());
    spec.append_system_prompt = Some("--events 99".into());
    let started = Instant::now();
    let mut s = agent.start(spec, LOCAL).unwrap();
    s.send_user_message("go").await.unwrap();
    let events = drain(&mut s).await;
    assert_eq!(
        events.first(),
        Some(&AgentEvent::SessionStarted {
            session_id: id.clone(),
            model: "fake-model".into()
        })
    );
    let count = |f: fn(&AgentEvent) -> bool| events.iter().filter(|e| f(e)).count();
    assert_eq!(count(|e| matches!(e, AgentEvent::Text { .. })), 3);
    assert_eq!(count(|e| matches!(e, AgentEvent::ToolCall { .. })), 3);
    assert_eq!(count(|e| matches!(e, AgentEvent::ToolResult { .. })), 3);
    assert_eq!(count(|e| matches!(e, AgentEvent::Malformed { .. })), 0);
    assert!(matches!(
        events.last(),
        Some(AgentEvent::Finished { end: TurnEnd::Done, session_id: Some(sid), cost_usd, .. })
            if *sid == id && *cost_usd == 0.001
    ));
    assert_eq!(s.exit_code(), Some(0));
    // 9 events at 200/s: paced, but not slow.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(40), "{elapsed:?}");
}

// ---------------------------------------------------------------------------------------
// 2. The real claude CLI against the fake model

fn claude_path() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/claude");
    // By a resolved path, as the server names it (one through `..` does not resolve
    // inside a sandbox that hides the directories it walks through).
    if let Some(path) = resolved(&path) {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: {} not found (run `npm ci` at the repo root)",
            path.display()
        );
        None
    }
}

/// `path` with its directories resolved, if it exists.
fn resolved(path: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(path.parent()?).ok()?;
    let resolved = dir.join(path.file_name()?);
    resolved.exists().then_some(resolved)
}

/// A temp git repository as the worktree and a temp HOME for the CLI's state.
struct World {
    repo: tempfile::TempDir,
    home: tempfile::TempDir,
    fake: FakeAnthropic,
    agent: ClaudeCode,
}

impl World {
    async fn new(claude: &Path, script: &str) -> Self {
        let repo = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        for args in [
            &["init", "-q"][..],
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "init",
            ],
        ] {
            let status = std::process::Command::new("git")
                .args(args)
                .current_dir(repo.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let script = script.replace("__CWD__", &repo.path().display().to_string());
        let fake = FakeAnthropic::start(Script::from_yaml(&script).unwrap())
            .await
            .unwrap();
        let agent = ClaudeCode::new(vec![claude.display().to_string()]);
        Self {
            repo,
            home,
            fake,
            agent,
        }
    }

    fn spec(&self, session: SessionRef, mode: AgentMode) -> RunSpec {
        let env = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", self.home.path().display().to_string()),
            ("ANTHROPIC_BASE_URL", self.fake.base_url()),
            ("ANTHROPIC_API_KEY", "sk-test".into()),
            ("DISABLE_TELEMETRY", "1".into()),
            ("DISABLE_AUTOUPDATER", "1".into()),
            ("DISABLE_ERROR_REPORTING", "1".into()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
        ];
        RunSpec {
            cwd: self.repo.path().to_path_buf(),
            session,
            mode,
            model: None,
            append_system_prompt: None,
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    fn rules(&self) -> Vec<String> {
        self.fake
            .message_requests()
            .iter()
            .map(|r| r.rule_name.clone().unwrap_or_else(|| "<none>".into()))
            .collect()
    }

    fn request(&self, rule: &str) -> LoggedRequest {
        self.fake
            .message_requests()
            .into_iter()
            .find(|r| r.rule_name.as_deref() == Some(rule))
            .unwrap_or_else(|| panic!("no request answered by {rule}: {:?}", self.rules()))
    }
}

/// The tool_result contents of the latest user message of a request.
fn latest_tool_results(req: &LoggedRequest) -> String {
    let messages = req.body["messages"].as_array().cloned().unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .cloned()
        .unwrap_or_default();
    last_user["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| b["content"].to_string())
        .collect()
}

/// This test's own rules, in front of the shared greeter script: it also asks what was
/// built, and implements with a `Write` (whose permission request it checks) and a `Bash`.
const PLAN_RULES: &str = r##"rules:
  - name: recall
    match: {user_contains: "what did we build"}
    reply:
      - text: "We built a greeter."

  # Answers before the greeter's rule of the same name.
  - name: implement
    match: {tool_result_for: ExitPlanMode, tool_result_contains: "User has approved your plan"}
    reply:
      - text: "Implementing."
      - tool_use:
          name: Write
          input: {file_path: "__CWD__/greeting.txt", content: "hello\n"}
      - tool_use:
          name: Bash
          input: {command: "echo hi", description: "Say hi"}
"##;

/// [`PLAN_RULES`], then the greeter's rules.
fn plan_script() -> String {
    let greeter = include_str!("../../mainloop-fake-anthropic/scripts/greeter.yaml");
    let (_, rules) = greeter.split_once("\nrules:\n").unwrap();
    format!("{PLAN_RULES}{rules}")
}

#[tokio::test]
async fn real_claude_questions_plan_review_implementation_and_resume() {
    let Some(claude) = claude_path() else { return };
    let w = World::new(&claude, &plan_script()).await;
    let t0 = Instant::now();
    let session_id = uuid::Uuid::new_v4().to_string();
    let mut s = w
        .agent
        .start(
            w.spec(SessionRef::New(session_id.clone()), AgentMode::Plan),
            LOCAL,
        )
        .unwrap();
    let mut seen = Vec::new();
    s.send_user_message("Please build the greeter.")
        .await
        .unwrap();

    let started = until(&mut s, &mut seen, "SessionStarted", |e| {
        matches!(e, AgentEvent::SessionStarted { .. })
    })
    .await;
    assert!(
        matches!(&started, AgentEvent::SessionStarted { session_id: sid, .. } if *sid == session_id),
        "{started:?}"
    );

    // (a) two questions, one multi-select, answered by question text
    let AgentEvent::Question {
        request_id,
        questions,
        input,
    } = until(&mut s, &mut seen, "Question", |e| {
        matches!(e, AgentEvent::Question { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(questions.len(), 2, "{questions:?}");
    assert_eq!(questions[0].question, "Which language?");
    assert!(!questions[0].multi_select);
    assert_eq!(questions[1].header, "Extras");
    assert!(questions[1].multi_select);
    assert_eq!(questions[1].options[2].label, "CI");
    assert!(seen.contains(&AgentEvent::Text {
        text: "Two questions first.".into()
    }));
    let answers = BTreeMap::from([
        ("Which language?".to_owned(), "Rust".to_owned()),
        ("Which extras?".to_owned(), "Tests, Docs".to_owned()),
    ]);
    s.reply(&request_id, ControlReply::answers(&input, &answers))
        .await
        .unwrap();
    let t_question = t0.elapsed();

    // The plan, sent back with feedback.
    let AgentEvent::Plan {
        request_id, plan, ..
    } = until(&mut s, &mut seen, "Plan", |e| {
        matches!(e, AgentEvent::Plan { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(plan, "# Plan\n\nA greeter in Rust.\n");
    s.reply(
        &request_id,
        ControlReply::Deny {
            message: "add tests".into(),
            interrupt: false,
        },
    )
    .await
    .unwrap();

    // The revision, approved.
    let AgentEvent::Plan {
        request_id,
        plan,
        input,
    } = until(&mut s, &mut seen, "revised Plan", |e| {
        matches!(e, AgentEvent::Plan { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(plan.contains("with tests"), "{plan}");
    s.reply(
        &request_id,
        ControlReply::Allow {
            updated_input: input,
        },
    )
    .await
    .unwrap();
    let t_plan = t0.elapsed();

    // Implementation: permissions are granted as asked, until the turn ends.
    let mut permissions = Vec::new();
    let finished = loop {
        let event = next(&mut s)
            .await
            .unwrap_or_else(|| panic!("ended early; seen {seen:#?}"));
        match event {
            AgentEvent::Permission {
                request_id,
                tool,
                input,
            } => {
                permissions.push(tool);
                s.reply(
                    &request_id,
                    ControlReply::Allow {
                        updated_input: input,
                    },
                )
                .await
                .unwrap();
            }
            e @ AgentEvent::Finished { .. } => break e,
            e @ (AgentEvent::Question { .. }
            | AgentEvent::Plan { .. }
            | AgentEvent::Malformed { .. }) => panic!("unexpected {e:#?}"),
            other => seen.push(other),
        }
    };
    let AgentEvent::Finished {
        end,
        result,
        session_id: finished_id,
        cost_usd,
        input_tokens,
        output_tokens,
    } = finished
    else {
        unreachable!()
    };
    assert_eq!(end, TurnEnd::Done, "{result:?}");
    assert_eq!(result.as_deref(), Some("All done."));
    assert_eq!(finished_id.as_deref(), Some(session_id.as_str()));
    assert!(cost_usd > 0.0 && input_tokens > 0 && output_tokens > 0);
    let calls: Vec<(String, String)> = seen
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCall { name, summary, .. } => Some((name.clone(), summary.clone())),
            _ => None,
        })
        .collect();
    let greeting = w.repo.path().join("greeting.txt");
    assert!(
        calls.contains(&("Write".into(), format!("Write {}", greeting.display()))),
        "{calls:?}"
    );
    assert!(
        calls.contains(&("Bash".into(), "Bash: echo hi".into())),
        "{calls:?}"
    );
    assert!(
        seen.iter().any(|e| matches!(e, AgentEvent::ToolResult { summary, is_error: false, .. } if summary.trim() == "hi")),
        "{seen:#?}"
    );
    assert_eq!(std::fs::read_to_string(&greeting).unwrap(), "hello\n");
    let t_done = t0.elapsed();

    s.close_input().await;
    let rest = drain(&mut s).await;
    assert_eq!(rest, []);
    assert_eq!(s.exit_code(), Some(0), "stderr: {:?}", s.stderr_tail());
    assert_eq!(
        w.rules(),
        [
            "ask",
            "write-plan",
            "exit-plan",
            "revise-plan",
            "exit-plan",
            "implement",
            "done"
        ]
    );
    let answered = latest_tool_results(&w.request("write-plan"));
    assert!(
        answered.contains(r#"\"Which language?\"=\"Rust\""#)
            && answered.contains(r#"\"Which extras?\"=\"Tests, Docs\""#),
        "{answered}"
    );
    assert!(latest_tool_results(&w.request("revise-plan")).contains("add tests"));

    // (b) resume in implement mode: the model sees the whole earlier conversation.
    let t1 = Instant::now();
    let mut s = w
        .agent
        .start(
            w.spec(SessionRef::Resume(session_id.clone()), AgentMode::Implement),
            LOCAL,
        )
        .unwrap();
    s.send_user_message("So, what did we build?").await.unwrap();
    let mut seen = Vec::new();
    let resumed = until(&mut s, &mut seen, "SessionStarted", |e| {
        matches!(e, AgentEvent::SessionStarted { .. })
    })
    .await;
    let finished = until(&mut s, &mut seen, "Finished", |e| {
        matches!(e, AgentEvent::Finished { .. })
    })
    .await;
    assert!(
        matches!(&finished, AgentEvent::Finished { end: TurnEnd::Done, result: Some(r), .. } if r == "We built a greeter."),
        "{finished:?}"
    );
    s.close_input().await;
    drain(&mut s).await;
    assert_eq!(s.exit_code(), Some(0));
    let recall = w.request("recall").body.to_string();
    for earlier in [
        "Please build the greeter.",
        "Which extras?",
        "Tests, Docs",
        "add tests",
        "greeting.txt",
        "All done.",
    ] {
        assert!(
            recall.contains(earlier),
            "resumed request lacks {earlier:?}"
        );
    }
    let t_resume = t1.elapsed();
    // The CLI keeps the id on --resume, so the next resume can use the same one.
    assert!(
        matches!(&resumed, AgentEvent::SessionStarted { session_id: sid, .. } if *sid == session_id),
        "{resumed:?} vs {session_id}"
    );
    assert!(
        matches!(&finished, AgentEvent::Finished { session_id: Some(sid), .. } if *sid == session_id),
        "{finished:?}"
    );
    eprintln!(
        "timing real CLI: question {t_question:?}, plans approved {t_plan:?}, turn done {t_done:?}; \
         resume turn {t_resume:?}; permissions asked {permissions:?}"
    );
}

const INTERRUPT_SCRIPT: &str = r#"
rules:
  - name: ask
    match: {user_contains: "ask me", tool_offered: AskUserQuestion}
    reply:
      - tool_use:
          name: AskUserQuestion
          input:
            questions:
              - question: "Proceed?"
                header: "Go"
                options: [{label: "Yes", description: "go"}, {label: "No", description: "stop"}]
                multiSelect: false
  - name: nap
    match: {user_contains: "take a nap"}
    reply:
      - tool_use: {name: Bash, input: {command: "tail -f /dev/null", description: "Nap"}}
  - name: slow
    match: {user_contains: "speak slowly"}
    delay_ms: 3000
    reply:
      - text: "one two three"
"#;

#[tokio::test]
async fn real_claude_interrupt_ends_the_turn_with_an_error() {
    let Some(claude) = claude_path() else { return };
    let w = World::new(&claude, INTERRUPT_SCRIPT).await;
    let t0 = Instant::now();
    let mut s = w
        .agent
        .start(
            w.spec(
                SessionRef::New(uuid::Uuid::new_v4().to_string()),
                AgentMode::Plan,
            ),
            LOCAL,
        )
        .unwrap();
    s.send_user_message("Please ask me first.").await.unwrap();
    let mut seen = Vec::new();
    let AgentEvent::Question { request_id, .. } = until(&mut s, &mut seen, "Question", |e| {
        matches!(e, AgentEvent::Question { .. })
    })
    .await
    else {
        unreachable!()
    };
    s.reply(
        &request_id,
        ControlReply::Deny {
            message: "stop here".into(),
            interrupt: true,
        },
    )
    .await
    .unwrap();
    let finished = until(&mut s, &mut seen, "Finished", |e| {
        matches!(e, AgentEvent::Finished { .. })
    })
    .await;
    assert!(
        matches!(
            finished,
            AgentEvent::Finished {
                end: TurnEnd::Failed { .. },
                ..
            }
        ),
        "{finished:?}"
    );
    s.close_input().await;
    drain(&mut s).await;
    eprintln!(
        "timing real CLI interrupt: {:?}, exit code {:?}",
        t0.elapsed(),
        s.exit_code()
    );
    assert!(s.exit_code().is_some());
    assert_eq!(w.rules(), ["ask"], "no model call after the interrupt");
}

#[tokio::test]
async fn real_claude_kill_takes_the_cli_and_its_tools() {
    let Some(claude) = claude_path() else { return };
    let w = World::new(&claude, INTERRUPT_SCRIPT).await;

    // Mid-stream: the fake is slowly answering.
    let t0 = Instant::now();
    let mut s = w
        .agent
        .start(
            w.spec(
                SessionRef::New(uuid::Uuid::new_v4().to_string()),
                AgentMode::Implement,
            ),
            LOCAL,
        )
        .unwrap();
    let pid = s.pid().unwrap();
    s.send_user_message("Please speak slowly.").await.unwrap();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while w.fake.message_requests().is_empty() {
        assert!(Instant::now() < deadline, "the CLI never called the model");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.kill().await;
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    wait_group_gone(pid).await;
    assert_eq!(s.exit_code(), Some(128 + 9));
    assert!(
        !drain(&mut s)
            .await
            .iter()
            .any(|e| matches!(e, AgentEvent::Finished { .. }))
    );
    let t_kill = t0.elapsed();

    // With a tool running: the Bash tool's process shares the group and dies with it.
    let mut s = w
        .agent
        .start(
            w.spec(
                SessionRef::New(uuid::Uuid::new_v4().to_string()),
                AgentMode::Implement,
            ),
            LOCAL,
        )
        .unwrap();
    let pid = s.pid().unwrap();
    s.send_user_message("Please take a nap.").await.unwrap();
    let mut seen = Vec::new();
    until(&mut s, &mut seen, "ToolCall", |e| {
        matches!(e, AgentEvent::ToolCall { .. })
    })
    .await;
    // A tool that is not read-only may ask even in acceptEdits mode.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut sleeping = Vec::new();
    while sleeping.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no tool process appeared; seen {seen:#?}"
        );
        match tokio::time::timeout(Duration::from_millis(100), s.next_event()).await {
            Ok(Some(AgentEvent::Permission {
                request_id, input, ..
            })) => s
                .reply(
                    &request_id,
                    ControlReply::Allow {
                        updated_input: input,
                    },
                )
                .await
                .unwrap(),
            Ok(Some(e)) => seen.push(e),
            Ok(None) => panic!("session ended; seen {seen:#?}"),
            Err(_) => {}
        }
        sleeping = tool_processes();
    }
    let in_group: Vec<u32> = live_group_members(pid)
        .into_iter()
        .filter(|p| sleeping.contains(p))
        .collect();
    s.kill().await;
    wait_group_gone(pid).await;
    let survivors: Vec<u32> = sleeping.iter().copied().filter(|p| is_live(*p)).collect();
    eprintln!(
        "timing real CLI kill: mid-stream {t_kill:?}; tool processes {sleeping:?}, in the group {in_group:?}, surviving {survivors:?}"
    );
    assert!(survivors.is_empty(), "{survivors:?} outlived kill()");
}

fn is_live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

/// Live `tail -f /dev/null` processes (the Bash tool's).
/// (A plain `sleep 300` is refused by the CLI: "Blocked: standalone sleep".)
fn tool_processes() -> Vec<u32> {
    processes_running(&["tail", "-f", "/dev/null"])
}

#[tokio::test]
async fn stale_agents_are_recognised_by_start_time_and_killed() {
    // A stale agent lost the server that started it, so it is not our child: start it
    // from a shell that exits at once, leaving it to be reparented.
    let out = std::process::Command::new("sh")
        .args(["-c", "sleep 300 >/dev/null 2>&1 & echo $!"])
        .output()
        .unwrap();
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let start = mainloop_agent::process_start_time(pid).expect("running process has a start time");
    assert!(
        !mainloop_agent::kill_stale_agent(pid, start + 1),
        "another process with this pid is left alone"
    );
    assert!(is_live(pid));
    assert!(mainloop_agent::kill_stale_agent(pid, start));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while is_live(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the stale agent survived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mainloop_agent::process_start_time(u32::MAX), None);
}

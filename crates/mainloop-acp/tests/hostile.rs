//! A hostile ACP agent (a shell script speaking just enough of the protocol) writes
//! garbage, an oversized line, unknown methods and file requests outside its worktree:
//! each is recorded or refused, the session carries on, and a file request inside
//! the worktree is served; a denied permission with an interrupt cancels the turn.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mainloop_acp::AcpAgent;
use mainloop_agent::{
    Agent, AgentEvent, AgentMode, AgentSession, ControlReply, LocalProcess, RunSpec, SessionRef,
    TurnEnd,
};
use serde_json::json;

const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers initialize and session/new, then on the prompt sends its hostile lines,
/// logging each reply it gets to `replies.log`, and ends the turn.
const AGENT: &str = r#"
id() { printf '%s' "$1" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p'; }
ok() { printf '{"jsonrpc":"2.0","id":"%s","result":%s}\n' "$1" "$2"; }
read -r line; ok "$(id "$line")" '{"protocolVersion":1,"agentCapabilities":{"loadSession":true}}'
read -r line; ok "$(id "$line")" '{"sessionId":"hostile-1"}'
read -r line; prompt=$(id "$line")
echo 'this is not json'
head -c 3000 /dev/zero | tr '\0' 'x'; echo
printf '{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"hostile-1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"still here"}}}}\n'
printf '{"jsonrpc":"2.0","method":"vendor/unknown_notification","params":{}}\n'
printf '{"jsonrpc":"2.0","id":"r1","method":"vendor/unknown_request","params":{}}\n'
read -r reply; echo "unknown $reply" >> replies.log
printf '{"jsonrpc":"2.0","id":"r2","method":"fs/write_text_file","params":{"sessionId":"hostile-1","path":"%s/../escape.txt","content":"x"}}\n' "$PWD"
read -r reply; echo "dotdot $reply" >> replies.log
printf '{"jsonrpc":"2.0","id":"r3","method":"fs/write_text_file","params":{"sessionId":"hostile-1","path":"/etc/hostile-escape","content":"x"}}\n'
read -r reply; echo "outside $reply" >> replies.log
printf '{"jsonrpc":"2.0","id":"r4","method":"fs/read_text_file","params":{"sessionId":"hostile-1","path":"%s/link/passwd"}}\n' "$PWD"
read -r reply; echo "link $reply" >> replies.log
printf '{"jsonrpc":"2.0","id":"r5","method":"terminal/create","params":{"sessionId":"hostile-1","command":"sh"}}\n'
read -r reply; echo "terminal $reply" >> replies.log
printf '{"jsonrpc":"2.0","id":"r6","method":"fs/write_text_file","params":{"sessionId":"hostile-1","path":"%s/sub/inside.txt","content":"inside"}}\n' "$PWD"
read -r reply; echo "inside $reply" >> replies.log
printf '{"jsonrpc":"2.0","id":"r7","method":"fs/read_text_file","params":{"sessionId":"hostile-1","path":"%s/sub/inside.txt"}}\n' "$PWD"
read -r reply; echo "read $reply" >> replies.log
printf '{"jsonrpc":"2.0","id":"r8","method":"session/request_permission","params":{"sessionId":"hostile-1","toolCall":{"toolCallId":"t1","title":"bash","kind":"execute","rawInput":{"command":"rm -rf /"}},"options":[{"optionId":"yes","name":"Allow","kind":"allow_once"},{"optionId":"no","name":"Reject","kind":"reject_once"}]}}\n'
read -r reply; echo "permission $reply" >> replies.log
read -r line; echo "cancel $line" >> replies.log
ok "$prompt" '{"stopReason":"cancelled"}'
read -r line
exit 0
"#;

async fn next(s: &mut Box<dyn AgentSession>) -> Option<AgentEvent> {
    tokio::time::timeout(EVENT_TIMEOUT, s.next_event())
        .await
        .unwrap_or_else(|_| panic!("no event; stderr {:?}", s.stderr_tail()))
}

#[tokio::test]
async fn hostile_output_is_recorded_or_refused_and_the_session_carries_on() {
    let worktree = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("passwd"), "secret").unwrap();
    std::os::unix::fs::symlink(secrets.path(), worktree.path().join("link")).unwrap();
    let agent = AcpAgent::new("hostile", vec!["sh".into(), "-c".into(), AGENT.into()])
        .with_max_line_bytes(2048);
    let spec = RunSpec {
        cwd: worktree.path().to_path_buf(),
        session: SessionRef::New("any".into()),
        mode: AgentMode::Implement,
        model: None,
        append_system_prompt: None,
        env: vec![(
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )],
    };
    let mut s = agent.start(spec, &LocalProcess::new()).unwrap();
    let Some(AgentEvent::SessionStarted { session_id, .. }) = next(&mut s).await else {
        panic!("no SessionStarted")
    };
    assert_eq!(session_id, "hostile-1");
    s.send_user_message("go").await.unwrap();
    let mut events = Vec::new();
    loop {
        let event = next(&mut s).await.expect("the session ended early");
        if let AgentEvent::Permission {
            request_id,
            tool,
            input,
        } = &event
        {
            assert_eq!(
                (tool.as_str(), input),
                ("Bash", &json!({"command": "rm -rf /"}))
            );
            let deny = ControlReply::Deny {
                message: "no".into(),
                interrupt: true,
            };
            s.reply(request_id, deny).await.unwrap();
            let again = ControlReply::Deny {
                message: "again".into(),
                interrupt: false,
            };
            assert!(
                s.reply(request_id, again).await.is_err(),
                "a request is answered once"
            );
        }
        let finished = matches!(event, AgentEvent::Finished { .. });
        events.push(event);
        if finished {
            break;
        }
    }
    let malformed: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Malformed { error, .. } => Some(error.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(malformed.len(), 2, "{events:#?}");
    assert!(
        malformed[1].contains("exceeds the 2048-byte limit"),
        "{malformed:?}"
    );
    assert!(
        events.contains(&AgentEvent::Text {
            text: "still here".into()
        }),
        "{events:#?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(AgentEvent::Finished {
                end: TurnEnd::Failed { .. },
                ..
            })
        ),
        "an interrupted turn ends cancelled: {events:#?}"
    );

    s.close_input().await;
    while let Some(event) = next(&mut s).await {
        if let AgentEvent::Exited { code, .. } = event {
            assert_eq!(code, Some(0));
        }
    }
    let log = std::fs::read_to_string(worktree.path().join("replies.log")).unwrap();
    let reply = |tag: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("{tag} ")))
            .unwrap_or_else(|| panic!("no {tag} reply in {log}"))
            .to_owned()
    };
    for refused in ["unknown", "dotdot", "outside", "link", "terminal"] {
        let r = reply(refused);
        assert!(r.contains("\"error\""), "{refused} was not refused: {r}");
    }
    assert!(reply("dotdot").contains(".."), "{log}");
    assert!(reply("permission").contains(r#""optionId":"no""#), "{log}");
    assert!(reply("cancel").contains("session/cancel"), "{log}");
    assert!(reply("inside").contains("\"result\""), "{log}");
    assert!(reply("read").contains("\"content\":\"inside\""), "{log}");
    assert_eq!(
        std::fs::read_to_string(worktree.path().join("sub/inside.txt")).unwrap(),
        "inside"
    );
    assert!(
        !worktree
            .path()
            .parent()
            .unwrap()
            .join("escape.txt")
            .exists()
    );
    assert!(!std::path::Path::new("/etc/hostile-escape").exists());
}

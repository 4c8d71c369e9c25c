//! The process plumbing with a stand-in for `codex app-server` (a shell script):
//! hostile output is refused without ending the session, an unknown request is
//! answered with an error, the exit is reported last, and a kill reaches what the
//! process started.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mainloop_agent::{
    Agent, AgentEvent, AgentFailure, AgentMode, AgentSession, LocalProcess, RunSpec, SessionRef,
};
use mainloop_codex::Codex;

const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

fn stand_in(script: &str) -> Box<dyn AgentSession> {
    // `sh -c SCRIPT sh app-server`: the adapter appends the subcommand.
    let agent = Codex::new(vec!["sh".into(), "-c".into(), script.into(), "sh".into()])
        .with_max_line_bytes(64);
    let spec = RunSpec {
        cwd: std::env::current_dir().unwrap(),
        session: SessionRef::New("u".into()),
        mode: AgentMode::Implement,
        model: None,
        append_system_prompt: None,
        env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
    };
    agent.start(spec, &LocalProcess::new()).unwrap()
}

async fn all_events(s: &mut Box<dyn AgentSession>) -> Vec<AgentEvent> {
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(EVENT_TIMEOUT, s.next_event())
        .await
        .expect("an event in time")
    {
        events.push(e);
    }
    events
}

#[tokio::test]
async fn hostile_output_is_refused_and_the_exit_comes_last() {
    let mut s = stand_in(
        r#"read init
echo 'not json at all'
head -c 500 /dev/zero | tr '\0' x; echo
echo '{"method":"item/tool/call","id":0,"params":{}}'
read reply
echo "$reply" >&2
echo '{"method":"thread/teleported","params":{}}'
exit 3"#,
    );
    let events = all_events(&mut s).await;
    let malformed: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Malformed { error, .. } => Some(error.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(malformed.len(), 4, "{events:#?}");
    assert!(
        malformed[1].contains("exceeds the 64-byte limit"),
        "{malformed:?}"
    );
    let Some(AgentEvent::Exited {
        code: Some(3),
        failure: Some(AgentFailure::Other { reason }),
    }) = events.last()
    else {
        panic!("{events:#?}")
    };
    // The unknown request was answered with JSON-RPC's "method not found".
    assert!(
        reason.contains(r#""id":0"#) && reason.contains("-32601"),
        "{reason}"
    );
    assert!(s.next_event().await.is_none());
}

#[tokio::test]
async fn kill_reaches_what_the_process_started() {
    let mut s = stand_in("sleep 1000 & echo \"child $!\"; wait");
    let child: i32 = loop {
        let event = tokio::time::timeout(EVENT_TIMEOUT, s.next_event())
            .await
            .unwrap()
            .expect("the child's pid");
        if let AgentEvent::Malformed { line, .. } = event {
            break line.strip_prefix("child ").unwrap().parse().unwrap();
        }
    };
    s.kill().await;
    assert_eq!(s.exit_code(), Some(128 + 9));
    // The orphaned sleep is gone (or a zombie awaiting its reaper) within the deadline.
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        if stat.is_empty() || state == Some('Z') {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{child} survived: {stat}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        all_events(&mut s).await.last(),
        Some(AgentEvent::Exited {
            code: Some(137),
            ..
        })
    ));
}

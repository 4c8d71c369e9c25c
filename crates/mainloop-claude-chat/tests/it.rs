//! The provider's process handling against stand-ins for `claude` that write recorded
//! stream-json lines: a turn's events, a session kept warm across turns, a failed MCP
//! server failing the turn, and a session that cannot be resumed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::StreamExt;
use mainloop_claude_chat::{ClaudeChat, ClaudeChatConfig};
use mainloop_model::{ModelError, SessionEvent, SessionProvider, SessionTurn};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const INIT_OK: &str = r#"{"type":"system","subtype":"init","session_id":"SID","model":"m","mcp_servers":[{"name":"mainloop","status":"connected"}]}"#;

/// A stand-in that answers every input line with `lines` (`SID` replaced by the
/// session id it was given), and records its arguments and starts.
fn stand_in(dir: &Path, lines: &[&str]) -> String {
    let path = dir.join("claude");
    let body: String = lines
        .iter()
        .map(|l| {
            format!(
                "  printf '%s\\n' '{}' | sed \"s/SID/$sid/\"\n",
                l.replace('\'', "'\\''")
            )
        })
        .collect();
    let script = format!(
        "#!/bin/sh\n\
         echo \"$@\" >> {dir}/args\n\
         sid=$(echo \"$@\" | sed -n 's/.*--\\(session-id\\|resume\\) \\([^ ]*\\).*/\\2/p')\n\
         while read -r line; do\n{body}done\n",
        dir = dir.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn provider(dir: &Path, program: String) -> ClaudeChat {
    ClaudeChat::new(ClaudeChatConfig {
        command: vec![program],
        env: vec![
            ("PATH".into(), std::env::var("PATH").unwrap()),
            ("CLAUDE_CODE_OAUTH_TOKEN".into(), "t".into()),
        ],
        root: dir.join("main"),
        pid_dir: dir.join("agents"),
        sandbox: None,
        mcp_url: "http://127.0.0.1:9/api/mcp".into(),
        model: None,
        silence_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(600),
    })
}

fn turn(resume: Option<&str>, input: &str) -> SessionTurn {
    SessionTurn {
        user: "u1".into(),
        resume: resume.map(str::to_owned),
        system: "be brief".into(),
        input: input.into(),
        mcp_token: "mlm_x".into(),
    }
}

async fn run(p: &ClaudeChat, t: SessionTurn) -> Vec<Result<SessionEvent, ModelError>> {
    p.turn(t).collect().await
}

#[tokio::test]
async fn a_turn_streams_its_reply_and_the_session_stays_warm() {
    let dir = tempfile::tempdir().unwrap();
    let program = stand_in(
        dir.path(),
        &[
            INIT_OK,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}},"parent_tool_use_id":null}"#,
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"Hi"}]},"parent_tool_use_id":null}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.5,"usage":{"input_tokens":3,"output_tokens":1}}"#,
        ],
    );
    let p = provider(dir.path(), program);
    assert!(p.status().ready, "{:?}", p.status());
    let first = run(&p, turn(None, "hello")).await;
    let Some(Ok(SessionEvent::Session(sid))) = first.first() else {
        panic!("{first:?}")
    };
    assert!(
        matches!(&first[1], Ok(SessionEvent::TextDelta(t)) if t == "Hi"),
        "{first:?}"
    );
    assert!(
        matches!(&first[2], Ok(SessionEvent::Message { .. })),
        "{first:?}"
    );
    assert!(
        matches!(&first[3], Ok(SessionEvent::Done(u)) if u.cost_usd == Some(0.5) && u.usage.input_tokens == 3),
        "{first:?}"
    );
    // The same process answers the next turn of the same session.
    let second = run(&p, turn(Some(sid), "again")).await;
    assert!(
        matches!(second.last(), Some(Ok(SessionEvent::Done(_)))),
        "{second:?}"
    );
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    assert_eq!(
        args.lines().count(),
        1,
        "one process for both turns: {args}"
    );
    assert!(
        args.contains("--tools  --allowedTools mcp__mainloop"),
        "{args}"
    );
    assert!(
        !args.contains("mlm_x"),
        "the credential stays off the command line"
    );
}

#[tokio::test]
async fn a_failed_mcp_server_fails_the_turn_instead_of_answering_without_tools() {
    let dir = tempfile::tempdir().unwrap();
    let program = stand_in(
        dir.path(),
        &[
            r#"{"type":"system","subtype":"init","session_id":"SID","model":"m","tools":[],"mcp_servers":[{"name":"mainloop","status":"failed"}]}"#,
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"I have no tools"}]},"parent_tool_use_id":null}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"usage":{}}"#,
        ],
    );
    let p = provider(dir.path(), program);
    let events = run(&p, turn(None, "hello")).await;
    assert!(
        matches!(events.last(), Some(Err(ModelError::ToolsUnavailable(why))) if why.contains("failed")),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Ok(SessionEvent::Message { .. }))),
        "no reply without tools: {events:?}"
    );
}

#[tokio::test]
async fn the_quota_windows_a_turn_reports_come_out_whether_or_not_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let program = stand_in(
        dir.path(),
        &[
            INIT_OK,
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"Hello."}]},"parent_tool_use_id":null}"#,
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","resetsAt":1796578949,"rateLimitType":"five_hour","overageStatus":"rejected","isUsingOverage":false,"unifiedWindows":{"five_hour":{"utilization":0.42,"resetsAt":1796578949,"status":"allowed"},"seven_day":{"utilization":0.1,"resetsAt":1797003749,"status":"allowed"}}},"uuid":"ff2591a7","session_id":"SID"}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.5,"usage":{"input_tokens":3,"output_tokens":1}}"#,
        ],
    );
    let p = provider(dir.path(), program);
    let events = run(&p, turn(None, "hello")).await;
    let quota: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Ok(SessionEvent::Quota(w)) => Some(w.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(quota.len(), 1, "{events:?}");
    let windows: Vec<(&str, &str, bool)> = quota[0]
        .iter()
        .map(|w| (w.agent.as_str(), w.window.as_str(), w.limited))
        .collect();
    assert_eq!(
        windows,
        [
            ("claude", "five_hour", false),
            ("claude", "seven_day", false)
        ]
    );
    assert!(
        matches!(events.last(), Some(Ok(SessionEvent::Done(_)))),
        "{events:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let program = stand_in(
        dir.path(),
        &[
            INIT_OK,
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796529488,"rateLimitType":"five_hour","overageStatus":"rejected","overageDisabledReason":"org_level_disabled","isUsingOverage":false,"unifiedWindows":{"five_hour":{"utilization":1,"resetsAt":1796529488,"status":"rejected"}}}}"#,
            r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"api_error_type":"rate_limit_error","api_error":"usage_limit_reached","result":"You've hit your 5-hour limit · resets 3:58am (UTC)","terminal_reason":"api_error"}"#,
        ],
    );
    let p = provider(dir.path(), program);
    let events = run(&p, turn(None, "hello")).await;
    assert!(
        events.iter().any(|e| matches!(e, Ok(SessionEvent::Quota(w))
            if w.len() == 1 && w[0].window == "five_hour" && w[0].limited)),
        "{events:?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(Err(ModelError::UsageLimit {
                resets_at: Some(1_796_529_488)
            }))
        ),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_session_that_cannot_be_resumed_is_reported_lost() {
    let dir = tempfile::tempdir().unwrap();
    let program = stand_in(
        dir.path(),
        &[
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"result":"No conversation found with session ID: SID"}"#,
        ],
    );
    let p = provider(dir.path(), program);
    let events = run(&p, turn(Some("gone"), "hello")).await;
    assert!(
        matches!(events.last(), Some(Ok(SessionEvent::Lost))),
        "{events:?}"
    );
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    assert!(args.contains("--resume gone"), "{args}");
}

#[tokio::test]
async fn without_credentials_or_the_command_it_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let missing = provider(dir.path(), dir.path().join("nope").display().to_string());
    let status = missing.status();
    assert!(
        !status.ready && status.reason.contains("not found"),
        "{status:?}"
    );
    // A home without a login, and no token: not logged in.
    let found = provider(dir.path(), stand_in(dir.path(), &[]));
    let logged_out = ClaudeChat::new(ClaudeChatConfig {
        env: vec![("HOME".into(), dir.path().display().to_string())],
        ..found.config().clone()
    });
    let status = logged_out.status();
    assert!(
        !status.ready && status.reason.contains("not logged in"),
        "{status:?}"
    );
}

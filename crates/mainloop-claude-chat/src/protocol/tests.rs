//! Recorded lines (Claude Code 2.1.330 against the fake model) read as the main thread
//! reads them.

use super::*;

#[test]
fn the_command_line_keeps_to_mainloops_tools_and_the_token_off_it() {
    let a = args(&Args {
        session: "s-1",
        resume: false,
        system: "be brief",
        mcp_url: "http://127.0.0.1:9/api/mcp",
        model: None,
    });
    let at = |flag: &str| a.iter().position(|x| x == flag).map(|i| a[i + 1].as_str());
    assert_eq!(at("--tools"), Some(""));
    assert_eq!(at("--allowedTools"), Some("mcp__mainloop"));
    assert_eq!(at("--session-id"), Some("s-1"));
    assert!(!a.iter().any(|x| x == "--resume"));
    let config: Value = serde_json::from_str(at("--mcp-config").unwrap()).unwrap();
    assert_eq!(
        config["mcpServers"]["mainloop"]["headers"]["Authorization"],
        "Bearer ${MAINLOOP_MCP_TOKEN}"
    );
    let resumed = args(&Args {
        resume: true,
        model: Some("sonnet"),
        ..Args {
            session: "s-1",
            resume: false,
            system: "",
            mcp_url: "u",
            model: None,
        }
    });
    assert!(resumed.windows(2).any(|w| w == ["--resume", "s-1"]));
    assert!(resumed.windows(2).any(|w| w == ["--model", "sonnet"]));
}

#[test]
fn init_says_whether_the_tools_are_there() {
    let ok = r#"{"type":"system","subtype":"init","session_id":"s","model":"m","tools":["mcp__mainloop__spawn_task"],"mcp_servers":[{"name":"mainloop","status":"connected"}]}"#;
    assert_eq!(
        parse(ok),
        Line::Init {
            session_id: "s".into(),
            model: "m".into(),
            tools: Ok(())
        }
    );
    let failed = r#"{"type":"system","subtype":"init","session_id":"s","model":"m","tools":[],"mcp_servers":[{"name":"mainloop","status":"failed"}]}"#;
    assert!(matches!(parse(failed), Line::Init { tools: Err(e), .. } if e.contains("failed")));
    let missing =
        r#"{"type":"system","subtype":"init","session_id":"s","model":"m","mcp_servers":[]}"#;
    assert!(matches!(parse(missing), Line::Init { tools: Err(_), .. }));
}

#[test]
fn deltas_messages_and_results_come_out_in_the_messages_api_shapes() {
    let delta = r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}},"session_id":"s","parent_tool_use_id":null}"#;
    assert_eq!(parse(delta), Line::Delta("Hel".into()));
    let json_delta = r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{"}},"parent_tool_use_id":null}"#;
    assert_eq!(parse(json_delta), Line::Other);
    let call = r#"{"type":"assistant","message":{"id":"msg_1","content":[{"type":"tool_use","id":"toolu_1","name":"mcp__mainloop__spawn_task","input":{"repo":"r"}}]},"parent_tool_use_id":null}"#;
    assert_eq!(
        parse(call),
        Line::Assistant {
            id: "msg_1".into(),
            content: vec![ContentBlock::tool_use(
                "toolu_1",
                "spawn_task",
                json!({"repo": "r"})
            )]
        }
    );
    let back = r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"{\"task_id\":\"t\"}"}]}]},"parent_tool_use_id":null}"#;
    assert_eq!(
        parse(back),
        Line::ToolResults(vec![ContentBlock::tool_result(
            "toolu_1",
            "{\"task_id\":\"t\"}",
            false
        )])
    );
    let sub = r#"{"type":"assistant","message":{"id":"m","content":[{"type":"text","text":"x"}]},"parent_tool_use_id":"toolu_9"}"#;
    assert_eq!(
        parse(sub),
        Line::Other,
        "a subagent's words are not the reply"
    );
    let done = r#"{"type":"result","subtype":"success","is_error":false,"result":"hi","total_cost_usd":0.012,"usage":{"input_tokens":10,"output_tokens":3,"cache_read_input_tokens":5},"modelUsage":{"claude-x":{}}}"#;
    assert_eq!(
        parse(done),
        Line::Done {
            model: "claude-x".into(),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 3,
                cache_read_input_tokens: 5,
                cache_creation_input_tokens: 0
            },
            cost_usd: Some(0.012)
        }
    );
    assert_eq!(parse("not json"), Line::Other);
    assert_eq!(parse("[1]"), Line::Other);
}

#[test]
fn failures_are_told_apart_by_status_not_subtype() {
    let limit = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"api_error":"usage_limit_reached","result":"You've hit your 5-hour limit"}"#;
    assert!(matches!(
        parse(limit),
        Line::Failed(Failure::Model(ModelError::UsageLimit { .. }))
    ));
    let api_key_429 = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"api_error_type":"rate_limit_error","result":"API Error: Request rejected (429) · This request would exceed your account's rate limit. Please try again later.","terminal_reason":"api_error","stop_reason":"stop_sequence"}"#;
    assert!(matches!(
        parse(api_key_429),
        Line::Failed(Failure::Model(ModelError::RateLimited { .. }))
    ));
    let login = r#"{"type":"result","subtype":"success","is_error":true,"result":"Invalid API key · Please run /login"}"#;
    assert!(matches!(
        parse(login),
        Line::Failed(Failure::Model(ModelError::Unauthorized(_)))
    ));
    let gone = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"result":"No conversation found with session ID: abc"}"#;
    assert_eq!(parse(gone), Line::Failed(Failure::SessionMissing));
    let busy = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":529,"result":"API Error: 529 Overloaded"}"#;
    assert!(matches!(
        parse(busy),
        Line::Failed(Failure::Model(ModelError::Overloaded { .. }))
    ));
}

#[test]
fn a_usage_limit_carries_the_reset_of_the_rate_limit_event_before_it() {
    // As Claude Code 2.1.332 prints them on a subscription at its 5-hour limit.
    let event = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796529488,"rateLimitType":"five_hour","overageStatus":"rejected","overageDisabledReason":"org_level_disabled","isUsingOverage":false,"unifiedWindows":{"five_hour":{"utilization":1,"resetsAt":1796529488,"status":"rejected"}}}}"#;
    let result = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"api_error":"usage_limit_reached","result":"You've hit your 5-hour limit · resets 3:58am (UTC)","terminal_reason":"api_error"}"#;
    let Line::RateLimit {
        refused: Some(resets_at),
        ..
    } = parse(event)
    else {
        panic!("not a limit: {event}");
    };
    assert_eq!(resets_at, Some(1_796_529_488));
    let Line::Failed(Failure::Model(e)) = parse(result) else {
        panic!("not a failure: {result}");
    };
    assert_eq!(
        with_reset(e, resets_at),
        ModelError::UsageLimit {
            resets_at: Some(1_796_529_488)
        }
    );
    let allowed = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","resetsAt":1796529488}}"#;
    assert_eq!(parse(allowed), Line::Other);
    assert_eq!(
        with_reset(ModelError::RateLimited { retry_after: None }, resets_at),
        ModelError::RateLimited { retry_after: None }
    );
}

/// `allowed` (5-hour window 42% used, weekly 10%): recorded from Claude Code 2.1.330 on
/// a subscription, after a reply that carried the unified rate-limit headers.
const ALLOWED_EVENT: &str = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","resetsAt":1796578949,"rateLimitType":"five_hour","overageStatus":"rejected","isUsingOverage":false,"unifiedWindows":{"five_hour":{"utilization":0.42,"resetsAt":1796578949,"status":"allowed"},"seven_day":{"utilization":0.1,"resetsAt":1797003749,"status":"allowed"}}},"uuid":"ff2591a7-5ee8-4ffc-ba53-56b7e118d95d","session_id":"90e8dca8-3d0f-4008-b27a-045b034ba7f9"}"#;

/// `rejected` at the 5-hour limit: recorded from Claude Code 2.1.332.
const REJECTED_EVENT: &str = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796529488,"rateLimitType":"five_hour","overageStatus":"rejected","overageDisabledReason":"org_level_disabled","isUsingOverage":false,"unifiedWindows":{"five_hour":{"utilization":1,"resetsAt":1796529488,"status":"rejected"}}}}"#;

fn windows_of(line: &str) -> (Vec<QuotaWindow>, Option<Option<u64>>) {
    let Line::RateLimit { windows, refused } = parse(line) else {
        panic!("not a rate-limit notice: {line}");
    };
    let at = Timestamp::from_millis(1_796_500_000_000);
    (quota_windows(windows, at), refused)
}

#[test]
fn every_rate_limit_notice_reports_the_claude_agents_windows() {
    let (allowed, refused) = windows_of(ALLOWED_EVENT);
    assert_eq!(refused, None, "an allowed notice refuses nothing");
    assert_eq!(allowed.len(), 2, "{allowed:?}");
    let five = &allowed[0];
    assert_eq!(five.agent.as_str(), "claude");
    assert_eq!(five.window, "five_hour");
    assert!((five.used_percent.unwrap() - 42.0).abs() < 1e-9);
    assert_eq!(
        five.resets_at,
        Some(Timestamp::from_millis(1_796_578_949_000))
    );
    assert!(!five.limited);
    assert_eq!(five.observed_at, Timestamp::from_millis(1_796_500_000_000));
    assert_eq!(allowed[1].window, "seven_day");
    assert!((allowed[1].used_percent.unwrap() - 10.0).abs() < 1e-9);

    let (rejected, refused) = windows_of(REJECTED_EVENT);
    assert_eq!(refused, Some(Some(1_796_529_488)));
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].window, "five_hour");
    assert!(rejected[0].limited);
    assert!((rejected[0].used_percent.unwrap() - 100.0).abs() < 1e-9);
    assert_eq!(
        rejected[0].resets_at,
        Some(Timestamp::from_millis(1_796_529_488_000))
    );

    // A notice that names no window and refuses nothing says nothing.
    let bare = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}"#;
    assert_eq!(parse(bare), Line::Other);
}

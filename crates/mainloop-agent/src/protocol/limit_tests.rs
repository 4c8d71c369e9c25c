//! Usage and rate limits in recorded Claude Code 2.1.330 lines (against the fake model
//! answering 429 with the API's `anthropic-ratelimit-unified-*` headers): which failed
//! turns are a usage limit, with which reset time, and which pass by themselves.

use super::{LineParser, quota_reports};
use crate::{AgentEvent, AgentFailure, QuotaReport, TurnEnd};
use serde_json::json;

/// On a subscription (`CLAUDE_CODE_OAUTH_TOKEN`), before the synthetic reply.
const REJECTED_EVENT: &str = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796529488,"rateLimitType":"five_hour","overageStatus":"rejected","overageDisabledReason":"org_level_disabled","isUsingOverage":false,"unifiedWindows":{"five_hour":{"utilization":1,"resetsAt":1796529488,"status":"rejected"}}}}"#;

const SUBSCRIPTION_REPLY: &str = r#"{"type":"assistant","message":{"id":"f4b1e254","model":"<synthetic>","role":"assistant","stop_reason":"stop_sequence","type":"message","content":[{"type":"text","text":"You've hit your 5-hour limit · resets 3:58am (UTC)"}]},"parent_tool_use_id":null,"session_id":"d5aead48-50df-4714-b2bd-693c354e66cf","error":"rate_limit","is_api_error_message":true,"api_error_status":429,"api_error":"usage_limit_reached","api_error_params":{"rate_limit_info":{"status":"rejected","resetsAt":1796529488,"rateLimitType":"five_hour","overageStatus":"rejected","isUsingOverage":false}},"api_error_type":"rate_limit_error"}"#;

const SUBSCRIPTION_RESULT: &str = r#"{"type":"result","subtype":"success","is_error":true,"duration_api_ms":0,"stop_reason":"stop_sequence","session_id":"d5aead48-50df-4714-b2bd-693c354e66cf","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0},"terminal_reason":"api_error","num_turns":1,"api_error_status":429,"api_error_type":"rate_limit_error","api_error":"usage_limit_reached","result":"You've hit your 5-hour limit · resets 3:58am (UTC)"}"#;

/// On an API key, the same 429: no notice, no retry, a synthetic reply and this.
const API_KEY_RESULT: &str = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"api_error_type":"rate_limit_error","result":"API Error: Request rejected (429) · This request would exceed your account's rate limit. Please try again later.","terminal_reason":"api_error","stop_reason":"stop_sequence","session_id":"8563c469-23c6-4a9f-8c23-03e30d4578b6","total_cost_usd":0}"#;

/// A 429 with `retry-after: 1` and no unified headers is retried first.
const RETRY_429: &str = r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":1,"retry_delay_ms":1201,"error_status":429,"error":"rate_limit","session_id":"d9b11372-fb51-487c-b8c6-be24a88c5dbb","uuid":"86dccc4b"}"#;

const RETRIED_RESULT: &str = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"api_error_type":"rate_limit_error","result":"API Error: Request rejected (429) · Number of request tokens has exceeded your per-minute rate limit","terminal_reason":"api_error","session_id":"d9b11372-fb51-487c-b8c6-be24a88c5dbb","total_cost_usd":0}"#;

const REPLY: &str = r#"{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Done."}]},"session_id":"x"}"#;

/// The failure of the turn that `lines` end, read in order by one parser.
fn failure(lines: &[&str]) -> AgentFailure {
    let mut parser = LineParser::default();
    let events: Vec<AgentEvent> = lines.iter().flat_map(|l| parser.parse(l)).collect();
    match events.last() {
        Some(AgentEvent::Finished {
            end: TurnEnd::Failed { failure },
            ..
        }) => failure.clone(),
        other => panic!("no failed turn at the end: {other:?} of {events:?}"),
    }
}

#[test]
fn a_subscription_limit_is_a_usage_limit_until_the_notice_reset() {
    let limited = AgentFailure::UsageLimit {
        resets_at: Some(1_796_529_488),
        reason: "You've hit your 5-hour limit · resets 3:58am (UTC)".to_owned(),
    };
    assert_eq!(
        failure(&[REJECTED_EVENT, SUBSCRIPTION_REPLY, SUBSCRIPTION_RESULT]),
        limited
    );
    // The synthetic reply alone carries the reset too.
    assert_eq!(failure(&[SUBSCRIPTION_REPLY, SUBSCRIPTION_RESULT]), limited);
    // Without either, the result still names the limit, with no reset known.
    assert_eq!(
        failure(&[SUBSCRIPTION_RESULT]),
        AgentFailure::UsageLimit {
            resets_at: None,
            reason: "You've hit your 5-hour limit · resets 3:58am (UTC)".to_owned(),
        }
    );
}

#[test]
fn an_api_key_429_the_cli_did_not_retry_is_a_usage_limit_without_a_reset() {
    assert!(matches!(
        failure(&[API_KEY_RESULT]),
        AgentFailure::UsageLimit { resets_at: None, reason } if reason.contains("exceed your account's rate limit")
    ));
}

#[test]
fn a_429_the_cli_retried_and_gave_up_on_passes() {
    assert!(matches!(
        failure(&[RETRY_429, RETRIED_RESULT]),
        AgentFailure::ModelUnavailable { reason } if reason.contains("per-minute")
    ));
    // A retry of an earlier request the model then answered does not count.
    assert!(matches!(
        failure(&[RETRY_429, REPLY, API_KEY_RESULT]),
        AgentFailure::UsageLimit { .. }
    ));
}

#[test]
fn what_a_turn_saw_is_forgotten_at_its_end() {
    let mut parser = LineParser::default();
    for line in [REJECTED_EVENT, SUBSCRIPTION_REPLY, SUBSCRIPTION_RESULT] {
        parser.parse(line);
    }
    assert_eq!(parser.rejected_until, None);
    // A later turn that hits the limit again, with no notice, knows no reset.
    let end = parser.parse(SUBSCRIPTION_RESULT);
    assert!(matches!(
        end.as_slice(),
        [AgentEvent::Finished {
            end: TurnEnd::Failed {
                failure: AgentFailure::UsageLimit {
                    resets_at: None,
                    ..
                }
            },
            ..
        }]
    ));
}

#[test]
fn usage_notices_that_refuse_nothing_change_nothing() {
    let warning = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning","resetsAt":1796529488,"rateLimitType":"seven_day","utilization":0.9}}"#;
    let mut parser = LineParser::default();
    assert!(matches!(
        parser.parse(warning).as_slice(),
        [AgentEvent::Quota { .. }]
    ));
    assert_eq!(parser.rejected_until, None);
    let ok = r#"{"type":"result","subtype":"success","is_error":false,"result":"Done.","session_id":"x"}"#;
    assert!(parser.parse(ok)[0].is_done());
    // Other failures are classified as before.
    let overloaded = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":529,"result":"API Error: Repeated 529 Overloaded errors.","session_id":"x"}"#;
    assert!(matches!(
        failure(&[overloaded]),
        AgentFailure::ModelUnavailable { .. }
    ));
    let refused = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":401,"result":"API Error: 401 invalid x-api-key","session_id":"x"}"#;
    assert!(matches!(failure(&[refused]), AgentFailure::Other { .. }));
}

/// On a subscription, after a reply whose `anthropic-ratelimit-unified-*` headers say
/// `allowed` (5-hour window 42% used): recorded from Claude Code 2.1.330.
const ALLOWED_EVENT: &str = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","resetsAt":1796578949,"rateLimitType":"five_hour","overageStatus":"rejected","isUsingOverage":false,"unifiedWindows":{"five_hour":{"utilization":0.42,"resetsAt":1796578949,"status":"allowed"},"seven_day":{"utilization":0.1,"resetsAt":1797003749,"status":"allowed"}}},"uuid":"ff2591a7-5ee8-4ffc-ba53-56b7e118d95d","session_id":"90e8dca8-3d0f-4008-b27a-045b034ba7f9"}"#;

fn window(window: &str, used: Option<f64>, resets_at: Option<u64>, limited: bool) -> QuotaReport {
    QuotaReport {
        window: window.to_owned(),
        used_percent: used,
        resets_at,
        limited,
    }
}

/// The windows of the one `Quota` event `line` yields.
fn quota(line: &str) -> Vec<QuotaReport> {
    match LineParser::default().parse(line).as_slice() {
        [AgentEvent::Quota { windows }] => windows.clone(),
        other => panic!("not one Quota event: {other:?}"),
    }
}

#[test]
fn every_rate_limit_notice_reports_its_windows() {
    let allowed = quota(ALLOWED_EVENT);
    assert_eq!(allowed.len(), 2, "{allowed:?}");
    assert_eq!(allowed[0].window, "five_hour");
    assert!((allowed[0].used_percent.unwrap_or_default() - 42.0).abs() < 1e-9);
    assert_eq!(allowed[0].resets_at, Some(1_796_578_949));
    assert!(!allowed[0].limited);
    assert_eq!(allowed[1].window, "seven_day");
    assert_eq!(allowed[1].resets_at, Some(1_797_003_749));
    assert!(!allowed[1].limited);

    assert_eq!(
        quota(REJECTED_EVENT),
        [window("five_hour", Some(100.0), Some(1_796_529_488), true)]
    );
    // The refusal is still kept for the turn's end.
    let mut parser = LineParser::default();
    parser.parse(REJECTED_EVENT);
    assert_eq!(parser.rejected_until, Some(1_796_529_488));
}

#[test]
fn a_notice_without_windows_reports_the_window_it_names() {
    let warning = json!({"status": "allowed_warning", "resetsAt": 1_796_529_488_u64,
                         "rateLimitType": "seven_day", "utilization": 0.5});
    assert_eq!(
        quota_reports(&warning),
        [window("seven_day", Some(50.0), Some(1_796_529_488), false)]
    );
    let rejected = json!({"status": "rejected", "resetsAt": 1_796_529_488.4,
                          "rateLimitType": "five_hour"});
    assert_eq!(
        quota_reports(&rejected),
        [window("five_hour", None, Some(1_796_529_488), true)]
    );
    // A rejected notice names its window limited even where the window says nothing.
    let sparse = json!({"status": "rejected", "rateLimitType": "seven_day",
                        "unifiedWindows": {"seven_day": {"utilization": 1},
                                           "five_hour": {"utilization": 0.2}}});
    assert_eq!(
        quota_reports(&sparse),
        [
            window("five_hour", Some(20.0), None, false),
            window("seven_day", Some(100.0), None, true),
        ]
    );
    // Nothing named, nothing to report; a notice is never malformed for it.
    assert!(quota_reports(&json!({"status": "rejected"})).is_empty());
    assert!(quota_reports(&json!({"unifiedWindows": {"x": 3}, "rateLimitType": 7})).is_empty());
    let odd = json!({"rateLimitType": "five_hour", "utilization": "most", "resetsAt": -5});
    assert_eq!(
        quota_reports(&odd),
        [window("five_hour", None, None, false)]
    );
    assert!(
        LineParser::default()
            .parse(r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}"#)
            .is_empty()
    );
}

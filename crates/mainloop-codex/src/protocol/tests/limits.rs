//! A turn refused for the account's usage limit, in lines recorded from Codex 0.171.0
//! against the fake Responses endpoint answering 429 `usage_limit_reached` with the
//! `x-codex-primary-*`/`x-codex-secondary-*` headers: it ends as a usage limit that
//! resets when the used-up window does.

use super::*;
use crate::items::{exhausted_until, quota_of};
use mainloop_agent::QuotaReport;

const LIMITS: &str = r#"{"method":"account/rateLimits/updated","params":{"rateLimits":{"limitId":"codex","limitName":null,"normalModelSlug":null,"primary":{"usedPercent":100,"windowDurationMins":300,"resetsAt":1796571057},"secondary":{"usedPercent":40,"windowDurationMins":10080,"resetsAt":1796657457},"credits":null,"individualLimit":null,"spendControlReached":null,"planType":null,"rateLimitReachedType":null}},"emittedAtMs":1796563859596}"#;

const MESSAGE: &str = "You’ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit https://chatgpt.com/settings/usage to purchase more credits or try again at 3:30 PM.";

fn error_line() -> String {
    json!({"method": "error", "params": {"error": {"message": MESSAGE,
        "codexErrorInfo": "usageLimitExceeded", "additionalDetails": null, "misalignment": null},
        "willRetry": false, "threadId": "t1", "turnId": "turn1"}})
    .to_string()
}

fn failed_line(turn: &str) -> String {
    json!({"method": "turn/completed", "params": {"threadId": "t1", "turn": {"id": turn,
        "items": [], "status": "failed", "error": {"message": MESSAGE,
        "codexErrorInfo": "usageLimitExceeded", "additionalDetails": null, "misalignment": null},
        "durationMs": 99}}})
    .to_string()
}

/// The failure the last event of `lines` reports.
fn failure(c: &mut Conversation, lines: &[String]) -> AgentFailure {
    let events: Vec<AgentEvent> = lines.iter().flat_map(|l| c.on_line(l).events).collect();
    match events.last() {
        Some(AgentEvent::Finished {
            end: TurnEnd::Failed { failure },
            ..
        }) => failure.clone(),
        other => panic!("no failed turn: {other:?} of {events:?}"),
    }
}

#[test]
fn a_used_up_window_is_a_usage_limit_until_its_reset() {
    let mut c = running();
    let limited = AgentFailure::UsageLimit {
        resets_at: Some(1_796_571_057),
        reason: MESSAGE.to_owned(),
    };
    let lines = [LIMITS.to_owned(), error_line(), failed_line("turn1")];
    assert_eq!(failure(&mut c, &lines), limited);

    // The next turn, refused with no new notice, knows no reset.
    c.user_message("again");
    c.on_line(r#"{"id":4,"result":{"turn":{"id":"turn2","status":"inProgress","items":[],"error":null}}}"#);
    assert_eq!(
        failure(&mut c, &[failed_line("turn2")]),
        AgentFailure::UsageLimit {
            resets_at: None,
            reason: MESSAGE.to_owned(),
        }
    );
}

#[test]
fn the_latest_used_up_window_decides() {
    let limits = |p: u32, s: u32| {
        json!({"primary": {"usedPercent": p, "windowDurationMins": 300, "resetsAt": 100},
               "secondary": {"usedPercent": s, "windowDurationMins": 10080, "resetsAt": 900}})
    };
    assert_eq!(exhausted_until(&limits(100, 40)), Some(100));
    assert_eq!(exhausted_until(&limits(100, 100)), Some(900));
    assert_eq!(exhausted_until(&limits(60, 100)), Some(900));
    assert_eq!(exhausted_until(&limits(99, 40)), None);
    // Sparse updates: a window may be missing, or its reset unknown.
    assert_eq!(exhausted_until(&json!({"primary": null})), None);
    assert_eq!(
        exhausted_until(&json!({"primary": {"usedPercent": 100, "resetsAt": null}})),
        None
    );
    assert_eq!(exhausted_until(&Value::Null), None);
}

#[test]
fn a_notice_with_room_left_does_not_limit_a_turn_that_fails_otherwise() {
    let mut c = running();
    let roomy = LIMITS.replace(r#""usedPercent":100"#, r#""usedPercent":12"#);
    c.on_line(&roomy);
    let overloaded = json!({"method": "turn/completed", "params": {"threadId": "t1",
        "turn": {"id": "turn1", "items": [], "status": "failed",
        "error": {"message": "busy", "codexErrorInfo": "serverOverloaded"}}}})
    .to_string();
    assert_eq!(
        failure(&mut c, &[overloaded]),
        AgentFailure::ModelUnavailable {
            reason: "busy".to_owned()
        }
    );
}

fn window(window: &str, used: f64, resets_at: Option<u64>, limited: bool) -> QuotaReport {
    QuotaReport {
        window: window.to_owned(),
        used_percent: Some(used),
        resets_at,
        limited,
    }
}

#[test]
fn every_rate_limits_notice_reports_its_windows() {
    let mut c = running();
    assert_eq!(
        c.on_line(LIMITS).events,
        [AgentEvent::Quota {
            windows: vec![
                window("five_hour", 100.0, Some(1_796_571_057), true),
                window("seven_day", 40.0, Some(1_796_657_457), false),
            ]
        }]
    );
    let roomy = LIMITS.replace(r#""usedPercent":100"#, r#""usedPercent":12.5"#);
    assert_eq!(
        c.on_line(&roomy).events,
        [AgentEvent::Quota {
            windows: vec![
                window("five_hour", 12.5, Some(1_796_571_057), false),
                window("seven_day", 40.0, Some(1_796_657_457), false),
            ]
        }]
    );
    // A notice with no windows (as after a turn against a provider that sends no
    // rate-limit headers) reports nothing.
    assert_eq!(
        c.on_line(r#"{"method":"account/rateLimits/updated","params":{}}"#),
        Effects::default()
    );
    let empty = json!({"method": "account/rateLimits/updated", "params": {"rateLimits":
        {"limitId": "codex", "primary": null, "secondary": null}}});
    assert_eq!(c.on_line(&empty.to_string()), Effects::default());
}

#[test]
fn windows_are_named_by_their_length_and_bucket() {
    let limits = json!({"limitId": "codex_other",
        "primary": {"usedPercent": 7, "windowDurationMins": 60, "resetsAt": 5},
        "secondary": {"usedPercent": 100.0, "windowDurationMins": null, "resetsAt": null},
        "rateLimitReachedType": "rate_limit_reached"});
    assert_eq!(
        quota_of(&limits),
        [
            window("codex_other/60_minutes", 7.0, Some(5), false),
            window("codex_other/secondary", 100.0, None, true),
        ]
    );
    let odd =
        json!({"primary": {"usedPercent": "full", "windowDurationMins": 300}, "secondary": 3});
    assert_eq!(
        quota_of(&odd),
        [QuotaReport {
            window: "five_hour".to_owned(),
            used_percent: None,
            resets_at: None,
            limited: false,
        }]
    );
}

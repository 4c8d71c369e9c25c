//! The real `claude` CLI against the fake model refusing a turn with a usage-limit 429,
//! headers as the API sends them: on a subscription and on an API key, the turn must
//! end as a usage limit, with the reset time where the CLI learns it; a plain 429 that
//! the CLI retries and gives up on is a model that is unavailable for now. A reply from
//! an account with room left reports its quota windows, on a subscription.

use super::{EVENT_TIMEOUT, World, claude_path};
use mainloop_agent::{
    Agent, AgentEvent, AgentFailure, AgentMode, LocalProcess, QuotaReport, SessionRef, TurnEnd,
};
use std::time::{SystemTime, UNIX_EPOCH};

/// A rule answering every request with the 429 the API sends when the account's
/// 5-hour window is spent, resetting at `reset` (Unix seconds).
fn limit_script(reset: u64) -> String {
    format!(
        "rules:\n{}",
        mainloop_fake_anthropic::usage_limit_rule("limit", "{}", reset)
    )
}

/// A 429 as for a per-minute rate limit: no unified headers, retry in a second.
const PLAIN_429: &str = r#"
rules:
  - name: limit
    status: 429
    error: {type: rate_limit_error, message: "Number of request tokens has exceeded your per-minute rate limit"}
    retry_after: 1
"#;

fn in_two_hours() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2 * 3600
}

/// Runs one turn with `auth` in place of the API key; returns its events, up to and
/// including the one that ends it, and the rules that answered the CLI's requests.
async fn one_turn(script: &str, auth: &[(&str, &str)]) -> (Vec<AgentEvent>, Vec<String>) {
    let Some(claude) = claude_path() else {
        panic!("no claude CLI")
    };
    let w = World::new(&claude, script).await;
    let mut spec = w.spec(
        SessionRef::New(uuid::Uuid::new_v4().to_string()),
        AgentMode::Implement,
    );
    spec.env.retain(|(k, _)| k != "ANTHROPIC_API_KEY");
    spec.env
        .extend(auth.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let mut s = w.agent.start(spec, &LocalProcess::new()).unwrap();
    s.send_user_message("Say hello.").await.unwrap();
    let mut events = Vec::new();
    loop {
        let event = tokio::time::timeout(EVENT_TIMEOUT, s.next_event())
            .await
            .unwrap_or_else(|_| panic!("no event; stderr: {:?}", s.stderr_tail()));
        let Some(event) = event else {
            panic!("ended early; stderr {:?}", s.stderr_tail())
        };
        let ends = matches!(event, AgentEvent::Finished { .. });
        events.push(event);
        if ends {
            s.kill().await;
            return (events, w.rules());
        }
    }
}

/// Runs one turn that must fail; returns how, and the rules that answered.
async fn limited_turn(script: &str, auth: &[(&str, &str)]) -> (AgentFailure, Vec<String>) {
    let (events, rules) = one_turn(script, auth).await;
    match events.last() {
        Some(AgentEvent::Finished {
            end: TurnEnd::Failed { failure },
            ..
        }) => (failure.clone(), rules),
        e => panic!("the turn did not fail: {e:?}"),
    }
}

#[tokio::test]
async fn a_subscription_at_its_limit_waits_for_the_reset_the_api_gave() {
    if claude_path().is_none() {
        return;
    }
    let reset = in_two_hours();
    let (failure, rules) = limited_turn(
        &limit_script(reset),
        &[("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-fake")],
    )
    .await;
    match failure {
        AgentFailure::UsageLimit { resets_at, reason } => {
            assert_eq!(resets_at, Some(reset));
            assert!(reason.contains("hit your"), "{reason}");
        }
        other => panic!("not a usage limit: {other:?}"),
    }
    assert_eq!(rules, ["limit"], "the CLI did not retry");
}

#[tokio::test]
async fn an_api_key_at_its_limit_is_a_usage_limit_with_no_reset() {
    if claude_path().is_none() {
        return;
    }
    let script = limit_script(in_two_hours());
    let (failure, rules) = limited_turn(&script, &[("ANTHROPIC_API_KEY", "sk-test")]).await;
    match failure {
        AgentFailure::UsageLimit { resets_at, reason } => {
            assert_eq!(resets_at, None);
            assert!(reason.contains("(429)"), "{reason}");
        }
        other => panic!("not a usage limit: {other:?}"),
    }
    assert_eq!(rules, ["limit"], "the CLI did not retry");
}

#[tokio::test]
async fn a_rate_limit_the_cli_retried_in_vain_passes() {
    if claude_path().is_none() {
        return;
    }
    // One retry instead of ten keeps the CLI's backoff near a second.
    let env = [
        ("ANTHROPIC_API_KEY", "sk-test"),
        ("CLAUDE_CODE_MAX_RETRIES", "1"),
    ];
    let (failure, rules) = limited_turn(PLAIN_429, &env).await;
    assert!(
        matches!(&failure, AgentFailure::ModelUnavailable { reason } if reason.contains("per-minute")),
        "{failure:?}"
    );
    assert_eq!(rules, ["limit", "limit"], "the CLI retried once");
}

/// A plain reply with the unified rate-limit headers of an account with room left: the
/// 5-hour window 42% used, the weekly one 10%.
fn roomy_script(five_hour_reset: u64, weekly_reset: u64) -> String {
    format!(
        r#"
rules:
  - name: hello
    reply:
      - text: "Hello."
    headers:
      anthropic-ratelimit-unified-status: allowed
      anthropic-ratelimit-unified-reset: "{five_hour_reset}"
      anthropic-ratelimit-unified-representative-claim: five_hour
      anthropic-ratelimit-unified-5h-status: allowed
      anthropic-ratelimit-unified-5h-utilization: "0.42"
      anthropic-ratelimit-unified-5h-reset: "{five_hour_reset}"
      anthropic-ratelimit-unified-7d-status: allowed
      anthropic-ratelimit-unified-7d-utilization: "0.1"
      anthropic-ratelimit-unified-7d-reset: "{weekly_reset}"
"#
    )
}

fn quota_of(events: &[AgentEvent]) -> Vec<Vec<QuotaReport>> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Quota { windows } => Some(windows.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_subscription_with_room_left_reports_its_windows_and_an_api_key_does_not() {
    if claude_path().is_none() {
        return;
    }
    let reset = in_two_hours();
    let weekly = reset + 4 * 24 * 3600;
    let script = roomy_script(reset, weekly);
    let (events, _) = one_turn(&script, &[("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-fake")]).await;
    assert!(events.last().is_some_and(AgentEvent::is_done), "{events:?}");
    let reports = quota_of(&events);
    let [windows] = reports.as_slice() else {
        panic!("not one Quota event: {events:?}")
    };
    let five_hour = windows.iter().find(|w| w.window == "five_hour");
    let five_hour = five_hour.unwrap_or_else(|| panic!("no five_hour in {windows:?}"));
    assert!(
        five_hour
            .used_percent
            .is_some_and(|p| (p - 42.0).abs() < 1e-6),
        "{five_hour:?}"
    );
    assert_eq!(five_hour.resets_at, Some(reset));
    assert!(!five_hour.limited);
    assert!(
        windows
            .iter()
            .any(|w| w.window == "seven_day" && w.resets_at == Some(weekly) && !w.limited),
        "{windows:?}"
    );

    let (events, _) = one_turn(&script, &[("ANTHROPIC_API_KEY", "sk-test")]).await;
    assert!(events.last().is_some_and(AgentEvent::is_done), "{events:?}");
    assert!(quota_of(&events).is_empty(), "{events:?}");
}

//! What particular ACP agents do that the protocol does not say, and the waits that
//! work around it: Gemini CLI's minute-named chat files, and history replayed after
//! `session/load` has already answered.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_client_protocol::v1::schema::InitializeResponse;

/// How long updates must have stopped after a `session/load` before the first prompt:
/// an agent that replays the history after answering the load (Gemini CLI does) would
/// otherwise have it read as the new turn's output.
pub const REPLAY_QUIET: Duration = Duration::from_millis(500);
/// The longest wait for a replay to end.
pub const REPLAY_MAX: Duration = Duration::from_secs(10);

/// How long to wait before loading a session of the agent `init` describes, at `now`.
///
/// Gemini CLI (0.61) names a session's chat file by the UTC minute it was started and
/// starts that file afresh when a process loads the session within the same minute,
/// losing its history; its loads wait for the minute to turn (plus a second of slack
/// for clocks read a moment apart).
#[must_use]
pub fn load_delay(init: &InitializeResponse, now: SystemTime) -> Duration {
    let gemini = init
        .agent_info
        .as_ref()
        .is_some_and(|info| info.name == "gemini-cli");
    if !gemini {
        return Duration::ZERO;
    }
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let into_minute = u64::try_from(since_epoch.as_millis() % 60_000).unwrap_or(0);
    Duration::from_millis(60_000 - into_minute + 1_000)
}

/// Whether a replay that last sent an update at `last` has ended by `now`, having
/// waited since `since`.
#[must_use]
pub fn replay_over(last: Instant, since: Instant, now: Instant) -> bool {
    now.saturating_duration_since(last) >= REPLAY_QUIET
        || now.saturating_duration_since(since) >= REPLAY_MAX
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_client_protocol::schema::ProtocolVersion;
    use agent_client_protocol::v1::schema::Implementation;

    fn init(name: &str) -> InitializeResponse {
        InitializeResponse::new(ProtocolVersion::V1).agent_info(Implementation::new(name, "1"))
    }

    #[test]
    fn only_gemini_waits_and_only_until_the_minute_has_turned() {
        let at = |secs: u64, millis: u64| {
            UNIX_EPOCH
                + Duration::from_secs(1_800_000_000 / 60 * 60 + secs)
                + Duration::from_millis(millis)
        };
        assert_eq!(load_delay(&init("opencode"), at(10, 0)), Duration::ZERO);
        assert_eq!(
            load_delay(&init("gemini-cli"), at(10, 0)),
            Duration::from_secs(51)
        );
        assert_eq!(
            load_delay(&init("gemini-cli"), at(59, 500)),
            Duration::from_millis(1_500)
        );
        assert_eq!(
            load_delay(&init("gemini-cli"), at(0, 0)),
            Duration::from_secs(61)
        );
    }

    #[test]
    fn a_replay_is_over_when_quiet_or_after_the_longest_wait() {
        let t0 = Instant::now();
        assert!(!replay_over(t0, t0, t0 + Duration::from_millis(100)));
        assert!(replay_over(t0, t0, t0 + REPLAY_QUIET));
        let busy = t0 + REPLAY_MAX;
        assert!(replay_over(busy, t0, busy));
    }
}

//! How long a main-thread turn that met the model's usage limit waits before it is
//! tried again.

use std::time::Duration;

use mainloop_domain::Timestamp;

/// How long a turn that met a usage limit waits: until the reset, but at least a few
/// seconds (clocks differ) and at most [`LIMIT_WAIT_MAX`] (a wrong reset must not
/// silence the thread for days); an unknown reset is tried again after
/// [`LIMIT_WAIT_UNKNOWN`].
pub(crate) fn usage_limit_wait(resets_at: Option<u64>, now: Timestamp) -> Duration {
    let Some(reset) = resets_at else {
        return LIMIT_WAIT_UNKNOWN;
    };
    let reset_ms = i64::try_from(reset)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let ahead = u64::try_from(reset_ms.saturating_sub(now.as_millis())).unwrap_or(0);
    Duration::from_millis(ahead).clamp(LIMIT_WAIT_MIN, LIMIT_WAIT_MAX)
}

const LIMIT_WAIT_MIN: Duration = Duration::from_secs(3);
const LIMIT_WAIT_MAX: Duration = Duration::from_secs(6 * 3600);
const LIMIT_WAIT_UNKNOWN: Duration = Duration::from_secs(15 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_limit_waits_until_its_reset_within_bounds() {
        let now = Timestamp::from_millis(1_796_571_000_000);
        assert_eq!(
            usage_limit_wait(Some(1_796_571_000 + 600), now),
            Duration::from_secs(600)
        );
        assert_eq!(
            usage_limit_wait(Some(1_796_571_000 - 60), now),
            LIMIT_WAIT_MIN
        );
        assert_eq!(usage_limit_wait(Some(0), now), LIMIT_WAIT_MIN);
        assert_eq!(usage_limit_wait(Some(u64::MAX), now), LIMIT_WAIT_MAX);
        assert_eq!(
            usage_limit_wait(Some(1_796_571_000 + 7 * 24 * 3600), now),
            LIMIT_WAIT_MAX
        );
        assert_eq!(usage_limit_wait(None, now), LIMIT_WAIT_UNKNOWN);
    }
}

//! What the runner does after each connection ends: reconnect (after how long) or stop
//! (with which exit code and words). Pure, so every outcome and the backoff schedule
//! are tested without a server.

use std::time::Duration;

/// The first wait before reconnecting.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How one connection (or attempt at one) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// SIGINT or SIGTERM: the socket was closed cleanly.
    Stopped,
    /// The server could not be reached, or the connection failed before the upgrade.
    Unreachable(String),
    /// The server answered the upgrade with 401: the token is unknown or revoked.
    Unauthorized,
    /// The server answered the upgrade with another status (a proxy, a restart).
    Rejected(u16),
    /// The server refused the runner; `retry` says whether reconnecting can help.
    Refused { reason: String, retry: bool },
    /// The server revoked the token.
    Revoked,
    /// The connection was lost; `welcomed` when the server had accepted the runner on
    /// it, which resets the backoff.
    Lost { welcomed: bool, why: String },
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Connect again after this long; `failures` is the new count of attempts in a row
    /// that did not get as far as a welcome.
    Reconnect { after: Duration, failures: u32 },
    /// Stop with this exit code, saying `message` (none for a clean stop).
    Exit { code: u8, message: Option<String> },
}

/// The decision after `outcome`, given `failures` attempts in a row without a welcome
/// before it, and `jitter` in `[0, 1)` (a random draw, so that many runners cut off by
/// one server restart do not all come back at the same instant).
#[must_use]
pub fn decide(outcome: &Outcome, failures: u32, jitter: f64) -> Decision {
    let exit = |code: u8, message: &str| Decision::Exit {
        code,
        message: Some(message.to_owned()),
    };
    match outcome {
        Outcome::Stopped => Decision::Exit {
            code: 0,
            message: None,
        },
        Outcome::Unauthorized => exit(3, "the server refused the token"),
        Outcome::Revoked => exit(3, "the token was revoked; stopping"),
        Outcome::Refused {
            reason,
            retry: false,
        } => exit(2, &format!("the server refused this runner: {reason}")),
        Outcome::Lost { welcomed: true, .. } => Decision::Reconnect {
            after: backoff(0, jitter),
            failures: 1,
        },
        Outcome::Refused { retry: true, .. }
        | Outcome::Unreachable(_)
        | Outcome::Rejected(_)
        | Outcome::Lost {
            welcomed: false, ..
        } => Decision::Reconnect {
            after: backoff(failures, jitter),
            failures: failures.saturating_add(1),
        },
    }
}

/// The wait before attempt `failures + 1`: 1 s doubling to 30 s, each shortened by up to
/// a quarter by `jitter` (never lengthened, so 30 s stays the longest).
#[must_use]
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(MAX_BACKOFF);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    base.mul_f64(1.0 - 0.25 * jitter)
}

/// A draw in `[0, 1)` from the standard library's randomly keyed hasher (no random
/// number crate is needed for spreading reconnects).
#[must_use]
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let draw = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // The top 53 bits as a fraction: exactly representable, strictly below 1.
    #[allow(clippy::cast_precision_loss)]
    let fraction = (draw >> 11) as f64 / (1u64 << 53) as f64;
    fraction
}

/// How a wait reads in the log: "1s", "16s".
#[must_use]
pub fn seconds(wait: Duration) -> String {
    let tenths = wait.as_millis() / 100;
    if tenths.is_multiple_of(10) {
        format!("{}s", tenths / 10)
    } else {
        format!("{}.{}s", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_backoff_doubles_from_one_second_to_thirty() {
        let schedule: Vec<Duration> = (0..8).map(|n| backoff(n, 0.0)).collect();
        assert_eq!(
            schedule,
            [1, 2, 4, 8, 16, 30, 30, 30].map(secs).to_vec(),
            "no jitter"
        );
        assert_eq!(backoff(u32::MAX, 0.0), secs(30), "no overflow");
        let shortest = backoff(0, 0.999_999);
        assert!(
            shortest >= Duration::from_millis(750) && shortest < Duration::from_millis(751),
            "{shortest:?}"
        );
        assert!(backoff(5, 0.5) < secs(30) && backoff(5, 0.5) >= Duration::from_millis(22_500));
        assert_eq!(backoff(2, f64::NAN), secs(4), "a bad draw is no jitter");
        assert_eq!(backoff(2, 7.0), secs(3), "clamped to the quarter");
    }

    #[test]
    fn jitter_is_a_fraction_and_varies() {
        let draws: Vec<f64> = (0..32).map(|_| jitter()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)), "{draws:?}");
        assert!(draws.windows(2).any(|w| w[0] != w[1]), "{draws:?}");
    }

    #[test]
    fn failures_back_off_and_a_welcome_starts_over() {
        let lost = |welcomed| Outcome::Lost {
            welcomed,
            why: "reset".into(),
        };
        for outcome in [
            Outcome::Unreachable("connection refused".into()),
            Outcome::Rejected(502),
            Outcome::Refused {
                reason: "busy".into(),
                retry: true,
            },
            lost(false),
        ] {
            assert_eq!(
                decide(&outcome, 3, 0.0),
                Decision::Reconnect {
                    after: secs(8),
                    failures: 4
                },
                "{outcome:?}"
            );
        }
        assert_eq!(
            decide(&lost(true), 9, 0.0),
            Decision::Reconnect {
                after: secs(1),
                failures: 1
            },
            "a runner that was connected retries at once-ish, then backs off"
        );
    }

    #[test]
    fn revocation_a_refused_token_and_a_final_refusal_stop_the_runner() {
        let stop = |code: u8, words: &str| Decision::Exit {
            code,
            message: Some(words.to_owned()),
        };
        assert_eq!(
            decide(&Outcome::Revoked, 0, 0.5),
            stop(3, "the token was revoked; stopping")
        );
        assert_eq!(
            decide(&Outcome::Unauthorized, 4, 0.5),
            stop(3, "the server refused the token")
        );
        assert_eq!(
            decide(
                &Outcome::Refused {
                    reason: "another runner connected with this token".into(),
                    retry: false
                },
                0,
                0.5
            ),
            stop(
                2,
                "the server refused this runner: another runner connected with this token"
            )
        );
        assert_eq!(
            decide(&Outcome::Stopped, 2, 0.5),
            Decision::Exit {
                code: 0,
                message: None
            }
        );
    }

    #[test]
    fn waits_read_in_seconds() {
        assert_eq!(seconds(secs(16)), "16s");
        assert_eq!(seconds(Duration::from_millis(750)), "0.7s");
    }
}

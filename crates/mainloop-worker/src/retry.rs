//! What a run does after its agent failed, as a pure function of the failure and what
//! was tried already: start the session afresh, resume it, resume it after a wait, or
//! fail the task with a reason.

use std::time::Duration;

use mainloop_agent::AgentFailure;

/// How many times a run falls back between starting its session afresh and resuming it.
const SESSION_FALLBACKS: u32 = 2;
/// The longest wait before resuming after a model API failure.
const MAX_API_WAIT: Duration = Duration::from_secs(600);

/// What was tried so far in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Attempts {
    /// The next start is a fresh one (`--session-id` with the recorded id).
    pub fresh: bool,
    pub session_fallbacks: u32,
    pub api_failures: u32,
}

/// The settings the decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub api_retries: u32,
    pub api_retry_delay: Duration,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start the recorded session afresh, giving it the task again; `note` tells the human.
    StartAfresh { note: String },
    /// Resume the recorded session now.
    Resume { note: String },
    /// Resume the recorded session after `wait`.
    ResumeAfter { wait: Duration, note: String },
    /// Put the task on hold until its agent's usage limit resets (`until`, Unix
    /// seconds, when known).
    Hold { until: Option<u64>, reason: String },
    /// Fail the task.
    Fail(String),
}

/// Decides what follows `failure`, where `why` is the failure told to a human, given
/// `attempts`; returns the action and the attempts after it.
pub(crate) fn decide(
    failure: &AgentFailure,
    why: &str,
    attempts: Attempts,
    policy: RetryPolicy,
) -> (Action, Attempts) {
    let Attempts {
        fresh,
        session_fallbacks,
        api_failures,
    } = attempts;
    let fallback_left = session_fallbacks < SESSION_FALLBACKS;
    match failure {
        // The agent died before it saved its session (the server was killed right after
        // starting it): start that session afresh, with the task.
        AgentFailure::SessionMissing if !fresh && fallback_left => (
            Action::StartAfresh {
                note: "the saved session was missing; starting it again".to_owned(),
            },
            Attempts {
                fresh: true,
                session_fallbacks: session_fallbacks + 1,
                ..attempts
            },
        ),
        AgentFailure::SessionMissing => (
            Action::Fail("the agent could not find its session".to_owned()),
            attempts,
        ),
        // Missing a moment ago, saved now: the agent of a server that was killed wrote it
        // as it died. Resume it rather than start it again.
        AgentFailure::SessionInUse if fresh && fallback_left => (
            Action::Resume {
                note: "the session was saved after all; resuming it".to_owned(),
            },
            Attempts {
                fresh: false,
                session_fallbacks: session_fallbacks + 1,
                ..attempts
            },
        ),
        // An outage of the model API outlasted the agent's own retries. Nobody needs to
        // act on it: wait, then resume the same session, a few times before telling the
        // human.
        // Nobody can do anything about a usage limit but wait: hold the task, with no
        // slot and no process, until it resets.
        AgentFailure::UsageLimit { resets_at, reason } => (
            Action::Hold {
                until: *resets_at,
                reason: reason.clone(),
            },
            attempts,
        ),
        AgentFailure::ModelUnavailable { reason } if api_failures < policy.api_retries => {
            let wait = api_retry_wait(policy.api_retry_delay, api_failures);
            let n = api_failures + 1;
            let note = format!(
                "the model API is failing ({reason}); trying again in {} s ({n} of {})",
                wait.as_secs(),
                policy.api_retries
            );
            let next = Attempts {
                fresh: false,
                api_failures: n,
                ..attempts
            };
            (Action::ResumeAfter { wait, note }, next)
        }
        AgentFailure::ModelUnavailable { reason } => {
            let tries = match policy.api_retries {
                0 => String::new(),
                1 => " (still failing after 1 retry)".to_owned(),
                n => format!(" (still failing after {n} retries)"),
            };
            (
                Action::Fail(format!("the agent reported an error: {reason}{tries}")),
                attempts,
            )
        }
        AgentFailure::SessionInUse | AgentFailure::Other { .. } => {
            (Action::Fail(why.to_owned()), attempts)
        }
    }
}

/// The wait before the `n`th (from 0) resume after a model API failure: `first`,
/// doubling, at most ten minutes.
fn api_retry_wait(first: Duration, n: u32) -> Duration {
    first.saturating_mul(1_u32 << n.min(10)).min(MAX_API_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        api_retries: 2,
        api_retry_delay: Duration::from_secs(5),
    };

    fn unavailable() -> AgentFailure {
        AgentFailure::ModelUnavailable {
            reason: "API Error: 529 Overloaded".to_owned(),
        }
    }

    #[test]
    fn a_missing_session_is_started_afresh_at_most_twice() {
        let start = Attempts::default();
        let (action, next) = decide(&AgentFailure::SessionMissing, "x", start, POLICY);
        assert!(matches!(action, Action::StartAfresh { note } if note.contains("missing")));
        assert_eq!(
            next,
            Attempts {
                fresh: true,
                session_fallbacks: 1,
                api_failures: 0
            }
        );
        // Missing again right after a fresh start: nothing left to try.
        let (action, _) = decide(&AgentFailure::SessionMissing, "x", next, POLICY);
        assert_eq!(
            action,
            Action::Fail("the agent could not find its session".to_owned())
        );
        // Resumed once more, then missing a third time: the fallbacks are spent.
        let spent = Attempts {
            fresh: false,
            session_fallbacks: 2,
            api_failures: 0,
        };
        let (action, after) = decide(&AgentFailure::SessionMissing, "x", spent, POLICY);
        assert!(matches!(action, Action::Fail(_)));
        assert_eq!(after, spent);
    }

    #[test]
    fn a_session_in_use_after_a_fresh_start_is_resumed() {
        let fresh = Attempts {
            fresh: true,
            session_fallbacks: 1,
            api_failures: 0,
        };
        let (action, next) = decide(&AgentFailure::SessionInUse, "in use", fresh, POLICY);
        assert!(matches!(action, Action::Resume { note } if note.contains("saved after all")));
        assert_eq!(
            next,
            Attempts {
                fresh: false,
                session_fallbacks: 2,
                api_failures: 0
            }
        );
        // Not after a fresh start, or with the fallbacks spent: the task fails as told.
        for attempts in [
            Attempts::default(),
            Attempts {
                fresh: true,
                session_fallbacks: 2,
                api_failures: 0,
            },
        ] {
            let (action, _) = decide(&AgentFailure::SessionInUse, "in use", attempts, POLICY);
            assert_eq!(action, Action::Fail("in use".to_owned()));
        }
    }

    #[test]
    fn a_model_outage_is_waited_out_doubling_then_fails_counting_the_retries() {
        let (first, next) = decide(&unavailable(), "x", Attempts::default(), POLICY);
        assert_eq!(
            first,
            Action::ResumeAfter {
                wait: Duration::from_secs(5),
                note: "the model API is failing (API Error: 529 Overloaded); trying again in 5 s (1 of 2)"
                    .to_owned()
            }
        );
        assert_eq!(next.api_failures, 1);
        let (second, next) = decide(&unavailable(), "x", next, POLICY);
        assert!(
            matches!(&second, Action::ResumeAfter { wait, note } if *wait == Duration::from_secs(10) && note.ends_with("(2 of 2)")),
            "{second:?}"
        );
        let (third, _) = decide(&unavailable(), "x", next, POLICY);
        assert_eq!(
            third,
            Action::Fail(
                "the agent reported an error: API Error: 529 Overloaded (still failing after 2 retries)"
                    .to_owned()
            )
        );
        // A fresh start that meets an outage resumes afterwards.
        let fresh = Attempts {
            fresh: true,
            ..Attempts::default()
        };
        assert!(!decide(&unavailable(), "x", fresh, POLICY).1.fresh);
    }

    #[test]
    fn retry_counts_read_naturally() {
        for (retries, tail) in [
            (0, ""),
            (1, " (still failing after 1 retry)"),
            (3, " (still failing after 3 retries)"),
        ] {
            let policy = RetryPolicy {
                api_retries: retries,
                ..POLICY
            };
            let spent = Attempts {
                api_failures: retries,
                ..Attempts::default()
            };
            let (action, _) = decide(&unavailable(), "x", spent, policy);
            assert_eq!(
                action,
                Action::Fail(format!(
                    "the agent reported an error: API Error: 529 Overloaded{tail}"
                ))
            );
        }
    }

    #[test]
    fn other_failures_fail_with_their_reason() {
        let other = AgentFailure::Other {
            reason: "bad key".to_owned(),
        };
        let (action, after) = decide(
            &other,
            "the agent reported an error: bad key",
            Attempts::default(),
            POLICY,
        );
        assert_eq!(
            action,
            Action::Fail("the agent reported an error: bad key".to_owned())
        );
        assert_eq!(after, Attempts::default());
    }

    #[test]
    fn waits_double_up_to_ten_minutes() {
        let first = Duration::from_secs(30);
        assert_eq!(api_retry_wait(first, 0), first);
        assert_eq!(api_retry_wait(first, 2), Duration::from_secs(120));
        assert_eq!(api_retry_wait(first, 20), MAX_API_WAIT);
    }

    #[test]
    fn a_usage_limit_holds_the_task_whatever_was_tried() {
        let limit = AgentFailure::UsageLimit {
            resets_at: Some(1_000),
            reason: "You've hit your 5-hour limit".into(),
        };
        let spent = Attempts {
            api_failures: POLICY.api_retries,
            ..Attempts::default()
        };
        for attempts in [Attempts::default(), spent] {
            let (action, next) = decide(&limit, "x", attempts, POLICY);
            assert_eq!(
                action,
                Action::Hold {
                    until: Some(1_000),
                    reason: "You've hit your 5-hour limit".into()
                }
            );
            assert_eq!(next, attempts);
        }
    }
}

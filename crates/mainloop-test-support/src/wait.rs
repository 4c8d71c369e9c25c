//! Waiting on a condition: polled until it holds, or the test fails saying what it
//! waited for. Never a fixed sleep that hopes something has (not) happened by then.

use std::fmt::Display;
use std::time::Duration;

/// How long a condition may take by default: generous, because a loaded machine runs
/// the real CLI and real databases.
pub const TIMEOUT: Duration = Duration::from_secs(60);

const POLL: Duration = Duration::from_millis(25);

/// Polls `check` until it returns `Some`, and returns that; fails the test after
/// [`TIMEOUT`] with "timed out waiting for {what}".
pub async fn wait_for<T>(what: impl Display, check: impl AsyncFnMut() -> Option<T>) -> T {
    wait_for_within(TIMEOUT, what, check).await
}

/// [`wait_for`] with another timeout.
pub async fn wait_for_within<T>(
    timeout: Duration,
    what: impl Display,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` until it returns `Some`, or `None` once `timeout` has passed: for a
/// test that explains a timeout itself.
pub async fn try_wait_for<T>(
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

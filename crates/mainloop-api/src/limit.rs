//! Failed sign-ins per client address: after too many wrong tokens in a window, further
//! attempts from that address are refused with 429 until the window ends, so a token
//! cannot be guessed at network speed (and guessing one address's worth does not lock
//! out anyone else).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens allowed per address per window.
pub const MAX_FAILURES: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Addresses remembered at most; beyond it, expired entries are dropped first.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Default)]
pub struct LoginLimiter {
    /// `None` keys clients whose address is unknown (one shared bucket).
    failures: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl LoginLimiter {
    /// How long `client` must wait, if it is over the limit now.
    pub fn blocked_for(&self, client: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let map = self.failures.lock().ok()?;
        let (start, n) = map.get(&client)?;
        let elapsed = now.saturating_duration_since(*start);
        (*n >= MAX_FAILURES && elapsed < WINDOW).then(|| WINDOW - elapsed)
    }

    /// Counts a wrong token from `client`.
    pub fn record_failure(&self, client: Option<IpAddr>, now: Instant) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
        }
        let entry = map.entry(client).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// A successful sign-in clears the address's count.
    pub fn record_success(&self, client: Option<IpAddr>) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_per_address_until_the_window_ends() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        let a: Option<IpAddr> = Some([10, 0, 0, 1].into());
        let b: Option<IpAddr> = Some([10, 0, 0, 2].into());
        for _ in 0..MAX_FAILURES - 1 {
            l.record_failure(a, t0);
        }
        assert_eq!(l.blocked_for(a, t0), None);
        l.record_failure(a, t0);
        assert_eq!(l.blocked_for(a, t0), Some(WINDOW));
        assert_eq!(l.blocked_for(b, t0), None, "other addresses are unaffected");
        let later = t0 + WINDOW - Duration::from_secs(1);
        assert_eq!(l.blocked_for(a, later), Some(Duration::from_secs(1)));
        assert_eq!(l.blocked_for(a, t0 + WINDOW), None, "the window ends");
        l.record_failure(a, t0 + WINDOW);
        assert_eq!(
            l.blocked_for(a, t0 + WINDOW),
            None,
            "a new window starts at one"
        );
        l.record_success(a);
        assert!(l.failures.lock().unwrap().get(&a).is_none());
    }
}

//! GitHub's rate-limit headers: the last state seen per resource (`core`, `graphql`, …),
//! and the proactive stop when the quota is nearly spent.

use mainloop_forge::ForgeError;
use reqwest::header::HeaderMap;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One resource's quota as the last answer reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// `x-ratelimit-resource`: `core` for REST, `graphql`, `search`, …
    pub resource: String,
    pub limit: Option<u64>,
    pub remaining: u64,
    /// When the quota refills (`x-ratelimit-reset`, Unix seconds).
    pub reset: SystemTime,
}

impl RateLimit {
    /// Reads the headers of any answer; `None` when it carries no rate-limit state
    /// (GitHub Enterprise with rate limiting off, a storage host).
    #[must_use]
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let num = |name: &str| -> Option<u64> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
        };
        let remaining = num("x-ratelimit-remaining")?;
        let reset = UNIX_EPOCH + Duration::from_secs(num("x-ratelimit-reset")?);
        let resource = headers
            .get("x-ratelimit-resource")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("core")
            .to_owned();
        Some(Self {
            resource,
            limit: num("x-ratelimit-limit"),
            remaining,
            reset,
        })
    }
}

/// Time until `reset`, at least a second (clocks differ; retrying at the exact second
/// tends to be early).
#[must_use]
pub fn wait_until(reset: SystemTime, now: SystemTime) -> Duration {
    reset
        .duration_since(now)
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

/// The last state seen per resource, and the rule that spares the remainder.
#[derive(Debug, Default)]
pub struct Limits {
    by_resource: Mutex<HashMap<String, RateLimit>>,
    last: Mutex<Option<RateLimit>>,
}

impl Limits {
    pub fn record(&self, headers: &HeaderMap) {
        let Some(limit) = RateLimit::from_headers(headers) else {
            return;
        };
        if limit.remaining < 100 {
            tracing::debug!(
                resource = %limit.resource,
                remaining = limit.remaining,
                "GitHub rate limit running low"
            );
        }
        self.by_resource
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(limit.resource.clone(), limit.clone());
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(limit);
    }

    pub fn last(&self) -> Option<RateLimit> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn get(&self, resource: &str) -> Option<RateLimit> {
        self.by_resource
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(resource)
            .cloned()
    }

    /// Refuses a request when fewer than `min_remaining` calls are left before the reset:
    /// the rest is kept for answering humans, and the caller's job retries after the
    /// reset anyway. Past the reset the old state says nothing and the request goes out.
    pub fn check(
        &self,
        resource: &str,
        min_remaining: u64,
        now: SystemTime,
    ) -> Result<(), ForgeError> {
        match self.get(resource) {
            Some(limit) if limit.remaining < min_remaining && limit.reset > now => {
                Err(ForgeError::RateLimited(wait_until(limit.reset, now)))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(remaining: &str, reset: &str, resource: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", remaining),
            ("x-ratelimit-reset", reset),
            ("x-ratelimit-used", "1"),
            ("x-ratelimit-resource", resource),
        ] {
            if let Ok(v) = v.parse() {
                h.insert(k, v);
            }
        }
        h
    }

    #[test]
    fn reads_headers() {
        let limit = RateLimit::from_headers(&headers("4999", "1372700873", "core"));
        assert_eq!(
            limit,
            Some(RateLimit {
                resource: "core".into(),
                limit: Some(5000),
                remaining: 4999,
                reset: UNIX_EPOCH + Duration::from_secs(1_372_700_873),
            })
        );
        assert_eq!(RateLimit::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn refuses_below_the_reserve_until_reset_per_resource() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let limits = Limits::default();
        assert!(limits.check("core", 50, now).is_ok());
        limits.record(&headers("49", "1030", "core"));
        limits.record(&headers("4000", "1030", "graphql"));
        assert!(matches!(
            limits.check("core", 50, now),
            Err(ForgeError::RateLimited(d)) if d == Duration::from_secs(30)
        ));
        assert!(limits.check("graphql", 50, now).is_ok());
        assert!(limits.check("core", 0, now).is_ok(), "reserve off");
        let later = UNIX_EPOCH + Duration::from_secs(1031);
        assert!(limits.check("core", 50, later).is_ok(), "after the reset");
        assert_eq!(
            limits.last().map(|l| l.resource),
            Some("graphql".to_owned())
        );
    }
}

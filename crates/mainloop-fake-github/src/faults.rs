//! The faults and limits a test can impose on the fake, and what it counts: primary and
//! secondary rate limits, outages, hangs, and the request statistics.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The primary rate limit to impose on every user.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
pub struct RateLimit {
    pub remaining: u64,
    /// When the window resets, from now.
    #[serde(default = "default_reset")]
    pub reset_in_secs: u64,
}

const fn default_reset() -> u64 {
    3600
}

/// A secondary rate limit: 429 with `retry-after` for a while or for some requests.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
pub struct SecondaryLimit {
    pub retry_after_secs: u64,
    /// Only the next this many requests; otherwise until `retry_after_secs` pass.
    #[serde(default)]
    pub requests: Option<u64>,
}

/// A simulated outage: every API request answers `status`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
pub struct Outage {
    pub status: u16,
    /// Only the next this many requests; otherwise until cleared.
    #[serde(default)]
    pub requests: Option<u64>,
}

/// Requests that hang before they are handled: a slow GitHub, or one that times out.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Hang {
    /// How long each request hangs.
    pub delay_ms: u64,
    /// Then answer this status (a gateway timeout: 502 or 504) instead of the request's
    /// own answer; `None`: answer normally, only late.
    #[serde(default)]
    pub status: Option<u16>,
    /// With `status`: carry the request out first, so the change is made and only its
    /// answer is lost, which a client whose request timed out cannot tell apart from a
    /// change never made.
    #[serde(default)]
    pub applied: bool,
    /// Instead of answering, cut the connection: the status line and the start of the
    /// body go out, then the connection is dropped (with `applied`, after the change was
    /// made). Counted as `hang cut`.
    #[serde(default)]
    pub cut: bool,
    /// Only requests with this method (`POST`, say); every method when unset.
    #[serde(default)]
    pub method: Option<String>,
    /// Only requests to this route, named as in [`Stats::by_route`]
    /// (`POST /repos/{o}/{r}/issues`); every route when unset.
    #[serde(default)]
    pub route: Option<String>,
    /// Only the next this many matching requests; otherwise until cleared.
    #[serde(default)]
    pub requests: Option<u64>,
}

/// What the API has served since the last reset (test-control requests excluded).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Stats {
    pub requests: u64,
    pub not_modified: u64,
    /// `"METHOD /route/{pattern}"` → count.
    pub by_route: BTreeMap<String, u64>,
    /// Faults served on purpose (`"outage 503"`, `"secondary 429"`, `"primary 403"`,
    /// `"hang"`, `"hang 504"`) → count.
    #[serde(default)]
    pub injected: BTreeMap<String, u64>,
}

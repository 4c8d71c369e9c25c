//! Faults a test imposes (failing the next requests, outages) and the request log it
//! reads back, with each request's verb and resource as RBAC names them (also for
//! resources the server does not serve, as the authorizer sees those before the 404).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::collections::VecDeque;

/// Fail the next `count` requests that match with `status` (a `Status` body in the shape
/// the real server gives that code: 500 `InternalError`, 503 `ServiceUnavailable`, 429
/// `TooManyRequests`, 504 `Timeout`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Fault {
    pub status: u16,
    #[serde(default = "one")]
    pub count: u64,
    /// Only requests with this method (`GET`, `POST`, …).
    #[serde(default)]
    pub method: Option<String>,
    /// Only requests whose path contains this.
    #[serde(default)]
    pub path: Option<String>,
    /// Only requests with this RBAC verb (`get`, `list`, `watch`, `create`, …).
    #[serde(default)]
    pub verb: Option<String>,
}

const fn one() -> u64 {
    1
}

impl Fault {
    /// `count` requests of any kind answered `status`.
    #[must_use]
    pub const fn new(status: u16, count: u64) -> Self {
        Self {
            status,
            count,
            method: None,
            path: None,
            verb: None,
        }
    }

    #[must_use]
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    #[must_use]
    pub fn path(mut self, contains: &str) -> Self {
        self.path = Some(contains.to_owned());
        self
    }

    #[must_use]
    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.to_owned());
        self
    }

    fn matches(&self, method: &str, path: &str, verb: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path.as_deref().is_none_or(|p| path.contains(p))
            && self.verb.as_deref().is_none_or(|v| v == verb)
    }
}

/// A whole-server outage.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outage {
    /// Every API request answers 503 `ServiceUnavailable`.
    Unavailable,
    /// The listening socket is closed and open connections are cut: clients get
    /// "connection refused".
    Refuse,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub queue: VecDeque<Fault>,
    pub outage: Option<Outage>,
}

impl Faults {
    /// The status to fail this request with, if any, using up one of its fault's count.
    pub(crate) fn take(&mut self, method: &str, path: &str, verb: &str) -> Option<u16> {
        if self.outage == Some(Outage::Unavailable) {
            return Some(503);
        }
        let i = self
            .queue
            .iter()
            .position(|f| f.count > 0 && f.matches(method, path, verb))?;
        let f = &mut self.queue[i];
        f.count -= 1;
        let status = f.status;
        if f.count == 0 {
            self.queue.remove(i);
        }
        Some(status)
    }
}

/// One API request as the fake served it (control requests under `/_fake` are not
/// logged).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw query string, `""` when none.
    pub query: String,
    pub status: u16,
    /// The RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for non-resource URLs the lower-case method.
    pub verb: String,
    /// The API group (`""` for core) of a resource request; `None` for a non-resource
    /// URL (discovery, `/version`).
    pub group: Option<String>,
    /// The resource (`pods`) of a resource request, also of one the server does not
    /// serve (a CRD not installed: the answer is a 404, the permission still needed).
    pub resource: Option<String>,
    /// The subresource (`status`), if any.
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl RequestRecord {
    /// What an RBAC rule must grant for this request: `(group, resource[/sub], verb)`,
    /// or `None` for a non-resource URL (discovery).
    #[must_use]
    pub fn permission(&self) -> Option<Permission> {
        let resource = self.resource.clone()?;
        let resource = match &self.subresource {
            Some(s) => format!("{resource}/{s}"),
            None => resource,
        };
        Some(Permission {
            group: self.group.clone().unwrap_or_default(),
            resource,
            verb: self.verb.clone(),
        })
    }
}

/// What RBAC names in a request's path: its group, resource, subresource, namespace and
/// name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ResourcePath {
    pub group: String,
    pub resource: String,
    pub sub: Option<String>,
    pub ns: Option<String>,
    pub name: Option<String>,
}

/// The resource a path names, read as the apiserver's `RequestInfoFactory` reads it
/// (whether or not the resource is served: authorization comes before routing, so a
/// request for a CRD that is not installed still needs its permission); `None` for a
/// non-resource URL such as discovery (`/apis/{group}/{version}`).
pub(crate) fn resource_path(path: &str) -> Option<ResourcePath> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, mut parts) = match segs.as_slice() {
        ["api", _, rest @ ..] => ("", rest),
        ["apis", g, _, rest @ ..] => (*g, rest),
        _ => return None,
    };
    let mut ns = None;
    if let ["namespaces", n, tail @ ..] = parts {
        ns = Some((*n).to_owned());
        // `namespaces/{name}/status` and `/finalize` are the namespace's own subresources.
        if !tail.is_empty() && !["status", "finalize"].contains(&tail[0]) {
            parts = tail;
        }
    }
    let (resource, rest) = parts.split_first()?;
    if resource.is_empty() {
        return None;
    }
    Some(ResourcePath {
        group: group.to_owned(),
        resource: (*resource).to_owned(),
        name: rest.first().map(|s| (*s).to_owned()),
        sub: rest.get(1).map(|s| (*s).to_owned()),
        ns,
    })
}

/// An RBAC `(apiGroup, resource, verb)` triple a request needed.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    pub group: String,
    pub resource: String,
    pub verb: String,
}

/// Every permission the requests in `log` needed.
#[must_use]
pub fn permissions(log: &[RequestRecord]) -> BTreeSet<Permission> {
    log.iter().filter_map(RequestRecord::permission).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Option<ResourcePath> {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Some(ResourcePath {
            group: group.into(),
            resource: resource.into(),
            sub: some(sub),
            ns: some(ns),
            name: some(name),
        })
    }

    #[test]
    fn paths_as_rbac_reads_them() {
        for discovery in [
            "/apis/postgresql.cnpg.io/v1",
            "/apis/postgresql.cnpg.io",
            "/api/v1",
            "/version",
        ] {
            assert_eq!(resource_path(discovery), None);
        }
        let cnpg = "postgresql.cnpg.io";
        assert_eq!(
            resource_path("/apis/postgresql.cnpg.io/v1/namespaces/t/clusters/db/status"),
            rp(cnpg, "clusters", "status", "t", "db")
        );
        assert_eq!(
            resource_path("/apis/postgresql.cnpg.io/v1/clusters"),
            rp(cnpg, "clusters", "", "", "")
        );
        assert_eq!(
            resource_path("/api/v1/namespaces/t/status"),
            rp("", "namespaces", "status", "t", "t")
        );
        assert_eq!(
            resource_path("/api/v1/namespaces"),
            rp("", "namespaces", "", "", "")
        );
    }
}

//! The resource types the fake serves (group, version, plural, kind, scope, status
//! subresource, and whether a CRD must be installed for it: CloudNativePG's `Cluster`)
//! and the discovery documents built from the ones served: `/api`, `/apis`, `/api/v1`,
//! `/apis/{group}/{version}`, the aggregated (apidiscovery.k8s.io/v2) lists, and
//! `/version`.

use serde_json::{Value, json};

/// What must be installed in the cluster for a type to be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Needs {
    Nothing,
    /// CloudNativePG's CRDs (`postgresql.cnpg.io`).
    CloudNativePg,
}

/// The optional types this server serves: which CRDs are installed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Served {
    pub cloudnativepg: bool,
}

impl Served {
    pub(crate) const fn has(self, t: &ResType) -> bool {
        match t.needs {
            Needs::Nothing => true,
            Needs::CloudNativePg => self.cloudnativepg,
        }
    }

    /// The served types with their ids.
    fn types(self) -> impl Iterator<Item = (usize, &'static ResType)> {
        TYPES.iter().enumerate().filter(move |(_, t)| self.has(t))
    }
}

/// One resource type.
#[derive(Debug)]
pub(crate) struct ResType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource: writes to the main resource keep the stored
    /// status, writes to `/status` change only the status.
    pub status: bool,
    pub short_names: &'static [&'static str],
    pub needs: Needs,
}

impl ResType {
    /// `v1` or `batch/v1`.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `jobs.batch`, as the API names a resource in its messages.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` or `Job.batch`, as validation messages name a kind.
    pub(crate) fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub(crate) fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const fn rt(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
    short_names: &'static [&'static str],
) -> ResType {
    ResType {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        status,
        short_names,
        needs: Needs::Nothing,
    }
}

/// Every type served. The index of a type in this table is its id in the store.
pub(crate) static TYPES: &[ResType] = &[
    rt(
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        true,
        &["ns"],
    ),
    rt("", "pods", "pod", "Pod", true, true, &["po"]),
    rt("", "secrets", "secret", "Secret", true, false, &[]),
    rt(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        false,
        &["cm"],
    ),
    rt(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        false,
        &["sa"],
    ),
    rt("", "services", "service", "Service", true, true, &["svc"]),
    rt(
        "",
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        true,
        true,
        &["quota"],
    ),
    rt(
        "",
        "limitranges",
        "limitrange",
        "LimitRange",
        true,
        false,
        &["limits"],
    ),
    rt("", "events", "event", "Event", true, false, &["ev"]),
    rt("batch", "jobs", "job", "Job", true, true, &[]),
    rt(
        "networking.k8s.io",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        true,
        false,
        &["netpol"],
    ),
    rt(
        "networking.k8s.io",
        "ingresses",
        "ingress",
        "Ingress",
        true,
        true,
        &["ing"],
    ),
    rt(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        true,
        false,
        &[],
    ),
    // As CloudNativePG's CRD declares it: no short names; its `scale` subresource is not
    // served here.
    ResType {
        needs: Needs::CloudNativePg,
        ..rt(
            "postgresql.cnpg.io",
            "clusters",
            "cluster",
            "Cluster",
            true,
            true,
            &[],
        )
    },
];

pub(crate) const NAMESPACES: usize = 0;
pub(crate) const PODS: usize = 1;
pub(crate) const SECRETS: usize = 2;
pub(crate) const CONFIGMAPS: usize = 3;
pub(crate) const SERVICEACCOUNTS: usize = 4;
pub(crate) const JOBS: usize = 9;
pub(crate) const CLUSTERS: usize = 13;

/// The type served at `group/version/plural`.
pub(crate) fn find(s: Served, group: &str, version: &str, plural: &str) -> Option<usize> {
    s.types()
        .find(|(_, t)| t.group == group && t.version == version && t.plural == plural)
        .map(|(i, _)| i)
}

/// The served type whose objects have this `apiVersion` and `kind`.
pub(crate) fn find_kind(s: Served, api_version: &str, kind: &str) -> Option<usize> {
    s.types()
        .find(|(_, t)| t.api_version() == api_version && t.kind == kind)
        .map(|(i, _)| i)
}

/// The API groups other than core, in table order, without repeats.
fn groups(s: Served) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (_, t) in s.types() {
        if !t.group.is_empty() && !out.contains(&t.group) {
            out.push(t.group);
        }
    }
    out
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn api_resource(t: &ResType) -> Vec<Value> {
    let mut out = vec![json!({
        "name": t.plural,
        "singularName": t.singular,
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": VERBS,
        "shortNames": t.short_names,
        "storageVersionHash": "",
    })];
    if t.status {
        out.push(json!({
            "name": format!("{}/status", t.plural),
            "singularName": "",
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    out
}

/// `APIResourceList` for `group/version`, or `None` when nothing is served there.
pub(crate) fn resource_list(s: Served, group: &str, version: &str) -> Option<Value> {
    let types: Vec<&ResType> = s
        .types()
        .map(|(_, t)| t)
        .filter(|t| t.group == group && t.version == version)
        .collect();
    let first = types.first()?;
    let resources: Vec<Value> = types.iter().flat_map(|t| api_resource(t)).collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": first.api_version(),
        "resources": resources,
    }))
}

fn group_doc(group: &str) -> Value {
    let gv = || json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [gv()], "preferredVersion": gv()})
}

/// `APIGroup` for `/apis/{group}`.
pub(crate) fn group(s: Served, group: &str) -> Option<Value> {
    if !groups(s).contains(&group) {
        return None;
    }
    let mut doc = group_doc(group);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `APIVersions` for `/api`.
pub(crate) fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

/// `APIGroupList` for `/apis`.
pub(crate) fn group_list(s: Served) -> Value {
    let groups: Vec<Value> = groups(s).into_iter().map(group_doc).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The aggregated discovery document (`APIGroupDiscoveryList`, apidiscovery.k8s.io/v2)
/// for `/api` (`core`) or `/apis`.
pub(crate) fn aggregated(s: Served, core: bool) -> Value {
    let names: Vec<&str> = if core { vec![""] } else { groups(s) };
    let items: Vec<Value> = names
        .into_iter()
        .map(|g| {
            let resources: Vec<Value> = s
                .types()
                .map(|(_, t)| t)
                .filter(|t| t.group == g)
                .map(|t| {
                    let kind = json!({"group": t.group, "version": t.version, "kind": t.kind});
                    let subresources: Vec<Value> = if t.status {
                        vec![json!({
                            "subresource": "status",
                            "responseKind": kind,
                            "verbs": ["get", "patch", "update"],
                        })]
                    } else {
                        Vec::new()
                    };
                    json!({
                        "resource": t.plural,
                        "responseKind": kind,
                        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": t.singular,
                        "verbs": VERBS,
                        "shortNames": t.short_names,
                        "subresources": subresources,
                    })
                })
                .collect();
            json!({
                "metadata": {"name": g, "creationTimestamp": null},
                "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// `/version`: a Kubernetes 1.33 server.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_types() {
        for (id, plural) in [
            (NAMESPACES, "namespaces"),
            (PODS, "pods"),
            (SECRETS, "secrets"),
            (CONFIGMAPS, "configmaps"),
            (SERVICEACCOUNTS, "serviceaccounts"),
            (JOBS, "jobs"),
            (CLUSTERS, "clusters"),
        ] {
            assert_eq!(TYPES[id].plural, plural);
        }
    }

    #[test]
    fn cloudnativepg_is_served_only_when_installed() {
        let off = Served::default();
        let on = Served {
            cloudnativepg: true,
        };
        assert_eq!(find(off, "postgresql.cnpg.io", "v1", "clusters"), None);
        assert_eq!(
            find(on, "postgresql.cnpg.io", "v1", "clusters"),
            Some(CLUSTERS)
        );
        assert!(group(off, "postgresql.cnpg.io").is_none());
        assert!(resource_list(off, "postgresql.cnpg.io", "v1").is_none());
        assert!(!group_list(off).to_string().contains("cnpg"));
        assert!(group_list(on).to_string().contains("postgresql.cnpg.io"));
        assert!(!aggregated(off, false).to_string().contains("cnpg"));
    }
}

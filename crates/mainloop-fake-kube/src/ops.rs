//! The write verbs on the state, shared by the HTTP API and the fake's own controllers:
//! create (with the namespace admission checks), replace (optimistic concurrency),
//! patch (merge, JSON, apply as create-or-merge) and delete (per-kind: namespaces
//! terminate, Jobs propagate to their pods, pods stop their runner, Clusters go to the
//! operator hook and leave it).

use crate::Error;
use crate::kinds;
use crate::meta;
use crate::patch::{self, PatchKind};
use crate::resources::{CLUSTERS, JOBS, NAMESPACES, PODS, SERVICEACCOUNTS, TYPES};
use crate::state::{Effect, PodRun, State};
use crate::status;
use crate::store::Key;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// What a delete request carries (`DeleteOptions`, as kube-rs sends it in the body).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeleteOpts {
    #[serde(default)]
    pub propagation_policy: Option<String>,
    #[serde(default)]
    pub orphan_dependents: Option<bool>,
    #[serde(default)]
    pub preconditions: Option<Preconditions>,
    #[serde(default)]
    pub dry_run: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Preconditions {
    #[serde(default)]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
}

/// A namespace's phase, as the admission check sees it.
pub(crate) fn ns_phase(st: &State, ns: &str) -> Option<String> {
    st.store
        .get(&Key::new(NAMESPACES, "", ns))
        .map(|n| n["status"]["phase"].as_str().unwrap_or("Active").to_owned())
}

fn rv_of(v: &Value) -> &str {
    v["metadata"]["resourceVersion"].as_str().unwrap_or("")
}

fn name_of(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

impl State {
    /// POST: creates an object in `ns` (`""` for cluster-scoped types).
    pub(crate) fn create(
        &mut self,
        rt: usize,
        ns: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, Error> {
        let t = &TYPES[rt];
        meta::prepare_new(rt, ns, &mut obj)?;
        let name = name_of(&obj).to_owned();
        if t.namespaced {
            match ns_phase(self, ns).as_deref() {
                None => return Err(Error::not_found(&TYPES[NAMESPACES], ns)),
                Some("Terminating") => return Err(Error::namespace_terminating(t, &name, ns)),
                Some(_) => {}
            }
        }
        kinds::on_create(rt, &mut obj)?;
        let key = Key::new(rt, if t.namespaced { ns } else { "" }, &name);
        if self.store.get(&key).is_some() {
            return Err(Error::already_exists(t, &name));
        }
        if dry_run {
            return Ok(obj);
        }
        let created = self.store.create(key, obj);
        match rt {
            NAMESPACES => {
                // The service account controller gives every namespace a `default`.
                let sa = json!({"metadata": {"name": "default"}});
                let _ = self.create(SERVICEACCOUNTS, &name, sa, false);
            }
            PODS => self.on_pod_created(ns, &name),
            JOBS => self.reconcile_job(ns, &name),
            CLUSTERS => self.effects.push(Effect::StartCluster {
                ns: ns.to_owned(),
                name: name.clone(),
                uid: created["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
            }),
            _ => {}
        }
        Ok(self
            .store
            .get(&Key::new(rt, &created_ns(&created), &name))
            .cloned()
            .unwrap_or(created))
    }

    /// PUT: replaces an object (or, with `status`, its status).
    pub(crate) fn replace(
        &mut self,
        rt: usize,
        ns: &str,
        name: &str,
        mut body: Value,
        status_sub: bool,
        dry_run: bool,
    ) -> Result<Value, Error> {
        let t = &TYPES[rt];
        meta::check_types(t, &mut body)?;
        let key = Key::new(rt, ns, name);
        let old = self
            .store
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::not_found(t, name))?;
        let body_name = name_of(&body);
        if !body_name.is_empty() && body_name != name {
            return Err(Error::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let want_rv = rv_of(&body);
        if !want_rv.is_empty() && want_rv != rv_of(&old) {
            return Err(Error::stale(t, name));
        }
        self.write(rt, &key, &old, body, status_sub, dry_run)
    }

    /// The common end of replace and patch: the new object from the body, checked and
    /// stored.
    fn write(
        &mut self,
        rt: usize,
        key: &Key,
        old: &Value,
        body: Value,
        status_sub: bool,
        dry_run: bool,
    ) -> Result<Value, Error> {
        let mut new = if status_sub {
            kinds::on_status_update(old, &body)
        } else {
            body
        };
        meta::carry_over(old, &mut new);
        if !status_sub {
            kinds::on_update(rt, old, &mut new)?;
        }
        if dry_run {
            return Ok(new);
        }
        let stored = self.store.update(key.clone(), new);
        match rt {
            PODS => self.on_pod_changed(&stored),
            JOBS => self.reconcile_job(&key.ns, &key.name),
            _ => {}
        }
        Ok(self.store.get(key).cloned().unwrap_or(stored))
    }

    /// PATCH: returns the object and whether an apply created it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        rt: usize,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &Value,
        status_sub: bool,
        dry_run: bool,
    ) -> Result<(Value, bool), Error> {
        let t = &TYPES[rt];
        let key = Key::new(rt, ns, name);
        let Some(old) = self.store.get(&key).cloned() else {
            if kind == PatchKind::Apply && !status_sub {
                let body_name = name_of(body);
                if body_name != name {
                    return Err(Error::bad_request(format!(
                        "the name of the object ({body_name}) does not match the name on the URL ({name})"
                    )));
                }
                return self
                    .create(rt, ns, body.clone(), dry_run)
                    .map(|o| (o, true));
            }
            return Err(Error::not_found(t, name));
        };
        let mut new = old.clone();
        match kind {
            PatchKind::Merge | PatchKind::Strategic => patch::merge(&mut new, body),
            PatchKind::Apply => {
                let mut b = body.clone();
                meta::check_types(t, &mut b)?;
                if name_of(&b) != name {
                    return Err(Error::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        name_of(&b)
                    )));
                }
                patch::merge(&mut new, &b);
            }
            PatchKind::Json => patch::json_patch(&mut new, body)?,
        }
        let want_rv = rv_of(&new);
        if !want_rv.is_empty() && want_rv != rv_of(&old) {
            return Err(Error::stale(t, name));
        }
        self.write(rt, &key, &old, new, status_sub, dry_run)
            .map(|o| (o, false))
    }

    /// DELETE: the response body (the object, or a `Success` status).
    pub(crate) fn delete(
        &mut self,
        rt: usize,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, Error> {
        let t = &TYPES[rt];
        let key = Key::new(rt, ns, name);
        let old = self
            .store
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::not_found(t, name))?;
        let uid = old["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        if let Some(p) = &opts.preconditions {
            if let Some(want) = p.uid.as_deref().filter(|u| *u != uid) {
                return Err(Error::conflict(
                    t,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                    ),
                ));
            }
            if p.resource_version
                .as_deref()
                .is_some_and(|v| v != rv_of(&old))
            {
                return Err(Error::conflict(
                    t,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                        p.resource_version.as_deref().unwrap_or(""),
                        rv_of(&old)
                    ),
                ));
            }
        }
        if opts.dry_run.as_ref().is_some_and(|d| !d.is_empty()) {
            return Ok(status::success(t, name, &uid));
        }
        match rt {
            NAMESPACES => self.terminate_namespace(name),
            JOBS => Ok(self.delete_job(ns, name, opts)),
            // A pod's deletion answers with the pod (marked for deletion).
            PODS => Ok(self.remove(&key).unwrap_or(old)),
            _ => {
                self.remove(&key);
                Ok(status::success(t, name, &uid))
            }
        }
    }

    /// Removes an object outright: for a pod, its runner is told to stop and its Job
    /// takes note; a Cluster takes its `-app` Secret along and the operator hook hears
    /// of it.
    pub(crate) fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut gone = self.store.get(key).cloned()?;
        // A pod is first marked for deletion (MODIFIED), then removed (DELETED).
        if key.rt == PODS && gone["metadata"]["deletionTimestamp"].is_null() {
            gone["metadata"]["deletionTimestamp"] = json!(meta::now());
            gone["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            self.store.update(key.clone(), gone);
        }
        let gone = self.store.delete(key)?;
        if key.rt == PODS {
            let uid = gone["metadata"]["uid"].as_str().unwrap_or("");
            if let Some(run) = self.pods.remove(uid) {
                run.stop.cancel();
            }
            self.on_pod_changed(&gone);
        }
        if key.rt == CLUSTERS {
            self.on_cluster_removed(&gone);
        }
        Some(gone)
    }

    /// A new pod: "scheduled" at once onto the one fake node, then handed to the runner.
    fn on_pod_created(&mut self, ns: &str, name: &str) {
        let key = Key::new(PODS, ns, name);
        let Some(mut pod) = self.store.get(&key).cloned() else {
            return;
        };
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        pod["spec"]["nodeName"] = json!(crate::pods::NODE);
        pod["status"]["conditions"] = json!([{
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": null,
            "lastTransitionTime": meta::now(),
        }]);
        self.store.update(key, pod);
        self.pods.insert(
            uid,
            PodRun {
                ns: ns.to_owned(),
                name: name.to_owned(),
                stop: CancellationToken::new(),
            },
        );
        self.effects.push(Effect::StartPod {
            ns: ns.to_owned(),
            name: name.to_owned(),
        });
    }
}

fn created_ns(obj: &Value) -> String {
    obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

//! Pods in place of a kubelet: the [`PodRunner`] hook a test supplies to "run" each new
//! pod (say, as a local process), the [`PodHandle`] it reports through (Running, with
//! `Config::pod_ip` or an IP of its own, then Succeeded or Failed with an exit code), kills (the pod fails as when its node dies),
//! and what a runner needs from the pod spec: its environment and mounted files
//! resolved from Secrets and ConfigMaps.

use crate::Error;
use crate::meta;
use crate::resources::{CONFIGMAPS, PODS, SECRETS, TYPES};
use crate::state::{Shared, State};
use crate::store::Key;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use tokio_util::sync::CancellationToken;

/// The one node pods are "scheduled" on.
pub(crate) const NODE: &str = "fake-node";

/// Starts pods. Called once for each pod the fake creates (by a Job or directly), just
/// after it is scheduled, outside the fake's lock; it must not block: spawn the work and
/// report through the handle.
pub trait PodRunner: Send + Sync + 'static {
    fn start(&self, pod: PodHandle);
}

impl<F: Fn(PodHandle) + Send + Sync + 'static> PodRunner for F {
    fn start(&self, pod: PodHandle) {
        self(pod);
    }
}

/// One pod, as its runner sees it.
#[derive(Clone)]
pub struct PodHandle {
    shared: Weak<Shared>,
    namespace: String,
    name: String,
    uid: String,
    pod: Value,
    stop: CancellationToken,
}

impl std::fmt::Debug for PodHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodHandle")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

/// A pod's state change, reported by its runner or imposed by the test.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Transition {
    Running,
    Exited(i32),
    Killed,
}

impl PodHandle {
    pub(crate) fn new(shared: &Arc<Shared>, ns: &str, name: &str) -> Option<Self> {
        shared.read(|st| {
            let pod = st.store.get(&Key::new(PODS, ns, name))?.clone();
            let uid = pod["metadata"]["uid"].as_str()?.to_owned();
            let stop = st.pods.get(&uid)?.stop.clone();
            Some(Self {
                shared: Arc::downgrade(shared),
                namespace: ns.to_owned(),
                name: name.to_owned(),
                uid,
                pod,
                stop,
            })
        })
    }

    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    #[must_use]
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The pod as it was when handed to the runner.
    #[must_use]
    pub const fn pod(&self) -> &Value {
        &self.pod
    }

    /// The pod as stored now; `None` once deleted.
    #[must_use]
    pub fn current(&self) -> Option<Value> {
        let shared = self.shared.upgrade()?;
        shared
            .read(|st| {
                st.store
                    .get(&Key::new(PODS, &self.namespace, &self.name))
                    .cloned()
            })
            .filter(|p| p["metadata"]["uid"] == self.uid)
    }

    /// The label `job-name`, for pods of a Job.
    #[must_use]
    pub fn job_name(&self) -> Option<&str> {
        self.pod["metadata"]["labels"]["job-name"].as_str()
    }

    /// Resolves when the pod must stop: deleted (by a client, its Job, or its
    /// namespace), killed, or finished.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    fn transition(&self, t: Transition) -> Result<(), Error> {
        let shared = self.shared.upgrade().ok_or_else(gone_fake)?;
        shared.with(|st| st.pod_transition(&self.namespace, &self.name, &self.uid, t))
    }

    /// The containers started: phase `Running`, containers ready.
    ///
    /// # Errors
    /// When the pod is gone or already finished.
    pub fn set_running(&self) -> Result<(), Error> {
        self.transition(Transition::Running)
    }

    /// The containers exited with `code`: `Succeeded` for 0, `Failed` otherwise, with
    /// the code in `status.containerStatuses[*].state.terminated.exitCode`.
    ///
    /// # Errors
    /// When the pod is gone or already finished.
    pub fn finish(&self, code: i32) -> Result<(), Error> {
        self.transition(Transition::Exited(code))
    }

    /// `finish(0)`.
    ///
    /// # Errors
    /// As [`PodHandle::finish`].
    pub fn succeed(&self) -> Result<(), Error> {
        self.finish(0)
    }

    /// The pod dies as when its node is lost: `Failed`, exit code 137, reason
    /// `NodeLost`; the runner is told to stop.
    ///
    /// # Errors
    /// When the pod is gone or already finished.
    pub fn kill(&self) -> Result<(), Error> {
        self.transition(Transition::Killed)
    }

    /// The environment of a container (the first when `container` is `None`), resolved
    /// as the kubelet does: `env[].value`, `valueFrom` (`secretKeyRef`,
    /// `configMapKeyRef`, `fieldRef` to the pod's metadata and spec), and `envFrom`.
    ///
    /// # Errors
    /// When a referenced Secret, ConfigMap or key is missing (and not `optional`).
    pub fn env(&self, container: Option<&str>) -> Result<Vec<(String, String)>, Error> {
        let shared = self.shared.upgrade().ok_or_else(gone_fake)?;
        let c = self.container(container)?;
        shared.read(|st| resolve_env(st, &self.pod, &c))
    }

    /// The files a container's Secret and ConfigMap volumes hold, as
    /// `(mountPath/key, bytes)` (with `items` and `subPath` honoured).
    ///
    /// # Errors
    /// When a referenced Secret or ConfigMap is missing (and not `optional`).
    pub fn volume_files(&self, container: Option<&str>) -> Result<Vec<(PathBuf, Vec<u8>)>, Error> {
        let shared = self.shared.upgrade().ok_or_else(gone_fake)?;
        let c = self.container(container)?;
        shared.read(|st| resolve_files(st, &self.pod, &c))
    }

    fn container(&self, name: Option<&str>) -> Result<Value, Error> {
        let cs = self.pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        match name {
            None => cs.into_iter().next(),
            Some(n) => cs.into_iter().find(|c| c["name"] == n),
        }
        .ok_or_else(|| Error::bad_request(format!("pod {} has no container {name:?}", self.name)))
    }
}

fn gone_fake() -> Error {
    Error::unavailable()
}

fn container_statuses(pod: &Value, state: &Value, ready: bool, started: bool) -> Value {
    let cs = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let out: Vec<Value> = cs
        .iter()
        .map(|c| {
            json!({
                "name": c["name"],
                "image": c["image"],
                "imageID": format!("{}@sha256:0000", c["image"].as_str().unwrap_or("")),
                "containerID": format!("containerd://{}", pod["metadata"]["uid"].as_str().unwrap_or("").replace('-', "")),
                "ready": ready,
                "started": started,
                "restartCount": 0,
                "state": state,
                "lastState": {},
            })
        })
        .collect();
    json!(out)
}

fn pod_conditions(ready: bool, reason: Option<&str>, now: &str) -> Value {
    let cond = |t: &str, ok: bool| {
        let mut c = json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
        if let (false, Some(r)) = (ok, reason) {
            c["reason"] = json!(r);
        }
        c
    };
    json!([
        cond("PodReadyToStartContainers", true),
        cond("Initialized", true),
        cond("Ready", ready),
        cond("ContainersReady", ready),
        cond("PodScheduled", true),
    ])
}

impl State {
    pub(crate) fn pod_transition(
        &mut self,
        ns: &str,
        name: &str,
        uid: &str,
        t: Transition,
    ) -> Result<(), Error> {
        let key = Key::new(PODS, ns, name);
        let mut pod = self
            .store
            .get(&key)
            .filter(|p| p["metadata"]["uid"] == uid)
            .cloned()
            .ok_or_else(|| Error::not_found(&TYPES[PODS], name))?;
        let phase = pod["status"]["phase"]
            .as_str()
            .unwrap_or("Pending")
            .to_owned();
        if phase == "Succeeded" || phase == "Failed" {
            return Err(Error::conflict(
                &TYPES[PODS],
                name,
                &format!("the pod has already finished ({phase})"),
            ));
        }
        let now = meta::now();
        let started = pod["status"]["startTime"]
            .as_str()
            .unwrap_or(&now)
            .to_owned();
        let status = &mut pod["status"];
        status["startTime"] = json!(started);
        status["hostIP"] = json!("10.0.0.1");
        status["hostIPs"] = json!([{"ip": "10.0.0.1"}]);
        let ip = self.pod_ip.map_or_else(
            || {
                let octet = uid
                    .bytes()
                    .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
                    % 250
                    + 2;
                format!("10.244.0.{octet}")
            },
            |ip| ip.to_string(),
        );
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
        let end = match t {
            Transition::Running => None,
            Transition::Exited(0) => Some((0, "Completed", false)),
            Transition::Exited(code) => Some((code, "Error", false)),
            Transition::Killed => Some((137, "Error", true)),
        };
        match end {
            None => {
                status["phase"] = json!("Running");
                status["conditions"] = pod_conditions(true, None, &now);
                let cs =
                    container_statuses(&pod, &json!({"running": {"startedAt": now}}), true, true);
                pod["status"]["containerStatuses"] = cs;
            }
            Some((code, reason, killed)) => {
                status["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
                status["conditions"] = pod_conditions(false, Some("PodCompleted"), &now);
                if killed {
                    status["reason"] = json!("NodeLost");
                    status["message"] = json!(format!(
                        "Node {NODE} which was running pod {name} is unresponsive"
                    ));
                }
                let term = json!({"terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "startedAt": started,
                    "finishedAt": now,
                    "containerID": format!("containerd://{}", uid.replace('-', "")),
                }});
                let cs = container_statuses(&pod, &term, false, false);
                pod["status"]["containerStatuses"] = cs;
                if let Some(run) = self.pods.remove(uid) {
                    run.stop.cancel();
                }
            }
        }
        let stored = self.store.update(key, pod);
        self.on_pod_changed(&stored);
        Ok(())
    }
}

fn lookup<'a>(st: &'a State, rt: usize, ns: &str, name: &str) -> Option<&'a Value> {
    st.store.get(&Key::new(rt, ns, name))
}

/// The value of `key` in a Secret (decoded) or ConfigMap.
fn data_value(obj: &Value, rt: usize, key: &str) -> Option<Vec<u8>> {
    if rt == SECRETS {
        obj["data"][key]
            .as_str()
            .and_then(|s| STANDARD.decode(s).ok())
    } else {
        obj["data"][key]
            .as_str()
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| {
                obj["binaryData"][key]
                    .as_str()
                    .and_then(|s| STANDARD.decode(s).ok())
            })
    }
}

fn all_data(obj: &Value, rt: usize) -> Vec<(String, Vec<u8>)> {
    let mut keys: Vec<String> = obj["data"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if rt == CONFIGMAPS {
        keys.extend(
            obj["binaryData"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default(),
        );
    }
    keys.into_iter()
        .filter_map(|k| data_value(obj, rt, &k).map(|v| (k, v)))
        .collect()
}

fn missing(rt: usize, name: &str) -> Error {
    Error::not_found(&TYPES[rt], name)
}

fn resolve_env(st: &State, pod: &Value, c: &Value) -> Result<Vec<(String, String)>, Error> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String| {
        out.retain(|(n, _)| *n != k);
        out.push((k, v));
    };
    for from in c["envFrom"].as_array().cloned().unwrap_or_default() {
        let prefix = from["prefix"].as_str().unwrap_or("");
        for (field, rt) in [("secretRef", SECRETS), ("configMapRef", CONFIGMAPS)] {
            let r = &from[field];
            let Some(name) = r["name"].as_str() else {
                continue;
            };
            match lookup(st, rt, ns, name) {
                Some(obj) => {
                    for (k, v) in all_data(obj, rt) {
                        set(
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        );
                    }
                }
                None if r["optional"] == json!(true) => {}
                None => return Err(missing(rt, name)),
            }
        }
    }
    for e in c["env"].as_array().cloned().unwrap_or_default() {
        let name = e["name"].as_str().unwrap_or("").to_owned();
        if let Some(v) = e["value"].as_str() {
            set(name, v.to_owned());
            continue;
        }
        let vf = &e["valueFrom"];
        let value = if let Some(path) = vf["fieldRef"]["fieldPath"].as_str() {
            Some(field_value(pod, path))
        } else {
            let (r, rt) = if vf["secretKeyRef"].is_object() {
                (&vf["secretKeyRef"], SECRETS)
            } else {
                (&vf["configMapKeyRef"], CONFIGMAPS)
            };
            let obj_name = r["name"].as_str().unwrap_or("");
            let key = r["key"].as_str().unwrap_or("");
            let found = lookup(st, rt, ns, obj_name).and_then(|o| data_value(o, rt, key));
            match found {
                Some(v) => Some(String::from_utf8_lossy(&v).into_owned()),
                None if r["optional"] == json!(true) => None,
                None if r.is_object() => return Err(missing(rt, obj_name)),
                None => Some(String::new()),
            }
        };
        if let Some(v) = value {
            set(name, v);
        }
    }
    Ok(out)
}

fn field_value(pod: &Value, path: &str) -> String {
    if let Some(rest) = path
        .strip_prefix("metadata.labels['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return pod["metadata"]["labels"][rest]
            .as_str()
            .unwrap_or("")
            .to_owned();
    }
    if let Some(rest) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return pod["metadata"]["annotations"][rest]
            .as_str()
            .unwrap_or("")
            .to_owned();
    }
    let mut v = pod;
    for seg in path.split('.') {
        v = &v[seg];
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn resolve_files(st: &State, pod: &Value, c: &Value) -> Result<Vec<(PathBuf, Vec<u8>)>, Error> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for m in c["volumeMounts"].as_array().cloned().unwrap_or_default() {
        let Some(vol) = volumes.iter().find(|v| v["name"] == m["name"]) else {
            continue;
        };
        let (src, rt, name) = if vol["secret"].is_object() {
            (
                &vol["secret"],
                SECRETS,
                vol["secret"]["secretName"].as_str().unwrap_or(""),
            )
        } else if vol["configMap"].is_object() {
            (
                &vol["configMap"],
                CONFIGMAPS,
                vol["configMap"]["name"].as_str().unwrap_or(""),
            )
        } else {
            continue;
        };
        let Some(obj) = lookup(st, rt, ns, name) else {
            if src["optional"] == json!(true) {
                continue;
            }
            return Err(missing(rt, name));
        };
        let files: Vec<(String, Vec<u8>)> = match src["items"].as_array() {
            Some(items) => items
                .iter()
                .filter_map(|i| {
                    let k = i["key"].as_str()?;
                    Some((
                        i["path"].as_str().unwrap_or(k).to_owned(),
                        data_value(obj, rt, k)?,
                    ))
                })
                .collect(),
            None => all_data(obj, rt),
        };
        let mount = PathBuf::from(m["mountPath"].as_str().unwrap_or("/"));
        match m["subPath"].as_str().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if let Some((_, v)) = files.into_iter().find(|(p, _)| p == sub) {
                    out.push((mount, v));
                }
            }
            None => out.extend(files.into_iter().map(|(p, v)| (mount.join(p), v))),
        }
    }
    Ok(out)
}

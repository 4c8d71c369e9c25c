//! The Job controller: a Job gets its pods (`<job>-<5 chars>`, labelled and owned as
//! the real controller does), its status follows them (`active`, `ready`, `succeeded`,
//! `failed`, `startTime`, `completionTime`, conditions `SuccessCriteriaMet`/`Complete`
//! or `FailureTarget`/`Failed`), a failed pod is replaced while `backoffLimit` allows,
//! `activeDeadlineSeconds` and `ttlSecondsAfterFinished` are kept, and a deleted Job's
//! pods follow the propagation policy (Orphan by default for batch/v1, as upstream).

use crate::meta;
use crate::ops::{DeleteOpts, ns_phase};
use crate::resources::{JOBS, PODS, TYPES};
use crate::state::{Effect, State, Timer};
use crate::status;
use crate::store::Key;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

/// What the controller remembers of a Job's pods.
#[derive(Debug, Default)]
pub(crate) struct JobTrack {
    /// Pods counted as succeeded or failed.
    counted: HashSet<String>,
    /// Pods seen alive; one that vanishes uncounted counts as failed.
    alive: HashSet<String>,
    succeeded: i64,
    failed: i64,
    deadline_set: bool,
}

fn owner_job(pod: &Value) -> Option<(String, String)> {
    let refs = pod["metadata"]["ownerReferences"].as_array()?;
    let r = refs
        .iter()
        .find(|r| r["kind"] == "Job" && r["apiVersion"] == "batch/v1")?;
    Some((
        r["name"].as_str()?.to_owned(),
        r["uid"].as_str()?.to_owned(),
    ))
}

fn condition(kind: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": kind,
        "status": "True",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    })
}

fn is_finished(job: &Value) -> bool {
    job["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
    })
}

fn int(v: &Value, default: i64) -> i64 {
    v.as_i64().unwrap_or(default)
}

impl State {
    /// A pod changed or went away: its Job (if any) takes note.
    pub(crate) fn on_pod_changed(&mut self, pod: &Value) {
        if let Some((job, _)) = owner_job(pod) {
            let ns = pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            self.reconcile_job(&ns, &job);
        }
    }

    /// Brings a Job's pods and status in line with its spec.
    pub(crate) fn reconcile_job(&mut self, ns: &str, name: &str) {
        let key = Key::new(JOBS, ns, name);
        let Some(job) = self.store.get(&key).cloned() else {
            return;
        };
        if !job["metadata"]["deletionTimestamp"].is_null() || is_finished(&job) {
            return;
        }
        let uid = job["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        let pods: Vec<Value> = self
            .store
            .list(PODS, Some(ns))
            .into_iter()
            .map(|(_, p)| p.clone())
            .filter(|p| owner_job(p).is_some_and(|(_, u)| u == uid))
            .collect();
        let track = self.jobs.entry(uid.clone()).or_default();
        let mut present = HashSet::new();
        let mut active: Vec<Value> = Vec::new();
        let mut ready = 0;
        for p in &pods {
            let pod_uid = p["metadata"]["uid"].as_str().unwrap_or("").to_owned();
            present.insert(pod_uid.clone());
            match p["status"]["phase"].as_str() {
                Some("Succeeded") => {
                    track.alive.remove(&pod_uid);
                    if track.counted.insert(pod_uid) {
                        track.succeeded += 1;
                    }
                }
                Some("Failed") => {
                    track.alive.remove(&pod_uid);
                    if track.counted.insert(pod_uid) {
                        track.failed += 1;
                    }
                }
                _ => {
                    if p["metadata"]["deletionTimestamp"].is_null() {
                        if p["status"]["phase"] == "Running" {
                            ready += 1;
                        }
                        track.alive.insert(pod_uid);
                        active.push(p.clone());
                    }
                }
            }
        }
        let vanished: Vec<String> = track.alive.difference(&present).cloned().collect();
        for u in vanished {
            track.alive.remove(&u);
            if track.counted.insert(u) {
                track.failed += 1;
            }
        }
        let (succeeded, failed) = (track.succeeded, track.failed);
        let spec = &job["spec"];
        let completions = int(&spec["completions"], 1);
        let parallelism = int(&spec["parallelism"], 1);
        let backoff = int(&spec["backoffLimit"], 6);
        let now = meta::now();
        let start = job["status"]["startTime"]
            .as_str()
            .unwrap_or(&now)
            .to_owned();
        let mut deadline_wait = None;
        let mut end: Option<(bool, &str, &str)> = None;
        if let Some(ads) = spec["activeDeadlineSeconds"].as_i64() {
            let elapsed = meta::parse_time(&start)
                .map(|s| (time::OffsetDateTime::now_utc() - s).whole_milliseconds())
                .unwrap_or(0);
            let left = i128::from(ads) * 1000 - elapsed;
            if left <= 0 {
                end = Some((
                    false,
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ));
            } else if !track.deadline_set {
                track.deadline_set = true;
                deadline_wait = Some(u64::try_from(left).unwrap_or(0));
            }
        }
        if end.is_none() {
            if succeeded >= completions {
                end = Some((
                    true,
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ));
            } else if failed > backoff {
                end = Some((
                    false,
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ));
            }
        }
        if let Some(ms) = deadline_wait {
            self.effects.push(Effect::After(
                Duration::from_millis(ms),
                Timer::ReconcileJob {
                    ns: ns.to_owned(),
                    name: name.to_owned(),
                },
            ));
        }
        let mut status = json!({
            "startTime": start,
            "ready": 0,
            "terminating": 0,
            "uncountedTerminatedPods": {},
        });
        if let Some((ok, reason, message)) = end {
            for p in &active {
                let pk = Key::new(PODS, ns, p["metadata"]["name"].as_str().unwrap_or(""));
                self.remove_quietly(&pk);
            }
            let conds = if ok {
                status["completionTime"] = json!(now);
                vec![
                    condition("SuccessCriteriaMet", reason, message, &now),
                    condition("Complete", reason, message, &now),
                ]
            } else {
                vec![
                    condition("FailureTarget", reason, message, &now),
                    condition("Failed", reason, message, &now),
                ]
            };
            status["conditions"] = json!(conds);
            if let Some(ttl) = spec["ttlSecondsAfterFinished"].as_u64() {
                self.effects.push(Effect::After(
                    Duration::from_secs(ttl),
                    Timer::DeleteJob {
                        ns: ns.to_owned(),
                        name: name.to_owned(),
                        uid,
                    },
                ));
            }
        } else {
            let suspended = spec["suspend"] == json!(true);
            let want = (parallelism.min(completions - succeeded) - active.len() as i64).max(0);
            let open = ns_phase(self, ns).as_deref() == Some("Active");
            if !suspended && open {
                for _ in 0..want {
                    if let Some(pod) = self.job_pod(&job) {
                        active.push(pod);
                    }
                }
            }
            status["ready"] = json!(ready);
            if !active.is_empty() {
                status["active"] = json!(active.len());
            }
        }
        if succeeded > 0 {
            status["succeeded"] = json!(succeeded);
        }
        if failed > 0 {
            status["failed"] = json!(failed);
        }
        if job["status"] != status {
            let mut updated = job;
            updated["status"] = status;
            self.store.update(key, updated);
        }
    }

    /// Creates one pod from a Job's template.
    fn job_pod(&mut self, job: &Value) -> Option<Value> {
        let ns = job["metadata"]["namespace"].as_str()?.to_owned();
        let name = job["metadata"]["name"].as_str()?;
        let tpl = &job["spec"]["template"];
        let mut metadata = tpl["metadata"].clone();
        if !metadata.is_object() {
            metadata = json!({});
        }
        metadata["name"] = json!(format!("{name}-{}", meta::suffix()));
        metadata["generateName"] = json!(format!("{name}-"));
        metadata["ownerReferences"] = json!([{
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": job["metadata"]["uid"],
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": tpl["spec"],
        });
        match self.create(PODS, &ns, pod, false) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, job = name, "fake job controller could not create a pod");
                None
            }
        }
    }

    /// Removes a pod without its Job re-examining itself (the caller does).
    fn remove_quietly(&mut self, key: &Key) {
        if let Some(gone) = self.store.delete(key)
            && let Some(run) = self
                .pods
                .remove(gone["metadata"]["uid"].as_str().unwrap_or(""))
        {
            run.stop.cancel();
        }
    }

    /// Deletes a Job; its pods follow `propagationPolicy` (default `Orphan` for
    /// batch/v1, as upstream keeps it for compatibility).
    pub(crate) fn delete_job(&mut self, ns: &str, name: &str, opts: &DeleteOpts) -> Value {
        let t = &TYPES[JOBS];
        let key = Key::new(JOBS, ns, name);
        let Some(job) = self.store.get(&key).cloned() else {
            return status::success(t, name, "");
        };
        let uid = job["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        let policy = match (&opts.propagation_policy, opts.orphan_dependents) {
            (Some(p), _) => p.clone(),
            (None, Some(false)) => "Background".to_owned(),
            _ => "Orphan".to_owned(),
        };
        let pods: Vec<Key> = self
            .store
            .list(PODS, Some(ns))
            .into_iter()
            .filter(|(_, p)| owner_job(p).is_some_and(|(_, u)| u == uid))
            .map(|(k, _)| k.clone())
            .collect();
        self.jobs.remove(&uid);
        let foreground = policy == "Foreground";
        if foreground {
            for k in &pods {
                self.remove_quietly(k);
            }
        }
        let gone = self.store.delete(&key);
        match policy.as_str() {
            "Orphan" => {
                for k in &pods {
                    if let Some(mut p) = self.store.get(k).cloned() {
                        if let Some(m) = p["metadata"].as_object_mut() {
                            m.remove("ownerReferences");
                        }
                        self.store.update(k.clone(), p);
                    }
                }
            }
            "Background" => {
                for k in &pods {
                    self.remove_quietly(k);
                }
            }
            _ => {}
        }
        match gone {
            Some(mut j) if foreground => {
                j["metadata"]["deletionTimestamp"] = json!(meta::now());
                j["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
                j
            }
            _ => status::success(t, name, &uid),
        }
    }

    /// `ttlSecondsAfterFinished` passed: the Job goes, its pods with it.
    pub(crate) fn expire_job(&mut self, ns: &str, name: &str, uid: &str) {
        let same = self
            .store
            .get(&Key::new(JOBS, ns, name))
            .is_some_and(|j| j["metadata"]["uid"] == uid);
        if same {
            let opts = DeleteOpts {
                propagation_policy: Some("Background".to_owned()),
                ..DeleteOpts::default()
            };
            self.delete_job(ns, name, &opts);
        }
    }
}

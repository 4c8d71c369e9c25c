//! Where a run is, read from its Job's status and its pod's, and where the task's running
//! runner is, from its pods' (pure functions, so every odd shape a cluster may answer
//! with is a test case, never a panic).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use mainloop_launch::RunState;
use std::net::IpAddr;

/// Container waiting reasons that a pod does not get over by itself: the run cannot
/// start.
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The Job's condition of this type, when it holds: `(reason, message)`.
fn condition(job: &Job, kind: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// Whether the run's state needs its pod looked at (not when the Job says it succeeded).
#[must_use]
pub fn needs_pods(job: &Job) -> bool {
    condition(job, "Complete").is_none() && condition(job, "SuccessCriteriaMet").is_none()
}

/// The pod that speaks for the run: the newest (a Job with `backoffLimit: 0` has one).
fn newest(pods: &[Pod]) -> Option<&Pod> {
    pods.iter().max_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    })
}

/// The runner's exit codes (`crates/mainloop/src/runner/mod.rs`), in words.
fn exit_meaning(code: i32) -> &'static str {
    match code {
        2 => ": a mistake in how the runner was started, or a refusal reconnecting cannot cure",
        3 => ": the runner's token was refused or revoked",
        137 => ": killed",
        _ => "",
    }
}

fn terminated(t: &ContainerStateTerminated) -> String {
    let mut s = format!("the runner exited with code {}", t.exit_code);
    s.push_str(exit_meaning(t.exit_code));
    if let Some(r) = t.reason.as_deref().filter(|r| !r.is_empty()) {
        s.push_str(&format!(" ({r})"));
    }
    if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
        s.push_str(&format!(": {m}"));
    }
    s
}

/// Why a finished pod failed, in one line.
fn pod_failure(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let mut parts = Vec::new();
    if let Some(reason) = status
        .and_then(|s| s.reason.as_deref())
        .filter(|r| !r.is_empty())
    {
        let message = status
            .and_then(|s| s.message.as_deref())
            .filter(|m| !m.is_empty());
        parts.push(match message {
            Some(m) => format!("the pod failed: {reason}: {m}"),
            None => format!("the pod failed: {reason}"),
        });
    }
    let exit = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref())
        .map(terminated);
    parts.extend(exit);
    if parts.is_empty() {
        "the runner's pod failed".to_owned()
    } else {
        parts.join("; ")
    }
}

/// A container of a pending pod that cannot start: why.
fn stuck(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let all = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    all.filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find_map(|w| {
            let reason = w.reason.as_deref()?;
            STUCK
                .contains(&reason)
                .then(|| match w.message.as_deref().filter(|m| !m.is_empty()) {
                    Some(m) => format!("the runner cannot start: {reason}: {m}"),
                    None => format!("the runner cannot start: {reason}"),
                })
        })
}

/// The run's state from its Job and the Job's pods.
#[must_use]
pub fn run_state(job: &Job, pods: &[Pod]) -> RunState {
    if !needs_pods(job) {
        return RunState::Succeeded;
    }
    let pod = newest(pods);
    if let Some((reason, message)) =
        condition(job, "Failed").or_else(|| condition(job, "FailureTarget"))
    {
        let job_part = match (reason.is_empty(), message.is_empty()) {
            (true, true) => "the Job failed".to_owned(),
            (false, true) => format!("the Job failed: {reason}"),
            (true, false) => format!("the Job failed: {message}"),
            (false, false) => format!("the Job failed: {reason}: {message}"),
        };
        return RunState::Failed(match pod {
            Some(p) if phase(p) == "Failed" => format!("{}; {job_part}", pod_failure(p)),
            _ => job_part,
        });
    }
    let Some(pod) = pod else {
        let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
        return if failed > 0 {
            RunState::Failed("the runner's pod failed and is gone".to_owned())
        } else {
            RunState::Pending
        };
    };
    match phase(pod) {
        "Succeeded" => RunState::Succeeded,
        "Failed" => RunState::Failed(pod_failure(pod)),
        "Running" => RunState::Running,
        // Pending, Unknown (its node not heard from), or anything new: not running yet,
        // unless a container can never start.
        _ => stuck(pod).map_or(RunState::Pending, RunState::Failed),
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Where the task's running runner is: the address of the newest of its pods that runs
/// and is not being deleted (one stopping for the next run still answers for a moment,
/// but not for long), or `None`.
#[must_use]
pub fn running_address(pods: &[Pod]) -> Option<IpAddr> {
    pods.iter()
        .filter(|p| phase(p) == "Running" && p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            Some((p.metadata.creation_timestamp.as_ref(), ip))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, ip)| ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(status: &serde_json::Value) -> Job {
        serde_json::from_value(json!({"metadata": {"name": "r"}, "status": status})).unwrap()
    }

    fn pod(status: &serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "r-abcde"}, "status": status})).unwrap()
    }

    fn failed(s: RunState) -> String {
        match s {
            RunState::Failed(why) => why,
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn from_nothing_to_done() {
        let active = job(&json!({"active": 1}));
        assert_eq!(run_state(&job(&json!({})), &[]), RunState::Pending);
        assert_eq!(run_state(&active, &[pod(&json!({}))]), RunState::Pending);
        let pending = pod(&json!({"phase": "Pending", "containerStatuses": [
            {"name": "runner", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
        assert_eq!(run_state(&active, &[pending]), RunState::Pending);
        assert_eq!(
            run_state(&active, &[pod(&json!({"phase": "Running"}))]),
            RunState::Running
        );
        assert_eq!(
            run_state(&active, &[pod(&json!({"phase": "Unknown"}))]),
            RunState::Pending
        );
        assert_eq!(
            run_state(&active, &[pod(&json!({"phase": "Succeeded"}))]),
            RunState::Succeeded
        );
        let complete = job(&json!({"conditions": [{"type": "Complete", "status": "True"}]}));
        assert_eq!(run_state(&complete, &[]), RunState::Succeeded);
        let not_yet = job(&json!({"conditions": [{"type": "Complete", "status": "False"}]}));
        assert_eq!(run_state(&not_yet, &[]), RunState::Pending);
    }

    #[test]
    fn failures_say_why() {
        let active = job(&json!({"active": 1}));
        let exited = pod(&json!({"phase": "Failed", "containerStatuses": [
            {"name": "runner", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}));
        let why = failed(run_state(&active, std::slice::from_ref(&exited)));
        assert_eq!(
            why,
            "the runner exited with code 3: the runner's token was refused or revoked (Error)"
        );
        let gone = job(
            &json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
        );
        let why = failed(run_state(&gone, &[exited]));
        assert!(why.starts_with("the runner exited with code 3"), "{why}");
        assert!(
            why.ends_with(
                "the Job failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
            ),
            "{why}"
        );
        assert_eq!(
            failed(run_state(&gone, &[])),
            "the Job failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
        );
        let lost = pod(&json!({"phase": "Failed", "reason": "NodeLost", "message": "gone"}));
        assert_eq!(
            failed(run_state(&active, &[lost])),
            "the pod failed: NodeLost: gone"
        );
        assert_eq!(
            failed(run_state(&job(&json!({"failed": 1})), &[])),
            "the runner's pod failed and is gone"
        );
        let bare = job(&json!({"conditions": [{"type": "Failed", "status": "True"}]}));
        assert_eq!(failed(run_state(&bare, &[])), "the Job failed");
    }

    #[test]
    fn a_pod_that_cannot_start_has_failed() {
        let active = job(&json!({"active": 1}));
        for reason in STUCK {
            let p = pod(&json!({"phase": "Pending", "containerStatuses": [
                {"name": "runner", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                 "state": {"waiting": {"reason": reason, "message": "no such image"}}}]}));
            assert_eq!(
                failed(run_state(&active, &[p])),
                format!("the runner cannot start: {reason}: no such image")
            );
        }
    }

    #[test]
    fn the_address_is_the_newest_running_pods() {
        let at = |name: &str, created: &str, status: &serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name,
                "creationTimestamp": created}, "status": status}))
            .unwrap()
        };
        let old = at(
            "a",
            "2026-01-01T00:00:00Z",
            &json!({"phase": "Running", "podIP": "10.244.0.7"}),
        );
        let new = at(
            "b",
            "2026-01-01T00:01:00Z",
            &json!({"phase": "Running", "podIP": "fd00::8"}),
        );
        assert_eq!(running_address(&[]), None);
        assert_eq!(
            running_address(std::slice::from_ref(&old)),
            Some("10.244.0.7".parse().unwrap())
        );
        assert_eq!(
            running_address(&[new, old.clone()]),
            Some("fd00::8".parse().unwrap())
        );
        // Not running, being deleted, no address yet or a strange one: none of these.
        let pending = at("c", "2026-01-01T00:02:00Z", &json!({"phase": "Pending"}));
        let done = at(
            "d",
            "2026-01-01T00:03:00Z",
            &json!({"phase": "Succeeded", "podIP": "10.244.0.9"}),
        );
        let mut deleting = at(
            "e",
            "2026-01-01T00:04:00Z",
            &json!({"phase": "Running", "podIP": "10.244.0.10"}),
        );
        deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
        let no_ip = at("f", "2026-01-01T00:05:00Z", &json!({"phase": "Running"}));
        let odd = at(
            "g",
            "2026-01-01T00:06:00Z",
            &json!({"phase": "Running", "podIP": "not-an-ip"}),
        );
        assert_eq!(
            running_address(&[old, pending.clone(), done, deleting, no_ip, odd]),
            Some("10.244.0.7".parse().unwrap())
        );
        assert_eq!(running_address(&[pending]), None);
    }

    #[test]
    fn the_newest_pod_speaks() {
        let active = job(&json!({"active": 1}));
        let old: Pod = serde_json::from_value(json!({"metadata": {"name": "a",
            "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Failed"}}))
        .unwrap();
        let new: Pod = serde_json::from_value(json!({"metadata": {"name": "b",
            "creationTimestamp": "2026-01-01T00:01:00Z"}, "status": {"phase": "Running"}}))
        .unwrap();
        assert_eq!(
            run_state(&active, &[old.clone(), new.clone()]),
            RunState::Running
        );
        assert_eq!(run_state(&active, &[new, old]), RunState::Running);
    }
}

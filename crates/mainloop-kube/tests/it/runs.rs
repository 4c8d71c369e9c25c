//! `start_run`, `run_state` and `stop_run`: the Job and its pod as the launcher shapes
//! them, and a run's state through the pod's life as the fake's `PodRunner` hook drives
//! it (running, exit 0, exit 1, killed), an image that cannot be pulled, a deadline, the
//! Job's TTL, and a stop that takes the pod with the Job.

use crate::common::{Env, client, env, env_with, eventually, settings, task, within};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use mainloop_kube::KubeSettings;
use mainloop_launch::{Launcher, RunState, TaskLaunch};
use serde_json::json;
use std::time::Duration;

/// Polls the run's state until `want` says yes.
async fn state_where(
    e: &Env,
    t: &TaskLaunch,
    run: &str,
    what: &str,
    want: impl Fn(&RunState) -> bool,
) -> RunState {
    eventually(what, || async {
        let s = e.launcher.run_state(t.task, run).await.unwrap();
        want(&s).then_some(s)
    })
    .await
}

fn failed(s: &RunState) -> Option<&str> {
    match s {
        RunState::Failed(why) => Some(why),
        _ => None,
    }
}

#[tokio::test]
async fn start_run_makes_the_job() {
    let e = env().await;
    let mut pods = e.pods();
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    e.launcher.start_run(&t, "run-1").await.unwrap();
    let job = e.job(&t, "run-1").unwrap();
    let uid = job.uid();
    for (k, v) in [
        ("app.kubernetes.io/managed-by", "mainloop".to_owned()),
        ("mainloop.dev/task", t.task.to_string()),
        ("mainloop.dev/run", "run-1".to_owned()),
    ] {
        assert_eq!(job.labels().get(k), Some(&v), "Job label {k}");
    }
    let spec = job.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.ttl_seconds_after_finished, Some(600));
    assert_eq!(spec.active_deadline_seconds, None);
    let template_labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(template_labels["mainloop.dev/task"], t.task.to_string());
    assert_eq!(template_labels["mainloop.dev/run"], "run-1");
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.enable_service_links, Some(false));
    assert_eq!(pod.automount_service_account_token, Some(false));
    // None asked for: the namespace's own (the API server fills the name in).
    assert_eq!(pod.service_account_name.as_deref(), Some("default"));
    let psc = pod.security_context.unwrap();
    assert_eq!(
        (
            psc.run_as_non_root,
            psc.run_as_user,
            psc.run_as_group,
            psc.fs_group
        ),
        (Some(true), Some(10001), Some(10001), Some(10001))
    );
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.name, "runner");
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example/mainloop-agent:1.2.3")
    );
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(c.command, None, "the image's entrypoint runs mainloop");
    assert_eq!(
        c.args.clone().unwrap(),
        [
            "runner",
            "--once",
            "--server",
            "http://mainloop.mainloop.svc",
            "--data-dir",
            "/var/lib/mainloop-runner",
            "--agent",
            "claude",
            "--label",
            "k8s"
        ]
    );
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let env_from = c.env_from.clone().unwrap();
    assert_eq!(env_from[0].secret_ref.as_ref().unwrap().name, "runner");
    let mount = &c.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(mount.mount_path, "/var/lib/mainloop-runner");
    let vol = &pod.volumes.unwrap()[0];
    assert_eq!(vol.name, mount.name);
    assert!(vol.empty_dir.is_some());
    let res = c.resources.clone().unwrap();
    let d = KubeSettings::default();
    assert_eq!(
        res.limits.unwrap()["memory"].0,
        d.resources.limits["memory"]
    );
    assert_eq!(res.requests.unwrap()["cpu"].0, d.resources.requests["cpu"]);
    // Its pod gets the token and the credentials in its environment.
    let handle = within("the pod", pods.recv()).await.unwrap();
    assert_eq!(handle.namespace(), e.ns(&t));
    assert_eq!(handle.job_name(), Some("run-1"));
    let env = handle.env(None).unwrap();
    for (k, v) in [
        ("MAINLOOP_RUNNER_TOKEN", "mlr_first"),
        ("ANTHROPIC_API_KEY", "sk-1"),
        ("GH_TOKEN", "gh-1"),
    ] {
        assert!(
            env.contains(&(k.to_owned(), v.to_owned())),
            "{k} in {env:?}"
        );
    }
    // Started again (after a crash, say): the same Job, no second pod.
    e.launcher.start_run(&t, "run-1").await.unwrap();
    assert_eq!(e.job(&t, "run-1").unwrap().uid(), uid);
    assert_eq!(e.fake.pods().len(), 1);
}

#[tokio::test]
async fn run_state_follows_the_pod_to_success() {
    let e = env().await;
    let mut pods = e.pods();
    let t = task();
    assert_eq!(
        e.launcher.run_state(t.task, "run-1").await.unwrap(),
        RunState::Gone
    );
    e.launcher.prepare_task(&t).await.unwrap();
    assert_eq!(
        e.launcher.run_state(t.task, "run-1").await.unwrap(),
        RunState::Gone
    );
    e.launcher.start_run(&t, "run-1").await.unwrap();
    let pod = within("the pod", pods.recv()).await.unwrap();
    assert_eq!(
        e.launcher.run_state(t.task, "run-1").await.unwrap(),
        RunState::Pending
    );
    pod.set_running().unwrap();
    assert_eq!(
        e.launcher.run_state(t.task, "run-1").await.unwrap(),
        RunState::Running
    );
    pod.finish(0).unwrap();
    state_where(&e, &t, "run-1", "success", |s| *s == RunState::Succeeded).await;
    // Once the Job says so, too (its condition, not only the pod's phase).
    eventually("the Job complete", || async {
        e.job(&t, "run-1")?
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(())
    })
    .await;
    assert_eq!(
        e.launcher.run_state(t.task, "run-1").await.unwrap(),
        RunState::Succeeded
    );
}

#[tokio::test]
async fn a_runner_that_exits_1_fails_the_run() {
    let e = env().await;
    let mut pods = e.pods();
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    e.launcher.start_run(&t, "run-1").await.unwrap();
    let pod = within("the pod", pods.recv()).await.unwrap();
    pod.set_running().unwrap();
    pod.finish(1).unwrap();
    let s = state_where(&e, &t, "run-1", "failure", |s| failed(s).is_some()).await;
    let why = failed(&s).unwrap();
    assert!(why.contains("exited with code 1"), "{why}");
    // Never retried: backoffLimit 0.
    let s = state_where(&e, &t, "run-1", "the Job's failure", |s| {
        failed(s).is_some_and(|w| w.contains("the Job failed"))
    })
    .await;
    let why = failed(&s).unwrap();
    assert!(
        why.contains("exited with code 1") && why.contains("BackoffLimitExceeded"),
        "{why}"
    );
    assert_eq!(e.fake.pods().len(), 0, "no second pod");
    assert_eq!(e.fake.objects("v1", "Pod", Some(&e.ns(&t))).len(), 1);
}

#[tokio::test]
async fn a_killed_pod_fails_the_run() {
    let e = env().await;
    let mut pods = e.pods();
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    e.launcher.start_run(&t, "run-1").await.unwrap();
    let pod = within("the pod", pods.recv()).await.unwrap();
    pod.set_running().unwrap();
    pod.kill().unwrap();
    let s = state_where(&e, &t, "run-1", "failure", |s| failed(s).is_some()).await;
    let why = failed(&s).unwrap();
    assert!(
        why.contains("NodeLost") && why.contains("code 137"),
        "{why}"
    );
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_run() {
    let e = env().await;
    let mut pods = e.pods();
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    e.launcher.start_run(&t, "run-1").await.unwrap();
    let pod = within("the pod", pods.recv()).await.unwrap();
    // The fake has no kubelet: the test writes what one would (pods/status).
    let api: Api<Pod> = Api::namespaced(client(&e.fake), &e.ns(&t));
    for reason in [
        "ErrImagePull",
        "ImagePullBackOff",
        "CreateContainerConfigError",
    ] {
        let status = json!({"status": {"phase": "Pending", "containerStatuses": [{
            "name": "runner", "image": "registry.example/mainloop-agent:1.2.3", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": "the registry says no"}}}]}});
        api.patch_status(pod.name(), &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
        let s = e.launcher.run_state(t.task, "run-1").await.unwrap();
        assert_eq!(
            s,
            RunState::Failed(format!(
                "the runner cannot start: {reason}: the registry says no"
            ))
        );
    }
    // Still creating: pending.
    let status = json!({"status": {"containerStatuses": [{
        "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
    api.patch_status(pod.name(), &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(
        e.launcher.run_state(t.task, "run-1").await.unwrap(),
        RunState::Pending
    );
}

#[tokio::test]
async fn stop_run_takes_the_pod_with_the_job() {
    let e = env().await;
    let mut pods = e.pods();
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    e.launcher.start_run(&t, "run-1").await.unwrap();
    let pod = within("the pod", pods.recv()).await.unwrap();
    pod.set_running().unwrap();
    e.launcher.stop_run(t.task, "run-1").await.unwrap();
    within("the pod told to stop", pod.stopped()).await;
    eventually("the pod deleted", || async {
        e.fake
            .objects("v1", "Pod", Some(&e.ns(&t)))
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(e.job(&t, "run-1").is_none());
    assert_eq!(
        e.launcher.run_state(t.task, "run-1").await.unwrap(),
        RunState::Gone
    );
    e.launcher.stop_run(t.task, "run-1").await.unwrap();
    e.launcher.stop_run(t.task, "never-started").await.unwrap();
    // Another run of the task starts as the first did.
    e.launcher.start_run(&t, "run-2").await.unwrap();
    let second = within("the second pod", pods.recv()).await.unwrap();
    assert_eq!(second.job_name(), Some("run-2"));
}

#[tokio::test]
async fn deadlines_and_ttls() {
    let s = KubeSettings {
        active_deadline_secs: Some(1),
        job_ttl_secs: None,
        ..settings()
    };
    let e = env_with(Duration::from_millis(100), s).await;
    let mut pods = e.pods();
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    // Over its deadline: failed, and its pod stopped.
    e.launcher.start_run(&t, "slow").await.unwrap();
    let pod = within("the pod", pods.recv()).await.unwrap();
    pod.set_running().unwrap();
    within("the pod stopped at its deadline", pod.stopped()).await;
    let s = state_where(&e, &t, "slow", "the deadline", |s| failed(s).is_some()).await;
    let why = failed(&s).unwrap();
    assert!(why.contains("DeadlineExceeded"), "{why}");
    // A finished Job goes after its TTL (0 here): the run reads as gone.
    let ttl = mainloop_kube::KubeLauncher::new(
        client(&e.fake),
        KubeSettings {
            job_ttl_secs: Some(0),
            ..settings()
        },
    );
    ttl.start_run(&t, "quick").await.unwrap();
    let pod = within("the pod", pods.recv()).await.unwrap();
    pod.finish(0).unwrap();
    eventually("gone after the TTL", || async {
        (ttl.run_state(t.task, "quick").await.unwrap() == RunState::Gone).then_some(())
    })
    .await;
}

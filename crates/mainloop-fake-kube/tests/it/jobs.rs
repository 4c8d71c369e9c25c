//! Jobs make pods the test runs through the pod runner hook; the Job's status follows
//! the pods (success, failure with retries under `backoffLimit`, kills, deadlines),
//! deletion (of a pod, a Job, a namespace) stops the runner, and running pods report
//! `Config::pod_ip`.

use crate::common::{Env, env, env_with, eventually, obj, within};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use mainloop_fake_kube::{Config, PodHandle};
use serde_json::json;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// A fake whose pods are handed to the test as they start.
async fn running_env() -> (Env, mpsc::UnboundedReceiver<PodHandle>) {
    let e = env().await;
    let (tx, rx) = mpsc::unbounded_channel();
    e.fake.set_pod_runner(move |pod: PodHandle| {
        let _ = tx.send(pod);
    });
    (e, rx)
}

fn job(name: &str, extra_spec: &serde_json::Value) -> Job {
    let mut spec = json!({
        "backoffLimit": 0,
        "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "runner", "image": "mainloop:dev", "args": ["runner"]}],
        }},
    });
    crate::common::merge(&mut spec, extra_spec);
    obj(json!({"metadata": {"name": name}, "spec": spec}))
}

async fn job_where(api: &Api<Job>, name: &str, what: &str, f: impl Fn(&Job) -> bool) -> Job {
    eventually(what, || async {
        api.get_opt(name).await.unwrap().filter(|j| f(j))
    })
    .await
}

fn condition(j: &Job, kind: &str) -> Option<(String, String)> {
    j.status
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

#[tokio::test]
async fn job_pod_runs_through_the_hook() {
    let (e, mut pods) = running_env().await;
    e.namespace("task-1").await;
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), "task-1");
    let created = jobs
        .create(&PostParams::default(), &job("run-1", &json!({})))
        .await
        .unwrap();
    let uid = created.uid().unwrap();
    assert_eq!(
        created
            .spec
            .as_ref()
            .unwrap()
            .selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );
    let handle = within("the runner hook", pods.recv()).await.unwrap();
    assert!(handle.name().starts_with("run-1-") && handle.name().len() == "run-1-".len() + 5);
    assert_eq!(handle.job_name(), Some("run-1"));
    let pods_api: Api<Pod> = Api::namespaced(e.client.clone(), "task-1");
    let pod = pods_api.get(handle.name()).await.unwrap();
    let labels = pod.labels();
    assert_eq!(labels["job-name"], "run-1");
    assert_eq!(labels["batch.kubernetes.io/job-name"], "run-1");
    assert_eq!(labels["controller-uid"], uid);
    let owner = &pod.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Job", uid.as_str(), Some(true))
    );
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert_eq!(
        pod.spec.as_ref().unwrap().containers[0]
            .args
            .as_ref()
            .unwrap()[0],
        "runner"
    );
    job_where(&jobs, "run-1", "active 1", |j| {
        j.status.as_ref().and_then(|s| s.active) == Some(1)
    })
    .await;
    // Running, then done.
    handle.set_running().unwrap();
    let pod = pods_api.get(handle.name()).await.unwrap();
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    job_where(&jobs, "run-1", "ready 1", |j| {
        j.status.as_ref().and_then(|s| s.ready) == Some(1)
    })
    .await;
    handle.succeed().unwrap();
    assert!(handle.is_stopped());
    let pod = pods_api.get(handle.name()).await.unwrap();
    let st = pod.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Succeeded"));
    let term = st.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (0, Some("Completed"))
    );
    let done = job_where(&jobs, "run-1", "Complete", |j| {
        condition(j, "Complete").is_some()
    })
    .await;
    let s = done.status.as_ref().unwrap();
    assert_eq!((s.succeeded, s.active), (Some(1), None));
    assert!(s.completion_time.is_some() && condition(&done, "SuccessCriteriaMet").is_some());
    assert!(
        handle.succeed().is_err(),
        "a finished pod cannot finish again"
    );
}

#[tokio::test]
async fn failures_retry_until_the_backoff_limit() {
    let (e, mut pods) = running_env().await;
    e.namespace("task-2").await;
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), "task-2");
    jobs.create(
        &PostParams::default(),
        &job("run", &json!({"backoffLimit": 1})),
    )
    .await
    .unwrap();
    let first = within("the first pod", pods.recv()).await.unwrap();
    first.set_running().unwrap();
    first.finish(2).unwrap();
    let second = within("a replacement pod", pods.recv()).await.unwrap();
    assert_ne!(first.name(), second.name());
    second.finish(3).unwrap();
    let failed = job_where(&jobs, "run", "Failed", |j| condition(j, "Failed").is_some()).await;
    assert_eq!(
        condition(&failed, "Failed").unwrap().0,
        "BackoffLimitExceeded"
    );
    assert_eq!(failed.status.unwrap().failed, Some(2));
    let pods_api: Api<Pod> = Api::namespaced(e.client.clone(), "task-2");
    let pod = pods_api.get(second.name()).await.unwrap();
    let st = pod.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    let term = st.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.exit_code, 3);
}

#[tokio::test]
async fn kills_and_deletions_stop_the_runner() {
    let (e, mut pods) = running_env().await;
    e.namespace("task-3").await;
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), "task-3");
    let pods_api: Api<Pod> = Api::namespaced(e.client.clone(), "task-3");
    // A killed pod fails as on a lost node.
    jobs.create(&PostParams::default(), &job("k", &json!({})))
        .await
        .unwrap();
    let p = within("pod k", pods.recv()).await.unwrap();
    p.set_running().unwrap();
    e.fake.kill_pod("task-3", p.name()).unwrap();
    within("the kill to stop the runner", p.stopped()).await;
    let st = pods_api.get(p.name()).await.unwrap().status.unwrap();
    assert_eq!(
        (st.phase.as_deref(), st.reason.as_deref()),
        (Some("Failed"), Some("NodeLost"))
    );
    job_where(&jobs, "k", "Failed", |j| condition(j, "Failed").is_some()).await;
    // Deleting a Job in the background deletes its pod.
    jobs.create(&PostParams::default(), &job("b", &json!({})))
        .await
        .unwrap();
    let p = within("pod b", pods.recv()).await.unwrap();
    jobs.delete("b", &DeleteParams::background()).await.unwrap();
    within("the job delete to stop the runner", p.stopped()).await;
    assert!(pods_api.get_opt(p.name()).await.unwrap().is_none());
    // By default (batch/v1) the pods of a deleted Job are orphaned, as upstream.
    jobs.create(&PostParams::default(), &job("o", &json!({})))
        .await
        .unwrap();
    let p = within("pod o", pods.recv()).await.unwrap();
    jobs.delete("o", &DeleteParams::default()).await.unwrap();
    let orphan = pods_api.get(p.name()).await.unwrap();
    assert!(orphan.owner_references().is_empty() && !p.is_stopped());
    // Deleting a pod stops its runner; a pod's deletion is answered with the pod.
    let gone = pods_api
        .delete(p.name(), &DeleteParams::default())
        .await
        .unwrap();
    assert!(gone.left().unwrap().metadata.deletion_timestamp.is_some());
    within("the pod delete to stop the runner", p.stopped()).await;
    // Deleting the namespace stops what runs in it.
    jobs.create(&PostParams::default(), &job("n", &json!({})))
        .await
        .unwrap();
    let p = within("pod n", pods.recv()).await.unwrap();
    p.set_running().unwrap();
    let nss: Api<Namespace> = Api::all(e.client.clone());
    nss.delete("task-3", &DeleteParams::default())
        .await
        .unwrap();
    within("the namespace delete to stop the runner", p.stopped()).await;
    assert!(p.set_running().is_err());
    assert!(
        pods_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn deadlines_and_ttl() {
    let (e, mut pods) = running_env().await;
    e.namespace("task-4").await;
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), "task-4");
    jobs.create(
        &PostParams::default(),
        &job("slow", &json!({"activeDeadlineSeconds": 1})),
    )
    .await
    .unwrap();
    let p = within("pod slow", pods.recv()).await.unwrap();
    p.set_running().unwrap();
    let failed = job_where(&jobs, "slow", "DeadlineExceeded", |j| {
        condition(j, "Failed").is_some()
    })
    .await;
    assert_eq!(condition(&failed, "Failed").unwrap().0, "DeadlineExceeded");
    within("the deadline to stop the runner", p.stopped()).await;
    jobs.create(
        &PostParams::default(),
        &job("ttl", &json!({"ttlSecondsAfterFinished": 0})),
    )
    .await
    .unwrap();
    within("pod ttl", pods.recv())
        .await
        .unwrap()
        .succeed()
        .unwrap();
    eventually("the finished job to be removed", || async {
        jobs.get_opt("ttl").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn runner_sees_env_and_files_from_secrets() {
    let e = env().await;
    e.namespace("task-5").await;
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), "task-5");
    secrets
        .create(&PostParams::default(), &obj(json!({"metadata": {"name": "runner-token"}, "stringData": {"token": "s3cret", "ca.crt": "PEM"}})))
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), "task-5");
    let spec = json!({"template": {"spec": {
        "containers": [{
            "name": "runner",
            "image": "mainloop:dev",
            "env": [
                {"name": "MAINLOOP_SERVER", "value": "http://127.0.0.1:1"},
                {"name": "MAINLOOP_TOKEN", "valueFrom": {"secretKeyRef": {"name": "runner-token", "key": "token"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            "volumeMounts": [{"name": "tls", "mountPath": "/etc/mainloop"}],
        }],
        "volumes": [{"name": "tls", "secret": {"secretName": "runner-token", "items": [{"key": "ca.crt", "path": "ca.pem"}]}}],
    }}});
    // Pods created before a runner is set start when it is.
    jobs.create(&PostParams::default(), &job("env", &spec))
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    e.fake.set_pod_runner(move |pod: PodHandle| {
        let _ = tx.send(pod);
    });
    let p = within("the pod", rx.recv()).await.unwrap();
    let env = p.env(None).unwrap();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("MAINLOOP_TOKEN"), Some("s3cret"));
    assert_eq!(get("MAINLOOP_SERVER"), Some("http://127.0.0.1:1"));
    assert_eq!(get("POD_NAME"), Some(p.name()));
    assert_eq!(
        p.volume_files(Some("runner")).unwrap(),
        vec![(PathBuf::from("/etc/mainloop/ca.pem"), b"PEM".to_vec())]
    );
    assert!(p.env(Some("nope")).is_err());
}

#[tokio::test]
async fn running_pods_report_the_configured_ip() {
    for (pod_ip, want) in [
        (Some("127.0.0.1".parse().unwrap()), Some("127.0.0.1")),
        (None, None),
    ] {
        let e = env_with(Config {
            pod_ip,
            ..Config::default()
        })
        .await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        e.fake.set_pod_runner(move |pod: PodHandle| {
            let _ = tx.send(pod);
        });
        e.namespace("task-6").await;
        let jobs: Api<Job> = Api::namespaced(e.client.clone(), "task-6");
        jobs.create(&PostParams::default(), &job("ip", &json!({})))
            .await
            .unwrap();
        let p = within("the pod", rx.recv()).await.unwrap();
        p.set_running().unwrap();
        let pods: Api<Pod> = Api::namespaced(e.client.clone(), "task-6");
        let st = pods.get(p.name()).await.unwrap().status.unwrap();
        let ip = st.pod_ip.unwrap();
        let ips: Vec<String> = st.pod_ips.unwrap().into_iter().map(|i| i.ip).collect();
        assert_eq!(ips, std::slice::from_ref(&ip));
        match want {
            Some(w) => assert_eq!(ip, w),
            None => assert!(ip.starts_with("10.244.0."), "{ip}"),
        }
    }
}

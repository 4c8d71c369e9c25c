//! `forget_task` and `launched_tasks`: a task forgotten during a run (its namespace
//! Terminating, the pod stopped, then everything gone), what the other calls answer
//! meanwhile (`Unavailable` to prepare or start, success to forget again), and the
//! tasks found by their namespaces' labels, page after page.

use crate::common::{client, env, env_with, eventually, settings, task, unavailable, within};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use mainloop_domain::TaskId;
use mainloop_launch::{Launcher, RunState};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn forget_during_a_run() {
    // Slow enough to look at the namespace while it terminates.
    let e = env_with(Duration::from_millis(1500), settings()).await;
    let mut pods = e.pods();
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    e.launcher.start_run(&t, "run-1").await.unwrap();
    let pod = within("the pod", pods.recv()).await.unwrap();
    pod.set_running().unwrap();
    assert_eq!(e.launcher.launched_tasks().await.unwrap(), [t.task]);
    e.launcher.forget_task(t.task).await.unwrap();
    let ns = e.namespace(&t).unwrap();
    assert_eq!(
        ns.status.unwrap().phase.as_deref(),
        Some("Terminating"),
        "the namespace terminates"
    );
    // Meanwhile: forgetting again is done already; preparing and starting must wait;
    // the task is no longer listed.
    e.launcher.forget_task(t.task).await.unwrap();
    let why = unavailable(e.launcher.prepare_task(&t).await);
    assert!(why.contains("Terminating"), "{why}");
    let why = unavailable(e.launcher.start_run(&t, "run-2").await);
    assert!(why.contains("being terminated"), "{why}");
    assert_eq!(e.launcher.launched_tasks().await.unwrap(), []);
    // Then the pod is stopped and everything goes.
    within("the pod stopped", pod.stopped()).await;
    eventually("the namespace gone", || async {
        e.namespace(&t).is_none().then_some(())
    })
    .await;
    assert_eq!(
        e.launcher.run_state(t.task, "run-1").await.unwrap(),
        RunState::Gone
    );
    e.launcher.forget_task(t.task).await.unwrap();
    e.launcher.stop_run(t.task, "run-1").await.unwrap();
    // Prepared again (a task that was not over after all): made afresh.
    e.launcher.prepare_task(&t).await.unwrap();
    assert!(e.secret(&t).is_some());
    assert_eq!(e.launcher.launched_tasks().await.unwrap(), [t.task]);
}

#[tokio::test]
async fn launched_tasks_are_the_launchers_namespaces() {
    let e = env().await;
    let mut tasks: Vec<TaskId> = Vec::new();
    for _ in 0..3 {
        let t = task();
        e.launcher.prepare_task(&t).await.unwrap();
        tasks.push(t.task);
    }
    tasks.sort();
    // Namespaces that look like the launcher's but are not this one's.
    let nss: Api<Namespace> = Api::all(client(&e.fake));
    let other = TaskId(uuid::Uuid::new_v4());
    for (name, task_label) in [
        // Another prefix (another mainloop on the cluster).
        (format!("elsewhere-{}", other.0.simple()), other.to_string()),
        // A task label that is not a task id.
        ("mainloop-task-odd".to_owned(), "odd".to_owned()),
        // A name that does not match its label.
        (
            e.launcher.namespace(TaskId(uuid::Uuid::new_v4())),
            other.to_string(),
        ),
    ] {
        let ns = serde_json::from_value(json!({"metadata": {"name": name, "labels": {
            "app.kubernetes.io/managed-by": "mainloop", "mainloop.dev/task": task_label}}}))
        .unwrap();
        nss.create(&PostParams::default(), &ns).await.unwrap();
    }
    assert_eq!(e.launcher.launched_tasks().await.unwrap(), tasks);
    // Idempotent, and a forgotten task drops out at once (its namespace terminating).
    assert_eq!(e.launcher.launched_tasks().await.unwrap(), tasks);
    let gone = tasks.remove(1);
    e.launcher.forget_task(gone).await.unwrap();
    assert_eq!(e.launcher.launched_tasks().await.unwrap(), tasks);
}

#[tokio::test]
async fn launched_tasks_reads_every_page() {
    let e = env().await;
    let nss: Api<Namespace> = Api::all(client(&e.fake));
    let mut want: Vec<TaskId> = (0..520).map(|_| TaskId(uuid::Uuid::new_v4())).collect();
    for t in &want {
        let ns = serde_json::from_value(json!({"metadata": {"name": e.launcher.namespace(*t),
            "labels": {"app.kubernetes.io/managed-by": "mainloop", "mainloop.dev/task": t.to_string()}}}))
        .unwrap();
        nss.create(&PostParams::default(), &ns).await.unwrap();
    }
    want.sort();
    e.fake.clear_requests();
    assert_eq!(e.launcher.launched_tasks().await.unwrap(), want);
    let lists: Vec<String> = e.fake.requests().iter().map(|r| r.query.clone()).collect();
    assert_eq!(lists.len(), 2, "two pages: {lists:?}");
    assert!(lists[1].contains("continue="), "{lists:?}");
}

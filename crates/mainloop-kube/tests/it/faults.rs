//! The API failing: injected 5xx and 429 answers and whole outages (503 to everything,
//! or the port closed) are `Unavailable`, 403/400/422 answers `Refused`, and after each
//! every call works again with nothing lost.

use crate::common::{Env, env, eventually, refused, task, unavailable, within};
use mainloop_fake_kube::{Fault, Outage};
use mainloop_launch::{LaunchError, Launcher, RunState, TaskLaunch};

/// Every method once, each failing as `check` says.
async fn every_call(e: &Env, t: &TaskLaunch, check: impl Fn(&str, &Result<(), LaunchError>)) {
    check("prepare_task", &e.launcher.prepare_task(t).await);
    check("start_run", &e.launcher.start_run(t, "run-1").await);
    check(
        "run_state",
        &e.launcher.run_state(t.task, "run-1").await.map(|_| ()),
    );
    check("stop_run", &e.launcher.stop_run(t.task, "run-1").await);
    check(
        "task_database",
        &e.launcher.task_database(t.task).await.map(|_| ()),
    );
    check(
        "task_address",
        &e.launcher.task_address(t.task).await.map(|_| ()),
    );
    check("forget_task", &e.launcher.forget_task(t.task).await);
    check(
        "launched_tasks",
        &e.launcher.launched_tasks().await.map(|_| ()),
    );
}

fn is_unavailable(call: &str, r: &Result<(), LaunchError>) {
    assert!(
        matches!(r, Err(LaunchError::Unavailable(_))),
        "{call}: expected Unavailable, got {r:?}"
    );
}

/// Everything works: a run from start to success, and the task forgotten.
async fn all_works(e: &Env, t: &TaskLaunch) {
    let mut pods = e.pods();
    e.launcher.prepare_task(t).await.unwrap();
    e.launcher.start_run(t, "run-1").await.unwrap();
    let pod = within("the pod", pods.recv()).await.unwrap();
    pod.set_running().unwrap();
    assert_eq!(
        e.launcher.run_state(t.task, "run-1").await.unwrap(),
        RunState::Running
    );
    pod.finish(0).unwrap();
    eventually("success", || async {
        (e.launcher.run_state(t.task, "run-1").await.unwrap() == RunState::Succeeded).then_some(())
    })
    .await;
    e.launcher.stop_run(t.task, "run-1").await.unwrap();
    assert!(e.launcher.launched_tasks().await.unwrap().contains(&t.task));
    e.launcher.forget_task(t.task).await.unwrap();
}

#[tokio::test]
async fn server_errors_and_throttling_are_unavailable() {
    let e = env().await;
    let t = task();
    for status in [500, 502, 503, 504, 429] {
        e.fake.fail_next(Fault::new(status, 1).verb("create"));
        let why = unavailable(e.launcher.prepare_task(&t).await);
        assert!(why.contains(&format!("({status} ")), "{status}: {why}");
    }
    e.launcher.prepare_task(&t).await.unwrap();
    // A failure midway (the Secret) leaves nothing wrong: the next call completes it.
    e.fake
        .fail_next(Fault::new(500, 1).method("POST").path("/secrets"));
    unavailable(e.launcher.prepare_task(&t).await);
    e.fake.fail_next(Fault::new(503, 1).verb("update"));
    unavailable(e.launcher.prepare_task(&t).await);
    e.fake.fail_next(Fault::new(500, 1).verb("create"));
    unavailable(e.launcher.start_run(&t, "run-1").await);
    e.launcher.start_run(&t, "run-1").await.unwrap();
    e.fake.fail_next(Fault::new(503, 1).verb("get"));
    unavailable(e.launcher.run_state(t.task, "run-1").await);
    e.fake.fail_next(Fault::new(500, 1).verb("list"));
    unavailable(e.launcher.run_state(t.task, "run-1").await);
    e.fake.fail_next(Fault::new(503, 1).verb("delete"));
    unavailable(e.launcher.stop_run(t.task, "run-1").await);
    e.fake.fail_next(Fault::new(429, 1).verb("list"));
    unavailable(e.launcher.launched_tasks().await);
    e.fake.fail_next(Fault::new(500, 1).verb("delete"));
    unavailable(e.launcher.forget_task(t.task).await);
    e.fake.clear_faults();
    all_works(&e, &t).await;
}

#[tokio::test]
async fn refusals_are_refused() {
    let e = env().await;
    let t = task();
    for status in [400, 403, 422] {
        e.fake.fail_next(Fault::new(status, 1).verb("create"));
        let why = refused(e.launcher.prepare_task(&t).await);
        assert!(why.starts_with("creating the namespace"), "{why}");
    }
    e.launcher.prepare_task(&t).await.unwrap();
    e.fake.fail_next(Fault::new(403, 1).verb("create"));
    let why = refused(e.launcher.start_run(&t, "run-1").await);
    assert!(
        why.contains("creating the Job run-1") && why.contains("403"),
        "{why}"
    );
    e.fake.fail_next(Fault::new(403, 1).verb("get"));
    refused(e.launcher.run_state(t.task, "run-1").await);
    e.fake.fail_next(Fault::new(403, 1).verb("list"));
    refused(e.launcher.launched_tasks().await);
    e.fake.clear_faults();
    all_works(&e, &t).await;
}

#[tokio::test]
async fn an_unavailable_outage_then_all_works() {
    let e = env().await;
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    e.fake.set_outage(Some(Outage::Unavailable)).await;
    every_call(&e, &t, is_unavailable).await;
    e.fake.set_outage(None).await;
    all_works(&e, &t).await;
}

#[tokio::test]
async fn a_refusing_outage_then_all_works() {
    let e = env().await;
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    e.fake.set_outage(Some(Outage::Refuse)).await;
    every_call(&e, &t, is_unavailable).await;
    e.fake.set_outage(None).await;
    all_works(&e, &t).await;
}

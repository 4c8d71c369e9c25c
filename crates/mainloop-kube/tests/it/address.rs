//! `task_address`: the running runner pod's address, `None` before and after; and the
//! NetworkPolicies' selectors matching the pods they are meant for (the fake enforces no
//! policy, so the selectors are evaluated here against the pods it made).

use crate::common::{env_on, env_with_cloudnativepg, eventually, settings, task, within};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use mainloop_fake_kube::Config;
use mainloop_launch::Launcher;
use serde_json::Value;
use std::net::IpAddr;

/// Whether `sel` selects an object with `labels` (its labels, and `Exists` expressions:
/// all the launcher writes).
fn selects(sel: &LabelSelector, labels: &Value) -> bool {
    sel.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels[k].as_str() == Some(v))
        && sel.match_expressions.iter().flatten().all(|e| {
            assert_eq!(e.operator, "Exists", "{e:?}");
            labels.get(&e.key).is_some()
        })
}

fn pod_selector(np: NetworkPolicy) -> LabelSelector {
    np.spec.unwrap().pod_selector.unwrap()
}

#[tokio::test]
async fn the_address_is_the_running_runner_pods() {
    let e = env_with_cloudnativepg().await;
    let mut pods = e.pods();
    let t = task();
    // Never prepared: no namespace, no runner.
    assert_eq!(e.launcher.task_address(t.task).await.unwrap(), None);
    e.launcher.prepare_task(&t).await.unwrap();
    assert_eq!(e.launcher.task_address(t.task).await.unwrap(), None);
    e.launcher.task_database(t.task).await.unwrap();
    e.launcher.start_run(&t, "run-1").await.unwrap();
    let pod = within("the pod", pods.recv()).await.unwrap();
    assert_eq!(
        e.launcher.task_address(t.task).await.unwrap(),
        None,
        "pending"
    );
    pod.set_running().unwrap();
    let current = pod.current().unwrap();
    let ip: IpAddr = current["status"]["podIP"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(e.launcher.task_address(t.task).await.unwrap(), Some(ip));
    // The runner policy selects this pod, and the database's lets it in; a database pod
    // (as CloudNativePG labels it) is the database policy's, not the runner policy's.
    let labels = &current["metadata"]["labels"];
    let runner = pod_selector(e.policy(&t).unwrap());
    let database = e.database_policy(&t).unwrap();
    let database_ingress = database.spec.as_ref().unwrap().ingress.clone().unwrap();
    let database = pod_selector(database);
    let clients = database_ingress[0].from.as_ref().unwrap()[0]
        .pod_selector
        .clone()
        .unwrap();
    assert!(selects(&runner, labels) && selects(&clients, labels));
    assert!(!selects(&database, labels));
    let db_pod = serde_json::json!({"cnpg.io/cluster": "database",
        "cnpg.io/instanceName": "database-1", "cnpg.io/podRole": "instance", "role": "primary"});
    assert!(selects(&database, &db_pod));
    assert!(!selects(&runner, &db_pod) && !selects(&clients, &db_pod));
    // Finished: no address.
    pod.finish(0).unwrap();
    eventually("no address", || async {
        e.launcher
            .task_address(t.task)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_address_is_the_one_the_cluster_gives() {
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let e = env_on(
        Config {
            pod_ip: Some(local),
            ..Config::default()
        },
        settings(),
    )
    .await;
    let mut pods = e.pods();
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    e.launcher.start_run(&t, "run-1").await.unwrap();
    within("the pod", pods.recv())
        .await
        .unwrap()
        .set_running()
        .unwrap();
    assert_eq!(e.launcher.task_address(t.task).await.unwrap(), Some(local));
}

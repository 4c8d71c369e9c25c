//! `task_database`: not offered without CloudNativePG; with it, the Cluster and its
//! NetworkPolicy made once, `Starting` with what the operator says, `Ready` with the URL
//! of the operator's Secret, and gone with the namespace; discovery failing is
//! `Unavailable`, a task never prepared `Refused`.

use crate::common::{
    Env, client, env, env_on, env_with_cloudnativepg, eventually, ingress, refused, runner_pods,
    selector, settings, strings, task, unavailable, within,
};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use mainloop_fake_kube::{ClusterCredentials, Config, Fault};
use mainloop_kube::{DatabaseSettings, KubeSettings, Resources};
use mainloop_launch::{LaunchError, Launcher, TaskDatabase, TaskLaunch};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

fn starting(r: Result<TaskDatabase, LaunchError>) -> String {
    match r {
        Ok(TaskDatabase::Starting(why)) => why,
        other => panic!("expected Starting, got {other:?}"),
    }
}

fn ready(r: Result<TaskDatabase, LaunchError>) -> Option<String> {
    match r.unwrap() {
        TaskDatabase::Ready(url) => Some(url.expose_secret().to_owned()),
        TaskDatabase::Starting(_) => None,
        TaskDatabase::NotOffered => panic!("CloudNativePG is installed"),
    }
}

fn credentials() -> ClusterCredentials {
    ClusterCredentials {
        username: "app".to_owned(),
        password: "s3cret".to_owned(),
        dbname: "app".to_owned(),
        host: "127.0.0.1".to_owned(),
        port: 54321,
    }
}

const URL: &str = "postgresql://app:s3cret@127.0.0.1:54321/app";

/// An operator hook that reports each Cluster it is handed and makes its database once
/// `go` says so.
fn operator(
    e: &Env,
) -> (
    watch::Sender<bool>,
    mpsc::UnboundedReceiver<(String, String, Value)>,
) {
    let (go, gate) = watch::channel(false);
    let (tx, handed) = mpsc::unbounded_channel();
    e.fake
        .set_cluster_operator(move |ns: String, name: String, cluster: Value| {
            let _ = tx.send((ns, name, cluster));
            let mut gate = gate.clone();
            async move {
                gate.wait_for(|go| *go).await.map_err(|e| e.to_string())?;
                Ok(credentials())
            }
        });
    (go, handed)
}

async fn ready_url(e: &Env, t: &TaskLaunch) -> String {
    eventually("the database ready", || async {
        ready(e.launcher.task_database(t.task).await)
    })
    .await
}

#[tokio::test]
async fn without_cloudnativepg_no_database_is_offered() {
    let e = env().await;
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    e.fake.clear_requests();
    for _ in 0..2 {
        assert!(matches!(
            e.launcher.task_database(t.task).await,
            Ok(TaskDatabase::NotOffered)
        ));
    }
    // Discovery alone asked, and answered 404; nothing made.
    let log = e.fake.requests();
    assert_eq!(log.len(), 2, "{log:?}");
    for r in &log {
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.status),
            ("GET", "/apis/postgresql.cnpg.io/v1", 404)
        );
    }
    assert!(e.database_policy(&t).is_none());
}

#[tokio::test]
async fn cloudnativepg_makes_the_task_a_database() {
    let e = env_with_cloudnativepg().await;
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    // No operator at work yet: the Cluster is made, then found, and waits.
    for _ in 0..2 {
        assert_eq!(
            starting(e.launcher.task_database(t.task).await),
            "waiting for CloudNativePG"
        );
    }
    let cluster = e.cluster(&t).unwrap();
    let labels = json!({
        "app.kubernetes.io/managed-by": "mainloop",
        "mainloop.dev/task": t.task.to_string(),
    });
    assert_eq!(cluster["metadata"]["labels"], labels);
    assert_eq!(
        cluster["spec"],
        json!({
            "instances": 1,
            "storage": {"size": "1Gi"},
            "bootstrap": {"initdb": {"database": "app", "owner": "app"}},
            "resources": {
                "requests": {"cpu": "100m", "memory": "512Mi", "ephemeral-storage": "512Mi"},
                "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"},
            },
        })
    );
    // Its pods: PostgreSQL for the task's runner pods, and the operator's namespace.
    let np = e.database_policy(&t).unwrap();
    assert_eq!(serde_json::to_value(np.labels()).unwrap(), labels);
    let spec = np.spec.unwrap();
    assert_eq!(
        selector(&spec.pod_selector.unwrap()),
        r#"{"cnpg.io/cluster": "database"}"#
    );
    assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
    assert_eq!(spec.egress, None);
    let rules: Vec<_> = spec.ingress.unwrap().iter().map(ingress).collect();
    assert_eq!(
        rules,
        [
            (format!("here {}", runner_pods(&t)), strings(&["TCP/5432"])),
            (
                r#"namespace {"kubernetes.io/metadata.name": "cnpg-system"}"#.to_owned(),
                strings(&["TCP/5432", "TCP/8000"])
            ),
        ]
    );

    // The operator takes it: setting up, then ready with the URL of its Secret.
    let (go, mut handed) = operator(&e);
    let (ns, name, given) = within("the operator", handed.recv()).await.unwrap();
    assert_eq!((ns, name.as_str()), (e.ns(&t), "database"));
    assert_eq!(given["spec"], cluster["spec"]);
    assert_eq!(
        starting(e.launcher.task_database(t.task).await),
        "Setting up primary"
    );
    go.send(true).unwrap();
    assert_eq!(ready_url(&e, &t).await, URL);
    // Asked again: the same database, nothing new made.
    assert_eq!(ready(e.launcher.task_database(t.task).await).unwrap(), URL);
    assert_eq!(
        e.fake
            .objects("postgresql.cnpg.io/v1", "Cluster", None)
            .len(),
        1
    );
    assert_eq!(
        e.cluster(&t).unwrap()["metadata"]["uid"],
        cluster["metadata"]["uid"]
    );
    assert!(
        handed.try_recv().is_err(),
        "the operator was handed it once"
    );

    // Its Secret gone while the Cluster is ready: starting, not failing.
    let secrets: Api<Secret> = Api::namespaced(client(&e.fake), &e.ns(&t));
    secrets
        .delete("database-app", &DeleteParams::default())
        .await
        .unwrap();
    let why = starting(e.launcher.task_database(t.task).await);
    assert!(why.contains("database-app"), "{why}");

    // It goes with the task's namespace.
    e.launcher.forget_task(t.task).await.unwrap();
    eventually("the namespace gone", || async {
        e.namespace(&t).is_none().then_some(())
    })
    .await;
    assert!(e.cluster(&t).is_none() && e.database_policy(&t).is_none());
}

#[tokio::test]
async fn what_the_operator_cannot_do_is_said() {
    let e = env_with_cloudnativepg().await;
    e.fake
        .set_cluster_operator(|_: String, _: String, _: Value| async {
            Err::<ClusterCredentials, _>("no storage class".to_owned())
        });
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    starting(e.launcher.task_database(t.task).await);
    let why = eventually("the operator's answer", || async {
        let why = starting(e.launcher.task_database(t.task).await);
        (why != "waiting for CloudNativePG" && why != "Setting up primary").then_some(why)
    })
    .await;
    assert_eq!(why, "Unable to create required cluster objects");
}

#[tokio::test]
async fn other_database_settings_shape_the_cluster() {
    let s = KubeSettings {
        database: DatabaseSettings {
            storage_size: "5Gi".to_owned(),
            storage_class: Some("fast".to_owned()),
            image: Some("ghcr.io/cloudnative-pg/postgresql:17.5".to_owned()),
            operator_namespace: "postgres-operator".to_owned(),
            resources: Resources::default(),
        },
        ..settings()
    };
    let e = env_on(
        Config {
            cloudnativepg: true,
            ..Config::default()
        },
        s,
    )
    .await;
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    starting(e.launcher.task_database(t.task).await);
    assert_eq!(
        e.cluster(&t).unwrap()["spec"],
        json!({
            "instances": 1,
            "imageName": "ghcr.io/cloudnative-pg/postgresql:17.5",
            "storage": {"size": "5Gi", "storageClass": "fast"},
            "bootstrap": {"initdb": {"database": "app", "owner": "app"}},
        })
    );
    let rules = e
        .database_policy(&t)
        .unwrap()
        .spec
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(
        ingress(&rules[1]).0,
        r#"namespace {"kubernetes.io/metadata.name": "postgres-operator"}"#
    );
}

#[tokio::test]
async fn a_database_needs_a_prepared_task_and_an_answering_cluster() {
    let e = env_with_cloudnativepg().await;
    let t = task();
    let why = refused(e.launcher.task_database(t.task).await);
    assert!(why.contains("prepare the task first"), "{why}");
    e.launcher.prepare_task(&t).await.unwrap();
    // Discovery failing, however it fails, is no answer: not "not offered".
    for status in [503, 500, 403] {
        e.fake
            .fail_next(Fault::new(status, 1).path("/apis/postgresql.cnpg.io/v1"));
        let why = unavailable(e.launcher.task_database(t.task).await);
        assert!(why.contains("CloudNativePG"), "{status}: {why}");
    }
    e.fake
        .fail_next(Fault::new(503, 1).verb("create").path("/clusters"));
    let why = unavailable(e.launcher.task_database(t.task).await);
    assert!(why.contains("creating the Cluster database"), "{why}");
    // Then it works, the policy made before the failure found.
    starting(e.launcher.task_database(t.task).await);
    assert!(e.cluster(&t).is_some());
    // Bad settings: refused before anything is sent.
    let bad = mainloop_kube::KubeLauncher::new(
        client(&e.fake),
        KubeSettings {
            database: DatabaseSettings {
                storage_size: "big".to_owned(),
                ..DatabaseSettings::default()
            },
            ..settings()
        },
    );
    e.fake.clear_requests();
    let why = refused(bad.task_database(t.task).await);
    assert!(why.contains("database.storage_size"), "{why}");
    assert_eq!(e.fake.requests(), []);
}

//! CloudNativePG's Clusters: discovered and served only with `Config::cloudnativepg`
//! (404s otherwise, still logged with the permission they needed); the operator hook
//! turning a Cluster ready with its `-app` Secret, or failed with its error; the hook
//! told of deletions, by a client or with the namespace.

use crate::common::{Env, api_err, env, env_with, eventually, obj, within};
use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::GroupVersionKind;
use kube::{Discovery, ResourceExt};
use mainloop_fake_kube::{ClusterCredentials, ClusterOperator, Config, Permission};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const GROUP: &str = "postgresql.cnpg.io";

/// One call of the hook's `create`, answered by the test.
struct Made {
    ns: String,
    name: String,
    cluster: Value,
    answer: oneshot::Sender<Result<ClusterCredentials, String>>,
}

struct Operator {
    made: mpsc::UnboundedSender<Made>,
    removed: mpsc::UnboundedSender<(String, String)>,
}

impl ClusterOperator for Operator {
    fn create(
        &self,
        ns: String,
        name: String,
        cluster: Value,
    ) -> BoxFuture<'static, Result<ClusterCredentials, String>> {
        let (answer, answered) = oneshot::channel();
        let _ = self.made.send(Made {
            ns,
            name,
            cluster,
            answer,
        });
        Box::pin(async move { answered.await.unwrap_or_else(|_| Err("no answer".into())) })
    }

    fn remove(&self, ns: String, name: String) -> BoxFuture<'static, ()> {
        let _ = self.removed.send((ns, name));
        Box::pin(async {})
    }
}

struct Hook {
    made: mpsc::UnboundedReceiver<Made>,
    removed: mpsc::UnboundedReceiver<(String, String)>,
}

fn cnpg_config() -> Config {
    Config {
        cloudnativepg: true,
        namespace_termination_delay: Duration::from_millis(100),
        bookmark_interval: Duration::from_millis(100),
        ..Config::default()
    }
}

fn set_operator(e: &Env) -> Hook {
    let (made, made_rx) = mpsc::unbounded_channel();
    let (removed, removed_rx) = mpsc::unbounded_channel();
    e.fake.set_cluster_operator(Operator { made, removed });
    Hook {
        made: made_rx,
        removed: removed_rx,
    }
}

fn clusters(e: &Env, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(GROUP, "v1", "Cluster");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "clusters");
    Api::namespaced_with(e.client.clone(), ns, &ar)
}

fn cluster(name: &str, spec: &Value) -> DynamicObject {
    obj(json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": spec,
    }))
}

fn database_spec() -> Value {
    json!({
        "instances": 1,
        "storage": {"size": "1Gi"},
        "bootstrap": {"initdb": {"database": "app", "owner": "app"}},
    })
}

fn credentials() -> ClusterCredentials {
    ClusterCredentials {
        username: "app".into(),
        password: "s3cret".into(),
        dbname: "task_db".into(),
        host: "127.0.0.1".into(),
        port: 54329,
    }
}

async fn cluster_where(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> DynamicObject {
    eventually(what, || async {
        api.get_opt(name)
            .await
            .unwrap()
            .filter(|c| f(&c.data["status"]))
    })
    .await
}

fn secret_data(s: &Secret) -> Vec<(String, String)> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

#[tokio::test]
async fn without_the_crds_the_group_is_not_found() {
    let e = env().await;
    let d = Discovery::new(e.client.clone()).run().await.unwrap();
    assert!(d.has_group("batch") && !d.has_group(GROUP));
    let d = Discovery::new(e.client.clone())
        .run_aggregated()
        .await
        .unwrap();
    assert!(!d.has_group(GROUP));
    e.fake.clear_requests();
    let err = api_err(
        e.client
            .list_api_group_resources("postgresql.cnpg.io/v1")
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    e.namespace("task-1").await;
    let err = api_err(
        clusters(&e, "task-1")
            .create(
                &PostParams::default(),
                &cluster("database", &database_spec()),
            )
            .await,
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "the server could not find the requested resource")
    );
    let log = e.fake.requests();
    // Discovery is a non-resource URL; the create needed its permission all the same.
    assert_eq!(log[0].path, "/apis/postgresql.cnpg.io/v1");
    assert_eq!(
        (log[0].resource.as_ref(), log[0].permission()),
        (None, None)
    );
    let create = log.iter().find(|r| r.method == "POST" && r.status == 404);
    assert_eq!(
        create.and_then(mainloop_fake_kube::RequestRecord::permission),
        Some(Permission {
            group: GROUP.into(),
            resource: "clusters".into(),
            verb: "create".into(),
        })
    );
}

#[tokio::test]
async fn with_the_crds_clusters_are_discovered() {
    let e = env_with(cnpg_config()).await;
    let list = e
        .client
        .list_api_group_resources("postgresql.cnpg.io/v1")
        .await
        .unwrap();
    let names: Vec<&str> = list.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["clusters", "clusters/status"]);
    let groups = e.client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == GROUP));
    let gvk = GroupVersionKind::gvk(GROUP, "v1", "Cluster");
    for d in [
        Discovery::new(e.client.clone()).run().await.unwrap(),
        Discovery::new(e.client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        let (ar, caps) = d.resolve_gvk(&gvk).unwrap();
        assert_eq!(ar.plural, "clusters");
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    }
}

#[tokio::test]
async fn the_operator_makes_a_cluster_ready_with_its_app_secret() {
    let e = env_with(cnpg_config()).await;
    let mut hook = set_operator(&e);
    e.namespace("task-1").await;
    e.fake.clear_requests();
    let api = clusters(&e, "task-1");
    let created = api
        .create(
            &PostParams::default(),
            &cluster("database", &database_spec()),
        )
        .await
        .unwrap();
    assert!(created.data.get("status").is_none_or(Value::is_null));
    let made = within("the operator hook", hook.made.recv()).await.unwrap();
    assert_eq!(
        (made.ns.as_str(), made.name.as_str()),
        ("task-1", "database")
    );
    assert_eq!(made.cluster["spec"]["instances"], 1);
    assert_eq!(made.cluster["metadata"]["uid"], json!(created.uid()));
    // Until the hook answers, the primary is being set up.
    let setting_up = api.get("database").await.unwrap();
    assert_eq!(setting_up.data["status"]["phase"], "Setting up primary");
    assert_eq!(setting_up.data["status"]["readyInstances"], 0);
    let mut events = api
        .watch(
            &WatchParams::default(),
            &setting_up.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    made.answer.send(Ok(credentials())).unwrap();
    let ready = loop {
        match within("the ready Cluster", events.next())
            .await
            .unwrap()
            .unwrap()
        {
            WatchEvent::Modified(c) => break c,
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    let status = &ready.data["status"];
    assert_eq!(status["phase"], "Cluster in healthy state");
    assert_eq!(
        (&status["instances"], &status["readyInstances"]),
        (&json!(1), &json!(1))
    );
    let cond = &status["conditions"][0];
    assert_eq!(
        (&cond["type"], &cond["status"], &cond["reason"]),
        (&json!("Ready"), &json!("True"), &json!("ClusterIsReady"))
    );
    assert!(
        ready.resource_version().unwrap().parse::<u64>().unwrap()
            > setting_up
                .resource_version()
                .unwrap()
                .parse::<u64>()
                .unwrap()
    );
    // The Secret the operator makes, pointing at the hook's database.
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), "task-1");
    let secret = secrets.get("database-app").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(secret.labels()["cnpg.io/cluster"], "database");
    assert_eq!(secret.owner_references()[0].uid, created.uid().unwrap());
    let data = secret_data(&secret);
    let get = |k: &str| {
        data.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no key {k}"))
    };
    assert_eq!(
        (get("username"), get("password"), get("dbname")),
        ("app", "s3cret", "task_db")
    );
    assert_eq!((get("host"), get("port")), ("127.0.0.1", "54329"));
    assert_eq!(
        get("uri"),
        "postgresql://app:s3cret@127.0.0.1:54329/task_db"
    );
    assert_eq!(
        get("jdbc-uri"),
        "jdbc:postgresql://127.0.0.1:54329/task_db?password=s3cret&user=app"
    );
    assert_eq!(get("pgpass"), "127.0.0.1:54329:task_db:app:s3cret\n");
    // Listed, then deleted: the hook hears of it, and the Secret goes with its owner.
    let listed = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = listed.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["database"]);
    api.delete("database", &DeleteParams::default())
        .await
        .unwrap();
    let removed = within("the hook's remove", hook.removed.recv()).await;
    assert_eq!(removed, Some(("task-1".into(), "database".into())));
    assert!(api.get_opt("database").await.unwrap().is_none());
    assert!(secrets.get_opt("database-app").await.unwrap().is_none());
    let p = |r: &str, v: &str| Permission {
        group: GROUP.into(),
        resource: r.into(),
        verb: v.into(),
    };
    let want: BTreeSet<Permission> = ["create", "get", "watch", "list", "delete"]
        .into_iter()
        .map(|v| p("clusters", v))
        .chain([Permission {
            group: String::new(),
            resource: "secrets".into(),
            verb: "get".into(),
        }])
        .collect();
    assert_eq!(e.fake.permissions(), want);
}

#[tokio::test]
async fn the_operators_error_shows_in_the_status() {
    let e = env_with(cnpg_config()).await;
    // A closure is a hook too (one that is never told of removals).
    e.fake
        .set_cluster_operator(|_ns: String, _name: String, _cluster: Value| async {
            Err::<ClusterCredentials, _>("no space left on device".to_owned())
        });
    e.namespace("task-2").await;
    let api = clusters(&e, "task-2");
    api.create(
        &PostParams::default(),
        &cluster("database", &database_spec()),
    )
    .await
    .unwrap();
    let failed = cluster_where(&api, "database", "the failure", |s| {
        s["phase"] == "Unable to create required cluster objects"
    })
    .await;
    let status = &failed.data["status"];
    assert_eq!(status["phaseReason"], "no space left on device");
    assert_eq!(status["readyInstances"], 0);
    assert_eq!(
        (
            &status["conditions"][0]["type"],
            &status["conditions"][0]["status"]
        ),
        (&json!("Ready"), &json!("False"))
    );
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), "task-2");
    assert!(secrets.get_opt("database-app").await.unwrap().is_none());
}

#[tokio::test]
async fn a_cluster_waits_for_an_operator_and_its_schema_is_checked() {
    let e = env_with(cnpg_config()).await;
    e.namespace("task-3").await;
    let api = clusters(&e, "task-3");
    let err = api_err(
        api.create(&PostParams::default(), &cluster("bad", &json!({})))
            .await,
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            422,
            "Cluster.postgresql.cnpg.io \"bad\" is invalid: spec.instances: Required value"
        )
    );
    api.create(
        &PostParams::default(),
        &cluster("database", &database_spec()),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiting = api.get("database").await.unwrap();
    assert!(waiting.data.get("status").is_none_or(Value::is_null));
    let mut hook = set_operator(&e);
    let made = within("the operator hook", hook.made.recv()).await.unwrap();
    assert_eq!(made.name, "database");
    made.answer.send(Ok(credentials())).unwrap();
    cluster_where(&api, "database", "ready", |s| s["readyInstances"] == 1).await;
}

#[tokio::test]
async fn deletion_tells_the_operator_once_it_has_answered() {
    let e = env_with(cnpg_config()).await;
    let mut hook = set_operator(&e);
    // Deleted while the hook works: it hears of it once it answered.
    e.namespace("task-4").await;
    let api = clusters(&e, "task-4");
    api.create(&PostParams::default(), &cluster("slow", &database_spec()))
        .await
        .unwrap();
    let made = within("the operator hook", hook.made.recv()).await.unwrap();
    api.delete("slow", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(hook.removed.try_recv().is_err());
    made.answer.send(Ok(credentials())).unwrap();
    let removed = within("the hook's remove", hook.removed.recv()).await;
    assert_eq!(removed, Some(("task-4".into(), "slow".into())));
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), "task-4");
    assert!(secrets.get_opt("slow-app").await.unwrap().is_none());
    // A namespace's deletion takes its Cluster (and the Secret) with it.
    e.namespace("task-5").await;
    let api = clusters(&e, "task-5");
    api.create(
        &PostParams::default(),
        &cluster("database", &database_spec()),
    )
    .await
    .unwrap();
    let made = within("the operator hook", hook.made.recv()).await.unwrap();
    made.answer.send(Ok(credentials())).unwrap();
    cluster_where(&api, "database", "ready", |s| s["readyInstances"] == 1).await;
    let nss: Api<Namespace> = Api::all(e.client.clone());
    nss.delete("task-5", &DeleteParams::background())
        .await
        .unwrap();
    let removed = within("the hook's remove", hook.removed.recv()).await;
    assert_eq!(removed, Some(("task-5".into(), "database".into())));
    assert!(
        e.fake
            .objects("postgresql.cnpg.io/v1", "Cluster", Some("task-5"))
            .is_empty()
    );
    assert!(e.fake.objects("v1", "Secret", Some("task-5")).is_empty());
    eventually("the namespace to go", || {
        let nss = nss.clone();
        async move { nss.get_opt("task-5").await.unwrap().is_none().then_some(()) }
    })
    .await;
}

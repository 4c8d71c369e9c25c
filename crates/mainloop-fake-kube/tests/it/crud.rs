//! Discovery, and create/get/list/replace/patch/delete of every kind with the API's
//! error semantics (404, 409 AlreadyExists and Conflict, 403 in a terminating namespace,
//! 422 Invalid), paging, selectors, and namespace termination.

use crate::common::{api_err, env, eventually, obj};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::NamespaceResourceScope;
use kube::{Discovery, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;

#[tokio::test]
async fn discovery_and_version() {
    let e = env().await;
    let v = e.client.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "33"));
    let d = Discovery::new(e.client.clone()).run().await.unwrap();
    assert!(d.has_group("batch") && d.has_group("networking.k8s.io"));
    let (job, _) = d
        .resolve_gvk(&kube::core::GroupVersionKind::gvk("batch", "v1", "Job"))
        .unwrap();
    assert_eq!(job.plural, "jobs");
    let d = Discovery::new(e.client.clone())
        .run_aggregated()
        .await
        .unwrap();
    let (pod, caps) = d
        .resolve_gvk(&kube::core::GroupVersionKind::gvk("", "v1", "Pod"))
        .unwrap();
    assert_eq!(pod.plural, "pods");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
}

/// Create, get, list, merge patch, replace and delete one namespaced object.
async fn roundtrip<K>(client: &kube::Client, ns: &str, body: serde_json::Value)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let kind = K::kind(&());
    let created = api
        .create(&PostParams::default(), &obj::<K>(body.clone()))
        .await
        .unwrap();
    let name = created.name_any();
    assert!(created.uid().is_some(), "{kind} has a uid");
    assert!(created.meta().creation_timestamp.is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();
    let err = api_err(api.create(&PostParams::default(), &obj::<K>(body)).await);
    assert_eq!(
        (err.code, err.reason.as_str()),
        (409, "AlreadyExists"),
        "{kind}"
    );
    let got = api.get(&name).await.unwrap();
    assert_eq!(got.resource_version(), created.resource_version());
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert!(
        listed.items.iter().any(|o| o.name_any() == name),
        "{kind} listed"
    );
    assert!(listed.metadata.resource_version.is_some());
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"patched": "yes"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.labels().get("patched").map(String::as_str),
        Some("yes")
    );
    let rv2: u64 = patched.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1, "{kind}: a write bumps the resourceVersion");
    // A replace from the stale copy conflicts; from the fresh one it goes through.
    let err = api_err(api.replace(&name, &PostParams::default(), &created).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"), "{kind}");
    let mut fresh = patched.clone();
    fresh.labels_mut().insert("replaced".into(), "yes".into());
    let replaced = api
        .replace(&name, &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(
        replaced.labels().get("replaced").map(String::as_str),
        Some("yes")
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let err = api_err(api.get(&name).await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"), "{kind}");
}

#[tokio::test]
async fn every_kind_round_trips() {
    let e = env().await;
    e.namespace("kinds").await;
    let c = &e.client;
    roundtrip::<Secret>(
        c,
        "kinds",
        json!({"metadata": {"name": "s"}, "stringData": {"token": "abc"}}),
    )
    .await;
    roundtrip::<ConfigMap>(
        c,
        "kinds",
        json!({"metadata": {"name": "cm"}, "data": {"a": "b"}}),
    )
    .await;
    roundtrip::<ServiceAccount>(c, "kinds", json!({"metadata": {"name": "runner"}})).await;
    roundtrip::<Service>(
        c,
        "kinds",
        json!({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    roundtrip::<ResourceQuota>(
        c,
        "kinds",
        json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2"}}}),
    )
    .await;
    roundtrip::<LimitRange>(
        c,
        "kinds",
        json!({"metadata": {"name": "lr"}, "spec": {"limits": [{"type": "Container", "default": {"cpu": "1"}}]}}),
    )
    .await;
    roundtrip::<NetworkPolicy>(
        c,
        "kinds",
        json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
    )
    .await;
    roundtrip::<Ingress>(c, "kinds", json!({"metadata": {"name": "ing"}, "spec": {}})).await;
    roundtrip::<Lease>(
        c,
        "kinds",
        json!({"metadata": {"name": "lock"}, "spec": {"holderIdentity": "me"}}),
    )
    .await;
    Box::pin(roundtrip::<Job>(
        c,
        "kinds",
        json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1"}]}}}}),
    ))
    .await;
}

#[tokio::test]
async fn secrets_fold_string_data_and_statuses_are_real() {
    let e = env().await;
    e.namespace("t").await;
    let api: Api<Secret> = Api::namespaced(e.client.clone(), "t");
    let s = api
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "tok"}, "stringData": {"k": "v"}})),
        )
        .await
        .unwrap();
    assert_eq!(s.data.unwrap()["k"].0, b"v");
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    let err = api_err(api.get("nope").await);
    assert_eq!(err.message, "secrets \"nope\" not found");
    let d = err.details.unwrap();
    assert_eq!(
        (d.name.as_str(), d.kind.as_str(), d.group.as_str()),
        ("nope", "secrets", "")
    );
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), "t");
    let err = api_err(jobs.get("nope").await);
    assert_eq!(err.message, "jobs.batch \"nope\" not found");
    assert_eq!(err.details.unwrap().group, "batch");
    // A Job whose pods would restart forever is refused, as upstream.
    let bad: Job = obj(
        json!({"metadata": {"name": "bad"}, "spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "x"}]}}}}),
    );
    let err = api_err(jobs.create(&PostParams::default(), &bad).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\""),
        "{}",
        err.message
    );
    // Names and labels are validated.
    let nss: Api<Namespace> = Api::all(e.client.clone());
    let err = api_err(
        nss.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "Task_1"}})),
        )
        .await,
    );
    assert_eq!(err.code, 422);
    let err = api_err(
        api.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "x", "labels": {"a": "has space"}}})),
        )
        .await,
    );
    assert_eq!(err.code, 422);
    // A namespace that does not exist.
    let ghost: Api<Secret> = Api::namespaced(e.client.clone(), "ghost");
    let err = api_err(
        ghost
            .create(
                &PostParams::default(),
                &obj(json!({"metadata": {"name": "x"}})),
            )
            .await,
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"ghost\" not found")
    );
    assert!(
        ghost
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Creating from a fetched copy (with its resourceVersion) fails as on etcd.
    let mut copy = api.get("tok").await.unwrap();
    copy.metadata.name = Some("copy".into());
    let err = api_err(api.create(&PostParams::default(), &copy).await);
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            500,
            "resourceVersion should not be set on objects to be created"
        )
    );
}

#[tokio::test]
async fn apply_and_json_patch() {
    let e = env().await;
    e.namespace("p").await;
    let api: Api<ConfigMap> = Api::namespaced(e.client.clone(), "p");
    let ssa = PatchParams::apply("mainloop").force();
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}});
    let created = api.patch("cfg", &ssa, &Patch::Apply(&body)).await.unwrap();
    assert_eq!(created.data.as_ref().unwrap()["a"], "1");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"b": "2"}});
    let applied = api.patch("cfg", &ssa, &Patch::Apply(&body)).await.unwrap();
    assert_eq!(applied.data.as_ref().unwrap()["b"], "2");
    assert_eq!(applied.uid(), created.uid());
    // A JSON patch (kube-rs sends these only with its `jsonpatch` feature; raw here).
    let req = http::Request::patch("/api/v1/namespaces/p/configmaps/cfg")
        .header("content-type", "application/json-patch+json")
        .body(
            serde_json::to_vec(&json!([{"op": "replace", "path": "/data/a", "value": "9"}]))
                .unwrap(),
        )
        .unwrap();
    let patched: ConfigMap = e.client.request(req).await.unwrap();
    assert_eq!(patched.data.unwrap()["a"], "9");
    let err = api_err(
        api.patch(
            "missing",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {}})),
        )
        .await,
    );
    assert_eq!(err.code, 404);
    let stale = json!({"metadata": {"resourceVersion": "1"}, "data": {"a": "0"}});
    let err = api_err(
        api.patch("cfg", &PatchParams::default(), &Patch::Merge(stale))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
}

#[tokio::test]
async fn list_pages_and_selects() {
    let e = env().await;
    e.namespace("l").await;
    let api: Api<ConfigMap> = Api::namespaced(e.client.clone(), "l");
    for i in 0..5 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        api.create(&PostParams::default(), &obj(json!({"metadata": {"name": format!("cm{i}"), "labels": {"tier": tier, "app": "x"}}})))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(ResourceExt::name_any));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names, ["cm0", "cm1", "cm2", "cm3", "cm4"]);
    let count = |lp: ListParams| {
        let api = api.clone();
        async move { api.list(&lp).await.unwrap().items.len() }
    };
    assert_eq!(
        count(ListParams::default().labels("tier=even,app")).await,
        3
    );
    assert_eq!(count(ListParams::default().labels("tier!=even")).await, 2);
    assert_eq!(
        count(ListParams::default().labels("tier in (odd,none)")).await,
        2
    );
    assert_eq!(
        count(ListParams::default().fields("metadata.name=cm3")).await,
        1
    );
    let all: Api<ConfigMap> = Api::all(e.client.clone());
    assert_eq!(
        all.list(&ListParams::default().labels("app=x"))
            .await
            .unwrap()
            .items
            .len(),
        5
    );
    let err = api_err(api.list(&ListParams::default().fields("spec.nope=1")).await);
    assert_eq!(err.code, 400);
    let gone = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("tier=odd"),
        )
        .await
        .unwrap();
    assert_eq!(gone.left().unwrap().items.len(), 2);
    assert_eq!(count(ListParams::default()).await, 3);
}

#[tokio::test]
async fn namespace_termination_removes_contents() {
    let e = env().await;
    e.namespace("doomed").await;
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), "doomed");
    secrets
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "s1"}})),
        )
        .await
        .unwrap();
    let mut events = secrets
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let first = events.next().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Added(ref s) if s.name_any() == "s1"));
    let nss: Api<Namespace> = Api::all(e.client.clone());
    let deleted = nss
        .delete("doomed", &DeleteParams::background())
        .await
        .unwrap();
    let ns = deleted
        .left()
        .expect("a namespace delete answers with the namespace");
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    assert!(ns.metadata.deletion_timestamp.is_some());
    let err = api_err(
        secrets
            .create(
                &PostParams::default(),
                &obj(json!({"metadata": {"name": "late"}})),
            )
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "secrets \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
    );
    let err = api_err(nss.delete("doomed", &DeleteParams::default()).await);
    assert_eq!(err.code, 409);
    // The secret goes with a DELETED event, then the namespace.
    loop {
        match events.next().await.unwrap().unwrap() {
            WatchEvent::Deleted(s) => {
                assert_eq!(s.name_any(), "s1");
                break;
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    eventually("the namespace to go", || {
        let nss = nss.clone();
        async move { nss.get_opt("doomed").await.unwrap().is_none().then_some(()) }
    })
    .await;
    let err = api_err(nss.delete("default", &DeleteParams::default()).await);
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            403,
            "namespaces \"default\" is forbidden: this namespace may not be deleted"
        )
    );
}

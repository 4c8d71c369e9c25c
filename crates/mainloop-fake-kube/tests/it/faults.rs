//! Injected faults (failing requests, outages), the request log and the RBAC
//! permissions it implies, and the `/_fake` HTTP control API.

use crate::common::{api_err, client_for, client_without_retries, env, obj};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use mainloop_fake_kube::{Fault, Outage, Permission};
use serde_json::{Value, json};

#[tokio::test]
async fn next_requests_fail_as_asked() {
    let e = env().await;
    e.namespace("f").await;
    let api: Api<ConfigMap> = Api::namespaced(client_without_retries(&e.fake), "f");
    e.fake.fail_next(Fault::new(500, 1).verb("create"));
    e.fake
        .fail_next(Fault::new(503, 2).method("GET").path("/configmaps"));
    let err = api_err(api.list(&ListParams::default()).await);
    assert_eq!((err.code, err.reason.as_str()), (503, "ServiceUnavailable"));
    let err = api_err(api.get("x").await);
    assert_eq!(err.code, 503);
    let err = api_err(
        api.create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "x"}})),
        )
        .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    assert_eq!(err.message, "Internal error occurred: injected fault");
    // Used up: everything works again.
    api.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "x"}})),
    )
    .await
    .unwrap();
    api.get("x").await.unwrap();
    e.fake.fail_next(Fault::new(429, 5));
    assert_eq!(api_err(api.get("x").await).reason, "TooManyRequests");
    e.fake.clear_faults();
    api.get("x").await.unwrap();
    // kube-rs's default client retries 503s by itself; the fake's log shows each try.
    e.fake.clear_requests();
    e.fake.fail_next(Fault::new(503, 2).verb("get"));
    let retrying: Api<ConfigMap> = Api::namespaced(e.client.clone(), "f");
    retrying.get("x").await.unwrap();
    let statuses: Vec<u16> = e.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
}

#[tokio::test]
async fn outages() {
    let e = env().await;
    let nss: Api<Namespace> = Api::all(client_without_retries(&e.fake));
    e.fake.set_outage(Some(Outage::Unavailable)).await;
    let err = api_err(nss.list(&ListParams::default()).await);
    assert_eq!(
        (err.code, err.message.as_str()),
        (503, "the server is currently unable to handle the request")
    );
    e.fake.set_outage(Some(Outage::Refuse)).await;
    match nss.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => panic!("expected a connection error, got {s:?}"),
        Err(_) => {}
        Ok(_) => panic!("a refused connection answered"),
    }
    let refused = tokio::net::TcpStream::connect(e.fake.addr()).await;
    assert!(refused.is_err(), "the port is closed during the outage");
    e.fake.set_outage(None).await;
    // The same port serves again, at once.
    let listed = nss.list(&ListParams::default()).await.unwrap();
    assert!(listed.items.iter().any(|n| n.name_any() == "default"));
}

#[tokio::test]
async fn the_log_names_every_call_and_its_permission() {
    let e = env().await;
    e.fake.clear_requests();
    let nss: Api<Namespace> = Api::all(e.client.clone());
    nss.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "logged"}})),
    )
    .await
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), "logged");
    let job: Job = obj(
        json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "x:1"}]}}}}),
    );
    jobs.create(&PostParams::default(), &job).await.unwrap();
    jobs.get_status("j").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "logged");
    pods.list(&ListParams::default().labels("job-name=j"))
        .await
        .unwrap();
    let mut w = pods
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    while w.next().await.is_some() {}
    nss.patch("logged", &PatchParams::apply("mainloop").force(), &Patch::Apply(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "logged", "labels": {"a": "b"}}
    })))
    .await
    .unwrap();
    nss.delete("logged", &DeleteParams::background())
        .await
        .unwrap();
    let log = e.fake.requests();
    let summary: Vec<(String, String, u16)> = log
        .iter()
        .map(|r| (r.method.clone(), r.verb.clone(), r.status))
        .collect();
    let want = [
        ("POST", "create", 201),
        ("POST", "create", 201),
        ("GET", "get", 200),
        ("GET", "list", 200),
        ("GET", "watch", 200),
        ("PATCH", "patch", 200),
        ("DELETE", "delete", 200),
    ];
    let want: Vec<(String, String, u16)> = want
        .iter()
        .map(|(m, v, s)| ((*m).to_owned(), (*v).to_owned(), *s))
        .collect();
    assert_eq!(summary, want);
    assert_eq!(log[1].path, "/apis/batch/v1/namespaces/logged/jobs");
    assert_eq!(log[2].subresource.as_deref(), Some("status"));
    assert!(
        log[3].query.contains("labelSelector=job-name%3Dj"),
        "{}",
        log[3].query
    );
    assert!(log[5].query.contains("fieldManager=mainloop") && log[5].query.contains("force=true"));
    let p = |g: &str, r: &str, v: &str| Permission {
        group: g.into(),
        resource: r.into(),
        verb: v.into(),
    };
    let got: Vec<Permission> = e.fake.permissions().into_iter().collect();
    let mut want = vec![
        p("", "namespaces", "create"),
        p("", "namespaces", "patch"),
        p("", "namespaces", "delete"),
        p("batch", "jobs", "create"),
        p("batch", "jobs/status", "get"),
        p("", "pods", "list"),
        p("", "pods", "watch"),
    ];
    want.sort();
    assert_eq!(got, want);
}

/// A raw request to the fake through the kube client.
async fn raw(client: &kube::Client, method: &str, path: &str, body: Value) -> Value {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let text = client.request_text(req).await.unwrap();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn http_control_api() {
    let e = env().await;
    let c = client_for(&e.fake);
    e.namespace("ctl").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "ctl");
    raw(
        &c,
        "POST",
        "/_fake/faults",
        json!({"status": 500, "count": 1, "verb": "list"}),
    )
    .await;
    assert_eq!(api_err(cms.list(&ListParams::default()).await).code, 500);
    cms.list(&ListParams::default()).await.unwrap();
    let log = raw(&c, "GET", "/_fake/requests", Value::Null).await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .all(|r| !r["path"].as_str().unwrap().starts_with("/_fake"))
    );
    raw(&c, "POST", "/_fake/outage", json!({"mode": "unavailable"})).await;
    let no_retry: Api<ConfigMap> = Api::namespaced(client_without_retries(&e.fake), "ctl");
    assert_eq!(api_err(no_retry.get("x").await).code, 503);
    raw(&c, "DELETE", "/_fake/outage", Value::Null).await;
    raw(&c, "POST", "/_fake/history/compact", Value::Null).await;
    let state = raw(&c, "GET", "/_fake/state", Value::Null).await;
    assert_eq!(state["historyFloor"], state["resourceVersion"]);
    // Pods are driven from outside too.
    let jobs: Api<Job> = Api::namespaced(c.clone(), "ctl");
    let job: Job = obj(
        json!({"metadata": {"name": "j"}, "spec": {"backoffLimit": 0, "template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "x:1"}]}}}}),
    );
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let pods = raw(&c, "GET", "/_fake/pods", Value::Null).await;
    let name = pods[0]["name"].as_str().unwrap().to_owned();
    let pod = raw(
        &c,
        "POST",
        &format!("/_fake/pods/ctl/{name}/running"),
        Value::Null,
    )
    .await;
    assert_eq!(pod["status"]["phase"], "Running");
    let pod = raw(
        &c,
        "POST",
        &format!("/_fake/pods/ctl/{name}/fail"),
        json!({"exitCode": 7}),
    )
    .await;
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        7
    );
    let perms = raw(&c, "GET", "/_fake/permissions", Value::Null).await;
    assert!(
        perms
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["resource"] == "configmaps" && p["verb"] == "list")
    );
}

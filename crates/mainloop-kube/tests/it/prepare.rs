//! `prepare_task`: the task's namespace and what fences it in (the NetworkPolicy of its
//! runner pods, ResourceQuota, LimitRange), the Secret `runner`; made once, found the
//! second time, the Secret's data replaced so a rotated token lands; a namespace not the
//! launcher's left alone; bad input refused before anything is sent.

use crate::common::{
    egress, env, env_with, ingress, refused, rotated, runner_pods, secret_data, selector, settings,
    strings, task, task_with,
};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use mainloop_kube::{KubeSettings, ServerEgress};
use mainloop_launch::Launcher;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn prepare_makes_the_task_namespace() {
    let e = env().await;
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    let ns_name = e.ns(&t);
    assert_eq!(ns_name, format!("mainloop-task-{}", t.task.0.simple()));
    let want = labels(&[
        ("app.kubernetes.io/managed-by", "mainloop"),
        ("mainloop.dev/task", &t.task.to_string()),
    ]);
    let ns = e.namespace(&t).unwrap();
    for (k, v) in &want {
        assert_eq!(ns.labels().get(k), Some(v), "namespace label {k}");
    }
    // The NetworkPolicy: the runner pods; ingress from the server on any TCP port;
    // egress to DNS, the server, the task's database and the CIDRs.
    let np = e.policy(&t).unwrap();
    assert_eq!(np.labels(), &want);
    let spec = np.spec.unwrap();
    assert_eq!(selector(&spec.pod_selector.unwrap()), runner_pods(&t));
    assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
    let server = r#"pods {"kubernetes.io/metadata.name": "mainloop"} {"app.kubernetes.io/component": "server", "app.kubernetes.io/name": "mainloop"}"#;
    let rules: Vec<(String, Vec<String>)> = spec.ingress.unwrap().iter().map(ingress).collect();
    assert_eq!(rules, [(server.to_owned(), strings(&["TCP/*"]))]);
    let rules: Vec<(String, Vec<String>)> = spec.egress.unwrap().iter().map(egress).collect();
    assert_eq!(
        rules,
        [
            (
                r#"pods {"kubernetes.io/metadata.name": "kube-system"} {"k8s-app": "kube-dns"}"#
                    .to_owned(),
                strings(&["UDP/53", "TCP/53"])
            ),
            (server.to_owned(), strings(&["TCP/8080"])),
            (
                r#"here {"cnpg.io/cluster": "database"}"#.to_owned(),
                strings(&["TCP/5432"])
            ),
            (
                r#"cidr 0.0.0.0/0 except ["10.0.0.0/8", "169.254.169.254/32"]"#.to_owned(),
                strings(&["TCP/443"])
            ),
            ("cidr 192.0.2.10/32 except []".to_owned(), vec![]),
        ]
    );
    // The quota and the containers' defaults, from the settings.
    let d = KubeSettings::default();
    let q = e.quota(&t).unwrap();
    assert_eq!(q.labels(), &want);
    let hard: BTreeMap<String, String> = q
        .spec
        .unwrap()
        .hard
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    assert_eq!(hard, d.quota);
    assert_eq!(hard["pods"], "3");
    let lr = e.limits(&t).unwrap();
    let item = &lr.spec.unwrap().limits[0];
    assert_eq!(item.type_, "Container");
    let q =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.clone()
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect::<BTreeMap<_, _>>()
        };
    assert_eq!(q(&item.default), d.resources.limits);
    assert_eq!(q(&item.default_request), d.resources.requests);
    // The Secret: the token and each credential.
    let secret = e.secret(&t).unwrap();
    assert_eq!(secret.labels(), &want);
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret_data(&secret),
        [
            ("ANTHROPIC_API_KEY".to_owned(), "sk-1".to_owned()),
            ("GH_TOKEN".to_owned(), "gh-1".to_owned()),
            ("MAINLOOP_RUNNER_TOKEN".to_owned(), "mlr_first".to_owned()),
        ]
    );
}

#[tokio::test]
async fn prepare_twice_changes_nothing_but_a_rotated_token_lands() {
    let e = env().await;
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    let before = (
        e.namespace(&t).unwrap().uid(),
        e.policy(&t).unwrap(),
        e.quota(&t).unwrap(),
        e.limits(&t).unwrap(),
        e.secret(&t).unwrap(),
    );
    e.launcher.prepare_task(&t).await.unwrap();
    assert_eq!(e.namespace(&t).unwrap().uid(), before.0);
    assert_eq!(e.policy(&t).unwrap(), before.1, "the policy is untouched");
    assert_eq!(e.quota(&t).unwrap(), before.2);
    assert_eq!(e.limits(&t).unwrap(), before.3);
    let again = e.secret(&t).unwrap();
    assert_eq!(again.uid(), before.4.uid());
    assert_eq!(secret_data(&again), secret_data(&before.4));
    assert_eq!(e.fake.objects("v1", "Namespace", None).len(), 4);
    // A new token, one credential changed and one gone: the Secret holds exactly that.
    let t2 = rotated(&t, "mlr_second", &[("ANTHROPIC_API_KEY", "sk-2")]);
    e.launcher.prepare_task(&t2).await.unwrap();
    let rotated = e.secret(&t).unwrap();
    assert_eq!(rotated.uid(), before.4.uid(), "replaced in place");
    assert_eq!(
        secret_data(&rotated),
        [
            ("ANTHROPIC_API_KEY".to_owned(), "sk-2".to_owned()),
            ("MAINLOOP_RUNNER_TOKEN".to_owned(), "mlr_second".to_owned()),
        ]
    );
    assert_eq!(rotated.labels(), before.4.labels());
}

#[tokio::test]
async fn a_namespace_that_is_not_the_launchers_is_left_alone() {
    let e = env().await;
    let t = task();
    // Someone else's namespace under the same name (no labels of ours).
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(crate::common::client(&e.fake));
    let theirs = serde_json::from_value(json!({"metadata": {"name": e.ns(&t)}})).unwrap();
    nss.create(&PostParams::default(), &theirs).await.unwrap();
    let why = refused(e.launcher.prepare_task(&t).await);
    assert!(why.contains("is not the launcher's"), "{why}");
    assert!(e.secret(&t).is_none() && e.policy(&t).is_none());
    let why = refused(e.launcher.forget_task(t.task).await);
    assert!(why.contains("left alone"), "{why}");
    assert!(
        e.namespace(&t)
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    assert_eq!(e.launcher.launched_tasks().await.unwrap(), []);
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_sent() {
    let e = env().await;
    e.fake.clear_requests();
    for creds in [
        &[("MAINLOOP_RUNNER_TOKEN", "x")][..],
        &[("MAINLOOP_DATA_DIR", "x")],
        &[("lower", "x")],
        &[("A", "1"), ("A", "2")],
    ] {
        let why = refused(e.launcher.prepare_task(&task_with("t", creds)).await);
        assert!(why.contains("credential"), "{why}");
    }
    let t = task();
    for run in ["", "Run-1", "run_1", "-run", &"r".repeat(41)] {
        refused(e.launcher.start_run(&t, run).await);
        refused(e.launcher.run_state(t.task, run).await);
        refused(e.launcher.stop_run(t.task, run).await);
    }
    let bad = mainloop_kube::KubeLauncher::new(
        crate::common::client(&e.fake),
        KubeSettings {
            server_url: "mainloop".to_owned(),
            ..settings()
        },
    );
    let why = refused(bad.prepare_task(&t).await);
    assert!(why.contains("server_url"), "{why}");
    refused(bad.start_run(&t, "run-1").await);
    assert_eq!(e.fake.requests(), [], "nothing reached the API");
    // A run started for a task never prepared: its namespace does not exist.
    let why = refused(e.launcher.start_run(&t, "run-1").await);
    assert!(why.contains("prepare the task first"), "{why}");
}

#[tokio::test]
async fn other_settings_shape_the_objects() {
    let s = KubeSettings {
        dns: None,
        server: ServerEgress::Cidr {
            cidr: "198.51.100.7/32".to_owned(),
            port: 443,
        },
        allowed_egress: Vec::new(),
        quota: BTreeMap::new(),
        resources: Default::default(),
        service_account_name: Some("runner".to_owned()),
        command: vec!["mainloop".to_owned()],
        job_ttl_secs: None,
        active_deadline_secs: Some(3600),
        image_pull_policy: None,
        ..settings()
    };
    let e = env_with(Duration::from_millis(100), s).await;
    let t = task();
    e.launcher.prepare_task(&t).await.unwrap();
    let spec = e.policy(&t).unwrap().spec.unwrap();
    let rules: Vec<_> = spec.egress.unwrap().iter().map(egress).collect();
    assert_eq!(
        rules,
        [
            (
                "cidr 198.51.100.7/32 except []".to_owned(),
                strings(&["TCP/443"])
            ),
            (
                r#"here {"cnpg.io/cluster": "database"}"#.to_owned(),
                strings(&["TCP/5432"])
            ),
        ]
    );
    // The server's address range may reach the runner pods' previews.
    let rules: Vec<_> = spec.ingress.unwrap().iter().map(ingress).collect();
    assert_eq!(
        rules,
        [(
            "cidr 198.51.100.7/32 except []".to_owned(),
            strings(&["TCP/*"])
        )]
    );
    assert!(e.quota(&t).is_none(), "no quota asked for, none made");
    assert!(e.limits(&t).is_none());
    e.launcher.start_run(&t, "run-1").await.unwrap();
    let job = e.job(&t, "run-1").unwrap();
    let spec = job.spec.unwrap();
    assert_eq!(spec.ttl_seconds_after_finished, None);
    assert_eq!(spec.active_deadline_seconds, Some(3600));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("runner"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let c = &pod.containers[0];
    assert_eq!(c.command.as_deref(), Some(&["mainloop".to_owned()][..]));
    assert!(
        c.resources
            .as_ref()
            .is_none_or(|r| r.limits.is_none() && r.requests.is_none())
    );
}

//! The RBAC covers exactly the calls the launcher makes: every method exercised (each
//! path through it: made and found, a rotated token, a run through its pod's life, its
//! address, the task's database asked for, starting and ready, a namespace
//! terminating), every request the fake logged is granted by the ClusterRole in
//! deploy/kubernetes/components/kubernetes-launcher/clusterrole.yaml (a rule with
//! `resourceNames` only for those names), and every `(group, resource, verb)` the role
//! grants is used by some call. Discovery is no resource: `system:discovery` lets every
//! authenticated user read it, so the role does not grant it.

use crate::common::{env_on, eventually, rotated, settings, task, unavailable, within};
use mainloop_fake_kube::{ClusterCredentials, Config, Permission, RequestRecord};
use mainloop_launch::{Launcher, RunState, TaskDatabase};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Role {
    kind: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

impl Rule {
    fn grants(&self, p: &Permission, name: Option<&str>) -> bool {
        let any = |v: &[String], x: &str| v.iter().any(|s| s == "*" || s == x);
        any(&self.api_groups, &p.group)
            && any(&self.resources, &p.resource)
            && any(&self.verbs, &p.verb)
            && (self.resource_names.is_empty()
                || name.is_some_and(|n| self.resource_names.iter().any(|r| r == n)))
    }

    fn triples(&self) -> impl Iterator<Item = Permission> + '_ {
        self.api_groups.iter().flat_map(move |g| {
            self.resources.iter().flat_map(move |r| {
                self.verbs.iter().map(move |v| Permission {
                    group: g.clone(),
                    resource: r.clone(),
                    verb: v.clone(),
                })
            })
        })
    }
}

fn cluster_role() -> Role {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/components/kubernetes-launcher/clusterrole.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let role: Role = serde_yaml::from_str(&text).unwrap();
    assert_eq!(role.kind, "ClusterRole");
    role
}

#[tokio::test]
async fn the_cluster_role_covers_exactly_the_launchers_calls() {
    let e = env_on(
        Config {
            namespace_termination_delay: Duration::from_millis(500),
            cloudnativepg: true,
            ..Config::default()
        },
        settings(),
    )
    .await;
    let mut pods = e.pods();
    let t = task();
    e.fake
        .set_cluster_operator(|_: String, _: String, _: serde_json::Value| async {
            Ok(ClusterCredentials {
                username: "app".to_owned(),
                password: "pw".to_owned(),
                dbname: "app".to_owned(),
                host: "127.0.0.1".to_owned(),
                port: 5432,
            })
        });
    // prepare: made, then found (the namespace read, the Secret replaced).
    e.launcher.prepare_task(&t).await.unwrap();
    e.launcher
        .prepare_task(&rotated(&t, "mlr_second", &[]))
        .await
        .unwrap();
    // A run through its pod's life, stopped, started again and left running.
    assert_eq!(
        e.launcher.run_state(t.task, "run-1").await.unwrap(),
        RunState::Gone
    );
    e.launcher.start_run(&t, "run-1").await.unwrap();
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
    assert!(e.launcher.task_address(t.task).await.unwrap().is_some());
    // The task's database: asked for, starting, ready (its Secret read).
    let starting = e.launcher.task_database(t.task).await.unwrap();
    assert!(
        matches!(starting, TaskDatabase::Starting(_)),
        "{starting:?}"
    );
    eventually("the database ready", || async {
        matches!(
            e.launcher.task_database(t.task).await.unwrap(),
            TaskDatabase::Ready(_)
        )
        .then_some(())
    })
    .await;
    pod.finish(0).unwrap();
    eventually("success", || async {
        (e.launcher.run_state(t.task, "run-1").await.unwrap() == RunState::Succeeded).then_some(())
    })
    .await;
    e.launcher.stop_run(t.task, "run-1").await.unwrap();
    e.launcher.stop_run(t.task, "run-1").await.unwrap();
    e.launcher.start_run(&t, "run-2").await.unwrap();
    // Listed, forgotten during the run, terminating, gone.
    assert_eq!(e.launcher.launched_tasks().await.unwrap(), [t.task]);
    e.launcher.forget_task(t.task).await.unwrap();
    e.launcher.forget_task(t.task).await.unwrap();
    unavailable(e.launcher.prepare_task(&t).await);
    eventually("the namespace gone", || async {
        e.namespace(&t).is_none().then_some(())
    })
    .await;
    e.launcher.forget_task(t.task).await.unwrap();
    assert_eq!(e.launcher.launched_tasks().await.unwrap(), []);

    let role = cluster_role();
    let log: Vec<RequestRecord> = e.fake.requests();
    assert!(!log.is_empty());
    let mut used = BTreeSet::new();
    for r in &log {
        let Some(p) = r.permission() else {
            // Discovery (`/api`, `/apis/{group}[/{version}]`): granted to every
            // authenticated user by the default `system:discovery` ClusterRole.
            let segments = r.path.trim_matches('/').split('/').count();
            assert!(
                r.method == "GET"
                    && (r.path.starts_with("/apis/") && segments <= 3 || r.path == "/api"),
                "a request outside the API's resources that is not discovery: {r:?}"
            );
            continue;
        };
        assert!(
            role.rules
                .iter()
                .any(|rule| rule.grants(&p, r.name.as_deref())),
            "the ClusterRole does not grant {p:?} (name {:?}) for {} {}",
            r.name,
            r.method,
            r.path
        );
        used.insert(p);
    }
    assert_eq!(used, e.fake.permissions());
    let granted: BTreeSet<Permission> = role.rules.iter().flat_map(Rule::triples).collect();
    let unused: Vec<&Permission> = granted.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "the ClusterRole grants what the launcher never uses: {unused:?}"
    );
}

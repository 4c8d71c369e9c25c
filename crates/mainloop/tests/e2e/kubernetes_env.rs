//! A launched task's environment against the fake Kubernetes API server: its ports and
//! database reach the agent, setup and checks in its pods — the database a CloudNativePG
//! `Cluster` in the task's namespace (the operator played by a hook that makes a real
//! database on the test PostgreSQL), or without the operator one on the configured
//! server — and its preview runs in a pod of its own, served through mainloop to the
//! owner at the pod's address, the pod ending when the preview stops.

use super::*;
use crate::kubernetes::{launching_command, play_pods, running_pods};
use crate::runners::free_port;
use crate::task_env::ClusterGuard;
use mainloop_fake_kube::{ClusterCredentials, Config as KubeConfig, FakeKube};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

const SCRIPT: &str = r#"
rules:
  - name: saw-db
    match: {tool_result_for: Bash, tool_result_contains: "X=7"}
    reply: [{text: "Done."}]
  - name: no-db
    match: {tool_result_for: Bash}
    reply: [{text: "No database."}]
  - name: write
    match: {user_contains: "add the page", tool_offered: Bash}
    reply:
      - tool_use:
          name: Bash
          input:
            command: "printf 'hello\\n' > page.txt; psql \"$DATABASE_URL\" -Atc \"create table t (x int); insert into t values (7); select 'X=' || sum(x) from t\" 2>&1; printf 'URL=%s PORT=%s\\n' \"$DATABASE_URL\" \"$PORT\""
            description: "Write the page and use the database"
"#;

/// Serves `<built.txt> preview on <PORT>: <page.txt>` on every interface, as a
/// preview in a pod must.
const SERVER: &str = r#"
const fs = require("fs");
require("http")
  .createServer((req, res) => res.end(`${fs.readFileSync("built.txt", "utf8")} preview on ${process.env.PORT}: ${fs.readFileSync("page.txt", "utf8")}`))
  .listen(Number(process.env.PORT), "0.0.0.0");
"#;

/// The task's environment: a port, a database, setup, a preview, and a check that
/// reads what the agent wrote to the database.
const SPEC: &str = "ports = 1\ndatabase = \"postgres\"\nsetup = [\"printf built > built.txt\"]\n\
preview = \"node server.js\"\n\
check = \"test \\\"$(psql \\\"$DATABASE_URL\\\" -Atc 'select sum(x) from t')\\\" = 7\"\n";

fn repo() -> GitRepo {
    let repo = GitRepo::new();
    std::fs::write(repo.path().join(".mainloop.toml"), SPEC).unwrap();
    std::fs::write(repo.path().join("server.js"), SERVER).unwrap();
    std::fs::write(repo.path().join(".gitignore"), "built.txt\n").unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "a previewed app with a database"]);
    repo
}

/// What the Bash tool printed back to the model, once it used the database.
async fn database_used(fake: &FakeAnthropic, base: &str, token: &str, id: &str) -> String {
    wait_for("the agent to use its database", || async {
        let t = get(base, token, &format!("/api/tasks/{id}")).await;
        assert_ne!(t["state"], "failed", "{t:#}");
        let requests = fake.message_requests();
        assert!(
            !requests
                .iter()
                .any(|r| r.rule_name.as_deref() == Some("no-db")),
            "{:#?}",
            requests.last().map(|r| r.body.to_string())
        );
        requests
            .into_iter()
            .find(|r| r.rule_name.as_deref() == Some("saw-db"))
            .map(|r| r.body.to_string())
    })
    .await
}

/// A fresh database on the test PostgreSQL, as the operator's credentials.
async fn fresh_credentials() -> Result<(ClusterCredentials, String), String> {
    let url = mainloop_testpg::fresh_database_url()
        .await
        .map_err(|e| e.to_string())?;
    let parsed = reqwest::Url::parse(&url).map_err(|e| e.to_string())?;
    let credentials = ClusterCredentials {
        username: parsed.username().to_owned(),
        password: parsed.password().unwrap_or_default().to_owned(),
        dbname: parsed.path().trim_start_matches('/').to_owned(),
        host: parsed.host_str().unwrap_or("127.0.0.1").to_owned(),
        port: parsed.port().unwrap_or(5432),
    };
    Ok((credentials, url))
}

/// A launching server on `kube`, each of whose pods is played by a local runner, and
/// one task on [`repo`] under way.
struct World {
    fake: FakeAnthropic,
    _pods: tempfile::TempDir,
    _repo: GitRepo,
    data: tempfile::TempDir,
    server: Option<Server>,
    listen: String,
    base: String,
    token: String,
    id: String,
}

async fn world(kube: &FakeKube, claude: &Path) -> World {
    let fake = FakeAnthropic::start(Script::from_yaml(SCRIPT).unwrap())
        .await
        .unwrap();
    let pods = tempfile::tempdir().unwrap();
    play_pods(
        kube,
        pods.path().to_owned(),
        claude.to_owned(),
        Arc::default(),
    );
    let repo = repo();
    let data = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let cmd = launching_command(data.path(), &fake, claude, kube, &listen);
    let server = Server::spawn_on(cmd, Stdio::inherit(), &listen);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let body = json!({"description": "add the page", "repo": repo.path(), "skip_plan": true});
    let (status, task) = post(&base, &token, "/api/tasks", body).await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    World {
        fake,
        _pods: pods,
        _repo: repo,
        data,
        server: Some(server),
        listen,
        base,
        token,
        id,
    }
}

impl World {
    /// SIGKILLs the server and starts it again on the same data and address.
    fn restart(&mut self, kube: &FakeKube, claude: &Path) {
        if let Some(server) = self.server.take() {
            server.sigkill();
        }
        let cmd = launching_command(self.data.path(), &self.fake, claude, kube, &self.listen);
        self.server = Some(Server::spawn_on(cmd, Stdio::inherit(), &self.listen));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launched_task_gets_its_database_in_its_namespace_and_its_preview_in_a_pod() {
    let Some(claude) = claude_path() else { return };
    let kube = FakeKube::start(KubeConfig {
        cloudnativepg: true,
        pod_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ..KubeConfig::default()
    })
    .await
    .unwrap();
    // The operator: each Cluster's database is a real one; its removal is recorded.
    let made: Arc<Mutex<Vec<String>>> = Arc::default();
    let removed: Arc<Mutex<Vec<String>>> = Arc::default();
    struct Operator {
        made: Arc<Mutex<Vec<String>>>,
        removed: Arc<Mutex<Vec<String>>>,
    }
    impl mainloop_fake_kube::ClusterOperator for Operator {
        fn create(
            &self,
            _namespace: String,
            _name: String,
            _cluster: Value,
        ) -> futures::future::BoxFuture<'static, Result<ClusterCredentials, String>> {
            let made = self.made.clone();
            Box::pin(async move {
                let (credentials, url) = fresh_credentials().await?;
                made.lock().unwrap().push(url);
                Ok(credentials)
            })
        }

        fn remove(
            &self,
            namespace: String,
            name: String,
        ) -> futures::future::BoxFuture<'static, ()> {
            self.removed
                .lock()
                .unwrap()
                .push(format!("{namespace}/{name}"));
            Box::pin(async {})
        }
    }
    kube.set_cluster_operator(Operator {
        made: made.clone(),
        removed: removed.clone(),
    });

    let mut w = world(&kube, &claude).await;
    let (base, token, id) = (w.base.clone(), w.token.clone(), w.id.clone());
    let namespace = format!("mainloop-task-{}", id.replace('-', ""));

    // The agent's database is the Cluster's, in the task's namespace.
    let seen = database_used(&w.fake, &base, &token, &id).await;
    let clusters = kube.objects("postgresql.cnpg.io/v1", "Cluster", Some(&namespace));
    assert_eq!(clusters.len(), 1, "{clusters:?}");
    let url = made.lock().unwrap().first().cloned().unwrap();
    let dbname = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    assert!(seen.contains(&format!("{dbname} PORT=")), "{seen}");
    assert_eq!(
        mainloop_testpg::query_i64(&url, "select sum(x) from t")
            .await
            .unwrap(),
        7
    );
    // The check, in a pod of its own, read it back.
    let review = wait_task_state(&base, &token, &id, "review").await;
    assert!(review["error"].is_null(), "{review}");
    wait_for("no pod to run while the task waits", || async {
        (running_pods(&kube) == 0).then_some(())
    })
    .await;

    // The preview: a pod of its own, set up, served to the owner at the pod's address.
    let page = crate::preview::open(&base, &token, &id).await;
    // What the agent printed (the command itself names `PORT=%s` first).
    let port = seen
        .split("PORT=")
        .filter_map(|p| p.split(|c: char| !c.is_ascii_digit()).next())
        .find(|p| !p.is_empty())
        .unwrap()
        .to_owned();
    assert_eq!(page, format!("built preview on {port}: hello\n"));
    assert_eq!(running_pods(&kube), 1);
    let (status, _) = send(
        reqwest::Method::DELETE,
        &base,
        &token,
        &format!("/api/tasks/{id}/preview"),
        json!({}),
    )
    .await;
    assert_eq!(status, 204);
    wait_for("the preview's pod to end with it", || async {
        (running_pods(&kube) == 0).then_some(())
    })
    .await;

    // Opened again, and the server killed while it runs: the pod outlives the server,
    // and the server that comes back ends it, since the task waits for the human.
    crate::preview::open(&base, &token, &id).await;
    assert_eq!(running_pods(&kube), 1);
    w.restart(&kube, &claude);
    wait_for_within(
        Duration::from_secs(90),
        "the pod the killed server left to be ended",
        || async { (running_pods(&kube) == 0).then_some(()) },
    )
    .await;

    // Merged: the namespace goes, and the database with it.
    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/review"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_task_state(&base, &token, &id, "merged").await;
    wait_for_within(
        Duration::from_secs(90),
        "the task's namespace and its database to go",
        || async {
            (kube.object("v1", "Namespace", "", &namespace).is_none()
                && removed.lock().unwrap().len() == 1)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_operator_a_launched_task_gets_its_database_from_the_configured_server() {
    let Some(claude) = claude_path() else { return };
    if mainloop_pgcluster::Binaries::find().is_err() {
        eprintln!("skipped: PostgreSQL is not installed");
        return;
    }
    let kube = FakeKube::start(KubeConfig::default()).await.unwrap();
    let w = world(&kube, &claude).await;
    // No `workers.task_database_url`: the server's own PostgreSQL is the configured one.
    let _cluster = ClusterGuard(mainloop_pgcluster::LocalCluster::dir_for(w.data.path()));
    let (base, token, id) = (w.base.clone(), w.token.clone(), w.id.clone());
    let seen = database_used(&w.fake, &base, &token, &id).await;
    // The task's own database and role on the configured server.
    let short = &id.replace('-', "")[24..];
    assert!(
        seen.contains(&format!("URL=postgres://mainloop_task_{short}:")),
        "{seen}"
    );
    let review = wait_task_state(&base, &token, &id, "review").await;
    assert!(review["error"].is_null(), "{review}");
    let namespace = format!("mainloop-task-{}", id.replace('-', ""));
    assert!(
        kube.objects("postgresql.cnpg.io/v1", "Cluster", Some(&namespace))
            .is_empty()
    );
}

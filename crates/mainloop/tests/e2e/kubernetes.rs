//! `workers.runtime = "kubernetes"` against the fake Kubernetes API server: the real
//! server launches, through the real launcher (kube-rs), a Job per agent run in the
//! task's namespace; each Job's pod is played by a real `mainloop runner --once`
//! process started from the pod's own arguments and environment (its token and the
//! agent's credentials come from the task's Secret). A task goes through questions, a
//! plan, implementation, the checks, review and the merge; no pod runs while it waits
//! for the human; its namespace goes when it has ended.

use super::*;
use crate::runners::free_port;
use mainloop_fake_kube::{Config as KubeConfig, FakeKube, PodHandle};
use std::sync::{Arc, Mutex};

/// Starts a local `mainloop runner` for each pod the fake makes, from the pod's own
/// command line and environment, its data directory under `root`; the pod follows the
/// process, and the process the pod (deleted or killed: stopped).
pub(super) fn play_pods(
    fake: &FakeKube,
    root: PathBuf,
    claude: PathBuf,
    started: Arc<Mutex<Vec<String>>>,
) {
    fake.set_pod_runner(move |pod: PodHandle| {
        let (root, claude, started) = (root.clone(), claude.clone(), started.clone());
        tokio::spawn(async move {
            let name = pod.name().to_owned();
            started
                .lock()
                .unwrap()
                .push(format!("{}/{name}", pod.namespace()));
            let dir = root.join(&name);
            std::fs::create_dir_all(dir.join("home")).unwrap();
            let args: Vec<String> = pod.pod()["spec"]["containers"][0]["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(args[..2], ["runner", "--once"], "{args:?}");
            // The image's data directory becomes this pod's own.
            let args: Vec<String> = args
                .iter()
                .map(|a| {
                    if a == "/var/lib/mainloop-runner" {
                        dir.join("data").display().to_string()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            let path = format!(
                "{}:{}",
                claude.parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let log = std::fs::File::create(dir.join("runner.log")).unwrap();
            let mut child = tokio::process::Command::new(BIN)
                .env_clear()
                .envs(pod.env(None).unwrap())
                .env("PATH", path)
                .env("HOME", dir.join("home"))
                .env("RUST_LOG", "warn")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            pod.set_running().unwrap();
            tokio::select! {
                status = child.wait() => {
                    let code = status.ok().and_then(|s| s.code()).unwrap_or(137);
                    let _ = pod.finish(code);
                }
                () = pod.stopped() => {
                    let _ = child.kill().await;
                }
            }
        });
    });
}

pub(super) fn kubeconfig(dir: &Path, fake: &FakeKube) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: test, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: test}}}}]\n",
            fake.base_url()
        ),
    )
    .unwrap();
    path
}

/// A server whose agent runs are launched on `kube`.
pub(super) fn launching_server(
    data: &Path,
    fake: &FakeAnthropic,
    claude: &Path,
    kube: &FakeKube,
) -> Server {
    launching_server_on(
        data,
        fake,
        claude,
        kube,
        &format!("127.0.0.1:{}", free_port()),
    )
}

/// [`launching_server`] on `listen`.
pub(super) fn launching_server_on(
    data: &Path,
    fake: &FakeAnthropic,
    claude: &Path,
    kube: &FakeKube,
    listen: &str,
) -> Server {
    let cmd = launching_command(data, fake, claude, kube, listen);
    Server::spawn_on(cmd, Stdio::inherit(), listen)
}

/// The command of a server listening on `listen` whose agent runs are launched on
/// `kube`.
pub(super) fn launching_command(
    data: &Path,
    fake: &FakeAnthropic,
    claude: &Path,
    kube: &FakeKube,
    listen: &str,
) -> Command {
    let mut cmd = worker_command(data, fake, claude);
    cmd.env("MAINLOOP_WORKERS__RUNTIME", "kubernetes")
        .env("MAINLOOP_WORKERS__RUNNER_RECONNECT_SECS", "2")
        .env("MAINLOOP_KUBERNETES__KUBECONFIG", kubeconfig(data, kube))
        .env(
            "MAINLOOP_KUBERNETES__IMAGE",
            "localhost/mainloop-agent:test",
        )
        .env(
            "MAINLOOP_KUBERNETES__SERVER_URL",
            format!("http://{listen}"),
        );
    cmd
}

/// The pods whose process runs now.
pub(super) fn running_pods(fake: &FakeKube) -> usize {
    fake.pods()
        .iter()
        .filter_map(PodHandle::current)
        .filter(|p| p["status"]["phase"] == "Running")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_its_whole_lifecycle_on_pods_the_launcher_starts_and_holds_none_while_it_waits()
{
    let Some(claude) = claude_path() else { return };
    let fake = FakeAnthropic::start(script("greeter")).await.unwrap();
    let kube = FakeKube::start(KubeConfig::default()).await.unwrap();
    let pods = tempfile::tempdir().unwrap();
    let started = Arc::new(Mutex::new(Vec::new()));
    play_pods(
        &kube,
        pods.path().to_owned(),
        claude.clone(),
        started.clone(),
    );

    let repo = GitRepo::new();
    std::fs::write(
        repo.path().join(".mainloop.toml"),
        "check = \"test -f greeting.txt && echo checked in $PWD\"\n",
    )
    .unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "the check"]);
    let data = tempfile::tempdir().unwrap();
    let server = launching_server(data.path(), &fake, &claude, &kube);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());

    let (status, task) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "build the greeter", "repo": repo.path()}),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let namespace = format!("mainloop-task-{}", id.replace('-', ""));

    // Asked from a pod; while the task waits for the answer, no pod runs.
    crate::runner_run::answer_first_options(&base, &token, &id).await;
    wait_task_state(&base, &token, &id, "waiting_plan_review").await;
    wait_for("no pod to run while the task waits", || async {
        (running_pods(&kube) == 0).then_some(())
    })
    .await;
    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/plan"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let review = wait_task_state(&base, &token, &id, "review").await;
    assert!(review["error"].is_null(), "{review}");

    // Every run had a pod of its own, in the task's namespace, its Job gone with the
    // run; the checks ran in one.
    let pods_started = started.lock().unwrap().clone();
    assert!(
        pods_started.len() >= 4,
        "ask, plan, implement, check: {pods_started:?}"
    );
    assert!(
        pods_started
            .iter()
            .all(|p| p.starts_with(&format!("{namespace}/run-"))),
        "{pods_started:?}"
    );
    wait_for("each run's Job to go with it", || async {
        kube.objects("batch/v1", "Job", Some(&namespace))
            .is_empty()
            .then_some(())
    })
    .await;
    let transcript = get(
        &base,
        &token,
        &format!("/api/tasks/{id}/transcript?limit=1000"),
    )
    .await
    .to_string();
    assert!(
        transcript.contains("launching a runner for this run")
            && transcript.contains("running checks on its runner")
            && transcript.contains(&pods.path().display().to_string()),
        "{transcript}"
    );
    assert!(
        !data.path().join("agents").join(&id).exists(),
        "nothing ran here"
    );

    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/review"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_task_state(&base, &token, &id, "merged").await;
    assert_eq!(repo.git(&["show", "main:greeting.txt"]), "hello\n");

    // The task has ended: its namespace goes (at the next collection) and its runner
    // is revoked.
    wait_for_within(
        Duration::from_secs(90),
        "the task's namespace to go",
        || async {
            kube.object("v1", "Namespace", "", &namespace)
                .is_none()
                .then_some(())
        },
    )
    .await;
    let runners = get(&base, &token, "/api/runners").await;
    assert_eq!(runners["runners"][0]["task_id"], id.as_str(), "{runners}");
    assert_eq!(runners["runners"][0]["state"], "revoked", "{runners}");
}

/// A long job under way on a launched pod, its session with the first step kept on
/// the server: what the fault tests start from.
struct LongJob {
    fake: FakeAnthropic,
    kube: FakeKube,
    claude: PathBuf,
    started: Arc<Mutex<Vec<String>>>,
    data: tempfile::TempDir,
    listen: String,
    server: Option<Server>,
    token: String,
    id: String,
    /// The task as it was then.
    before: Value,
    _pods: tempfile::TempDir,
    _repo: GitRepo,
}

impl LongJob {
    async fn start(claude: PathBuf) -> Self {
        use crate::runner_faults::{kept_state, wait_rule};
        // The slow reply is slower here: the pod must still be waiting for it when a
        // save during the run has kept the session with its first step.
        let mut long_job_script = script("long-job");
        for rule in &mut long_job_script.rules {
            if rule.name.as_deref() == Some("slow-work") {
                rule.delay_ms = 120_000;
            }
        }
        let fake = FakeAnthropic::start(long_job_script).await.unwrap();
        let kube = FakeKube::start(KubeConfig::default()).await.unwrap();
        let pods = tempfile::tempdir().unwrap();
        let started = Arc::new(Mutex::new(Vec::new()));
        play_pods(
            &kube,
            pods.path().to_owned(),
            claude.clone(),
            started.clone(),
        );
        let repo = GitRepo::new();
        let data = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let server = launching_server_on(data.path(), &fake, &claude, &kube, &listen);
        let (base, token) = (server.base.clone(), server.token.clone().unwrap());
        let (status, task) = post(
            &base,
            &token,
            "/api/tasks",
            json!({"description": "long job", "repo": repo.path(), "skip_plan": true}),
        )
        .await;
        assert_eq!(status, 201, "{task}");
        let id = task["id"].as_str().unwrap().to_owned();
        wait_rule(&fake, "slow-work").await;
        wait_for_within(
            Duration::from_secs(90),
            "the server to keep the session with its first step",
            || async {
                kept_state(data.path(), &id)
                    .filter(|s| s.contains("\"tool_result\""))
                    .map(drop)
            },
        )
        .await;
        let before = get(&base, &token, &format!("/api/tasks/{id}")).await;
        assert_eq!(before["state"], "implementing", "{before}");
        Self {
            fake,
            kube,
            claude,
            started,
            data,
            listen,
            server: Some(server),
            token,
            id,
            before,
            _pods: pods,
            _repo: repo,
        }
    }

    /// The task reached review resuming the same session, its first step taken once
    /// and nothing started afresh.
    async fn finishes_on(&self, base: &str) {
        let review = wait_task_state(base, &self.token, &self.id, "review").await;
        assert_eq!(
            review["session_id"], self.before["session_id"],
            "the same session"
        );
        let rules = crate::runner_faults::rules(&self.fake);
        let first = rules.iter().filter(|r| *r == "first-step").count();
        assert_eq!(first, 1, "{rules:?}");
        assert!(!rules.contains(&"started-again".to_owned()), "{rules:?}");
    }
}

/// A pod killed mid-implementation (its node lost): the run is launched again and the
/// new pod resumes the session the server kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_killed_mid_run_has_its_run_resumed_on_a_new_one() {
    let Some(claude) = claude_path() else { return };
    let job = LongJob::start(claude).await;
    let victim = job.started.lock().unwrap().last().cloned().unwrap();
    let (namespace, name) = victim.split_once('/').unwrap();
    job.kube.kill_pod(namespace, name).unwrap();
    let base = job.server.as_ref().unwrap().base.clone();
    job.finishes_on(&base).await;
    assert!(job.started.lock().unwrap().len() >= 2, "a new pod took it");
    let rules = crate::runner_faults::rules(&job.fake);
    assert!(rules.contains(&"relaunched".to_owned()), "{rules:?}");
}

/// The server SIGKILLed while a pod works, and the cluster away for a while as it comes
/// back: the run waits for the launcher, then goes on — on the pod that reconnects, or
/// a new one — resuming the same session; nothing is done twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_while_a_pod_works_and_the_cluster_away_lose_nothing() {
    let Some(claude) = claude_path() else { return };
    let mut job = LongJob::start(claude).await;
    job.kube
        .set_outage(Some(mainloop_fake_kube::Outage::Unavailable))
        .await;
    job.server.take().unwrap().sigkill();
    let restarted = launching_server_on(
        job.data.path(),
        &job.fake,
        &job.claude,
        &job.kube,
        &job.listen,
    );
    // The restarted server meets the outage (its collection asks at once) and waits.
    wait_for("the restarted server to meet the outage", || async {
        job.kube
            .requests()
            .iter()
            .any(|r| r.status == 503)
            .then_some(())
    })
    .await;
    job.kube.set_outage(None).await;
    job.finishes_on(&restarted.base).await;
}

//! Runs on runners when something dies: a runner SIGKILLed mid-implementation (the run
//! finishes on the other runner, resuming the agent's session the server kept), and the
//! server SIGKILLed while a runner works (the runner reconnects, the run resumes the
//! agent's own session there; nothing is lost or done twice).

use super::*;
use crate::runner_run::{RunnerMachine, port};
use crate::runners::free_port;
use mainloop_test_support::netns::{self, Netns};

/// The server on `data`, on `listen`, moving a run off a lost runner after 2 s.
fn server_on(data: &Path, fake: &FakeAnthropic, claude: &Path, listen: &str) -> Server {
    let mut cmd = worker_command(data, fake, claude);
    cmd.env("MAINLOOP_WORKERS__RUNNER_RECONNECT_SECS", "2");
    Server::spawn_on(cmd, Stdio::inherit(), listen)
}

pub(super) fn rules(fake: &FakeAnthropic) -> Vec<String> {
    fake.message_requests()
        .into_iter()
        .filter_map(|r| r.rule_name)
        .collect()
}

pub(super) async fn wait_rule(fake: &FakeAnthropic, rule: &str) {
    wait_for(format!("the model's rule {rule}"), || async {
        rules(fake).iter().any(|r| r == rule).then_some(())
    })
    .await;
}

pub(super) async fn new_runner(base: &str, token: &str, name: &str) -> String {
    let (status, made) = post(base, token, "/api/runners", json!({"name": name})).await;
    assert_eq!(status, 201, "{made}");
    made["token"].as_str().unwrap().to_owned()
}

pub(super) async fn connected(base: &str, token: &str, n: usize) {
    wait_for(format!("{n} runners to connect"), || async {
        let list = get(base, token, "/api/runners").await;
        let up = list["runners"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "connected")
            .count();
        (up == n).then_some(())
    })
    .await;
}

/// A repository and a task that requires `label`, created on `base`.
pub(super) async fn long_job(base: &str, token: &str, repo: &GitRepo, label: &str) -> String {
    let (status, task) = post(
        base,
        token,
        "/api/tasks",
        json!({"description": "long job", "repo": repo.path(), "skip_plan": true, "runner_labels": [label]}),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    task["id"].as_str().unwrap().to_owned()
}

fn skip_without_namespace() -> bool {
    if netns::available() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must give a network namespace"
    );
    eprintln!("skipping: no network namespace here (unshare -rn)");
    true
}

/// The session's bytes in the agent state the server keeps for `task` (a tar.gz of the
/// session logs), if it keeps one.
pub(super) fn kept_state(data: &Path, task: &str) -> Option<String> {
    use std::io::Read as _;
    let file =
        std::fs::File::open(data.join("runner-state").join(format!("{task}.tar.gz"))).ok()?;
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut text)
        .ok()?;
    Some(String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_mid_implementation_has_its_run_finished_on_the_other() {
    let Some(claude) = claude_path() else { return };
    if skip_without_namespace() {
        return;
    }
    // The slow reply is slower here: alpha must still be waiting for it when a save
    // during the run has kept the session with its first step on the server.
    let mut long_job_script = script("long-job");
    for rule in &mut long_job_script.rules {
        if rule.name.as_deref() == Some("slow-work") {
            rule.delay_ms = 120_000;
        }
    }
    let fake = FakeAnthropic::start(long_job_script).await.unwrap();
    let repo = GitRepo::new();
    let data = tempfile::tempdir().unwrap();
    let server = server_on(data.path(), &fake, &claude, "127.0.0.1:0");
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    // `alpha` in a namespace, taken first (ties go by name); `beta` beside the server.
    let ns = Netns::new(&[port(&base), port(&fake.base_url())]);
    let (alpha, beta) = (RunnerMachine::new(), RunnerMachine::new());
    let alpha_token = new_runner(&base, &token, "alpha").await;
    let beta_token = new_runner(&base, &token, "beta").await;
    let mut alpha_run = alpha.start(Some(&ns), &base, &alpha_token, "gpu", &claude);
    let _beta_run = beta.start(None, &base, &beta_token, "gpu", &claude);
    connected(&base, &token, 2).await;

    let id = long_job(&base, &token, &repo, "gpu").await;
    wait_rule(&fake, "slow-work").await;
    assert!(
        alpha.data().join("tasks").join(&id).join("work").is_dir(),
        "alpha runs it: {}",
        alpha.log()
    );
    // The run saves its work and the agent's session a few seconds in, then every 30 s:
    // alpha dies once the server keeps the session with the first step's result.
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
    alpha_run.sigkill();

    let review = wait_task_state(&base, &token, &id, "review").await;
    let done = beta
        .data()
        .join("tasks")
        .join(&id)
        .join("work")
        .join("result.txt");
    assert_eq!(
        std::fs::read_to_string(&done).unwrap(),
        "done\n",
        "beta finished it: {}",
        beta.log()
    );
    // Beta resumed the session alpha had saved, told to go on: the first step was taken
    // once and nothing began afresh.
    assert_eq!(
        review["session_id"], before["session_id"],
        "the same session was resumed"
    );
    let rules = rules(&fake);
    assert_eq!(
        rules.iter().filter(|r| *r == "first-step").count(),
        1,
        "{rules:?}"
    );
    assert!(rules.contains(&"relaunched".to_owned()), "{rules:?}");
    assert!(!rules.contains(&"started-again".to_owned()), "{rules:?}");
    // Under the name Claude Code gives beta's own copy of the workspace.
    let session = before["session_id"].as_str().unwrap();
    let projects = beta
        .data()
        .join("tasks")
        .join(&id)
        .join("home/.claude/projects");
    let copied = std::fs::read_dir(&projects)
        .unwrap()
        .map(|e| e.unwrap().path().join(format!("{session}.jsonl")))
        .find(|p| p.is_file());
    assert!(copied.is_some(), "no session in {}", projects.display());
    let diff = get(&base, &token, &format!("/api/tasks/{id}/diff")).await;
    assert!(diff["text"].as_str().unwrap().contains("+done"), "{diff}");
    assert!(review["error"].is_null(), "{review}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_while_a_runner_works_resumes_the_run_there() {
    let Some(claude) = claude_path() else { return };
    if skip_without_namespace() {
        return;
    }
    let fake = FakeAnthropic::start(script("long-job")).await.unwrap();
    let repo = GitRepo::new();
    let data = tempfile::tempdir().unwrap();
    // A fixed port, so the runner finds the restarted server where it was.
    let listen = format!("127.0.0.1:{}", free_port());
    let server = server_on(data.path(), &fake, &claude, &listen);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let ns = Netns::new(&[port(&base), port(&fake.base_url())]);
    let machine = RunnerMachine::new();
    let runner_token = new_runner(&base, &token, "solo").await;
    let _runner = machine.start(Some(&ns), &base, &runner_token, "gpu", &claude);
    connected(&base, &token, 1).await;

    let id = long_job(&base, &token, &repo, "gpu").await;
    wait_rule(&fake, "slow-work").await;
    let before = get(&base, &token, &format!("/api/tasks/{id}")).await;
    assert_eq!(before["state"], "implementing");
    server.sigkill();

    let server = server_on(data.path(), &fake, &claude, &listen);
    assert_eq!(server.base, base);
    let review = wait_task_state(&base, &token, &id, "review").await;
    assert!(review["error"].is_null(), "{review}");
    assert_eq!(
        review["session_id"], before["session_id"],
        "the same session was resumed"
    );
    let rules = rules(&fake);
    // The session was saved on the runner, so it is resumed there and told to go on;
    // nothing was started twice.
    assert!(rules.contains(&"relaunched".to_owned()), "{rules:?}");
    assert!(!rules.contains(&"started-again".to_owned()), "{rules:?}");
    assert_eq!(
        rules.iter().filter(|r| *r == "first-step").count(),
        1,
        "{rules:?}"
    );
    let diff = get(&base, &token, &format!("/api/tasks/{id}/diff")).await;
    assert!(diff["text"].as_str().unwrap().contains("+done"), "{diff}");
    assert!(
        machine.log().contains("reconnected"),
        "the runner reconnected: {}",
        machine.log()
    );
}

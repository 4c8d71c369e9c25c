//! The worker runtime end to end: the real `claude` CLI against the scripted fake model,
//! real git repositories, real SQLite; plus slots and queueing with the fake agent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

#[path = "it/failures.rs"]
mod failures;
#[path = "it/holds.rs"]
mod holds;
#[path = "it/resume.rs"]
mod resume;

use mainloop_agent::ClaudeCode;
use mainloop_domain::agents::{AgentCatalog, AgentName, AgentSpec, Protocol};
use mainloop_domain::question::Answer;
use mainloop_domain::records::Task;
use mainloop_domain::task::{TaskEvent, TaskState};
use mainloop_domain::transcript::TranscriptEntry;
use mainloop_domain::{TaskId, UserId};
use mainloop_engine::{CreateTask, Engine, EngineConfig, PlanAction, ReviewAction};
use mainloop_fake_anthropic::{FakeAnthropic, Script};
use mainloop_git::Git;
use mainloop_sandbox::{Bubblewrap, Policy};
use mainloop_test_support::{Database, EngineWorld};
use mainloop_worker::{AgentRegistry, Runtime, WorkerConfig, WorkerSandbox};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn claude_path() -> Option<PathBuf> {
    // By a normalised path: one through `..` may not resolve inside the sandbox.
    mainloop_test_support::claude_path()
}

/// The protocol-speaking fake agent from `mainloop-agent`, built beside this test by
/// `cargo test --workspace`.
fn fake_agent_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join("mainloop-fake-agent");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p mainloop-agent` (scripts/test builds it)",
        p.display()
    );
    p
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct World {
    engine: Engine,
    runtime: Runtime,
    user: UserId,
    repo: tempfile::TempDir,
    data: tempfile::TempDir,
    _home: tempfile::TempDir,
    fake: Option<FakeAnthropic>,
    shutdown: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Bubblewrap hiding what the server hides: its data directory, its user's home and the
/// shared /tmp (where this test's directories live).
fn sandbox(data: &Path, home: &Path, command: &[String]) -> WorkerSandbox {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut read_only: Vec<PathBuf> = std::env::split_paths(&path).collect();
    read_only.extend(mainloop_sandbox::install_roots(Path::new(&command[0])));
    let bwrap = Bubblewrap::detect(
        Some(&path),
        Policy {
            hidden: vec![data.to_path_buf(), home.to_path_buf(), "/tmp".into()],
            read_only,
            read_write: vec![],
        },
    )
    .unwrap_or_else(|e| panic!("this test needs a working bubblewrap: {e}"));
    WorkerSandbox {
        bwrap,
        homes_dir: data.join("homes"),
        home_files: vec![],
    }
}

impl World {
    async fn new(
        command: Vec<String>,
        script: Option<&str>,
        max_agents: usize,
        check: Option<&str>,
    ) -> Self {
        Self::with_idle(command, script, max_agents, check, Duration::from_secs(600)).await
    }

    async fn with_idle(
        command: Vec<String>,
        script: Option<&str>,
        max_agents: usize,
        check: Option<&str>,
        idle_timeout: Duration,
    ) -> Self {
        Self::with_timeouts(
            command,
            script,
            max_agents,
            check,
            idle_timeout,
            Duration::from_secs(120),
            false,
        )
        .await
    }

    async fn with_timeouts(
        command: Vec<String>,
        script: Option<&str>,
        max_agents: usize,
        check: Option<&str>,
        idle_timeout: Duration,
        inactivity_timeout: Duration,
        sandboxed: bool,
    ) -> Self {
        let timeouts = (idle_timeout, inactivity_timeout);
        Self::assemble(
            command,
            script,
            max_agents,
            check,
            timeouts,
            sandboxed,
            &[("claude", None)],
        )
        .await
    }

    /// A world whose agents (name and own cap) all run `command`, but those named
    /// `no-adapter…`: configured, with no adapter to run them.
    async fn assemble(
        command: Vec<String>,
        script: Option<&str>,
        max_agents: usize,
        check: Option<&str>,
        timeouts: (Duration, Duration),
        sandboxed: bool,
        agents: &[(&str, Option<usize>)],
    ) -> Self {
        Self::assemble_with_auth(
            command,
            script,
            max_agents,
            check,
            timeouts,
            sandboxed,
            agents,
            &[("ANTHROPIC_API_KEY", "sk-test")],
        )
        .await
    }

    /// [`World::assemble`] with `auth` (such as a subscription's OAuth token) given to
    /// the agents in place of the API key.
    #[allow(clippy::too_many_arguments)]
    async fn assemble_with_auth(
        command: Vec<String>,
        script: Option<&str>,
        max_agents: usize,
        check: Option<&str>,
        (idle_timeout, inactivity_timeout): (Duration, Duration),
        sandboxed: bool,
        agents: &[(&str, Option<usize>)],
        auth: &[(&str, &str)],
    ) -> Self {
        let specs = agents
            .iter()
            .map(|(name, cap)| AgentSpec {
                name: AgentName::parse(name).unwrap(),
                protocol: Protocol::ClaudeCode,
                command: command.clone(),
                pass_env: vec![],
                max_concurrent: *cap,
            })
            .collect::<Vec<_>>();
        let runnable = specs
            .iter()
            .filter(|s| !s.name.as_str().starts_with("no-adapter"));
        let registry = runnable.fold(AgentRegistry::new(), |r, s| {
            r.with(
                s.name.clone(),
                Arc::new(ClaudeCode::new(command.clone())),
                s.protocol,
                s.max_concurrent,
            )
        });
        let catalog = AgentCatalog::new(specs, AgentName::default()).unwrap();
        let data = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let repo = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(repo.path().join("README.md"), "greeter\n").unwrap();
        if let Some(check) = check {
            std::fs::write(
                repo.path().join(".mainloop.toml"),
                format!("check = {check:?}\n"),
            )
            .unwrap();
        }
        git(repo.path(), &["add", "-A"]);
        git(repo.path(), &["commit", "-q", "-m", "init"]);

        let fake = match script {
            Some(s) => Some(
                FakeAnthropic::start(Script::from_yaml(s).unwrap())
                    .await
                    .unwrap(),
            ),
            None => None,
        };
        let mut env = vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".to_owned(), home.path().display().to_string()),
            ("DISABLE_TELEMETRY".to_owned(), "1".to_owned()),
            ("DISABLE_AUTOUPDATER".to_owned(), "1".to_owned()),
            ("DISABLE_ERROR_REPORTING".to_owned(), "1".to_owned()),
            (
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_owned(),
                "1".to_owned(),
            ),
        ];
        env.extend(auth.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        if let Some(f) = &fake {
            env.push(("ANTHROPIC_BASE_URL".to_owned(), f.base_url()));
        }
        let world = EngineWorld::new(
            Database::at(format!("sqlite://{}/mainloop.db", data.path().display())),
            None,
            EngineConfig {
                backoff_base: Duration::from_millis(50),
                backoff_max: Duration::from_millis(200),
                max_check_rounds: 2,
                agents: catalog,
                ..EngineConfig::default()
            },
        )
        .await;
        let (engine, owner) = (world.engine.clone(), world.owner.clone());
        let sandbox = sandboxed.then(|| sandbox(data.path(), home.path(), &command));
        let runtime = Runtime::with_agents(
            engine.clone(),
            registry,
            Git::new(data.path().join("repos"), data.path().join("worktrees")),
            WorkerConfig {
                max_agents,
                labels: std::collections::BTreeSet::new(),
                runner_grace: std::time::Duration::from_secs(60),
                idle_timeout,
                inactivity_timeout,
                api_retries: 2,
                api_retry_delay: Duration::from_millis(200),
                check_timeout: Duration::from_secs(60),
                check_output_bytes: 16 * 1024,
                model: None,
                agent_env: env,
                plans_dir: home.path().join(".claude/plans"),
                sandbox,
                pid_dir: data.path().join("agents"),
                forge: None,
                port_range: mainloop_worker::DEFAULT_PORT_RANGE,
                task_databases: None,
                retention: mainloop_engine::Retention::default(),
                launcher: None,
            },
        );
        runtime.install();
        let shutdown = CancellationToken::new();
        engine.start(shutdown.clone()).await.unwrap();
        drop(runtime.spawn(shutdown.clone()));
        Self {
            engine,
            runtime,
            user: owner.id,
            repo,
            data,
            _home: home,
            fake,
            shutdown,
        }
    }

    async fn spawn(&self, description: &str, skip_plan: bool) -> Task {
        self.engine
            .create_task(
                self.user,
                &CreateTask {
                    description: description.into(),
                    repo: self.repo.path().display().to_string(),
                    skip_plan,
                    model: None,
                    agent: None,
                    budget_usd: None,
                },
            )
            .await
            .unwrap()
    }

    async fn task(&self, id: TaskId) -> Task {
        self.engine.task(self.user, id).await.unwrap()
    }

    /// Waits until the task reaches `state`, failing early if it fails unexpectedly.
    /// Waits until the idle timeout stopped the task's waiting agent.
    async fn wait_unparked(&self, id: TaskId) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.runtime.is_parked(id) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the idle agent was not stopped"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the task's transcript has an entry whose text contains `needle`.
    async fn transcript_says(&self, id: TaskId, needle: &str) -> bool {
        let transcript = self
            .engine
            .task_transcript(self.user, id, 0, 500)
            .await
            .unwrap();
        transcript.iter().any(|e| match &e.entry {
            TranscriptEntry::Status(s) => s.text.contains(needle),
            TranscriptEntry::Text(t) => t.text.contains(needle),
            _ => false,
        })
    }

    async fn wait_state(&self, id: TaskId, state: TaskState) -> Task {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let t = self.task(id).await;
            if t.state == state {
                return t;
            }
            if t.state == TaskState::Failed && state != TaskState::Failed {
                panic!(
                    "task failed: {:?}; rules so far: {:?}",
                    t.error,
                    self.rules()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {state}, task is {}; rules {:?}",
                t.state,
                self.rules()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn rules(&self) -> Vec<String> {
        self.fake
            .as_ref()
            .map(|f| {
                f.message_requests()
                    .iter()
                    .map(|r| r.rule_name.clone().unwrap_or_else(|| "<none>".into()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The greeter, the script the worker, agent, end-to-end and browser tests share.
const JOURNEY: &str = include_str!("../../mainloop-fake-anthropic/scripts/greeter.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_plan_revision_implementation_checks_review_and_merge() {
    let Some(claude) = claude_path() else { return };
    let w = World::new(
        vec![claude.display().to_string()],
        Some(JOURNEY),
        3,
        Some("test -f fixed.txt"),
    )
    .await;
    let task = w.spawn("build the greeter", false).await;

    let waiting = w.wait_state(task.id, TaskState::WaitingAnswers).await;
    assert_eq!(waiting.questions.len(), 2);
    assert!(waiting.questions[1].multi_select);
    assert_eq!(waiting.questions[0].options[0].description, "fast");
    assert!(
        waiting
            .branch
            .as_deref()
            .unwrap()
            .starts_with(&format!("mainloop/{}-", task.id.short()))
    );
    assert!(
        w.runtime.is_parked(task.id),
        "the agent waits without a slot"
    );
    let inbox = w.engine.inbox(w.user, 10, 0).await.unwrap();
    assert_eq!(inbox[0].kind, mainloop_domain::inbox::InboxKind::Question);

    let answers = [
        ("q1".to_owned(), Answer::Choices(vec!["Rust".into()])),
        (
            "q2".to_owned(),
            Answer::Choices(vec!["Tests".into(), "Docs".into()]),
        ),
    ]
    .into_iter()
    .collect();
    w.engine
        .answer_questions(w.user, task.id, answers)
        .await
        .unwrap();
    let review = w.wait_state(task.id, TaskState::WaitingPlanReview).await;
    assert!(
        review
            .plan
            .as_deref()
            .unwrap()
            .contains("A greeter in Rust."),
        "{:?}",
        review.plan
    );
    // The answers reached the model keyed by question text, through the same session.
    let fake = w.fake.as_ref().unwrap();
    let answered = fake
        .message_requests()
        .into_iter()
        .find(|r| r.rule_name.as_deref() == Some("write-plan"))
        .unwrap();
    let sent = answered.body["messages"].to_string();
    assert!(
        sent.contains("Which extras?") && sent.contains("Tests, Docs"),
        "{sent}"
    );

    w.engine
        .plan_action(
            w.user,
            task.id,
            PlanAction::Revise(Some("add tests".into())),
        )
        .await
        .unwrap();
    let revised = loop {
        let t = w.wait_state(task.id, TaskState::WaitingPlanReview).await;
        if t.plan.as_deref().is_some_and(|p| p.contains("revised")) {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(revised.plan.unwrap().contains("with tests"));

    w.engine
        .plan_action(w.user, task.id, PlanAction::Approve)
        .await
        .unwrap();
    let in_review = w.wait_state(task.id, TaskState::Review).await;
    assert_eq!(
        in_review.core.check_round, 1,
        "one failed check round, then green"
    );
    let rules = w.rules();
    assert!(rules.contains(&"fix-checks".to_owned()), "{rules:?}");

    let inbox = w.engine.inbox(w.user, 10, 0).await.unwrap();
    let review_item = inbox
        .iter()
        .find(|i| i.kind == mainloop_domain::inbox::InboxKind::Review)
        .unwrap();
    assert!(
        review_item.body.contains("2 files changed"),
        "{}",
        review_item.body
    );
    assert!(
        review_item.body.contains("greeting.txt (+1"),
        "{}",
        review_item.body
    );
    let diff = w.engine.task_diff(w.user, task.id).await.unwrap();
    let files: Vec<_> = diff.files.iter().map(|f| f.path.as_str()).collect();
    assert!(
        files.contains(&"greeting.txt") && files.contains(&"fixed.txt"),
        "{files:?}"
    );
    assert!(diff.text.contains("+hello"));

    w.engine
        .review_action(w.user, task.id, ReviewAction::Approve)
        .await
        .unwrap();
    let merged = w.wait_state(task.id, TaskState::Merged).await;
    let worktree = merged.worktree.clone().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Path::new(&worktree).exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the merged task's worktree stays on disk"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        git(w.repo.path(), &["branch", "--list", "mainloop/*"]).contains(&task.id.short()),
        "the branch stays"
    );
    assert_eq!(
        std::fs::read_to_string(w.repo.path().join("greeting.txt")).unwrap(),
        "hello\n"
    );
    assert!(git(w.repo.path(), &["log", "--oneline", "main"]).contains("Merge"));
    assert!(merged.cost_usd >= 0.0);
    // The merged work stays viewable with the worktree gone.
    let kept = w.engine.task_diff(w.user, task.id).await.unwrap();
    assert_eq!(kept.files, diff.files);
    assert!(kept.text.contains("+hello"), "{}", kept.text);

    let transcript = w
        .engine
        .task_transcript(w.user, task.id, 0, 1000)
        .await
        .unwrap();
    let kinds: Vec<&str> = transcript.iter().map(|e| e.entry.kind()).collect();
    for k in ["question", "plan", "tool_call", "checks", "finished"] {
        assert!(kinds.contains(&k), "transcript has {k}: {kinds:?}");
    }
    let (thread, _) = w
        .engine
        .chat_messages(w.user, None, 100, false)
        .await
        .unwrap();
    let updates: Vec<_> = thread.iter().map(|m| m.text.as_str()).collect();
    assert!(updates.iter().any(|t| t.contains("merged")), "{updates:?}");
}

const SKIP: &str = r##"
rules:
  - name: work
    match: {user_contains: "write the file"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'x\\n' > quick.txt", description: "Write"}}
  - name: slow
    match: {user_contains: "take forever"}
    delay_ms: 2000
    reply:
      - text: "Thinking very slowly."
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done."}]
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_plan_goes_straight_to_work_and_cancel_stops_a_running_agent() {
    let Some(claude) = claude_path() else { return };
    let w = World::new(vec![claude.display().to_string()], Some(SKIP), 3, None).await;
    let quick = w
        .engine
        .create_task(
            w.user,
            &CreateTask {
                description: "write the file".into(),
                repo: w.repo.path().display().to_string(),
                skip_plan: true,
                model: Some("claude-per-task-model".into()),
                agent: None,
                budget_usd: None,
            },
        )
        .await
        .unwrap();
    let done = w.wait_state(quick.id, TaskState::Review).await;
    assert!(done.plan.is_none());
    let first = w.fake.as_ref().unwrap().message_requests()[0].body.clone();
    assert_eq!(first["model"], "claude-per-task-model", "--model per task");
    assert!(!w.rules().contains(&"<none>".to_owned()));

    let slow = w.spawn("take forever", true).await;
    w.wait_state(slow.id, TaskState::Implementing).await;
    // Cancel while the agent waits for its model's (slow) reply.
    mainloop_test_support::wait_for("the slow agent's request", async || {
        w.rules().contains(&"slow".to_owned()).then_some(())
    })
    .await;
    w.engine
        .apply_task_event(
            Some(w.user),
            slow.id,
            mainloop_domain::task::TaskEvent::CancelRequested,
        )
        .await
        .unwrap();
    let store = w.engine.store_for_tests();
    mainloop_test_support::wait_for("the cancelled run to end", async || {
        (store.count_unfinished("task.run_agent").await.unwrap() == 0).then_some(())
    })
    .await;
    assert_eq!(w.task(slow.id).await.state, TaskState::Cancelled);
    // Stopped before the reply came (two seconds after the request): it never got it.
    assert!(!w.transcript_says(slow.id, "Thinking very slowly").await);
}

const FLAKY: &str = r##"
rules:
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Finished."}]
  - name: resumed
    match: {user_contains: "Continue the task"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'x\\n' > thing.txt", description: "Recover"}}
  - name: slow-first
    match: {user_contains: "do the thing", times: 1}
    delay_ms: 1500
    reply: [{text: "Working on it, slowly, step by step."}]
  - name: again
    match: {user_contains: "do the thing"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'x\\n' > thing.txt", description: "Work"}}
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_agent_fails_the_task_and_retry_resumes_its_session() {
    let Some(claude) = claude_path() else { return };
    let flag = tempfile::tempdir().unwrap();
    // The first run is killed mid-reply (as a crash would); later runs are the plain CLI.
    let wrapper = format!(
        "if [ -e '{flag}/ran' ]; then exec '{claude}' \"$@\"; fi; touch '{flag}/ran'; exec timeout -s KILL 4 '{claude}' \"$@\"",
        flag = flag.path().display(),
        claude = claude.display()
    );
    let w = World::new(
        vec!["sh".into(), "-c".into(), wrapper, "sh".into()],
        Some(FLAKY),
        3,
        None,
    )
    .await;
    let task = w.spawn("do the thing", true).await;
    let failed = w.wait_state(task.id, TaskState::Failed).await;
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("exited unexpectedly"),
        "{:?}",
        failed.error
    );
    let inbox = w.engine.inbox(w.user, 10, 0).await.unwrap();
    assert_eq!(inbox[0].kind, mainloop_domain::inbox::InboxKind::Failed);
    let session = failed.session_id.clone().unwrap();

    w.engine
        .apply_task_event(
            Some(w.user),
            task.id,
            mainloop_domain::task::TaskEvent::RetryRequested(None),
        )
        .await
        .unwrap();
    let done = w.wait_state(task.id, TaskState::Review).await;
    assert_eq!(
        done.session_id.as_deref(),
        Some(session.as_str()),
        "same session resumed"
    );
    let rules = w.rules();
    assert!(rules.contains(&"resumed".to_owned()), "{rules:?}");
    let resumed = w
        .fake
        .as_ref()
        .unwrap()
        .message_requests()
        .into_iter()
        .find(|r| r.rule_name.as_deref() == Some("resumed"))
        .unwrap();
    assert!(
        resumed.body["messages"]
            .to_string()
            .contains("do the thing"),
        "the resumed session kept its history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_n_agents_run_and_the_rest_queue_in_order() {
    let fake_agent = fake_agent_path();
    // The fake agent edits nothing: the wrapper leaves the change review needs.
    let w = World::new(
        vec![
            "sh".into(),
            "-c".into(),
            "printf 'x\\n' > work.txt; exec \"$0\" \"$@\"".into(),
            fake_agent.display().to_string(),
            "--events".into(),
            "20".into(),
            "--rate".into(),
            "20".into(),
        ],
        None,
        2,
        None,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(w.spawn(&format!("task {i}"), true).await.id);
    }
    let mut max_running = 0;
    let mut first_started = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut running = 0;
        let mut all_review = true;
        for id in &ids {
            let t = w.task(*id).await;
            if t.state == TaskState::Implementing {
                running += 1;
                if !first_started.contains(id) {
                    first_started.push(*id);
                }
            }
            if matches!(t.state, TaskState::Checking | TaskState::Review)
                && !first_started.contains(id)
            {
                first_started.push(*id);
            }
            all_review &= t.state == TaskState::Review;
        }
        max_running = max_running.max(running);
        if all_review {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let mut states = Vec::new();
            for id in &ids {
                let t = w.task(*id).await;
                states.push((t.state, t.error));
            }
            panic!("tasks did not finish: {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(max_running <= 2, "ran {max_running} at once");
    assert_eq!(max_running, 2, "both slots were used");
    assert_eq!(first_started, ids, "queued tasks started in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_runs_within_its_own_cap_and_others_go_ahead() {
    let fake_agent = fake_agent_path();
    let command = vec![
        "sh".into(),
        "-c".into(),
        "printf 'x\\n' > work.txt; exec \"$0\" \"$@\"".into(),
        fake_agent.display().to_string(),
        "--events".into(),
        "20".into(),
        "--rate".into(),
        "20".into(),
    ];
    let agents = [("claude", Some(1)), ("codex", Some(1))];
    let timeouts = (Duration::from_secs(600), Duration::from_secs(120));
    let w = World::assemble(command, None, 3, None, timeouts, false, &agents).await;
    let mut ids = Vec::new();
    for (i, agent) in ["claude", "claude", "codex", "codex"]
        .into_iter()
        .enumerate()
    {
        let task = w
            .engine
            .create_task(
                w.user,
                &CreateTask {
                    description: format!("task {i}"),
                    repo: w.repo.path().display().to_string(),
                    skip_plan: true,
                    model: None,
                    agent: Some(agent.into()),
                    budget_usd: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(task.agent.as_str(), agent);
        ids.push((task.id, agent));
    }
    let (mut most, mut most_claude, mut most_codex) = (0, 0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (mut claude, mut codex, mut all_review) = (0, 0, true);
        for (id, agent) in &ids {
            let t = w.task(*id).await;
            if t.state == TaskState::Implementing {
                *if *agent == "claude" {
                    &mut claude
                } else {
                    &mut codex
                } += 1;
            }
            all_review &= t.state == TaskState::Review;
        }
        (most, most_claude, most_codex) = (
            most.max(claude + codex),
            most_claude.max(claude),
            most_codex.max(codex),
        );
        if all_review {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasks did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (most_claude, most_codex),
        (1, 1),
        "each agent ran one at a time"
    );
    assert_eq!(
        most, 2,
        "the two agents ran beside each other, within the global three"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_agent_without_an_adapter_fails_its_task_plainly() {
    let agents = [("claude", None), ("no-adapter", None)];
    let timeouts = (Duration::from_secs(600), Duration::from_secs(120));
    let w = World::assemble(
        vec!["/bin/false".into()],
        None,
        2,
        None,
        timeouts,
        false,
        &agents,
    )
    .await;
    let task = w
        .engine
        .create_task(
            w.user,
            &CreateTask {
                description: "Anything".into(),
                repo: w.repo.path().display().to_string(),
                skip_plan: true,
                model: None,
                agent: Some("no-adapter".into()),
                budget_usd: None,
            },
        )
        .await
        .unwrap();
    let failed = w.wait_state(task.id, TaskState::Failed).await;
    assert_eq!(
        failed.error.as_deref(),
        Some("The no-adapter agent is not available in this build yet.")
    );
}

const WAITING: &str = r##"
rules:
  - name: wrote
    match: {tool_result_for: Bash}
    reply: [{text: "Written."}]
  - name: ask
    match: {user_contains: "needs a decision", tool_offered: AskUserQuestion}
    reply:
      - tool_use:
          name: AskUserQuestion
          input:
            questions:
              - question: "Which colour?"
                header: "Colour"
                options:
                  - {label: "Red", description: "warm"}
                  - {label: "Blue", description: "cool"}
                multiSelect: false
  # A resumed session may also carry a placeholder result for the unanswered tool
  # call, so the answer in text is matched first.
  - name: answered-after-resume
    match: {user_contains: "Answers to your questions"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'x\\n' > answer.txt", description: "Resumed"}}
  - name: answered-in-session
    match: {tool_result_for: AskUserQuestion}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'x\\n' > answer.txt", description: "Answered"}}
  - name: other
    match: {user_contains: "independent work"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'x\\n' > other.txt", description: "Work"}}
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_for_answers_holds_no_slot() {
    let Some(claude) = claude_path() else { return };
    let w = World::new(vec![claude.display().to_string()], Some(WAITING), 1, None).await;
    let asking = w.spawn("this needs a decision", true).await;
    w.wait_state(asking.id, TaskState::WaitingAnswers).await;
    assert!(w.runtime.is_parked(asking.id));
    // With a single slot, a second task still runs while the first waits for the human.
    let other = w.spawn("independent work", true).await;
    w.wait_state(other.id, TaskState::Review).await;
    assert_eq!(w.task(asking.id).await.state, TaskState::WaitingAnswers);

    let answers = [("q1".to_owned(), Answer::Choices(vec!["Blue".into()]))]
        .into_iter()
        .collect();
    w.engine
        .answer_questions(w.user, asking.id, answers)
        .await
        .unwrap();
    w.wait_state(asking.id, TaskState::Review).await;
    assert!(
        w.rules().contains(&"answered-in-session".to_owned()),
        "answered through the live session: {:?}",
        w.rules()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_idle_timeout_the_answer_resumes_the_saved_session() {
    let Some(claude) = claude_path() else { return };
    let w = World::with_idle(
        vec![claude.display().to_string()],
        Some(WAITING),
        1,
        None,
        Duration::from_millis(300),
    )
    .await;
    let task = w.spawn("this needs a decision", true).await;
    let waiting = w.wait_state(task.id, TaskState::WaitingAnswers).await;
    w.wait_unparked(task.id).await;
    let answers = [("q1".to_owned(), Answer::Text("green, actually".into()))]
        .into_iter()
        .collect();
    w.engine
        .answer_questions(w.user, task.id, answers)
        .await
        .unwrap();
    let done = w.wait_state(task.id, TaskState::Review).await;
    assert_eq!(
        done.session_id, waiting.session_id,
        "the same session, resumed"
    );
    let fake = w.fake.as_ref().unwrap();
    let resumed = fake
        .message_requests()
        .into_iter()
        .find(|r| r.rule_name.as_deref() == Some("answered-after-resume"))
        .unwrap_or_else(|| panic!("{:?}", w.rules()));
    let sent = resumed.body["messages"].to_string();
    assert!(sent.contains("Which colour? → green, actually"), "{sent}");
    assert!(
        sent.contains("this needs a decision"),
        "the resumed session kept its history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_was_never_saved_is_started_again_on_retry() {
    let Some(claude) = claude_path() else { return };
    let flag = tempfile::tempdir().unwrap();
    // The first run dies before the CLI could save anything (as when the server is
    // killed right after starting the agent).
    let wrapper = format!(
        "if [ -e '{flag}/ran' ]; then exec '{claude}' \"$@\"; fi; touch '{flag}/ran'; echo dead >&2; exit 1",
        flag = flag.path().display(),
        claude = claude.display()
    );
    let w = World::new(
        vec!["sh".into(), "-c".into(), wrapper, "sh".into()],
        Some(FLAKY),
        3,
        None,
    )
    .await;
    let task = w.spawn("do the thing", true).await;
    let failed = w.wait_state(task.id, TaskState::Failed).await;
    assert!(
        failed.error.as_deref().unwrap().contains("dead"),
        "{:?}",
        failed.error
    );
    w.engine
        .apply_task_event(
            Some(w.user),
            task.id,
            mainloop_domain::task::TaskEvent::RetryRequested(None),
        )
        .await
        .unwrap();
    let done = w.wait_state(task.id, TaskState::Review).await;
    assert_eq!(
        done.session_id, failed.session_id,
        "the recorded session id is kept"
    );
    assert!(w.transcript_says(task.id, "starting it again").await);
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_saved_after_it_was_found_missing_is_resumed_not_started_twice() {
    let Some(claude) = claude_path() else { return };
    // A killed server's agent may save its session just after the next server found it
    // missing: the fresh start with the same id then meets it ("already in use"). The
    // wrapper plays the late save: a fresh start (`--session-id`) first puts the hidden
    // session file back.
    let wrapper = format!(
        "case \"$*\" in *--session-id*) find \"$HOME\" -name '*.jsonl.late' | while read -r f; do mv \"$f\" \"${{f%.late}}\"; done;; esac; exec '{claude}' \"$@\"",
        claude = claude.display()
    );
    let w = World::with_idle(
        vec!["sh".into(), "-c".into(), wrapper, "sh".into()],
        Some(WAITING),
        1,
        None,
        Duration::from_millis(300),
    )
    .await;
    let task = w.spawn("this needs a decision", true).await;
    let waiting = w.wait_state(task.id, TaskState::WaitingAnswers).await;
    w.wait_unparked(task.id).await;
    let id = waiting.session_id.clone().unwrap();
    let saved = files_ending(w._home.path(), &format!("{id}.jsonl"));
    assert_eq!(saved.len(), 1, "{saved:?}");
    let hidden = saved[0].with_extension("jsonl.late");
    std::fs::rename(&saved[0], &hidden).unwrap();

    let answers = [("q1".to_owned(), Answer::Text("green, actually".into()))]
        .into_iter()
        .collect();
    w.engine
        .answer_questions(w.user, task.id, answers)
        .await
        .unwrap();
    let done = w.wait_state(task.id, TaskState::Review).await;
    assert_eq!(done.session_id, waiting.session_id, "the same session");
    assert!(saved[0].exists() && !hidden.exists());
    assert!(
        w.transcript_says(task.id, "the saved session was missing")
            .await
    );
    assert!(
        w.transcript_says(task.id, "the session was saved after all")
            .await
    );
    let fake = w.fake.as_ref().unwrap();
    let resumed = fake
        .message_requests()
        .into_iter()
        .find(|r| r.rule_name.as_deref() == Some("answered-after-resume"))
        .unwrap_or_else(|| panic!("{:?}", w.rules()));
    assert!(
        resumed.body["messages"]
            .to_string()
            .contains("this needs a decision"),
        "the resumed session kept its history"
    );
}

const HANGS_ONCE: &str = r##"
rules:
  - name: hang
    match: {user_contains: "hang please", times: 1}
    delay_ms: 60000
    reply: [{text: "too late"}]
  - name: continue
    match: {user_contains: "stopped before finishing"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'done\\n' > done.txt", description: "Finish"}}
  - name: fresh
    match: {user_contains: "hang please"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'done\\n' > done.txt", description: "Finish"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done."}]
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_agent_is_stopped_after_the_inactivity_timeout_and_retry_finishes() {
    let Some(claude) = claude_path() else { return };
    let w = World::with_timeouts(
        vec![claude.display().to_string()],
        Some(HANGS_ONCE),
        1,
        None,
        Duration::from_secs(600),
        Duration::from_secs(3),
        // Sandboxed: the timeout must reach through bubblewrap to the agent.
        true,
    )
    .await;
    let task = w.spawn("hang please", true).await;
    let failed = w.wait_state(task.id, TaskState::Failed).await;
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("no output for 3 s"),
        "{:?}",
        failed.error
    );
    assert!(!w.runtime.is_parked(task.id));
    // The slot is free again and the task can be retried; this time the model answers.
    w.engine
        .apply_task_event(Some(w.user), task.id, TaskEvent::RetryRequested(None))
        .await
        .unwrap();
    let review = w.wait_state(task.id, TaskState::Review).await;
    assert!(review.error.is_none());
}

const SNOOPS: &str = r##"
rules:
  - name: snoop
    match: {user_contains: "look around"}
    reply:
      - tool_use: {name: Bash, input: {command: "cat ../../mainloop.db; cat ../other/secret.txt; echo home=$HOME; printf 'mine\\n' > mine.txt", description: "Look around"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done."}]
"##;

/// The sandbox through the worker: the real claude CLI under bubblewrap runs a command
/// that tries to read the database and another task's worktree (both a short relative
/// path away), and the project's checks, confined the same way, verify it from inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_agent_and_its_checks_reach_only_their_own_worktree() {
    let Some(claude) = claude_path() else { return };
    let w = World::with_timeouts(
        vec![claude.display().to_string()],
        Some(SNOOPS),
        1,
        Some("test ! -e ../../mainloop.db && test ! -e ../other/secret.txt && test -f mine.txt"),
        Duration::from_secs(600),
        Duration::from_secs(120),
        true,
    )
    .await;
    let other = w.data.path().join("worktrees/other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("secret.txt"), "SECRET-OF-ANOTHER-TASK").unwrap();
    let task = w.spawn("look around", true).await;
    let done = w.wait_state(task.id, TaskState::Review).await;

    // Outside the sandbox both paths are really there, next to the worktree.
    let wt = PathBuf::from(done.worktree.clone().unwrap());
    assert!(wt.join("../../mainloop.db").is_file());
    assert!(wt.join("../other/secret.txt").is_file());
    assert_eq!(
        std::fs::read_to_string(wt.join("mine.txt")).unwrap(),
        "mine\n"
    );

    let transcript = w
        .engine
        .task_transcript(w.user, task.id, 0, 1000)
        .await
        .unwrap();
    let text = serde_json::to_string(&transcript).unwrap();
    assert!(text.contains("No such file"), "{text}");
    assert!(!text.contains("SECRET-OF-ANOTHER-TASK"), "{text}");
    assert!(
        !text.contains("SQLite format"),
        "the database leaked: {text}"
    );
    let home = w.data.path().join("homes").join(task.id.to_string());
    assert!(text.contains(&format!("home={}", home.display())), "{text}");
    // The agent kept its session in the private home.
    assert!(home.join(".claude").is_dir());
}

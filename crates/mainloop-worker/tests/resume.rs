//! A resumed agent holds its previous turn in full: with the real `claude` CLI against
//! the scripted fake model, the worker ends each session the normal way (its input
//! closed, its exit awaited), so the next round's `--resume` continues from the end of
//! the last one — after checks failed, and after a session waiting for an answer was
//! stopped at the idle timeout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use mainloop_agent::ClaudeCode;
use mainloop_domain::question::Answer;
use mainloop_domain::records::Task;
use mainloop_domain::task::TaskState;
use mainloop_domain::{TaskId, UserId};
use mainloop_engine::{CreateTask, Engine, EngineConfig};
use mainloop_fake_anthropic::{FakeAnthropic, LoggedRequest, Script};
use mainloop_git::Git;
use mainloop_test_support::{Database, EngineWorld};
use mainloop_worker::{Runtime, WorkerConfig};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SCRIPT: &str = r##"
rules:
  - name: fix-checks
    match: {user_contains: "checks failed"}
    reply:
      - tool_use: {name: Bash, input: {command: "touch fixed.txt", description: "Fix"}}
  - name: answered-after-resume
    match: {user_contains: "Answers to your questions"}
    reply: [{text: "Thanks, resumed with your answer."}]
  - name: ask
    match: {user_contains: "needs a decision", tool_offered: AskUserQuestion}
    reply:
      - text: "One decision first: ASKING-MARK."
      - tool_use:
          name: AskUserQuestion
          input:
            questions:
              - question: "Which colour?"
                header: "Colour"
                options: [{label: "Red", description: "warm"}, {label: "Blue", description: "cool"}]
                multiSelect: false
  - name: work
    match: {user_contains: "write the note"}
    reply:
      - text: "Writing the note."
      - tool_use: {name: Bash, input: {command: "printf 'noted\\n' > note.txt && echo TOOL-OUTPUT-MARK", description: "Write the note"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "The note is written: FINAL-REPLY-MARK."}]
"##;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

struct World {
    engine: Engine,
    runtime: Runtime,
    user: UserId,
    repo: tempfile::TempDir,
    _data: tempfile::TempDir,
    _home: tempfile::TempDir,
    fake: FakeAnthropic,
    shutdown: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl World {
    async fn new(claude: &Path, check: Option<&str>, idle_timeout: Duration) -> Self {
        let data = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let repo = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(repo.path().join("README.md"), "notes\n").unwrap();
        if let Some(check) = check {
            let config = format!("check = {check:?}\n");
            std::fs::write(repo.path().join(".mainloop.toml"), config).unwrap();
        }
        git(repo.path(), &["add", "-A"]);
        git(repo.path(), &["commit", "-q", "-m", "init"]);
        let fake = FakeAnthropic::start(Script::from_yaml(SCRIPT).unwrap())
            .await
            .unwrap();
        let env = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", home.path().display().to_string()),
            ("ANTHROPIC_API_KEY", "sk-test".to_owned()),
            ("ANTHROPIC_BASE_URL", fake.base_url()),
            ("DISABLE_TELEMETRY", "1".to_owned()),
            ("DISABLE_AUTOUPDATER", "1".to_owned()),
            ("DISABLE_ERROR_REPORTING", "1".to_owned()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
        ];
        let world = EngineWorld::new(
            Database::at(format!("sqlite://{}/mainloop.db", data.path().display())),
            None,
            EngineConfig {
                backoff_base: Duration::from_millis(50),
                backoff_max: Duration::from_millis(200),
                max_check_rounds: 2,
                ..EngineConfig::default()
            },
        )
        .await;
        let (engine, owner) = (world.engine.clone(), world.owner.clone());
        let runtime = Runtime::new(
            engine.clone(),
            Arc::new(ClaudeCode::new(vec![claude.display().to_string()])),
            Git::new(data.path().join("repos"), data.path().join("worktrees")),
            WorkerConfig {
                max_agents: 1,
                idle_timeout,
                inactivity_timeout: Duration::from_secs(120),
                api_retries: 2,
                api_retry_delay: Duration::from_millis(200),
                check_timeout: Duration::from_secs(60),
                check_output_bytes: 16 * 1024,
                model: None,
                agent_env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                plans_dir: home.path().join(".claude/plans"),
                sandbox: None,
                pid_dir: data.path().join("agents"),
                forge: None,
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
            _data: data,
            _home: home,
            fake,
            shutdown,
        }
    }

    async fn spawn(&self, description: &str) -> Task {
        let create = CreateTask {
            description: description.into(),
            repo: self.repo.path().display().to_string(),
            skip_plan: true,
            model: None,
        };
        self.engine.create_task(self.user, &create).await.unwrap()
    }

    async fn wait_state(&self, id: TaskId, state: TaskState) -> Task {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let t = self.engine.task(self.user, id).await.unwrap();
            if t.state == state {
                return t;
            }
            assert!(
                t.state != TaskState::Failed && tokio::time::Instant::now() < deadline,
                "waiting for {state}, the task is {} ({:?}); rules {:?}",
                t.state,
                t.error,
                self.rules()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn rules(&self) -> Vec<String> {
        self.fake
            .message_requests()
            .iter()
            .map(|r| r.rule_name.clone().unwrap_or_else(|| "<none>".into()))
            .collect()
    }

    fn request(&self, rule: &str) -> LoggedRequest {
        self.fake
            .message_requests()
            .into_iter()
            .find(|r| r.rule_name.as_deref() == Some(rule))
            .unwrap_or_else(|| panic!("no request answered by {rule}: {:?}", self.rules()))
    }

    /// The task's transcript, as JSON text.
    async fn transcript(&self, id: TaskId) -> String {
        let entries = self
            .engine
            .task_transcript(self.user, id, 0, 500)
            .await
            .unwrap();
        serde_json::to_string(&entries).unwrap()
    }
}

fn assert_carries(request: &LoggedRequest, earlier: &[&str]) {
    let sent = request.body["messages"].to_string();
    for text in earlier {
        assert!(
            sent.contains(text),
            "the resumed request lacks {text:?}: {sent}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_after_failed_checks_resumes_from_the_end_of_the_first() {
    let Some(claude) = mainloop_test_support::claude_path() else {
        return;
    };
    let w = World::new(&claude, Some("test -f fixed.txt"), Duration::from_secs(600)).await;
    let task = w.spawn("write the note").await;
    let done = w.wait_state(task.id, TaskState::Review).await;
    assert_eq!(
        done.core.check_round, 1,
        "one failed check round, then green"
    );
    assert_carries(
        &w.request("fix-checks"),
        &[
            "write the note",
            "Writing the note.",
            "TOOL-OUTPUT-MARK",
            "The note is written: FINAL-REPLY-MARK.",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_the_idle_timeout_resumes_the_question_it_answers() {
    let Some(claude) = mainloop_test_support::claude_path() else {
        return;
    };
    let w = World::new(&claude, None, Duration::ZERO).await;
    let task = w.spawn("this needs a decision").await;
    w.wait_state(task.id, TaskState::WaitingAnswers).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while w.runtime.is_parked(task.id) {
        assert!(tokio::time::Instant::now() < deadline, "never unparked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answers = [("q1".to_owned(), Answer::Text("green".into()))]
        .into_iter()
        .collect();
    w.engine
        .answer_questions(w.user, task.id, answers)
        .await
        .unwrap();
    w.wait_state(task.id, TaskState::Review).await;
    let said = w.transcript(task.id).await;
    assert!(said.contains("ASKING-MARK"), "{said}");
    assert!(
        !said.contains("session was missing"),
        "the stopped session was lost: {said}"
    );
    assert_carries(
        &w.request("answered-after-resume"),
        &["this needs a decision", "ASKING-MARK", "Which colour?"],
    );
}

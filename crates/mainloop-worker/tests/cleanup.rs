//! Cleaning up after finished tasks, on SQLite and PostgreSQL, with real git worktrees:
//! retention honoured (driven by an explicit time, never by waiting), a retried task
//! kept, crash leftovers removed at start, and nothing of a live task touched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mainloop_domain::records::Task;
use mainloop_domain::task::{TaskEvent, TaskState};
use mainloop_domain::{TaskId, Timestamp};
use mainloop_engine::{CreateTask, Engine, EngineConfig, Retention};
use mainloop_git::Git;
use mainloop_sandbox::{Bubblewrap, Policy};
use mainloop_test_support::{Database, EngineWorld, GitRepo};
use mainloop_worker::{AgentRegistry, Runtime, WorkerConfig, WorkerSandbox};

const DAY_MS: i64 = 24 * 3600 * 1000;

struct World {
    world: EngineWorld,
    runtime: Runtime,
    git: Git,
    repo: GitRepo,
    data: tempfile::TempDir,
}

impl World {
    async fn new(database: Database) -> Self {
        let data = tempfile::tempdir().unwrap();
        let config = EngineConfig {
            runner_state_dir: Some(data.path().join("runner-state")),
            ..EngineConfig::default()
        };
        let world = EngineWorld::new(database, None, config).await;
        let git = Git::new(data.path().join("repos"), data.path().join("worktrees"));
        let runtime = Runtime::with_agents(
            world.engine.clone(),
            AgentRegistry::new(),
            git.clone(),
            WorkerConfig {
                max_agents: 1,
                labels: std::collections::BTreeSet::new(),
                runner_grace: std::time::Duration::from_secs(60),
                idle_timeout: Duration::from_secs(60),
                inactivity_timeout: Duration::from_secs(60),
                api_retries: 0,
                api_retry_delay: Duration::from_millis(100),
                check_timeout: Duration::from_secs(60),
                check_output_bytes: 1024,
                model: None,
                agent_env: vec![],
                plans_dir: data.path().join("plans"),
                // Never run here: only where homes live matters.
                sandbox: Some(WorkerSandbox {
                    bwrap: Bubblewrap::new(PathBuf::from("bwrap"), Policy::default()),
                    homes_dir: data.path().join("homes"),
                    home_files: vec![],
                }),
                pid_dir: data.path().join("agents"),
                forge: None,
                port_range: mainloop_worker::DEFAULT_PORT_RANGE,
                task_databases: None,
                retention: Retention::default(),
                launcher: None,
            },
        );
        world.engine.set_workspaces(Arc::new(runtime.clone()));
        Self {
            world,
            runtime,
            git,
            repo: GitRepo::new(),
            data,
        }
    }

    fn engine(&self) -> &Engine {
        &self.world.engine
    }

    fn home(&self, id: TaskId) -> PathBuf {
        self.data.path().join("homes").join(id.to_string())
    }

    /// A task with its worktree (a file of uncommitted work in it) and private home.
    async fn task(&self, description: &str) -> Task {
        let engine = self.engine();
        let task = engine
            .create_task(
                self.world.owner.id,
                &CreateTask {
                    description: description.into(),
                    repo: self.repo.path().display().to_string(),
                    skip_plan: true,
                    model: None,
                    agent: None,
                    budget_usd: None,
                },
            )
            .await
            .unwrap();
        let repo = self.git.resolve_repo(&task.repo).await.unwrap();
        let wt = self
            .git
            .ensure_worktree(&repo, &task.id.short(), description, "main")
            .await
            .unwrap();
        std::fs::write(wt.path.join("work.txt"), "work\n").unwrap();
        engine
            .set_task_workspace(task.id, &wt.branch, &wt.path.display().to_string(), "main")
            .await
            .unwrap();
        std::fs::create_dir_all(self.home(task.id).join(".claude")).unwrap();
        std::fs::write(self.home(task.id).join(".claude/session.jsonl"), "{}\n").unwrap();
        self.current(task.id).await
    }

    async fn current(&self, id: TaskId) -> Task {
        self.engine().task(self.world.owner.id, id).await.unwrap()
    }

    async fn apply(&self, id: TaskId, events: Vec<TaskEvent>) -> Task {
        for event in events {
            self.engine()
                .apply_task_event(None, id, event)
                .await
                .unwrap();
        }
        self.current(id).await
    }

    async fn failed(&self, description: &str) -> Task {
        let task = self.task(description).await;
        self.apply(
            task.id,
            vec![
                TaskEvent::SlotGranted,
                TaskEvent::AgentFailed("broke".into()),
            ],
        )
        .await
    }

    async fn merged(&self, description: &str) -> Task {
        let task = self.task(description).await;
        self.apply(
            task.id,
            vec![
                TaskEvent::SlotGranted,
                TaskEvent::AgentFinished,
                TaskEvent::ChecksPassed,
                TaskEvent::ReviewApproved,
                TaskEvent::Merged,
            ],
        )
        .await
    }

    fn branch_exists(&self, task: &Task) -> bool {
        let branch = task.branch.as_deref().unwrap();
        !self.repo.git(&["branch", "--list", branch]).is_empty()
    }
}

fn worktree(task: &Task) -> &Path {
    Path::new(task.worktree.as_deref().unwrap())
}

fn at(t: Timestamp, plus_ms: i64) -> Timestamp {
    t.plus_millis(plus_ms)
}

async fn retention_is_honoured_and_live_tasks_are_untouched(database: Database) {
    let w = World::new(database).await;
    let live = w.task("still working").await;
    let merged = w.merged("merged work").await;
    let failed = w.failed("failed work").await;
    let retried = w.failed("failed then retried").await;
    assert_eq!(merged.state, TaskState::Merged);
    assert_eq!(failed.state, TaskState::Failed);
    for t in [&live, &merged, &failed, &retried] {
        assert!(
            worktree(t).is_dir() && w.home(t.id).is_dir(),
            "{}",
            t.description
        );
    }

    // Two of them ran on a runner: a lease each, and an agent's session kept here.
    let (runner, _) = w
        .engine()
        .create_runner(w.world.owner.id, "box")
        .await
        .unwrap();
    let kept = |id: TaskId| {
        w.data
            .path()
            .join("runner-state")
            .join(format!("{id}.tar.gz"))
    };
    std::fs::create_dir_all(w.data.path().join("runner-state")).unwrap();
    for t in [&live, &merged] {
        w.engine().lease_run(t.id, runner.id).await.unwrap();
        std::fs::write(kept(t.id), b"state").unwrap();
    }

    // Merged work goes at once; a failed task stays within its seven days.
    let now = at(failed.updated_at.max(merged.updated_at), 60_000);
    let report = w.runtime.sweep(now).await;
    assert_eq!(report.cleaned, vec![merged.id]);
    // Its lease ends and its kept session goes; the live task keeps both.
    assert!(w.engine().run_lease(merged.id).await.unwrap().is_none());
    assert!(!kept(merged.id).exists());
    assert!(w.engine().run_lease(live.id).await.unwrap().is_some());
    assert!(kept(live.id).exists());
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(!worktree(&merged).exists() && !w.home(merged.id).exists());
    assert!(w.branch_exists(&merged), "the branch stays");
    assert!(worktree(&failed).is_dir() && w.home(failed.id).is_dir());

    let counts = w.engine().system_report().await.unwrap().tasks;
    assert_eq!((counts.live, counts.kept, counts.cleaned), (1, 2, 1));

    // Retried before its time: live again, not cleaned when its old time comes.
    let retried = w
        .apply(retried.id, vec![TaskEvent::RetryRequested(None)])
        .await;
    assert_ne!(retried.state, TaskState::Failed);
    let later = at(failed.updated_at, 7 * DAY_MS);
    let report = w.runtime.sweep(at(failed.updated_at, 7 * DAY_MS - 1)).await;
    assert!(report.cleaned.is_empty(), "{report:?}");
    let report = w.runtime.sweep(later).await;
    assert_eq!(report.cleaned, vec![failed.id]);
    assert!(!worktree(&failed).exists() && !w.home(failed.id).exists());
    assert!(w.branch_exists(&failed));
    for t in [&live, &retried] {
        assert!(worktree(t).join("work.txt").is_file(), "{}", t.description);
        assert!(w.home(t.id).join(".claude/session.jsonl").is_file());
    }

    // Recorded as cleaned: not revisited.
    let report = w.runtime.sweep(at(later, DAY_MS)).await;
    assert!(report.cleaned.is_empty(), "{report:?}");
    let counts = w.engine().system_report().await.unwrap().tasks;
    assert_eq!((counts.live, counts.kept, counts.cleaned), (2, 0, 2));
}

async fn crash_leftovers_go_at_start_and_a_live_task_keeps_its_own(database: Database) {
    let w = World::new(database).await;
    let live = w.task("still working").await;
    let stray_worktree = w.data.path().join("worktrees/0badc0de");
    std::fs::create_dir_all(stray_worktree.join("src")).unwrap();
    std::fs::write(stray_worktree.join("src/lib.rs"), "x").unwrap();
    let stray_home = w.home(TaskId::new_v7(Timestamp::from_millis(1)));
    std::fs::create_dir_all(&stray_home).unwrap();
    let half_clone = w.data.path().join("repos/.tmp-1-2-3");
    std::fs::create_dir_all(&half_clone).unwrap();
    let lock = PathBuf::from(
        mainloop_test_support::git(
            worktree(&live),
            &[
                "rev-parse",
                "--path-format=absolute",
                "--git-path",
                "index.lock",
            ],
        )
        .trim(),
    );
    std::fs::write(&lock, "").unwrap();
    // A stray worktree git still knows of.
    let registered = w.data.path().join("worktrees/feedf00d");
    w.repo.git(&[
        "worktree",
        "add",
        "-q",
        "--detach",
        registered.to_str().unwrap(),
    ]);

    let started = SystemTime::now() + Duration::from_secs(1);
    let left = w.runtime.remove_leftovers(started).await;

    let mut worktrees = left.worktrees.clone();
    worktrees.sort();
    assert_eq!(worktrees, vec![stray_worktree.clone(), registered.clone()]);
    assert_eq!(left.homes, vec![stray_home.clone()]);
    assert_eq!(left.clones, vec![half_clone.clone()]);
    assert_eq!(left.locks, vec![lock.clone()]);
    for gone in [
        &stray_worktree,
        &registered,
        &stray_home,
        &half_clone,
        &lock,
    ] {
        assert!(!gone.exists(), "{}", gone.display());
    }
    assert!(!w.repo.git(&["worktree", "list"]).contains("feedf00d"));
    assert!(worktree(&live).join("work.txt").is_file());
    assert!(w.home(live.id).join(".claude/session.jsonl").is_file());

    let report = w.engine().system_report().await.unwrap();
    assert!(
        report.disk.worktrees_bytes > 0 && report.disk.homes_bytes > 0,
        "{report:?}"
    );
    assert!(report.database_bytes > 0);
    assert_eq!(
        report.total_bytes(),
        report.disk.worktrees_bytes
            + report.disk.homes_bytes
            + report.disk.clones_bytes
            + report.database_bytes
    );
}

#[tokio::test]
async fn sqlite_retention_is_honoured_and_live_tasks_are_untouched() {
    retention_is_honoured_and_live_tasks_are_untouched(Database::sqlite()).await;
}

#[tokio::test]
async fn postgres_retention_is_honoured_and_live_tasks_are_untouched() {
    retention_is_honoured_and_live_tasks_are_untouched(Database::postgres().await).await;
}

#[tokio::test]
async fn sqlite_crash_leftovers_go_at_start_and_a_live_task_keeps_its_own() {
    crash_leftovers_go_at_start_and_a_live_task_keeps_its_own(Database::sqlite()).await;
}

#[tokio::test]
async fn postgres_crash_leftovers_go_at_start_and_a_live_task_keeps_its_own() {
    crash_leftovers_go_at_start_and_a_live_task_keeps_its_own(Database::postgres().await).await;
}

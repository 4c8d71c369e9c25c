//! The mirror when the process dies (or a response is lost) between a forge write and
//! recording it, against an in-memory forge (`memory.rs`; the attempt's bookkeeping is
//! not saved either way), and the forge lifecycle's bugs against the fake GitHub
//! (`github.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod github;
mod memory;
mod pure;

use super::hosted::{Hosted, open_pull_request};
use super::state::{Mirror, context};
use super::{ForgeSettings, sync, watch};
use crate::Runtime;
use crate::delivery::Delivery;
use crate::task::load;
use mainloop_domain::TaskId;
use mainloop_domain::question::{Question, QuestionOption};
use mainloop_domain::task::{TaskEvent, TaskState};
use mainloop_engine::{BackgroundJob, CreateTask, Engine, EngineConfig, JobContext};
use mainloop_store::{Job, JobState, Store, StoreOptions};
use memory::{MemoryForge, pr};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

struct World {
    rt: Runtime,
    forge: Arc<MemoryForge>,
    task: TaskId,
    _dir: tempfile::TempDir,
}

/// The forge settings the tests use, over `forge`.
fn settings(forge: Arc<dyn mainloop_forge::Forge>) -> ForgeSettings {
    ForgeSettings {
        forge,
        web_host: "github.com".into(),
        git_url: "file:///nowhere/{owner}/{name}.git".into(),
        label: "mainloop".into(),
        mention: "mainloop".into(),
        poll_interval: Duration::from_secs(60),
        ci_pending_timeout: Duration::from_secs(600),
        ci_appear_timeout: Duration::from_secs(600),
        log_tail_bytes: 1024,
        trusted_users: vec!["alice".into()],
    }
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let forge = Arc::new(MemoryForge::default());
    let git = mainloop_git::Git::new(dir.path().join("repos"), dir.path().join("worktrees"));
    let mut w = world_with(dir, settings(forge.clone()), git).await;
    w.forge = forge;
    w
}

/// A runtime on SQLite in `dir` whose tasks go to `settings`' forge, with one task on
/// `octo/app`.
async fn world_with(
    dir: tempfile::TempDir,
    settings: ForgeSettings,
    git: mainloop_git::Git,
) -> World {
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let engine = Engine::new(
        store,
        None,
        EngineConfig {
            forge_host: Some("github.com".into()),
            ..EngineConfig::default()
        },
    );
    let (owner, _) = engine.ensure_owner("owner").await.unwrap();
    let rt = Runtime::new(
        engine.clone(),
        Arc::new(mainloop_agent::ClaudeCode::new(vec!["false".into()])),
        git,
        crate::WorkerConfig {
            max_agents: 1,
            labels: std::collections::BTreeSet::new(),
            runner_grace: std::time::Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            inactivity_timeout: Duration::from_secs(60),
            api_retries: 0,
            api_retry_delay: Duration::from_secs(1),
            check_timeout: Duration::from_secs(60),
            check_output_bytes: 1024,
            model: None,
            agent_env: Vec::new(),
            plans_dir: dir.path().join("plans"),
            pid_dir: dir.path().join("agents"),
            forge: Some(settings),
            port_range: crate::DEFAULT_PORT_RANGE,
            task_databases: None,
            retention: mainloop_engine::Retention::default(),
            launcher: None,
            sandbox: None,
        },
    );
    let task = engine
        .create_task(
            owner.id,
            &CreateTask {
                description: "write a note".into(),
                repo: "octo/app".into(),
                skip_plan: false,
                model: None,
                agent: None,
                budget_usd: None,
            },
        )
        .await
        .unwrap();
    World {
        rt,
        forge: Arc::new(MemoryForge::default()),
        task: task.id,
        _dir: dir,
    }
}

fn questions() -> Vec<Question> {
    vec![Question {
        id: "q1".into(),
        header: "Tone".into(),
        question: "Which tone?".into(),
        options: vec![QuestionOption {
            label: "Plain".into(),
            description: "just the facts".into(),
        }],
        multi_select: false,
    }]
}

impl World {
    fn job(&self, kind: &str, payload: serde_json::Value) -> JobContext {
        let at = mainloop_engine::now();
        JobContext {
            engine: self.rt.inner.engine.clone(),
            job: Job {
                id: 1,
                key: format!("{kind}:test"),
                kind: kind.into(),
                user_id: None,
                lane: None,
                payload,
                state: JobState::Running,
                attempts: 1,
                run_after: at,
                lease_owner: None,
                lease_until: None,
                last_error: None,
                created_at: at,
            },
            owner: "test".into(),
        }
    }

    async fn apply(&self, event: TaskEvent) {
        self.rt
            .inner
            .engine
            .apply_task_event(None, self.task, event)
            .await
            .unwrap();
    }

    async fn sync(&self) {
        let ctx = self.job(
            mainloop_engine::ForgeSync::KIND,
            json!({"task_id": self.task}),
        );
        let job = mainloop_engine::ForgeSync {
            task_id: self.task,
            version: 0,
        };
        sync(&self.rt, &ctx, job).await.unwrap();
    }

    async fn watch(&self) {
        let generation = self.mirror().await.watch_gen;
        let ctx = self.job(
            mainloop_engine::ForgeWatch::KIND,
            json!({"task_id": self.task, "generation": generation}),
        );
        let job = mainloop_engine::ForgeWatch {
            task_id: self.task,
            generation,
            seq: 0,
        };
        watch(&self.rt, &ctx, job).await.unwrap();
    }

    async fn mirror(&self) -> Mirror {
        let rec = self
            .rt
            .inner
            .engine
            .store_for_tests()
            .task_forge(self.task)
            .await
            .unwrap()
            .unwrap();
        serde_json::from_value(rec.data).unwrap()
    }

    async fn state(&self) -> TaskState {
        load(&self.rt, self.task).await.unwrap().unwrap().1.state
    }

    /// Into waiting for answers, with the issue and the questions posted.
    async fn asked(&self) {
        self.apply(TaskEvent::SlotGranted).await;
        self.apply(TaskEvent::QuestionsAsked(questions())).await;
        self.sync().await;
    }
}

/// The human's answer to [`questions`].
fn answered() -> TaskEvent {
    TaskEvent::Answered(
        [(
            "q1".to_owned(),
            mainloop_domain::question::Answer::Choices(vec!["Plain".into()]),
        )]
        .into_iter()
        .collect(),
    )
}

#[tokio::test]
async fn an_issue_whose_creation_went_unrecorded_is_found_not_made_again() {
    let w = world().await;
    w.forge.lose_next("create_issue");
    w.sync().await; // GitHub made it; the answer was lost
    w.sync().await;
    let issues = w.forge.0.lock().unwrap().issues.len();
    assert_eq!(issues, 1);
    let rec =
        w.rt.inner
            .engine
            .store_for_tests()
            .task_forge(w.task)
            .await
            .unwrap();
    assert_eq!(rec.unwrap().issue_number, Some(1));
}

#[tokio::test]
async fn a_comment_whose_posting_went_unrecorded_is_not_posted_again() {
    let w = world().await;
    w.apply(TaskEvent::SlotGranted).await;
    w.apply(TaskEvent::QuestionsAsked(questions())).await;
    w.forge.lose_next("comment");
    w.sync().await;
    w.sync().await;
    assert_eq!(w.forge.comments_with("The worker has questions"), 1);
    assert!(w.mirror().await.pending.is_empty());
}

#[tokio::test]
async fn an_answer_read_by_a_failed_poll_is_read_again() {
    let w = world().await;
    w.asked().await;
    w.forge.answer(1, "1: 1");
    // Reading the answer works; the thanks is posted but its answer lost.
    w.forge.lose_next("comment");
    w.watch().await;
    assert_eq!(w.state().await, TaskState::WaitingAnswers);
    // Whether or not the thanks landed, the next poll still sees the answer.
    w.watch().await;
    assert_eq!(w.state().await, TaskState::Planning);
    assert_eq!(w.forge.comments_with("Thanks @alice"), 1);
}

#[tokio::test]
async fn a_second_round_of_the_same_questions_is_posted_again() {
    let w = world().await;
    w.asked().await;
    w.apply(answered()).await;
    w.sync().await;
    // The agent lost the answers (a restart) and asks the same again.
    w.apply(TaskEvent::QuestionsAsked(questions())).await;
    w.sync().await;
    assert_eq!(w.forge.comments_with("The worker has questions"), 2);
}

#[tokio::test]
async fn app_decisions_are_told_even_when_the_mirror_catches_up_late() {
    let w = world().await;
    w.asked().await;
    w.apply(answered()).await;
    w.apply(TaskEvent::PlanProposed("# Plan".into())).await;
    w.sync().await;
    // Approved in the app, and the work done, before the mirror runs again (a crash
    // delayed it).
    w.apply(TaskEvent::PlanApproved).await;
    w.apply(TaskEvent::AgentFinished).await;
    w.sync().await;
    assert_eq!(w.forge.comments_with("Answered in mainloop"), 1);
    assert_eq!(w.forge.comments_with("Plan approved in mainloop"), 1);
    w.sync().await;
    assert_eq!(w.forge.comments_with("Plan approved in mainloop"), 1);
}

#[tokio::test]
async fn a_plan_posted_but_unrecorded_and_then_approved_in_the_app_is_told() {
    let w = world().await;
    w.asked().await;
    w.apply(answered()).await;
    w.apply(TaskEvent::PlanProposed("# Plan".into())).await;
    w.forge.lose_next("comment");
    w.sync().await; // the plan is on the issue; mainloop does not know
    w.apply(TaskEvent::PlanApproved).await;
    w.apply(TaskEvent::AgentFinished).await;
    w.sync().await;
    assert_eq!(w.forge.comments_with("The worker's plan"), 1);
    assert_eq!(w.forge.comments_with("Plan approved in mainloop"), 1);
    assert!(w.mirror().await.pending.is_empty());
}

#[tokio::test]
async fn a_pull_request_whose_opening_went_unrecorded_is_adopted() {
    let w = world().await;
    w.asked().await;
    let wt = mainloop_git::Worktree {
        path: std::path::PathBuf::from("/nowhere"),
        branch: "mainloop/abc-write-a-note".into(),
        base: "main".into(),
    };
    w.forge.lose_next("open_pull_request");
    let mut c = context(&w.rt, w.task).await.unwrap().unwrap();
    assert!(open_pull_request(&mut c, &wt).await.is_err());
    c.save().await.unwrap(); // e.g. the outage note
    let mut c = context(&w.rt, w.task).await.unwrap().unwrap();
    let pr = open_pull_request(&mut c, &wt).await.unwrap();
    assert_eq!(w.forge.0.lock().unwrap().pulls.len(), 1);
    assert_eq!(pr.number, w.forge.0.lock().unwrap().pulls[0].0);
}

#[tokio::test]
async fn a_merge_whose_answer_was_lost_ends_merged_not_failed() {
    let w = world().await;
    w.asked().await;
    let branch = "mainloop/abc-write-a-note";
    {
        let mut s = w.forge.0.lock().unwrap();
        s.next += 1;
        let n = s.next;
        s.pulls.push((n, branch.into(), false));
    }
    let number = w.forge.0.lock().unwrap().pulls[0].0;
    let mut c = context(&w.rt, w.task).await.unwrap().unwrap();
    c.m.pull.pr = Some(pr(number, false));
    c.save().await.unwrap();
    for event in [
        answered(),
        TaskEvent::PlanProposed("# Plan".into()),
        TaskEvent::PlanApproved,
        TaskEvent::AgentFinished,
        TaskEvent::ChecksPassed,
        TaskEvent::ReviewApproved,
    ] {
        w.apply(event).await;
    }
    let (user, task) = load(&w.rt, w.task).await.unwrap().unwrap();
    w.forge.lose_next("merge_pull_request");
    let ctx = w.job("task.merge", json!({"task_id": w.task}));
    let hosted = Hosted::for_task(&w.rt, &task).unwrap();
    // Merged; the answer lost: retry later.
    hosted.merge(&w.rt, &ctx, user, &task).await.unwrap();
    assert_eq!(w.state().await, TaskState::Review);
    hosted.merge(&w.rt, &ctx, user, &task).await.unwrap();
    assert_eq!(w.state().await, TaskState::Merged);
}

#[tokio::test]
async fn the_end_of_an_outage_is_told_before_what_the_reply_read_then_caused() {
    use mainloop_domain::EventId;
    use mainloop_domain::event::EventName;
    use mainloop_domain::records::Event;
    let w = world().await;
    w.asked().await;
    let (user, _) = load(&w.rt, w.task).await.unwrap().unwrap();
    let events = async |after: EventId| -> Vec<Event> {
        let store = w.rt.inner.engine.store_for_tests();
        store.events_after(user, after, 1000).await.unwrap()
    };
    // The last polls failed (noted); now the forge answers, with an answer on the issue.
    let mut c = context(&w.rt, w.task).await.unwrap().unwrap();
    c.m.outage = Some("the forge is unavailable: HTTP 503".into());
    c.save().await.unwrap();
    let before = events(EventId(0)).await.last().map_or(EventId(0), |e| e.id);
    w.forge.answer(1, "1: 1");
    w.watch().await;
    assert_eq!(w.state().await, TaskState::Planning);
    assert_eq!(w.mirror().await.outage, None);
    let events = events(before).await;
    let reachable = events.iter().position(|e| {
        e.name == EventName::TaskOutput
            && e.payload.to_string().contains("GitHub is reachable again")
    });
    let planning = events
        .iter()
        .position(|e| e.name == EventName::TaskUpdated && e.payload["state"] == "planning");
    // Whoever sees the task move on (a client, a test) finds the outage's end told.
    assert!(
        reachable.is_some() && reachable < planning,
        "reachable again at {reachable:?}, planning at {planning:?}"
    );
}

#[tokio::test]
async fn an_answer_after_the_apps_is_told_the_same_whenever_the_watch_reads_it() {
    let w = world().await;
    w.asked().await;
    w.apply(answered()).await; // in the app
    w.sync().await;
    assert_eq!(w.forge.comments_with("Answered in mainloop"), 1);
    // Answered on the issue too, and read while the plan is still being made ...
    w.forge.answer(1, "1: 1");
    w.watch().await;
    // ... and again once the plan is up for review.
    w.apply(TaskEvent::PlanProposed("# Plan".into())).await;
    w.sync().await;
    w.forge.answer(1, "1: Plain");
    w.watch().await;
    let told = "@alice the questions were already answered in mainloop; nothing changed.";
    assert_eq!(w.forge.comments_with(told), 2);
    assert_eq!(w.state().await, TaskState::WaitingPlanReview);
}

//! Engine behaviour end to end: the real Anthropic client against the scripted fake
//! model, over real databases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::StreamExt;
use mainloop_domain::chat::{ContentBlock, Role};
use mainloop_domain::event::EventName;
use mainloop_domain::inbox::InboxKind;
use mainloop_domain::question::{Answer, Question, QuestionOption};
use mainloop_domain::records::{ChatMessage, MessageKind};
use mainloop_domain::task::{TaskEvent, TaskState};
use mainloop_domain::transcript::TranscriptEntry;
use mainloop_domain::{EventId, UserId};
use mainloop_engine::{
    BackgroundJob, ChatTurn, CreateTask, Engine, EngineConfig, EngineError, Handler, JobContext,
    JobError, PlanAction, Pool,
};
use mainloop_fake_anthropic::{FakeAnthropic, Script};
use mainloop_store::{JobState, NewJob, NewMessage, Store, StoreOptions};
use mainloop_test_support::{Database, EngineWorld, wait_for_within};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[path = "it/session.rs"]
mod session;
#[path = "it/usage_limit.rs"]
mod usage_limit;

struct Harness {
    engine: Engine,
    user: UserId,
    shutdown: CancellationToken,
    url: String,
    _world: Option<EngineWorld>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn fast_config() -> EngineConfig {
    EngineWorld::fast_config()
}

/// An engine over the database at `url`, started.
async fn start(
    url: &str,
    fake: Option<&FakeAnthropic>,
    config: EngineConfig,
) -> (Engine, CancellationToken) {
    let world = EngineWorld::started(Database::at(url), fake, config).await;
    (world.engine, world.shutdown)
}

async fn harness_on(
    database: Database,
    fake: Option<&FakeAnthropic>,
    config: EngineConfig,
) -> Harness {
    let world = EngineWorld::started(database, fake, config).await;
    Harness {
        engine: world.engine.clone(),
        user: world.owner.id,
        shutdown: world.shutdown.clone(),
        url: world.database.url().to_owned(),
        _world: Some(world),
    }
}

async fn sqlite_harness(fake: Option<&FakeAnthropic>, config: EngineConfig) -> Harness {
    harness_on(Database::sqlite(), fake, config).await
}

async fn pg_harness(fake: Option<&FakeAnthropic>, config: EngineConfig) -> Harness {
    let config = EngineConfig {
        reclaim_all_at_start: false,
        ..config
    };
    harness_on(Database::postgres().await, fake, config).await
}

/// Polls until `f` returns Some, or fails after 20 s.
async fn eventually<T>(what: &str, f: impl AsyncFnMut() -> Option<T>) -> T {
    wait_for_within(Duration::from_secs(20), what, f).await
}

async fn reply_to(engine: &Engine, user: UserId, msg: &ChatMessage) -> ChatMessage {
    eventually("the assistant's final reply", || async {
        let turn = engine
            .store_for_tests()
            .turn_messages(user, msg.id)
            .await
            .unwrap();
        turn.into_iter().rev().find(|m| {
            m.role == Role::Assistant && m.content.iter().all(|b| b.as_tool_use().is_none())
        })
    })
    .await
}

const CHAT_SCRIPT: &str = r#"
rules:
  - name: summarise
    match: {system_contains: "running summary"}
    reply: [{text: "SUMMARY: the user asked about the login bug and spawned a worker."}]
  - name: propose
    match: {user_contains: "login bug", tool_offered: spawn_task, times: 1}
    reply: [{text: "I can spawn a worker to fix the login bug in /src/app. Shall I?"}]
  - name: spawn
    match: {user_contains: "yes, go", tool_offered: spawn_task}
    reply:
      - {text: "Spawning it now."}
      - tool_use: {name: spawn_task, input: {description: "Fix the login bug: sessions expire too early", repo: "/src/app"}}
  - name: confirm-spawn
    match: {tool_result_for: spawn_task}
    reply: [{text: "Done: the worker is queued."}]
  - name: status
    match: {user_contains: "status?"}
    reply: [{text: "Still queued."}]
"#;

/// The state a crash leaves mid-turn: the user's `text`, the model's call of `tool`
/// with `input` stored under `toolu_crash`, nothing run yet, and the turn's job pending
/// twice (the first claim and a replay). Wakes the dispatcher; returns the user message.
async fn crashed_tool_turn(
    engine: &Engine,
    user: UserId,
    text: &str,
    tool: &str,
    input: serde_json::Value,
) -> ChatMessage {
    let mut tx = engine.store_for_tests().begin().await.unwrap();
    let now = mainloop_engine::now();
    let msg = tx
        .insert_message(
            user,
            &NewMessage {
                role: Role::User,
                kind: MessageKind::Text,
                content: vec![ContentBlock::text(text)],
                turn_id: None,
                task_id: None,
            },
            now,
        )
        .await
        .unwrap();
    tx.insert_message(
        user,
        &NewMessage {
            role: Role::Assistant,
            kind: MessageKind::Text,
            content: vec![ContentBlock::tool_use("toolu_crash", tool, input)],
            turn_id: Some(msg.id),
            task_id: None,
        },
        now,
    )
    .await
    .unwrap();
    for key in ["first", "replay"] {
        tx.enqueue(
            &NewJob {
                key: format!("chat:{}:{key}", msg.id),
                kind: ChatTurn::KIND.into(),
                user_id: Some(user),
                lane: Some(format!("chat:{user}")),
                payload: json!({"user_id": user, "message_id": msg.id}),
                run_after: now,
            },
            now,
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    engine.wake_dispatcher();
    msg
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() { super::$name(super::Backend::Sqlite).await; }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() { super::$name(super::Backend::Postgres).await; }
            }
        )*
    };
}

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn harness(backend: Backend, fake: Option<&FakeAnthropic>, config: EngineConfig) -> Harness {
    match backend {
        Backend::Sqlite => sqlite_harness(fake, config).await,
        Backend::Postgres => pg_harness(fake, config).await,
    }
}

both_backends!(
    chat_confirms_then_spawns_and_survives_restart,
    task_transitions_write_outbox_inbox_and_events
);

async fn chat_confirms_then_spawns_and_survives_restart(backend: Backend) {
    let fake = FakeAnthropic::start(Script::from_yaml(CHAT_SCRIPT).unwrap())
        .await
        .unwrap();
    let h = harness(backend, Some(&fake), fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let mut events = engine.subscribe(user, EventId(0));

    let ask = engine
        .post_chat(user, "Please fix the login bug in /src/app")
        .await
        .unwrap();
    let proposal = reply_to(engine, user, &ask).await;
    assert!(proposal.text.contains("Shall I?"), "{}", proposal.text);
    assert!(
        engine.tasks(user, &[], 10).await.unwrap().is_empty(),
        "nothing spawned before confirmation"
    );

    let yes = engine.post_chat(user, "yes, go ahead").await.unwrap();
    let done = reply_to(engine, user, &yes).await;
    assert_eq!(done.text, "Done: the worker is queued.");

    let tasks = engine.tasks(user, &[], 10).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        tasks[0].description,
        "Fix the login bug: sessions expire too early"
    );
    assert_eq!(tasks[0].repo, "/src/app");
    assert_eq!(tasks[0].state, TaskState::Queued);

    // The turn stored the tool call and its result exactly, in order.
    let turn = engine
        .store_for_tests()
        .turn_messages(user, yes.id)
        .await
        .unwrap();
    assert_eq!(turn.len(), 3);
    assert_eq!(turn[0].content[1].as_tool_use().unwrap().1, "spawn_task");
    assert_eq!(turn[1].kind, MessageKind::ToolResult);
    assert!(turn[1].content[0].is_tool_result());

    // What each turn used is recorded: two turns, the second over two model calls.
    let status = engine.main_thread_status(user).await.unwrap();
    assert_eq!(status.turns, 2, "{status:?}");
    assert!(
        status.input_tokens > 0 && status.output_tokens > 0,
        "{status:?}"
    );

    // A worker update went into the thread.
    let (all, _) = engine.chat_messages(user, None, 100, false).await.unwrap();
    let event = all
        .iter()
        .find(|m| m.role == Role::Event)
        .expect("event message");
    assert!(event.text.contains("Task created"), "{}", event.text);
    assert_eq!(event.task_id, Some(tasks[0].id));

    // Clients saw deltas and stored messages on the event stream.
    let mut names = Vec::new();
    while names
        .iter()
        .filter(|n| **n == EventName::ChatMessage)
        .count()
        < 6
    {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        names.push(e.name);
    }
    assert!(names.contains(&EventName::ChatDelta));
    assert!(names.contains(&EventName::TaskUpdated));

    // The second request carried the whole first exchange.
    let reqs = fake.message_requests();
    let second = &reqs[1].body["messages"];
    assert_eq!(second.as_array().unwrap().len(), 3, "{second}");

    // Restart: a new engine on the same database sees everything and keeps going.
    h.shutdown.cancel();
    let (engine2, shutdown2) = start(&h.url, Some(&fake), fast_config()).await;
    let (again, _) = engine2.chat_messages(user, None, 100, true).await.unwrap();
    let (before, _) = engine.chat_messages(user, None, 100, true).await.unwrap();
    assert_eq!(again, before);
    let status = engine2.post_chat(user, "status?").await.unwrap();
    let answer = reply_to(&engine2, user, &status).await;
    assert_eq!(answer.text, "Still queued.");
    let last = fake.message_requests().last().unwrap().body.clone();
    let text = last["messages"].to_string();
    assert!(
        text.contains("[mainloop worker update] Task created"),
        "worker updates reach the model: {text}"
    );
    shutdown2.cancel();
}

async fn task_transitions_write_outbox_inbox_and_events(backend: Backend) {
    let h = harness(backend, None, fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let task = engine
        .create_task(
            user,
            &CreateTask {
                description: "Add dark mode".into(),
                repo: "/src/ui".into(),
                skip_plan: false,
                model: None,
                agent: None,
                budget_usd: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Queued);

    let planning = engine
        .apply_task_event(None, task.id, TaskEvent::SlotGranted)
        .await
        .unwrap();
    assert_eq!(planning.state, TaskState::Planning);
    let run = engine
        .store_for_tests()
        .job_by_key(&format!("task:{}:v{}:0", task.id, planning.version))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.kind, "task.run_agent");
    assert_eq!(run.state, JobState::Pending, "no handler yet: it waits");

    let questions = vec![Question {
        id: "q1".into(),
        header: "Scope".into(),
        question: "Which pages?".into(),
        options: vec![
            QuestionOption {
                label: "All".into(),
                description: "every page".into(),
            },
            QuestionOption {
                label: "Settings".into(),
                description: "just settings".into(),
            },
        ],
        multi_select: true,
    }];
    let waiting = engine
        .apply_task_event(Some(user), task.id, TaskEvent::QuestionsAsked(questions))
        .await
        .unwrap();
    assert_eq!(waiting.state, TaskState::WaitingAnswers);
    let inbox = engine.inbox(user, 10, 0).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].kind, InboxKind::Question);
    assert!(inbox[0].body.contains("Settings: just settings"));
    // The item's notification was enqueued with it, keyed by the item.
    let notify = engine
        .store_for_tests()
        .job_by_key(&format!("notify:{}", inbox[0].id))
        .await
        .unwrap()
        .expect("a notify job for the new item");
    assert_eq!(
        notify.kind,
        <mainloop_engine::Notification as BackgroundJob>::KIND
    );
    assert_eq!(notify.user_id, Some(user));
    let n: mainloop_engine::Notification = serde_json::from_value(notify.payload).unwrap();
    assert_eq!(n.kind, mainloop_engine::NotificationKind::Question);
    assert_eq!(n.task_id, Some(task.id));
    assert_eq!(n.title, inbox[0].title);

    // Bad answers and wrong-state actions change nothing.
    let latest = engine.store_for_tests().latest_event_id().await.unwrap();
    let bad = [("q1".to_owned(), Answer::Choices(vec!["Nope".into()]))]
        .into_iter()
        .collect();
    assert!(matches!(
        engine.answer_questions(user, task.id, bad).await,
        Err(EngineError::Answers(_))
    ));
    assert!(matches!(
        engine.plan_action(user, task.id, PlanAction::Approve).await,
        Err(EngineError::WrongState(_))
    ));
    let other = engine.create_user("mallory", false).await.unwrap().0;
    let good: mainloop_domain::question::Answers = [(
        "q1".to_owned(),
        Answer::Choices(vec!["All".into(), "Settings".into()]),
    )]
    .into_iter()
    .collect();
    assert!(matches!(
        engine
            .answer_questions(other.id, task.id, good.clone())
            .await,
        Err(EngineError::NotFound(_))
    ));
    assert_eq!(
        engine.store_for_tests().latest_event_id().await.unwrap(),
        latest
    );
    assert_eq!(
        engine.task(user, task.id).await.unwrap().version,
        waiting.version
    );

    let answered = engine
        .answer_questions(user, task.id, good.clone())
        .await
        .unwrap();
    assert_eq!(answered.state, TaskState::Planning);
    assert_eq!(answered.answers, Some(good));
    assert!(
        engine.inbox(user, 10, 0).await.unwrap().is_empty(),
        "question resolved"
    );

    // A plan review needs real feedback for a revision; the state is checked first.
    let review = engine
        .apply_task_event(None, task.id, TaskEvent::PlanProposed("# Plan".into()))
        .await
        .unwrap();
    assert_eq!(review.state, TaskState::WaitingPlanReview);
    for feedback in [Some("  ".to_owned()), None] {
        assert!(matches!(
            engine
                .plan_action(user, task.id, PlanAction::Revise(feedback))
                .await,
            Err(EngineError::Invalid(_))
        ));
    }
    assert_eq!(
        engine.task(user, task.id).await.unwrap().version,
        review.version
    );
    let failed = engine
        .apply_task_event(
            None,
            task.id,
            TaskEvent::AgentFailed("agent crashed".into()),
        )
        .await
        .unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.error.as_deref(), Some("agent crashed"));
    let inbox = engine.inbox(user, 10, 0).await.unwrap();
    assert_eq!(inbox[0].kind, InboxKind::Failed);
    let retried = engine
        .apply_task_event(Some(user), task.id, TaskEvent::RetryRequested(None))
        .await
        .unwrap();
    assert_eq!(retried.state, TaskState::Planning);
    assert_eq!(retried.error, None);
    let cancelled = engine
        .apply_task_event(Some(user), task.id, TaskEvent::CancelRequested)
        .await
        .unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);

    // Every step is visible on the user's stream, and only on theirs.
    let events: Vec<_> = engine
        .subscribe(user, EventId(0))
        .take_while(|_| async { true })
        .take(5)
        .collect()
        .await;
    assert!(events.iter().all(|e| e.as_ref().unwrap().user_id == user));
    let theirs = engine
        .store_for_tests()
        .events_after(other.id, EventId(0), 100)
        .await
        .unwrap();
    assert!(theirs.is_empty());
    let (thread, _) = engine.chat_messages(user, None, 100, false).await.unwrap();
    let updates: Vec<_> = thread
        .iter()
        .filter(|m| m.role == Role::Event)
        .map(|m| m.text.clone())
        .collect();
    assert!(
        updates.iter().any(|t| t.contains("question")),
        "{updates:?}"
    );
    assert!(
        updates.iter().any(|t| t.contains("failed: agent crashed")),
        "{updates:?}"
    );
    assert!(
        updates.iter().any(|t| t.contains("cancelled")),
        "{updates:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_chat_explains_how_to_configure_one() {
    let h = sqlite_harness(None, fast_config()).await;
    let msg = h.engine.post_chat(h.user, "hello?").await.unwrap();
    let reply = reply_to(&h.engine, h.user, &msg).await;
    assert!(reply.text.contains("ANTHROPIC_API_KEY"), "{}", reply.text);
    assert!(matches!(
        h.engine.post_chat(h.user, "   ").await,
        Err(EngineError::Invalid(_))
    ));
    let huge = "x".repeat(h.engine.config().max_chat_chars + 1);
    assert!(matches!(
        h.engine.post_chat(h.user, &huge).await,
        Err(EngineError::Invalid(_))
    ));
    assert_eq!(
        h.engine
            .store_for_tests()
            .count_messages(h.user)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_model_is_retried_and_the_user_is_told() {
    let script = r#"
rules:
  - {match: {times: 1}, status: 529}
  - {reply: [{text: "Back again."}]}
"#;
    let fake = FakeAnthropic::start(Script::from_yaml(script).unwrap())
        .await
        .unwrap();
    let h = sqlite_harness(Some(&fake), fast_config()).await;
    let mut events = h.engine.subscribe(h.user, EventId(0));
    let msg = h.engine.post_chat(h.user, "hi").await.unwrap();
    let reply = reply_to(&h.engine, h.user, &msg).await;
    assert_eq!(reply.text, "Back again.");
    let mut saw_error = false;
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(Duration::from_millis(500), events.next()).await
    {
        if e.name == EventName::ChatError {
            assert_eq!(e.payload["retrying"], json!(true));
            saw_error = true;
        }
    }
    assert!(saw_error);
    let turn = h
        .engine
        .store_for_tests()
        .turn_messages(h.user, msg.id)
        .await
        .unwrap();
    assert_eq!(turn.len(), 1, "exactly one reply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_turn_never_repeats_a_tool_call_or_an_answer() {
    let fake = FakeAnthropic::start(Script::from_yaml(CHAT_SCRIPT).unwrap())
        .await
        .unwrap();
    let h = sqlite_harness(Some(&fake), fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let msg = crashed_tool_turn(
        engine,
        user,
        "yes, go",
        "spawn_task",
        json!({"description": "d", "repo": "/r"}),
    )
    .await;

    let reply = reply_to(engine, user, &msg).await;
    assert_eq!(reply.text, "Done: the worker is queued.");
    eventually("both jobs done", || async {
        (engine
            .store_for_tests()
            .count_jobs(JobState::Done)
            .await
            .unwrap()
            == 2)
            .then_some(())
    })
    .await;
    assert_eq!(
        engine.tasks(user, &[], 10).await.unwrap().len(),
        1,
        "spawned once"
    );
    assert_eq!(
        engine
            .store_for_tests()
            .turn_messages(user, msg.id)
            .await
            .unwrap()
            .len(),
        3,
        "answered once"
    );
    assert_eq!(
        fake.message_requests().len(),
        1,
        "the replay did not call the model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_threads_fold_into_a_summary_once() {
    let fake = FakeAnthropic::start(Script::from_yaml(CHAT_SCRIPT).unwrap())
        .await
        .unwrap();
    let config = EngineConfig {
        context_budget_tokens: 400,
        ..fast_config()
    };
    let h = sqlite_harness(Some(&fake), config).await;
    let (engine, user) = (&h.engine, h.user);
    let padding = "lorem ipsum dolor sit amet ".repeat(12);
    for i in 0..8 {
        let m = engine
            .post_chat(user, &format!("status? {i} {padding}"))
            .await
            .unwrap();
        reply_to(engine, user, &m).await;
    }
    let summary = engine
        .store_for_tests()
        .latest_summary(user)
        .await
        .unwrap()
        .expect("a summary");
    assert!(summary.text.starts_with("SUMMARY:"));
    let (all, _) = engine.chat_messages(user, None, 100, true).await.unwrap();
    assert_eq!(all.len(), 16, "every message stays stored");
    let folded = all.iter().filter(|m| m.summary_id.is_some()).count();
    assert!(folded > 0 && folded < 16, "{folded}");
    let last = fake.message_requests().last().unwrap().body.clone();
    let sent = last["messages"].to_string();
    assert!(sent.contains("<conversation_summary>"), "{sent}");
    assert!(
        !sent.contains("status? 0 "),
        "the oldest message was folded away: {sent}"
    );
    // Folded messages are summarised exactly once: summaries only ever grow.
    let summaries: Vec<_> = fake
        .message_requests()
        .into_iter()
        .filter(|r| r.rule_name.as_deref() == Some("summarise"))
        .collect();
    assert!(!summaries.is_empty());
}

/// The job kinds of these tests: no payload, enqueued by hand under the keys the tests name.
macro_rules! test_jobs {
    ($($name:ident = $kind:literal in $pool:expr;)*) => {$(
        #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
        struct $name {}

        impl BackgroundJob for $name {
            const KIND: &'static str = $kind;
            const POOL: Pool = $pool;
            fn key(&self) -> String {
                $kind.to_owned()
            }
        }
    )*};
}

test_jobs! {
    FlakyJob = "test.flaky" in Pool::Default;
    BrokenJob = "test.broken" in Pool::Default;
    BlockJob = "test.block" in Pool::Agents;
    RefusedJob = "test.refused" in Pool::Default;
    PanickyJob = "test.panicky" in Pool::Effects;
    AfterJob = "test.after" in Pool::Effects;
}

/// Enqueues test jobs (`(key, kind)`, no payload) and wakes the dispatcher.
async fn enqueue_test_jobs(engine: &Engine, jobs: &[(&str, &str)], lane: Option<&str>) {
    let now = mainloop_engine::now();
    let mut tx = engine.store_for_tests().begin().await.unwrap();
    for (key, kind) in jobs {
        let job = NewJob {
            key: (*key).to_owned(),
            kind: (*kind).to_owned(),
            user_id: None,
            lane: lane.map(str::to_owned),
            payload: json!({}),
            run_after: now,
        };
        tx.enqueue(&job, now).await.unwrap();
    }
    tx.commit().await.unwrap();
    engine.wake_dispatcher();
}

#[derive(Debug)]
struct Flaky {
    calls: Arc<AtomicU32>,
    fail_first: u32,
    fatal: bool,
}

impl<J: BackgroundJob> Handler<J> for Flaky {
    fn run(
        &self,
        _job: J,
        _ctx: JobContext,
    ) -> futures::future::BoxFuture<'static, Result<(), JobError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let (fail_first, fatal) = (self.fail_first, self.fatal);
        Box::pin(async move {
            if fatal {
                Err(JobError::fatal("broken for good"))
            } else if n < fail_first {
                Err(JobError::retry("transient"))
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_retries_with_backoff_and_stops_on_fatal_errors() {
    let h = sqlite_harness(None, fast_config()).await;
    let engine = &h.engine;
    let flaky = Arc::new(AtomicU32::new(0));
    let broken = Arc::new(AtomicU32::new(0));
    engine.register::<FlakyJob>(Arc::new(Flaky {
        calls: flaky.clone(),
        fail_first: 2,
        fatal: false,
    }));
    engine.register::<BrokenJob>(Arc::new(Flaky {
        calls: broken.clone(),
        fail_first: 0,
        fatal: true,
    }));
    enqueue_test_jobs(engine, &[("a", "test.flaky"), ("b", "test.broken")], None).await;
    eventually("flaky job done", || async {
        (engine
            .store_for_tests()
            .job_by_key("a")
            .await
            .unwrap()
            .unwrap()
            .state
            == JobState::Done)
            .then_some(())
    })
    .await;
    let a = engine
        .store_for_tests()
        .job_by_key("a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.attempts, 3);
    assert_eq!(flaky.load(Ordering::SeqCst), 3);
    let b = engine
        .store_for_tests()
        .job_by_key("b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.state, JobState::Failed);
    assert_eq!(b.last_error.as_deref(), Some("broken for good"));
    assert_eq!(broken.load(Ordering::SeqCst), 1);
}

#[derive(Debug)]
struct Blocker;

impl<J: BackgroundJob> Handler<J> for Blocker {
    fn run(
        &self,
        _job: J,
        _ctx: JobContext,
    ) -> futures::future::BoxFuture<'static, Result<(), JobError>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_jobs_in_their_own_pool_never_starve_chat() {
    let world = EngineWorld::new(
        Database::sqlite(),
        None,
        EngineConfig {
            dispatcher_concurrency: 1,
            ..fast_config()
        },
    )
    .await;
    let engine = world.engine.clone();
    engine.set_pool_size(Pool::Agents, 2);
    engine.register::<BlockJob>(Arc::new(Blocker));
    world.start().await;
    let (shutdown, owner) = (world.shutdown.clone(), world.owner.clone());
    enqueue_test_jobs(
        &engine,
        &[
            ("b0", "test.block"),
            ("b1", "test.block"),
            ("b2", "test.block"),
        ],
        None,
    )
    .await;
    eventually("two blockers running", || async {
        (engine
            .store_for_tests()
            .count_jobs(JobState::Running)
            .await
            .unwrap()
            == 2)
            .then_some(())
    })
    .await;
    // The default pool still answers chat while the agents pool is saturated.
    let msg = engine.post_chat(owner.id, "anyone there?").await.unwrap();
    reply_to(&engine, owner.id, &msg).await;
    assert_eq!(
        engine
            .store_for_tests()
            .count_jobs(JobState::Running)
            .await
            .unwrap(),
        2,
        "the third waits for the pool"
    );

    // Agent output lands in the transcript and on the stream.
    let task = engine
        .create_task(
            owner.id,
            &CreateTask {
                description: "d".into(),
                repo: "/r".into(),
                skip_plan: true,
                model: None,
                agent: None,
                budget_usd: None,
            },
        )
        .await
        .unwrap();
    let mut events = engine.subscribe(
        owner.id,
        engine.store_for_tests().latest_event_id().await.unwrap(),
    );
    let seq = engine
        .record_transcript(owner.id, task.id, &[TranscriptEntry::text_entry("hello")])
        .await
        .unwrap();
    assert_eq!(seq, 1);
    let e = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.name, EventName::TaskOutput);
    assert_eq!(e.payload["payload"]["text"], "hello");
    let page = engine
        .task_transcript(owner.id, task.id, 0, 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert!(matches!(
        engine.task_diff(owner.id, task.id).await,
        Err(EngineError::Invalid(_))
    ));
    shutdown.cancel();
}

/// Finishes its job after making the database refuse writes, so the dispatcher cannot
/// record the outcome at first.
#[derive(Debug)]
struct RefusesAfterwards {
    cluster: Arc<mainloop_testpg::OwnCluster>,
    url: String,
    calls: Arc<AtomicU32>,
}

impl<J: BackgroundJob> Handler<J> for RefusesAfterwards {
    fn run(
        &self,
        _job: J,
        _ctx: JobContext,
    ) -> futures::future::BoxFuture<'static, Result<(), JobError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (cluster, url) = (self.cluster.clone(), self.url.clone());
        Box::pin(async move {
            cluster.refuse_writes(&url).await.unwrap();
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outcome_the_database_refused_is_recorded_once_writes_return() {
    let cluster = Arc::new(mainloop_testpg::OwnCluster::start().await.unwrap());
    let url = cluster.fresh_database_url().await.unwrap();
    let lease = Duration::from_secs(30);
    let (engine, shutdown) = start(
        &url,
        None,
        EngineConfig {
            lease,
            reclaim_all_at_start: false,
            ..fast_config()
        },
    )
    .await;
    let _stop = Harness {
        engine: engine.clone(),
        user: engine.ensure_owner("owner").await.unwrap().0.id,
        shutdown,
        url: url.clone(),
        _world: None,
    };
    let calls = Arc::new(AtomicU32::new(0));
    engine.register::<RefusedJob>(Arc::new(RefusesAfterwards {
        cluster: cluster.clone(),
        url: url.clone(),
        calls: calls.clone(),
    }));
    enqueue_test_jobs(&engine, &[("refused", "test.refused")], None).await;

    eventually("the handler ran", || async {
        (calls.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    // The outcome cannot be written for a while.
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.allow_writes(&url).await.unwrap();
    let started = tokio::time::Instant::now();
    eventually("the job recorded as done", || async {
        let job = engine
            .store_for_tests()
            .job_by_key("refused")
            .await
            .ok()??;
        (job.state == JobState::Done).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < lease / 3,
        "recorded {:?} after writes returned: it waited for the lease instead",
        started.elapsed()
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the finished job did not run again"
    );
}

#[derive(Debug)]
struct Panicky {
    calls: Arc<AtomicU32>,
}

impl<J: BackgroundJob> Handler<J> for Panicky {
    #[allow(clippy::panic)]
    fn run(
        &self,
        _job: J,
        _ctx: JobContext,
    ) -> futures::future::BoxFuture<'static, Result<(), JobError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::task::yield_now().await;
            if n == 0 {
                panic!("a bug in a handler");
            }
            Ok(())
        })
    }
}

/// Of a pool's idle workers only one polls; the others wait to be woken. Jobs another
/// process enqueued (no wake-up here) are found by that poller, and each worker that
/// claims one hands the turn on, so a burst of them all starts, as does a burst this
/// process enqueues with a single wake-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_jobs_no_one_announced_all_start_on_a_pool_of_many_workers() {
    let world = EngineWorld::new(Database::sqlite(), None, fast_config()).await;
    let engine = world.engine.clone();
    engine.set_pool_size(Pool::Agents, 40);
    engine.register::<BlockJob>(Arc::new(Blocker));
    world.start().await;
    let running = async |n: i64| {
        eventually(&format!("{n} jobs running"), || async {
            (engine
                .store_for_tests()
                .count_jobs(JobState::Running)
                .await
                .unwrap()
                == n)
                .then_some(())
        })
        .await;
    };
    let now = mainloop_engine::now();
    let mut tx = engine.store_for_tests().begin().await.unwrap();
    for i in 0..25 {
        let job = NewJob {
            key: format!("quiet-{i}"),
            kind: "test.block".to_owned(),
            user_id: None,
            lane: None,
            payload: json!({}),
            run_after: now,
        };
        tx.enqueue(&job, now).await.unwrap();
    }
    tx.commit().await.unwrap();
    running(25).await;
    let keys: Vec<String> = (0..10).map(|i| format!("loud-{i}")).collect();
    let jobs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "test.block")).collect();
    enqueue_test_jobs(&engine, &jobs, None).await;
    running(35).await;
    world.shutdown.cancel();
}

/// A job whose handler panics is retried like any failed attempt, and the dispatcher
/// worker that ran it (the only one of its pool) goes on serving the jobs after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_is_retried_and_its_worker_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/panic.db", dir.path().display());
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let engine = Engine::new(store, None, fast_config());
    let calls = Arc::new(AtomicU32::new(0));
    let later = Arc::new(AtomicU32::new(0));
    engine.set_pool_size(Pool::Effects, 1);
    engine.register::<PanickyJob>(Arc::new(Panicky {
        calls: calls.clone(),
    }));
    engine.register::<AfterJob>(Arc::new(Flaky {
        calls: later.clone(),
        fail_first: 0,
        fatal: false,
    }));
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    engine.start(shutdown.clone()).await.unwrap();
    enqueue_test_jobs(
        &engine,
        &[("p", "test.panicky"), ("q", "test.after")],
        Some("one-at-a-time"),
    )
    .await;
    let engine = &engine;
    eventually(
        "the panicking job and the one after it done",
        || async move {
            let p = engine
                .store_for_tests()
                .job_by_key("p")
                .await
                .unwrap()
                .unwrap();
            let q = engine
                .store_for_tests()
                .job_by_key("q")
                .await
                .unwrap()
                .unwrap();
            (p.state == JobState::Done && q.state == JobState::Done).then_some(())
        },
    )
    .await;
    let p = engine
        .store_for_tests()
        .job_by_key("p")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.attempts, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(later.load(Ordering::SeqCst), 1);
}

// After `both_backends!`, which it uses.
#[path = "it/digests.rs"]
mod digests;
#[path = "it/notes.rs"]
mod notes;
#[path = "it/search.rs"]
mod search;
#[path = "it/spending.rs"]
mod spending;

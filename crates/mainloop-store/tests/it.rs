//! Every storage function, run against SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mainloop_domain::chat::{ContentBlock, Role};
use mainloop_domain::event::EventName;
use mainloop_domain::inbox::InboxKind;
use mainloop_domain::records::MessageKind;
use mainloop_domain::task::{TaskEvent, TaskState, transition};
use mainloop_domain::{EventId, MessageId, Timestamp, UserId};
use mainloop_store::{
    JobState, NewJob, NewMessage, NewPushSubscription, NewTask, NotificationSettings, Store,
    StoreError, StoreOptions, TokenKind, VapidKeys,
};
use serde_json::json;

const T0: i64 = 1_700_000_000_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/test.db", dir.path().display());
    (
        Store::connect(&url, &StoreOptions::default())
            .await
            .unwrap(),
        dir,
    )
}

async fn pg_store() -> (Store, ()) {
    let url = mainloop_testpg::fresh_database_url().await.unwrap();
    (
        Store::connect(&url, &StoreOptions::default())
            .await
            .unwrap(),
        (),
    )
}

/// Runs each named migration test once per backend: `name(url, migrations dir)` on a
/// fresh, empty database.
macro_rules! migration_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}/test.db?mode=rwc", dir.path().display());
                    super::$name(&url, "./migrations/sqlite").await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let url = mainloop_testpg::fresh_database_url().await.unwrap();
                    super::$name(&url, "./migrations/postgres").await;
                }
            }
        )*
    };
}

/// The database at `url` with the migrations in `dir` before `version` applied, as an
/// older mainloop left it.
async fn migrated_before(url: &str, dir: &str, version: i64) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new(dir))
        .await
        .unwrap();
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&pool).await.unwrap();
    pool
}

/// Runs each named test once per backend.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let (store, _dir) = super::sqlite_store().await;
                    super::$name(store).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let (store, _guard) = super::pg_store().await;
                    super::$name(store).await;
                }
            }
        )*
    };
}

both_backends!(
    task_forge_records_round_trip_and_are_found_by_number,
    task_final_diffs_are_kept_and_replaced,
    users_and_tokens,
    events_are_ordered_per_user_and_notify_after_commit,
    rollback_writes_nothing,
    jobs_are_keyed_leased_retried_and_laned,
    concurrent_claims_take_each_job_once,
    concurrent_event_appends_stay_strictly_increasing,
    projects_and_tasks,
    inbox_order_resolution_and_isolation,
    messages_thread_order_paging_and_summary,
    tool_calls_are_recorded_once,
    main_sessions_and_turn_usage,
    migrations_are_idempotent,
    vapid_keys_are_made_once,
    push_subscriptions_upsert_by_endpoint_and_are_scoped_by_user,
    notification_settings_default_set_and_clear,
);

async fn user(store: &Store, name: &str) -> UserId {
    let mut tx = store.begin().await.unwrap();
    let u = tx.create_user(name, false, at(0)).await.unwrap();
    tx.commit().await.unwrap();
    u.id
}

async fn users_and_tokens(store: Store) {
    assert!(store.owner().await.unwrap().is_none());
    let mut tx = store.begin().await.unwrap();
    let owner = tx.create_user("ada", true, at(0)).await.unwrap();
    let bob = tx.create_user("bob", false, at(1)).await.unwrap();
    tx.insert_token("h-api", owner.id, TokenKind::Api, None, at(0))
        .await
        .unwrap();
    tx.insert_token("h-sess", bob.id, TokenKind::Session, Some(at(100)), at(0))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let dup = tx.create_user("ada", false, at(2)).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    drop(tx);

    assert_eq!(store.owner().await.unwrap().unwrap(), owner);
    assert_eq!(
        store.users().await.unwrap(),
        vec![owner.clone(), bob.clone()]
    );
    assert_eq!(store.user_by_name("bob").await.unwrap().unwrap().id, bob.id);
    assert_eq!(store.user(bob.id).await.unwrap().unwrap().name, "bob");
    assert!(store.user_by_name("eve").await.unwrap().is_none());

    let found = store
        .user_for_token("h-api", TokenKind::Api, at(5))
        .await
        .unwrap();
    assert_eq!(found.unwrap().id, owner.id);
    // Wrong kind, unknown hash and expiry all fail closed.
    assert!(
        store
            .user_for_token("h-api", TokenKind::Session, at(5))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .user_for_token("nope", TokenKind::Api, at(5))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .user_for_token("h-sess", TokenKind::Session, at(99))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .user_for_token("h-sess", TokenKind::Session, at(100))
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(store.purge_expired_tokens(at(200)).await.unwrap(), 1);
    assert!(store.delete_token("h-api").await.unwrap());
    assert!(!store.delete_token("h-api").await.unwrap());
    assert!(
        store
            .user_for_token("h-api", TokenKind::Api, at(5))
            .await
            .unwrap()
            .is_none()
    );
}

async fn events_are_ordered_per_user_and_notify_after_commit(store: Store) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let mut rx = store.subscribe_events();
    let before = *rx.borrow_and_update();

    let mut tx = store.begin().await.unwrap();
    let e1 = tx
        .append_event(a, EventName::ChatMessage, &json!({"n": 1}), at(1))
        .await
        .unwrap();
    let e2 = tx
        .append_event(b, EventName::TaskUpdated, &json!({"n": 2}), at(2))
        .await
        .unwrap();
    let e3 = tx
        .append_event(a, EventName::ChatDelta, &json!({"n": 3}), at(3))
        .await
        .unwrap();
    assert!(e1 < e2 && e2 < e3);
    assert!(!rx.has_changed().unwrap(), "no wake-up before commit");
    tx.commit().await.unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), e3);
    assert!(e1 > before);

    let mine = store.events_after(a, EventId(0), 100).await.unwrap();
    assert_eq!(mine.iter().map(|e| e.id).collect::<Vec<_>>(), vec![e1, e3]);
    assert_eq!(mine[0].payload, json!({"n": 1}));
    assert_eq!(mine[0].name, EventName::ChatMessage);
    assert_eq!(mine[0].user_id, a);
    assert_eq!(store.events_after(a, e1, 100).await.unwrap().len(), 1);
    assert_eq!(store.events_after(a, e1, 0).await.unwrap().len(), 0);
    assert_eq!(store.all_events_after(e1, 100).await.unwrap().len(), 2);
    assert_eq!(store.latest_event_id().await.unwrap(), e3);

    // Old deltas can be pruned; messages and other events stay.
    assert_eq!(store.prune_deltas(at(10)).await.unwrap(), 1);
    assert_eq!(
        store.events_after(a, EventId(0), 100).await.unwrap().len(),
        1
    );
    // Relaxed transactions (no flush at commit) share the one id sequence.
    let mut tx = store.begin_relaxed().await.unwrap();
    let relaxed = tx
        .append_event(a, EventName::ChatDelta, &json!({"r": 1}), at(3))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(relaxed > e3);
    assert_eq!(*rx.borrow_and_update(), relaxed);
    assert_eq!(store.prune_deltas(at(4)).await.unwrap(), 1);
    // Ids never go backwards, even after pruning.
    let mut tx = store.begin().await.unwrap();
    let e4 = tx
        .append_event(a, EventName::InboxUpdated, &json!({}), at(4))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(e4 > e3);
}

async fn rollback_writes_nothing(store: Store) {
    let a = user(&store, "a").await;
    let latest = store.latest_event_id().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.append_event(a, EventName::ChatMessage, &json!({}), at(1))
        .await
        .unwrap();
    tx.insert_message(a, &text_message(Role::User, "lost", None), at(1))
        .await
        .unwrap();
    tx.enqueue(&job("k-lost", None, 0), at(1)).await.unwrap();
    drop(tx);
    assert_eq!(store.latest_event_id().await.unwrap(), latest);
    assert_eq!(store.count_messages(a).await.unwrap(), 0);
    assert!(store.job_by_key("k-lost").await.unwrap().is_none());
}

fn job(key: &str, lane: Option<&str>, run_after: i64) -> NewJob {
    NewJob {
        key: key.into(),
        kind: "test".into(),
        user_id: None,
        lane: lane.map(str::to_owned),
        payload: json!({"key": key}),
        run_after: at(run_after),
    }
}

async fn jobs_are_keyed_leased_retried_and_laned(store: Store) {
    let kinds = ["test"];
    let mut tx = store.begin().await.unwrap();
    let id1 = tx
        .enqueue(&job("j1", Some("lane"), 0), at(0))
        .await
        .unwrap();
    assert!(id1.is_some());
    assert_eq!(
        tx.enqueue(&job("j1", Some("lane"), 0), at(0))
            .await
            .unwrap(),
        None,
        "same key"
    );
    tx.enqueue(&job("j2", Some("lane"), 0), at(0))
        .await
        .unwrap()
        .unwrap();
    tx.enqueue(&job("later", None, 1_000), at(0))
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.next_due(&kinds).await.unwrap(), Some(at(0)));
    assert_eq!(store.next_due(&["other"]).await.unwrap(), None);
    assert_eq!(store.next_due(&[]).await.unwrap(), None);
    assert_eq!(store.count_unfinished("test").await.unwrap(), 3);
    assert_eq!(store.count_unfinished("other").await.unwrap(), 0);

    // Other kinds are not claimed.
    assert!(
        store
            .claim_job(&["other"], "w", at(60), at(1))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .claim_job(&[], "w", at(60), at(1))
            .await
            .unwrap()
            .is_none()
    );

    let j1 = store
        .claim_job(&kinds, "w1", at(60), at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j1.key, "j1");
    assert_eq!(j1.state, JobState::Running);
    assert_eq!(j1.attempts, 1);
    assert_eq!(j1.payload, json!({"key": "j1"}));
    // j2 shares j1's lane and waits; "later" is not due.
    assert!(
        store
            .claim_job(&kinds, "w2", at(60), at(2))
            .await
            .unwrap()
            .is_none()
    );

    // A failed attempt with retry goes back to pending at the given time.
    assert!(
        store
            .fail_job(j1.id, "w1", "boom", Some(at(10)), at(3))
            .await
            .unwrap()
    );
    assert!(
        !store
            .fail_job(j1.id, "w1", "again", None, at(3))
            .await
            .unwrap(),
        "lease gone"
    );
    assert!(
        store
            .claim_job(&kinds, "w2", at(60), at(5))
            .await
            .unwrap()
            .is_none(),
        "lane blocked by j1 retry"
    );
    let again = store
        .claim_job(&kinds, "w2", at(60), at(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.key.as_str(), again.attempts), ("j1", 2));
    assert_eq!(again.last_error.as_deref(), Some("boom"));

    // The lease expires: another worker reclaims it; the old owner can no longer finish.
    let stolen = store
        .claim_job(&kinds, "w3", at(200), at(61))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stolen.key.as_str(), stolen.attempts), ("j1", 3));
    assert!(!store.complete_job(stolen.id, "w2", at(62)).await.unwrap());
    assert!(!store.extend_lease(stolen.id, "w2", at(300)).await.unwrap());
    assert!(store.extend_lease(stolen.id, "w3", at(300)).await.unwrap());
    let mut tx = store.begin().await.unwrap();
    assert!(tx.complete_job(stolen.id, "w3", at(63)).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(
        store.job_by_key("j1").await.unwrap().unwrap().state,
        JobState::Done
    );

    // Now j2 runs; a permanent failure ends it.
    let j2 = store
        .claim_job(&kinds, "w1", at(200), at(64))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j2.key, "j2");
    assert!(
        store
            .fail_job(j2.id, "w1", "fatal", None, at(65))
            .await
            .unwrap()
    );
    assert_eq!(
        store.job_by_key("j2").await.unwrap().unwrap().state,
        JobState::Failed
    );
    assert_eq!(store.count_jobs(JobState::Failed).await.unwrap(), 1);

    // Reclaiming after a crash.
    let later = store
        .claim_job(&kinds, "w1", at(5_000), at(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.reclaim_expired(at(1_001)).await.unwrap(), 0);
    assert_eq!(store.reclaim_expired(at(5_001)).await.unwrap(), 1);
    let later = store
        .claim_job(&kinds, "w1", at(9_000), at(5_002))
        .await
        .unwrap()
        .unwrap_or(later);
    assert_eq!(later.key, "later");
    assert_eq!(store.reclaim_all_running().await.unwrap(), 1);
    assert_eq!(
        store.job_by_key("later").await.unwrap().unwrap().state,
        JobState::Pending
    );
    assert_eq!(store.count_jobs(JobState::Pending).await.unwrap(), 1);
}

async fn concurrent_claims_take_each_job_once(store: Store) {
    let mut tx = store.begin().await.unwrap();
    for i in 0..40 {
        tx.enqueue(&job(&format!("c{i}"), None, 0), at(0))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let mut handles = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match store
                    .claim_job(&["test"], &format!("w{w}"), at(60_000), at(1))
                    .await
                {
                    Ok(Some(j)) => got.push(j.key),
                    Ok(None) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort();
    all.dedup();
    // Under PostgreSQL a claimer that loses a race sees nothing and stops early, so a
    // second sweep picks up any leftovers; what matters is that no job is taken twice.
    while let Some(j) = store
        .claim_job(&["test"], "sweep", at(60_000), at(1))
        .await
        .unwrap()
    {
        assert!(!all.contains(&j.key));
        all.push(j.key);
    }
    assert_eq!(all.len(), 40);
    assert_eq!(store.count_jobs(JobState::Running).await.unwrap(), 40);
}

async fn concurrent_event_appends_stay_strictly_increasing(store: Store) {
    let a = user(&store, "a").await;
    let mut handles = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..10 {
                let mut tx = store.begin().await.unwrap();
                tx.append_event(a, EventName::TaskOutput, &json!({"w": w, "i": i}), at(i))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    // A reader paging by cursor while writers run must see every event exactly once.
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = EventId(0);
            while seen.len() < 80 {
                for e in store.events_after(a, cursor, 7).await.unwrap() {
                    cursor = e.id;
                    seen.push(e.id);
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    for h in handles {
        h.await.unwrap();
    }
    let seen = reader.await.unwrap();
    assert_eq!(seen.len(), 80);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

fn new_task(desc: &str, origin: Option<&str>) -> NewTask {
    NewTask {
        description: desc.into(),
        repo: "/src/app".into(),
        workplace: mainloop_domain::records::Workplace::Local,
        skip_plan: false,
        max_check_rounds: 3,
        model: (desc == "second").then(|| "claude-opus-4-1".to_owned()),
        agent: mainloop_domain::agents::AgentName::parse(if desc == "second" {
            "codex"
        } else {
            "claude"
        })
        .unwrap(),
        origin_key: origin.map(str::to_owned),
        budget_usd: None,
    }
}

async fn projects_and_tasks(store: Store) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let mut tx = store.begin().await.unwrap();
    let p = tx.upsert_project(a, "/src/app", at(0)).await.unwrap();
    let p_again = tx.upsert_project(a, "/src/app", at(5)).await.unwrap();
    assert_eq!(p, p_again);
    assert_eq!(p.name, "app");
    let pb = tx.upsert_project(b, "/src/app", at(0)).await.unwrap();
    assert_ne!(p.id, pb.id, "projects are per user");
    let (t1, created) = tx
        .insert_task(a, p.id, &new_task("first", Some("toolu_1")), at(1))
        .await
        .unwrap();
    assert!(created);
    let (t1_again, created) = tx
        .insert_task(a, p.id, &new_task("dup", Some("toolu_1")), at(2))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(t1_again.id, t1.id);
    let (t2, _) = tx
        .insert_task(a, p.id, &new_task("second", None), at(3))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(t1.state, TaskState::Queued);
    assert_eq!(t1.model, None);
    assert_eq!(t2.model.as_deref(), Some("claude-opus-4-1"));
    assert_eq!((t1.agent.as_str(), t2.agent.as_str()), ("claude", "codex"));
    assert_eq!(t1.description, "first");
    assert_eq!(t1.cost_usd, 0.0);
    assert_eq!(store.projects(a).await.unwrap(), vec![p.clone()]);
    assert_eq!(store.project(a, p.id).await.unwrap().unwrap(), p);
    assert!(store.project(b, p.id).await.unwrap().is_none());

    // Save through the state machine; a stale save is refused.
    let step = transition(&t1.core, TaskEvent::SlotGranted).unwrap();
    let mut changed = t1.clone();
    changed.core = step.core;
    changed.state = changed.core.state;
    changed.plan = Some("# plan".into());
    // Runtime fields are not the transition's to write: a stale copy cannot undo them.
    changed.cost_usd = 99.0;
    let mut tx = store.begin().await.unwrap();
    tx.set_task_workspace(t1.id, "mainloop/x", "/wt/x", "main")
        .await
        .unwrap();
    tx.set_task_session(t1.id, "sess-1", Some("job-key"))
        .await
        .unwrap();
    tx.add_task_usage(t1.id, 0.125, 100, 20).await.unwrap();
    tx.add_task_usage(t1.id, 0.125, 1, 2).await.unwrap();
    tx.set_task_diffstat(t1.id, "1 file changed").await.unwrap();
    let saved = tx.save_task(&changed, at(10)).await.unwrap();
    assert_eq!(saved.version, t1.version + 1);
    let stale = tx.save_task(&changed, at(11)).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    tx.commit().await.unwrap();

    let got = store.task(a, t1.id).await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Planning);
    assert_eq!(got.plan.as_deref(), Some("# plan"));
    assert_eq!(got.cost_usd, 0.25);
    assert_eq!((got.input_tokens, got.output_tokens), (101, 22));
    assert_eq!(got.branch.as_deref(), Some("mainloop/x"));
    assert_eq!(got.worktree.as_deref(), Some("/wt/x"));
    assert_eq!(got.base_branch.as_deref(), Some("main"));
    assert_eq!(got.session_id.as_deref(), Some("sess-1"));
    assert_eq!(got.agent_input_key.as_deref(), Some("job-key"));
    assert_eq!(got.diffstat.as_deref(), Some("1 file changed"));
    assert_eq!(got.updated_at, at(10));
    let queued = store
        .tasks_in_states(&[TaskState::Queued], 10)
        .await
        .unwrap();
    assert_eq!(
        queued.iter().map(|(u, t)| (*u, t.id)).collect::<Vec<_>>(),
        vec![(a, t2.id)]
    );
    assert!(store.tasks_in_states(&[], 10).await.unwrap().is_empty());

    // The transcript numbers entries per task and pages by position.
    let mut tx = store.begin().await.unwrap();
    for i in 0..5 {
        let seq = tx
            .append_transcript(t1.id, "text", &json!({"i": i}), at(20 + i))
            .await
            .unwrap();
        assert_eq!(seq, i + 1);
    }
    assert_eq!(
        tx.append_transcript(t2.id, "text", &json!({}), at(30))
            .await
            .unwrap(),
        1
    );
    tx.commit().await.unwrap();
    let page = store.transcript(t1.id, 2, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(page[0].entry.payload(), json!({"i": 2}));
    assert_eq!(page[0].entry.kind(), "text");
    assert_eq!(store.transcript(t1.id, 5, 10).await.unwrap().len(), 0);
    assert_eq!(store.transcript(t2.id, 0, 10).await.unwrap().len(), 1);
    assert!(
        store.task(b, t1.id).await.unwrap().is_none(),
        "not b's task"
    );
    assert_eq!(store.task_any_user(t1.id).await.unwrap().unwrap().0, a);

    let all = store.tasks(a, &[], 10).await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![t2.id, t1.id]
    );
    let planning = store.tasks(a, &[TaskState::Planning], 10).await.unwrap();
    assert_eq!(planning.len(), 1);
    let some = store
        .tasks(a, &[TaskState::Planning, TaskState::Queued], 1)
        .await
        .unwrap();
    assert_eq!(some.len(), 1);
    assert!(store.tasks(b, &[], 10).await.unwrap().is_empty());
}

async fn inbox_order_resolution_and_isolation(store: Store) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let mut tx = store.begin().await.unwrap();
    let p = tx.upsert_project(a, "/r", at(0)).await.unwrap();
    let (t, _) = tx
        .insert_task(a, p.id, &new_task("t", None), at(0))
        .await
        .unwrap();
    let review = tx
        .open_inbox_item(a, Some(t.id), InboxKind::Review, "R", "diff", at(1))
        .await
        .unwrap();
    let failed = tx
        .open_inbox_item(a, None, InboxKind::Failed, "F", "x", at(0))
        .await
        .unwrap();
    let q_new = tx
        .open_inbox_item(a, Some(t.id), InboxKind::Question, "Q2", "?", at(5))
        .await
        .unwrap();
    let q_old = tx
        .open_inbox_item(a, None, InboxKind::Question, "Q1", "?", at(2))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let order: Vec<_> = store
        .inbox(a, 100, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    // The SQL order is the domain's rule, `inbox_order`.
    let mut by_rule = store.inbox(a, 100, 0).await.unwrap();
    by_rule.sort_by(|x, y| {
        mainloop_domain::inbox::inbox_order(
            (x.resolved_at.is_some(), x.priority, x.created_at),
            (y.resolved_at.is_some(), y.priority, y.created_at),
        )
    });
    assert_eq!(by_rule.iter().map(|i| i.id).collect::<Vec<_>>(), order);
    assert_eq!(order, vec![q_old.id, q_new.id, review.id, failed.id]);
    assert_eq!(store.count_needs_you(a, 1000).await.unwrap(), 3);
    assert_eq!(store.count_needs_you(a, 2).await.unwrap(), 2, "capped");
    assert!(store.inbox(b, 100, 10).await.unwrap().is_empty());
    assert_eq!(store.inbox(a, 2, 0).await.unwrap().len(), 2);

    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.set_inbox_read(b, review.id, true)
            .await
            .unwrap()
            .is_none(),
        "not b's"
    );
    let read = tx
        .set_inbox_read(a, review.id, true)
        .await
        .unwrap()
        .unwrap();
    assert!(read.read);
    let resolved = tx.resolve_task_inbox(t.id, at(9)).await.unwrap();
    assert_eq!(resolved.len(), 2);
    assert!(resolved.iter().all(|i| i.resolved_at == Some(at(9))));
    assert!(
        tx.resolve_task_inbox(t.id, at(10))
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit().await.unwrap();

    let open: Vec<_> = store.inbox(a, 100, 0).await.unwrap();
    assert!(
        open.iter().all(|i| i.task_id != Some(t.id)),
        "the task's items are resolved"
    );
    let items = store.inbox(a, 100, 10).await.unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items.iter().filter(|i| i.resolved_at.is_none()).count(), 2);
    assert!(
        items[2].resolved_at.is_some(),
        "resolved items come after open ones"
    );
    assert_eq!(store.count_needs_you(a, 1000).await.unwrap(), 1);
}

fn text_message(role: Role, text: &str, turn: Option<MessageId>) -> NewMessage {
    NewMessage {
        role,
        kind: MessageKind::Text,
        content: vec![ContentBlock::text(text)],
        turn_id: turn,
        task_id: None,
    }
}

async fn messages_thread_order_paging_and_summary(store: Store) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let mut tx = store.begin().await.unwrap();
    let m1 = tx
        .insert_message(a, &text_message(Role::User, "one", None), at(1))
        .await
        .unwrap();
    let m2 = tx
        .insert_message(a, &text_message(Role::User, "two", None), at(2))
        .await
        .unwrap();
    // m1's reply is stored after m2 but belongs right after m1.
    let exact = json!([
        {"type": "text", "text": "reply one", "citations": null},
        {"type": "tool_use", "id": "toolu_9", "name": "list_tasks", "input": {}}
    ]);
    let r1 = tx
        .insert_message(
            a,
            &NewMessage {
                role: Role::Assistant,
                kind: MessageKind::Text,
                content: serde_json::from_value(exact.clone()).unwrap(),
                turn_id: Some(m1.id),
                task_id: None,
            },
            at(3),
        )
        .await
        .unwrap();
    let tr = tx
        .insert_message(
            a,
            &NewMessage {
                role: Role::User,
                kind: MessageKind::ToolResult,
                content: vec![ContentBlock::tool_result("toolu_9", "[]", false)],
                turn_id: Some(m1.id),
                task_id: None,
            },
            at(4),
        )
        .await
        .unwrap();
    let ev = tx
        .insert_message(a, &text_message(Role::Event, "task done", None), at(5))
        .await
        .unwrap();
    tx.insert_message(b, &text_message(Role::User, "b's", None), at(5))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!((m1.seq, m2.seq, r1.seq, tr.seq, ev.seq), (1, 2, 3, 4, 5));
    assert_eq!(r1.thread_pos, m1.thread_pos);
    assert_eq!(r1.text, "reply one");
    assert_eq!(
        serde_json::to_value(&r1.content).unwrap(),
        exact,
        "stored exactly"
    );

    let (page, more) = store.messages_page(a, None, 10, false).await.unwrap();
    assert!(!more);
    assert_eq!(
        page.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![m1.id, r1.id, m2.id, ev.id]
    );
    let (page, _) = store.messages_page(a, None, 10, true).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![m1.id, r1.id, tr.id, m2.id, ev.id]
    );
    let (page, more) = store.messages_page(a, None, 2, false).await.unwrap();
    assert!(more);
    assert_eq!(
        page.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![m2.id, ev.id]
    );
    let (page, more) = store.messages_page(a, Some(m2.id), 2, false).await.unwrap();
    assert!(!more);
    assert_eq!(
        page.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![m1.id, r1.id]
    );
    assert!(matches!(
        store.messages_page(b, Some(m2.id), 2, false).await,
        Err(StoreError::NotFound(_))
    ));

    let turn = store.turn_messages(a, m1.id).await.unwrap();
    assert_eq!(
        turn.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![r1.id, tr.id]
    );
    let ctx = store.context_messages(a, m1.thread_pos).await.unwrap();
    assert_eq!(
        ctx.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![m1.id, r1.id, tr.id]
    );
    assert_eq!(
        store.message(a, ev.id).await.unwrap().unwrap().role,
        Role::Event
    );
    assert!(store.message(b, ev.id).await.unwrap().is_none());

    // Fold the first exchange; a second fold of the same message is refused.
    assert!(store.latest_summary(a).await.unwrap().is_none());
    let mut tx = store.begin().await.unwrap();
    let s = tx
        .insert_summary(a, "talked about one", &[m1.id, r1.id, tr.id], at(6))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.message_count, 3);
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        tx.insert_summary(a, "again", &[m1.id], at(7)).await,
        Err(StoreError::Conflict(_))
    ));
    drop(tx);
    assert_eq!(store.latest_summary(a).await.unwrap().unwrap(), s);
    let ctx = store.context_messages(a, i64::MAX).await.unwrap();
    assert_eq!(
        ctx.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![m2.id, ev.id]
    );
    // Folded messages stay stored and retrievable.
    assert_eq!(store.count_messages(a).await.unwrap(), 5);
    assert_eq!(
        store.message(a, m1.id).await.unwrap().unwrap().summary_id,
        Some(s.id)
    );
}

async fn tool_calls_are_recorded_once(store: Store) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let mut tx = store.begin().await.unwrap();
    assert!(tx.tool_call(a, "toolu_1").await.unwrap().is_none());
    tx.record_tool_call(a, "toolu_1", "spawn_task", "{\"ok\":1}", false, at(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.tool_call(a, "toolu_1").await.unwrap(),
        Some(("{\"ok\":1}".into(), false))
    );
    // Another user naming the same id reads nothing of the first user's.
    assert!(tx.tool_call(b, "toolu_1").await.unwrap().is_none());
    assert!(matches!(
        tx.record_tool_call(a, "toolu_1", "spawn_task", "x", true, at(2))
            .await,
        Err(StoreError::Conflict(_))
    ));
}

async fn migrations_are_idempotent(store: Store) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}

#[test]
fn unsupported_urls_are_refused() {
    use mainloop_store::Backend;
    assert_eq!(Backend::from_url("sqlite://x.db").unwrap(), Backend::Sqlite);
    assert_eq!(
        Backend::from_url("postgres://u@h/db").unwrap(),
        Backend::Postgres
    );
    assert_eq!(
        Backend::from_url("postgresql://u@h/db").unwrap(),
        Backend::Postgres
    );
    let err = Backend::from_url("mysql://root:secret@h/db").unwrap_err();
    assert!(!err.to_string().contains("secret"));
}

async fn vapid_keys_are_made_once(store: Store) {
    assert!(store.vapid_keys().await.unwrap().is_none());
    let first = VapidKeys {
        public_key: "pub-1".into(),
        private_key: "priv-1".into(),
    };
    let second = VapidKeys {
        public_key: "pub-2".into(),
        private_key: "priv-2".into(),
    };
    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_vapid_keys(&first, at(0)).await.unwrap());
    tx.commit().await.unwrap();
    // A second pair (another process racing) is refused; the first stays forever.
    let mut tx = store.begin().await.unwrap();
    assert!(!tx.insert_vapid_keys(&second, at(1)).await.unwrap());
    tx.commit().await.unwrap();
    let stored = store.vapid_keys().await.unwrap().unwrap();
    assert_eq!(stored, first);
    // The private half never shows in Debug output.
    let debug = format!("{stored:?}");
    assert!(
        debug.contains("pub-1") && !debug.contains("priv-1"),
        "{debug}"
    );
}

async fn push_subscriptions_upsert_by_endpoint_and_are_scoped_by_user(store: Store) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let sub = |endpoint: &str, key: &str| NewPushSubscription {
        endpoint: endpoint.into(),
        p256dh: key.into(),
        auth: "auth".into(),
        user_agent: Some("Firefox".into()),
    };
    let mut tx = store.begin().await.unwrap();
    let one = tx
        .upsert_push_subscription(a, &sub("https://push.example/1", "k1"), at(1))
        .await
        .unwrap();
    let two = tx
        .upsert_push_subscription(a, &sub("https://push.example/2", "k2"), at(2))
        .await
        .unwrap();
    let theirs = tx
        .upsert_push_subscription(b, &sub("https://push.example/3", "k3"), at(3))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(one.user_id, a);
    assert_eq!(one.p256dh, "k1");
    assert_eq!(one.created_at, at(1));
    assert_eq!(
        store.push_subscriptions(a).await.unwrap(),
        vec![one.clone(), two.clone()]
    );
    assert_eq!(
        store.push_subscriptions(b).await.unwrap(),
        vec![theirs.clone()]
    );

    // Re-registering an endpoint updates its keys in place: same id, same age.
    let mut tx = store.begin().await.unwrap();
    let again = tx
        .upsert_push_subscription(
            a,
            &NewPushSubscription {
                user_agent: None,
                ..sub("https://push.example/1", "k1-new")
            },
            at(9),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again.id, one.id);
    assert_eq!(again.created_at, at(1));
    assert_eq!(again.p256dh, "k1-new");
    assert_eq!(again.user_agent, None);
    assert_eq!(store.push_subscriptions(a).await.unwrap().len(), 2);

    // Deleting is scoped by user: another user's id is as unknown as a made-up one.
    assert!(!store.delete_push_subscription(a, theirs.id).await.unwrap());
    assert_eq!(store.push_subscriptions(b).await.unwrap().len(), 1);
    let mut tx = store.begin().await.unwrap();
    assert!(tx.delete_push_subscription(a, two.id).await.unwrap());
    assert!(!tx.delete_push_subscription(a, two.id).await.unwrap());
    tx.commit().await.unwrap();
    assert!(store.delete_push_subscription(a, one.id).await.unwrap());
    assert!(store.push_subscriptions(a).await.unwrap().is_empty());

    // The same browser signing in as another user moves the subscription.
    let mut tx = store.begin().await.unwrap();
    let moved = tx
        .upsert_push_subscription(a, &sub("https://push.example/3", "k3"), at(10))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(moved.id, theirs.id);
    assert!(store.push_subscriptions(b).await.unwrap().is_empty());
    assert_eq!(store.push_subscriptions(a).await.unwrap(), vec![moved]);
}

async fn notification_settings_default_set_and_clear(store: Store) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    assert_eq!(
        store.notification_settings(a).await.unwrap(),
        NotificationSettings::default()
    );
    let mut tx = store.begin().await.unwrap();
    tx.set_ntfy_url(a, Some("https://ntfy.sh/topic"), at(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store
            .notification_settings(a)
            .await
            .unwrap()
            .ntfy_url
            .as_deref(),
        Some("https://ntfy.sh/topic")
    );
    assert_eq!(store.notification_settings(b).await.unwrap().ntfy_url, None);
    let mut tx = store.begin().await.unwrap();
    tx.set_ntfy_url(a, Some("https://ntfy.sh/other"), at(2))
        .await
        .unwrap();
    tx.set_ntfy_url(a, None, at(3)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.notification_settings(a).await.unwrap().ntfy_url, None);
}

async fn task_forge_records_round_trip_and_are_found_by_number(store: Store) {
    use mainloop_store::TaskForge;
    let a = user(&store, "a").await;
    let mut tx = store.begin().await.unwrap();
    let p = tx.upsert_project(a, "octo/app", at(0)).await.unwrap();
    let (t1, _) = tx
        .insert_task(a, p.id, &new_task("one", None), at(1))
        .await
        .unwrap();
    let (t2, _) = tx
        .insert_task(a, p.id, &new_task("two", None), at(2))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.task_forge(t1.id).await.unwrap(), None);

    let mut f = TaskForge {
        task_id: t1.id,
        repo: "octo/app".into(),
        issue_number: Some(7),
        pr_number: None,
        data: serde_json::json!({"plan_comment": 41, "cursor": {"seen_id": 3}}),
        updated_at: at(3),
    };
    let mut tx = store.begin().await.unwrap();
    tx.put_task_forge(&f).await.unwrap();
    tx.put_task_forge(&TaskForge {
        task_id: t2.id,
        repo: "octo/other".into(),
        issue_number: Some(8),
        pr_number: Some(9),
        data: serde_json::json!({}),
        updated_at: at(3),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.task_forge(t1.id).await.unwrap(), Some(f.clone()));

    // The pull request arrives later; both numbers find the task, in its own repo only.
    f.pr_number = Some(12);
    f.data = serde_json::json!({"plan_comment": 41, "pr_node": "PR_x"});
    f.updated_at = at(4);
    let mut tx = store.begin().await.unwrap();
    tx.put_task_forge(&f).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.task_forge(t1.id).await.unwrap(), Some(f));
    assert_eq!(
        store.tasks_for_forge_number("octo/app", 7).await.unwrap(),
        vec![t1.id]
    );
    assert_eq!(
        store.tasks_for_forge_number("octo/app", 12).await.unwrap(),
        vec![t1.id]
    );
    assert_eq!(
        store.tasks_for_forge_number("octo/app", 9).await.unwrap(),
        vec![]
    );
    assert_eq!(
        store.tasks_for_forge_number("octo/other", 9).await.unwrap(),
        vec![t2.id]
    );

    // A task carries its forge links, with the addresses the mirror recorded.
    let mut tx = store.begin().await.unwrap();
    tx.put_task_forge(&TaskForge {
        task_id: t2.id,
        repo: "octo/other".into(),
        issue_number: Some(8),
        pr_number: Some(9),
        data: serde_json::json!({"issue_url": "https://github.com/octo/other/issues/8",
                                 "pr": {"url": "https://github.com/octo/other/pull/9"}}),
        updated_at: at(5),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let links = store.task(a, t2.id).await.unwrap().unwrap().forge.unwrap();
    assert_eq!(
        links,
        mainloop_domain::records::TaskForgeLinks {
            repo: "octo/other".into(),
            issue_number: Some(8),
            issue_url: Some("https://github.com/octo/other/issues/8".into()),
            pull_request_number: Some(9),
            pull_request_url: Some("https://github.com/octo/other/pull/9".into()),
        }
    );
    let listed = store.tasks(a, &[], 10).await.unwrap();
    let one = listed.iter().find(|t| t.id == t1.id).unwrap();
    let one = one.forge.as_ref().unwrap();
    assert_eq!(
        (one.issue_number, one.pull_request_number),
        (Some(7), Some(12))
    );
    assert_eq!(one.issue_url, None, "no address recorded");
}

async fn task_final_diffs_are_kept_and_replaced(store: Store) {
    use mainloop_domain::records::{FileStat, TaskDiff};
    let a = user(&store, "a").await;
    let mut tx = store.begin().await.unwrap();
    let p = tx.upsert_project(a, "/repo", at(0)).await.unwrap();
    let (t, _) = tx
        .insert_task(a, p.id, &new_task("one", None), at(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.task_final_diff(t.id).await.unwrap(), None);
    assert_eq!(store.task(a, t.id).await.unwrap().unwrap().forge, None);

    let mut d = TaskDiff {
        base: "main".into(),
        branch: "mainloop/one".into(),
        files: vec![FileStat {
            path: "a.txt".into(),
            added: 1,
            removed: 0,
        }],
        added: 1,
        removed: 0,
        text: "+a — ünïcode\n".into(),
    };
    let mut tx = store.begin().await.unwrap();
    tx.put_task_final_diff(t.id, &d, at(2)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.task_final_diff(t.id).await.unwrap(), Some(d.clone()));

    // A new review round replaces it.
    d.files.push(FileStat {
        path: "b.txt".into(),
        added: 2,
        removed: 1,
    });
    d.text.push_str("+b\n");
    let mut tx = store.begin().await.unwrap();
    tx.put_task_final_diff(t.id, &d, at(3)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.task_final_diff(t.id).await.unwrap(), Some(d));
}

/// PostgreSQL restarted under a live store: the pool's cut connections are replaced, the
/// next writes succeed, and nothing committed before is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_run_loses_nothing_and_reconnects() {
    let cluster = mainloop_testpg::OwnCluster::start().await.unwrap();
    let url = cluster.fresh_database_url().await.unwrap();
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let a = user(&store, "a").await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let mut tx = store.begin().await.unwrap();
        ids.push(
            tx.append_event(a, EventName::ChatMessage, &json!({"n": n}), at(n))
                .await
                .unwrap(),
        );
        tx.commit().await.unwrap();
    }

    cluster.restart().await.unwrap();

    // The first use after the restart may still meet a cut connection; the store must
    // be serving again within a few tries, with every earlier event intact.
    let mut failures = 0;
    let after = loop {
        let attempt = async {
            let mut tx = store.begin().await?;
            let id = tx
                .append_event(a, EventName::ChatMessage, &json!({"n": "after"}), at(100))
                .await?;
            tx.commit().await?;
            Ok::<_, mainloop_store::StoreError>(id)
        };
        match attempt.await {
            Ok(id) => break id,
            Err(e) => {
                failures += 1;
                assert!(failures < 10, "still failing after a restart: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    assert!(
        failures <= 1,
        "{failures} failed attempts after the restart"
    );
    let all = store.events_after(a, EventId(0), 100).await.unwrap();
    let mut expected = ids.clone();
    expected.push(after);
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), expected);
    assert!(
        after > *ids.last().unwrap(),
        "ids keep increasing across the restart"
    );
}

/// Appends one event in its own transaction.
async fn append(store: &Store, u: UserId, n: i64) -> Result<EventId, StoreError> {
    let mut tx = store.begin().await?;
    let id = tx
        .append_event(u, EventName::ChatMessage, &json!({"n": n}), at(n))
        .await?;
    tx.commit().await?;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_cut_mid_transaction_are_unavailable_not_errors() {
    let cluster = mainloop_testpg::OwnCluster::start().await.unwrap();
    let url = cluster.fresh_database_url().await.unwrap();
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let a = user(&store, "a").await;
    let before = append(&store, a, 1).await.unwrap();

    // An administrator (or a proxy) cuts the session while a transaction is open on it:
    // PostgreSQL answers the next statement with `57P01 terminating connection due to
    // administrator command`, which is a passing condition, not a bug in our SQL.
    let mut tx = store.begin().await.unwrap();
    assert!(cluster.terminate_sessions(&url).await.unwrap() >= 1);
    let cut = tx
        .append_event(a, EventName::ChatMessage, &json!({"n": 2}), at(2))
        .await
        .expect_err("the session is gone");
    assert!(cut.is_transient(), "{cut:?}");
    drop(tx);

    // Nothing half-written; the pool replaces the cut connection.
    let after = append(&store, a, 3).await.unwrap();
    let ids: Vec<EventId> = store
        .events_after(a, EventId(0), 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![before, after]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusing_writes_is_unavailable_reads_go_on_and_writes_resume() {
    let cluster = mainloop_testpg::OwnCluster::start().await.unwrap();
    let url = cluster.fresh_database_url().await.unwrap();
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let a = user(&store, "a").await;
    let first = append(&store, a, 1).await.unwrap();
    // Several pooled connections, so stale ones would still be around afterwards.
    let (x, y, z) = tokio::join!(
        append(&store, a, 2),
        append(&store, a, 3),
        append(&store, a, 4)
    );
    let written = [first, x.unwrap(), y.unwrap(), z.unwrap()];

    cluster.refuse_writes(&url).await.unwrap();
    let refused = append(&store, a, 5).await.expect_err("writes are refused");
    assert!(refused.is_transient(), "{refused:?}");
    assert!(refused.to_string().contains("refuses writes"), "{refused}");
    let read = store.events_after(a, EventId(0), 10).await.unwrap();
    assert_eq!(read.len(), written.len(), "reads go on");
    // Open more connections while refused: each starts with the read-only default.
    let (x, y) = tokio::join!(append(&store, a, 6), append(&store, a, 7));
    assert!(x.is_err() && y.is_err());

    // Writes are allowed again. Connections opened during the refusal keep their
    // read-only default; the store must not keep handing them out.
    cluster.allow_writes(&url).await.unwrap();
    let mut failures = 0;
    let resumed = loop {
        match append(&store, a, 8).await {
            Ok(id) => break id,
            Err(e) => {
                failures += 1;
                assert!(e.is_transient(), "{e:?}");
                assert!(failures < 5, "writes are still refused: {e}");
            }
        }
    };
    assert!(
        failures <= 1,
        "{failures} refusals after writes were allowed"
    );
    // And they stay allowed, on whichever pooled connection.
    for n in 9..15 {
        append(&store, a, n).await.unwrap();
    }
    let all = store.events_after(a, EventId(0), 100).await.unwrap();
    assert_eq!(
        all.len(),
        written.len() + 7,
        "nothing refused was half-written"
    );
    assert!(all.iter().any(|e| e.id == resumed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_process_is_unavailable_within_a_bound_and_writes_resume() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/locked.db", dir.path().display());
    let wait = std::time::Duration::from_millis(400);
    let store = Store::connect(
        &url,
        &StoreOptions {
            acquire_timeout: wait,
            busy_timeout: wait,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let a = user(&store, "a").await;
    append(&store, a, 1).await.unwrap();

    // Another connection to the file (a backup script's `BEGIN IMMEDIATE`, the sqlite3
    // shell) holds the write lock.
    let other = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let mut held = other.begin().await.unwrap();
    held.append_event(a, EventName::ChatMessage, &json!({"other": true}), at(2))
        .await
        .unwrap();

    // Ten writers at once are all refused as unavailable, within one lock wait plus one
    // busy timeout, not one busy timeout after another.
    let started = std::time::Instant::now();
    let writers: Vec<_> = (0..10)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { append(&store, a, 10 + n).await })
        })
        .collect();
    let mut writes = Vec::new();
    for w in writers {
        writes.push(w.await.unwrap());
    }
    let took = started.elapsed();
    for w in &writes {
        let e = w.as_ref().expect_err("the file is locked");
        assert!(e.is_transient(), "{e:?}");
    }
    assert!(took < wait * 4, "ten refused writes took {took:?}");
    // Reads go on (WAL).
    assert_eq!(
        store.events_after(a, EventId(0), 10).await.unwrap().len(),
        1
    );

    drop(held);
    append(&store, a, 3).await.unwrap();
    assert_eq!(
        store.events_after(a, EventId(0), 10).await.unwrap().len(),
        2
    );
}

async fn main_sessions_and_turn_usage(store: Store) {
    let a = user(&store, "a").await;
    assert!(
        store
            .main_session(a, "claude-code")
            .await
            .unwrap()
            .is_none()
    );
    let mut tx = store.begin().await.unwrap();
    tx.put_main_session(a, "claude-code", None, 4, at(1))
        .await
        .unwrap();
    tx.put_main_session(a, "claude-code", Some("s-1"), 9, at(2))
        .await
        .unwrap();
    // Never backwards, and a missing id keeps the known one.
    tx.put_main_session(a, "claude-code", None, 3, at(3))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let s = store.main_session(a, "claude-code").await.unwrap().unwrap();
    assert_eq!((s.session_id.as_deref(), s.delivered_pos), (Some("s-1"), 9));
    let turn = MessageId::new_v7(at(1));
    let row = |input, cost| mainloop_store::TurnUsageRow {
        provider: "claude-code".into(),
        model: "m".into(),
        input_tokens: input,
        output_tokens: 2,
        cost_usd: cost,
        ..Default::default()
    };
    let mut tx = store.begin().await.unwrap();
    tx.add_turn_usage(a, turn, &row(10, None), at(4))
        .await
        .unwrap();
    tx.add_turn_usage(a, turn, &row(5, Some(0.25)), at(5))
        .await
        .unwrap();
    assert_eq!(
        tx.turn_usage(turn).await.unwrap(),
        Some((15, 4, Some(0.25)))
    );
    tx.forget_main_session(a, "claude-code").await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        store
            .main_session(a, "claude-code")
            .await
            .unwrap()
            .is_none()
    );
    let totals = store.usage_totals(a).await.unwrap();
    assert_eq!((totals.turns, totals.input_tokens), (1, 15));
    assert!((totals.cost_usd - 0.25).abs() < 1e-9);
}

// After `both_backends!`, which it uses.
#[path = "it/digests.rs"]
mod digests;
#[path = "it/labels.rs"]
mod labels;
#[path = "it/leases.rs"]
mod leases;
#[path = "it/pool.rs"]
mod pool;
#[path = "it/runners.rs"]
mod runners;
#[path = "it/search.rs"]
mod search;

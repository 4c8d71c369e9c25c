//! Plan revisions, run against SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mainloop_domain::Timestamp;
use mainloop_domain::records::Workplace;
use mainloop_store::{NewTask, PlanRevision, Store, StoreOptions};

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + ms)
}

async fn revisions_are_numbered_once_each_with_their_feedback(store: Store) {
    let mut tx = store.begin().await.unwrap();
    let user = tx.create_user("a", false, at(0)).await.unwrap();
    let project = tx.upsert_project(user.id, "/src/app", at(0)).await.unwrap();
    let (task, _) = tx
        .insert_task(user.id, project.id, &new_task("plan it"), at(1))
        .await
        .unwrap();
    let (other, _) = tx
        .insert_task(user.id, project.id, &new_task("other"), at(1))
        .await
        .unwrap();
    // Feedback before any plan has nothing to attach to.
    tx.record_plan_feedback(task.id, "early").await.unwrap();
    assert_eq!(
        tx.record_plan_revision(task.id, "A", at(2)).await.unwrap(),
        1
    );
    // A replayed store of the same plan is the same revision.
    assert_eq!(
        tx.record_plan_revision(task.id, "A", at(3)).await.unwrap(),
        1
    );
    tx.record_plan_feedback(task.id, "more tests")
        .await
        .unwrap();
    assert_eq!(
        tx.record_plan_revision(task.id, "A\nB", at(4))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        tx.record_plan_revision(other.id, "X", at(5)).await.unwrap(),
        1
    );
    tx.commit().await.unwrap();

    let got = store.plan_revisions(task.id).await.unwrap();
    assert_eq!(
        got,
        [
            PlanRevision {
                revision: 1,
                plan: "A".into(),
                feedback: Some("more tests".into()),
                created_at: at(2),
            },
            PlanRevision {
                revision: 2,
                plan: "A\nB".into(),
                feedback: None,
                created_at: at(4),
            },
        ]
    );
    assert_eq!(store.plan_revisions(other.id).await.unwrap().len(), 1);

    // A rolled-back revision leaves nothing behind.
    let mut tx = store.begin().await.unwrap();
    tx.record_plan_revision(task.id, "C", at(6)).await.unwrap();
    drop(tx);
    assert_eq!(store.plan_revisions(task.id).await.unwrap().len(), 2);
}

fn new_task(description: &str) -> NewTask {
    NewTask {
        description: description.into(),
        repo: "/src/app".into(),
        workplace: Workplace::Local,
        skip_plan: false,
        max_check_rounds: 3,
        model: None,
        agent: mainloop_domain::agents::AgentName::default(),
        origin_key: None,
        budget_usd: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/test.db", dir.path().display());
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    revisions_are_numbered_once_each_with_their_feedback(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let url = mainloop_testpg::fresh_database_url().await.unwrap();
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    revisions_are_numbered_once_each_with_their_feedback(store).await;
}

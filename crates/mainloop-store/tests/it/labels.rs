//! Runner labels on SQLite and PostgreSQL: the labels a task requires round-trip with it
//! (and survive its saves), a task from before them requires none, and a project's
//! settings are replaced for its user only.
use std::collections::BTreeSet;

use mainloop_domain::task::{TaskCore, TaskEvent, transition};
use mainloop_domain::{ProjectId, TaskId, UserId};
use mainloop_store::{Store, StoreOptions};
use serde_json::json;

use super::{T0, at, migrated_before, new_task, pg_store, sqlite_store, user};

migration_backends!(labels_migration_leaves_older_tasks_requiring_none);

both_backends!(
    labels_a_task_requires_round_trip_and_survive_its_saves,
    labels_in_project_settings_are_replaced_per_user,
);

fn labels(ls: &[&str]) -> BTreeSet<String> {
    ls.iter().map(|l| (*l).to_owned()).collect()
}

async fn labels_a_task_requires_round_trip_and_survive_its_saves(store: Store) {
    let a = user(&store, "a").await;
    let mut tx = store.begin().await.unwrap();
    let p = tx.upsert_project(a, "/src/app", at(0)).await.unwrap();
    let gpu = labels(&["gpu", "linux-x64"]);
    let (t, created) = tx
        .insert_task_requiring(a, p.id, &new_task("first", Some("o1")), &gpu, at(1))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(t.runner_labels, gpu);
    // The same origin key finds the task as it was made, labels and all.
    let (again, created) = tx
        .insert_task_requiring(a, p.id, &new_task("dup", Some("o1")), &labels(&[]), at(2))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.runner_labels, gpu);
    let (plain, _) = tx
        .insert_task(a, p.id, &new_task("plain", None), at(3))
        .await
        .unwrap();
    assert!(plain.runner_labels.is_empty());
    tx.commit().await.unwrap();

    let got = store.task(a, t.id).await.unwrap().unwrap();
    assert_eq!(got.runner_labels, gpu);
    let listed = store.tasks(a, &[], 10).await.unwrap();
    let find = |id| listed.iter().find(|x| x.id == id).unwrap();
    assert_eq!(find(t.id).runner_labels, gpu);
    assert!(find(plain.id).runner_labels.is_empty());

    // A transition writes the lifecycle only: the labels stay as they were made.
    let step = transition(&got.core, TaskEvent::SlotGranted).unwrap();
    let mut changed = got.clone();
    changed.core = step.core;
    changed.state = changed.core.state;
    changed.runner_labels = labels(&["other"]);
    let mut tx = store.begin().await.unwrap();
    let saved = tx.save_task(&changed, at(4)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(saved.runner_labels, gpu);
}

async fn labels_in_project_settings_are_replaced_per_user(store: Store) {
    let a = user(&store, "a").await;
    let b = user(&store, "b").await;
    let mut tx = store.begin().await.unwrap();
    let p = tx.upsert_project(a, "/src/app", at(0)).await.unwrap();
    let settings = json!({"runner_labels": ["gpu"], "agent": "codex"});
    let set = tx.set_project_settings(a, p.id, &settings).await.unwrap();
    assert_eq!(set.unwrap().settings, settings);
    assert!(
        tx.set_project_settings(b, p.id, &json!({}))
            .await
            .unwrap()
            .is_none(),
        "another user's project is not found"
    );
    // The project as its next task finds it.
    let again = tx.upsert_project(a, "/src/app", at(1)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again.settings, settings);
    assert_eq!(
        store.project(a, p.id).await.unwrap().unwrap().settings,
        settings
    );
}

/// A task written before runner labels existed reads back requiring none.
async fn labels_migration_leaves_older_tasks_requiring_none(url: &str, dir: &str) {
    let pool = migrated_before(url, dir, 21).await;
    let (u, project, task) = (
        UserId::new_v7(at(0)),
        ProjectId::new_v7(at(0)),
        TaskId::new_v7(at(0)),
    );
    let core = serde_json::to_string(&TaskCore::new(false, 3)).unwrap();
    let statements: Vec<(String, Vec<String>)> = vec![
        (
            "INSERT INTO users (id, name, created_at) VALUES ($1, 'a', 0)".into(),
            vec![u.to_string()],
        ),
        (
            "INSERT INTO projects (id, user_id, repo, name, created_at) VALUES ($1, $2, '/r', 'r', 0)".into(),
            vec![project.to_string(), u.to_string()],
        ),
        (
            format!(
                "INSERT INTO tasks (id, user_id, project_id, state, core, description, repo, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'queued', $4, 'old work', '/r', {T0}, {T0})"
            ),
            vec![task.to_string(), u.to_string(), project.to_string(), core],
        ),
    ];
    for (sql, binds) in statements {
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        q.execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
    let got = store.task(u, task).await.unwrap().unwrap();
    assert!(got.runner_labels.is_empty());
    assert_eq!(got.description, "old work");
}

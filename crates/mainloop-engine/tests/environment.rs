#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Task environments over both databases: ports held by one task each, skipped when
//! something else listens, kept across preparations, freed on release; variables in
//! order; setup done recorded; and a task's own database made and dropped on the test
//! PostgreSQL server.

use mainloop_domain::TaskId;
use mainloop_domain::environment::EnvSpec;
use mainloop_engine::{Engine, EngineError, task_database_name};
use mainloop_test_support::{Database, EngineWorld};
use serde_json::json;
use std::ops::RangeInclusive;

async fn engine(database: Database) -> EngineWorld {
    EngineWorld::new(database, None, EngineWorld::fast_config()).await
}

fn spec(v: &serde_json::Value) -> EnvSpec {
    EnvSpec::from_value(v).unwrap()
}

/// A range of `n` ports nothing else in this test process uses: each backend's test
/// takes its own, since both run at once.
fn range(start: u16, n: u16) -> RangeInclusive<u16> {
    start..=start + n - 1
}

async fn ports_are_held_by_one_task_each_and_freed(engine: &Engine, base: u16) {
    let (a, b, c) = (
        TaskId::new_v7(mainloop_engine::now()),
        TaskId::new_v7(mainloop_engine::now()),
        TaskId::new_v7(mainloop_engine::now()),
    );
    // Something else listens on the range's second port: it is never handed out.
    let busy = std::net::TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let two = spec(&json!({"ports": 2, "env": {"APP": "x"}, "preview": "serve $PORT"}));
    let r = range(base, 6);

    let ea = engine
        .prepare_task_env(a, &two, r.clone(), None)
        .await
        .unwrap();
    let eb = engine
        .prepare_task_env(b, &two, r.clone(), None)
        .await
        .unwrap();
    assert_eq!(ea.ports, [base, base + 2]);
    assert_eq!(eb.ports, [base + 3, base + 4]);
    assert!(ea.ports.iter().all(|p| !eb.ports.contains(p)));
    let names: Vec<_> = ea.vars.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["APP", "PORT", "PORT_1"]);
    assert_eq!(ea.vars[1].1, base.to_string());
    assert_eq!(ea.preview.as_deref(), Some("serve $PORT"));
    assert!(!ea.setup_done);

    // Preparing again (a retried setup) keeps the task's ports.
    let again = engine
        .prepare_task_env(a, &two, r.clone(), None)
        .await
        .unwrap();
    assert_eq!(again.ports, ea.ports);

    // The range is exhausted: a clear error naming the setting, and nothing held.
    let e = engine
        .prepare_task_env(c, &two, r.clone(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EngineError::Invalid(m) if m.contains("workers.port_range")),
        "{e}"
    );

    // Setup done is recorded, and survives until release.
    engine.set_task_setup_done(a, true).await.unwrap();
    assert!(engine.task_env(a).await.unwrap().unwrap().setup_done);

    // Released, a's ports go to the next task.
    engine.release_task_env(a).await.unwrap();
    assert_eq!(engine.task_env(a).await.unwrap(), None);
    let ec = engine.prepare_task_env(c, &two, r, None).await.unwrap();
    assert_eq!(ec.ports, [base, base + 2]);
    drop(busy);

    // Nothing asked, nothing held.
    let none = engine
        .prepare_task_env(
            TaskId::new_v7(mainloop_engine::now()),
            &spec(&json!({"env": {"A": "1"}})),
            range(base, 6),
            None,
        )
        .await
        .unwrap();
    assert!(none.ports.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_sqlite() {
    let world = engine(Database::sqlite()).await;
    ports_are_held_by_one_task_each_and_freed(&world.engine, 29_100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_postgres() {
    let world = engine(Database::postgres().await).await;
    ports_are_held_by_one_task_each_and_freed(&world.engine, 29_200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_database_is_made_passed_and_dropped() {
    let world = engine(Database::sqlite()).await;
    let admin = mainloop_testpg::fresh_database_url().await.unwrap();
    let task = TaskId::new_v7(mainloop_engine::now());
    let name = task_database_name(task);
    let info = world
        .engine
        .create_task_database(task, &admin)
        .await
        .unwrap();
    assert_eq!(info.name.as_deref(), Some(name.as_str()));
    // Made again (a retry): kept, no error, a new password.
    let info = world
        .engine
        .create_task_database(task, &admin)
        .await
        .unwrap();
    // The URL it passes is the task's own role, which owns the database; never the admin.
    assert!(
        info.url.starts_with(&format!("postgres://{name}:")),
        "{}",
        info.url
    );
    let owned = format!(
        "SELECT count(*) FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba \
         WHERE d.datname = '{name}' AND r.rolname = '{name}'"
    );
    assert_eq!(mainloop_testpg::query_i64(&admin, &owned).await.unwrap(), 1);
    // The URL reaches the new database.
    assert_eq!(
        mainloop_testpg::query_i64(&info.url, "SELECT (41 + 1)::bigint")
            .await
            .unwrap(),
        42
    );
    let count = format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'");
    assert_eq!(mainloop_testpg::query_i64(&admin, &count).await.unwrap(), 1);

    let env = world
        .engine
        .prepare_task_env(
            task,
            &spec(&json!({"database": "postgres"})),
            range(29_300, 2),
            Some(info.clone()),
        )
        .await
        .unwrap();
    assert_eq!(env.vars, [("DATABASE_URL".to_owned(), info.url.clone())]);
    assert_eq!(
        world.engine.task_database(task).await.unwrap(),
        Some(name.clone())
    );

    world
        .engine
        .drop_task_database(&admin, &name)
        .await
        .unwrap();
    world.engine.release_task_env(task).await.unwrap();
    assert_eq!(mainloop_testpg::query_i64(&admin, &count).await.unwrap(), 0);
    let role = format!("SELECT count(*) FROM pg_roles WHERE rolname = '{name}'");
    assert_eq!(
        mainloop_testpg::query_i64(&admin, &role).await.unwrap(),
        0,
        "its role too"
    );
    // Dropped twice: fine.
    world
        .engine
        .drop_task_database(&admin, &name)
        .await
        .unwrap();

    // An unusable server is a clear error naming the setting.
    let e = world
        .engine
        .create_task_database(task, "mysql://h/db")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("workers.task_database_url"), "{e}");
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The persistent local cluster against the real binaries (as root here too): a task
//! database made on it through the engine, reached as the task's role, across a stop and
//! start, a take-over of a running server and a start after the server was killed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mainloop_domain::TaskId;
use mainloop_pgcluster::{LocalCluster, database_count};
use mainloop_test_support::{Database, EngineWorld};
use sqlx::{Connection, PgConnection};

async fn start(dir: &Path) -> LocalCluster {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || LocalCluster::start(&dir))
        .await
        .unwrap()
        .unwrap()
}

async fn query_i64(url: &str, sql: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    n
}

/// A directory the server's unprivileged account may pass through when we are root.
fn parent() -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = parent.path().join("task-postgres");
    (parent, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_database_outlives_restarts_and_a_killed_server() {
    let (_parent, dir) = parent();
    let cluster = start(&dir).await;
    let mode = std::fs::metadata(dir.join("superuser.password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the password file is private");
    let admin = cluster.admin_url();
    assert!(!format!("{admin:?}").contains(admin.expose()));
    assert!(
        admin
            .expose()
            .contains(&format!("@127.0.0.1:{}/", cluster.port()))
    );

    let world = EngineWorld::new(Database::sqlite(), None, EngineWorld::fast_config()).await;
    let task = TaskId::new_v7(mainloop_engine::now());
    let info = world
        .engine
        .create_task_database(task, admin.expose())
        .await
        .unwrap();
    let mut conn = PgConnection::connect(&info.url).await.unwrap();
    sqlx::query("CREATE TABLE kept (x int)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO kept VALUES (42)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(
        database_count(&admin, r"mainloop\_task\_%").await.unwrap(),
        1
    );

    // A new manager on the same directory while the server runs takes it over.
    let port = cluster.port();
    let again = start(&dir).await;
    assert_eq!(again.port(), port);
    assert_eq!(again.postmaster_pid(), cluster.postmaster_pid());

    // Stopped (mainloop shut down) and started by the next one: same port, same data.
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(!again.is_running());
    let restarted = start(&dir).await;
    assert_eq!(
        restarted.port(),
        port,
        "the recorded port is reused when free"
    );
    assert_eq!(query_i64(&info.url, "SELECT x::bigint FROM kept").await, 42);

    // Killed outright: its postmaster.pid stays behind and must not stop the next start.
    let pid = restarted.postmaster_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..100 {
        if !restarted.is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!restarted.is_running());
    assert!(dir.join("data/postmaster.pid").exists());
    let after_crash = start(&dir).await;
    assert_ne!(after_crash.postmaster_pid(), Some(pid));
    assert_eq!(query_i64(&info.url, "SELECT x::bigint FROM kept").await, 42);

    tokio::task::spawn_blocking(move || {
        after_crash.stop().unwrap();
        assert!(!after_crash.is_running());
        // Stopping a stopped server is fine.
        after_crash.stop().unwrap();
    })
    .await
    .unwrap();
}

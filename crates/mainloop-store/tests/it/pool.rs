//! PostgreSQL's pool: a busy moment opens connections, and once idle all but the
//! configured minimum are closed again, so an idle server holds few backends.

use mainloop_store::{Store, StoreOptions};
use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};

/// The backends connected to the database `url` names, but the one asking.
async fn backends(url: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_a_busy_moment_opened_are_closed_once_idle_down_to_the_minimum() {
    let url = mainloop_testpg::fresh_database_url().await.unwrap();
    let options = StoreOptions {
        min_connections: 2,
        idle_trim: Duration::from_millis(200),
        ..StoreOptions::default()
    };
    let store = Store::connect(&url, &options).await.unwrap();

    // Ten transactions at once: ten connections.
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(store.begin().await.unwrap());
    }
    assert!(backends(&url).await >= 10);
    drop(open);

    let since = Instant::now();
    loop {
        let n = backends(&url).await;
        if n == 2 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "{n} backends stay connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The store still works, on the connections it kept or new ones.
    store.latest_event_id().await.unwrap();
    let mut more = Vec::new();
    for _ in 0..4 {
        more.push(store.begin().await.unwrap());
    }
    drop(more);
}

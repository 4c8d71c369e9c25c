//! End-to-end checks of `fresh_database_url` against a real server (runs as root here too).

use std::error::Error;

use mainloop_testpg::fresh_database_url;
use sqlx::{Connection, PgConnection};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

async fn current_database(url: &str) -> Result<String, Box<dyn Error + Send + Sync>> {
    let mut conn = PgConnection::connect(url).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    assert_eq!(one, 1);
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(name)
}

#[tokio::test]
async fn two_calls_give_two_working_databases() -> TestResult {
    let a = fresh_database_url().await?;
    let b = fresh_database_url().await?;
    assert_ne!(a, b);
    for url in [&a, &b] {
        let name = current_database(url).await?;
        assert!(name.starts_with("mainloop_test_"), "{name}");
        assert!(url.ends_with(&format!("/{name}")), "{url} vs {name}");
    }
    Ok(())
}

#[tokio::test]
async fn databases_are_isolated_and_start_empty() -> TestResult {
    let a = fresh_database_url().await?;
    let b = fresh_database_url().await?;
    let mut conn_a = PgConnection::connect(&a).await?;
    sqlx::query("CREATE TABLE t (x int)")
        .execute(&mut conn_a)
        .await?;
    let mut conn_b = PgConnection::connect(&b).await?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn_b)
    .await?;
    assert_eq!(tables, 0);
    Ok(())
}

/// Each `#[tokio::test]` has its own runtime; the one-time start must work across them.
#[test]
fn concurrent_callers_on_separate_runtimes() -> TestResult {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| -> Result<String, Box<dyn Error + Send + Sync>> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let url = fresh_database_url().await?;
                    current_database(&url).await?;
                    Ok(url)
                })
            })
        })
        .collect();
    let mut urls = Vec::new();
    for handle in handles {
        let url = handle.join().map_err(|_| "thread panicked")??;
        urls.push(url);
    }
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 4);
    Ok(())
}

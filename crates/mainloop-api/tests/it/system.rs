//! `GET /api/system`: what mainloop holds on disk, and its tasks by footprint.

use super::{Cred, app};
use mainloop_engine::CreateTask;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn the_system_says_what_is_held_on_disk_and_by_how_many_tasks() {
    let app = app().await;
    let (status, body) = app.get("/api/system").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let disk = &body["disk"];
    let parts = [
        "worktrees_bytes",
        "homes_bytes",
        "clones_bytes",
        "database_bytes",
    ];
    let sum: u64 = parts
        .iter()
        .map(|k| disk[k].as_u64().unwrap_or_else(|| panic!("{k} in {body}")))
        .sum();
    assert!(disk["database_bytes"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(disk["total_bytes"].as_u64(), Some(sum), "{body}");
    assert_eq!(disk.as_object().unwrap().len(), parts.len() + 1, "{body}");
    assert_eq!(
        body["tasks"],
        serde_json::json!({"live": 0, "kept": 0, "cleaned": 0})
    );

    let user = app
        .engine
        .authenticate_token(&app.token)
        .await
        .unwrap()
        .unwrap();
    app.engine
        .create_task(
            user.id,
            &CreateTask {
                description: "count me".into(),
                repo: "/tmp".into(),
                skip_plan: true,
                model: None,
                agent: None,
                budget_usd: None,
            },
        )
        .await
        .unwrap();
    let (_, body) = app.get("/api/system").await;
    assert_eq!(body["tasks"]["live"], 1, "{body}");

    let (status, _) = app.call(Cred::None, Method::GET, "/api/system", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Server-wide figures cover everyone's work: the owner's alone.
    let (_, bob) = app.engine.create_user("bob", false).await.unwrap();
    let (status, body) = app
        .call(Cred::Bearer(&bob), Method::GET, "/api/system", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
}

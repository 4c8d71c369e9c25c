//! The runner labels a task requires: asked for over `POST /api/tasks` or MCP's
//! `spawn_task`, joined with its project's `runner_labels` setting when it is created
//! and kept from then on; anything that is not a label is refused and creates nothing.

use super::mcp::{call_with, connect, lifecycles};
use super::{App, app};
use mainloop_domain::{ProjectId, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn owner(app: &App) -> UserId {
    app._world.owner.id
}

async fn create(app: &App, labels: Value) -> (StatusCode, Value) {
    app.post(
        "/api/tasks",
        json!({"description": "Train it", "repo": "acme/widgets", "runner_labels": labels}),
    )
    .await
}

fn project_of(task: &Value) -> ProjectId {
    task["project_id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn labels_a_task_asks_for_come_back_with_it() {
    let app = app().await;
    let (status, task) = create(&app, json!(["linux-x64", "gpu", "gpu"])).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(task["runner_labels"], json!(["gpu", "linux-x64"]));
    let (_, got) = app
        .get(&format!("/api/tasks/{}", task["id"].as_str().unwrap()))
        .await;
    assert_eq!(got["runner_labels"], json!(["gpu", "linux-x64"]));
    // Without any, a task requires none.
    let plain = app.create_task("Anywhere", false).await;
    assert_eq!(plain["runner_labels"], json!([]));
    let (_, list) = app.get("/api/tasks").await;
    let labels: Vec<&Value> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["runner_labels"])
        .collect();
    assert_eq!(labels, [&json!([]), &json!(["gpu", "linux-x64"])]);
}

#[tokio::test]
async fn labels_of_the_project_are_added_when_a_task_is_made_and_kept() {
    let app = app().await;
    let first = app.create_task("First", false).await;
    let project = project_of(&first);
    let set = |settings: Value| {
        let engine = app.engine.clone();
        let user = owner(&app);
        async move { engine.set_project_settings(user, project, &settings).await }
    };
    set(json!({"runner_labels": ["gpu"], "check": "true"}))
        .await
        .unwrap();
    let (_, shown) = app.get(&format!("/api/projects/{project}")).await;
    assert_eq!(shown["settings"]["runner_labels"], json!(["gpu"]));

    let (status, task) = create(&app, json!(["big"])).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(task["runner_labels"], json!(["big", "gpu"]));
    let (status, inherits) = create(&app, json!([])).await;
    assert_eq!(status, StatusCode::CREATED, "{inherits}");
    assert_eq!(inherits["runner_labels"], json!(["gpu"]));
    // Made before the setting: still requires nothing.
    let (_, first_now) = app
        .get(&format!("/api/tasks/{}", first["id"].as_str().unwrap()))
        .await;
    assert_eq!(first_now["runner_labels"], json!([]));

    // A change to the project does not move work already made.
    set(json!({"runner_labels": ["arm"]})).await.unwrap();
    let (_, kept) = app
        .get(&format!("/api/tasks/{}", task["id"].as_str().unwrap()))
        .await;
    assert_eq!(kept["runner_labels"], json!(["big", "gpu"]));

    // The engine refuses settings that are not labels, naming the value.
    for bad in [
        json!({"runner_labels": ["GPU"]}),
        json!({"runner_labels": "gpu"}),
        json!({"runner_labels": [7]}),
        json!({"runner_labels": (0..9).map(|i| format!("l{i}")).collect::<Vec<_>>()}),
        json!(["gpu"]),
    ] {
        let err = set(bad.clone()).await.unwrap_err();
        assert!(
            matches!(err, mainloop_engine::EngineError::Invalid(_)),
            "{bad}: {err:?}"
        );
    }
    let err = set(json!({"runner_labels": ["Has Space"]}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"Has Space\""), "{err}");
    let (_, shown) = app.get(&format!("/api/projects/{project}")).await;
    assert_eq!(shown["settings"]["runner_labels"], json!(["arm"]));
}

#[tokio::test]
async fn labels_set_wrong_on_a_project_by_hand_refuse_its_new_tasks() {
    let app = app().await;
    let first = app.create_task("First", false).await;
    let project = project_of(&first);
    let store = app.engine.store_for_tests();
    let mut tx = store.begin().await.unwrap();
    tx.set_project_settings(owner(&app), project, &json!({"runner_labels": ["G P U"]}))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let before = app.snapshot(&app.token).await;
    let (status, body) = create(&app, json!([])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("runner_labels") && message.contains("\"G P U\""),
        "{message}"
    );
    assert_eq!(app.snapshot(&app.token).await, before, "nothing is created");
}

#[tokio::test]
async fn labels_that_are_not_labels_are_refused_by_name_and_create_nothing() {
    let app = app().await;
    app.create_task("Seed", false).await;
    let before = app.snapshot(&app.token).await;
    let nine: Vec<String> = (0..9).map(|i| format!("l{i}")).collect();
    let long = "x".repeat(64);
    for (labels, named) in [
        (json!(["gpu", "GPU"]), "\"GPU\""),
        (json!(["has space"]), "\"has space\""),
        (json!(["../etc"]), "\"../etc\""),
        (json!([""]), "\"\""),
        (json!(["gpu\u{0}"]), "gpu"),
        (json!(["é"]), "\"é\""),
        (json!([long]), "\"xxxxxxxx"),
        (json!(nine), "at most 8"),
        (json!(vec!["gpu"; 9]), "at most 8"),
    ] {
        let (status, body) = create(&app, labels.clone()).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        // NUL is refused before any handler reads the body.
        if labels[0].as_str().is_some_and(|l| l.contains('\u{0}')) {
            assert!(status.is_client_error(), "{labels}: {status} {body}");
            continue;
        }
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{labels}: {body}");
        assert!(
            message.starts_with("runner_labels") && message.contains(named),
            "{labels}: {message}"
        );
    }
    for malformed in [json!("gpu"), json!([1]), json!({"gpu": true})] {
        let (status, body) = create(&app, malformed.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{malformed}: {body}");
    }
    assert_eq!(
        app.snapshot(&app.token).await,
        before,
        "refusals change nothing"
    );
}

#[tokio::test]
async fn labels_over_mcp_spawn_task_are_required_and_checked() {
    let app = app().await;
    let mcp = connect(&app, &app.token, lifecycles()[0].clone()).await;
    let args = json!({"description": "Over MCP", "repo": "acme/widgets", "runner_labels": ["gpu"]});
    let (text, is_error) = call_with(&mcp, "spawn_task", args, None).await;
    assert!(!is_error, "{text}");
    let summary: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(summary["runner_labels"], json!(["gpu"]));
    let (_, task) = app
        .get(&format!(
            "/api/tasks/{}",
            summary["task_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(task["runner_labels"], json!(["gpu"]));
    let before = app.snapshot(&app.token).await;
    let args = json!({"description": "Over MCP", "repo": "acme/widgets", "runner_labels": ["GPU"]});
    let (text, is_error) = call_with(&mcp, "spawn_task", args, None).await;
    assert!(is_error && text.contains("\"GPU\""), "{text}");
    assert_eq!(app.snapshot(&app.token).await, before);
    mcp.cancel().await.unwrap();
}

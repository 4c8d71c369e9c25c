//! `/api/notes` and the `remember` MCP tool on both databases: the user's notes kept,
//! edited and deleted, another user's answered 404, hostile input a 4xx, never a 500.

use super::mcp::{call_with, connect, lifecycles};
use super::{App, Cred, assert_error, databases, server};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn notes_of(app: &App, token: &str) -> Vec<Value> {
    let (status, body) = app
        .call(Cred::Bearer(token), Method::GET, "/api/notes", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["notes"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_are_listed_added_edited_and_deleted_by_their_user_only() {
    for database in databases().await {
        let app = server(database).await;
        assert!(notes_of(&app, &app.token).await.is_empty());
        let (status, a) = app
            .post(
                "/api/notes",
                json!({"kind": "decision", "text": "  Billing stays in Go  "}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{a}");
        assert_eq!(a["text"], "Billing stays in Go");
        assert_eq!(a["kind"], "decision");
        assert_eq!(a["source"], "user");
        assert_eq!(a["folded"], false);
        assert!(a["created_at"].is_string() && a["updated_at"].is_string());
        let id = a["id"].as_str().unwrap().to_owned();
        let (status, b) = app
            .post(
                "/api/notes",
                json!({"kind": "fact", "text": "Prod is eu-west-1"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{b}");
        let listed = notes_of(&app, &app.token).await;
        assert_eq!(listed, [b.clone(), a.clone()], "newest first");

        let (status, edited) = app
            .call(
                Cred::Bearer(&app.token),
                Method::PUT,
                &format!("/api/notes/{id}"),
                Some(json!({"kind": "fact", "text": "Billing moves to Rust"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{edited}");
        assert_eq!(edited["text"], "Billing moves to Rust");
        assert_eq!(edited["kind"], "fact");
        assert_eq!(notes_of(&app, &app.token).await[0]["id"], a["id"]);

        // Another user: nothing listed, the note's id unknown to them.
        let (_, bob) = app.engine.create_user("bob", false).await.unwrap();
        assert!(notes_of(&app, &bob).await.is_empty());
        for (method, body) in [
            (Method::PUT, Some(json!({"kind": "fact", "text": "mine"}))),
            (Method::DELETE, None),
        ] {
            let (status, err) = app
                .call(
                    Cred::Bearer(&bob),
                    method,
                    &format!("/api/notes/{id}"),
                    body,
                )
                .await;
            assert_error(status, &err, StatusCode::NOT_FOUND, "not_found");
        }
        assert_eq!(notes_of(&app, &app.token).await.len(), 2);

        let (status, _) = app
            .call(
                Cred::Bearer(&app.token),
                Method::DELETE,
                &format!("/api/notes/{id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, err) = app
            .call(
                Cred::Bearer(&app.token),
                Method::DELETE,
                &format!("/api/notes/{id}"),
                None,
            )
            .await;
        assert_error(status, &err, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(notes_of(&app, &app.token).await, [b]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_note_input_is_a_clear_4xx() {
    for database in databases().await {
        let app = server(database).await;
        let (_, note) = app
            .post("/api/notes", json!({"kind": "fact", "text": "kept"}))
            .await;
        let id = note["id"].as_str().unwrap().to_owned();
        let too_long = "é".repeat(2001);
        let cases: [(Value, StatusCode, &str); 8] = [
            (
                json!({"kind": "fact", "text": "a\u{0}b"}),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                json!({"kind": "fact", "text": too_long}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
            ),
            (
                json!({"kind": "rule", "text": "x"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
            ),
            (
                json!({"kind": "", "text": "x"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
            ),
            (
                json!({"kind": "fact", "text": " \n\t "}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
            ),
            (
                json!({"kind": "fact"}),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                json!({"kind": 3, "text": "x"}),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                json!({"kind": "fact", "text": "x", "pinned": true}),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
        ];
        for (body, want, code) in &cases {
            let (status, err) = app.post("/api/notes", body.clone()).await;
            assert_error(status, &err, *want, code);
            let (status, err) = app
                .call(
                    Cred::Bearer(&app.token),
                    Method::PUT,
                    &format!("/api/notes/{id}"),
                    Some(body.clone()),
                )
                .await;
            assert_error(status, &err, *want, code);
        }
        // Exactly the limit is fine.
        let (status, _) = app
            .post(
                "/api/notes",
                json!({"kind": "fact", "text": "é".repeat(2000)}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        for bad in ["not-a-uuid", "%00", "..%2F..%2Fetc", &"1".repeat(400)] {
            let (status, err) = app
                .call(
                    Cred::Bearer(&app.token),
                    Method::DELETE,
                    &format!("/api/notes/{bad}"),
                    None,
                )
                .await;
            assert!(status.is_client_error(), "{bad}: {status} {err}");
        }
        let unknown = "0190a0a0-0000-7000-8000-000000000000";
        let (status, err) = app
            .call(
                Cred::Bearer(&app.token),
                Method::PUT,
                &format!("/api/notes/{unknown}"),
                Some(json!({"kind": "fact", "text": "x"})),
            )
            .await;
        assert_error(status, &err, StatusCode::NOT_FOUND, "not_found");
        let listed = notes_of(&app, &app.token).await;
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[1]["text"], "kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remember_over_mcp_keeps_a_note_once_per_call() {
    for database in databases().await {
        let app = server(database).await;
        let [lifecycle, _] = lifecycles();
        let mcp = connect(&app, &app.token, lifecycle).await;
        let args = json!({"kind": "decision", "text": "Deploy only on Tuesdays"});
        let (first, is_error) = call_with(&mcp, "remember", args.clone(), Some("toolu_n1")).await;
        assert!(!is_error, "{first}");
        let first: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(first["remembered"]["text"], "Deploy only on Tuesdays");
        assert_eq!(first["in_context"], true);
        let (again, _) = call_with(&mcp, "remember", args, Some("toolu_n1")).await;
        assert_eq!(serde_json::from_str::<Value>(&again).unwrap(), first);
        let notes = notes_of(&app, &app.token).await;
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0]["source"], "main_thread");
        let (err, is_error) = call_with(
            &mcp,
            "remember",
            json!({"kind": "decision", "text": "a\u{0}b"}),
            Some("toolu_n2"),
        )
        .await;
        assert!(is_error && err.contains("NUL"), "{err}");
        assert_eq!(notes_of(&app, &app.token).await.len(), 1);
    }
}

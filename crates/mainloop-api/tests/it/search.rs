//! `GET /api/search` and the `search_history` tool on both databases: hits for what was
//! written through the API, every filter, another user's history never found, and
//! hostile queries answered with results or a 4xx, never a 500.

use super::mcp::{call_with, connect, lifecycles};
use super::{App, Cred, assert_error, databases, server};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A server on SQLite (`None`) or the PostgreSQL database at `url`, with nothing
/// running in the background.
/// `q` and the other parameters, percent-encoded.
fn url(q: &str, rest: &[(&str, &str)]) -> String {
    let mut pairs = vec![("q", q)];
    pairs.extend_from_slice(rest);
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("/api/search?{}", query.join("&"))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn search_as(app: &App, token: &str, q: &str, rest: &[(&str, &str)]) -> Vec<Value> {
    let (status, body) = app
        .call(Cred::Bearer(token), Method::GET, &url(q, rest), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{q} {rest:?}: {body}");
    body["results"].as_array().unwrap().clone()
}

fn kinds(hits: &[Value]) -> Vec<&str> {
    let mut k: Vec<&str> = hits.iter().map(|h| h["kind"].as_str().unwrap()).collect();
    k.sort_unstable();
    k
}

/// Each highlight marks a word of the query in the snippet.
fn assert_highlighted(hit: &Value, word: &str) {
    let snippet: Vec<char> = hit["snippet"].as_str().unwrap().chars().collect();
    let marks = hit["highlights"].as_array().unwrap();
    assert!(!marks.is_empty(), "{hit}");
    for m in marks {
        let (s, e) = (m[0].as_u64().unwrap(), m[1].as_u64().unwrap());
        let marked: String = snippet[usize::try_from(s).unwrap()..usize::try_from(e).unwrap()]
            .iter()
            .collect();
        assert!(
            marked.to_lowercase().starts_with(word),
            "{marked:?} in {hit}"
        );
    }
}

#[tokio::test]
async fn messages_and_tasks_are_found_filtered_and_only_by_their_owner() {
    for database in databases().await {
        let app = server(database).await;
        let (status, _) = app
            .post(
                "/api/chat",
                json!({"text": "What did we decide about the zebrafish migration?"}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let task = app
            .create_task("Move the zebrafish billing code onto the new ledger", false)
            .await;
        let task_id = task["id"].as_str().unwrap();
        let project = task["project_id"].as_str().unwrap();
        let (_, bob) = app.engine.create_user("bob", false).await.unwrap();
        let (status, _) = app
            .call(
                Cred::Bearer(&bob),
                Method::POST,
                "/api/chat",
                Some(json!({"text": "bob's zebrafish secret"})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);

        // Both kinds, each with the word marked and a link to what it is.
        let hits = search_as(&app, &app.token, "Zebrafish", &[]).await;
        assert_eq!(kinds(&hits), ["message", "task"], "{hits:?}");
        for h in &hits {
            assert_highlighted(h, "zebrafish");
            assert!(!h.to_string().contains("secret"), "bob's: {h}");
        }
        let t = hits.iter().find(|h| h["kind"] == "task").unwrap();
        assert_eq!(
            (t["id"].as_str(), t["task_id"].as_str()),
            (Some(task_id), Some(task_id))
        );
        let m = hits.iter().find(|h| h["kind"] == "message").unwrap();
        assert!(m["task_id"].is_null(), "{m}");
        assert!(m["created_at"].as_str().unwrap().len() >= 20, "{m}");

        // Every word must occur; the last may be a word's start.
        assert_eq!(
            kinds(&search_as(&app, &app.token, "zebrafish ledger", &[]).await),
            ["task"]
        );
        assert_eq!(
            kinds(&search_as(&app, &app.token, "decide zebra", &[]).await),
            ["message"]
        );
        assert!(
            search_as(&app, &app.token, "zebrafish unicorn", &[])
                .await
                .is_empty()
        );

        // Filters: kinds (repeated or comma-separated), task, project, dates, limit.
        let only = |k: &'static str| [("kind", k)];
        assert_eq!(
            kinds(&search_as(&app, &app.token, "zebrafish", &only("task")).await),
            ["task"]
        );
        assert_eq!(
            kinds(&search_as(&app, &app.token, "zebrafish", &only("message,task")).await),
            ["message", "task"]
        );
        assert_eq!(
            kinds(
                &search_as(
                    &app,
                    &app.token,
                    "zebrafish",
                    &[("kind", "plan"), ("kind", "message")]
                )
                .await
            ),
            ["message"]
        );
        assert!(
            search_as(&app, &app.token, "zebrafish", &only("transcript"))
                .await
                .is_empty()
        );
        assert_eq!(
            kinds(&search_as(&app, &app.token, "zebrafish", &[("task", task_id)]).await),
            ["task"]
        );
        assert_eq!(
            kinds(&search_as(&app, &app.token, "zebrafish", &[("project", project)]).await),
            ["task"]
        );
        let elsewhere = uuid::Uuid::now_v7().to_string();
        assert!(
            search_as(&app, &app.token, "zebrafish", &[("task", &elsewhere)])
                .await
                .is_empty()
        );
        let today = &t["created_at"].as_str().unwrap()[..10];
        assert_eq!(
            search_as(
                &app,
                &app.token,
                "zebrafish",
                &[("from", today), ("to", today)]
            )
            .await
            .len(),
            2
        );
        assert!(
            search_as(&app, &app.token, "zebrafish", &[("from", "2999-01-01")])
                .await
                .is_empty()
        );
        assert!(
            search_as(&app, &app.token, "zebrafish", &[("to", "2001-01-01")])
                .await
                .is_empty()
        );
        assert_eq!(
            search_as(&app, &app.token, "zebrafish", &[("limit", "1")])
                .await
                .len(),
            1
        );

        // Bob finds his own message only, and nothing of the owner's by its task id.
        let his = search_as(&app, &bob, "zebrafish", &[]).await;
        assert_eq!(kinds(&his), ["message"], "{his:?}");
        assert!(
            his[0]["snippet"].as_str().unwrap().contains("secret"),
            "{his:?}"
        );
        assert!(
            search_as(&app, &bob, "zebrafish", &[("task", task_id)])
                .await
                .is_empty()
        );
        assert!(search_as(&app, &bob, "ledger", &[]).await.is_empty());
    }
}

#[tokio::test]
async fn hostile_queries_get_results_or_a_4xx_never_a_500() {
    for database in databases().await {
        let app = server(database).await;
        app.create_task("Keep the \"billing\" code* (x:y) NEAR the ledger", false)
            .await;
        let long_words = "billing ".repeat(62);
        for q in [
            r#""billing" AND NOT code* OR (x:y) NEAR/2 -z ^w"#,
            "billing\"",
            "'billing'",
            "\"\"billing",
            "code*",
            "billing OR",
            "NEAR(billing code)",
            "billing:code",
            "{billing} [code]",
            "billing -- ; DROP TABLE tasks; --",
            "billing\\",
            "x' OR '1'='1",
            "%_billing_%",
            "ä ö ü 日本 🦀 billing",
            long_words.trim_end(),
        ] {
            let (status, body) = app.get(&url(q, &[])).await;
            assert_eq!(status, StatusCode::OK, "{q}: {body}");
            assert!(body["results"].is_array(), "{q}: {body}");
        }
        let hits = search_as(&app, &app.token, r#""billing" NEAR (x:y) code*"#, &[]).await;
        assert_eq!(kinds(&hits), ["task"], "operators are words: {hits:?}");

        let invalid = [
            url("", &[]),
            url("   ", &[]),
            url("\"'*()-^:", &[]),
            url("a\0b", &[]),
            url(&"x".repeat(501), &[]),
            url(&"billing ".repeat(5000), &[]),
            url("billing", &[("kind", "everything")]),
            url("billing", &[("kind", "task,")]),
            url("billing", &[("task", "not-an-id")]),
            url("billing", &[("project", "1' OR 1=1")]),
            url("billing", &[("from", "yesterday")]),
            url("billing", &[("to", "2026-13-45")]),
            url("billing", &[("limit", "0")]),
            url("billing", &[("limit", "101")]),
            url("billing", &[("limit", "-5")]),
            url("billing", &[("limit", "99999999999")]),
            "/api/search".to_owned(),
            // Not UTF-8: read as replacement characters, which are no word.
            "/api/search?q=%FF%FE".to_owned(),
        ];
        for path in &invalid {
            let (status, body) = app.get(path).await;
            assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        }
        for path in [
            "/api/search?q=billing&limit=ten",
            "/api/search?q=billing&q=code",
        ] {
            let (status, body) = app.get(path).await;
            assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
        }
        let (status, body) = app
            .call(Cred::None, Method::GET, &url("billing", &[]), None)
            .await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

#[tokio::test]
async fn search_history_over_mcp_finds_the_callers_history_only() {
    let app = server(None).await;
    let task = app
        .create_task("Teach the okapi parser about leap seconds", false)
        .await;
    let id = task["id"].as_str().unwrap();
    let (_, bob) = app.engine.create_user("bob", false).await.unwrap();
    for lifecycle in lifecycles() {
        let mcp = connect(&app, &app.token, lifecycle.clone()).await;
        let tools = mcp.list_all_tools().await.unwrap();
        let tool = tools.iter().find(|t| t.name == "search_history").unwrap();
        let description = tool.description.as_deref().unwrap();
        assert!(description.contains("what did we decide"), "{description}");
        assert_eq!(
            tool.annotations.as_ref().unwrap().read_only_hint,
            Some(true)
        );

        let (text, is_error) =
            call_with(&mcp, "search_history", json!({"query": "okapi leap"}), None).await;
        assert!(!is_error, "{text}");
        let found: Value = serde_json::from_str(&text).unwrap();
        let hits = found["results"].as_array().unwrap();
        assert_eq!(hits.len(), 1, "{found}");
        let hit = hits[0].as_object().unwrap();
        let mut fields: Vec<&str> = hit.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["created_at", "id", "kind", "snippet", "task_id", "title"]
        );
        assert_eq!(
            (hit["kind"].as_str(), hit["task_id"].as_str()),
            (Some("task"), Some(id))
        );

        // Filters, as one kind or several, and a limit past the tool's own is cut to it.
        for args in [
            json!({"query": "okapi", "kind": "task", "task_id": id, "limit": 500}),
            json!({"query": "okapi", "kind": ["task", "plan"]}),
        ] {
            let (text, is_error) = call_with(&mcp, "search_history", args.clone(), None).await;
            assert!(!is_error, "{args}: {text}");
            assert!(text.contains(id), "{args}: {text}");
        }
        let (text, is_error) = call_with(
            &mcp,
            "search_history",
            json!({"query": "okapi", "kind": "message"}),
            None,
        )
        .await;
        assert!(!is_error, "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"results": []})
        );

        // Mistakes are results the model can read.
        for args in [
            json!({"query": "?!"}),
            json!({"query": "okapi", "kind": "everything"}),
            json!({"query": "okapi", "task_id": "nope"}),
            json!({"kind": "task"}),
        ] {
            let (text, is_error) = call_with(&mcp, "search_history", args.clone(), None).await;
            assert!(is_error, "{args}: {text}");
        }

        let theirs = connect(&app, &bob, lifecycle).await;
        let (text, is_error) =
            call_with(&theirs, "search_history", json!({"query": "okapi"}), None).await;
        assert!(!is_error, "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"results": []})
        );
    }
}

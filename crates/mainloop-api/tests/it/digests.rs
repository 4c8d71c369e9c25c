//! `/api/digests`, `/api/settings/time-zone` and the `get_digests` MCP tool on both
//! databases: digests made from what was posted through the API, listed, filtered and
//! read by their user only; bad parameters and zones a clear 4xx, never a 500.

use super::mcp::{call_with, connect, lifecycles};
use super::{App, Cred, assert_error, databases, server};
use mainloop_domain::digest::{Period, Span, Zone};
use mainloop_domain::{Timestamp, UserId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn owner(app: &App) -> UserId {
    app.engine
        .authenticate_token(&app.token)
        .await
        .unwrap()
        .unwrap()
        .id
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Posts `text` to the main thread, then makes the digests of the UTC day it was stored
/// on (and of the day before, which is quiet), of its week and of its month. Returns the
/// message's day as `YYYY-MM-DD` and the day before.
async fn make_digests(app: &App, text: &str) -> (String, String) {
    let (status, posted) = app.post("/api/chat", json!({"text": text})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{posted}");
    let (status, page) = app.get("/api/chat/messages").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let message = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == posted["message_id"])
        .unwrap();
    let at: Timestamp = serde_json::from_value(message["created_at"].clone()).unwrap();
    let zone = Zone::utc();
    let day = zone.date(at);
    let before = zone.date(Timestamp::from_millis(at.as_millis() - DAY_MS));
    let user = owner(app).await;
    let now = mainloop_engine::now();
    for span in [
        Span::containing(Period::Day, before),
        Span::containing(Period::Day, day),
        Span::containing(Period::Week, day),
        Span::containing(Period::Month, day),
    ] {
        assert!(app.engine.make_digest(user, span, now).await.unwrap());
        // Made once.
        assert!(!app.engine.make_digest(user, span, now).await.unwrap());
    }
    (day.to_string(), before.to_string())
}

async fn list(app: &App, token: &str, query: &str) -> Value {
    let (status, body) = app
        .call(
            Cred::Bearer(token),
            Method::GET,
            &format!("/api/digests{query}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

fn starts(list: &Value) -> Vec<(String, String)> {
    list["digests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["period"].as_str().unwrap().to_owned(),
                d["start"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_are_listed_filtered_and_read_by_their_user_only() {
    for database in databases().await {
        let app = server(database).await;
        let empty = list(&app, &app.token, "").await;
        assert_eq!(empty, json!({"digests": [], "time_zone": "UTC"}));
        let (day, yesterday) = make_digests(&app, "Plan the billing migration").await;

        let all = list(&app, &app.token, "").await;
        assert_eq!(all["time_zone"], "UTC");
        let mut periods: Vec<String> = starts(&all).into_iter().map(|(p, _)| p).collect();
        periods.sort();
        assert_eq!(periods, ["day", "day", "month", "week"], "{all}");

        let days = list(&app, &app.token, "?period=day").await;
        assert_eq!(
            starts(&days),
            [
                ("day".into(), day.clone()),
                ("day".into(), yesterday.clone())
            ],
            "newest first"
        );
        let today = &days["digests"][0];
        assert_eq!(today["quiet"], false);
        assert_eq!(today["time_zone"], "UTC");
        assert_eq!(today["facts"]["asked_total"], 1);
        assert_eq!(
            today["facts"]["asked"][0]["text"],
            "Plan the billing migration"
        );
        assert!(
            today["text"]
                .as_str()
                .unwrap()
                .contains("Plan the billing migration"),
            "{today}"
        );
        assert_eq!(days["digests"][1]["quiet"], true);
        let week = list(&app, &app.token, "?period=week").await;
        assert_eq!(week["digests"].as_array().unwrap().len(), 1);
        assert_eq!(week["digests"][0]["facts"]["asked_total"], 1);
        assert!(
            week["digests"][0]["title"]
                .as_str()
                .unwrap()
                .starts_with("Week of "),
            "{week}"
        );

        let before = list(&app, &app.token, &format!("?period=day&before={day}")).await;
        assert_eq!(starts(&before), [("day".into(), yesterday.clone())]);
        let one = list(&app, &app.token, "?period=day&limit=1").await;
        assert_eq!(starts(&one), [("day".into(), day.clone())]);
        let max = list(&app, &app.token, "?limit=200&period=month").await;
        assert_eq!(max["digests"].as_array().unwrap().len(), 1);

        // One digest by its id; search finds it by the same id.
        let id = today["id"].as_str().unwrap().to_owned();
        let (status, got) = app.get(&format!("/api/digests/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(&got, today);
        let (status, found) = app.get("/api/search?q=billing&kind=digest").await;
        assert_eq!(status, StatusCode::OK, "{found}");
        let hits: Vec<&str> = found["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert!(hits.contains(&id.as_str()), "{found}");

        // Another user: nothing listed, the digest unknown to them.
        let (_, bob) = app.engine.create_user("bob", false).await.unwrap();
        assert_eq!(
            list(&app, &bob, "").await,
            json!({"digests": [], "time_zone": "UTC"})
        );
        let (status, err) = app
            .call(
                Cred::Bearer(&bob),
                Method::GET,
                &format!("/api/digests/{id}"),
                None,
            )
            .await;
        assert_error(status, &err, StatusCode::NOT_FOUND, "not_found");
        let (status, err) = app
            .get("/api/digests/0190a0a0-0000-7000-8000-000000000000")
            .await;
        assert_error(status, &err, StatusCode::NOT_FOUND, "not_found");
        for bad in ["not-a-uuid", "%00", &"1".repeat(400)] {
            let (status, err) = app.get(&format!("/api/digests/{bad}")).await;
            assert_error(status, &err, StatusCode::BAD_REQUEST, "bad_request");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_digest_parameters_are_a_clear_4xx() {
    for database in databases().await {
        let app = server(database).await;
        for query in [
            "period=year",
            "period=",
            "period=Day",
            "period=%00",
            "before=2026-13-01",
            "before=2026-02-30",
            "before=yesterday",
            "before=20261102",
            "before=",
            "before=2026-11-02T00:00:00Z",
            "limit=0",
            "limit=201",
            "limit=-1",
            "limit=abc",
            "limit=1.5",
            "limit=99999999999999999999999",
        ] {
            let (status, err) = app.get(&format!("/api/digests?{query}")).await;
            assert_error(status, &err, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        }
        for query in ["period=day&period=week", "limit=1&limit=2"] {
            let (status, err) = app.get(&format!("/api/digests?{query}")).await;
            assert_error(status, &err, StatusCode::BAD_REQUEST, "bad_request");
        }
        let (status, body) = app.get("/api/digests?before=0001-01-01&limit=1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

async fn zone_of(app: &App, token: &str) -> Value {
    let (status, body) = app
        .call(
            Cred::Bearer(token),
            Method::GET,
            "/api/settings/time-zone",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn put_zone(app: &App, body: Value) -> (StatusCode, Value) {
    app.call(
        Cred::Bearer(&app.token),
        Method::PUT,
        "/api/settings/time-zone",
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_zone_is_shown_set_and_reset() {
    for database in databases().await {
        let app = server(database).await;
        let default = json!({"time_zone": "UTC", "default": true});
        assert_eq!(zone_of(&app, &app.token).await, default);
        let (status, set) = put_zone(&app, json!({"time_zone": " Europe/Paris "})).await;
        assert_eq!(status, StatusCode::OK, "{set}");
        assert_eq!(set, json!({"time_zone": "Europe/Paris", "default": false}));
        assert_eq!(zone_of(&app, &app.token).await, set);
        assert_eq!(
            list(&app, &app.token, "").await["time_zone"],
            "Europe/Paris"
        );
        let (_, bob) = app.engine.create_user("bob", false).await.unwrap();
        assert_eq!(zone_of(&app, &bob).await, default, "the owner's zone only");

        let cases: [(Value, StatusCode, &str); 7] = [
            (
                json!({"time_zone": "Mars/Olympus_Mons"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
            ),
            (
                json!({"time_zone": ""}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
            ),
            (
                json!({"time_zone": " "}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
            ),
            (
                json!({"time_zone": "x".repeat(65)}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
            ),
            (
                json!({"time_zone": "Europe/Paris\u{0}"}),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                json!({"time_zone": 5}),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                json!({"time_zone": "UTC", "zone": "UTC"}),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
        ];
        for (body, want, code) in &cases {
            let (status, err) = put_zone(&app, body.clone()).await;
            assert_error(status, &err, *want, code);
        }
        let status = app
            .client
            .put(app.url("/api/settings/time-zone"))
            .bearer_auth(&app.token)
            .header("content-type", "application/json")
            .body(format!(r#"{{"time_zone":"{}"}}"#, "a".repeat(2 << 20)))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            zone_of(&app, &app.token).await["time_zone"],
            "Europe/Paris",
            "bad input changed nothing"
        );

        let (status, reset) = put_zone(&app, json!({"time_zone": null})).await;
        assert_eq!(status, StatusCode::OK, "{reset}");
        assert_eq!(reset, default);
        assert_eq!(zone_of(&app, &app.token).await, default);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_digests_over_mcp_reads_the_users_digests_compactly() {
    let app = server(None).await;
    let (day, yesterday) = make_digests(&app, "Summarise the auth refactor").await;
    let [lifecycle, _] = lifecycles();
    let mcp = connect(&app, &app.token, lifecycle.clone()).await;
    let (text, is_error) = call_with(&mcp, "get_digests", json!({"period": "day"}), None).await;
    assert!(!is_error, "{text}");
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["time_zone"], "UTC");
    let digests = page["digests"].as_array().unwrap();
    assert_eq!(digests.len(), 2, "{page}");
    let mut keys: Vec<&String> = digests[0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["period", "start", "text", "title"], "{page}");
    assert_eq!(digests[0]["start"], day.as_str());
    assert_eq!(digests[1]["start"], yesterday.as_str());
    assert!(
        digests[0]["text"]
            .as_str()
            .unwrap()
            .contains("Summarise the auth refactor"),
        "{page}"
    );
    let (text, _) = call_with(
        &mcp,
        "get_digests",
        json!({"period": "day", "before": day, "limit": 20}),
        None,
    )
    .await;
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["digests"].as_array().unwrap().len(), 1, "{page}");
    let (text, _) = call_with(&mcp, "get_digests", json!({}), None).await;
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["digests"].as_array().unwrap().len(), 4, "{page}");

    for (args, says) in [
        (json!({"period": "year"}), "unknown period"),
        (json!({"limit": 21}), "limit"),
        (json!({"limit": 0}), "limit"),
        (json!({"before": "last week"}), "not a date"),
        (json!({"since": "2026-01-01"}), "invalid arguments"),
    ] {
        let (text, is_error) = call_with(&mcp, "get_digests", args.clone(), None).await;
        assert!(is_error && text.contains(says), "{args}: {text}");
    }

    let (_, bob) = app.engine.create_user("bob", false).await.unwrap();
    let theirs = connect(&app, &bob, lifecycle).await;
    let (text, is_error) = call_with(&theirs, "get_digests", json!({}), None).await;
    assert!(!is_error, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["digests"],
        json!([])
    );
}

//! The contract the OpenAPI document states: the constraints the server enforces are
//! declared, the server refuses exactly what the document calls invalid, every event's
//! payload is described, and the transcript reads the same over HTTP and SSE.

use super::{App, SseReader, app, openapi};
use mainloop_domain::event::EventName;
use mainloop_domain::transcript::TranscriptEntry;
use mainloop_domain::{TaskId, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

fn schema<'a>(doc: &'a Value, pointer: &str) -> &'a Value {
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("{pointer} is not in the document"))
}

#[test]
fn the_document_states_what_the_server_refuses() {
    let doc = openapi();
    let s = "/components/schemas";
    for field in [
        "PostChat/properties/text",
        "CreateTaskRequest/properties/description",
        "CreateTaskRequest/properties/repo",
    ] {
        let f = schema(&doc, &format!("{s}/{field}"));
        assert_eq!(f["minLength"], 1, "{field}");
        assert!(f["maxLength"].is_u64(), "{field}");
        assert!(
            f["pattern"].as_str().unwrap().contains("\\s"),
            "{field} says it must not be blank"
        );
    }
    // Every request string says it holds no NUL, map keys included.
    let nul = mainloop_api::doc::NO_NUL;
    assert_eq!(
        schema(
            &doc,
            &format!("{s}/AnswersRequest/properties/answers/propertyNames")
        )["pattern"],
        nul
    );
    assert_eq!(
        schema(&doc, &format!("{s}/LoginRequest/properties/token"))["pattern"],
        nul
    );
    let endpoint = schema(
        &doc,
        &format!("{s}/RegisterPushRequest/properties/endpoint"),
    );
    assert_eq!(endpoint["format"], "uri");
    assert!(
        endpoint["pattern"]
            .as_str()
            .unwrap()
            .starts_with("^[Hh][Tt][Tt][Pp]")
    );
    // States are the enum, and a resume point is an integer (a header is never null).
    let params = schema(&doc, "/paths/~1api~1tasks/get/parameters");
    let state = params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "state")
        .unwrap();
    assert_eq!(state["schema"]["items"]["$ref"], format!("#{s}/TaskState"));
    let params = schema(&doc, "/paths/~1api~1events/get/parameters");
    let last = params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Last-Event-ID")
        .unwrap();
    assert_eq!(last["schema"]["type"], "integer");
    // Creating a task links to every operation that takes its id.
    let links = schema(&doc, "/paths/~1api~1tasks/post/responses/201/links");
    let targets: BTreeSet<&str> = links
        .as_object()
        .unwrap()
        .values()
        .map(|l| l["operationId"].as_str().unwrap())
        .collect();
    for op in [
        "get_task",
        "answer_task",
        "review_plan",
        "review_work",
        "task_transcript",
        "task_diff",
    ] {
        assert!(targets.contains(op), "{op} in {targets:?}");
    }
}

#[test]
fn every_event_name_has_its_payload_schema() {
    let doc = openapi();
    let data = schema(&doc, "/components/schemas/EventData/properties");
    let variants = schema(&doc, "/components/schemas/ServerEvent/oneOf");
    let names: BTreeSet<&str> = EventName::ALL.iter().map(|n| n.as_str()).collect();
    let described: BTreeSet<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(described, names);
    let in_variants: BTreeSet<&str> = variants
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["properties"]["event"]["enum"][0].as_str().unwrap())
        .collect();
    assert_eq!(in_variants, names);
    for r in data.as_object().unwrap().values() {
        let target = r["$ref"].as_str().unwrap().trim_start_matches('#');
        schema(&doc, target);
    }
    let ok = schema(
        &doc,
        "/paths/~1api~1events/get/responses/200/content/text~1event-stream/schema",
    );
    assert_eq!(ok["$ref"], "#/components/schemas/ServerEvent");
}

#[tokio::test]
async fn nul_counts_only_in_the_fields_a_request_reads() {
    let app = app().await;
    let (status, body) = app
        .post(
            "/api/chat",
            json!({"text": "hi", "ignored": "a\u{0}b", "a\u{0}": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = app.post("/api/chat", json!({"text": "a\u{0}b"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = app.post("/api/chat", json!({"text": " \n\t"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn task_states_are_a_repeated_or_comma_separated_enum() {
    let app = app().await;
    let task = app.create_task("Add a health endpoint", false).await;
    for query in [
        "state=queued&state=planning",
        "state=queued,planning",
        "state=queued",
    ] {
        let (status, list) = app.get(&format!("/api/tasks?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {list}");
        assert_eq!(list["tasks"][0]["id"], task["id"], "{query}");
    }
    for query in [
        "state=",
        "state=queued,",
        "state=%20queued",
        "state=nope",
        "limit=x",
    ] {
        let (status, body) = app.get(&format!("/api/tasks?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
}

async fn me(app: &App) -> UserId {
    let (_, me) = app.get("/api/auth/me").await;
    serde_json::from_value(me["id"].clone()).unwrap()
}

#[tokio::test]
async fn transcript_entries_read_the_same_over_http_and_sse() {
    let app = app().await;
    let user = me(&app).await;
    let task = app.create_task("Add a health endpoint", false).await;
    let id: TaskId = serde_json::from_value(task["id"].clone()).unwrap();
    let mut events = SseReader::open(&app, &app.token, "/api/events?after=0", None).await;
    let entries = [
        TranscriptEntry::text_entry("hello"),
        TranscriptEntry::from_stored(
            "checks",
            json!({"command": "GitHub CI", "passed": null,
            "no_ci": true, "output": "no check runs"}),
        ),
        // A kind another version wrote reads back as `unknown`, never as an error.
        TranscriptEntry::from_stored("telemetry", json!({"x": 1})),
    ];
    assert_eq!(
        app.engine
            .record_transcript(user, id, &entries)
            .await
            .unwrap(),
        3
    );
    // An entry stored as `(kind, payload)` by another version reads back typed, and is
    // stored and streamed again as the typed entry is.
    let stored = TranscriptEntry::from_stored("status", json!({"text": "working"}));
    assert_eq!(stored, TranscriptEntry::status("working"));
    assert_eq!(
        app.engine
            .record_transcript(user, id, &[stored])
            .await
            .unwrap(),
        4
    );

    let (status, page) = app.get(&format!("/api/tasks/{id}/transcript")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let over_http = page["entries"].as_array().unwrap().clone();
    assert_eq!(over_http.len(), 4);
    let kinds: Vec<&str> = over_http
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["text", "checks", "unknown", "status"]);
    assert_eq!(over_http[0]["payload"], json!({"text": "hello"}));
    assert_eq!(over_http[0]["task_id"], task["id"]);
    assert_eq!(
        over_http[2]["payload"],
        json!({"kind": "telemetry", "payload": {"x": 1}})
    );
    assert_eq!(over_http[3]["payload"], json!({"text": "working"}));

    let mut over_sse = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while over_sse.len() < 4 && tokio::time::Instant::now() < deadline {
        for m in events.read(1, Duration::from_secs(1)).await {
            if m.event == "task.output" {
                over_sse.push(m.data);
            }
        }
    }
    assert_eq!(over_sse, over_http);
}

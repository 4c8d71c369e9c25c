//! `/api/runners` and the runner WebSocket over real HTTP, a real tokio-tungstenite
//! client on the other end: tokens shown once, the handshake, the list's states, every
//! hostile message refused and then closed with nothing recorded, credentials that are
//! not a live runner token refused before the upgrade, revocation and replacement
//! ending a live connection at once, another user seeing nothing, and a runner that
//! stays quiet — before its hello, or between heartbeats — closed.

use super::{App, Cred, app, app_with, assert_error, config, eventually, json_of};
use futures::{SinkExt, StreamExt};
use mainloop_api::{ApiConfig, RunnerTimeouts};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const READ: Duration = Duration::from_secs(10);

fn hello() -> Value {
    json!({"type": "hello", "protocol": 1, "version": "9.9.9",
           "slots": 2, "labels": ["gpu", "linux-x64"], "agents": ["claude", "codex"]})
}

impl App {
    async fn create_runner(&self, name: &str) -> (Value, String) {
        let (status, body) = self.post("/api/runners", json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let token = body["token"].as_str().unwrap().to_owned();
        (body["runner"].clone(), token)
    }

    async fn runners_of(&self, token: &str) -> Vec<Value> {
        let (status, body) = self
            .call(Cred::Bearer(token), Method::GET, "/api/runners", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["runners"].as_array().unwrap().clone()
    }

    async fn runners(&self) -> Vec<Value> {
        self.runners_of(&self.token).await
    }

    /// Opens the runner WebSocket with `auth` as the `Authorization` header.
    async fn ws(&self, auth: Option<&str>) -> Result<Ws, WsError> {
        let url = format!("ws://{}/api/runners/connect", self.host);
        let mut request = url.into_client_request().unwrap();
        if let Some(auth) = auth {
            request
                .headers_mut()
                .insert("authorization", auth.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(ws, _)| ws)
    }

    /// Connects with `token` and says hello; returns the socket and the welcome.
    async fn connected(&self, token: &str) -> (Ws, Value) {
        let mut ws = self.ws(Some(&format!("Bearer {token}"))).await.unwrap();
        send(&mut ws, &hello()).await;
        let welcome = read_json(&mut ws).await;
        (ws, welcome)
    }
}

async fn send(ws: &mut Ws, msg: &Value) {
    ws.send(Message::text(msg.to_string())).await.unwrap();
}

/// The next data or close frame.
async fn next(ws: &mut Ws) -> Option<Message> {
    loop {
        let msg = tokio::time::timeout(READ, ws.next())
            .await
            .expect("the server answers in time");
        match msg {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

async fn read_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Some(Message::Text(t)) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("expected a JSON text message, got {other:?}"),
    }
}

/// The server closes the connection: a close frame (or the stream's end), nothing more.
/// Returns the close code, if a frame carried one.
async fn closed(ws: &mut Ws) -> Option<u16> {
    match next(ws).await {
        Some(Message::Close(frame)) => frame.map(|f| u16::from(f.code)),
        None => None,
        other => panic!("expected the close, got {other:?}"),
    }
}

fn status_of(e: &WsError) -> StatusCode {
    match e {
        WsError::Http(resp) => StatusCode::from_u16(resp.status().as_u16()).unwrap(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_runner_is_created_connects_and_is_listed_with_its_offer() {
    let app = app().await;
    assert!(app.runners().await.is_empty());
    let (runner, token) = app.create_runner("build-box").await;
    assert!(token.starts_with("mlr_") && token.len() > 40, "{token}");
    assert_eq!(runner["name"], "build-box");
    assert_eq!(runner["state"], "offline");
    assert_eq!(runner["slots"], Value::Null);
    assert_eq!(runner["last_seen_at"], Value::Null);
    let listed = app.runners().await;
    assert_eq!(listed, std::slice::from_ref(&runner));
    assert!(!json!(listed).to_string().contains(&token), "never listed");

    // Names: checked, and unique among runners not revoked.
    let (status, body) = app.post("/api/runners", json!({"name": "build-box"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("build-box")
    );
    for bad in ["", "has space", &"x".repeat(65), "ünï"] {
        let (status, body) = app.post("/api/runners", json!({"name": bad})).await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    assert_eq!(app.runners().await.len(), 1);

    let (mut ws, welcome) = app.connected(&token).await;
    assert_eq!(
        welcome,
        json!({"type": "welcome", "protocol": 1, "runner_id": runner["id"],
               "name": "build-box", "heartbeat_secs": 15})
    );
    let live = &app.runners().await[0];
    assert_eq!(live["state"], "connected");
    assert_eq!(live["version"], "9.9.9");
    assert_eq!(live["slots"], 2);
    assert_eq!(live["busy"], 0);
    assert_eq!(live["labels"], json!(["gpu", "linux-x64"]));
    assert_eq!(live["agents"], json!(["claude", "codex"]));
    assert!(live["last_seen_at"].is_string());

    send(&mut ws, &json!({"type": "heartbeat", "busy": 2})).await;
    eventually("busy 2", async || {
        (app.runners().await[0]["busy"] == 2).then_some(())
    })
    .await;

    // The runner leaves: offline, its last offer kept.
    ws.close(None).await.unwrap();
    let gone = eventually("offline", async || {
        let r = app.runners().await.remove(0);
        (r["state"] == "offline").then_some(r)
    })
    .await;
    assert_eq!(gone["slots"], 2);
    assert_eq!(gone["busy"], Value::Null);
    assert_eq!(gone["version"], "9.9.9");
}

#[tokio::test]
async fn hostile_messages_are_refused_then_closed_and_change_nothing() {
    let app = app().await;
    let (_, token) = app.create_runner("box").await;
    let auth = format!("Bearer {token}");
    let before = app.runners().await;
    let bad_hello = |f: &dyn Fn(&mut Value)| {
        let mut h = hello();
        f(&mut h);
        Message::text(h.to_string())
    };
    let first: Vec<(&str, Message)> = vec![
        ("malformed JSON", Message::text("{\"type\": ")),
        ("unknown type", Message::text(r#"{"type":"dance"}"#)),
        ("unknown field", bad_hello(&|h| h["extra"] = json!(1))),
        ("wrong protocol", bad_hello(&|h| h["protocol"] = json!(2))),
        ("no slots", bad_hello(&|h| h["slots"] = json!(0))),
        ("too many slots", bad_hello(&|h| h["slots"] = json!(65))),
        ("bad label", bad_hello(&|h| h["labels"] = json!(["GPU!"]))),
        ("no agents", bad_hello(&|h| h["agents"] = json!([]))),
        (
            "heartbeat first",
            Message::text(r#"{"type":"heartbeat","busy":0}"#),
        ),
        (
            "binary frame",
            Message::binary(hello().to_string().into_bytes()),
        ),
        (
            "oversized",
            Message::text(format!(
                r#"{{"type":"hello","version":"{}"}}"#,
                "x".repeat(70_000)
            )),
        ),
    ];
    for (what, msg) in first {
        let mut ws = app.ws(Some(&auth)).await.unwrap();
        ws.send(msg).await.unwrap();
        let refused = read_json(&mut ws).await;
        assert_eq!(refused["type"], "refused", "{what}: {refused}");
        assert_eq!(refused["retry"], false, "{what}");
        assert!(refused["reason"].as_str().unwrap().len() > 3, "{what}");
        let code = closed(&mut ws).await;
        if what == "oversized" {
            // The socket's reader gives up mid-frame, so the close frame may not make it
            // out before the connection drops; the refusal did.
            assert!(matches!(code, None | Some(1009)), "{what}: {code:?}");
        } else {
            assert_eq!(code, Some(1008), "{what}: {refused}");
        }
        assert_eq!(app.runners().await, before, "{what} changed nothing");
    }

    // After a good hello: a second hello, a binary frame, junk, too many busy slots.
    let after: Vec<(&str, Message)> = vec![
        ("second hello", bad_hello(&|h| h["slots"] = json!(9))),
        ("binary frame", Message::binary(vec![0, 1, 2])),
        ("malformed JSON", Message::text("[]")),
        (
            "busy beyond slots",
            Message::text(r#"{"type":"heartbeat","busy":3}"#),
        ),
    ];
    for (what, msg) in after {
        let (mut ws, welcome) = app.connected(&token).await;
        assert_eq!(welcome["type"], "welcome");
        ws.send(msg).await.unwrap();
        let refused = read_json(&mut ws).await;
        assert_eq!(refused["type"], "refused", "{what}: {refused}");
        closed(&mut ws).await;
        let r = eventually("offline", async || {
            let r = app.runners().await.remove(0);
            (r["state"] == "offline").then_some(r)
        })
        .await;
        assert_eq!(r["slots"], 2, "{what}: the first hello's offer stands");
    }
}

#[tokio::test]
async fn only_a_live_runner_token_opens_the_connection() {
    let app = app().await;
    let (runner, token) = app.create_runner("box").await;
    let session = app.login(&app.token).await;
    let api = format!("Bearer {}", app.token);
    let unknown = format!("Bearer mlr_{}", "A".repeat(43));
    let cookie_only = app.ws(None);
    assert_eq!(
        status_of(&cookie_only.await.unwrap_err()),
        StatusCode::UNAUTHORIZED
    );
    for auth in [api.as_str(), unknown.as_str(), "Bearer", "Basic eDp5"] {
        let err = app.ws(Some(auth)).await.unwrap_err();
        assert_eq!(status_of(&err), StatusCode::UNAUTHORIZED, "{auth}");
    }
    // A session cookie is not a runner's credential either.
    let url = format!("ws://{}/api/runners/connect", app.host);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "cookie",
        format!("mainloop_session={session}").parse().unwrap(),
    );
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert_eq!(status_of(&err), StatusCode::UNAUTHORIZED);
    // The 401 before an upgrade is the API's JSON error.
    let resp = app
        .request(
            Cred::Bearer(&app.token),
            Method::GET,
            "/api/runners/connect",
        )
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    // A runner token opens nothing else.
    for path in ["/api/tasks", "/api/runners", "/api/auth/me"] {
        let (status, body) = app
            .call(Cred::Bearer(&token), Method::GET, path, None)
            .await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // A plain GET with the runner token is not an upgrade.
    let (status, body) = app
        .call(
            Cred::Bearer(&token),
            Method::GET,
            "/api/runners/connect",
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    // Revoked: refused at the upgrade from then on.
    let id = runner["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Cred::Bearer(&app.token),
            Method::DELETE,
            &format!("/api/runners/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let err = app.ws(Some(&format!("Bearer {token}"))).await.unwrap_err();
    assert_eq!(status_of(&err), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoking_a_connected_runner_closes_it_at_once() {
    let app = app().await;
    let (runner, token) = app.create_runner("box").await;
    let (mut ws, _) = app.connected(&token).await;
    let id = runner["id"].as_str().unwrap();
    let (status, body) = app
        .call(
            Cred::Bearer(&app.token),
            Method::DELETE,
            &format!("/api/runners/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(read_json(&mut ws).await, json!({"type": "revoked"}));
    closed(&mut ws).await;
    let r = app.runners().await.remove(0);
    assert_eq!(r["state"], "revoked");
    assert!(r["revoked_at"].is_string());
    // Revoked runners stay listed; the name is free again.
    let (again, _) = app.create_runner("box").await;
    assert_eq!(app.runners().await[0]["id"], again["id"]);
    assert_eq!(app.runners().await.len(), 2);
}

#[tokio::test]
async fn another_user_can_neither_see_nor_revoke_a_runner() {
    let app = app().await;
    let (runner, token) = app.create_runner("box").await;
    let (mut ws, _) = app.connected(&token).await;
    let (_, bob) = app.engine.create_user("bob", false).await.unwrap();
    assert!(app.runners_of(&bob).await.is_empty());
    let id = runner["id"].as_str().unwrap();
    for path in [
        format!("/api/runners/{id}"),
        format!("/api/runners/{}", uuid::Uuid::now_v7()),
    ] {
        let (status, body) = app
            .call(Cred::Bearer(&bob), Method::DELETE, &path, None)
            .await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(app.runners().await[0]["state"], "connected");
    send(&mut ws, &json!({"type": "heartbeat", "busy": 1})).await;
    eventually("busy 1", async || {
        (app.runners().await[0]["busy"] == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_token_replaces_the_first() {
    let app = app().await;
    let (_, token) = app.create_runner("box").await;
    let (mut first, _) = app.connected(&token).await;
    let (mut second, welcome) = app.connected(&token).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(
        read_json(&mut first).await,
        json!({"type": "refused", "reason": "another runner connected with this token",
               "retry": false})
    );
    closed(&mut first).await;
    // The first one's going does not take the second offline.
    send(&mut second, &json!({"type": "heartbeat", "busy": 1})).await;
    let r = eventually("the second connection's heartbeat", async || {
        let r = app.runners().await.remove(0);
        (r["busy"] == 1).then_some(r)
    })
    .await;
    assert_eq!(r["state"], "connected");
}

/// A server that waits 400 ms for a hello and closes a runner silent for 1.2 s.
async fn impatient() -> App {
    let timeouts = RunnerTimeouts {
        hello: Duration::from_millis(400),
        silence: Duration::from_millis(1200),
    };
    app_with(
        ApiConfig {
            runner_timeouts: timeouts,
            ..config()
        },
        false,
    )
    .await
}

#[tokio::test]
async fn a_runner_that_never_says_hello_is_refused_and_never_listed_connected() {
    let app = impatient().await;
    let (_, token) = app.create_runner("mute").await;
    let mut ws = app.ws(Some(&format!("Bearer {token}"))).await.unwrap();
    let refused = read_json(&mut ws).await;
    assert_eq!(refused["type"], "refused", "{refused}");
    assert_eq!(refused["retry"], false, "{refused}");
    assert!(
        refused["reason"].as_str().unwrap().contains("no hello"),
        "{refused}"
    );
    assert_eq!(closed(&mut ws).await, Some(1008));
    let r = app.runners().await.remove(0);
    assert_eq!(r["state"], "offline");
    assert_eq!(r["last_seen_at"], Value::Null, "it never connected");
}

#[tokio::test]
async fn a_runner_is_kept_while_it_beats_and_closed_once_it_falls_silent() {
    let app = impatient().await;
    let (_, token) = app.create_runner("quiet").await;
    let (mut ws, welcome) = app.connected(&token).await;
    assert_eq!(welcome["type"], "welcome");
    // Heartbeats for more than twice the allowed silence: still connected.
    for _ in 0..10 {
        send(&mut ws, &json!({"type": "heartbeat", "busy": 0})).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(app.runners().await[0]["state"], "connected");
    // Then nothing: closed as gone away, and listed offline.
    assert_eq!(closed(&mut ws).await, Some(1001));
    eventually("offline", async || {
        (app.runners().await[0]["state"] == "offline").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_tasks_own_runner_is_listed_with_it_and_a_new_token_ends_the_old_one() {
    let app = app().await;
    let owner = app
        .engine
        .authenticate_token(&app.token)
        .await
        .unwrap()
        .unwrap();
    let task = mainloop_domain::TaskId::new_v7(mainloop_domain::Timestamp::from_millis(1));
    let first = app.engine.task_runner_token(owner.id, task).await.unwrap();
    let (_ws, welcome) = app.connected(&first).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let listed = app.runners().await.remove(0);
    assert_eq!(listed["task_id"], task.to_string(), "{listed}");
    assert_eq!(listed["name"], format!("task-{task}"));

    // Given a new token, the old one no longer connects; the runner is the same.
    let second = app.engine.task_runner_token(owner.id, task).await.unwrap();
    let err = app.ws(Some(&format!("Bearer {first}"))).await.unwrap_err();
    assert_eq!(status_of(&err), StatusCode::UNAUTHORIZED);
    let (_ws2, _) = app.connected(&second).await;
    assert_eq!(app.runners().await.len(), 1);
    assert_eq!(app.runners().await[0]["id"], listed["id"]);

    // The task is over: its runner is revoked, and a free runner has no task.
    app.engine.revoke_task_runner(task).await.unwrap();
    assert_eq!(app.runners().await[0]["state"], "revoked");
    let (free, _) = app.create_runner("box").await;
    assert_eq!(free["task_id"], Value::Null);
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The API over real HTTP: a real engine on SQLite in a temp dir, the router served on
//! an ephemeral port, and reqwest as the client.

use futures::StreamExt;
use futures::stream::BoxStream;
use mainloop_api::{ApiConfig, openapi, router, router_with_shutdown};
use mainloop_domain::TaskId;
use mainloop_domain::question::{Question, QuestionOption};
use mainloop_domain::task::TaskEvent;
use mainloop_engine::{Engine, EngineConfig};
use mainloop_test_support::{Database, EngineWorld, wait_for_within};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "it/agents.rs"]
mod agents;
#[path = "it/contract.rs"]
mod contract;
#[path = "it/digests.rs"]
mod digests;
#[path = "it/hostile.rs"]
mod hostile;
#[path = "it/labels.rs"]
mod labels;
#[path = "it/mcp.rs"]
mod mcp;
#[path = "it/notes.rs"]
mod notes;
#[path = "it/preview.rs"]
mod preview;
#[path = "it/repos.rs"]
mod repos;
#[path = "it/runner_git.rs"]
mod runner_git;
#[path = "it/runner_state.rs"]
mod runner_state;
#[path = "it/runners.rs"]
mod runners;
#[path = "it/search.rs"]
mod search;
#[path = "it/signin.rs"]
mod signin;
#[path = "it/system.rs"]
mod system;

/// An app (no background work) on SQLite (`None`) or on the PostgreSQL database named.
async fn server(database: Option<String>) -> App {
    app_from(Setup {
        start: false,
        database,
        ..Setup::default()
    })
    .await
}

/// SQLite, then a fresh PostgreSQL database: the two backends a test runs on.
async fn databases() -> [Option<String>; 2] {
    [
        None,
        Some(mainloop_testpg::fresh_database_url().await.unwrap()),
    ]
}

const VERSION: &str = "test-1.2.3";
const PUBLIC_URL: &str = "https://mainloop.example";

fn config() -> ApiConfig {
    ApiConfig {
        auth_enabled: true,
        max_body_bytes: 1 << 20,
        secure_cookies: false,
        version: VERSION.into(),
        runner_timeouts: mainloop_api::RunnerTimeouts::default(),
    }
}

/// One running server with its engine and the owner's API token.
struct App {
    base: String,
    host: String,
    client: Client,
    engine: Engine,
    token: String,
    shutdown: CancellationToken,
    _world: EngineWorld,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn app() -> App {
    app_with(config(), false).await
}

/// Starts an app; `stoppable` serves [`router_with_shutdown`] tied to the app's token.
async fn app_with(config: ApiConfig, stoppable: bool) -> App {
    app_from(Setup {
        config,
        stoppable,
        ..Setup::default()
    })
    .await
}

/// How [`app_from`] builds an app.
struct Setup {
    config: ApiConfig,
    engine: EngineConfig,
    /// Start the engine's dispatcher and event fan-out; without them no background job
    /// changes anything behind a test's back.
    start: bool,
    stoppable: bool,
    /// A database URL; default: SQLite in the app's temp dir.
    database: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            config: config(),
            engine: EngineConfig::default(),
            start: true,
            stoppable: false,
            database: None,
        }
    }
}

async fn app_from(setup: Setup) -> App {
    let Setup {
        config,
        engine: engine_config,
        start,
        stoppable,
        database,
    } = setup;
    let database = database.map_or_else(Database::sqlite, Database::at);
    let world = EngineWorld::new(database, None, engine_config).await;
    let (engine, token, shutdown) = (
        world.engine.clone(),
        world.token.clone(),
        world.shutdown.clone(),
    );
    // As the binary does: notification delivery is part of the stack under test.
    mainloop_push::install(
        &engine,
        mainloop_push::PushConfig::new("mailto:ops@example.com", Some(PUBLIC_URL.to_owned())),
    )
    .unwrap();
    if start {
        world.start().await;
    }
    let routes = if stoppable {
        router_with_shutdown(engine.clone(), config, shutdown.clone())
    } else {
        router(engine.clone(), config)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, routes)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    App {
        base: format!("http://{addr}"),
        host: addr.to_string(),
        client: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        engine,
        token,
        shutdown,
        _world: world,
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Cred<'a> {
    None,
    Bearer(&'a str),
    /// A session cookie, with an Origin header matching the server.
    Cookie(&'a str),
    /// A session cookie and no Origin header.
    CookieNoOrigin(&'a str),
    Header(&'a str, &'a str),
}

impl App {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.host)
    }

    fn request(&self, cred: Cred<'_>, method: Method, path: &str) -> RequestBuilder {
        let rb = self.client.request(method, self.url(path));
        match cred {
            Cred::None => rb,
            Cred::Bearer(t) => rb.bearer_auth(t),
            Cred::Cookie(s) => rb
                .header("cookie", format!("mainloop_session={s}"))
                .header("origin", self.origin()),
            Cred::CookieNoOrigin(s) => rb.header("cookie", format!("mainloop_session={s}")),
            Cred::Header(name, value) => rb.header(name, value),
        }
    }

    async fn call(
        &self,
        cred: Cred<'_>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.request(cred, method, path);
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        json_of(rb.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Cred::Bearer(&self.token), Method::GET, path, None)
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Cred::Bearer(&self.token), Method::POST, path, Some(body))
            .await
    }

    async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        self.call(Cred::Bearer(&self.token), Method::POST, path, None)
            .await
    }

    /// Sends raw bytes with a content type.
    async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> (StatusCode, Value) {
        let resp = self
            .request(Cred::Bearer(&self.token), Method::POST, path)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        json_of(resp).await
    }

    async fn create_task(&self, description: &str, skip_plan: bool) -> Value {
        let (status, task) = self
            .post(
                "/api/tasks",
                json!({"description": description, "repo": "acme/widgets", "skip_plan": skip_plan}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        task
    }

    /// Signs in with `token` and returns the session cookie's value.
    async fn login(&self, token: &str) -> String {
        let resp = self
            .client
            .post(self.url("/api/auth/login"))
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        session_from(resp.headers())
    }

    /// Everything the user can see that bad requests must not change.
    async fn snapshot(&self, token: &str) -> Value {
        let mut all = Vec::new();
        for path in [
            "/api/tasks",
            "/api/inbox",
            "/api/projects",
            "/api/chat/messages",
        ] {
            let (status, body) = self
                .call(Cred::Bearer(token), Method::GET, path, None)
                .await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            all.push(body);
        }
        Value::Array(all)
    }

    /// Drives a task with lifecycle events, as a worker would.
    async fn drive(&self, task: &Value, events: Vec<TaskEvent>) {
        let id: TaskId = task["id"].as_str().unwrap().parse().unwrap();
        for e in events {
            self.engine.apply_task_event(None, id, e).await.unwrap();
        }
    }
}

async fn json_of(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    if bytes.is_empty() {
        return (status, Value::Null);
    }
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "status {status}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, body)
}

fn session_from(headers: &HeaderMap) -> String {
    let cookie = headers
        .get("set-cookie")
        .expect("a Set-Cookie header")
        .to_str()
        .unwrap();
    let pair = cookie.split(';').next().unwrap();
    pair.strip_prefix("mainloop_session=").unwrap().to_owned()
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "q1".into(),
            header: "DB".into(),
            question: "Which database?".into(),
            options: vec![
                QuestionOption {
                    label: "SQLite".into(),
                    description: "embedded".into(),
                },
                QuestionOption {
                    label: "PostgreSQL".into(),
                    description: "server".into(),
                },
            ],
            multi_select: false,
        },
        Question {
            id: "q2".into(),
            header: "Name".into(),
            question: "What should it be called?".into(),
            options: vec![],
            multi_select: false,
        },
    ]
}

// ---------------------------------------------------------------------------------
// Server-sent events

#[derive(Clone, Debug)]
struct SseMsg {
    id: i64,
    event: String,
    data: Value,
}

struct SseReader {
    stream: BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buf: String,
    ended: bool,
}

impl SseReader {
    async fn open(app: &App, token: &str, path: &str, last_event_id: Option<i64>) -> Self {
        let mut rb = app.request(Cred::Bearer(token), Method::GET, path);
        if let Some(id) = last_event_id {
            rb = rb.header("last-event-id", id.to_string());
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let ct = resp.headers()["content-type"].to_str().unwrap();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Self {
            stream: resp.bytes_stream().boxed(),
            buf: String::new(),
            ended: false,
        }
    }

    /// Reads until `n` events arrived, the stream ended, or `timeout` passed.
    async fn read(&mut self, n: usize, timeout: Duration) -> Vec<SseMsg> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && !self.ended {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(msg) = parse_block(&block) {
                    out.push(msg);
                }
            }
            if out.len() >= n {
                break;
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => break,
                Ok(None) => self.ended = true,
                Ok(Some(chunk)) => match chunk {
                    Ok(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                    Err(_) => self.ended = true,
                },
            }
        }
        out
    }
}

fn parse_block(block: &str) -> Option<SseMsg> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.parse::<i64>().unwrap()),
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            _ => {} // comments (keep-alive) and unknown fields
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(SseMsg {
        id: id.expect("every event has an id"),
        event: event.expect("every event has a name"),
        data: serde_json::from_str(&data.join("\n")).unwrap(),
    })
}

/// Waits until the thread holds `n` assistant replies.
async fn wait_for_replies(app: &App, n: usize) {
    wait_for_within(WAIT, format!("{n} replies"), || async {
        let (_, page) = app.get("/api/chat/messages?limit=500").await;
        let replies = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "assistant")
            .count();
        (replies >= n).then_some(())
    })
    .await;
}

fn ids(msgs: &[SseMsg]) -> Vec<i64> {
    msgs.iter().map(|m| m.id).collect()
}

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------
// The OpenAPI document

const PUBLIC: [&str; 5] = [
    "/api/health",
    "/api/auth/login",
    "/api/auth/link",
    "/api/openapi.json",
    "/api/webhooks/github",
];

const ROUTES: [(&str, &str); 55] = [
    ("GET", "/api/health"),
    ("GET", "/api/model"),
    ("GET", "/api/agents"),
    ("GET", "/api/system"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/link"),
    ("POST", "/api/auth/logout"),
    ("GET", "/api/auth/me"),
    ("POST", "/api/chat"),
    ("GET", "/api/chat/messages"),
    ("GET", "/api/tasks"),
    ("POST", "/api/tasks"),
    ("GET", "/api/tasks/{id}"),
    ("POST", "/api/tasks/{id}/answers"),
    ("POST", "/api/tasks/{id}/plan"),
    ("POST", "/api/tasks/{id}/review"),
    ("POST", "/api/tasks/{id}/cancel"),
    ("POST", "/api/tasks/{id}/retry"),
    ("GET", "/api/tasks/{id}/transcript"),
    ("GET", "/api/tasks/{id}/diff"),
    ("GET", "/api/tasks/{id}/plans"),
    ("POST", "/api/tasks/{id}/budget"),
    ("POST", "/api/tasks/{id}/preview"),
    ("DELETE", "/api/tasks/{id}/preview"),
    ("GET", "/api/usage"),
    ("GET", "/api/budgets"),
    ("PUT", "/api/budgets"),
    ("GET", "/api/pause"),
    ("POST", "/api/pause"),
    ("POST", "/api/resume"),
    ("GET", "/api/inbox"),
    ("POST", "/api/inbox/{id}/read"),
    ("GET", "/api/notifications"),
    ("POST", "/api/notifications/push"),
    ("DELETE", "/api/notifications/push/{id}"),
    ("PUT", "/api/notifications/ntfy"),
    ("POST", "/api/notifications/test"),
    ("GET", "/api/projects"),
    ("GET", "/api/projects/{id}"),
    ("GET", "/api/search"),
    ("GET", "/api/notes"),
    ("POST", "/api/notes"),
    ("PUT", "/api/notes/{id}"),
    ("DELETE", "/api/notes/{id}"),
    ("GET", "/api/runners"),
    ("POST", "/api/runners"),
    ("DELETE", "/api/runners/{id}"),
    ("GET", "/api/runners/connect"),
    ("GET", "/api/digests"),
    ("GET", "/api/digests/{id}"),
    ("GET", "/api/settings/time-zone"),
    ("PUT", "/api/settings/time-zone"),
    ("GET", "/api/events"),
    ("POST", "/api/webhooks/github"),
];

/// Every (method, path template) in the document, with the operation as JSON.
fn documented_operations() -> Vec<(Method, String, Value)> {
    let doc = openapi();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            out.push((method, path.clone(), op.clone()));
        }
    }
    out
}

/// A concrete URL for a path template: every `{param}` becomes a random uuid.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                Uuid::new_v4().to_string()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_protected_route_rejects_missing_wrong_and_dead_credentials() {
    let app = app().await;
    let logged_out = app.login(&app.token).await;
    let (status, _) = app
        .call(
            Cred::Cookie(&logged_out),
            Method::POST,
            "/api/auth/logout",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // An engine with a zero session lifetime over the same store mints sessions that
    // are expired on arrival.
    let short = Engine::new(
        app.engine.store_for_tests().clone(),
        None,
        EngineConfig {
            session_ttl: Duration::ZERO,
            ..EngineConfig::default()
        },
    );
    let (_, expired, _) = short.login(&app.token).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = app.snapshot(&app.token).await;

    let ops = documented_operations();
    assert_eq!(ops.len(), ROUTES.len());
    let mut checked = 0;
    for (method, template, op) in &ops {
        let path = concrete(template);
        let body = (*method == Method::POST).then(|| json!({}));
        if PUBLIC.contains(&template.as_str()) {
            assert_eq!(op["security"], json!([{}]), "{template} is public");
            let (status, body) = app
                .call(Cred::None, method.clone(), &path, body.clone())
                .await;
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{template}: {body}");
            continue;
        }
        assert!(
            op.get("security").is_none(),
            "{template} uses the global security"
        );
        let basic = format!("Basic {}", app.token);
        let creds = [
            Cred::None,
            Cred::Bearer("mlt_not-a-real-token"),
            Cred::Header("authorization", &basic),
            Cred::Header("authorization", "Bearer"),
            Cred::Cookie(&logged_out),
            Cred::Cookie(&expired),
            Cred::Cookie("mls_forged"),
        ];
        for cred in creds {
            let resp = {
                let mut rb = app.request(cred, method.clone(), &path);
                if let Some(b) = &body {
                    rb = rb.json(b);
                }
                rb.send().await.unwrap()
            };
            assert_eq!(
                resp.headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{method} {template}"
            );
            let (status, body) = json_of(resp).await;
            assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
            checked += 1;
        }
    }
    assert_eq!(checked, (ROUTES.len() - PUBLIC.len()) * 7);
    assert_eq!(app.snapshot(&app.token).await, before);
}

#[tokio::test]
async fn cookie_sessions_and_csrf() {
    let app = app().await;
    let (status, body) = app
        .call(
            Cred::None,
            Method::POST,
            "/api/auth/login",
            Some(json!({"token": "mlt_wrong"})),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    let resp = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&json!({"token": app.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("mainloop_session=mls_"), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=2592000"] {
        assert!(cookie.split("; ").any(|a| a == attr), "{attr} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let session = session_from(resp.headers());
    let (_, body) = json_of(resp).await;
    assert_eq!(body["user"]["name"], "owner");
    assert_eq!(body["user"]["is_owner"], true);

    // Reads need no Origin.
    let (status, me) = app
        .call(
            Cred::CookieNoOrigin(&session),
            Method::GET,
            "/api/auth/me",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "owner");
    let (status, _) = app
        .call(
            Cred::CookieNoOrigin(&session),
            Method::GET,
            "/api/tasks",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // A reverse proxy's Basic auth does not get in the way; a wrong bearer token does.
    let resp = app
        .request(Cred::CookieNoOrigin(&session), Method::GET, "/api/auth/me")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .request(Cred::CookieNoOrigin(&session), Method::GET, "/api/auth/me")
        .bearer_auth("mlt_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Changes need a matching Origin.
    let task = json!({"description": "d", "repo": "r"});
    let cookie_header = format!("mainloop_session={session}");
    for origin in [
        None,
        Some("http://evil.example"),
        Some("null"),
        Some("http://127.0.0.1:1"),
        Some("http://localhost"),
    ] {
        let mut rb = app
            .client
            .post(app.url("/api/tasks"))
            .header("cookie", &cookie_header)
            .json(&task);
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        let (status, body) = json_of(rb.send().await.unwrap()).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    assert_eq!(app.get("/api/tasks").await.1["tasks"], json!([]));
    let (status, _) = app
        .call(
            Cred::Cookie(&session),
            Method::POST,
            "/api/tasks",
            Some(task.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Bearer requests are exempt: browsers never attach them on their own.
    let resp = app
        .request(Cred::Bearer(&app.token), Method::POST, "/api/tasks")
        .header("origin", "http://evil.example")
        .json(&task)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // A foreign page cannot sign the browser in either.
    let (status, body) = app
        .call(
            Cred::Header("origin", "http://evil.example"),
            Method::POST,
            "/api/auth/login",
            Some(json!({"token": app.token})),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");

    // Logout is a change too.
    let (status, _) = app
        .call(
            Cred::CookieNoOrigin(&session),
            Method::POST,
            "/api/auth/logout",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let resp = app
        .request(Cred::Cookie(&session), Method::POST, "/api/auth/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let cleared = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("mainloop_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (status, body) = app
        .call(
            Cred::CookieNoOrigin(&session),
            Method::GET,
            "/api/auth/me",
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    // Secure cookies when served over https.
    let secure = app_with(
        ApiConfig {
            secure_cookies: true,
            ..config()
        },
        false,
    )
    .await;
    let resp = secure
        .client
        .post(secure.url("/api/auth/login"))
        .json(&json!({"token": secure.token}))
        .send()
        .await
        .unwrap();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.split("; ").any(|a| a == "Secure"), "{cookie}");
}

#[tokio::test]
async fn tasks_lifecycle_and_bad_input_changes_nothing() {
    let app = app().await;
    let task = app.create_task("Add a health endpoint\nwith details", false);
    let task = task.await;
    for field in [
        "id",
        "state",
        "description",
        "repo",
        "branch",
        "questions",
        "plan",
        "cost_usd",
        "created_at",
        "updated_at",
    ] {
        assert!(task.get(field).is_some(), "{field} in {task}");
    }
    assert_eq!(task["state"], "queued");
    assert_eq!(task["repo"], "acme/widgets");
    assert_eq!(task["skip_plan"], false);
    assert_eq!(task["model"], Value::Null);
    assert_eq!(task["agent"], "claude");
    let id = task["id"].as_str().unwrap().to_owned();

    let (status, got) = app.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, task);
    let (_, list) = app.get("/api/tasks").await;
    assert_eq!(list["tasks"], json!([task]));
    let (_, list) = app.get("/api/tasks?state=queued,planning").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);
    let (_, list) = app.get("/api/tasks?state=cancelled").await;
    assert_eq!(list["tasks"], json!([]));
    let (_, list) = app.get("/api/tasks?limit=1").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);

    let before = app.snapshot(&app.token).await;
    let t = |suffix: &str| format!("/api/tasks/{id}{suffix}");
    let unknown = format!("/api/tasks/{}", Uuid::new_v4());
    let cases: Vec<(StatusCode, Value, StatusCode, &str)> = vec![
        {
            let (s, b) = app.post(&t("/answers"), json!({"answers": {}})).await;
            (s, b, StatusCode::CONFLICT, "wrong_state")
        },
        // The state is checked before the content: a task that asked nothing cannot
        // take answers, however they look.
        {
            let (s, b) = app
                .post(&t("/answers"), json!({"answers": {"q1": ["A"]}}))
                .await;
            (s, b, StatusCode::CONFLICT, "wrong_state")
        },
        {
            let (s, b) = app.post_empty(&t("/retry")).await;
            (s, b, StatusCode::CONFLICT, "wrong_state")
        },
        {
            let (s, b) = app.post(&t("/plan"), json!({"action": "approve"})).await;
            (s, b, StatusCode::CONFLICT, "wrong_state")
        },
        {
            let (s, b) = app.post(&t("/plan"), json!({"action": "revise"})).await;
            (s, b, StatusCode::CONFLICT, "wrong_state")
        },
        {
            let (s, b) = app
                .post(&t("/plan"), json!({"action": "revise", "feedback": "  "}))
                .await;
            (s, b, StatusCode::CONFLICT, "wrong_state")
        },
        {
            let (s, b) = app.post(&t("/plan"), json!({"action": "bogus"})).await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
        {
            let (s, b) = app.post(&t("/review"), json!({"action": "changes"})).await;
            (s, b, StatusCode::CONFLICT, "wrong_state")
        },
        {
            let (s, b) = app.post(&t("/review"), json!({"action": "approve"})).await;
            (s, b, StatusCode::CONFLICT, "wrong_state")
        },
        {
            let (s, b) = app.get(&unknown).await;
            (s, b, StatusCode::NOT_FOUND, "not_found")
        },
        {
            let (s, b) = app.post_empty(&format!("{unknown}/cancel")).await;
            (s, b, StatusCode::NOT_FOUND, "not_found")
        },
        {
            let (s, b) = app.get("/api/tasks/not-a-uuid").await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
        {
            let (s, b) = app.post_empty("/api/tasks/not-a-uuid/cancel").await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
        {
            let (s, b) = app
                .post_raw("/api/tasks", "application/json", r#"{"description": "x", "#)
                .await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
        {
            let (s, b) = app.post("/api/tasks", json!({"description": "x"})).await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
        {
            let (s, b) = app
                .post("/api/tasks", json!({"description": 5, "repo": "r"}))
                .await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
        {
            let (s, b) = app.post("/api/tasks", json!([1, 2])).await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
        {
            let (s, b) = app
                .post(
                    "/api/tasks",
                    json!({"description": "x", "repo": "r", "model": "rm -rf /"}),
                )
                .await;
            (s, b, StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        },
        {
            let (s, b) = app
                .post_raw(
                    "/api/tasks",
                    "text/plain",
                    r#"{"description": "x", "repo": "r"}"#,
                )
                .await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
        {
            let (s, b) = app.post_empty("/api/tasks").await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
        {
            let (s, b) = app
                .post("/api/tasks", json!({"description": "  ", "repo": "r"}))
                .await;
            (s, b, StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        },
        {
            let (s, b) = app.get("/api/tasks?state=bogus").await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
        {
            let (s, b) = app.get("/api/tasks?limit=many").await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
        {
            let (s, b) = app.post("/api/chat", json!({"text": " "})).await;
            (s, b, StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        },
        {
            let (s, b) = app.post("/api/chat", json!({"txt": "hi"})).await;
            (s, b, StatusCode::BAD_REQUEST, "bad_request")
        },
    ];
    for (i, (status, body, want, code)) in cases.iter().enumerate() {
        assert_eq!(*status, *want, "case {i}: {body}");
        assert_error(*status, body, *want, code);
    }
    assert_eq!(app.snapshot(&app.token).await, before);

    let (status, cancelled) = app.post_empty(&t("/cancel")).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let after_cancel = app.snapshot(&app.token).await;
    let (status, body) = app.post_empty(&t("/cancel")).await;
    assert_error(status, &body, StatusCode::CONFLICT, "wrong_state");
    let (status, body) = app.post(&t("/plan"), json!({"action": "cancel"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "wrong_state");
    assert_eq!(app.snapshot(&app.token).await, after_cancel);
    let (_, list) = app.get("/api/tasks?state=cancelled").await;
    assert_eq!(list["tasks"][0]["id"], id.as_str());

    // Projects come with tasks.
    let (_, projects) = app.get("/api/projects").await;
    let projects = projects["projects"].as_array().unwrap().clone();
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0]["repo"], "acme/widgets");
    assert_eq!(task["project_id"], projects[0]["id"]);
    let pid = projects[0]["id"].as_str().unwrap();
    let (status, project) = app.get(&format!("/api/projects/{pid}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(project, projects[0]);
    let (status, body) = app.get(&format!("/api/projects/{}", Uuid::new_v4())).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/api/projects/xyz").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn plan_revisions_are_kept_with_the_feedback_that_led_to_each() {
    let app = app().await;
    let task = app.create_task("Planned work", false).await;
    let id = task["id"].as_str().unwrap();
    let plans = format!("/api/tasks/{id}/plans");
    assert_eq!(app.get(&plans).await.1, json!({"revisions": []}));
    app.drive(
        &task,
        vec![
            TaskEvent::SlotGranted,
            TaskEvent::PlanProposed("1. read\n2. write".into()),
        ],
    )
    .await;
    let (status, revised) = app
        .post(
            &format!("/api/tasks/{id}/plan"),
            json!({"action": "revise", "feedback": "add tests"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revised}");
    assert_eq!(revised["state"], "planning");
    let (status, body) = app.get(&plans).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revisions"][0]["feedback"], "add tests");

    app.drive(
        &task,
        vec![TaskEvent::PlanProposed("1. read\n2. write\n3. test".into())],
    )
    .await;
    let (status, body) = app.get(&plans).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let revs = body["revisions"].as_array().unwrap();
    assert_eq!(revs.len(), 2, "{body}");
    assert_eq!(revs[0]["revision"], 1);
    assert_eq!(revs[0]["plan"], "1. read\n2. write");
    assert_eq!(revs[1]["revision"], 2);
    assert_eq!(revs[1]["plan"], "1. read\n2. write\n3. test");
    assert_eq!(revs[1]["feedback"], Value::Null);
    assert!(revs[1]["created_at"].is_string(), "{body}");

    let (status, body) = app.get("/api/tasks/not-a-uuid/plans").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let unknown = TaskId::new_v7(mainloop_domain::Timestamp::from_millis(1_000));
    let (status, body) = app.get(&format!("/api/tasks/{unknown}/plans")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = app_with(
        ApiConfig {
            max_body_bytes: 1024,
            ..config()
        },
        false,
    )
    .await;
    let before = app.snapshot(&app.token).await;
    let big = "x".repeat(4096);
    let (status, body) = app
        .post("/api/tasks", json!({"description": big, "repo": "r"}))
        .await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let (status, body) = app.post("/api/chat", json!({"text": big})).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // Without a Content-Length the limit holds as well.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok(r#"{"text":""#.to_owned()),
        Ok(big.clone()),
        Ok(r#""}"#.to_owned()),
    ];
    let resp = app
        .request(Cred::Bearer(&app.token), Method::POST, "/api/chat")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // A route that reads raw bytes answers in the same shape.
    let (status, body) = app
        .post_raw("/api/webhooks/github", "application/json", &big)
        .await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert_eq!(app.snapshot(&app.token).await, before);
    app.create_task("small enough", false).await;
}

#[tokio::test]
async fn users_only_see_their_own_things() {
    let app = app().await;
    let (_, bob) = app.engine.create_user("bob", false).await.unwrap();
    let mut bob_events = SseReader::open(&app, &bob, "/api/events", None).await;

    let task = app.create_task("Owner's secret work", false).await;
    app.drive(
        &task,
        vec![
            TaskEvent::SlotGranted,
            TaskEvent::AgentFailed("boom".into()),
        ],
    )
    .await;
    let (status, _) = app
        .post("/api/chat", json!({"text": "owner says hi"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for_replies(&app, 1).await;
    let (_, inbox) = app.get("/api/inbox").await;
    let item = inbox["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, projects) = app.get("/api/projects").await;
    let project = projects["projects"][0]["id"].as_str().unwrap().to_owned();
    let id = task["id"].as_str().unwrap();
    let owner_before = app.snapshot(&app.token).await;

    let as_bob = |method: Method, path: String, body: Option<Value>| {
        let app = &app;
        let bob = bob.clone();
        async move { app.call(Cred::Bearer(&bob), method, &path, body).await }
    };
    for (method, path, body) in [
        (Method::GET, format!("/api/tasks/{id}"), None),
        (Method::GET, format!("/api/tasks/{id}/transcript"), None),
        (Method::GET, format!("/api/tasks/{id}/diff"), None),
        (Method::GET, format!("/api/tasks/{id}/plans"), None),
        (Method::POST, format!("/api/tasks/{id}/cancel"), None),
        (Method::POST, format!("/api/tasks/{id}/retry"), None),
        (
            Method::POST,
            format!("/api/tasks/{id}/answers"),
            Some(json!({"answers": {}})),
        ),
        (
            Method::POST,
            format!("/api/tasks/{id}/plan"),
            Some(json!({"action": "approve"})),
        ),
        (
            Method::POST,
            format!("/api/tasks/{id}/review"),
            Some(json!({"action": "approve"})),
        ),
        (
            Method::POST,
            format!("/api/inbox/{item}/read"),
            Some(json!({"read": true})),
        ),
        (Method::GET, format!("/api/projects/{project}"), None),
    ] {
        let (status, body) = as_bob(method.clone(), path.clone(), body).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    let (_, me) = as_bob(Method::GET, "/api/auth/me".into(), None).await;
    assert_eq!(me["name"], "bob");
    let (_, tasks) = as_bob(Method::GET, "/api/tasks".into(), None).await;
    assert_eq!(tasks, json!({"tasks": []}));
    let (_, inbox) = as_bob(Method::GET, "/api/inbox".into(), None).await;
    assert_eq!(inbox, json!({"items": [], "needs_you": 0}));
    let (_, messages) = as_bob(Method::GET, "/api/chat/messages".into(), None).await;
    assert_eq!(messages, json!({"messages": [], "has_more": false}));
    let (_, projects) = as_bob(Method::GET, "/api/projects".into(), None).await;
    assert_eq!(projects, json!({"projects": []}));
    assert_eq!(app.snapshot(&app.token).await, owner_before);

    // Nothing of the owner's reached bob's stream, not even from the start of the log.
    assert!(bob_events.read(1, QUIET).await.is_empty());
    let mut bob_all = SseReader::open(&app, &bob, "/api/events?after=0", None).await;
    assert!(bob_all.read(1, QUIET).await.is_empty());
    // Bob's own events do arrive.
    let (status, _) = as_bob(
        Method::POST,
        "/api/chat".into(),
        Some(json!({"text": "bob here"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = bob_events.read(2, WAIT).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].data["text"], "bob here");
    assert_eq!(got[1].data["role"], "assistant");
}

#[tokio::test]
async fn chat_replies_stream_and_resume_from_any_event() {
    let app = app().await;
    let mut live = SseReader::open(&app, &app.token, "/api/events", None).await;
    let (status, posted) = app.post("/api/chat", json!({"text": "hello there"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let message_id = posted["message_id"].as_str().unwrap().to_owned();

    let first = live.read(2, WAIT).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|m| m.event == "chat.message"));
    assert_eq!(first[0].data["id"], message_id.as_str());
    assert_eq!(first[0].data["role"], "user");
    assert_eq!(first[0].data["text"], "hello there");
    assert_eq!(first[1].data["role"], "assistant");
    let reply = first[1].data["text"].as_str().unwrap();
    // Both ways out: Claude Code's own login, or an API key.
    assert!(reply.contains("I cannot answer yet"), "{reply}");
    assert!(
        reply.contains("claude login") && reply.contains("ANTHROPIC_API_KEY"),
        "{reply}"
    );
    assert!(first[0].id < first[1].id);

    // More events so the resume has several to replay.
    let task = app.create_task("resume me", false).await;
    let more = live.read(2, WAIT).await;
    assert_eq!(
        more.iter().map(|m| m.event.as_str()).collect::<Vec<_>>(),
        ["chat.message", "task.updated"]
    );
    assert_eq!(more[1].data["id"], task["id"]);
    let all: Vec<i64> = ids(&first).into_iter().chain(ids(&more)).collect();
    assert!(live.read(1, QUIET).await.is_empty());

    // Resume with the header, with the query, and the header winning over the query.
    let after_first: Vec<i64> = all[1..].to_vec();
    let mut by_header = SseReader::open(&app, &app.token, "/api/events", Some(all[0])).await;
    assert_eq!(ids(&by_header.read(10, QUIET).await), after_first);
    let mut by_query = SseReader::open(
        &app,
        &app.token,
        &format!("/api/events?after={}", all[0]),
        None,
    )
    .await;
    assert_eq!(ids(&by_query.read(10, QUIET).await), after_first);
    let mut both = SseReader::open(&app, &app.token, "/api/events?after=0", Some(all[2])).await;
    assert_eq!(ids(&both.read(10, QUIET).await), all[3..].to_vec());
    let mut from_start = SseReader::open(&app, &app.token, "/api/events?after=0", None).await;
    let replay = from_start.read(10, QUIET).await;
    assert!(ids(&replay).ends_with(&all), "{replay:?}");
    // Resumed streams stay live.
    app.post("/api/chat", json!({"text": "again"})).await;
    let next = by_header.read(2, WAIT).await;
    assert_eq!(next.len(), 2);
    assert!(next[0].id > all[3]);
    assert_eq!(next[0].data["text"], "again");
    assert_eq!(next[1].data["role"], "assistant");

    let (status, body) = app
        .call(
            Cred::Header("last-event-id", "seven"),
            Method::GET,
            "/api/events",
            None,
        )
        .await;
    // Without credentials the 401 comes first; with them, the bad header is a 400.
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let resp = app
        .request(Cred::Bearer(&app.token), Method::GET, "/api/events")
        .header("last-event-id", "seven")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = app.get("/api/events?after=x").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    // The stored thread: oldest first, pageable backwards.
    let (status, page) = app.get("/api/chat/messages").await;
    assert_eq!(status, StatusCode::OK);
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(page["has_more"], false);
    for m in messages {
        for field in ["id", "role", "text", "created_at"] {
            assert!(m.get(field).is_some(), "{field} in {m}");
        }
    }
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles[..2], ["user", "assistant"]);
    assert!(roles.contains(&"event"), "{roles:?}");
    assert_eq!(messages[0]["id"], message_id.as_str());
    assert_eq!(messages[1]["text"], reply);

    let (_, last) = app.get("/api/chat/messages?limit=1").await;
    assert_eq!(last["has_more"], true);
    assert_eq!(last["messages"].as_array().unwrap().len(), 1);
    let second = messages[1]["id"].as_str().unwrap();
    let (_, older) = app
        .get(&format!("/api/chat/messages?limit=5&before={second}"))
        .await;
    assert_eq!(older["messages"], json!([messages[0]]));
    assert_eq!(older["has_more"], false);
    let (_, with_tools) = app
        .get("/api/chat/messages?include_tool_results=true")
        .await;
    assert_eq!(with_tools["messages"], page["messages"]);
    let (status, body) = app
        .get(&format!("/api/chat/messages?before={}", Uuid::new_v4()))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/api/chat/messages?before=nope").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = app
        .get("/api/chat/messages?include_tool_results=maybe")
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn inbox_is_ordered_by_urgency_counts_what_needs_you_and_marks_read() {
    let app = app().await;
    let pause = || tokio::time::sleep(Duration::from_millis(5));
    // Opened in this order: failed (low), review (normal), question (high), plan (high).
    let failed = app.create_task("Failing work", false).await;
    app.drive(
        &failed,
        vec![
            TaskEvent::SlotGranted,
            TaskEvent::AgentFailed("boom".into()),
        ],
    )
    .await;
    pause().await;
    let review = app.create_task("Reviewable work", true).await;
    app.drive(
        &review,
        vec![
            TaskEvent::SlotGranted,
            TaskEvent::AgentFinished,
            TaskEvent::ChecksPassed,
        ],
    )
    .await;
    pause().await;
    let question = app.create_task("Questionable work", false).await;
    app.drive(
        &question,
        vec![
            TaskEvent::SlotGranted,
            TaskEvent::QuestionsAsked(questions()),
        ],
    )
    .await;
    pause().await;
    let plan = app.create_task("Planned work", false).await;
    app.drive(
        &plan,
        vec![
            TaskEvent::SlotGranted,
            TaskEvent::PlanProposed("1. do it".into()),
        ],
    )
    .await;

    let (status, inbox) = app.get("/api/inbox").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(inbox["needs_you"], 3);
    let items = inbox["items"].as_array().unwrap().clone();
    let kinds: Vec<&str> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["question", "plan_review", "review", "failed"]);
    let priorities: Vec<&str> = items
        .iter()
        .map(|i| i["priority"].as_str().unwrap())
        .collect();
    assert_eq!(priorities, ["high", "high", "normal", "low"]);
    for (item, task) in items.iter().zip([&question, &plan, &review, &failed]) {
        assert_eq!(item["task_id"], task["id"]);
        assert_eq!(item["read"], false);
        assert_eq!(item["resolved_at"], Value::Null);
    }
    assert!(
        items[0]["body"]
            .as_str()
            .unwrap()
            .contains("SQLite: embedded")
    );
    let (_, limited) = app.get("/api/inbox?limit=2").await;
    assert_eq!(limited["items"].as_array().unwrap().len(), 2);
    assert_eq!(limited["needs_you"], 3);

    // Read and unread.
    let qitem = items[0]["id"].as_str().unwrap().to_owned();
    let (status, item) = app
        .post(&format!("/api/inbox/{qitem}/read"), json!({"read": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{item}");
    assert_eq!(item["read"], true);
    assert_eq!(app.get("/api/inbox").await.1["items"][0]["read"], true);
    let (_, item) = app
        .post(&format!("/api/inbox/{qitem}/read"), json!({"read": false}))
        .await;
    assert_eq!(item["read"], false);
    let before = app.snapshot(&app.token).await;
    let (status, body) = app
        .post(&format!("/api/inbox/{qitem}/read"), json!({"read": "yes"}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = app
        .post(
            &format!("/api/inbox/{}/read", Uuid::new_v4()),
            json!({"read": true}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.post("/api/inbox/12/read", json!({"read": true})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    // Answers must fit the questions.
    let qid = question["id"].as_str().unwrap();
    for bad in [
        json!({"q1": ["MySQL"], "q2": "x"}),
        json!({"q1": ["SQLite", "PostgreSQL"], "q2": "x"}),
        json!({"q1": ["SQLite"]}),
        json!({"q1": ["SQLite"], "q2": "x", "q3": "y"}),
        json!({"q1": [], "q2": "x"}),
    ] {
        let (status, body) = app
            .post(
                &format!("/api/tasks/{qid}/answers"),
                json!({"answers": bad}),
            )
            .await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    let (status, body) = app
        .post(
            &format!("/api/tasks/{qid}/answers"),
            json!({"answers": {"q1": 3}}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(app.snapshot(&app.token).await, before);

    let (status, answered) = app
        .post(
            &format!("/api/tasks/{qid}/answers"),
            json!({"answers": {"q1": ["SQLite"], "q2": "widgetd"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answered}");
    assert_eq!(answered["state"], "planning");
    assert_eq!(
        answered["answers"],
        json!({"q1": ["SQLite"], "q2": "widgetd"})
    );
    let (_, inbox) = app.get("/api/inbox").await;
    assert_eq!(inbox["needs_you"], 2);
    let items = inbox["items"].as_array().unwrap();
    assert_eq!(items.last().unwrap()["id"], qitem.as_str());
    assert!(items.last().unwrap()["resolved_at"].is_string());
    let (_, open_only) = app.get("/api/inbox?resolved=0").await;
    assert!(
        open_only["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["resolved_at"].is_null())
    );

    // The plan: a revision needs feedback; approval moves on.
    let pid = plan["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            &format!("/api/tasks/{pid}/plan"),
            json!({"action": "revise"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (status, approved) = app
        .post(
            &format!("/api/tasks/{pid}/plan"),
            json!({"action": "approve"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["state"], "implementing");
    let (status, body) = app
        .post(
            &format!("/api/tasks/{pid}/plan"),
            json!({"action": "revise", "feedback": "more tests"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "wrong_state");

    // Review: changes need feedback; approval merges (once).
    let rid = review["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            &format!("/api/tasks/{rid}/review"),
            json!({"action": "changes"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (status, merging) = app
        .post(
            &format!("/api/tasks/{rid}/review"),
            json!({"action": "approve"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{merging}");
    let (status, body) = app
        .post(
            &format!("/api/tasks/{rid}/review"),
            json!({"action": "approve"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "wrong_state");
    assert_eq!(app.get("/api/inbox").await.1["needs_you"], 0);

    // A failed task retries; a retried one cannot retry again.
    let fid = failed["id"].as_str().unwrap();
    let (status, retried) = app.post_empty(&format!("/api/tasks/{fid}/retry")).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_ne!(retried["state"], "failed");
    let (status, body) = app.post_empty(&format!("/api/tasks/{fid}/retry")).await;
    assert_error(status, &body, StatusCode::CONFLICT, "wrong_state");
    let (_, open_only) = app.get("/api/inbox?resolved=0").await;
    assert_eq!(open_only, json!({"items": [], "needs_you": 0}));
}

/// A retry takes what to do differently, or nothing; a body it cannot read is refused
/// as every route refuses one, and the task stays failed.
#[tokio::test]
async fn a_retry_takes_optional_feedback_and_refuses_a_bad_body() {
    let app = app().await;
    let failed = app.create_task("Empty work", true).await;
    app.drive(
        &failed,
        vec![
            TaskEvent::SlotGranted,
            TaskEvent::AgentFailed(mainloop_domain::task::NO_CHANGES.into()),
        ],
    )
    .await;
    let retry = format!("/api/tasks/{}/retry", failed["id"].as_str().unwrap());
    let (status, body) = app
        .post_raw(&retry, "application/json", "{\"feedback\": ")
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = app.post(&retry, json!({"feedback": 3})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = app.post(&retry, json!({"note": "x"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = app.post_raw(&retry, "text/plain", "retry please").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = app
        .post(&retry, json!({"feedback": "x".repeat(20_001)}))
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (_, task) = app
        .get(&format!("/api/tasks/{}", failed["id"].as_str().unwrap()))
        .await;
    assert_eq!(task["state"], "failed", "{task}");
    assert_eq!(task["error"], "The worker made no changes.");

    let (status, retried) = app
        .post(&retry, json!({"feedback": "Write the file this time."}))
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["state"], "implementing");
    assert!(retried["error"].is_null(), "{retried}");
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let app = app().await;
    let resp = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["info"]["version"], VERSION);
    let served: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(served, expected);
    let from_fn: BTreeSet<(String, String)> = documented_operations()
        .into_iter()
        .map(|(m, p, _)| (m.to_string(), p))
        .collect();
    assert_eq!(from_fn, expected);
    // Client generators name functions after operation ids, so they must be unique.
    let op_ids: BTreeSet<String> = documented_operations()
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(op_ids.len(), ROUTES.len(), "{op_ids:?}");

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["cookie"]["in"], "cookie");
    assert_eq!(schemes["cookie"]["name"], "mainloop_session");
    assert_eq!(doc["security"], json!([{"bearer": []}, {"cookie": []}]));
    for schema in [
        "Task",
        "InboxItem",
        "ChatMessage",
        "User",
        "Project",
        "ErrorBody",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema}"
        );
    }

    // Every reference resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling {r}"
        );
    }
}

#[tokio::test]
async fn health_unknown_routes_and_no_500_for_junk() {
    let app = app().await;
    let (status, body) = app.call(Cred::None, Method::GET, "/api/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok", "version": VERSION}));

    let (status, body) = app.get("/api/nope").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    // Where clients normalising `/api/tasks/..` land.
    let (status, body) = app.get("/api/").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/api/tasks/a/b/c").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app
        .call(Cred::Bearer(&app.token), Method::DELETE, "/api/tasks", None)
        .await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );

    // Junk into every documented route: never a server error, always the JSON shape.
    let before = app.snapshot(&app.token).await;
    let junk = [
        "",
        "null",
        "[]",
        "\"text\"",
        "{}",
        "{\"answers\": [1]}",
        "{\"action\": null}",
        "{\"read\": 1e999}",
        "\u{0}\u{1}",
        "{\"description\": \"\u{0}\", \"repo\": \"\\u0000\"}",
        &"[".repeat(10_000),
    ];
    for (method, template, _) in documented_operations() {
        if template == "/api/events" {
            continue;
        }
        for path in [
            template.replace("{id}", "%FF%FE"),
            template.replace("{id}", "1"),
        ] {
            for body in &junk {
                let resp = app
                    .request(Cred::Bearer(&app.token), method.clone(), &path)
                    .header("content-type", "application/json")
                    .body((*body).to_owned())
                    .send()
                    .await
                    .unwrap();
                let (status, json) = json_of(resp).await;
                assert!(
                    status.is_client_error() || status.is_success(),
                    "{method} {path} {body:?}: {status} {json}"
                );
                if !status.is_success() {
                    assert!(json["error"]["code"].is_string(), "{json}");
                }
            }
        }
    }
    // Only reads and a cookie-less logout succeeded in that loop.
    assert_eq!(app.snapshot(&app.token).await, before);

    app.engine.store_for_tests().close().await;
    let (status, body) = app.call(Cred::None, Method::GET, "/api/health", None).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let (status, body) = app.get("/api/tasks").await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
}

#[tokio::test]
async fn without_auth_everyone_is_the_owner_on_loopback_only() {
    let app = app_with(
        ApiConfig {
            auth_enabled: false,
            ..config()
        },
        false,
    )
    .await;
    let (status, me) = app
        .call(Cred::None, Method::GET, "/api/auth/me", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "owner");
    let task = json!({"description": "d", "repo": "r"});
    let (status, _) = app
        .call(Cred::None, Method::POST, "/api/tasks", Some(task.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // A browser page elsewhere cannot use the open server.
    let (status, body) = app
        .call(
            Cred::Header("origin", "http://evil.example"),
            Method::POST,
            "/api/tasks",
            Some(task.clone()),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = app
        .call(
            Cred::Header("host", "evil.example"),
            Method::GET,
            "/api/tasks",
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let port = app.host.rsplit_once(':').unwrap().1;
    let (status, _) = app
        .call(
            Cred::Header("host", &format!("localhost:{port}")),
            Method::GET,
            "/api/tasks",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.get("/api/tasks").await.1["tasks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn event_streams_end_on_shutdown() {
    let app = app_with(config(), true).await;
    let mut stream = SseReader::open(&app, &app.token, "/api/events", None).await;
    app.post("/api/chat", json!({"text": "hi"})).await;
    assert_eq!(stream.read(1, WAIT).await.len(), 1);
    app.shutdown.cancel();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !stream.ended && tokio::time::Instant::now() < deadline {
        stream.read(100, Duration::from_millis(200)).await;
    }
    assert!(
        stream.ended,
        "the stream should end when the server shuts down"
    );
}

#[tokio::test]
async fn health_needs_no_credentials_and_reports_version_from_config() {
    let app = app_with(
        ApiConfig {
            version: "9.9.9".into(),
            ..config()
        },
        false,
    )
    .await;
    let (status, body) = app.call(Cred::None, Method::GET, "/api/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], "9.9.9");
    assert_eq!(openapi()["info"]["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn the_binary_can_serve_its_web_app_beside_the_api() {
    let app = app().await;
    let routes = router(app.engine.clone(), config()).fallback(|| async { "the web app" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
    let page = app
        .client
        .get(format!("{base}/inbox/some-deep-link"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.text().await.unwrap(), "the web app");
    let (status, body) = json_of(
        app.client
            .get(format!("{base}/api/no-such-route"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = json_of(
        app.client
            .get(format!("{base}/api/health"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("ok")));
}

/// The web app's API types are generated from `web/openapi.json` (`npm run gen:api`), so
/// the checked-in document must be exactly what this crate describes; a changed API
/// fails here until the snapshot and the types are regenerated.
#[test]
fn the_web_apps_openapi_snapshot_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/openapi.json");
    let current = format!("{}\n", serde_json::to_string_pretty(&openapi()).unwrap());
    if std::env::var_os("MAINLOOP_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, &current).unwrap();
        return;
    }
    // Compared as JSON, not as text: a workspace build can turn on serde_json's
    // `preserve_order` (a dependency asks for it), which changes the order in which the
    // document's example objects print, not what the document says.
    let checked_in: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default())
            .unwrap_or(Value::Null);
    assert!(
        checked_in == serde_json::to_value(openapi()).unwrap(),
        "{} is not the API's current OpenAPI document. Regenerate it and the web app's \
         types: MAINLOOP_UPDATE_OPENAPI=1 cargo test -p mainloop-api --test it \
         the_web_apps_openapi_snapshot_is_current && (cd web && npm run gen:api)",
        path.display()
    );
}

// ---------------------------------------------------------------------------------
// Notifications

/// What a local stand-in for an ntfy server received: headers and body per POST.
type NtfyLog = std::sync::Arc<std::sync::Mutex<Vec<(HeaderMap, String)>>>;

impl App {
    async fn put_ntfy(&self, body: Value) -> (StatusCode, Value) {
        self.call(
            Cred::Bearer(&self.token),
            Method::PUT,
            "/api/notifications/ntfy",
            Some(body),
        )
        .await
    }

    async fn delete_push(&self, id: &str) -> (StatusCode, Value) {
        let path = format!("/api/notifications/push/{id}");
        self.call(Cred::Bearer(&self.token), Method::DELETE, &path, None)
            .await
    }
}

async fn ntfy_listener() -> (String, NtfyLog) {
    let log: NtfyLog = NtfyLog::default();
    let seen = log.clone();
    let routes = axum::Router::new().route(
        "/{topic}",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: String| async move {
                let mut converted = HeaderMap::new();
                for (name, value) in &headers {
                    converted.insert(
                        reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(),
                        reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
                    );
                }
                seen.lock().unwrap().push((converted, body));
                "{}"
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
    (format!("http://{addr}/mainloop-alerts"), log)
}

async fn eventually<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    wait_for_within(WAIT, what, check).await
}

#[tokio::test]
async fn notifications_reach_web_push_and_ntfy_and_bad_input_changes_nothing() {
    let app = app().await;
    let fake = mainloop_fake_push::FakePush::start().await.unwrap();
    let (ntfy_url, ntfy_log) = ntfy_listener().await;

    // Fresh settings: the VAPID key is made on first need and then stays the same.
    let (status, settings) = app.get("/api/notifications").await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    let key = settings["vapid_public_key"].as_str().unwrap();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key)
        .unwrap();
    assert_eq!((raw.len(), raw[0]), (65, 4));
    assert_eq!(settings["ntfy_url"], Value::Null);
    assert_eq!(settings["subscriptions"], json!([]));
    assert_eq!(app.get("/api/notifications").await.1, settings);

    // Two browsers subscribe at the fake push service (as PushSubscription.toJSON()).
    let client = Client::new();
    let mut browsers = Vec::new();
    for _ in 0..2 {
        let resp = client
            .post(format!("{}/subscriptions", fake.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        browsers.push(resp.json::<Value>().await.unwrap());
    }
    let (kept, gone) = (&browsers[0], &browsers[1]);

    // Bad input on every route changes nothing.
    let before = (
        app.snapshot(&app.token).await,
        app.get("/api/notifications").await.1,
    );
    let good_keys = kept["keys"].clone();
    let bad_bodies = [
        (
            json!({"endpoint": "http://push.example.com/x", "keys": good_keys}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"endpoint": "ftp://127.0.0.1/x", "keys": good_keys}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"endpoint": "not a url", "keys": good_keys}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"endpoint": kept["endpoint"], "keys": {"p256dh": "AAAA", "auth": good_keys["auth"]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"endpoint": kept["endpoint"], "keys": {"p256dh": good_keys["p256dh"], "auth": "AAAA"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"endpoint": kept["endpoint"], "keys": {"p256dh": "%%%", "auth": good_keys["auth"]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"endpoint": kept["endpoint"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"endpoint": 7, "keys": good_keys}),
            StatusCode::BAD_REQUEST,
        ),
        (json!([]), StatusCode::BAD_REQUEST),
    ];
    for (body, want) in bad_bodies {
        let (status, err) = app.post("/api/notifications/push", body.clone()).await;
        assert_eq!(status, want, "{body}: {err}");
        assert!(err["error"]["code"].is_string(), "{err}");
    }
    let (status, _) = app
        .post_raw("/api/notifications/push", "application/json", "{nope")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for (body, want) in [
        (
            json!({"url": "ftp://ntfy.example/t"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"url": "ntfy.sh/topic"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"url": 5}), StatusCode::BAD_REQUEST),
    ] {
        let (status, err) = app.put_ntfy(body.clone()).await;
        assert_error(
            status,
            &err,
            want,
            if want == StatusCode::BAD_REQUEST {
                "bad_request"
            } else {
                "invalid"
            },
        );
    }
    let (status, err) = app.delete_push(&Uuid::new_v4().to_string()).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "not_found");
    let (status, err) = app.delete_push("not-a-uuid").await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "bad_request");
    // A cookie session without a matching Origin may not change anything.
    let session = app.login(&app.token).await;
    let (status, _) = app
        .call(
            Cred::CookieNoOrigin(&session),
            Method::POST,
            "/api/notifications/test",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        (
            app.snapshot(&app.token).await,
            app.get("/api/notifications").await.1
        ),
        before
    );

    // Registering, idempotently on the endpoint.
    let mut ids = Vec::new();
    for browser in [kept, gone, kept] {
        let body = json!({
            "endpoint": browser["endpoint"],
            "keys": browser["keys"],
            "expirationTime": null,
            "user_agent": "Test Browser",
        });
        let (status, sub) = app.post("/api/notifications/push", body).await;
        assert_eq!(status, StatusCode::CREATED, "{sub}");
        let fields: BTreeSet<&str> = sub
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from(["id", "endpoint", "user_agent", "created_at"])
        );
        assert_eq!(sub["endpoint"], browser["endpoint"]);
        assert_eq!(sub["user_agent"], "Test Browser");
        ids.push(sub["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[2]);
    let (status, settings) = app.put_ntfy(json!({"url": ntfy_url})).await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["ntfy_url"], json!(ntfy_url));
    assert_eq!(settings["vapid_public_key"], json!(key));
    assert_eq!(settings["subscriptions"].as_array().unwrap().len(), 2);
    // Another user can neither see nor delete them.
    let (_, bob) = app.engine.create_user("bob", false).await.unwrap();
    let (_, theirs) = app
        .call(Cred::Bearer(&bob), Method::GET, "/api/notifications", None)
        .await;
    assert_eq!(theirs["subscriptions"], json!([]));
    let (status, _) = app
        .call(
            Cred::Bearer(&bob),
            Method::DELETE,
            &format!("/api/notifications/push/{}", ids[0]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The second browser unsubscribed at its push service: it answers 410 from now on.
    let resp = client
        .delete(format!(
            "{}/subscriptions/{}",
            fake.base_url(),
            gone["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    // A worker asks a question: the inbox item reaches the browser and ntfy.
    let task = app.create_task("Questionable work", false).await;
    app.drive(
        &task,
        vec![
            TaskEvent::SlotGranted,
            TaskEvent::QuestionsAsked(questions()),
        ],
    )
    .await;
    let (_, inbox) = app.get("/api/inbox").await;
    let item = inbox["items"][0].clone();
    let item_id = item["id"].as_str().unwrap();
    let task_id = task["id"].as_str().unwrap();
    let msg = eventually("the push", async || fake.messages().into_iter().next()).await;
    assert_eq!(msg.subscription_id, kept["id"].as_str().unwrap());
    assert_eq!(
        msg.payload,
        json!({
            "title": item["title"],
            "body": item["body"],
            "url": format!("/tasks/{task_id}?item={item_id}"),
            "tag": item_id,
            "item_id": item_id,
            "task_id": task_id,
            "kind": "question",
        })
    );
    assert_eq!(msg.urgency.as_deref(), Some("high"));
    assert_eq!(
        msg.topic.as_deref(),
        Some(item_id.replace('-', "").as_str())
    );
    assert_eq!(msg.ttl, 24 * 3600);
    let (headers, body) = eventually("the ntfy post", async || {
        ntfy_log.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(body, item["body"].as_str().unwrap());
    assert_eq!(headers["title"], "Question: Questionable work");
    assert_eq!(headers["priority"], "high");
    assert_eq!(headers["tags"], "question");
    assert_eq!(
        headers["click"].to_str().unwrap(),
        format!("{PUBLIC_URL}/tasks/{task_id}?item={item_id}")
    );
    // The 410 removed the other subscription.
    let remaining = eventually("the gone subscription's removal", async || {
        let (_, s) = app.get("/api/notifications").await;
        let subs = s["subscriptions"].as_array().unwrap().clone();
        (subs.len() == 1).then_some(subs)
    })
    .await;
    assert_eq!(remaining[0]["id"], json!(ids[0]));
    let job = app
        .engine
        .store_for_tests()
        .job_by_key(&format!("notify:{item_id}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, mainloop_store::JobState::Done);

    // A push service in trouble (503) makes the job retry; the test message arrives.
    fake.fail_next(kept["id"].as_str().unwrap(), 503, 1);
    let (status, _) = app.post_empty("/api/notifications/test").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let test = eventually("the test push", async || fake.messages().get(1).cloned()).await;
    assert_eq!(test.payload["kind"], "test");
    assert_eq!(test.payload["url"], "/settings");
    assert_eq!(test.payload["task_id"], Value::Null);
    assert_eq!(test.urgency.as_deref(), Some("normal"));
    eventually("the second ntfy post", async || {
        (ntfy_log.lock().unwrap().len() >= 2).then_some(())
    })
    .await;

    // Removing: 204, then 404; ntfy cleared with null.
    let (status, _) = app.delete_push(&ids[0]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.delete_push(&ids[0]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, settings) = app.put_ntfy(json!({"url": null})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["ntfy_url"], Value::Null);
    assert_eq!(settings["subscriptions"], json!([]));
}

#[tokio::test]
async fn sign_in_is_refused_for_a_while_after_repeated_wrong_tokens() {
    let app = app().await;
    let attempt = |token: &'static str| {
        app.client
            .post(app.url("/api/auth/login"))
            .json(&json!({ "token": token }))
            .send()
    };
    for _ in 0..mainloop_api::limit::MAX_FAILURES {
        assert_eq!(
            attempt("mlt_guess").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let refused = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&json!({ "token": app.token }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= mainloop_api::limit::WINDOW.as_secs());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_attempts");
    // API tokens keep working for programs; only the sign-in form is limited.
    let (status, _) = app.get("/api/auth/me").await;
    assert_eq!(status, StatusCode::OK);
}

//! Hostile input against every operation in the OpenAPI document, as property tests:
//! arbitrary and schema-shaped JSON, invalid UTF-8, truncated and absurdly nested bodies,
//! wrong content types, garbage path ids and query strings. Every answer must be a 2xx
//! or a 4xx in the API's JSON error shape, and a refused request must leave everything
//! the user can see exactly as it was.

use super::{App, Cred, EngineConfig, Setup, app_from, documented_operations, questions};
use hmac::{Hmac, Mac};
use mainloop_domain::task::TaskEvent;
use mainloop_engine::WebhookSecret;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::strategy::{BoxedStrategy, Union};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestCaseResult, TestRunner};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use uuid::Uuid;

const WEBHOOK_SECRET: &str = "hostile-input-webhook-secret";
const WEBHOOK: &str = "/api/webhooks/github";
const EVENTS: &str = "/api/events";
/// The default seed, so a run's figures can be quoted and a failure reproduced;
/// `PROPTEST_RNG_SEED=<n>` explores other inputs.
const SEED: u64 = 0x6d61_696e_6c6f_6f70;

// ---------------------------------------------------------------------------------
// What the document says

/// One documented operation, as far as the fuzzer needs it.
#[derive(Clone, Debug)]
struct Op {
    method: Method,
    template: String,
    /// The JSON request body's schema.
    body: Option<Value>,
    query: Vec<String>,
    headers: Vec<String>,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.template)
    }
}

fn operations() -> Vec<Op> {
    documented_operations()
        .into_iter()
        .map(|(method, template, op)| {
            let params = |place: &str| -> Vec<String> {
                op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == place)
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect()
            };
            let content = &op["requestBody"]["content"];
            assert!(
                content.is_null() || content.get("application/json").is_some(),
                "{method} {template} takes a body the fuzzer does not know: {content}"
            );
            Op {
                body: content.get("application/json").map(|c| c["schema"].clone()),
                query: params("query"),
                headers: params("header"),
                method,
                template,
            }
        })
        .collect()
}

/// A seeded thing whose id a path can name. Each `{id}` route gets the one its handler
/// acts on, so bodies reach the engine's checks instead of stopping at a 404.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Queued,
    Questions,
    Plan,
    Review,
    Failed,
    Inbox,
    Project,
    Subscription,
    Note,
}

const TARGETS: [Target; 9] = [
    Target::Queued,
    Target::Questions,
    Target::Plan,
    Target::Review,
    Target::Failed,
    Target::Inbox,
    Target::Project,
    Target::Subscription,
    Target::Note,
];

fn target_of(template: &str) -> Option<Target> {
    Some(match template {
        "/api/tasks/{id}/answers" => Target::Questions,
        "/api/tasks/{id}/plan" => Target::Plan,
        "/api/tasks/{id}/review" => Target::Review,
        "/api/tasks/{id}/retry" => Target::Failed,
        t if t.starts_with("/api/tasks/{id}") => Target::Queued,
        "/api/inbox/{id}/read" => Target::Inbox,
        "/api/projects/{id}" => Target::Project,
        "/api/notifications/push/{id}" => Target::Subscription,
        "/api/notes/{id}" => Target::Note,
        // A new id route must be taught here, not silently skipped.
        t if t.contains('{') => panic!("an id route the fuzzer does not know: {t}"),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------
// Requests

/// The id a request puts into its path.
#[derive(Clone, Debug)]
enum PathId {
    /// The route's own seeded target, resolved when the request is sent.
    Own,
    /// One of all the seeded ids (often the wrong kind for the route).
    Seeded(Index),
    /// Already percent-encoded where it needs to be.
    Raw(String),
}

#[derive(Clone)]
struct Req {
    method: Method,
    template: String,
    id: PathId,
    query: String,
    content_type: Option<Vec<u8>>,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

impl Req {
    fn new(op: &Op) -> Self {
        Self {
            method: op.method.clone(),
            template: op.template.clone(),
            id: PathId::Own,
            query: String::new(),
            content_type: None,
            headers: Vec::new(),
            body: None,
        }
    }

    fn json(op: &Op, body: Vec<u8>) -> Self {
        Self {
            content_type: Some(b"application/json".to_vec()),
            body: Some(body),
            ..Self::new(op)
        }
    }
}

/// Shows enough of a request to reproduce it, without megabytes of body.
impl fmt::Debug for Req {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = |b: &[u8]| {
            let s = String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
            if b.len() > 300 {
                format!("{s}… ({} bytes)", b.len())
            } else {
                s
            }
        };
        write!(f, "{} {} id={:?}", self.method, self.template, self.id)?;
        if !self.query.is_empty() {
            write!(f, " ?{}", cut(self.query.as_bytes()))?;
        }
        if let Some(ct) = &self.content_type {
            write!(f, " content-type={:?}", cut(ct))?;
        }
        for (k, v) in &self.headers {
            write!(f, " {k}={:?}", cut(v))?;
        }
        match &self.body {
            Some(b) => write!(f, " body={:?}", cut(b)),
            None => write!(f, " (no body)"),
        }
    }
}

fn sign(body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes())).into_bytes()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// The server under attack, and what it shows

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Default)]
struct Stats {
    cases: u64,
    sent: u64,
    reads: u64,
    read_time: std::time::Duration,
    send_time: std::time::Duration,
    by_status: BTreeMap<u16, u64>,
}

struct Fuzz {
    app: App,
    push: Value,
    _push_service: mainloop_fake_push::FakePush,
    /// Hostile requests get connections of their own: the server may answer before
    /// reading a body and then close the connection, which must not fail the next read.
    client: reqwest::Client,
    targets: Mutex<BTreeMap<Target, String>>,
    /// What the user saw after the last request.
    baseline: Mutex<Value>,
    stats: Arc<Mutex<Stats>>,
    rt: tokio::runtime::Runtime,
}

impl Fuzz {
    /// A fresh server with one of everything, so each operation is fuzzed against a
    /// small world (snapshots of a big one would dominate the run time).
    fn start(stats: Arc<Mutex<Stats>>, backend: Backend) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (app, push, push_service) = rt.block_on(async {
            // The engine is not started: with no dispatcher, nothing but the request
            // between two snapshots can have changed what they show.
            let database = match backend {
                Backend::Sqlite => None,
                Backend::Postgres => Some(mainloop_testpg::fresh_database_url().await.unwrap()),
            };
            let app = app_from(Setup {
                engine: EngineConfig {
                    forge_webhook_secret: Some(WebhookSecret(WEBHOOK_SECRET.into())),
                    ..EngineConfig::default()
                },
                start: false,
                database,
                ..Setup::default()
            })
            .await;
            let service = mainloop_fake_push::FakePush::start().await.unwrap();
            let subscription = service.subscribe();
            (app, subscription, service)
        });
        let fuzz = Self {
            app,
            push,
            _push_service: push_service,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap(),
            targets: Mutex::default(),
            baseline: Mutex::new(Value::Null),
            stats,
            rt,
        };
        fuzz.rt.block_on(async {
            let (status, _) = fuzz.app.post("/api/chat", json!({"text": "hello"})).await;
            assert_eq!(status, StatusCode::ACCEPTED);
            let (status, _) = fuzz
                .app
                .put_ntfy(json!({"url": "https://ntfy.example/topic"}))
                .await;
            assert_eq!(status, StatusCode::OK);
            for t in TARGETS {
                fuzz.seed(t).await;
            }
            let state = fuzz.state().await;
            *fuzz.baseline.lock().unwrap() = state;
        });
        fuzz
    }

    /// Creates (again) the thing a target names, in the state its routes act on.
    async fn seed(&self, target: Target) {
        let app = &self.app;
        let task = |events: Vec<TaskEvent>, skip_plan: bool| async move {
            let task = app.create_task("hostile input target", skip_plan).await;
            app.drive(&task, events).await;
            task["id"].as_str().unwrap().to_owned()
        };
        let id = match target {
            Target::Queued => task(vec![], false).await,
            Target::Questions => {
                task(
                    vec![
                        TaskEvent::SlotGranted,
                        TaskEvent::QuestionsAsked(questions()),
                    ],
                    false,
                )
                .await
            }
            Target::Plan => {
                task(
                    vec![
                        TaskEvent::SlotGranted,
                        TaskEvent::PlanProposed("1. do it".into()),
                    ],
                    false,
                )
                .await
            }
            Target::Review => {
                task(
                    vec![
                        TaskEvent::SlotGranted,
                        TaskEvent::AgentFinished,
                        TaskEvent::ChecksPassed,
                    ],
                    true,
                )
                .await
            }
            Target::Failed => {
                task(
                    vec![
                        TaskEvent::SlotGranted,
                        TaskEvent::AgentFailed("boom".into()),
                    ],
                    false,
                )
                .await
            }
            Target::Inbox => {
                let (_, inbox) = app.get("/api/inbox").await;
                inbox["items"][0]["id"].as_str().unwrap().to_owned()
            }
            Target::Project => {
                let (_, projects) = app.get("/api/projects").await;
                projects["projects"][0]["id"].as_str().unwrap().to_owned()
            }
            Target::Subscription => {
                let (status, sub) = app.post("/api/notifications/push", self.push.clone()).await;
                assert_eq!(status, StatusCode::CREATED, "{sub}");
                sub["id"].as_str().unwrap().to_owned()
            }
            Target::Note => {
                let body = json!({"kind": "decision", "text": "hostile input target"});
                let (status, note) = app.post("/api/notes", body).await;
                assert_eq!(status, StatusCode::CREATED, "{note}");
                note["id"].as_str().unwrap().to_owned()
            }
        };
        self.targets.lock().unwrap().insert(target, id);
    }

    /// Everything the API lists for the user.
    async fn state(&self) -> Value {
        const READS: [&str; 7] = [
            "/api/tasks?limit=1000",
            "/api/inbox?limit=1000&resolved=1000",
            "/api/chat/messages?limit=500&include_tool_results=true",
            "/api/projects",
            "/api/notifications",
            "/api/auth/me",
            "/api/notes",
        ];
        let t0 = Instant::now();
        let bodies = futures::future::join_all(READS.iter().map(|path| async move {
            let (status, body) = self.app.get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            body
        }))
        .await;
        self.stats.lock().unwrap().reads += READS.len() as u64;
        self.stats.lock().unwrap().read_time += t0.elapsed();
        Value::Array(bodies)
    }

    fn path(&self, req: &Req) -> String {
        let targets = self.targets.lock().unwrap();
        let id = match &req.id {
            PathId::Own => target_of(&req.template).map(|t| targets[&t].clone()),
            PathId::Seeded(i) => {
                let all: Vec<&String> = targets.values().collect();
                Some(all[i.index(all.len())].clone())
            }
            PathId::Raw(s) => Some(s.clone()),
        };
        let mut path = match id {
            Some(id) => req.template.replace("{id}", &id),
            None => req.template.clone(),
        };
        if !req.query.is_empty() {
            path = format!("{path}?{}", req.query);
        }
        path
    }

    /// Sends one request and checks the answer (runs inside a proptest case).
    fn check(&self, req: &Req) -> TestCaseResult {
        self.rt.block_on(self.check_async(req))
    }

    async fn check_async(&self, req: &Req) -> TestCaseResult {
        let path = self.path(req);
        let mut rb = self
            .client
            .request(req.method.clone(), self.app.url(&path))
            .bearer_auth(&self.app.token);
        if let Some(ct) = &req.content_type {
            rb = rb.header(CONTENT_TYPE, HeaderValue::from_bytes(ct).unwrap());
        }
        for (name, value) in &req.headers {
            rb = rb.header(*name, HeaderValue::from_bytes(value).unwrap());
        }
        if req.template == WEBHOOK {
            rb = rb
                .header(
                    "x-hub-signature-256",
                    HeaderValue::from_bytes(&sign(req.body.as_deref().unwrap_or_default()))
                        .unwrap(),
                )
                .header("x-github-event", "issue_comment");
        }
        if let Some(body) = &req.body {
            rb = rb.body(body.clone());
        }
        let t0 = Instant::now();
        let resp = rb
            .send()
            .await
            .map_err(|e| TestCaseError::fail(format!("{req:?}: no answer: {e}")))?;
        let status = resp.status();
        {
            let mut stats = self.stats.lock().unwrap();
            stats.sent += 1;
            *stats.by_status.entry(status.as_u16()).or_default() += 1;
        }
        if req.template == EVENTS && status.is_success() {
            // An open event stream: it never ends, and it changes nothing.
            return Ok(());
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| TestCaseError::fail(format!("{req:?}: body: {e}")))?;
        self.stats.lock().unwrap().send_time += t0.elapsed();
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned();
        prop_assert!(
            !status.is_server_error(),
            "{status} for {req:?} (sent as {path}): {text}"
        );
        if status.is_success() {
            self.accepted(req, &path).await;
            return Ok(());
        }
        prop_assert!(status.is_client_error(), "{status} for {req:?}: {text}");
        prop_assert!(
            content_type.starts_with("application/json"),
            "{status} for {req:?} is {content_type:?}, not JSON: {text}"
        );
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
            TestCaseError::fail(format!("{status} for {req:?}: not JSON ({e}): {text}"))
        })?;
        let code = body["error"]["code"].as_str().unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        prop_assert!(
            !code.is_empty() && !message.trim().is_empty(),
            "{status} for {req:?}: not the error shape: {body}"
        );
        let now = self.state().await;
        let before = self.baseline.lock().unwrap().clone();
        if let Some(diff) = first_difference(&before, &now, "") {
            return Err(TestCaseError::fail(format!(
                "{req:?} was refused ({status} {code}: {message}) yet changed what the \
                 user sees, first at {diff}"
            )));
        }
        Ok(())
    }

    /// An accepted request may change things: take the new state as the baseline, and
    /// seed again whatever the request used up (a cancelled task, a removed subscription).
    async fn accepted(&self, req: &Req, path: &str) {
        let used: Vec<Target> = self
            .targets
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, id)| {
                path.contains(id.as_str()) && !matches!(t, Target::Inbox | Target::Project)
            })
            .map(|(t, _)| *t)
            .collect();
        for t in used {
            if req.method != Method::GET {
                self.seed(t).await;
            }
        }
        let state = self.state().await;
        *self.baseline.lock().unwrap() = state;
    }

    /// Runs `cases` cases of `strategy`, each a request checked by [`Fuzz::check`].
    fn run(&self, what: &str, op: &Op, cases: u32, strategy: impl Strategy<Value = Req>) {
        let mut config = Config::with_cases(scaled(cases));
        config.failure_persistence = None;
        config.max_shrink_iters = 200;
        if config.rng_seed == RngSeed::Random {
            config.rng_seed = RngSeed::Fixed(SEED);
        }
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |req| {
            self.stats.lock().unwrap().cases += 1;
            self.check(&req)
        });
        if let Err(e) = result {
            panic!("{what} against {op}: {e}");
        }
    }
}

/// Where two JSON values first differ, as a path.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let path = format!("{at}/{key}");
                match (x.get(key), y.get(key)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = first_difference(p, q, &path) {
                            return Some(d);
                        }
                    }
                    (p, q) => return Some(format!("{path}: {p:?} → {q:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}/{i}")))
            .or_else(|| {
                (x.len() != y.len()).then(|| {
                    let extra = x.get(y.len()).or_else(|| y.get(x.len()));
                    format!("{at}: {} → {} items ({extra:?})", x.len(), y.len())
                })
            }),
        _ if a == b => None,
        _ => {
            let show = |v: &Value| {
                let s = v.to_string();
                s.chars().take(200).collect::<String>()
            };
            Some(format!("{at}: {} → {}", show(a), show(b)))
        }
    }
}

// ---------------------------------------------------------------------------------
// Inputs

/// Field names the API reads somewhere, so arbitrary objects often hit real fields.
const FIELDS: [&str; 24] = [
    "text",
    "description",
    "repo",
    "skip_plan",
    "model",
    "answers",
    "action",
    "feedback",
    "read",
    "endpoint",
    "keys",
    "p256dh",
    "auth",
    "user_agent",
    "url",
    "token",
    "q1",
    "q2",
    "repository",
    "full_name",
    "issue",
    "pull_request",
    "number",
    "pull_requests",
];

/// Strings that have broken parsers, databases and shells before.
const NASTY: [&str; 22] = [
    "",
    " ",
    "\u{0}",
    "a\u{0}b",
    "\u{feff}",
    "\u{202e}gnp.exe",
    "\u{fffd}",
    "💥🦀",
    "\r\n\r\n",
    "../../etc/passwd",
    "%00",
    "%2e%2e%2f",
    "null",
    "true",
    "-1",
    "' OR 1=1 --",
    "\"; DROP TABLE tasks; --",
    "<script>alert(1)</script>",
    "${jndi:ldap://x}",
    "$(touch /tmp/x)",
    "approve",
    "queued",
];

fn nasty() -> impl Strategy<Value = String> + Clone {
    select(NASTY.as_slice()).prop_map(str::to_owned)
}

/// Characters that text columns, JSON encoders and terminals treat specially.
const POISON: [&str; 16] = [
    "\u{0}",
    "\u{1}",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
    "\u{202e}",
    "\u{feff}",
    "\u{fffd}",
    "\u{10ffff}",
    "\r\n",
    "\t",
    "'",
    "\"",
    "\\",
    "%00",
    "💥",
];

/// `strings` with a special character put in somewhere.
fn poisoned(strings: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (strings, select(POISON.as_slice()), any::<Index>()).prop_map(|(s, poison, at)| {
        let boundaries: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
        let at = boundaries[at.index(boundaries.len())];
        format!("{}{poison}{}", &s[..at], &s[at..])
    })
}

fn any_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "\\PC{0,24}",
        2 => poisoned("\\PC{0,24}"),
        2 => any::<String>(),
        2 => nasty(),
        // Just over the limits on a repo, a description, a chat message, and (in
        // four-byte characters) the 1 MiB body.
        1 => (any::<char>(), select(vec![2_049, 20_001, 100_001, 300_000]))
            .prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
    .boxed()
}

fn any_number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(vec![
            json!(0),
            json!(-1),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(-0.0),
            json!(f64::MAX),
            json!(f64::MIN_POSITIVE),
            json!(1.5),
        ]),
    ]
    .boxed()
}

fn field_name() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(FIELDS.as_slice()).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
    .boxed()
}

/// Any JSON value: unicode and huge strings, extreme numbers, nesting.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any_number(),
        any_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Good values for a field, from the seeded world, mixed into schema-shaped bodies so
/// that many of them get past the first check.
#[derive(Clone, Debug, Default)]
struct Samples(BTreeMap<String, Vec<String>>);

impl Samples {
    fn new(push: &Value, token: &str) -> Self {
        let s = |v: &Value| v.as_str().unwrap().to_owned();
        let long = "x".repeat(20_001);
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Vec<String>| m.insert(k.to_owned(), v);
        put(
            "repo",
            vec![
                "acme/widgets".into(),
                "/srv/repo".into(),
                "https://github.com/acme/widgets.git".into(),
                "git@github.com:acme/widgets.git".into(),
                "../../etc".into(),
                "ext::sh -c touch% /tmp/x".into(),
                "--upload-pack=touch /tmp/x".into(),
                "ssh://-oProxyCommand=touch/x".into(),
                "file:///etc".into(),
                "http://example.com/a.git".into(),
            ],
        );
        let prose = |limit: usize| {
            vec![
                "do the thing".into(),
                "  ".into(),
                "line\nbreak".into(),
                "x".repeat(limit + 1),
            ]
        };
        put("description", prose(20_000));
        put("text", prose(100_000));
        put("feedback", prose(20_000));
        put(
            "model",
            vec!["claude-opus-4-1".into(), "rm -rf /".into(), "x".repeat(101)],
        );
        put(
            "answers",
            vec![
                "SQLite".into(),
                "PostgreSQL".into(),
                "Widgets".into(),
                long.clone(),
            ],
        );
        put("answers_keys", vec!["q1".into(), "q2".into(), "q3".into()]);
        put(
            "endpoint",
            vec![
                s(&push["endpoint"]),
                "http://push.example.com/x".into(),
                "https://127.0.0.1:1/x".into(),
                "ftp://127.0.0.1/x".into(),
                "https://".into(),
            ],
        );
        put("p256dh", vec![s(&push["keys"]["p256dh"]), "AAAA".into()]);
        put("auth", vec![s(&push["keys"]["auth"]), "%%%".into()]);
        put("user_agent", vec!["Firefox".into(), long]);
        put(
            "url",
            vec![
                "https://ntfy.example/other".into(),
                "http://127.0.0.1:1/t".into(),
                "javascript:alert(1)".into(),
                "file:///etc/passwd".into(),
                "https://ntfy.example/\u{0}".into(),
            ],
        );
        put(
            "token",
            vec![token.to_owned(), "mlt_wrong".into(), "mls_forged".into()],
        );
        Self(m)
    }

    fn strings(&self, field: &str) -> BoxedStrategy<String> {
        match self.0.get(field) {
            Some(good) if !good.is_empty() => prop_oneof![
                3 => select(good.clone()),
                // Good enough to pass every check, then stored: what a database chokes on.
                3 => poisoned(select(good.clone())),
                2 => any_string(),
            ]
            .boxed(),
            _ => any_string(),
        }
    }
}

fn resolve<'a>(schema: &'a Value, doc: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            resolve(&doc["components"]["schemas"][name], doc)
        }
        None => schema,
    }
}

/// Values of a schema's shape, each field now and then missing, null or of any type,
/// and now and then extra fields.
fn shaped(schema: &Value, doc: &Value, field: &str, samples: &Samples) -> BoxedStrategy<Value> {
    let schema = resolve(schema, doc);
    if let Some(variants) = schema["oneOf"].as_array() {
        return Union::new(
            variants
                .iter()
                .map(|v| shaped(v, doc, field, samples))
                .collect::<Vec<_>>(),
        )
        .boxed();
    }
    if let Some(values) = schema["enum"].as_array() {
        return prop_oneof![
            4 => select(values.clone()),
            1 => samples.strings(field).prop_map(Value::String),
        ]
        .boxed();
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.is_empty() {
        return any_json();
    }
    Union::new(
        types
            .into_iter()
            .map(|t| match t {
                "string" => samples.strings(field).prop_map(Value::String).boxed(),
                "boolean" => any::<bool>().prop_map(Value::Bool).boxed(),
                "integer" | "number" => any_number(),
                "null" => Just(Value::Null).boxed(),
                "array" => {
                    prop::collection::vec(shaped(&schema["items"], doc, field, samples), 0..4)
                        .prop_map(Value::Array)
                        .boxed()
                }
                "object" => object(schema, doc, field, samples),
                _ => any_json(),
            })
            .collect::<Vec<_>>(),
    )
    .boxed()
}

fn object(schema: &Value, doc: &Value, field: &str, samples: &Samples) -> BoxedStrategy<Value> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, s)| {
            let name = name.clone();
            prop_oneof![
                12 => shaped(s, doc, &name, samples).prop_map(Some),
                1 => Just(None),
                1 => Just(Some(Value::Null)),
                2 => any_json().prop_map(Some),
            ]
            .prop_map(move |v| v.map(|v| (name.clone(), v)))
            .boxed()
        })
        .collect();
    let additional = match schema.get("additionalProperties") {
        Some(s) if s.is_object() => prop::collection::btree_map(
            samples.strings(&format!("{field}_keys")),
            shaped(s, doc, field, samples),
            0..4,
        )
        .boxed(),
        _ => Just(BTreeMap::new()).boxed(),
    };
    let extra = prop_oneof![
        4 => Just(Vec::new()),
        1 => prop::collection::vec((field_name(), any_json()), 1..3),
    ];
    (fields, additional, extra)
        .prop_map(|(fields, additional, extra)| {
            let mut map = serde_json::Map::new();
            map.extend(fields.into_iter().flatten());
            map.extend(additional);
            map.extend(extra);
            Value::Object(map)
        })
        .boxed()
}

const BAD_UTF8: [&[u8]; 9] = [
    b"\xff",
    b"\xfe\xff",
    b"\x80",
    b"\xc3",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xf0\x9f\x92",
];

/// Bodies that are not quite JSON, or JSON at the edges of what parsers take.
const RAW: [&str; 30] = [
    "",
    " ",
    "\n",
    "null",
    "{",
    "}",
    "{}",
    "[]",
    "\u{feff}{}",
    "{\"text\": 1e999}",
    "{\"read\": 1e999}",
    "{\"read\": -0}",
    "{\"text\": \"\\ud800\"}",
    "{\"text\": \"\\udc00\\ud800\"}",
    "{\"text\": \"\\u0000\"}",
    "{\"description\": \"\\u0000\", \"repo\": \"acme/widgets\"}",
    "{\"text\": \"\\uZZZZ\"}",
    "{\"text\": \"a\", \"text\": \"b\"}",
    "{\"read\": true} trailing",
    "{\"read\": true,}",
    "{'read': true}",
    "{\"read\": NaN}",
    "{\"read\": Infinity}",
    "[1, 2,]",
    "123456789012345678901234567890",
    "{\"number\": 99999999999999999999999}",
    "{\"answers\": {\"q1\": [\"SQLite\", 1]}}",
    "{\"action\": \"APPROVE\"}",
    "{\"action\": \"approve\\u0000\"}",
    "{\"url\": {\"$ne\": null}}",
];

/// Bodies that are not valid UTF-8, cut short, nested beyond reason, or plain bytes.
fn raw_body(base: BoxedStrategy<Value>) -> BoxedStrategy<Vec<u8>> {
    let text = base.prop_map(|v| v.to_string().into_bytes());
    prop_oneof![
        // Invalid UTF-8 anywhere in an otherwise shaped body.
        (text.clone(), any::<Index>(), select(BAD_UTF8.as_slice())).prop_map(|(mut b, i, bad)| {
            let at = i.index(b.len() + 1);
            b.splice(at..at, bad.iter().copied());
            b
        }),
        // Invalid UTF-8 inside a string field.
        (field_name(), "\\PC{0,8}", select(BAD_UTF8.as_slice())).prop_map(|(f, s, bad)| {
            [
                b"{\"".as_slice(),
                f.as_bytes(),
                b"\": \"",
                s.as_bytes(),
                bad,
                b"\"}",
            ]
            .concat()
        }),
        // Cut short, possibly inside a multi-byte character.
        (text, any::<Index>()).prop_map(|(b, i)| b[..i.index(b.len())].to_vec()),
        // Nested far beyond any parser's recursion limit.
        (
            1..200_000usize,
            select(vec!["[", "{\"a\":", "{\"answers\":", "{\"keys\":"]),
            any::<bool>()
        )
            .prop_map(|(n, open, closed)| {
                let mut s = open.repeat(n);
                if closed {
                    s.push('1');
                    for _ in 0..n {
                        s.push(if open == "[" { ']' } else { '}' });
                    }
                }
                s.into_bytes()
            }),
        select(RAW.as_slice()).prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..512),
    ]
    .boxed()
}

/// Content types a JSON body should not be taken with, or that stretch the parser.
fn content_type() -> BoxedStrategy<Option<Vec<u8>>> {
    let types: Vec<&[u8]> = vec![
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=x",
        b"application/json; charset=utf-16",
        b"application/json; charset=\"",
        b"application/vnd.api+json",
        b"application/jsonx",
        b"APPLICATION/JSON",
        b"application/json, text/plain",
        b"json",
        b"*/*",
        b"application/",
        b"/json",
        b"\tapplication/json",
        b"application/json\xff",
        b"text/json",
        b"",
    ];
    prop_oneof![
        1 => Just(None),
        6 => select(types).prop_map(|t| Some(t.to_vec())),
    ]
    .boxed()
}

const UNKNOWN: Uuid = Uuid::from_u128(0x0123_4567_89ab_4cde_8f01_2345_6789_abcd);

/// Path ids: malformed, traversal, NUL, 10 KB, unknown and seeded ids of other kinds.
fn path_id() -> BoxedStrategy<PathId> {
    let fixed: Vec<String> = vec![
        "not-a-uuid".into(),
        "..%2F..%2Fetc%2Fpasswd".into(),
        "..%2f..%2fetc".into(),
        "%2e%2e".into(),
        "%00".into(),
        "%".into(),
        "%zz".into(),
        "%FF%FE".into(),
        "a%2Fb".into(),
        "%20".into(),
        "-1".into(),
        "0".into(),
        "1e999".into(),
        "null".into(),
        "00000000-0000-0000-0000-000000000000".into(),
        "ffffffff-ffff-ffff-ffff-ffffffffffff".into(),
        format!("{UNKNOWN}%00"),
        format!("{UNKNOWN}x"),
        format!("%7B{UNKNOWN}%7D"),
        format!("urn:uuid:{UNKNOWN}"),
        UNKNOWN.simple().to_string(),
        UNKNOWN.to_string().to_uppercase(),
        "a".repeat(10_240),
        "%41".repeat(3_414),
        UNKNOWN.to_string().repeat(280),
    ];
    prop_oneof![
        2 => any::<Index>().prop_map(PathId::Seeded),
        2 => any::<u128>().prop_map(|n| PathId::Raw(Uuid::from_u128(n).to_string())),
        3 => select(fixed).prop_map(PathId::Raw),
        2 => "\\PC{1,40}".prop_map(|s| PathId::Raw(percent_encode(&s))),
        1 => any::<String>().prop_map(|s| PathId::Raw(percent_encode(&s))),
    ]
    .boxed()
}

const LAST_EVENT_IDS: [&[u8]; 7] = [
    b"1",
    b"-1",
    b"x",
    b"",
    b" 5 ",
    b"99999999999999999999",
    b"\xff",
];

fn query_value() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(vec![
            "-1",
            "0",
            "1",
            "1000",
            "1001",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "99999999999999999999",
            "1.5",
            "1e3",
            "",
            "%00",
            "%FF",
            "%",
            "true",
            "null",
            "queued,planning",
            "bogus",
            ",,,",
            "not-a-uuid",
        ])
        .prop_map(str::to_owned),
        1 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        1 => "\\PC{0,20}".prop_map(|s| percent_encode(&s)),
        1 => (1..6_000usize).prop_map(|n| "9".repeat(n)),
    ]
    .boxed()
}

fn query(params: &[String]) -> BoxedStrategy<String> {
    let mut names: Vec<String> = params.to_vec();
    names.push("unknown".into());
    names.push("%00".into());
    prop::collection::vec((select(names), query_value()), 0..4)
        .prop_map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        })
        .boxed()
}

// ---------------------------------------------------------------------------------
// The test

/// Cases per operation and kind of input, per backend: about 1,250 requests each, so
/// both tests stay well under a minute on two shared cores. `MAINLOOP_FUZZ_SCALE=10`
/// runs ten times as many.
const ARBITRARY_JSON: u32 = 16;
const SHAPED: u32 = 40;
const RAW_BYTES: u32 = 32;
const CONTENT_TYPES: u32 = 10;
const PATH_IDS: u32 = 16;
const QUERIES: u32 = 16;

fn scaled(cases: u32) -> u32 {
    let scale: f64 = std::env::var("MAINLOOP_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    // Truncation is fine: a case count, not money.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = (f64::from(cases) * scale).round() as u32;
    n.max(1)
}

#[test]
fn hostile_input_to_every_operation_gets_a_4xx_and_changes_nothing_on_sqlite() {
    fuzz_every_operation(Backend::Sqlite);
}

#[test]
fn hostile_input_to_every_operation_gets_a_4xx_and_changes_nothing_on_postgres() {
    fuzz_every_operation(Backend::Postgres);
}

#[allow(clippy::print_stderr)]
fn fuzz_every_operation(backend: Backend) {
    let started = Instant::now();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let doc = super::openapi();
    let ops = operations();
    let (mut bodies, mut ids, mut queries) = (0, 0, 0);
    for op in &ops {
        let takes_query =
            op.method == Method::GET && !(op.query.is_empty() && op.headers.is_empty());
        if op.body.is_none() && !op.template.contains("{id}") && !takes_query {
            continue;
        }
        let fuzz = Fuzz::start(stats.clone(), backend);
        let samples = Samples::new(&fuzz.push, &fuzz.app.token);
        if let Some(schema) = &op.body {
            bodies += 1;
            let shape = shaped(schema, &doc, "", &samples);
            let o = op.clone();
            fuzz.run(
                "arbitrary JSON",
                op,
                ARBITRARY_JSON,
                any_json().prop_map(move |v| Req::json(&o, v.to_string().into_bytes())),
            );
            let o = op.clone();
            fuzz.run(
                "schema-shaped JSON",
                op,
                SHAPED,
                shape
                    .clone()
                    .prop_map(move |v| Req::json(&o, v.to_string().into_bytes())),
            );
            let o = op.clone();
            fuzz.run(
                "raw bytes",
                op,
                RAW_BYTES,
                raw_body(shape.clone()).prop_map(move |b| Req::json(&o, b)),
            );
            let o = op.clone();
            fuzz.run(
                "content types",
                op,
                CONTENT_TYPES,
                (shape, content_type()).prop_map(move |(v, ct)| Req {
                    content_type: ct,
                    ..Req::json(&o, v.to_string().into_bytes())
                }),
            );
        }
        if op.template.contains("{id}") {
            ids += 1;
            let o = op.clone();
            let body = op.body.as_ref().map(|s| shaped(s, &doc, "", &samples));
            let strategy = match body {
                Some(body) => (path_id(), body.prop_map(Some)).boxed(),
                None => (path_id(), Just(None)).boxed(),
            };
            fuzz.run(
                "path ids",
                op,
                PATH_IDS,
                strategy.prop_map(move |(id, body)| Req {
                    id,
                    ..match body {
                        Some(v) => Req::json(&o, v.to_string().into_bytes()),
                        None => Req::new(&o),
                    }
                }),
            );
        }
        if takes_query {
            queries += 1;
            let o = op.clone();
            let header = prop_oneof![
                2 => Just(None),
                1 => select(LAST_EVENT_IDS.as_slice()).prop_map(Some),
            ];
            fuzz.run(
                "query strings",
                op,
                QUERIES,
                (query(&op.query), header).prop_map(move |(query, last_event_id)| Req {
                    query,
                    headers: last_event_id
                        .filter(|_| o.template == EVENTS)
                        .map(|v| vec![("last-event-id", v.to_vec())])
                        .unwrap_or_default(),
                    ..Req::new(&o)
                }),
            );
        }
    }
    let stats = stats.lock().unwrap();
    eprintln!(
        "hostile input on {backend:?}: {} operations ({bodies} with a body, {ids} with an \
         id, {queries} with a query): {} cases, {} requests sent (statuses {:?}), {} snapshot \
         reads; {:.1?} in all, {:.1?} sending, {:.1?} reading snapshots",
        ops.len(),
        stats.cases,
        stats.sent,
        stats.by_status,
        stats.reads,
        started.elapsed(),
        stats.send_time,
        stats.read_time,
    );
    // The document has every route the server serves, so nothing was left out.
    assert_eq!(ops.len(), super::ROUTES.len());
    assert!(stats.by_status.keys().all(|s| *s < 500));
}

/// PostgreSQL refuses NUL in text, so a NUL once reached the database as a 500 there
/// (and was stored by SQLite). Now every JSON body with one is refused up front.
#[tokio::test]
async fn nul_characters_are_refused_before_they_reach_either_database() {
    let postgres = mainloop_testpg::fresh_database_url().await.unwrap();
    for database in [None, Some(postgres)] {
        let app = app_from(Setup {
            engine: EngineConfig {
                forge_webhook_secret: Some(WebhookSecret(WEBHOOK_SECRET.into())),
                ..EngineConfig::default()
            },
            database: database.clone(),
            ..Setup::default()
        })
        .await;
        let asking = app.create_task("asks", false).await;
        app.drive(
            &asking,
            vec![
                TaskEvent::SlotGranted,
                TaskEvent::QuestionsAsked(questions()),
            ],
        )
        .await;
        let planning = app.create_task("plans", false).await;
        app.drive(
            &planning,
            vec![
                TaskEvent::SlotGranted,
                TaskEvent::PlanProposed("1. do it".into()),
            ],
        )
        .await;
        let push = mainloop_fake_push::FakePush::start().await.unwrap();
        let mut subscription = push.subscribe();
        subscription["user_agent"] = json!("Firefox\u{0}");
        let before = app.snapshot(&app.token).await;
        let nul = "a\u{0}b";
        let task =
            |id: &Value, rest: &str| format!("/api/tasks/{}{rest}", id["id"].as_str().unwrap());
        for (method, path, body) in [
            (Method::POST, "/api/chat".to_owned(), json!({"text": nul})),
            (
                Method::POST,
                "/api/tasks".into(),
                json!({"description": nul, "repo": "acme/widgets"}),
            ),
            (
                Method::POST,
                task(&asking, "/answers"),
                json!({"answers": {"q1": "SQLite", "q2": nul}}),
            ),
            (
                Method::POST,
                task(&planning, "/plan"),
                json!({"action": "revise", "feedback": nul}),
            ),
            (
                Method::PUT,
                "/api/notifications/ntfy".into(),
                json!({"url": format!("https://ntfy.example/{nul}")}),
            ),
            (Method::POST, "/api/notifications/push".into(), subscription),
            (
                Method::POST,
                "/api/auth/login".into(),
                json!({"token": nul}),
            ),
        ] {
            let (status, body) = app
                .call(Cred::Bearer(&app.token), method.clone(), &path, Some(body))
                .await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{method} {path} on {database:?}: {body}"
            );
            assert_eq!(body["error"]["code"], "bad_request", "{body}");
            assert!(
                body["error"]["message"].as_str().unwrap().contains("NUL"),
                "{body}"
            );
        }
        // A signed delivery naming such a repository wakes nothing, and says so.
        let delivery =
            json!({"repository": {"full_name": nul}, "issue": {"number": 1}}).to_string();
        let resp = app
            .client
            .post(app.url(WEBHOOK))
            .header("content-type", "application/json")
            .header("x-github-event", "issue_comment")
            .header("x-hub-signature-256", sign(delivery.as_bytes()))
            .body(delivery)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{database:?}");
        assert_eq!(resp.json::<Value>().await.unwrap(), json!({"woken": 0}));
        assert_eq!(app.snapshot(&app.token).await, before, "{database:?}");
    }
}

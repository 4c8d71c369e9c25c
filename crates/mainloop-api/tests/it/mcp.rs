//! The MCP server at `/api/mcp` through clients no one here wrote: the official Rust
//! SDK's client (both lifecycles: `server/discover` and `initialize`), the real `claude`
//! CLI driven by the fake model, and the official MCP Inspector's CLI.

use super::{App, app, questions};
use mainloop_domain::TaskId;
use mainloop_domain::task::TaskEvent;
use mainloop_domain::transcript::TranscriptEntry;
use reqwest::StatusCode;
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion, RequestMetaObject};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{Value, json};
use std::path::Path;

type Client = RunningService<RoleClient, ClientConfig>;

pub(super) fn lifecycles() -> [ClientLifecycleMode; 2] {
    [
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
        ClientLifecycleMode::Initialize,
    ]
}

pub(super) async fn connect(app: &App, token: &str, lifecycle: ClientLifecycleMode) -> Client {
    // Built with the whole workspace, reqwest 0.13 has no crypto provider of its own (the
    // binary installs one); this client needs one too, though it never speaks TLS.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(app.url("/api/mcp")).auth_header(token),
    );
    ClientConfig::default()
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .unwrap()
}

/// A tool's result: its text, and whether it is an error result.
pub(super) async fn call_with(
    client: &Client,
    name: &str,
    args: Value,
    meta: Option<&str>,
) -> (String, bool) {
    let mut params = CallToolRequestParams::new(name.to_owned())
        .with_arguments(args.as_object().cloned().unwrap_or_default());
    if let Some(id) = meta {
        let mut m = RequestMetaObject::new();
        m.0.insert("claudecode/toolUseId".into(), json!(id));
        params.meta = Some(m);
    }
    let result = client.call_tool(params).await.unwrap();
    let text = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<String>();
    (text, result.is_error == Some(true))
}

async fn ok(client: &Client, name: &str, args: Value) -> Value {
    let (text, is_error) = call_with(client, name, args.clone(), None).await;
    assert!(!is_error, "{name} {args}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
}

async fn error(client: &Client, name: &str, args: Value) -> String {
    let (text, is_error) = call_with(client, name, args.clone(), None).await;
    assert!(is_error, "{name} {args} should fail: {text}");
    text
}

fn id_of(task: &Value) -> String {
    task["task_id"]
        .as_str()
        .or_else(|| task["id"].as_str())
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn both_lifecycles_list_and_run_every_tool_for_the_caller_only() {
    let app = app().await;
    let (_, bob) = app.engine.create_user("bob", false).await.unwrap();
    for lifecycle in lifecycles() {
        let mcp = connect(&app, &app.token, lifecycle.clone()).await;
        let names: Vec<String> = mcp
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect();
        assert_eq!(names.len(), 18, "{names:?}");
        for name in ["spawn_task", "get_inbox", "get_transcript", "get_diff"] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }

        // Spawning, listing, reading.
        let spawned = ok(
            &mcp,
            "spawn_task",
            json!({"description": "Add a health endpoint", "repo": "acme/widgets"}),
        )
        .await;
        let id = id_of(&spawned);
        assert_eq!(spawned["state"], "queued");
        let listed = ok(&mcp, "list_tasks", json!({})).await;
        assert!(
            listed["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| id_of(t) == id),
            "{listed}"
        );
        let got = ok(&mcp, "get_task", json!({"task_id": id})).await;
        assert_eq!(id_of(&got["task"]), id);

        // Questions: wrong answers are refused, right ones accepted.
        let task: TaskId = id.parse().unwrap();
        app.drive(
            &json!({"id": id}),
            vec![
                TaskEvent::SlotGranted,
                TaskEvent::QuestionsAsked(questions()),
            ],
        )
        .await;
        let inbox = ok(&mcp, "get_inbox", json!({"limit": 5})).await;
        assert!(inbox["needs_you"].as_i64().unwrap() >= 1, "{inbox}");
        assert!(
            inbox["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["task_id"] == json!(id))
        );
        let wrong = error(
            &mcp,
            "answer_questions",
            json!({"task_id": id, "answers": {"q1": ["MySQL"], "q2": "x"}}),
        )
        .await;
        assert!(wrong.contains("MySQL"), "{wrong}");
        let answered = ok(
            &mcp,
            "answer_questions",
            json!({"task_id": id, "answers": {"q1": ["SQLite"], "q2": "widgets"}}),
        )
        .await;
        assert_eq!(answered["state"], "planning");

        // A plan: revision needs feedback, then approval.
        app.drive(
            &json!({"id": id}),
            vec![TaskEvent::PlanProposed("1. do it".into())],
        )
        .await;
        let no_feedback = error(
            &mcp,
            "decide_plan",
            json!({"task_id": id, "action": "revise"}),
        )
        .await;
        assert!(no_feedback.contains("feedback"), "{no_feedback}");
        let approved = ok(
            &mcp,
            "decide_plan",
            json!({"task_id": id, "action": "approve"}),
        )
        .await;
        assert_eq!(approved["state"], "implementing");

        // Review: changes, then the transcript and the (absent) diff.
        app.drive(
            &json!({"id": id}),
            vec![TaskEvent::AgentFinished, TaskEvent::ChecksPassed],
        )
        .await;
        let changes = ok(
            &mcp,
            "review_task",
            json!({"task_id": id, "action": "changes", "feedback": "Add a test"}),
        )
        .await;
        assert_eq!(changes["state"], "implementing");
        let user = app
            .engine
            .authenticate_token(&app.token)
            .await
            .unwrap()
            .unwrap()
            .id;
        let entries: Vec<TranscriptEntry> = (0..5)
            .map(|i| TranscriptEntry::text_entry(format!("step {i}")))
            .collect();
        app.engine
            .record_transcript(user, task, &entries)
            .await
            .unwrap();
        let page = ok(&mcp, "get_transcript", json!({"task_id": id, "limit": 2})).await;
        assert_eq!(page["entries"].as_array().unwrap().len(), 2);
        assert_eq!(page["more"], 3);
        assert_eq!(
            page["note"],
            "truncated: 3 more entries; call again with after=2"
        );
        let rest = ok(&mcp, "get_transcript", json!({"task_id": id, "after": 2})).await;
        assert_eq!(rest["entries"][0]["payload"]["text"], "step 2", "{rest}");
        assert_eq!(
            (rest["more"].as_u64(), rest["next_after"].as_i64()),
            (Some(0), Some(5))
        );
        let no_diff = error(&mcp, "get_diff", json!({"task_id": id})).await;
        assert!(no_diff.contains("no workspace"), "{no_diff}");

        // Another user sees none of it, whatever the tool.
        let theirs = connect(&app, &bob, lifecycle.clone()).await;
        assert_eq!(
            ok(&theirs, "list_tasks", json!({})).await["tasks"],
            json!([])
        );
        assert_eq!(
            ok(&theirs, "get_inbox", json!({})).await["items"],
            json!([])
        );
        for (tool, args) in [
            ("get_task", json!({"task_id": id})),
            ("cancel_task", json!({"task_id": id})),
            ("retry_task", json!({"task_id": id})),
            ("get_transcript", json!({"task_id": id})),
            ("get_diff", json!({"task_id": id})),
            ("decide_plan", json!({"task_id": id, "action": "cancel"})),
            ("review_task", json!({"task_id": id, "action": "approve"})),
            ("answer_questions", json!({"task_id": id, "answers": {}})),
            (
                "answer_budget",
                json!({"task_id": id, "action": "continue_once"}),
            ),
        ] {
            let message = error(&theirs, tool, args).await;
            // The engine's `cancel_task` words it as its other not-found errors.
            let unknown = [format!("no task {id}"), "task not found".to_owned()];
            assert!(unknown.contains(&message), "{tool}: {message}");
        }
        theirs.cancel().await.unwrap();

        // Cancel, then retry a failed one; wrong states are error results.
        let retry_early = error(&mcp, "retry_task", json!({"task_id": id})).await;
        assert!(retry_early.contains("not allowed"), "{retry_early}");
        let cancelled = ok(&mcp, "cancel_task", json!({"task_id": id})).await;
        assert_eq!(cancelled["state"], "cancelled");
        let failing = ok(
            &mcp,
            "spawn_task",
            json!({"description": "Break things", "repo": "acme/widgets", "skip_plan": true}),
        )
        .await;
        app.drive(
            &json!({"id": id_of(&failing)}),
            vec![
                TaskEvent::SlotGranted,
                TaskEvent::AgentFailed("boom".into()),
            ],
        )
        .await;
        let retried = ok(&mcp, "retry_task", json!({"task_id": id_of(&failing)})).await;
        assert_ne!(retried["state"], "failed");

        // A budget hold answered over MCP; the pause and the usage report.
        let costly = ok(
            &mcp,
            "spawn_task",
            json!({"description": "Costly", "repo": "acme/widgets", "skip_plan": true}),
        )
        .await;
        let reached = TaskEvent::BudgetReached {
            scope: mainloop_domain::usage::BudgetScope::Task,
            reason: "This task's budget is reached".into(),
            input: None,
        };
        app.drive(
            &json!({"id": id_of(&costly)}),
            vec![TaskEvent::SlotGranted, reached],
        )
        .await;
        let not_held = json!({"task_id": id_of(&failing), "action": "continue_once"});
        let early = error(&mcp, "answer_budget", not_held).await;
        assert!(early.contains("not allowed"), "{early}");
        let no_usd = json!({"task_id": id_of(&costly), "action": "raise"});
        assert!(error(&mcp, "answer_budget", no_usd).await.contains("usd"));
        let once = json!({"task_id": id_of(&costly), "action": "continue_once"});
        assert_eq!(
            ok(&mcp, "answer_budget", once).await["state"],
            "implementing"
        );
        assert_eq!(ok(&mcp, "pause_work", json!({})).await["paused"], true);
        let usage = ok(&mcp, "get_usage", json!({"days": 3})).await;
        assert_eq!(usage["days"].as_array().unwrap().len(), 3, "{usage}");
        assert_eq!(usage["pause"]["paused"], true);
        assert_eq!(ok(&mcp, "resume_work", json!({})).await["paused"], false);
        mcp.cancel().await.unwrap();
    }
    let ours = app.get("/api/tasks").await.1;
    assert_eq!(ours["tasks"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn bad_arguments_are_error_results_and_unknown_tools_protocol_errors() {
    let app = app().await;
    let before = app.snapshot(&app.token).await;
    for lifecycle in lifecycles() {
        let mcp = connect(&app, &app.token, lifecycle).await;
        for (tool, args, says) in [
            ("spawn_task", json!({}), "missing field"),
            (
                "spawn_task",
                json!({"description": 5, "repo": "a/b"}),
                "invalid",
            ),
            (
                "spawn_task",
                json!({"description": "  ", "repo": "a/b"}),
                "description",
            ),
            ("get_task", json!({}), "missing field `task_id`"),
            (
                "get_task",
                json!({"task_id": "nope"}),
                "'nope' is not a task id",
            ),
            ("list_tasks", json!({"state": "sleeping"}), "sleeping"),
            ("get_inbox", json!({"limit": "ten"}), "invalid arguments"),
            ("get_inbox", json!({"limit": -1}), "invalid arguments"),
            (
                "answer_questions",
                json!({"task_id": "x"}),
                "invalid arguments",
            ),
            (
                "decide_plan",
                json!({"task_id": uuid::Uuid::nil(), "action": "maybe"}),
                "unknown variant",
            ),
            (
                "review_task",
                json!({"task_id": uuid::Uuid::nil(), "action": "approve", "extra": 1}),
                "unknown field",
            ),
            (
                "get_transcript",
                json!({"task_id": uuid::Uuid::nil(), "after": -3}),
                "invalid",
            ),
            (
                "get_diff",
                json!({"task_id": uuid::Uuid::nil(), "max_bytes": 0.5}),
                "invalid",
            ),
            (
                "decide_plan",
                json!({"task_id": uuid::Uuid::nil(), "action": "revise", "feedback": "x".repeat(20_001)}),
                "longer than",
            ),
            (
                "retry_task",
                json!({"task_id": uuid::Uuid::nil()}),
                "no task",
            ),
        ] {
            let message = error(&mcp, tool, args.clone()).await;
            assert!(message.contains(says), "{tool} {args}: {message}");
        }
        let unknown = mcp
            .call_tool(CallToolRequestParams::new("rm_rf"))
            .await
            .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown tool 'rm_rf'"),
            "{unknown}"
        );
        mcp.cancel().await.unwrap();
    }
    assert_eq!(app.snapshot(&app.token).await, before);
}

#[tokio::test]
async fn a_tool_use_id_runs_its_call_once() {
    let app = app().await;
    let mcp = connect(&app, &app.token, lifecycles()[0].clone()).await;
    let args = json!({"description": "Exactly once", "repo": "acme/widgets"});
    let first = call_with(&mcp, "spawn_task", args.clone(), Some("toolu_once")).await;
    let again = call_with(&mcp, "spawn_task", args.clone(), Some("toolu_once")).await;
    assert!(!first.1, "{}", first.0);
    assert_eq!(first, again);
    // Over the other lifecycle too, and for the read tools: the recorded result.
    let legacy = connect(&app, &app.token, ClientLifecycleMode::Initialize).await;
    assert_eq!(
        call_with(&legacy, "spawn_task", args.clone(), Some("toolu_once")).await,
        first
    );
    let tasks = app.get("/api/tasks").await.1;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1, "{tasks}");
    // Without an id, or with another one, each call runs.
    call_with(&mcp, "spawn_task", args.clone(), None).await;
    call_with(&mcp, "spawn_task", args.clone(), Some("toolu_other")).await;
    let tasks = app.get("/api/tasks").await.1;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 3, "{tasks}");
    mcp.cancel().await.unwrap();
    legacy.cancel().await.unwrap();
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_the_apis_401_before_any_mcp() {
    let app = app().await;
    let discover = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    for auth in [None, Some("Bearer mlt_wrong"), Some("Basic Zm9vOmJhcg==")] {
        let mut rb = app
            .client
            .post(app.url("/api/mcp"))
            .header("accept", "application/json, text/event-stream")
            .json(&discover);
        if let Some(value) = auth {
            rb = rb.header("authorization", value);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    // A DNS name in Host is served (the token is what protects the server).
    let resp = app
        .client
        .post(app.url("/api/mcp"))
        .header("host", "mainloop.internal.example:8080")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .bearer_auth(&app.token)
        .json(&discover)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["result"]["tools"].as_array().unwrap().len(),
        18,
        "{body}"
    );
}

/// Runs the Inspector's CLI against the server with `args`, offline, in a home of its
/// own; returns its stdout as JSON.
async fn inspect(app: &App, token: &str, args: &[&str]) -> Value {
    let bin = mainloop_test_support::mcp_inspector_path().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(bin)
        .arg("--cli")
        .arg(app.url("/api/mcp"))
        .args(["--transport", "http", "--header"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(args)
        .env("HOME", home.path())
        .env("MCP_CATALOG_PATH", home.path().join("catalog.json"))
        .env("npm_config_offline", "true")
        .env("NO_UPDATE_NOTIFIER", "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inspector {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn the_mcp_inspector_lists_the_tools_and_calls_them() {
    if mainloop_test_support::mcp_inspector_path().is_none() {
        return;
    }
    let app = app().await;
    let listed = inspect(&app, &app.token, &["--method", "tools/list"]).await;
    let tools = listed["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 18, "{listed}");
    let spawn = tools.iter().find(|t| t["name"] == "spawn_task").unwrap();
    assert_eq!(
        spawn["inputSchema"]["required"],
        json!(["description", "repo"])
    );

    let spawned = inspect(
        &app,
        &app.token,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "spawn_task",
            "--tool-arg",
            "description=Inspect me",
            "repo=acme/widgets",
        ],
    )
    .await;
    assert_ne!(spawned["isError"], json!(true), "{spawned}");
    let task: Value =
        serde_json::from_str(spawned["content"][0]["text"].as_str().unwrap()).unwrap();
    let listed = inspect(
        &app,
        &app.token,
        &["--method", "tools/call", "--tool-name", "list_tasks"],
    )
    .await;
    let tasks: Value =
        serde_json::from_str(listed["content"][0]["text"].as_str().unwrap()).unwrap();
    let ids: Vec<String> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids, [id_of(&task)]);
}

/// The JSON-RPC methods `/api/mcp` received; `server/discover` is answered 400 ("as an
/// `mcp<2` server does") when `legacy` is set, so a client falls back to `initialize`.
#[derive(Clone, Default)]
struct Recorder {
    methods: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    legacy: bool,
}

async fn record(
    axum::extract::State(rec): axum::extract::State<Recorder>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    if parts.uri.path() == "/api/mcp" {
        let method = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|m| m["method"].as_str().map(str::to_owned));
        if let Some(method) = method {
            rec.methods.lock().unwrap().push(method.clone());
            if rec.legacy && method == "server/discover" {
                return (StatusCode::BAD_REQUEST, "Bad Request: Missing session ID")
                    .into_response();
            }
        }
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// The API served again, on its own port, behind a [`Recorder`].
async fn recorded(app: &App, rec: &Recorder) -> String {
    let routes = mainloop_api::router(app.engine.clone(), super::config())
        .layer(axum::middleware::from_fn_with_state(rec.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = app.shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, routes)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    format!("http://{addr}/api/mcp")
}

/// The fake model makes Claude Code spawn a task, then list the tasks.
const SPAWN_AND_LIST: &str = r#"
rules:
  - name: done
    match: {tool_result_for: mcp__mainloop__list_tasks}
    reply:
      - text: "All done."
  - name: list
    match: {tool_result_for: mcp__mainloop__spawn_task}
    reply:
      - tool_use: {name: mcp__mainloop__list_tasks, input: {}}
  - name: spawn
    match: {user_contains: "start the worker"}
    reply:
      - text: "Starting it."
      - tool_use:
          name: mcp__mainloop__spawn_task
          input: {description: "Paint the shed", repo: "acme/widgets"}
"#;

/// One `claude -p` run limited to mainloop's MCP tools (the token reaches the header
/// through `${MAINLOOP_TOKEN}`, never argv); its stream-json lines.
async fn claude_run(claude: &Path, model: &str, url: &str, token: &str) -> Vec<Value> {
    use tokio::io::AsyncWriteExt;
    let home = tempfile::tempdir().unwrap();
    let config = json!({"mcpServers": {"mainloop": {
        "type": "http",
        "url": url,
        "headers": {"Authorization": "Bearer ${MAINLOOP_TOKEN}"}
    }}});
    let mut child = tokio::process::Command::new(claude)
        .args([
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--mcp-config",
        ])
        .arg(config.to_string())
        .args([
            "--strict-mcp-config",
            "--tools",
            "",
            "--allowedTools",
            "mcp__mainloop",
        ])
        .current_dir(home.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .env("ANTHROPIC_BASE_URL", model)
        .env("MAINLOOP_TOKEN", token)
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Please start the worker.").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .expect("claude finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "claude: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn claude_code_calls_the_tools_over_both_protocol_paths() {
    let Some(claude) = mainloop_test_support::claude_path() else {
        return;
    };
    let app = app().await;
    let script = mainloop_fake_anthropic::Script::from_yaml(SPAWN_AND_LIST).unwrap();
    let fake = mainloop_test_support::fake_model(script).await;
    for (n, legacy) in [(1, false), (2, true)] {
        let rec = Recorder {
            legacy,
            ..Recorder::default()
        };
        let url = recorded(&app, &rec).await;
        let lines = claude_run(&claude, &fake.base_url(), url.as_str(), &app.token).await;
        let init = lines
            .iter()
            .find(|l| l["type"] == "system" && l["subtype"] == "init")
            .unwrap();
        let servers = init["mcp_servers"].as_array().unwrap();
        assert_eq!(servers.len(), 1, "{init}");
        assert_eq!(
            (servers[0]["name"].as_str(), servers[0]["status"].as_str()),
            (Some("mainloop"), Some("connected")),
            "{init}"
        );
        let tools: Vec<&str> = init["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(tools.len(), 18, "{tools:?}");
        assert!(
            tools.iter().all(|t| t.starts_with("mcp__mainloop__")),
            "{tools:?}"
        );
        let result = lines.iter().find(|l| l["type"] == "result").unwrap();
        assert_eq!(
            (result["is_error"].as_bool(), result["result"].as_str()),
            (Some(false), Some("All done.")),
            "{result}"
        );

        // The path the CLI took, and the task: there once per run.
        let methods = rec.methods.lock().unwrap().clone();
        assert_eq!(
            methods.first().map(String::as_str),
            Some("server/discover"),
            "{methods:?}"
        );
        assert_eq!(
            methods.contains(&"initialize".to_owned()),
            legacy,
            "{methods:?}"
        );
        let calls = methods.iter().filter(|m| *m == "tools/call").count();
        assert_eq!(calls, 2, "{methods:?}");
        let tasks = app.get("/api/tasks").await.1;
        let tasks = tasks["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), n, "{tasks:?}");
        assert!(tasks.iter().all(|t| t["description"] == "Paint the shed"));
        // The model read the new task back through list_tasks.
        let last = fake.message_requests().last().unwrap().body.to_string();
        assert!(last.contains(tasks[0]["id"].as_str().unwrap()), "{last}");
    }

    // Each spawn was recorded under the model's tool_use id, which the CLI passed in
    // `_meta`: calling again with that id (a replayed turn) reads back the first result.
    let body = fake.message_requests().last().unwrap().body.clone();
    let ids: Vec<String> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|b| b["type"] == "tool_use" && b["name"] == "mcp__mainloop__spawn_task")
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{body}");
    let mcp = connect(&app, &app.token, lifecycles()[0].clone()).await;
    let args = json!({"description": "Paint the shed", "repo": "acme/widgets"});
    let (text, is_error) = call_with(&mcp, "spawn_task", args, Some(&ids[0])).await;
    assert!(!is_error, "{text}");
    let tasks = app.get("/api/tasks").await.1;
    let tasks = tasks["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(
        tasks
            .iter()
            .any(|t| text.contains(t["id"].as_str().unwrap())),
        "{text}"
    );
    mcp.cancel().await.unwrap();
}

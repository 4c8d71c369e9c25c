//! `mainloop mcp`, the stdio bridge to a server's `/api/mcp`: driven by the official MCP
//! Inspector's CLI as its stdio client against the real binary, and by the official
//! Rust SDK's client over in-memory pipes (both lifecycles, the tool-use id carried
//! through, a wrong token refused with a clear error).

use super::*;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
    RequestMetaObject,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::{ClientLifecycleMode, ClientServiceExt};

/// The Inspector's CLI with `mainloop mcp` as its stdio server; its stdout as JSON.
fn inspect(server: &Server, token: &str, args: &[&str]) -> Value {
    let bin = mainloop_test_support::mcp_inspector_path().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args(["--cli", "--transport", "stdio"])
        .args(args)
        .arg("--")
        .arg(BIN)
        .args(["mcp", "--server", &server.base, "--token", token])
        .env("HOME", home.path())
        .env("MCP_CATALOG_PATH", home.path().join("catalog.json"))
        .env("npm_config_offline", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inspector {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn text_of(result: &Value) -> Value {
    serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_runs_the_tools_through_mainloop_mcp() {
    if mainloop_test_support::mcp_inspector_path().is_none() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let token = server.token.clone().unwrap();
    let repo = GitRepo::new();
    let repo_arg = format!("repo={}", repo.path().display());
    let listed = inspect(&server, &token, &["--method", "tools/list"]);
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names.len(), 18, "{listed}");
    assert!(names.contains(&"spawn_task") && names.contains(&"get_diff"));

    let spawned = inspect(
        &server,
        &token,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "spawn_task",
            "--tool-arg",
            "description=Bridge me",
            &repo_arg,
        ],
    );
    assert_ne!(spawned["isError"], json!(true), "{spawned}");
    let task = text_of(&spawned);
    let listed = inspect(
        &server,
        &token,
        &["--method", "tools/call", "--tool-name", "list_tasks"],
    );
    let tasks = text_of(&listed);
    assert_eq!(tasks["tasks"][0]["task_id"], task["task_id"], "{tasks}");
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1);
}

type Client = RunningService<RoleClient, ClientConfig>;

/// The bridge on in-memory pipes, with the SDK's client on the other end.
async fn bridged(base: &str, token: &str, lifecycle: ClientLifecycleMode) -> Client {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (read, write) = tokio::io::split(theirs);
    let (base, token) = (base.to_owned(), token.to_owned());
    tokio::spawn(async move { mainloop::mcp_stdio::serve(&base, &token, read, write).await });
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("e2e", "1"),
    )
    .serve_with_lifecycle(ours, lifecycle)
    .await
    .unwrap()
}

async fn spawn_with(mcp: &Client, repo: &Path, id: &str) -> (String, bool) {
    let mut call = CallToolRequestParams::new("spawn_task").with_arguments(
        json!({"description": "Once only", "repo": repo})
            .as_object()
            .unwrap()
            .clone(),
    );
    let mut meta = RequestMetaObject::new();
    meta.0.insert("claudecode/toolUseId".into(), json!(id));
    call.meta = Some(meta);
    let result = mcp.call_tool(call).await.unwrap();
    let text = result.content[0].as_text().unwrap().text.clone();
    (text, result.is_error == Some(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_forwards_calls_with_their_tool_use_id() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let token = server.token.clone().unwrap();
    let repo = GitRepo::new();
    let mut first = None;
    for lifecycle in [
        ClientLifecycleMode::Initialize,
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    ] {
        let mcp = bridged(&server.base, &token, lifecycle).await;
        assert_eq!(mcp.list_all_tools().await.unwrap().len(), 18);
        let result = spawn_with(&mcp, repo.path(), "toolu_bridge").await;
        assert!(!result.1, "{}", result.0);
        assert_eq!(first.get_or_insert_with(|| result.clone()), &result);
        // The server's own protocol errors arrive as they were.
        let unknown = mcp
            .call_tool(CallToolRequestParams::new("rm_rf"))
            .await
            .unwrap_err();
        assert!(unknown.to_string().contains("unknown tool"), "{unknown}");
        mcp.cancel().await.unwrap();
    }
    let tasks = get(&server.base, &token, "/api/tasks").await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1, "{tasks}");

    // A wrong token: the bridge gives up with a message saying what to check.
    let (_ours, theirs) = tokio::io::duplex(1 << 16);
    let (read, write) = tokio::io::split(theirs);
    let err = mainloop::mcp_stdio::serve(&server.base, "mlt_wrong", read, write)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("valid API token"), "{err:#}");
}

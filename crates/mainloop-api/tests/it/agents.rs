//! The agent is a choice: `GET /api/agents` lists the configured agents with what this
//! server found of each, and a task (over the API or MCP's `spawn_task`) runs the one it
//! names, its project's default, or the configured default; any other is refused.

use super::mcp::{call_with, connect, lifecycles};
use super::{App, Setup, app_from};
use mainloop_domain::agents::{AgentCatalog, AgentName, AgentSpec, Protocol};
use mainloop_engine::EngineConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn spec(name: &str, protocol: Protocol, command: &[&str], cap: Option<usize>) -> AgentSpec {
    AgentSpec {
        name: AgentName::parse(name).unwrap(),
        protocol,
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        pass_env: vec![],
        max_concurrent: cap,
    }
}

/// Claude (a program that is there and answers `--version`) and Codex (one that is not).
async fn two_agents() -> App {
    let agents = AgentCatalog::new(
        vec![
            spec(
                "codex",
                Protocol::CodexAppServer,
                &["mainloop-no-such-program-x", "app-server"],
                Some(2),
            ),
            spec("claude", Protocol::ClaudeCode, &["/bin/echo"], None),
        ],
        AgentName::default(),
    )
    .unwrap();
    app_from(Setup {
        engine: EngineConfig {
            agents,
            ..EngineConfig::default()
        },
        ..Setup::default()
    })
    .await
}

#[tokio::test]
async fn the_configured_agents_are_listed_with_what_each_can_do() {
    let app = two_agents().await;
    let (status, body) = app.get("/api/agents").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let agents = body["agents"].as_array().unwrap();
    let names: Vec<&str> = agents.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["claude", "codex"]);
    let (claude, codex) = (&agents[0], &agents[1]);
    assert_eq!(claude["protocol"], "claude-code");
    assert_eq!(claude["default"], true);
    assert_eq!(claude["installed"], true);
    assert!(
        claude["version"]
            .as_str()
            .is_some_and(|v| v.contains("echo")),
        "{claude}"
    );
    assert_eq!(claude["max_concurrent"], Value::Null);
    assert_eq!(claude["capabilities"]["plan_mode"], "native");
    assert_eq!(codex["protocol"], "codex-app-server");
    assert_eq!(
        codex["command"],
        json!(["mainloop-no-such-program-x", "app-server"])
    );
    assert_eq!(codex["installed"], false);
    assert_eq!(codex["version"], Value::Null);
    assert_eq!(codex["default"], false);
    assert_eq!(codex["max_concurrent"], 2);
    assert_eq!(codex["capabilities"]["questions"], "convention");
    // Asked once per server start: the same answer again.
    assert_eq!(app.get("/api/agents").await.1, body);
}

#[tokio::test]
async fn a_task_runs_the_agent_it_names_and_no_unconfigured_one() {
    let app = two_agents().await;
    let create = |agent: Value| {
        let mut body = json!({"description": "Fix it", "repo": "acme/widgets"});
        if !agent.is_null() {
            body["agent"] = agent;
        }
        app.post("/api/tasks", body)
    };
    let (status, task) = create(json!("codex")).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(task["agent"], "codex");
    let (status, task) = create(Value::Null).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(task["agent"], "claude");

    let before = app.snapshot(&app.token).await;
    let (status, body) = create(json!("gemini")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("claude, codex"), "{body}");
    for hostile in [
        json!("../../bin/sh"),
        json!("CLAUDE"),
        json!("x".repeat(5000)),
        json!(""),
    ] {
        let (status, body) = create(hostile.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{hostile}: {body}"
        );
    }
    for malformed in [json!(5), json!(["claude"]), json!({"name": "claude"})] {
        let (status, body) = create(malformed.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{malformed}: {body}");
    }
    assert_eq!(
        app.snapshot(&app.token).await,
        before,
        "refusals change nothing"
    );
}

#[tokio::test]
async fn the_mcp_spawn_task_takes_an_agent() {
    let app = two_agents().await;
    let mcp = connect(&app, &app.token, lifecycles()[0].clone()).await;
    let args = json!({"description": "Over MCP", "repo": "acme/widgets", "agent": "codex"});
    let (text, is_error) = call_with(&mcp, "spawn_task", args, None).await;
    assert!(!is_error, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["agent"],
        "codex"
    );
    let args = json!({"description": "Over MCP", "repo": "acme/widgets", "agent": "nope"});
    let (text, is_error) = call_with(&mcp, "spawn_task", args, None).await;
    assert!(is_error && text.contains("claude, codex"), "{text}");
    mcp.cancel().await.unwrap();
}

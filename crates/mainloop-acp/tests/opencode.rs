//! The contract with the real, pinned OpenCode (`node_modules/.bin/opencode acp`)
//! driven through the adapter against the scripted fake Anthropic API: a turn that
//! writes a file, runs a command and tries a path outside the worktree, then a new
//! process that resumes the session and continues it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// A skipped real-CLI test says so on stderr.
#![allow(clippy::print_stderr)]

mod support;

use std::path::Path;
use std::time::Duration;

use mainloop_acp::AcpAgent;
use mainloop_agent::{
    Agent, AgentEvent, AgentMode, AgentSession, LocalProcess, RunSpec, SessionRef, TurnEnd,
};
use mainloop_fake_anthropic::{FakeAnthropic, Script};
use serde_json::json;
use support::{TestDir, cli_path, script, session_started, texts, turn};

struct World {
    fake: FakeAnthropic,
    home: TestDir,
    worktree: TestDir,
    outside: TestDir,
    agent: AcpAgent,
}

impl World {
    async fn new(opencode: &Path) -> Self {
        let home = TestDir::new("home");
        let worktree = TestDir::new("worktree");
        let outside = TestDir::new("outside");
        let escape = outside.0.join("escape.txt").display().to_string();
        let front = Script::from_yaml(&format!(
            r#"
rules:
  - name: write-outside
    match: {{user_contains: "write the escape file"}}
    reply:
      - tool_use: {{name: write, input: {{filePath: "{escape}", content: "escaped\n"}}}}
"#
        ))
        .unwrap();
        let fake = FakeAnthropic::start(front.then(script("opencode-greeter")))
            .await
            .unwrap();
        let config = json!({
            "model": "anthropic/claude-sonnet-4-5",
            "autoupdate": false,
            "share": "disabled",
            "provider": {"anthropic": {"options": {
                "baseURL": format!("{}/v1", fake.base_url()),
                "apiKey": "sk-ant-test"
            }}},
            "agent": {"build": {"permission": {"edit": "ask", "bash": "ask"}}}
        });
        let dir = home.0.join(".config/opencode");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("opencode.json"), config.to_string()).unwrap();
        let agent = AcpAgent::new(
            "opencode",
            vec![opencode.display().to_string(), "acp".into()],
        );
        Self {
            fake,
            home,
            worktree,
            outside,
            agent,
        }
    }

    fn spec(&self, session: SessionRef, mode: AgentMode) -> RunSpec {
        let env = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", self.home.0.display().to_string()),
            ("TMPDIR", self.home.0.display().to_string()),
            ("OPENCODE_DISABLE_AUTOUPDATE", "1".into()),
            ("OPENCODE_DISABLE_MODELS_FETCH", "1".into()),
        ];
        RunSpec {
            cwd: self.worktree.0.clone(),
            session,
            mode,
            model: None,
            append_system_prompt: None,
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    fn start(&self, session: SessionRef, mode: AgentMode) -> Box<dyn AgentSession> {
        self.agent
            .start(self.spec(session, mode), &LocalProcess::new())
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_writes_runs_is_confined_and_resumes() {
    let Some(opencode) = cli_path("opencode") else {
        return;
    };
    let world = World::new(&opencode).await;
    let mut s = world.start(SessionRef::New("ignored".into()), AgentMode::Implement);
    let session_id = session_started(&mut s).await;
    assert!(session_id.starts_with("ses_"), "{session_id}");

    let (events, asked) = turn(&mut s, &world.worktree.0, "Please build the greeter.").await;
    let greeting = world.worktree.0.join("greeting.txt");
    let write = asked
        .iter()
        .find(|(tool, input)| {
            matches!(tool.as_str(), "Write" | "Edit")
                && input["file_path"] == json!(greeting.display().to_string())
        })
        .unwrap_or_else(|| panic!("no Write permission for {greeting:?}: {asked:#?}"));
    assert_eq!(write.0, "Write", "{asked:#?}");
    assert!(
        asked.iter().any(|(tool, input)| tool == "Bash"
            && input["command"]
                .as_str()
                .is_some_and(|c| c.contains("ran.txt"))),
        "{asked:#?}"
    );
    assert_eq!(std::fs::read_to_string(&greeting).unwrap(), "hello\n");
    assert_eq!(
        std::fs::read_to_string(world.worktree.0.join("ran.txt")).unwrap(),
        "ran\n"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::ToolCall { name, summary, .. }
            if name == "Bash" && summary.contains("ran.txt"))),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, AgentEvent::ToolResult { summary, .. } if summary.contains("COMMAND-MARK"))),
        "{events:#?}"
    );
    let Some(AgentEvent::Finished { end, result, .. }) = events.last() else {
        panic!("{events:#?}")
    };
    assert_eq!(*end, TurnEnd::Done, "{events:#?}");
    assert!(
        result
            .as_deref()
            .is_some_and(|r| r.contains("GREETER-MARK")),
        "{events:#?}"
    );

    // OpenCode writes files itself once a write is allowed, so a path outside the
    // worktree is stopped at the permission, which names it absolutely.
    let (events, asked) = turn(&mut s, &world.worktree.0, "Now write the escape file.").await;
    let escape = world.outside.0.join("escape.txt");
    assert!(
        asked.iter().any(|(tool, input)| tool == "Write"
            && input["file_path"] == json!(escape.display().to_string())),
        "{asked:#?}"
    );
    assert!(
        !escape.exists(),
        "a write outside the worktree went through: {events:#?}"
    );
    let refused_call = events.iter().find_map(|e| match e {
        AgentEvent::ToolCall { id, summary, .. } if summary.contains("escape.txt") => {
            Some(id.clone())
        }
        _ => None,
    });
    assert!(
        events.iter().any(
            |e| matches!(e, AgentEvent::ToolResult { tool_use_id, is_error: true, .. }
            if Some(tool_use_id) == refused_call.as_ref())
        ),
        "the refused write is not reported as failed: {events:#?}"
    );
    assert!(
        matches!(events.last(), Some(AgentEvent::Finished { .. })),
        "{events:#?}"
    );
    s.stop(Duration::from_secs(10)).await;

    // A new process continues the same session with its history.
    let mut s = world.start(SessionRef::Resume(session_id.clone()), AgentMode::Implement);
    assert_eq!(session_started(&mut s).await, session_id);
    let (events, _) = turn(&mut s, &world.worktree.0, "Now continue, please.").await;
    assert_eq!(
        texts(&events),
        ["Continued where we left off: CONTINUED-MARK."],
        "{events:#?}"
    );
    let last = world.fake.message_requests().pop().unwrap();
    let body = last.body.to_string();
    assert!(
        body.contains("build the greeter") && body.contains("GREETER-MARK"),
        "the resumed turn lacks the history: {body}"
    );
    s.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_in_plan_mode_does_not_write() {
    let Some(opencode) = cli_path("opencode") else {
        return;
    };
    let world = World::new(&opencode).await;
    let mut s = world.start(SessionRef::New("ignored".into()), AgentMode::Plan);
    session_started(&mut s).await;
    // The build agent asks before every write; the plan agent, switched to through the
    // `mode` config option, refuses writes without asking.
    let (events, asked) = turn(&mut s, &world.worktree.0, "Please build the greeter.").await;
    assert!(
        !asked
            .iter()
            .any(|(tool, _)| tool == "Write" || tool == "Edit"),
        "{asked:#?}"
    );
    assert!(
        !world.worktree.0.join("greeting.txt").exists(),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::ToolResult { is_error: true, .. })),
        "{events:#?}"
    );
    s.stop(Duration::from_secs(10)).await;
}

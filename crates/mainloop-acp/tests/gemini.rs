//! The contract with the real, pinned Gemini CLI (`node_modules/.bin/gemini --acp`)
//! driven through the adapter against the fake's Gemini API: a turn that writes a file
//! and runs a command, a new process that loads the session and continues it with its
//! history, and plan mode, in which a write to the worktree fails.

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
use mainloop_fake_anthropic::FakeAnthropic;
use serde_json::json;
use support::{TestDir, cli_path, script, session_started, texts, turn};

struct World {
    fake: FakeAnthropic,
    home: TestDir,
    worktree: TestDir,
    agent: AcpAgent,
}

impl World {
    async fn new(gemini: &Path) -> Self {
        let home = TestDir::new("gemini-home");
        let worktree = TestDir::new("gemini-worktree");
        let fake = FakeAnthropic::start(script("gemini-greeter"))
            .await
            .unwrap();
        // No update checks, usage statistics or telemetry: nothing leaves the machine.
        let settings = json!({
            "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
            "privacy": {"usageStatisticsEnabled": false},
            "telemetry": {"enabled": false}
        });
        let dir = home.0.join(".gemini");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("settings.json"), settings.to_string()).unwrap();
        let agent = AcpAgent::new("gemini", vec![gemini.display().to_string(), "--acp".into()]);
        Self {
            fake,
            home,
            worktree,
            agent,
        }
    }

    fn spec(&self, session: SessionRef, mode: AgentMode) -> RunSpec {
        let env = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", self.home.0.display().to_string()),
            ("TMPDIR", self.home.0.display().to_string()),
            ("GOOGLE_GEMINI_BASE_URL", self.fake.base_url()),
            ("GEMINI_API_KEY", "test-key".into()),
            // Otherwise MCP servers are ignored and the edit modes refused.
            ("GEMINI_CLI_TRUST_WORKSPACE", "true".into()),
            ("GEMINI_TELEMETRY_ENABLED", "false".into()),
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

    /// The tools the CLI offered in its last main (streamed) model call.
    fn last_tools(&self) -> Vec<String> {
        let call = self
            .fake
            .message_requests()
            .into_iter()
            .rfind(|r| r.path.contains(":streamGenerateContent"))
            .unwrap();
        let tools = call.body["tools"].as_array().cloned().unwrap_or_default();
        tools
            .iter()
            .filter_map(|t| t["functionDeclarations"].as_array())
            .flatten()
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_writes_runs_and_loads_the_session() {
    let Some(gemini) = cli_path("gemini") else {
        return;
    };
    let world = World::new(&gemini).await;
    let mut s = world.start(SessionRef::New("ignored".into()), AgentMode::Implement);
    let session_id = session_started(&mut s).await;

    let (events, asked) = turn(&mut s, &world.worktree.0, "Please build the greeter.").await;
    let greeting = world.worktree.0.join("greeting.txt");
    assert!(
        asked.iter().any(|(tool, input)| tool == "Write"
            && input["file_path"] == json!(greeting.display().to_string())),
        "no Write permission for {greeting:?}: {asked:#?}"
    );
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
    let Some(AgentEvent::Finished {
        end,
        result,
        input_tokens,
        output_tokens,
        ..
    }) = events.last()
    else {
        panic!("{events:#?}")
    };
    assert_eq!(*end, TurnEnd::Done, "{events:#?}");
    assert!(
        result
            .as_deref()
            .is_some_and(|r| r.contains("GREETER-MARK")),
        "{events:#?}"
    );
    assert!(*input_tokens > 0 && *output_tokens > 0, "{events:#?}");
    // The model saw the command's output, not only its call.
    let last = world.fake.message_requests().pop().unwrap();
    assert!(last.body.to_string().contains("COMMAND-MARK"), "{last:?}");
    s.stop(Duration::from_secs(10)).await;

    // A new process loads the same session (Gemini offers load, not resume) and
    // continues it with its history, right away: the adapter waits for the minute that
    // names Gemini's chat file to turn, and for the replayed history to end.
    let mut s = world.start(SessionRef::Resume(session_id.clone()), AgentMode::Implement);
    assert_eq!(session_started(&mut s).await, session_id);
    let (events, _) = turn(&mut s, &world.worktree.0, "Now continue, please.").await;
    assert_eq!(
        texts(&events),
        ["Continued where we left off: CONTINUED-MARK."],
        "the turn's events hold only its own output: {events:#?}"
    );
    let Some(AgentEvent::Finished { end, result, .. }) = events.last() else {
        panic!("{events:#?}")
    };
    assert_eq!(*end, TurnEnd::Done, "{events:#?}");
    assert_eq!(
        result.as_deref(),
        Some("Continued where we left off: CONTINUED-MARK.")
    );
    let last = world.fake.message_requests().pop().unwrap();
    let body = last.body.to_string();
    assert!(
        body.contains("build the greeter") && body.contains("GREETER-MARK"),
        "the loaded session lacks the history: {body}"
    );
    s.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_in_plan_mode_does_not_write_the_worktree() {
    let Some(gemini) = cli_path("gemini") else {
        return;
    };
    let world = World::new(&gemini).await;
    let mut s = world.start(SessionRef::New("ignored".into()), AgentMode::Plan);
    session_started(&mut s).await;
    // Gemini's plan mode takes the shell away and denies `write_file` outside its
    // plans directory by policy, without asking; the permissions are answered as
    // while implementing, so only the mode stops the write.
    let (events, asked) = turn(&mut s, &world.worktree.0, "Please build the greeter.").await;
    let greeting = world.worktree.0.join("greeting.txt");
    assert!(!greeting.exists(), "{asked:#?} {events:#?}");
    assert!(!asked.iter().any(|(tool, _)| tool == "Write"), "{asked:#?}");
    // Refused by Gemini's plan-mode policy, not by the adapter's read-only file
    // writes (which say "plan mode (read-only)").
    assert!(
        events.iter().any(
            |e| matches!(e, AgentEvent::ToolResult { is_error: true, summary, .. }
            if summary.contains("denied by policy"))
        ),
        "{events:#?}"
    );
    let tools = world.last_tools();
    assert!(
        tools.iter().any(|t| t == "write_file") && !tools.iter().any(|t| t == "run_shell_command"),
        "{tools:?}"
    );
    let Some(AgentEvent::Finished { end, result, .. }) = events.last() else {
        panic!("{events:#?}")
    };
    assert_eq!(*end, TurnEnd::Done, "{events:#?}");
    assert!(
        result.as_deref().is_some_and(|r| r.contains("PLAN-MARK")),
        "{events:#?}"
    );
    s.stop(Duration::from_secs(10)).await;
}

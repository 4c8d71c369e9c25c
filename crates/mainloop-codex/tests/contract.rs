//! Contract: the real pinned `codex app-server` (root `node_modules/.bin/codex`)
//! driven through the adapter against the fake model speaking the OpenAI Responses
//! wire. An implement turn runs a command and applies a patch, both approved through
//! `Permission` events; a second process resumes the thread; a plan turn cannot write.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// A skipped test says why on stderr.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mainloop_agent::{
    Agent, AgentEvent, AgentFailure, AgentMode, AgentSession, ControlReply, LocalProcess, RunSpec,
    SessionRef, TurnEnd,
};
use mainloop_codex::Codex;
use mainloop_fake_anthropic::{FakeAnthropic, Script};
use serde_json::json;

const EVENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The test's own rules, in front of the shared `codex-greeter` script (which runs
/// a command, then a patch adding greeting.txt): a resumed thread carries on; a plan
/// turn tries to write and reports the failure.
const RULES: &str = r#"
rules:
  - name: resumed
    match: {user_contains: "carry on"}
    reply:
      - text: "Carrying on from where we were."
  - name: plan-write
    match: {user_contains: "plan the greeter"}
    reply:
      - tool_use: {name: exec_command, input: {cmd: "touch plan-wrote.txt"}}
  - name: slow-command
    match: {user_contains: "wait for me"}
    reply:
      - tool_use: {name: exec_command, input: {cmd: "touch never-approved.txt"}}
  - name: implement-after-plan
    match: {user_contains: "now implement"}
    reply:
      - tool_use: {name: exec_command, input: {cmd: "touch implemented.txt && echo implemented-$((6*7))"}}
  - name: implemented
    match: {tool_result_for: exec_command, tool_result_contains: "implemented-42"}
    reply:
      - text: "Implemented."
  - name: plan-done
    match: {tool_result_for: exec_command, tool_result_contains: "plan-wrote"}
    reply:
      - text: "The plan is read-only."
"#;

fn script() -> Script {
    let shared = repo_root().join("crates/mainloop-fake-anthropic/scripts/codex-greeter.yaml");
    Script::from_yaml(RULES)
        .unwrap()
        .then(Script::from_path(&shared).unwrap())
}

fn repo_root() -> PathBuf {
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).unwrap()
}

/// The pinned CLI, or None (and the test skips) when `npm ci` has not installed it,
/// except under CI, where that is a failure.
fn codex_path() -> Option<PathBuf> {
    let program = repo_root().join("node_modules/.bin/codex");
    if program.exists() {
        return Some(std::fs::canonicalize(&program).unwrap_or(program));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing",
        program.display()
    );
    eprintln!("skipping: {} is missing (run `npm ci`)", program.display());
    None
}

/// A home for Codex outside the temporary directory (Codex refuses to set up its
/// sandbox helper under it), removed when dropped.
struct Home(PathBuf);

impl Home {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = repo_root().join("target/test-homes").join(format!(
            "codex-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        for sub in ["codex", "tmp", "work"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        Self(dir)
    }

    fn work(&self) -> PathBuf {
        self.0.join("work")
    }

    fn spec(&self, session: SessionRef, mode: AgentMode) -> RunSpec {
        let path = |p: &str| self.0.join(p).display().to_string();
        RunSpec {
            cwd: self.work(),
            session,
            mode,
            model: Some("gpt-5.5".to_owned()),
            append_system_prompt: None,
            env: vec![
                ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
                ("HOME".into(), self.0.display().to_string()),
                ("CODEX_HOME".into(), path("codex")),
                ("TMPDIR".into(), path("tmp")),
                ("FAKE_API_KEY".into(), "sk-fake".into()),
            ],
        }
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn codex(program: &Path, fake: &FakeAnthropic) -> Codex {
    let provider = format!(
        "model_providers.fake={{name=\"Fake\",base_url=\"{}/v1\",wire_api=\"responses\",\
         env_key=\"FAKE_API_KEY\",request_max_retries=0,stream_max_retries=0}}",
        fake.base_url()
    );
    Codex::new(vec![
        program.display().to_string(),
        "-c".into(),
        "model_provider=fake".into(),
        "-c".into(),
        provider,
    ])
}

async fn next(s: &mut Box<dyn AgentSession>) -> AgentEvent {
    tokio::time::timeout(EVENT_TIMEOUT, s.next_event())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no event in {EVENT_TIMEOUT:?}; stderr {:?}",
                s.stderr_tail()
            )
        })
        .unwrap_or_else(|| panic!("the session ended; stderr {:?}", s.stderr_tail()))
}

/// Runs one turn to its end, allowing every permission; returns every event.
async fn turn(s: &mut Box<dyn AgentSession>, text: &str) -> Vec<AgentEvent> {
    s.send_user_message(text).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let event = next(s).await;
        if let AgentEvent::Permission { request_id, .. } = &event {
            let allow = ControlReply::Allow {
                updated_input: json!({}),
            };
            s.reply(request_id, allow).await.unwrap();
        }
        let end = matches!(
            event,
            AgentEvent::Finished { .. } | AgentEvent::Exited { .. }
        );
        seen.push(event);
        if end {
            return seen;
        }
    }
}

/// The body of the latest `POST /v1/responses` the fake received.
fn last_responses_request(fake: &FakeAnthropic) -> serde_json::Value {
    fake.requests()
        .into_iter()
        .rev()
        .find(|r| r.path.starts_with("/v1/responses"))
        .expect("a Responses request")
        .body
}

fn finished_tokens(events: &[AgentEvent]) -> (u64, u64) {
    match events.last() {
        Some(AgentEvent::Finished {
            end: TurnEnd::Done,
            input_tokens,
            output_tokens,
            ..
        }) => (*input_tokens, *output_tokens),
        other => panic!("the turn did not finish well: {other:?}; all {events:#?}"),
    }
}

#[tokio::test]
async fn real_codex_runs_approves_resumes_and_plans_read_only() {
    let Some(program) = codex_path() else { return };
    let fake = FakeAnthropic::start(script()).await.unwrap();
    let home = Home::new();
    let agent = codex(&program, &fake);
    assert_eq!(agent.name(), "codex");
    let placement = LocalProcess::new();

    // Implement: a command and a patch, each asked of the host.
    let spec = home.spec(SessionRef::New("ignored-uuid".into()), AgentMode::Implement);
    let mut s = agent.start(spec, &placement).unwrap();
    let events = turn(&mut s, "build the greeter").await;
    let (input, output) = finished_tokens(&events);
    assert!(input > 0 && output > 0, "{events:#?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, AgentEvent::Malformed { .. })),
        "{events:#?}"
    );
    let thread = events
        .iter()
        .find_map(|e| match e {
            AgentEvent::SessionStarted { session_id, .. } => Some(session_id.clone()),
            _ => None,
        })
        .expect("SessionStarted");
    assert_ne!(thread, "ignored-uuid");
    let permissions: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Permission { tool, input, .. } => Some((tool.as_str(), input)),
            _ => None,
        })
        .collect();
    assert!(
        matches!(&permissions[..], [("Bash", bash), ("Write", write)]
            if bash["command"].as_str().unwrap().contains("greeter-started")
            && write["file_path"] == home.work().join("greeting.txt").display().to_string()),
        "{permissions:#?} in {events:#?}; fake log {:#?}",
        fake.requests()
            .iter()
            .map(|r| (&r.path, &r.rule_name, r.status))
            .collect::<Vec<_>>()
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::ToolCall { name, .. } if name == "Bash"))
    );
    assert!(events.iter().any(|e| matches!(e, AgentEvent::ToolCall { name, summary, .. } if name == "Write" && summary == "Write greeting.txt")));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::Text { text } if text == "All done."))
    );
    assert_eq!(
        std::fs::read_to_string(home.work().join("greeting.txt")).unwrap(),
        "hello\n"
    );
    s.stop(Duration::from_secs(10)).await;
    assert_eq!(s.exit_code(), Some(0), "stderr {:?}", s.stderr_tail());

    // A second process continues the same thread with its history.
    let spec = home.spec(SessionRef::Resume(thread.clone()), AgentMode::Implement);
    let mut s = agent.start(spec, &placement).unwrap();
    let events = turn(&mut s, "carry on").await;
    finished_tokens(&events);
    assert!(
        matches!(&events[0], AgentEvent::SessionStarted { session_id, .. } if *session_id == thread)
    );
    let last = last_responses_request(&fake);
    assert!(
        last.to_string().contains("build the greeter"),
        "no history: {last}"
    );
    s.stop(Duration::from_secs(10)).await;

    // Plan: read-only, nothing asked, the write fails inside Codex's sandbox.
    let spec = home.spec(SessionRef::New("ignored".into()), AgentMode::Plan);
    let mut s = agent.start(spec, &placement).unwrap();
    let events = turn(&mut s, "plan the greeter").await;
    finished_tokens(&events);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, AgentEvent::Permission { .. })),
        "{events:#?}"
    );
    assert!(!home.work().join("plan-wrote.txt").exists());
    let last = last_responses_request(&fake);
    assert!(last.to_string().contains("Read-only file system"), "{last}");
    s.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn stopping_mid_turn_lets_codex_exit_by_itself() {
    let Some(program) = codex_path() else { return };
    let fake = FakeAnthropic::start(script()).await.unwrap();
    let home = Home::new();
    let spec = home.spec(SessionRef::New("u".into()), AgentMode::Implement);
    let mut s = codex(&program, &fake)
        .start(spec, &LocalProcess::new())
        .unwrap();
    s.send_user_message("wait for me").await.unwrap();
    // The turn runs, blocked on a command approval that never comes.
    loop {
        match next(&mut s).await {
            AgentEvent::Permission { tool, .. } => {
                assert_eq!(tool, "Bash");
                break;
            }
            AgentEvent::Finished { .. } | AgentEvent::Exited { .. } => {
                panic!("the turn ended before asking")
            }
            _ => {}
        }
    }
    s.stop(EVENT_TIMEOUT).await;
    // Exited on its own (a kill reads 137), and the command never ran.
    assert_eq!(s.exit_code(), Some(0), "stderr {:?}", s.stderr_tail());
    assert!(!home.work().join("never-approved.txt").exists());
    assert!(s.send_user_message("more").await.is_err());
}

#[tokio::test]
async fn a_killed_thread_resumes_and_a_planned_one_resumes_writable() {
    let Some(program) = codex_path() else { return };
    let fake = FakeAnthropic::start(script()).await.unwrap();
    let home = Home::new();
    let agent = codex(&program, &fake);
    let placement = LocalProcess::new();

    // Killed while a command waits for approval.
    let spec = home.spec(SessionRef::New("u".into()), AgentMode::Implement);
    let mut s = agent.start(spec, &placement).unwrap();
    s.send_user_message("wait for me").await.unwrap();
    let mut thread = None;
    loop {
        match next(&mut s).await {
            AgentEvent::SessionStarted { session_id, .. } => thread = Some(session_id),
            AgentEvent::Permission { .. } => break,
            AgentEvent::Finished { .. } | AgentEvent::Exited { .. } => {
                panic!("the turn ended before asking")
            }
            _ => {}
        }
    }
    s.kill().await;
    assert_eq!(s.exit_code(), Some(128 + 9));
    let thread = thread.expect("SessionStarted before the permission");

    // A new process continues the thread, with what was said before the kill.
    let spec = home.spec(SessionRef::Resume(thread.clone()), AgentMode::Implement);
    let mut s = agent.start(spec, &placement).unwrap();
    let events = turn(&mut s, "carry on").await;
    finished_tokens(&events);
    let last = last_responses_request(&fake);
    assert!(
        last.to_string().contains("wait for me"),
        "no history: {last}"
    );
    s.stop(Duration::from_secs(10)).await;
    assert!(!home.work().join("never-approved.txt").exists());

    // A thread planned read-only is resumed writable for the implementation.
    let spec = home.spec(SessionRef::New("u2".into()), AgentMode::Plan);
    let mut s = agent.start(spec, &placement).unwrap();
    let events = turn(&mut s, "plan the greeter").await;
    finished_tokens(&events);
    let AgentEvent::SessionStarted { session_id, .. } = &events[0] else {
        panic!("{events:#?}")
    };
    let planned = session_id.clone();
    s.stop(Duration::from_secs(10)).await;
    let spec = home.spec(SessionRef::Resume(planned), AgentMode::Implement);
    let mut s = agent.start(spec, &placement).unwrap();
    let events = turn(&mut s, "now implement").await;
    finished_tokens(&events);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::Permission { tool, .. } if tool == "Bash")),
        "{events:#?}"
    );
    assert!(home.work().join("implemented.txt").exists(), "{events:#?}");
    s.stop(Duration::from_secs(10)).await;
}

/// The Responses API's answer when the account's 5-hour window is used up: a 429
/// `usage_limit_reached` whose headers say which windows are used and when they reset.
fn usage_limit_script(primary_reset: u64, secondary_reset: u64) -> Script {
    let rule = json!({"rules": [{
        "name": "limit",
        "status": 429,
        "error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                  "fields": {"plan_type": "plus", "resets_at": primary_reset}},
        "headers": {
            "x-codex-primary-used-percent": "100",
            "x-codex-primary-window-minutes": "300",
            "x-codex-primary-reset-at": primary_reset.to_string(),
            "x-codex-secondary-used-percent": "40",
            "x-codex-secondary-window-minutes": "10080",
            "x-codex-secondary-reset-at": secondary_reset.to_string(),
        },
    }]});
    Script::from_json(&rule.to_string()).unwrap()
}

#[tokio::test]
async fn a_used_up_plan_is_a_usage_limit_until_its_window_resets() {
    let Some(program) = codex_path() else { return };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (reset, weekly_reset) = (now + 2 * 3600, now + 5 * 86_400);
    let fake = FakeAnthropic::start(usage_limit_script(reset, weekly_reset))
        .await
        .unwrap();
    let home = Home::new();
    let agent = codex(&program, &fake);
    let spec = home.spec(SessionRef::New("ignored-uuid".into()), AgentMode::Implement);
    let mut s = agent.start(spec, &LocalProcess::new()).unwrap();
    let events = turn(&mut s, "build the greeter").await;
    match events.last() {
        Some(AgentEvent::Finished {
            end:
                TurnEnd::Failed {
                    failure: AgentFailure::UsageLimit { resets_at, reason },
                },
            ..
        }) => {
            assert_eq!(*resets_at, Some(reset), "the 5-hour window's reset");
            assert!(reason.contains("usage limit"), "{reason}");
        }
        other => panic!("not a usage limit: {other:?}; all {events:#?}"),
    }
    let asked = fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/responses"))
        .count();
    assert_eq!(asked, 1, "Codex does not retry a usage limit");
    s.kill().await;
}

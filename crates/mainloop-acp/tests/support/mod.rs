//! What the contract tests with real ACP agents share: finding the pinned CLI and the
//! fake's scripts, test directories under `target/test-homes`, and running a turn the
//! way the worker's policy answers it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mainloop_agent::{AgentEvent, AgentSession, ControlReply};
use mainloop_fake_anthropic::Script;
use serde_json::Value;

pub const EVENT_TIMEOUT: Duration = Duration::from_secs(120);

pub fn repo_root() -> PathBuf {
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).unwrap()
}

/// The pinned CLI `node_modules/.bin/<name>`, or None (the test skips) when `npm ci`
/// has not installed it, except under CI.
pub fn cli_path(name: &str) -> Option<PathBuf> {
    let program = repo_root().join("node_modules/.bin").join(name);
    if program.exists() {
        return Some(program);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing",
        program.display()
    );
    eprintln!("skipping: {} is missing (run `npm ci`)", program.display());
    None
}

pub fn script(name: &str) -> Script {
    let path = repo_root().join(format!(
        "crates/mainloop-fake-anthropic/scripts/{name}.yaml"
    ));
    Script::from_path(&path).unwrap()
}

/// A directory under `target/test-homes` (never the temp dir), removed when dropped.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(what: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = repo_root().join(format!(
            "target/test-homes/acp-{what}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn next(s: &mut Box<dyn AgentSession>) -> AgentEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, s.next_event()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the session ended; stderr {:?}", s.stderr_tail()),
        Err(_) => panic!(
            "no event within {EVENT_TIMEOUT:?}; stderr {:?}",
            s.stderr_tail()
        ),
    }
}

/// Runs a turn to its end, answering permissions as the worker's policy does while
/// implementing (files inside `worktree` only); returns the events and the
/// permissions asked, as `(tool, input)`.
pub async fn turn(
    s: &mut Box<dyn AgentSession>,
    worktree: &Path,
    text: &str,
) -> (Vec<AgentEvent>, Vec<(String, Value)>) {
    s.send_user_message(text).await.unwrap();
    let mut events = Vec::new();
    let mut asked = Vec::new();
    loop {
        let event = next(s).await;
        if let AgentEvent::Permission {
            request_id,
            tool,
            input,
        } = &event
        {
            asked.push((tool.clone(), input.clone()));
            let outside = input["file_path"]
                .as_str()
                .is_some_and(|p| !Path::new(p).starts_with(worktree));
            let reply = if outside {
                ControlReply::Deny {
                    message: "outside the worktree".into(),
                    interrupt: false,
                }
            } else {
                ControlReply::Allow {
                    updated_input: input.clone(),
                }
            };
            s.reply(request_id, reply).await.unwrap();
        }
        let finished = matches!(event, AgentEvent::Finished { .. });
        events.push(event);
        if finished {
            return (events, asked);
        }
    }
}

pub async fn session_started(s: &mut Box<dyn AgentSession>) -> String {
    match next(s).await {
        AgentEvent::SessionStarted { session_id, .. } => session_id,
        other => panic!("wanted SessionStarted, got {other:?}"),
    }
}

/// The texts among `events`.
pub fn texts(events: &[AgentEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

//! What the contract tests with real ACP agents share: the pinned CLI, the fake's
//! scripts and test directories (from `mainloop-test-support`), and running a turn the
//! way the worker's policy answers it.

use std::path::Path;
use std::time::Duration;

use mainloop_agent::{AgentEvent, AgentSession, ControlReply};
use serde_json::Value;

pub const EVENT_TIMEOUT: Duration = Duration::from_secs(120);

pub use mainloop_test_support::{TestDir, node_bin as cli_path, script};

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

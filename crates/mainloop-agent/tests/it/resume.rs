//! A session ended the normal way keeps all of itself for the next `--resume`: the real
//! `claude` CLI, driven by the scripted fake model, is stopped after a finished turn
//! (with a tool call and a final reply) and while it waits for an answer, and resumed;
//! the model's request for the next turn must carry the previous turn in full. Claude
//! Code saves its session in batches, the last of them as it exits: a kill at the end of
//! the turn, or while it waits, loses what was not saved yet.

use super::{EVENT_TIMEOUT, World, claude_path};
use mainloop_agent::{
    Agent, AgentEvent, AgentMode, AgentSession, ControlReply, LocalProcess, SessionRef, TurnEnd,
};
use std::time::Duration;

/// Far longer than the CLI needs to exit (tens of milliseconds).
const GRACE: Duration = Duration::from_secs(30);

/// This test's rule, in front of the shared resume script.
const RULES: &str = r##"
rules:
  - name: recall
    match: {user_contains: "What happened so far?"}
    reply: [{text: "Recalled."}]
"##;

fn script() -> String {
    let shared = include_str!("../../../mainloop-fake-anthropic/scripts/resume.yaml");
    let (_, rules) = shared.split_once("\nrules:\n").unwrap();
    format!("{RULES}{rules}")
}

fn start(w: &World, session: SessionRef) -> Box<dyn AgentSession> {
    w.agent
        .start(w.spec(session, AgentMode::Implement), &LocalProcess::new())
        .unwrap()
}

/// Resumes `id` with a new turn; returns what its request to the model carried.
async fn resume(w: &World, id: &str) -> String {
    let mut s = start(w, SessionRef::Resume(id.to_owned()));
    s.send_user_message("What happened so far?").await.unwrap();
    let end = until_waiting(&mut s).await;
    assert!(end.is_done(), "the resumed turn failed: {end:?}");
    s.stop(GRACE).await;
    w.request("recall").body["messages"].to_string()
}

/// Reads events until the turn ends or waits for the human; allows every permission.
async fn until_waiting(s: &mut Box<dyn AgentSession>) -> AgentEvent {
    loop {
        let event = tokio::time::timeout(EVENT_TIMEOUT, s.next_event())
            .await
            .unwrap_or_else(|_| panic!("no event; stderr: {:?}", s.stderr_tail()));
        match event {
            Some(AgentEvent::Permission {
                request_id, input, ..
            }) => s
                .reply(
                    &request_id,
                    ControlReply::Allow {
                        updated_input: input,
                    },
                )
                .await
                .unwrap(),
            Some(e @ (AgentEvent::Finished { .. } | AgentEvent::Question { .. })) => return e,
            Some(_) => {}
            None => panic!("ended early; stderr {:?}", s.stderr_tail()),
        }
    }
}

#[tokio::test]
async fn a_turn_stopped_after_it_finished_is_resumed_in_full() {
    let Some(claude) = claude_path() else { return };
    let w = World::new(&claude, &script()).await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut s = start(&w, SessionRef::New(id.clone()));
    s.send_user_message("Please write the note.").await.unwrap();
    let end = until_waiting(&mut s).await;
    assert!(
        matches!(&end, AgentEvent::Finished { end: TurnEnd::Done, result: Some(r), .. } if r.contains("FINAL-REPLY-MARK")),
        "{end:?}"
    );
    s.stop(GRACE).await;
    assert_eq!(s.exit_code(), Some(0), "it exited by itself");

    let sent = resume(&w, &id).await;
    for earlier in [
        "Please write the note.",
        "Writing the note.",
        "TOOL-OUTPUT-MARK",
        "The note is written: FINAL-REPLY-MARK.",
    ] {
        assert!(sent.contains(earlier), "the resumed turn lacks {earlier:?}");
    }
}

#[tokio::test]
async fn a_session_stopped_while_it_waits_for_an_answer_is_resumed_in_full() {
    let Some(claude) = claude_path() else { return };
    let w = World::new(&claude, &script()).await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut s = start(&w, SessionRef::New(id.clone()));
    s.send_user_message("This needs a decision: ask me first.")
        .await
        .unwrap();
    let asked = until_waiting(&mut s).await;
    assert!(matches!(asked, AgentEvent::Question { .. }), "{asked:?}");
    // As the worker does with an agent that waited past the idle timeout.
    s.stop(GRACE).await;
    assert_eq!(w.rules(), ["ask"], "stopping asked the model nothing");

    let sent = resume(&w, &id).await;
    for earlier in [
        "This needs a decision: ask me first.",
        "ASKING-MARK",
        "Which colour?",
    ] {
        assert!(sent.contains(earlier), "the resumed turn lacks {earlier:?}");
    }
}

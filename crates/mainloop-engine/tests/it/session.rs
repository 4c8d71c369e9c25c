//! A chat turn answered by a session provider (a scripted one, at the port): a turn cut
//! off after a tool call is replayed saying so, the call left without a result is sealed,
//! and the answer is stored once.

use super::*;
use futures::stream::BoxStream;
use mainloop_engine::MainChoice;
use mainloop_model::{
    ModelError, ProviderStatus, SessionEvent, SessionProvider, SessionTurn, TurnUsage,
};
use std::collections::VecDeque;
use std::sync::Mutex;

/// Plays one scripted turn per call and keeps what each turn was sent.
#[derive(Debug, Default)]
struct Scripted {
    turns: Mutex<VecDeque<Vec<Result<SessionEvent, ModelError>>>>,
    inputs: Mutex<Vec<SessionTurn>>,
}

impl SessionProvider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn status(&self) -> ProviderStatus {
        ProviderStatus {
            ready: true,
            reason: "scripted".into(),
        }
    }

    fn turn(&self, turn: SessionTurn) -> BoxStream<'static, Result<SessionEvent, ModelError>> {
        self.inputs.lock().unwrap().push(turn);
        let events = self.turns.lock().unwrap().pop_front().unwrap_or_default();
        futures::stream::iter(events).boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_session_turn_is_replayed_sealed_and_answered_once() {
    let h = sqlite_harness(None, fast_config()).await;
    let call = ContentBlock::tool_use("toolu_1", "list_tasks", json!({}));
    let provider = Arc::new(Scripted::default());
    provider.turns.lock().unwrap().extend([
        // Cut off after the tool call and part of an answer: no result, no end.
        vec![
            Ok(SessionEvent::Session("s-1".into())),
            Ok(SessionEvent::Message {
                role: Role::Assistant,
                content: vec![call],
            }),
            Ok(SessionEvent::Message {
                role: Role::Assistant,
                content: vec![ContentBlock::text("half an answer")],
            }),
            Err(ModelError::Transport("the process died".into())),
        ],
        vec![
            Ok(SessionEvent::Session("s-1".into())),
            Ok(SessionEvent::TextDelta("All ".into())),
            Ok(SessionEvent::Message {
                role: Role::Assistant,
                content: vec![ContentBlock::text("All done.")],
            }),
            Ok(SessionEvent::Done(TurnUsage {
                model: "m".into(),
                cost_usd: Some(0.5),
                ..TurnUsage::default()
            })),
        ],
    ]);
    h.engine.set_main_thread(
        MainChoice {
            provider: Some("scripted".into()),
            reason: String::new(),
        },
        Some(provider.clone()),
    );
    let msg = h
        .engine
        .post_chat(h.user, "what is running?")
        .await
        .unwrap();
    let reply = reply_to(&h.engine, h.user, &msg).await;
    assert_eq!(reply.text, "All done.");

    let inputs = provider.inputs.lock().unwrap().clone();
    assert_eq!(inputs.len(), 2, "{inputs:?}");
    assert_eq!(inputs[0].input, "what is running?");
    assert_eq!(inputs[0].resume, None, "a new session");
    assert!(
        inputs[1].input.contains("was interrupted"),
        "{}",
        inputs[1].input
    );
    assert!(inputs[1].input.ends_with("what is running?"));
    assert_eq!(
        inputs[1].resume.as_deref(),
        Some("s-1"),
        "the session is resumed"
    );
    assert!(inputs[0].mcp_token.starts_with("mlm_"));

    // The call without a result got one saying it was interrupted, before the answer.
    let turn = h
        .engine
        .store_for_tests()
        .turn_messages(h.user, msg.id)
        .await
        .unwrap();
    let sealed = turn
        .iter()
        .find(|m| m.kind == MessageKind::ToolResult)
        .expect("a sealed tool result");
    assert!(sealed.content[0].is_tool_result());
    assert!(
        serde_json::to_string(&sealed.content)
            .unwrap()
            .contains("interrupted"),
        "{:?}",
        sealed.content
    );
    let answers: Vec<_> = turn
        .iter()
        .filter(|m| m.role == Role::Assistant && m.text == "All done.")
        .collect();
    assert_eq!(answers.len(), 1);
    let status = h.engine.main_thread_status(h.user).await.unwrap();
    assert!((status.cost_usd - 0.5).abs() < 1e-9, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_windows_a_session_reports_are_kept_for_the_usage_view() {
    let h = sqlite_harness(None, fast_config()).await;
    let at = mainloop_domain::Timestamp::from_millis(1_796_500_000_000);
    let five_hour = mainloop_domain::usage::QuotaWindow {
        agent: mainloop_domain::agents::AgentName::default(),
        window: "five_hour".into(),
        used_percent: Some(42.0),
        resets_at: Some(mainloop_domain::Timestamp::from_millis(1_796_578_949_000)),
        limited: false,
        observed_at: at,
    };
    let provider = Arc::new(Scripted::default());
    provider.turns.lock().unwrap().push_back(vec![
        Ok(SessionEvent::Session("s-1".into())),
        Ok(SessionEvent::Message {
            role: Role::Assistant,
            content: vec![ContentBlock::text("Hello.")],
        }),
        Ok(SessionEvent::Quota(vec![five_hour.clone()])),
        Ok(SessionEvent::Done(TurnUsage::default())),
    ]);
    h.engine.set_main_thread(
        MainChoice {
            provider: Some("scripted".into()),
            reason: String::new(),
        },
        Some(provider.clone()),
    );
    let msg = h.engine.post_chat(h.user, "hello").await.unwrap();
    let reply = reply_to(&h.engine, h.user, &msg).await;
    assert_eq!(reply.text, "Hello.");
    let usage = h.engine.usage(h.user, 1).await.unwrap();
    assert_eq!(usage.windows, vec![five_hour]);
}

//! Notes and decisions over both databases: the user's edits, scoped to their user; the
//! main thread's `remember` through a chat turn (once, however often the turn is
//! replayed) and the note in the next context; the fold over budget, told once; and a
//! session that keeps its own context told the notes only when they changed.

use super::*;
use futures::stream::BoxStream;
use mainloop_domain::notes::{NoteKind, NoteSource};
use mainloop_engine::MainChoice;
use mainloop_model::{
    ModelError, ProviderStatus, SessionEvent, SessionProvider, SessionTurn, TurnUsage,
};
use std::sync::Mutex;

both_backends!(
    notes_are_kept_edited_and_deleted_for_their_user_only,
    remember_in_a_turn_is_shown_and_reaches_the_next_context,
    a_replayed_remember_stores_its_note_once,
    notes_over_budget_fold_oldest_first_and_the_user_is_told_once,
    a_session_is_told_the_notes_only_when_they_changed,
    a_session_turn_replayed_after_remember_keeps_one_note,
);

const REMEMBER_SCRIPT: &str = r#"
rules:
  - name: knows
    match: {user_contains: "indent?", system_contains: "The team indents with tabs"}
    reply: [{text: "Tabs, as decided."}]
  - name: forgot
    match: {user_contains: "indent?"}
    reply: [{text: "I do not know."}]
  - name: decide
    match: {user_contains: "we use tabs", tool_offered: remember}
    reply:
      - {text: "Noted."}
      - tool_use: {name: remember, input: {kind: decision, text: "The team indents with tabs"}}
  - name: confirm
    match: {tool_result_for: remember}
    reply: [{text: "I will keep to it."}]
  - name: other
    match: {}
    reply: [{text: "Fine."}]
"#;

async fn thread_texts(engine: &Engine, user: UserId) -> Vec<String> {
    let (all, _) = engine.chat_messages(user, None, 500, false).await.unwrap();
    all.into_iter()
        .filter(|m| m.role == Role::Event)
        .map(|m| m.text)
        .collect()
}

async fn notes_are_kept_edited_and_deleted_for_their_user_only(backend: Backend) {
    let h = harness(backend, None, fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let mut events = engine.subscribe(user, EventId(0));
    let a = engine
        .add_note(user, NoteKind::Fact, "  Billing lives in crates/billing  ")
        .await
        .unwrap();
    assert_eq!(a.text, "Billing lives in crates/billing");
    assert_eq!(a.source, NoteSource::User);
    assert!(!a.folded);
    let b = engine
        .add_note(user, NoteKind::Decision, "No ORMs")
        .await
        .unwrap();
    let listed = engine.notes(user).await.unwrap();
    assert_eq!(
        listed.iter().map(|n| n.id).collect::<Vec<_>>(),
        [b.id, a.id]
    );

    // An edit makes a note the most recently edited.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let edited = engine
        .edit_note(
            user,
            a.id,
            NoteKind::Decision,
            "Billing moves to crates/pay",
        )
        .await
        .unwrap();
    assert_eq!(edited.kind, NoteKind::Decision);
    assert!(edited.updated_at > a.updated_at);
    assert_eq!(edited.created_at, a.created_at);
    let listed = engine.notes(user).await.unwrap();
    assert_eq!(
        listed.iter().map(|n| n.id).collect::<Vec<_>>(),
        [a.id, b.id]
    );

    // Bad text is refused, and nothing changes.
    for bad in ["", "   ", "nul\0here", &"x".repeat(2001)] {
        assert!(matches!(
            engine.add_note(user, NoteKind::Fact, bad).await,
            Err(EngineError::Invalid(_))
        ));
        assert!(matches!(
            engine.edit_note(user, b.id, NoteKind::Fact, bad).await,
            Err(EngineError::Invalid(_))
        ));
    }
    assert_eq!(engine.notes(user).await.unwrap().len(), 2);

    // Another user sees none of them and can change none.
    let other = engine.create_user("mallory", false).await.unwrap().0;
    assert!(engine.notes(other.id).await.unwrap().is_empty());
    assert!(matches!(
        engine
            .edit_note(other.id, a.id, NoteKind::Fact, "mine now")
            .await,
        Err(EngineError::NotFound("note"))
    ));
    assert!(matches!(
        engine.delete_note(other.id, a.id).await,
        Err(EngineError::NotFound("note"))
    ));
    engine
        .add_note(other.id, NoteKind::Fact, "Mallory's own")
        .await
        .unwrap();
    assert_eq!(engine.notes(user).await.unwrap().len(), 2);

    engine.delete_note(user, b.id).await.unwrap();
    assert!(matches!(
        engine.delete_note(user, b.id).await,
        Err(EngineError::NotFound("note"))
    ));
    assert_eq!(engine.notes(user).await.unwrap(), vec![edited.clone()]);

    // Every change sent the whole list; the last one has only the edited note.
    let mut last = None;
    let mut updates = 0;
    while updates < 4 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.name == EventName::NotesUpdated {
            updates += 1;
            last = Some(e.payload.clone());
        }
    }
    let last = last.unwrap();
    assert_eq!(last["notes"].as_array().unwrap().len(), 1, "{last}");
    assert_eq!(last["notes"][0]["text"], "Billing moves to crates/pay");
}

async fn remember_in_a_turn_is_shown_and_reaches_the_next_context(backend: Backend) {
    let fake = FakeAnthropic::start(Script::from_yaml(REMEMBER_SCRIPT).unwrap())
        .await
        .unwrap();
    let h = harness(backend, Some(&fake), fast_config()).await;
    let (engine, user) = (&h.engine, h.user);

    let before = engine.post_chat(user, "indent?").await.unwrap();
    assert_eq!(reply_to(engine, user, &before).await.text, "I do not know.");

    let decide = engine
        .post_chat(user, "From now on we use tabs.")
        .await
        .unwrap();
    assert_eq!(
        reply_to(engine, user, &decide).await.text,
        "I will keep to it."
    );
    let notes = engine.notes(user).await.unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].text, "The team indents with tabs");
    assert_eq!(notes[0].kind, NoteKind::Decision);
    assert_eq!(notes[0].source, NoteSource::MainThread);
    assert!(
        thread_texts(engine, user)
            .await
            .contains(&"Remembered (decision): The team indents with tabs".to_owned())
    );

    let after = engine.post_chat(user, "indent?").await.unwrap();
    assert_eq!(
        reply_to(engine, user, &after).await.text,
        "Tabs, as decided."
    );
    let last = fake.message_requests().last().unwrap().body.clone();
    let system = last["system"].to_string();
    assert!(
        system.contains("<notes>") && system.contains("] The team indents with tabs"),
        "{system}"
    );
}

async fn a_replayed_remember_stores_its_note_once(backend: Backend) {
    let fake = FakeAnthropic::start(Script::from_yaml(REMEMBER_SCRIPT).unwrap())
        .await
        .unwrap();
    let h = harness(backend, Some(&fake), fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    // As a crash leaves it: the model's call is stored, nothing ran, two jobs pending.
    let input = json!({"kind": "fact", "text": "Tabs everywhere"});
    let msg = crashed_tool_turn(engine, user, "we use tabs", "remember", input.clone()).await;
    assert_eq!(
        reply_to(engine, user, &msg).await.text,
        "I will keep to it."
    );
    eventually("both jobs done", || async {
        (engine
            .store_for_tests()
            .count_jobs(JobState::Done)
            .await
            .unwrap()
            == 2)
            .then_some(())
    })
    .await;
    // The same call over MCP (Claude Code passes the model's id along) reads it back.
    let (again, is_error) = engine
        .call_tool(user, Some("toolu_crash"), "remember", &input)
        .await
        .unwrap();
    assert!(!is_error, "{again}");
    let notes = engine.notes(user).await.unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].text, "Tabs everywhere");
    let told = thread_texts(engine, user)
        .await
        .into_iter()
        .filter(|t| t.starts_with("Remembered"))
        .count();
    assert_eq!(told, 1);
    // A mistaken call is an error the model reads, and stores nothing.
    let (err, is_error) = engine
        .call_tool(
            user,
            Some("toolu_bad"),
            "remember",
            &json!({"kind": "rule", "text": "x"}),
        )
        .await
        .unwrap();
    assert!(is_error && err.contains("unknown note kind"), "{err}");
    assert_eq!(engine.notes(user).await.unwrap().len(), 1);
}

/// Each note's text is 56 characters: its line is about 21 tokens, so a budget of 50
/// holds two.
fn long(tag: char) -> String {
    format!("{tag} {}", "word ".repeat(11).trim_end())
}

async fn notes_over_budget_fold_oldest_first_and_the_user_is_told_once(backend: Backend) {
    let fake = FakeAnthropic::start(Script::from_yaml(REMEMBER_SCRIPT).unwrap())
        .await
        .unwrap();
    let config = EngineConfig {
        notes_budget_tokens: 50,
        ..fast_config()
    };
    let h = harness(backend, Some(&fake), config).await;
    let (engine, user) = (&h.engine, h.user);
    let mut ids = Vec::new();
    for tag in ['A', 'B'] {
        ids.push(
            engine
                .add_note(user, NoteKind::Fact, &long(tag))
                .await
                .unwrap()
                .id,
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(thread_texts(engine, user).await.is_empty());
    let c = engine
        .add_note(user, NoteKind::Fact, &long('C'))
        .await
        .unwrap();
    assert!(!c.folded);
    let notes = engine.notes(user).await.unwrap();
    let folded: Vec<_> = notes.iter().filter(|n| n.folded).map(|n| n.id).collect();
    assert_eq!(folded, [ids[0]], "the oldest folds");
    let told = thread_texts(engine, user).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].starts_with("1 older note no longer fits in the context: \"A word")
            && told[0].ends_with("; edit or delete notes to make room"),
        "{}",
        told[0]
    );

    // A turn sends the two that fit and tells nothing new.
    let msg = engine.post_chat(user, "hello").await.unwrap();
    reply_to(engine, user, &msg).await;
    let system = fake.message_requests().last().unwrap().body["system"].to_string();
    assert!(
        system.contains("] B word") && system.contains("] C word"),
        "{system}"
    );
    assert!(!system.contains("] A word"), "{system}");
    assert_eq!(thread_texts(engine, user).await.len(), 1);

    // Deleting one makes room: the folded note comes back, silently.
    engine.delete_note(user, ids[1]).await.unwrap();
    let notes = engine.notes(user).await.unwrap();
    assert!(notes.iter().all(|n| !n.folded), "{notes:?}");
    assert_eq!(thread_texts(engine, user).await.len(), 1);
    // Editing the old one makes it the newest; a new note then folds the next oldest.
    tokio::time::sleep(Duration::from_millis(2)).await;
    engine
        .edit_note(user, ids[0], NoteKind::Fact, &long('A'))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    engine
        .add_note(user, NoteKind::Fact, &long('D'))
        .await
        .unwrap();
    let notes = engine.notes(user).await.unwrap();
    let folded: Vec<_> = notes.iter().filter(|n| n.folded).map(|n| n.id).collect();
    assert_eq!(folded, [c.id]);
    let told = thread_texts(engine, user).await;
    assert_eq!(told.len(), 2, "one line per fold: {told:?}");
    assert!(told[1].contains("\"C word"), "{}", told[1]);
}

/// Plays a greeting per turn and keeps what each turn was sent.
#[derive(Debug, Default)]
pub(super) struct Greeter {
    pub(super) inputs: Mutex<Vec<SessionTurn>>,
}

impl SessionProvider for Greeter {
    fn name(&self) -> &str {
        "greeter"
    }

    fn status(&self) -> ProviderStatus {
        ProviderStatus {
            ready: true,
            reason: "greeter".into(),
        }
    }

    fn turn(&self, turn: SessionTurn) -> BoxStream<'static, Result<SessionEvent, ModelError>> {
        self.inputs.lock().unwrap().push(turn);
        futures::stream::iter(vec![
            Ok(SessionEvent::Session("s-1".into())),
            Ok(SessionEvent::Message {
                role: Role::Assistant,
                content: vec![ContentBlock::text("Hello.")],
            }),
            Ok(SessionEvent::Done(TurnUsage::default())),
        ])
        .boxed()
    }
}

async fn a_session_is_told_the_notes_only_when_they_changed(backend: Backend) {
    let h = harness(backend, None, fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let provider = Arc::new(Greeter::default());
    engine.set_main_thread(
        MainChoice {
            provider: Some("greeter".into()),
            reason: String::new(),
        },
        Some(provider.clone()),
    );
    engine
        .add_note(user, NoteKind::Decision, "Ship on Fridays")
        .await
        .unwrap();
    let turn = async |text: &str| {
        let msg = engine.post_chat(user, text).await.unwrap();
        reply_to(engine, user, &msg).await;
        provider.inputs.lock().unwrap().last().unwrap().clone()
    };
    let first = turn("one").await;
    assert!(
        first.input.contains("<notes>") && first.input.contains("] Ship on Fridays"),
        "{}",
        first.input
    );
    assert!(first.input.ends_with("one"), "{}", first.input);
    assert!(
        !first.system.contains("Ship on Fridays"),
        "said, not in the system"
    );
    let second = turn("two").await;
    assert_eq!(second.input, "two", "unchanged notes are not said again");
    let note = engine
        .add_note(user, NoteKind::Fact, "Prod is eu-west-1")
        .await
        .unwrap();
    let third = turn("three").await;
    assert!(
        third.input.contains("] Prod is eu-west-1") && third.input.contains("] Ship on Fridays"),
        "{}",
        third.input
    );
    engine.delete_note(user, note.id).await.unwrap();
    let notes = engine.notes(user).await.unwrap();
    engine.delete_note(user, notes[0].id).await.unwrap();
    let fourth = turn("four").await;
    assert!(
        fourth.input.contains("no notes or decisions"),
        "{}",
        fourth.input
    );
    assert_eq!(turn("five").await.input, "five");
}

/// Calls `remember` over the engine as Claude Code would over MCP, each time under a new
/// tool-use id; the first turn then fails, as a crash or a lost connection would.
#[derive(Default)]
struct Rememberer {
    engine: Mutex<Option<Engine>>,
    turns: AtomicU32,
}

impl std::fmt::Debug for Rememberer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rememberer")
    }
}

impl SessionProvider for Rememberer {
    fn name(&self) -> &str {
        "rememberer"
    }

    fn status(&self) -> ProviderStatus {
        ProviderStatus {
            ready: true,
            reason: "rememberer".into(),
        }
    }

    fn turn(&self, turn: SessionTurn) -> BoxStream<'static, Result<SessionEvent, ModelError>> {
        let engine = self.engine.lock().unwrap().clone().unwrap();
        let n = self.turns.fetch_add(1, Ordering::SeqCst);
        let user: UserId = turn.user.parse().unwrap();
        futures::stream::once(async move {
            let input = json!({"kind": "decision", "text": "Freeze deploys in December"});
            let id = format!("toolu_session_{n}");
            let (_, is_error) = engine
                .call_tool(user, Some(&id), "remember", &input)
                .await
                .unwrap();
            assert!(!is_error);
            let mut events = vec![Ok(SessionEvent::Session("s-1".into()))];
            if n == 0 {
                events.push(Err(ModelError::Transport("connection reset".into())));
            } else {
                events.push(Ok(SessionEvent::Message {
                    role: Role::Assistant,
                    content: vec![ContentBlock::text("Kept.")],
                }));
                events.push(Ok(SessionEvent::Done(TurnUsage::default())));
            }
            futures::stream::iter(events)
        })
        .flatten()
        .boxed()
    }
}

async fn a_session_turn_replayed_after_remember_keeps_one_note(backend: Backend) {
    let h = harness(backend, None, fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let provider = Arc::new(Rememberer::default());
    *provider.engine.lock().unwrap() = Some(engine.clone());
    engine.set_main_thread(
        MainChoice {
            provider: Some("rememberer".into()),
            reason: String::new(),
        },
        Some(provider.clone()),
    );
    let msg = engine
        .post_chat(user, "No deploys in December.")
        .await
        .unwrap();
    assert_eq!(reply_to(engine, user, &msg).await.text, "Kept.");
    assert_eq!(
        provider.turns.load(Ordering::SeqCst),
        2,
        "the turn was replayed"
    );
    let notes = engine.notes(user).await.unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    let told = thread_texts(engine, user)
        .await
        .into_iter()
        .filter(|t| t.starts_with("Remembered"))
        .count();
    assert_eq!(told, 1);
}

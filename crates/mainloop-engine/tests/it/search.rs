//! Search through the engine over both databases: review feedback, kept nowhere else,
//! is indexed with the transition that carries it, and a parsed query finds it.

use super::*;
use mainloop_domain::search::SearchKind;
use mainloop_engine::{ReviewAction, parse_search};

both_backends!(changes_requested_in_review_are_found_with_their_task);

async fn changes_requested_in_review_are_found_with_their_task(backend: Backend) {
    let h = harness(backend, None, fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let task = engine
        .create_task(
            user,
            &CreateTask {
                description: "Tidy the billing export".into(),
                repo: "/src/app".into(),
                skip_plan: true,
                model: None,
                agent: None,
                budget_usd: None,
            },
        )
        .await
        .unwrap();
    for event in [
        TaskEvent::SlotGranted,
        TaskEvent::AgentFinished,
        TaskEvent::ChecksPassed,
    ] {
        engine.apply_task_event(None, task.id, event).await.unwrap();
    }
    let changed = engine
        .review_action(
            user,
            task.id,
            ReviewAction::Changes(Some("Rename the serialiser, keep the CSV header".into())),
        )
        .await
        .unwrap();
    let query = parse_search(
        "serialiser csv",
        &["review".into()],
        None,
        None,
        None,
        None,
        None,
    )
    .unwrap();
    let hits = engine.search(user, &query).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].kind, SearchKind::Review);
    assert_eq!(hits[0].id, format!("{}:{}", task.id, changed.version));
    assert_eq!(hits[0].task_id, Some(task.id));
    assert_eq!(hits[0].title, "Tidy the billing export");
    // The task's own description is found too, by its kind.
    let query = parse_search("billing", &[], None, None, None, None, None).unwrap();
    let kinds: Vec<SearchKind> = engine
        .search(user, &query)
        .await
        .unwrap()
        .iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds, [SearchKind::Task]);
}

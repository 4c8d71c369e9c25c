//! The temporal pyramid's records on SQLite and PostgreSQL: each change of a task's
//! state, what one day's records say (asks, tasks spawned, notes, transitions, what was
//! open at its end, what it cost), digests stored once per span and searchable when they
//! say something, the user's time zone, and the migration that dates the tasks before it.

use mainloop_domain::chat::Role;
use mainloop_domain::digest::{
    Digest, DigestFacts, Period, Span, TaskLine, Zone, compose_day, render,
};
use mainloop_domain::notes::{NoteKind, NoteSource};
use mainloop_domain::records::{MessageKind, Workplace};
use mainloop_domain::search::{SearchKind, SearchQuery, terms};
use mainloop_domain::task::TaskState;
use mainloop_domain::{DigestId, ProjectId, TaskId, UserId};
use mainloop_store::{NewNote, NewTask, Store, StoreOptions};

use super::search::message;
use super::{T0, at, migrated_before, pg_store, sqlite_store};

migration_backends!(migration_dates_tasks_written_before_it);

both_backends!(
    a_days_records_say_what_happened_in_it_and_what_was_left_open,
    a_digest_is_stored_once_and_found_when_it_says_something,
    the_time_zone_is_the_users_own_or_none,
);

const HOUR: i64 = 3_600_000;

fn new_task(desc: &str) -> NewTask {
    NewTask {
        description: desc.into(),
        repo: "/src/app".into(),
        workplace: Workplace::Local,
        skip_plan: false,
        max_check_rounds: 3,
        model: None,
        agent: mainloop_domain::agents::AgentName::parse("claude").unwrap(),
        origin_key: None,
        budget_usd: None,
    }
}

async fn user(store: &Store, name: &str) -> (UserId, ProjectId) {
    let mut tx = store.begin().await.unwrap();
    let user = tx.create_user(name, false, at(0)).await.unwrap().id;
    let project = tx.upsert_project(user, "/src/app", at(0)).await.unwrap().id;
    tx.commit().await.unwrap();
    (user, project)
}

/// Moves a task to `to` at `t`.
async fn move_task(store: &Store, user: UserId, id: TaskId, to: TaskState, t: i64) {
    let mut tx = store.begin().await.unwrap();
    let mut task = tx.task(Some(user), id).await.unwrap().unwrap();
    task.core.state = to;
    if to == TaskState::Failed {
        task.error = Some("the checks failed".into());
    }
    tx.save_task(&task, at(t)).await.unwrap();
    tx.commit().await.unwrap();
}

async fn spawn(store: &Store, user: UserId, project: ProjectId, desc: &str, t: i64) -> TaskId {
    let mut tx = store.begin().await.unwrap();
    let (task, _) = tx
        .insert_task(user, project, &new_task(desc), at(t))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    task.id
}

/// The "day" is hours 24 to 48 after T0.
async fn a_days_records_say_what_happened_in_it_and_what_was_left_open(store: Store) {
    let (u, p) = user(&store, "a").await;
    let (other, op) = user(&store, "b").await;
    let (start, end) = (at(24 * HOUR), at(48 * HOUR));
    // Before the day: one task merged (never read again), one left in review.
    let old = spawn(&store, u, p, "Old merged", HOUR).await;
    move_task(&store, u, old, TaskState::Merged, 2 * HOUR).await;
    let review = spawn(&store, u, p, "Waiting review", 3 * HOUR).await;
    move_task(&store, u, review, TaskState::Review, 4 * HOUR).await;
    // During it: asked twice (a tool result and the assistant do not count), a task
    // spawned and approved, the review merged, one failed, a decision noted.
    message(
        &store,
        u,
        Role::User,
        MessageKind::Text,
        "fix the parser",
        25 * HOUR,
    )
    .await;
    message(
        &store,
        u,
        Role::Assistant,
        MessageKind::Text,
        "on it",
        25 * HOUR,
    )
    .await;
    message(
        &store,
        u,
        Role::User,
        MessageKind::ToolResult,
        "tool output",
        25 * HOUR,
    )
    .await;
    message(
        &store,
        u,
        Role::User,
        MessageKind::Text,
        "and the lexer",
        26 * HOUR,
    )
    .await;
    let parser = spawn(&store, u, p, "Fix the parser\nin depth", 27 * HOUR).await;
    move_task(&store, u, parser, TaskState::WaitingPlanReview, 28 * HOUR).await;
    move_task(&store, u, parser, TaskState::Implementing, 29 * HOUR).await;
    move_task(&store, u, review, TaskState::Merged, 30 * HOUR).await;
    let lexer = spawn(&store, u, p, "Fix the lexer", 31 * HOUR).await;
    move_task(&store, u, lexer, TaskState::Failed, 32 * HOUR).await;
    let mut tx = store.begin().await.unwrap();
    let note = NewNote {
        kind: NoteKind::Decision,
        text: "Parsers are hand-written",
        source: NoteSource::User,
        tool_use_id: None,
    };
    tx.insert_note(u, &note, at(33 * HOUR)).await.unwrap();
    tx.commit().await.unwrap();
    // After it: the parser is merged — it was still open at the day's end.
    move_task(&store, u, parser, TaskState::Merged, 50 * HOUR).await;
    // Another user's day is theirs.
    message(
        &store,
        other,
        Role::User,
        MessageKind::Text,
        "not yours",
        25 * HOUR,
    )
    .await;
    spawn(&store, other, op, "Not yours either", 25 * HOUR).await;

    let r = store.day_records(u, start, end).await.unwrap();
    let asked: Vec<&str> = r.asked.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(asked, ["fix the parser", "and the lexer"]);
    let spawned: Vec<TaskId> = r.spawned.iter().map(|(id, _)| *id).collect();
    assert_eq!(spawned, [parser, lexer]);
    assert_eq!(r.notes.len(), 1);
    let moves: Vec<(TaskId, Option<TaskState>, TaskState)> = r
        .transitions
        .iter()
        .map(|t| (t.task_id, t.from, t.to))
        .collect();
    assert_eq!(
        moves,
        [
            (
                parser,
                Some(TaskState::Queued),
                TaskState::WaitingPlanReview
            ),
            (
                parser,
                Some(TaskState::WaitingPlanReview),
                TaskState::Implementing
            ),
            (review, Some(TaskState::Review), TaskState::Merged),
            (lexer, Some(TaskState::Queued), TaskState::Failed),
        ]
    );
    assert_eq!(r.transitions[3].error.as_deref(), Some("the checks failed"));
    let open: Vec<(TaskId, TaskState)> = r.still_open.iter().map(|(id, _, s)| (*id, *s)).collect();
    assert_eq!(
        open,
        [(parser, TaskState::Implementing)],
        "as at the day's end"
    );

    let f = compose_day(&r);
    assert_eq!(f.merged.len(), 1);
    assert_eq!(f.failed[0].title, "Fix the lexer");
    assert_eq!(
        f.decided.len(),
        2,
        "the note and the approved plan: {:?}",
        f.decided
    );
    // The day before: the review was open, the merged task was not.
    let before = store.day_records(u, at(0), start).await.unwrap();
    let open: Vec<TaskId> = before.still_open.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(open, [review]);
}

fn digest(period: Period, start: jiff::civil::Date, facts: DigestFacts) -> Digest {
    let span = Span { period, start };
    Digest {
        id: DigestId::new_v7(at(0)),
        period,
        start,
        end: span.end(),
        title: span.title(),
        time_zone: "UTC".into(),
        quiet: facts.is_quiet(),
        text: render(span, "UTC", &facts),
        facts,
        created_at: at(0),
    }
}

async fn a_digest_is_stored_once_and_found_when_it_says_something(store: Store) {
    let (u, _) = user(&store, "a").await;
    let (other, _) = user(&store, "b").await;
    let day = jiff::civil::date(2023, 11, 14);
    let busy = DigestFacts {
        spawned: vec![TaskLine {
            task_id: TaskId::new_v7(at(0)),
            title: "Refactor the quokka module".into(),
            detail: None,
        }],
        ..DigestFacts::default()
    };
    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.insert_digest(u, &digest(Period::Day, day, busy.clone()))
            .await
            .unwrap()
    );
    assert!(
        !tx.insert_digest(u, &digest(Period::Day, day, DigestFacts::default()))
            .await
            .unwrap()
    );
    let quiet_day = day.tomorrow().unwrap();
    assert!(
        tx.insert_digest(u, &digest(Period::Day, quiet_day, DigestFacts::default()))
            .await
            .unwrap()
    );
    assert!(
        tx.insert_digest(
            u,
            &digest(Period::Week, jiff::civil::date(2023, 11, 13), busy.clone())
        )
        .await
        .unwrap()
    );
    assert!(
        tx.insert_digest(other, &digest(Period::Day, day, busy))
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    let all = store.digests(u, None, None, 50).await.unwrap();
    let spans: Vec<(Period, jiff::civil::Date, bool)> =
        all.iter().map(|d| (d.period, d.start, d.quiet)).collect();
    assert_eq!(
        spans,
        [
            (Period::Day, quiet_day, true),
            (Period::Day, day, false),
            (Period::Week, jiff::civil::date(2023, 11, 13), false),
        ],
        "newest first"
    );
    assert!(
        all[1].text.contains("Refactor the quokka module"),
        "the first one kept"
    );
    let made = store.made_spans(u).await.unwrap();
    assert_eq!(made.len(), 3);
    let days = store
        .day_digests(
            u,
            jiff::civil::date(2023, 11, 13),
            jiff::civil::date(2023, 11, 20),
        )
        .await
        .unwrap();
    assert_eq!(
        days.iter().map(|d| d.start).collect::<Vec<_>>(),
        [day, quiet_day]
    );
    assert_eq!(
        store
            .digests(u, Some(Period::Week), None, 50)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .digests(u, None, Some(quiet_day), 50)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store.digest(u, all[1].id).await.unwrap().unwrap().id,
        all[1].id
    );
    let theirs = store.digests(other, None, None, 5).await.unwrap();
    assert!(
        store.digest(u, theirs[0].id).await.unwrap().is_none(),
        "another user's"
    );

    let q = SearchQuery {
        terms: terms("quokka").unwrap(),
        kinds: vec![SearchKind::Digest],
        project: None,
        task: None,
        from: None,
        to: None,
        limit: 10,
    };
    let hits = store.search(u, &q).await.unwrap();
    assert_eq!(hits.len(), 2, "the day and the week: {hits:?}");
    assert!(hits.iter().all(|h| h.kind == SearchKind::Digest));
    let q = SearchQuery {
        terms: terms("nothing").unwrap(),
        ..q
    };
    assert!(
        store.search(u, &q).await.unwrap().is_empty(),
        "quiet digests are not indexed"
    );
}

async fn the_time_zone_is_the_users_own_or_none(store: Store) {
    let (u, _) = user(&store, "a").await;
    assert_eq!(store.time_zone(u).await.unwrap(), None);
    let mut tx = store.begin().await.unwrap();
    tx.set_time_zone(u, Some(Zone::parse("Asia/Kolkata").unwrap().name()))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.time_zone(u).await.unwrap().as_deref(),
        Some("Asia/Kolkata")
    );
    let mut tx = store.begin().await.unwrap();
    tx.set_time_zone(u, None).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.time_zone(u).await.unwrap(), None);
}

/// Applies the migrations before digests, writes tasks as that version did, then
/// connects: each task was created queued and is in its state since its last change.
async fn migration_dates_tasks_written_before_it(url: &str, dir: &str) {
    let pool = migrated_before(url, dir, 15).await;
    let (u, p) = (UserId::new_v7(at(0)), ProjectId::new_v7(at(0)));
    let (queued, review) = (TaskId::new_v7(at(0)), TaskId::new_v7(at(1)));
    sqlx::query("INSERT INTO users (id, name, created_at) VALUES ($1, 'a', 0)")
        .bind(u.to_string())
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO projects (id, user_id, repo, name, created_at) VALUES ($1, $2, '/r', 'r', 0)",
    )
    .bind(p.to_string())
    .bind(u.to_string())
    .execute(&pool)
    .await
    .unwrap();
    for (id, state, updated) in [
        (queued, "queued", T0 + HOUR),
        (review, "review", T0 + 30 * HOUR),
    ] {
        sqlx::query(
            "INSERT INTO tasks (id, user_id, project_id, state, core, description, repo, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, '{}', $5, '/r', $6, $7)",
        )
        .bind(id.to_string())
        .bind(u.to_string())
        .bind(p.to_string())
        .bind(state)
        .bind(format!("Old {state} task"))
        .bind(T0 + HOUR)
        .bind(updated)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
    let first = store.day_records(u, at(0), at(24 * HOUR)).await.unwrap();
    let spawned: Vec<TaskId> = first.spawned.iter().map(|(id, _)| *id).collect();
    assert_eq!(spawned, [queued, review]);
    let open: Vec<(TaskId, TaskState)> = first
        .still_open
        .iter()
        .map(|(id, _, s)| (*id, *s))
        .collect();
    assert_eq!(
        open,
        [(queued, TaskState::Queued), (review, TaskState::Queued)]
    );
    let second = store
        .day_records(u, at(24 * HOUR), at(48 * HOUR))
        .await
        .unwrap();
    let moves: Vec<(TaskId, TaskState)> = second
        .transitions
        .iter()
        .map(|t| (t.task_id, t.to))
        .collect();
    assert_eq!(moves, [(review, TaskState::Review)]);
}

//! Full-text search, run against SQLite and PostgreSQL: what each write indexes, ranking,
//! snippets, filters, isolation between users, hostile queries, and the migration that
//! indexes what was written before it.
use mainloop_domain::chat::{ContentBlock, Role};
use mainloop_domain::question::{Answer, Question, QuestionOption};
use mainloop_domain::records::{MessageKind, Task, Workplace};
use mainloop_domain::search::{SearchHit, SearchKind, SearchQuery, terms};
use mainloop_domain::{ProjectId, TaskId, Timestamp, UserId};
use mainloop_store::{NewMessage, NewTask, Store, StoreOptions};
use serde_json::json;
use std::collections::BTreeMap;

// The backends, `at` and `both_backends!` are the store tests' own (`tests/it.rs`).
use super::{T0, at, migrated_before, pg_store, sqlite_store};

migration_backends!(migration_indexes_rows_written_before_it);

both_backends!(
    every_kind_is_found_with_its_link,
    title_matches_and_more_matches_rank_first_ties_newest_first,
    snippets_mark_the_matched_words,
    filters_narrow_by_kind_project_task_and_date,
    another_users_content_is_never_found,
    hostile_queries_are_words_or_refused,
    notes_are_found_as_they_now_read_and_forgotten_when_deleted,
    prefixes_find_every_word_they_start,
    date_filters_keep_to_the_millisecond_across_days_and_periods,
);

fn query(q: &str) -> SearchQuery {
    SearchQuery {
        terms: terms(q).unwrap(),
        kinds: Vec::new(),
        project: None,
        task: None,
        from: None,
        to: None,
        limit: 20,
    }
}

async fn find(store: &Store, user: UserId, q: &str) -> Vec<SearchHit> {
    store.search(user, &query(q)).await.unwrap()
}

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

struct World {
    user: UserId,
    project: ProjectId,
}

async fn world(store: &Store, name: &str, repo: &str) -> World {
    let mut tx = store.begin().await.unwrap();
    let user = tx.create_user(name, false, at(0)).await.unwrap().id;
    let project = tx.upsert_project(user, repo, at(0)).await.unwrap().id;
    tx.commit().await.unwrap();
    World { user, project }
}

async fn task(store: &Store, w: &World, desc: &str, t: i64) -> Task {
    let mut tx = store.begin().await.unwrap();
    let (task, _) = tx
        .insert_task(w.user, w.project, &new_task(desc), at(t))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    task
}

/// Stores one main-thread message at `t`.
pub(super) async fn message(
    store: &Store,
    user: UserId,
    role: Role,
    kind: MessageKind,
    text: &str,
    t: i64,
) {
    let mut tx = store.begin().await.unwrap();
    tx.insert_message(
        user,
        &NewMessage {
            role,
            kind,
            content: vec![ContentBlock::text(text)],
            turn_id: None,
            task_id: None,
        },
        at(t),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn say(store: &Store, user: UserId, text: &str, t: i64) {
    message(store, user, Role::User, MessageKind::Text, text, t).await;
}

async fn append(store: &Store, task: TaskId, kind: &str, payload: serde_json::Value, t: i64) {
    let mut tx = store.begin().await.unwrap();
    tx.append_transcript(task, kind, &payload, at(t))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn question(id: &str, text: &str, option: &str) -> Question {
    Question {
        id: id.into(),
        header: String::new(),
        question: text.into(),
        options: vec![QuestionOption {
            label: option.into(),
            description: String::new(),
        }],
        multi_select: false,
    }
}

fn ids(hits: &[SearchHit]) -> Vec<(SearchKind, String)> {
    hits.iter().map(|h| (h.kind, h.id.clone())).collect()
}

async fn every_kind_is_found_with_its_link(store: Store) {
    let w = world(&store, "a", "/src/app").await;
    let t = task(&store, &w, "Refactor the auth module\nkeep the tokens", 1).await;
    say(&store, w.user, "what about the zebrafish", 2).await;
    message(
        &store,
        w.user,
        Role::Assistant,
        MessageKind::Text,
        "zebrafish answer",
        3,
    )
    .await;
    // Tool results and the worker's updates are not the conversation's words.
    message(
        &store,
        w.user,
        Role::User,
        MessageKind::ToolResult,
        "zebrafish tool",
        4,
    )
    .await;
    message(
        &store,
        w.user,
        Role::Event,
        MessageKind::Text,
        "zebrafish event",
        5,
    )
    .await;
    let hits = find(&store, w.user, "zebrafish").await;
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(
        hits.iter().map(|h| h.title.as_str()).collect::<Vec<_>>(),
        ["mainloop", "You"]
    );
    assert!(
        hits.iter()
            .all(|h| h.kind == SearchKind::Message && h.task_id.is_none())
    );

    let hits = find(&store, w.user, "tokens").await;
    assert_eq!(ids(&hits), [(SearchKind::Task, t.id.to_string())]);
    assert_eq!(hits[0].title, "Refactor the auth module");
    assert_eq!(hits[0].task_id, Some(t.id));

    // Questions, then their answers, rewrite one row; a new round is another.
    let mut tx = store.begin().await.unwrap();
    let mut asked = tx.task(None, t.id).await.unwrap().unwrap();
    asked.questions = vec![question("q1", "Which keystore backend?", "vaultwarden")];
    let asked = tx.save_task(&asked, at(6)).await.unwrap();
    tx.commit().await.unwrap();
    let round1 = format!("{}:1", t.id);
    assert_eq!(
        ids(&find(&store, w.user, "keystore").await),
        [(SearchKind::Question, round1.clone())]
    );
    let mut tx = store.begin().await.unwrap();
    let mut answered = asked.clone();
    answered.answers = Some(BTreeMap::from([(
        "q1".to_owned(),
        Answer::Text("use hashicorp".into()),
    )]));
    let answered = tx.save_task(&answered, at(7)).await.unwrap();
    // A save that changes neither indexes nothing again.
    let answered = tx.save_task(&answered, at(8)).await.unwrap();
    tx.commit().await.unwrap();
    let hits = find(&store, w.user, "keystore hashicorp").await;
    assert_eq!(ids(&hits), [(SearchKind::Question, round1.clone())]);
    assert_eq!(hits[0].created_at, at(6), "a rewritten row keeps its time");
    assert_eq!(find(&store, w.user, "vaultwarden").await.len(), 1);
    let mut tx = store.begin().await.unwrap();
    let mut again = answered.clone();
    again.questions = vec![question("q1", "Which keystore region?", "eu")];
    again.answers = None;
    tx.save_task(&again, at(9)).await.unwrap();
    tx.commit().await.unwrap();
    let mut got = ids(&find(&store, w.user, "keystore").await);
    got.sort();
    assert_eq!(
        got,
        [
            (SearchKind::Question, round1),
            (SearchKind::Question, format!("{}:2", t.id))
        ]
    );

    // Plans, every revision, with the feedback that asked for the next.
    let mut tx = store.begin().await.unwrap();
    tx.record_plan_revision(t.id, "Plan: migrate sessions\nstep one", at(10))
        .await
        .unwrap();
    tx.record_plan_feedback(t.id, "mention the rollback")
        .await
        .unwrap();
    tx.record_plan_revision(t.id, "Plan: migrate sessions\nstep two", at(11))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let hits = find(&store, w.user, "rollback").await;
    assert_eq!(ids(&hits), [(SearchKind::Plan, format!("{}:1", t.id))]);
    assert_eq!(hits[0].created_at, at(10));
    assert_eq!(find(&store, w.user, "migrate sessions").await.len(), 2);

    // Transcripts: the words of each entry.
    append(
        &store,
        t.id,
        "session",
        json!({"session_id": "s", "model": "opal"}),
        12,
    )
    .await;
    append(
        &store,
        t.id,
        "text",
        json!({"text": "Reading the quokka handler"}),
        13,
    )
    .await;
    append(
        &store,
        t.id,
        "tool_call",
        json!({"id": "c1", "name": "Bash", "summary": "cargo test -p wombat"}),
        14,
    )
    .await;
    append(
        &store,
        t.id,
        "tool_result",
        json!({"tool_use_id": "c1", "summary": "test numbat ... ok", "is_error": false}),
        15,
    )
    .await;
    append(
        &store,
        t.id,
        "checks",
        json!({"command": "make lint", "passed": false, "output": "platypus failed"}),
        16,
    )
    .await;
    append(
        &store,
        t.id,
        "something_new",
        json!({"text": "echidna"}),
        17,
    )
    .await;
    assert!(
        find(&store, w.user, "opal").await.is_empty(),
        "session entries have no words"
    );
    assert!(
        find(&store, w.user, "echidna").await.is_empty(),
        "unknown kinds are left out"
    );
    for (word, seq) in [
        ("quokka", 2),
        ("wombat", 3),
        ("bash", 3),
        ("numbat", 4),
        ("platypus", 5),
    ] {
        let hits = find(&store, w.user, word).await;
        assert_eq!(
            ids(&hits),
            [(SearchKind::Transcript, format!("{}:{seq}", t.id))],
            "{word}"
        );
        assert_eq!(hits[0].task_id, Some(t.id));
        assert_eq!(hits[0].title, "Refactor the auth module");
    }
    // A long entry is indexed up to its first 4,000 characters.
    let long = format!("{} kookaburra", "filler ".repeat(700));
    append(&store, t.id, "text", json!({ "text": long }), 18).await;
    assert!(find(&store, w.user, "kookaburra").await.is_empty());

    // Review feedback.
    let mut tx = store.begin().await.unwrap();
    let current = tx.task(None, t.id).await.unwrap().unwrap();
    tx.index_review(w.user, &current, "please rename the axolotl", at(19))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let hits = find(&store, w.user, "axolotl").await;
    assert_eq!(
        ids(&hits),
        [(SearchKind::Review, format!("{}:{}", t.id, current.version))]
    );
}

async fn title_matches_and_more_matches_rank_first_ties_newest_first(store: Store) {
    let w = world(&store, "a", "/src/app").await;
    let body = task(&store, &w, "Something else\nabout the penguin colony", 1).await;
    let title = task(&store, &w, "Penguin colony census", 2).await;
    let filler = "and then some other words that say nothing in particular";
    let older_body = task(&store, &w, &format!("x\n{filler} penguin"), 0).await;
    let hits = find(&store, w.user, "penguin").await;
    assert_eq!(hits[0].id, title.id.to_string(), "{hits:?}");
    assert_eq!(hits.len(), 3);
    let _ = (body, older_body);

    say(&store, w.user, &format!("walrus {filler}"), 3).await;
    say(&store, w.user, &format!("walrus walrus walrus {filler}"), 4).await;
    say(&store, w.user, &format!("walrus {filler}"), 5).await;
    let hits = find(&store, w.user, "walrus").await;
    let created: Vec<Timestamp> = hits.iter().map(|h| h.created_at).collect();
    assert_eq!(
        created,
        [at(4), at(5), at(3)],
        "more matches first, then the newest"
    );
}

fn marked(hit: &SearchHit) -> Vec<String> {
    let chars: Vec<char> = hit.snippet.chars().collect();
    hit.highlights
        .iter()
        .map(|[s, e]| chars[*s as usize..*e as usize].iter().collect())
        .collect()
}

async fn snippets_mark_the_matched_words(store: Store) {
    let w = world(&store, "a", "/src/app").await;
    say(
        &store,
        w.user,
        "The quick brown fox jumps over the lazy dog",
        1,
    )
    .await;
    let hits = find(&store, w.user, "fox jum").await;
    assert_eq!(hits.len(), 1);
    assert!(
        hits[0].snippet.contains("quick brown fox jumps over"),
        "{hits:?}"
    );
    assert!(!hits[0].snippet.contains(['\u{E000}', '\u{E001}']));
    assert_eq!(marked(&hits[0]), ["fox", "jumps"]);

    say(&store, w.user, "Die Größe über alles — naïve café", 2).await;
    let hits = find(&store, w.user, "größe").await;
    assert_eq!(marked(&hits[0]), ["Größe"], "{hits:?}");
    let hits = find(&store, w.user, "café").await;
    assert_eq!(marked(&hits[0]), ["café"], "{hits:?}");

    // A long message: the snippet is the part around the match.
    let long = format!("{} needle {}", "hay ".repeat(2000), "straw ".repeat(2000));
    say(&store, w.user, &long, 3).await;
    let hits = find(&store, w.user, "needle").await;
    assert!(hits[0].snippet.chars().count() < 400, "{}", hits[0].snippet);
    assert_eq!(marked(&hits[0]), ["needle"]);
}

async fn filters_narrow_by_kind_project_task_and_date(store: Store) {
    let w = world(&store, "a", "/src/app").await;
    let mut tx = store.begin().await.unwrap();
    let other = tx
        .upsert_project(w.user, "/src/other", at(0))
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();
    let t1 = task(&store, &w, "lemur one", 1_000).await;
    let t2 = task(&store, &w, "lemur two", 2_000).await;
    let w2 = World {
        user: w.user,
        project: other,
    };
    let t3 = task(&store, &w2, "lemur three", 3_000).await;
    append(
        &store,
        t1.id,
        "text",
        json!({"text": "lemur in transcript"}),
        4_000,
    )
    .await;
    say(&store, w.user, "lemur said", 5_000).await;

    let run = |q: SearchQuery| {
        let store = store.clone();
        async move {
            let mut got: Vec<String> = store
                .search(w.user, &q)
                .await
                .unwrap()
                .into_iter()
                .map(|h| format!("{}:{}", h.kind, h.created_at.as_millis() - T0))
                .collect();
            got.sort();
            got
        }
    };
    let base = query("lemur");
    assert_eq!(run(base.clone()).await.len(), 5);
    let kinds = SearchQuery {
        kinds: vec![SearchKind::Transcript, SearchKind::Message],
        ..base.clone()
    };
    assert_eq!(run(kinds).await, ["message:5000", "transcript:4000"]);
    let project = SearchQuery {
        project: Some(other),
        ..base.clone()
    };
    assert_eq!(run(project).await, ["task:3000"]);
    let by_task = SearchQuery {
        task: Some(t1.id),
        ..base.clone()
    };
    assert_eq!(run(by_task).await, ["task:1000", "transcript:4000"]);
    let range = SearchQuery {
        from: Some(at(2_000)),
        to: Some(at(4_000)),
        ..base.clone()
    };
    assert_eq!(run(range).await, ["task:2000", "task:3000"]);
    let limited = SearchQuery {
        limit: 2,
        ..base.clone()
    };
    assert_eq!(run(limited).await.len(), 2);
    let _ = (t2, t3);
}

async fn another_users_content_is_never_found(store: Store) {
    let a = world(&store, "a", "/src/app").await;
    let b = world(&store, "b", "/src/app").await;
    let ta = task(&store, &a, "capybara for a", 1).await;
    let tb = task(&store, &b, "capybara for b", 2).await;
    say(&store, b.user, "capybara message of b", 3).await;
    append(
        &store,
        tb.id,
        "text",
        json!({"text": "capybara in b's transcript"}),
        4,
    )
    .await;
    let hits = find(&store, a.user, "capybara").await;
    assert_eq!(ids(&hits), [(SearchKind::Task, ta.id.to_string())]);
    // Naming b's task or project finds nothing either.
    let q = SearchQuery {
        task: Some(tb.id),
        ..query("capybara")
    };
    assert!(store.search(a.user, &q).await.unwrap().is_empty());
    let q = SearchQuery {
        project: Some(b.project),
        ..query("capybara")
    };
    assert!(store.search(a.user, &q).await.unwrap().is_empty());
    assert_eq!(find(&store, b.user, "capybara").await.len(), 3);
}

async fn hostile_queries_are_words_or_refused(store: Store) {
    let w = world(&store, "a", "/src/app").await;
    say(
        &store,
        w.user,
        "near and not or: the title column said \"hello\" to 'you' *",
        1,
    )
    .await;
    let long = "lorem ipsum ".repeat(41);
    let hostile = [
        r#""hello""#,
        r#"" OR 1=1 --"#,
        "'); DROP TABLE search_index; --",
        "hello*",
        "*",
        "NEAR(hello said)",
        "NEAR/2",
        "title:hello",
        "kind:message",
        "hello AND NOT said",
        "-hello +said ^near",
        "col\\umn",
        "_",
        "__ ___",
        "a_",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ẞ ǅ",
        "emoji 🦀🔥 ok",
        "e\u{301}t\u{e9} ﬁne",
        "٣٤٥ ²",
        "नमस्ते",
        "日本語のテキスト",
        long.as_str(),
        "&|!<->:*",
        "hello & said | !near",
        "said:*",
    ];
    for q in hostile {
        match terms(q) {
            Ok(terms) => {
                let query = SearchQuery {
                    terms,
                    ..query("x")
                };
                if let Err(e) = store.search(w.user, &query).await {
                    panic!("{q:?}: {e}");
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    // Operators are words to find, not syntax.
    assert_eq!(find(&store, w.user, "near AND not").await.len(), 1);
    assert_eq!(find(&store, w.user, "title:said").await.len(), 1);
    assert!(find(&store, w.user, "hello OR zzz").await.is_empty());
}

/// Applies the migrations before search, writes rows as that version did, then connects.
async fn migration_indexes_rows_written_before_it(url: &str, dir: &str) {
    let pool = migrated_before(url, dir, 13).await;
    let (user, project, task) = (
        UserId::new_v7(at(0)),
        ProjectId::new_v7(at(0)),
        TaskId::new_v7(at(0)),
    );
    let other = UserId::new_v7(at(0));
    let questions = json!([{"id": "q1", "question": "Which dingo?", "options": [{"label": "red", "description": "the red dingo"}]}]);
    let statements: Vec<(String, Vec<String>)> = vec![
        ("INSERT INTO users (id, name, created_at) VALUES ($1, 'a', 0)".into(), vec![user.to_string()]),
        ("INSERT INTO users (id, name, created_at) VALUES ($1, 'b', 0)".into(), vec![other.to_string()]),
        (
            "INSERT INTO projects (id, user_id, repo, name, created_at) VALUES ($1, $2, '/r', 'r', 0)".into(),
            vec![project.to_string(), user.to_string()],
        ),
        (
            format!(
                "INSERT INTO tasks (id, user_id, project_id, state, core, description, repo, questions, answers, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'waiting_answers', '{{}}', $4, '/r', $5, $6, {}, {})",
                T0, T0 + 5
            ),
            vec![
                task.to_string(),
                user.to_string(),
                project.to_string(),
                "Old gecko task\nwith a body".into(),
                questions.to_string(),
                json!({"q1": ["red"], "q2": {"choices": [], "note": "fennec"}}).to_string(),
            ],
        ),
        (
            format!("INSERT INTO messages (id, user_id, seq, thread_pos, role, kind, content, text, created_at) VALUES ($1, $2, 1, 1, 'user', 'text', '[]', 'an old iguana message', {T0})"),
            vec![mainloop_domain::MessageId::new_v7(at(0)).to_string(), user.to_string()],
        ),
        (
            format!("INSERT INTO messages (id, user_id, seq, thread_pos, role, kind, content, text, created_at) VALUES ($1, $2, 2, 2, 'user', 'tool_result', '[]', 'iguana tool', {T0})"),
            vec![mainloop_domain::MessageId::new_v7(at(0)).to_string(), user.to_string()],
        ),
        (
            format!("INSERT INTO plan_revisions (task_id, revision, plan, feedback, created_at) VALUES ($1, 1, 'Old plan\nwith marmots', 'add a tapir', {T0})"),
            vec![task.to_string()],
        ),
        (
            format!("INSERT INTO transcript (task_id, seq, kind, payload, created_at) VALUES ($1, 1, 'tool_call', $2, {T0})"),
            vec![task.to_string(), json!({"id": "c", "name": "Bash", "summary": "ls okapi"}).to_string()],
        ),
        (
            format!("INSERT INTO transcript (task_id, seq, kind, payload, created_at) VALUES ($1, 2, 'text', 'not json okapi', {T0})"),
            vec![task.to_string()],
        ),
        (
            format!("INSERT INTO transcript (task_id, seq, kind, payload, created_at) VALUES ($1, 3, 'question', $2, {T0})"),
            vec![task.to_string(), json!({"questions": questions}).to_string()],
        ),
    ];
    for (sql, binds) in statements {
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        q.execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
    let kinds = |hits: Vec<SearchHit>| -> Vec<(SearchKind, String)> { ids(&hits) };
    assert_eq!(
        kinds(find(&store, user, "gecko").await),
        [(SearchKind::Task, task.to_string())]
    );
    assert_eq!(find(&store, user, "body").await[0].kind, SearchKind::Task);
    let hits = find(&store, user, "iguana").await;
    assert_eq!(
        (hits.len(), hits[0].kind, hits[0].title.as_str()),
        (1, SearchKind::Message, "You")
    );
    let q1 = format!("{task}:1");
    assert_eq!(
        kinds(find(&store, user, "dingo fennec").await),
        [(SearchKind::Question, q1.clone())]
    );
    assert_eq!(
        kinds(find(&store, user, "marmots tapir").await),
        [(SearchKind::Plan, q1.clone())]
    );
    assert_eq!(
        kinds(find(&store, user, "okapi").await),
        [(SearchKind::Transcript, q1.clone())],
        "a payload that is not JSON has no words"
    );
    let mut got = kinds(find(&store, user, "dingo").await);
    got.sort();
    assert_eq!(
        got,
        [
            (SearchKind::Question, q1),
            (SearchKind::Transcript, format!("{task}:3"))
        ]
    );
    assert!(find(&store, other, "gecko").await.is_empty());
    let day = SearchQuery {
        from: Some(at(-1)),
        to: Some(at(1)),
        ..query("gecko")
    };
    assert_eq!(
        store.search(user, &day).await.unwrap().len(),
        1,
        "rows indexed before carry their day"
    );

    // Rows written after the migration rewrite what it indexed.
    let mut tx = store.begin().await.unwrap();
    tx.record_plan_feedback(task, "and a quoll").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(find(&store, user, "quoll").await.len(), 1);
    assert!(
        find(&store, user, "tapir").await.is_empty(),
        "the feedback was replaced"
    );
}

async fn notes_are_found_as_they_now_read_and_forgotten_when_deleted(store: Store) {
    use mainloop_domain::notes::{NoteKind, NoteSource};
    use mainloop_store::NewNote;
    let w = world(&store, "a", "/src/app").await;
    let other = world(&store, "b", "/src/app").await;
    let mut tx = store.begin().await.unwrap();
    let new = NewNote {
        kind: NoteKind::Decision,
        text: "Billing stays on Stripe\nDecided with the finance team",
        source: NoteSource::User,
        tool_use_id: None,
    };
    let (note, _) = tx.insert_note(w.user, &new, at(1)).await.unwrap();
    tx.commit().await.unwrap();
    let hits = find(&store, w.user, "stripe").await;
    assert_eq!(ids(&hits), [(SearchKind::Note, note.id.to_string())]);
    assert_eq!(hits[0].title, "Billing stays on Stripe");
    assert!(find(&store, other.user, "stripe").await.is_empty());

    let mut tx = store.begin().await.unwrap();
    let edited = "Billing moves to Paddle";
    tx.update_note(w.user, note.id, NoteKind::Decision, edited, at(2))
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        find(&store, w.user, "stripe").await.is_empty(),
        "the old words are gone"
    );
    assert_eq!(find(&store, w.user, "paddle").await.len(), 1);

    let mut tx = store.begin().await.unwrap();
    assert!(tx.delete_note(w.user, note.id).await.unwrap());
    tx.commit().await.unwrap();
    assert!(find(&store, w.user, "paddle").await.is_empty());
}

/// Hits as `<created_at - T0>`, sorted.
async fn times(store: &Store, user: UserId, q: &SearchQuery) -> Vec<i64> {
    let mut got: Vec<i64> = store
        .search(user, q)
        .await
        .unwrap()
        .iter()
        .map(|h| h.created_at.as_millis() - T0)
        .collect();
    got.sort_unstable();
    got
}

async fn prefixes_find_every_word_they_start(store: Store) {
    let w = world(&store, "a", "/src/app").await;
    say(&store, w.user, "We refactor the parser", 1).await;
    say(&store, w.user, "Refactored: tokenizer", 2).await;
    say(&store, w.user, "refactoring again", 3).await;
    // Words the store cannot spell as SQLite's tokenizer does.
    say(&store, w.user, "a naiveté", 4).await;
    let many: Vec<String> = (0..70).map(|i| format!("zebra{i}")).collect();
    say(&store, w.user, &many.join(" "), 5).await;
    let q = |s: &str| query(s);
    assert_eq!(times(&store, w.user, &q("refa")).await, [1, 2, 3]);
    assert_eq!(
        times(&store, w.user, &q("the refactori")).await,
        Vec::<i64>::new()
    );
    assert_eq!(times(&store, w.user, &q("refactori")).await, [3]);
    assert!(times(&store, w.user, &q("refactorx")).await.is_empty());
    assert_eq!(times(&store, w.user, &q("naiv")).await, [4]);
    assert_eq!(
        times(&store, w.user, &q("zebr")).await,
        [5],
        "more words than expanded"
    );
    assert_eq!(times(&store, w.user, &q("zebra6")).await, [5]);
    // A word that starts outside ASCII (lowercase: PostgreSQL in the C locale folds
    // only ASCII).
    say(&store, w.user, "über refactoring", 6).await;
    assert_eq!(times(&store, w.user, &q("über")).await, [6]);
    assert_eq!(times(&store, w.user, &q("refa")).await, [1, 2, 3, 6]);
}

async fn date_filters_keep_to_the_millisecond_across_days_and_periods(store: Store) {
    let w = world(&store, "a", "/src/app").await;
    const DAY: i64 = 86_400_000;
    // T0 is 22:13:20 UTC: the next day starts 6,400,000 ms after it; a 32-day period of
    // the index (days since 1970 / 32) starts four days later.
    let midnight = 6_400_000;
    let period = midnight + 4 * DAY;
    let later = period + 100 * DAY;
    for t in [midnight - 1, midnight, period, later] {
        say(&store, w.user, "wombat", t).await;
    }
    let range = |from: i64, to: i64| SearchQuery {
        from: Some(at(from)),
        to: Some(at(to)),
        ..query("wombat")
    };
    let got = |from, to| {
        let store = store.clone();
        async move { times(&store, w.user, &range(from, to)).await }
    };
    assert_eq!(got(midnight - 1, midnight).await, [midnight - 1]);
    assert_eq!(got(midnight, midnight + 1).await, [midnight]);
    assert_eq!(got(0, period).await, [midnight - 1, midnight]);
    assert_eq!(got(0, period + 1).await, [midnight - 1, midnight, period]);
    assert_eq!(got(period, later).await, [period], "by periods");
    assert_eq!(
        got(0, later + 1).await,
        [midnight - 1, midnight, period, later]
    );
    let all = [midnight - 1, midnight, period, later];
    assert_eq!(
        got(-3_000 * DAY, 3_000 * DAY).await,
        all,
        "too long for tokens"
    );
    let open = SearchQuery {
        from: Some(at(period)),
        ..query("wombat")
    };
    assert_eq!(times(&store, w.user, &open).await, [period, later]);
}

//! `search`: full-text search over a large history. For each database, loads 1,000,000
//! transcript entries and 100,000 main-thread messages for one user (plus a tenth as
//! much for another, whose rows every query must skip) through the store's own write
//! paths, which index in the same transaction; then times `Store::search` over a set of
//! queries, and the write overhead indexing adds per transcript entry. `--keep` keeps the
//! SQLite file and `--reuse URL` times the queries again on a loaded database (after
//! any new migration), to compare query plans without loading for minutes.

use crate::stats::{Summary, round3};
use anyhow::Result;
use mainloop_domain::chat::{ContentBlock, Role};
use mainloop_domain::records::{MessageKind, Workplace};
use mainloop_domain::search::{SearchKind, SearchQuery, terms};
use mainloop_domain::{ProjectId, TaskId, Timestamp, UserId};
use mainloop_store::{NewMessage, NewTask, Store, StoreOptions};
use mainloop_test_support::Database;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Multiplies every count (1.0: 1,000,000 entries and 100,000 messages).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Entries (or messages) per loading transaction.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Timed runs of each query (after two warm-up runs).
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Only this database (`sqlite` or `postgres`); both by default.
    #[arg(long)]
    pub only: Option<String>,
    /// Keep the SQLite database after the run (its path is printed), to query it by hand.
    #[arg(long)]
    pub keep: bool,
    /// Time the queries on a database this bench loaded before (its URL),
    /// without loading it again nor timing writes: to compare query plans quickly.
    #[arg(long)]
    pub reuse: Option<String>,
}

const ENTRIES: f64 = 1_000_000.0;
const MESSAGES: f64 = 100_000.0;
const ENTRIES_PER_TASK: usize = 500;
/// Entries timed for the write overhead, with and without an index row.
const OVERHEAD_ENTRIES: usize = 5_000;
const DAY_MS: i64 = 86_400_000;

/// The words of the synthetic history: a few very common ones, a long tail of rare ones.
struct Words {
    common: Vec<&'static str>,
    tail: Vec<String>,
    state: u64,
}

const COMMON: [&str; 24] = [
    "the", "and", "test", "file", "error", "function", "build", "cargo", "fix", "update", "module",
    "check", "run", "value", "return", "config", "user", "request", "change", "code", "line",
    "read", "write", "task",
];
const SYLLABLES: [&str; 20] = [
    "ka", "lo", "mi", "ner", "tus", "vel", "dra", "pon", "shi", "ber", "qua", "zen", "rot", "fal",
    "gim", "hex", "jor", "lux", "mab", "nix",
];

impl Words {
    fn new() -> Self {
        let mut tail = Vec::new();
        for a in SYLLABLES {
            for b in SYLLABLES {
                for c in SYLLABLES {
                    tail.push(format!("{a}{b}{c}"));
                }
            }
        }
        Self {
            common: COMMON.to_vec(),
            tail,
            state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, no dependency.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n as u64)).unwrap_or(0)
    }

    /// `n` words: half common, half from the tail with a skew towards its start.
    fn text(&mut self, n: usize) -> String {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            if self.next().is_multiple_of(2) {
                let i = self.pick(self.common.len());
                out.push(self.common[i].to_owned());
            } else {
                let a = self.pick(self.tail.len());
                let b = self.pick(self.tail.len());
                out.push(self.tail[a.min(b)].clone());
            }
        }
        out.join(" ")
    }
}

fn count(scale: f64, base: f64) -> usize {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = (base * scale).round() as usize;
    n.max(1)
}

fn ms(i: usize) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

struct Owner {
    user: UserId,
    project: ProjectId,
}

async fn owner(store: &Store, name: &str, at: Timestamp) -> Result<Owner> {
    let mut tx = store.begin().await?;
    let user = tx.create_user(name, false, at).await?.id;
    let project = tx.upsert_project(user, "/src/app", at).await?.id;
    tx.commit().await?;
    Ok(Owner { user, project })
}

fn new_task(description: String) -> NewTask {
    NewTask {
        description,
        repo: "/src/app".into(),
        workplace: Workplace::Local,
        skip_plan: false,
        max_check_rounds: 3,
        model: None,
        agent: mainloop_domain::agents::AgentName::default(),
        origin_key: None,
        budget_usd: None,
    }
}

/// Transcript entries spread over a year, in tasks of [`ENTRIES_PER_TASK`]; returns the
/// tasks.
async fn load_transcripts(
    store: &Store,
    who: &Owner,
    words: &mut Words,
    entries: usize,
    batch: usize,
    start: i64,
) -> Result<Vec<TaskId>> {
    let spacing = 365 * DAY_MS / ms(entries.max(1));
    let mut tasks = Vec::new();
    let mut done = 0;
    while done < entries {
        let mut tx = store.begin().await?;
        for i in done..(done + batch).min(entries) {
            let at = Timestamp::from_millis(start + ms(i) * spacing);
            if i % ENTRIES_PER_TASK == 0 {
                let desc = format!("Task {}: {}", tasks.len(), words.text(12));
                let (task, _) = tx
                    .insert_task(who.user, who.project, &new_task(desc), at)
                    .await?;
                tasks.push(task.id);
            }
            let task = *tasks.last().unwrap_or(&TaskId::new_v7(at));
            let n = 15 + words.pick(40);
            let (kind, payload) = match i % 3 {
                0 => ("text", json!({ "text": words.text(n) })),
                1 => (
                    "tool_call",
                    json!({"id": format!("c{i}"), "name": "Bash", "summary": words.text(8)}),
                ),
                _ => (
                    "tool_result",
                    json!({"tool_use_id": format!("c{i}"), "summary": words.text(n), "is_error": false}),
                ),
            };
            tx.append_transcript(task, kind, &payload, at).await?;
        }
        tx.commit().await?;
        done += batch;
    }
    Ok(tasks)
}

async fn load_messages(
    store: &Store,
    who: &Owner,
    words: &mut Words,
    messages: usize,
    batch: usize,
    start: i64,
) -> Result<()> {
    let spacing = 365 * DAY_MS / ms(messages.max(1));
    let mut done = 0;
    while done < messages {
        let mut tx = store.begin().await?;
        for i in done..(done + batch).min(messages) {
            let n = 5 + words.pick(60);
            let message = NewMessage {
                role: if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                },
                kind: MessageKind::Text,
                content: vec![ContentBlock::text(words.text(n))],
                turn_id: None,
                task_id: None,
            };
            let at = Timestamp::from_millis(start + ms(i) * spacing);
            tx.insert_message(who.user, &message, at).await?;
        }
        tx.commit().await?;
        done += batch;
    }
    Ok(())
}

/// Time per appended entry, in transactions of `batch`: `indexed` entries carry words,
/// the others (`permission`, a kind without words) take the same path without an
/// index row.
async fn per_entry(
    store: &Store,
    task: TaskId,
    words: &mut Words,
    batch: usize,
    indexed: bool,
) -> Result<Duration> {
    let at = Timestamp::from_millis(1_800_000_000_000);
    let t = Instant::now();
    let mut done = 0;
    while done < OVERHEAD_ENTRIES {
        let mut tx = store.begin().await?;
        for _ in done..(done + batch).min(OVERHEAD_ENTRIES) {
            let text = words.text(30);
            let (kind, payload) = if indexed {
                ("text", json!({ "text": text }))
            } else {
                ("permission", json!({ "tool": text, "allowed": true }))
            };
            tx.append_transcript(task, kind, &payload, at).await?;
        }
        tx.commit().await?;
        done += batch;
    }
    Ok(t.elapsed() / u32::try_from(OVERHEAD_ENTRIES).unwrap_or(1))
}

fn query(q: &str) -> SearchQuery {
    SearchQuery {
        terms: terms(q).unwrap_or_default(),
        kinds: Vec::new(),
        project: None,
        task: None,
        from: None,
        to: None,
        limit: 20,
    }
}

/// The queries timed: a common word, rare words, several words, prefixes as typed,
/// nothing found, and filters.
fn queries(tasks: &[TaskId], start: i64) -> Vec<(&'static str, SearchQuery)> {
    let mut out = vec![
        ("common word", query("error")),
        ("two common words", query("cargo test")),
        ("rare word", query("kalomi")),
        ("rare word, prefix as typed", query("kalo")),
        ("common + rare", query("build velner")),
        ("three words", query("fix the nixluxmab")),
        ("short prefix", query("re")),
        ("no match", query("zzzqqq")),
        (
            "rare word, messages only",
            SearchQuery {
                kinds: vec![SearchKind::Message],
                ..query("shipon")
            },
        ),
        (
            "common word, one month",
            SearchQuery {
                from: Some(Timestamp::from_millis(start + 100 * DAY_MS)),
                to: Some(Timestamp::from_millis(start + 130 * DAY_MS)),
                ..query("update")
            },
        ),
    ];
    if let Some(task) = tasks.get(tasks.len() / 2) {
        out.push((
            "common word, one task",
            SearchQuery {
                task: Some(*task),
                ..query("value")
            },
        ));
    }
    out
}

async fn measure(name: &str, database: &Database, args: &Args) -> Result<Value> {
    let store = Store::connect(database.url(), &StoreOptions::default()).await?;
    let start = 1_700_000_000_000;
    let mut words = Words::new();
    let (entries, messages) = (count(args.scale, ENTRIES), count(args.scale, MESSAGES));
    let (main, tasks, loaded) = if args.reuse.is_some() {
        let user = store
            .user_by_name("main")
            .await?
            .ok_or_else(|| anyhow::anyhow!("no user \"main\": not a database this bench loaded"))?;
        let mut tasks: Vec<TaskId> = store
            .tasks(user.id, &[], i64::MAX)
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect();
        tasks.reverse();
        println!(
            "  {name}: reusing the loaded database ({} tasks)",
            tasks.len()
        );
        // No query filters by the project; the loaded one is not looked up.
        let project = ProjectId::new_v7(Timestamp::from_millis(start));
        let main = Owner {
            user: user.id,
            project,
        };
        (main, tasks, None)
    } else {
        let main = owner(&store, "main", Timestamp::from_millis(start)).await?;
        let noise = owner(&store, "noise", Timestamp::from_millis(start)).await?;
        let t = Instant::now();
        let tasks = load_transcripts(&store, &main, &mut words, entries, args.batch, start).await?;
        load_messages(&store, &main, &mut words, messages, args.batch, start).await?;
        load_transcripts(&store, &noise, &mut words, entries / 10, args.batch, start).await?;
        load_messages(&store, &noise, &mut words, messages / 10, args.batch, start).await?;
        store.analyze_search().await?;
        let loaded = t.elapsed();
        #[allow(clippy::cast_precision_loss)]
        let rows = (entries + messages) as f64 * 1.1;
        println!(
            "  {name}: loaded {entries} entries + {messages} messages (+10% for another user) in {:.1} s ({:.0} µs a row)",
            loaded.as_secs_f64(),
            loaded.as_secs_f64() * 1e6 / rows
        );
        (main, tasks, Some(loaded))
    };

    let mut all = Vec::new();
    let mut per_query = serde_json::Map::new();
    for (label, q) in queries(&tasks, start) {
        let mut sample = Vec::with_capacity(args.runs);
        let mut hits = 0;
        for i in 0..args.runs + 2 {
            let t = Instant::now();
            let got = store.search(main.user, &q).await?;
            let took = t.elapsed();
            hits = got.len();
            if i >= 2 {
                sample.push(took);
            }
        }
        all.extend(sample.iter().copied());
        let s = Summary::of(sample);
        println!("    {label:<28} {hits:>3} hits  {}", s.line());
        per_query.insert(label.into(), json!({ "hits": hits, "ms": s.json() }));
    }
    let overall = Summary::of(all);
    println!(
        "    all queries                          {}",
        overall.line()
    );
    println!(
        "    target p99 < 50 ms: {}",
        if overall.p99 < 50.0 { "met" } else { "MISSED" }
    );

    if args.reuse.is_some() {
        store.close().await;
        return Ok(json!({ "search_ms": overall.json(), "queries": per_query }));
    }
    let task = tasks
        .first()
        .copied()
        .unwrap_or_else(|| TaskId::new_v7(Timestamp::from_millis(start)));
    let mut overhead = serde_json::Map::new();
    for batch in [1, 100] {
        let without = per_entry(&store, task, &mut words, batch, false).await?;
        let with = per_entry(&store, task, &mut words, batch, true).await?;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "    append_transcript, {batch:>3} a transaction: {:.0} µs without an index row, {:.0} µs with (+{:.0} µs)",
            us(without),
            us(with),
            us(with) - us(without)
        );
        overhead.insert(
            format!("batch_{batch}"),
            json!({"without_us": round3(us(without)), "with_us": round3(us(with))}),
        );
    }
    store.close().await;
    Ok(json!({
        "entries": entries,
        "messages": messages,
        "load_s": loaded.map(|l| round3(l.as_secs_f64())),
        "search_ms": overall.json(),
        "queries": per_query,
        "append_transcript": overhead,
    }))
}

pub async fn run(args: &Args) -> Result<()> {
    println!(
        "== search: {} transcript entries and {} messages per database (scale {})",
        count(args.scale, ENTRIES),
        count(args.scale, MESSAGES),
        args.scale
    );
    let mut figures = serde_json::Map::new();
    figures.insert("bench".into(), json!("search"));
    figures.insert("scale".into(), json!(args.scale));
    let reused = args.reuse.as_deref().map(|url| {
        if url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        }
    });
    let only = reused.or(args.only.as_deref());
    if only.is_none_or(|o| o == "sqlite") {
        let database = args
            .reuse
            .clone()
            .map_or_else(Database::sqlite, Database::at);
        figures.insert("sqlite".into(), measure("SQLite", &database, args).await?);
        if args.keep {
            println!("  kept: {}", database.keep().display());
        }
    }
    if only.is_none_or(|o| o == "postgres") {
        let database = match args.reuse.clone() {
            Some(url) => Database::at(url),
            None => Database::postgres().await,
        };
        figures.insert(
            "postgres".into(),
            measure("PostgreSQL", &database, args).await?,
        );
    }
    println!("{}", Value::Object(figures));
    Ok(())
}

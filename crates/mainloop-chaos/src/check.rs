//! The invariants a run must keep, checked after the last (graceful) shutdown against
//! the database file, the repositories, the fake GitHub's state and what the live event
//! client received. Each `check` is one invariant instance; a failure names the task,
//! item or message it is about.

use crate::driver::Outcome;
use anyhow::{Context, Result};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// What a run's checks found.
#[derive(Debug, Default)]
pub struct Checker {
    pub checked: usize,
    pub violations: Vec<String>,
}

impl Checker {
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.violations.push(what());
        }
    }
}

/// What the worker updates in the main thread say, in order, for one task's journey (a
/// fragment of each message), with `rounds` rounds of questions: an agent resumed after
/// a crash may ask its questions again, and each round is its own.
pub fn journey(rounds: usize) -> Vec<&'static str> {
    let mut j = vec!["Task created", "Started: "];
    for _ in 0..rounds {
        j.extend(["questions need your answer", "answers received"]);
    }
    j.extend([
        "a plan is ready for review",
        "plan approved; implementing",
        "work done; running checks",
        "— ready for review",
        "approved; merging",
        "— merged",
    ]);
    j
}

/// The states a task's `task.updated` events report, in order, for the same journey.
pub fn states(rounds: usize) -> Vec<&'static str> {
    let mut s = vec!["queued", "planning"];
    for _ in 0..rounds {
        s.extend(["waiting_answers", "planning"]);
    }
    s.extend([
        "waiting_plan_review",
        "implementing",
        "checking",
        "review",
        "review",
        "merged",
    ]);
    s
}

/// One stored row, as loose JSON.
type Row_ = BTreeMap<String, Value>;

/// The tables the checks read, loaded once.
#[derive(Debug, Default)]
pub struct Db {
    pub tasks: Vec<Row_>,
    pub inbox: Vec<Row_>,
    pub messages: Vec<Row_>,
    pub events: Vec<Row_>,
    pub jobs: Vec<Row_>,
    pub tool_calls: Vec<Row_>,
    pub event_counter: i64,
    /// The transcripts' `status` entries (`task_id`, `payload`).
    pub statuses: Vec<Row_>,
    /// The run leases: which runner each task's run was last placed on, and how often.
    pub leases: Vec<Row_>,
    pub runners: Vec<Row_>,
}

fn text_col(row: &sqlx::sqlite::SqliteRow, col: &str) -> Value {
    match row.try_get::<Option<String>, _>(col) {
        Ok(Some(s)) => Value::String(s),
        Ok(None) => Value::Null,
        Err(_) => row
            .try_get::<Option<i64>, _>(col)
            .ok()
            .flatten()
            .map_or(Value::Null, Value::from),
    }
}

async fn load(conn: &mut SqliteConnection, sql: &str, cols: &[&str]) -> Result<Vec<Row_>> {
    let rows = sqlx::query(sql)
        .fetch_all(&mut *conn)
        .await
        .with_context(|| sql.to_owned())?;
    Ok(rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| ((*c).to_owned(), text_col(r, c)))
                .collect()
        })
        .collect())
}

impl Db {
    pub async fn read(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new().filename(path).read_only(true);
        let mut c = SqliteConnection::connect_with(&opts)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let db = Self {
            tasks: load(
                &mut c,
                "SELECT id, state, description, branch, error, origin_key, version, agent, \
                 runner_labels FROM tasks",
                &[
                    "agent",
                    "runner_labels",
                    "id",
                    "state",
                    "description",
                    "branch",
                    "error",
                    "origin_key",
                    "version",
                ],
            )
            .await?,
            inbox: load(
                &mut c,
                "SELECT id, task_id, kind, resolved_at FROM inbox_items ORDER BY created_at, id",
                &["id", "task_id", "kind", "resolved_at"],
            )
            .await?,
            messages: load(
                &mut c,
                "SELECT id, role, kind, text, content, turn_id, task_id FROM messages ORDER BY seq",
                &[
                    "id", "role", "kind", "text", "content", "turn_id", "task_id",
                ],
            )
            .await?,
            events: load(
                &mut c,
                "SELECT id, name, payload FROM events ORDER BY id",
                &["id", "name", "payload"],
            )
            .await?,
            jobs: load(
                &mut c,
                "SELECT key, kind, state, attempts, last_error FROM jobs ORDER BY id",
                &["key", "kind", "state", "attempts", "last_error"],
            )
            .await?,
            tool_calls: load(
                &mut c,
                "SELECT tool_use_id, name FROM tool_calls",
                &["tool_use_id", "name"],
            )
            .await?,
            event_counter: sqlx::query_scalar("SELECT value FROM counters WHERE name = 'event'")
                .fetch_one(&mut c)
                .await?,
            statuses: load(
                &mut c,
                "SELECT task_id, payload FROM transcript WHERE kind = 'status'",
                &["task_id", "payload"],
            )
            .await?,
            leases: load(
                &mut c,
                "SELECT task_id, runner_id, epoch FROM run_leases",
                &["task_id", "runner_id", "epoch"],
            )
            .await?,
            runners: load(&mut c, "SELECT id, name FROM runners", &["id", "name"]).await?,
        };
        c.close().await?;
        Ok(db)
    }

    /// Whether a job has given up (`failed`: final), read while the server runs; false
    /// when the database cannot be read just now.
    pub async fn a_job_gave_up(path: &Path) -> bool {
        let opts = SqliteConnectOptions::new().filename(path).read_only(true);
        let Ok(mut c) = SqliteConnection::connect_with(&opts).await else {
            return false;
        };
        let failed: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'failed'")
                .fetch_one(&mut c)
                .await;
        let _ = c.close().await;
        failed.is_ok_and(|n| n > 0)
    }

    fn payloads(&self, name: &str) -> impl Iterator<Item = (i64, Value)> + '_ {
        let name = name.to_owned();
        self.events
            .iter()
            .filter(move |e| e["name"] == name.as_str())
            .map(|e| {
                let payload = e["payload"]
                    .as_str()
                    .and_then(|p| serde_json::from_str(p).ok())
                    .unwrap_or_default();
                (e["id"].as_i64().unwrap_or_default(), payload)
            })
    }
}

pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Tasks, inbox, worker updates, and their events. Returns each task's rounds of
/// questions.
pub fn tasks(c: &mut Checker, db: &Db, outcomes: &[Outcome]) -> BTreeMap<String, usize> {
    let mut rounds_by_task = BTreeMap::new();
    for o in outcomes {
        let desc = o.plan.description.as_str();
        let rows: Vec<&Row_> = db
            .tasks
            .iter()
            .filter(|t| t["description"] == desc)
            .collect();
        c.check(rows.len() == 1, || {
            format!(
                "task {}: {} rows with its description (one expected)",
                o.plan.index,
                rows.len()
            )
        });
        c.check(o.problem.is_none(), || {
            format!(
                "task {} ({}): {}; seen: {}",
                o.plan.index,
                o.id.as_deref().unwrap_or("never created"),
                o.problem.as_deref().unwrap_or_default(),
                o.timeline
                    .iter()
                    .map(|(t, s)| format!("{s}@{t:.0}s"))
                    .collect::<Vec<_>>()
                    .join(" → ")
            )
        });
        let Some(task) = rows.first() else { continue };
        let id = s(&task["id"]);
        // It ran on the agent it asked for (a chat spawn names it in `spawn_task`).
        let agent = o.plan.agent.as_deref().unwrap_or("claude");
        c.check(task["agent"] == agent, || {
            format!("task {id}: ran on {}, asked for {agent}", task["agent"])
        });
        c.check(task["state"] == "merged" && task["error"].is_null(), || {
            format!(
                "task {id}: ended {} (error {})",
                task["state"], task["error"]
            )
        });

        // Its task.updated events: one per transition, in the journey's order, with
        // some rounds of questions (at least one).
        let updates: Vec<(String, String)> = db
            .payloads("task.updated")
            .filter(|(_, p)| p["id"] == id)
            .map(|(_, p)| (s(&p["state"]).to_owned(), p.to_string()))
            .collect();
        let got: Vec<&str> = updates.iter().map(|(st, _)| st.as_str()).collect();
        let rounds = got.iter().filter(|st| **st == "waiting_answers").count();
        let want = states(rounds);
        c.check(rounds >= 1 && got == want, || {
            format!("task {id}: task.updated states were {got:?}, expected {want:?}")
        });
        let distinct: BTreeSet<&str> = updates.iter().map(|(_, p)| p.as_str()).collect();
        c.check(distinct.len() == updates.len(), || {
            format!(
                "task {id}: {} task.updated events repeat an earlier one",
                updates.len() - distinct.len()
            )
        });
        rounds_by_task.insert(id.to_owned(), rounds);

        // One inbox item per step that needed the human, all resolved, no failure.
        let items: Vec<&Row_> = db.inbox.iter().filter(|i| i["task_id"] == id).collect();
        for (kind, want) in [
            ("question", rounds),
            ("plan_review", 1),
            ("review", 1),
            ("failed", 0),
        ] {
            let n = items.iter().filter(|i| i["kind"] == kind).count();
            c.check(n == want, || {
                format!("task {id}: {n} {kind} inbox items ({want} expected)")
            });
        }
        let open = items.iter().filter(|i| i["resolved_at"].is_null()).count();
        c.check(open == 0, || {
            format!("task {id}: {open} inbox items left open")
        });

        // The worker updates tell the journey once, in order.
        let told: Vec<&str> = db
            .messages
            .iter()
            .filter(|m| m["role"] == "event" && m["task_id"] == id)
            .map(|m| s(&m["text"]))
            .collect();
        let want = journey(rounds);
        let journey_ok =
            told.len() == want.len() && told.iter().zip(&want).all(|(u, w)| u.contains(w));
        c.check(journey_ok, || {
            format!("task {id}: worker updates were {told:#?}, expected one each of {want:?}")
        });

        // A task the chat spawned comes from exactly one recorded spawn_task call.
        if o.plan.chat.is_some() {
            let origin = s(&task["origin_key"]).trim_start_matches("tool:");
            let calls = db
                .tool_calls
                .iter()
                .filter(|t| t["tool_use_id"] == origin && t["name"] == "spawn_task")
                .count();
            c.check(!origin.is_empty() && calls == 1, || {
                format!("task {id}: origin {origin:?} has {calls} recorded spawn_task calls")
            });
        }
    }
    c.check(db.tasks.len() == outcomes.len(), || {
        format!(
            "{} tasks stored, {} started",
            db.tasks.len(),
            outcomes.len()
        )
    });
    rounds_by_task
}

/// The event log and what refers to it.
pub fn events(c: &mut Checker, db: &Db, sse_ids: &[i64], sse_connections: u32) {
    let ids: Vec<i64> = db.events.iter().filter_map(|e| e["id"].as_i64()).collect();
    let n = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    let contiguous = ids.iter().zip(1..).all(|(id, want)| *id == want);
    c.check(contiguous && db.event_counter == n, || {
        format!(
            "event ids are not exactly 1..={} (counter {}): first gap near {:?}",
            n,
            db.event_counter,
            ids.iter().zip(1..).find(|(id, want)| **id != *want)
        )
    });

    // Every inbox item was announced open once, and resolved once.
    let inbox_events: Vec<(i64, Value)> = db.payloads("inbox.updated").collect();
    for item in &db.inbox {
        let id = s(&item["id"]);
        let opened = inbox_events
            .iter()
            .filter(|(_, p)| p["id"] == id && p["resolved_at"].is_null())
            .count();
        let resolved = inbox_events
            .iter()
            .filter(|(_, p)| p["id"] == id && !p["resolved_at"].is_null())
            .count();
        let want_resolved = usize::from(!item["resolved_at"].is_null());
        c.check(opened == 1 && resolved == want_resolved, || {
            format!(
                "inbox item {id} ({}): announced open {opened}×, resolved {resolved}× ({want_resolved} expected)",
                item["kind"]
            )
        });
    }

    // Every message (but tool results, which are never streamed) was announced once.
    let mut announced: BTreeMap<String, usize> = BTreeMap::new();
    for (_, p) in db.payloads("chat.message") {
        *announced.entry(s(&p["id"]).to_owned()).or_default() += 1;
    }
    let known: BTreeSet<&str> = db.messages.iter().map(|m| s(&m["id"])).collect();
    for m in &db.messages {
        let id = s(&m["id"]);
        let want = usize::from(m["kind"] != "tool_result");
        let got = announced.get(id).copied().unwrap_or(0);
        c.check(got == want, || {
            format!(
                "message {id} ({} {}): announced {got}× ({want} expected)",
                m["role"], m["kind"]
            )
        });
    }
    for id in announced.keys() {
        c.check(known.contains(id.as_str()), || {
            format!("a chat.message event names message {id}, which is not stored")
        });
    }

    // The live client: every event once, in order, across every reconnection.
    let in_order = sse_ids.iter().zip(1..).all(|(id, want)| *id == want);
    c.check(in_order && sse_ids.len() == ids.len(), || {
        let dup = sse_ids.windows(2).find(|w| w[1] <= w[0]);
        format!(
            "the live client ({sse_connections} connections) got {} events, the log has {}; out of order or repeated: {dup:?}; first difference near {:?}",
            sse_ids.len(),
            ids.len(),
            sse_ids.iter().zip(1..).find(|(id, want)| **id != *want)
        )
    });
}

/// The main thread: each message the human wrote stored once and answered once.
pub fn chat(c: &mut Checker, db: &Db, posted: &[String]) {
    let users: Vec<&Row_> = db
        .messages
        .iter()
        .filter(|m| m["role"] == "user" && m["kind"] == "text")
        .collect();
    for text in posted {
        let n = users.iter().filter(|m| m["text"] == text.as_str()).count();
        c.check(n == 1, || format!("user message {text:?} stored {n}×"));
    }
    c.check(users.len() == posted.len(), || {
        format!(
            "{} user messages stored, {} posted",
            users.len(),
            posted.len()
        )
    });
    for u in &users {
        let id = s(&u["id"]);
        let turn: Vec<&Row_> = db.messages.iter().filter(|m| m["turn_id"] == id).collect();
        let uses_tools = |m: &Row_| s(&m["content"]).contains("\"tool_use\"");
        let finals = turn
            .iter()
            .filter(|m| m["role"] == "assistant" && !uses_tools(m))
            .count();
        c.check(finals == 1, || {
            format!(
                "user message {:?} answered {finals}× (once expected)",
                u["text"]
            )
        });
        let calls = turn
            .iter()
            .filter(|m| m["role"] == "assistant" && uses_tools(m))
            .count();
        let results = turn.iter().filter(|m| m["kind"] == "tool_result").count();
        c.check(calls == results && calls <= 1, || {
            format!(
                "user message {:?}: {calls} tool-calling replies, {results} tool results (at most one each, paired)",
                u["text"]
            )
        });
    }
}

/// No job gave up, and nothing is left to do.
pub fn jobs(c: &mut Checker, db: &Db) {
    for j in &db.jobs {
        let state = s(&j["state"]);
        c.check(state == "done", || {
            format!(
                "job {} ({}) ended {state} after {} attempts: {}",
                j["key"], j["kind"], j["attempts"], j["last_error"]
            )
        });
    }
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("git {args:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The short id a task's worktree (and note) is named by.
fn short(id: &str) -> String {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    hex[hex.len().saturating_sub(8)..].to_owned()
}

/// A repository's base branch: one merge per task, each bringing one commit, and every
/// task's note with the content it must have. `git_dir` is a work tree or a bare
/// repository.
pub fn repo(
    c: &mut Checker,
    label: &str,
    git_dir: &Path,
    tasks: &[(String, String)],
) -> Result<()> {
    let log = git(
        git_dir,
        &["log", "--first-parent", "--format=%H %P|%s", "main"],
    )?;
    let merges: Vec<(String, Vec<String>, String)> = log
        .lines()
        .filter_map(|l| {
            let (hashes, subject) = l.split_once('|')?;
            let mut h = hashes.split_whitespace().map(str::to_owned);
            let sha = h.next()?;
            Some((sha, h.collect::<Vec<String>>(), subject.to_owned()))
        })
        .filter(|(_, parents, _)| parents.len() == 2)
        .collect();
    // The commits a merge race injected on the fake GitHub stand for other people's work.
    let race = format!("|{}", mainloop_fake_github::RACE_COMMIT_SUBJECT);
    let commits = log.lines().filter(|l| !l.ends_with(&race)).count();
    c.check(commits == tasks.len() + 1, || {
        format!("{label}: main has {commits} first-parent commits, expected the initial one and one merge per task ({})", tasks.len())
    });
    for (id, branch) in tasks {
        let hits: Vec<&(String, Vec<String>, String)> = merges
            .iter()
            .filter(|(_, _, subject)| subject.contains(branch.as_str()))
            .collect();
        c.check(hits.len() == 1, || {
            format!(
                "{label}: {} merges of {branch} on main (one expected)",
                hits.len()
            )
        });
        if let Some((sha, parents, _)) = hits.first() {
            let brought = git(
                git_dir,
                &[
                    "rev-list",
                    "--count",
                    &format!("{}..{}", parents[0], parents[1]),
                ],
            )?;
            c.check(brought.trim() == "1", || {
                format!(
                    "{label}: the merge {sha} of {branch} brings {} commits (one expected)",
                    brought.trim()
                )
            });
        }
        let note = format!("notes/{}.txt", short(id));
        let content = git(git_dir, &["show", &format!("main:{note}")]).unwrap_or_default();
        c.check(content == format!("{branch}\n"), || {
            format!("{label}: {note} on main is {content:?}, expected the branch name {branch}")
        });
    }
    let notes = git(git_dir, &["ls-tree", "--name-only", "main", "notes/"]).unwrap_or_default();
    let n = notes.lines().count();
    c.check(n == tasks.len(), || {
        format!("{label}: {n} notes on main, {} tasks", tasks.len())
    });
    Ok(())
}

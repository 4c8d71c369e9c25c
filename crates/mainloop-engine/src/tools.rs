//! The tools the main-thread model may call. Each call runs inside the transaction that
//! records it under the model's `tool_use` id, so a replayed turn never repeats a side
//! effect: it reads back the recorded result instead.

use crate::tasks::{CreateTask, apply_in, create_task_in};
use crate::{Engine, EngineError, Result};
use mainloop_domain::notes::MAX_NOTE_CHARS;
use mainloop_domain::search::{MAX_QUERY_CHARS, SearchHit, SearchKind};
use mainloop_domain::task::{TaskEvent, TaskState};
use mainloop_domain::{TaskId, Timestamp, UserId};
use mainloop_model::ToolSpec;
use mainloop_store::Tx;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The tool specs offered to the model.
#[must_use]
pub fn tool_specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "spawn_task".into(),
            description: "Spawn a worker: a coding agent that works on the task in its own \
                          workspace (plan, questions, implementation, checks, review). Only call \
                          this after the user has confirmed they want the worker."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "description": {"type": "string", "description": "What the worker should do, with all the context it needs."},
                    "repo": {"type": "string", "description": "The repository: a local path, a git URL, or owner/name."},
                    "skip_plan": {"type": "boolean", "description": "Skip planning and implement straight away (only when the user asks for it)."},
                    "agent": {"type": "string", "pattern": "^[a-z0-9-]{1,32}$", "description": "The coding agent to run, by its configured name (claude, codex, gemini, opencode, …); leave it out for the project's or the server's default. Only when the user names one."},
                    "budget_usd": {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000, "description": "A cost cap for this task in US dollars: at it, the task waits for the user. Only when the user gives one."},
                    "runner_labels": {"type": "array", "maxItems": 8, "uniqueItems": true, "items": {"type": "string", "pattern": "^[a-z0-9._-]{1,63}$"}, "description": "Labels the machine that runs the task must carry (gpu, linux-x64, …), added to the project's; the task waits until a runner with every one is free. Only when the user asks for such a machine."}
                },
                "required": ["description", "repo"]
            }),
        },
        ToolSpec {
            name: "list_tasks".into(),
            description: "List the user's tasks, newest first.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "state": {"type": "string", "description": "Only tasks in this state (queued, planning, waiting_answers, waiting_plan_review, implementing, on_hold, checking, review, merged, failed, cancelled)."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100}
                }
            }),
        },
        ToolSpec {
            name: "get_task".into(),
            description: "Get one task with its questions, plan, state and cost.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {"task_id": {"type": "string"}},
                "required": ["task_id"]
            }),
        },
        ToolSpec {
            name: "cancel_task".into(),
            description: "Cancel a task (stops its worker). Only when the user asks for it.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {"task_id": {"type": "string"}},
                "required": ["task_id"]
            }),
        },
        ToolSpec {
            name: "search_history".into(),
            description: SEARCH_HISTORY.into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS, "description": "The words to find (all must occur; the last may be the start of a word). Plain words: quotes, operators and other punctuation only separate words."},
                    "kind": {"type": "array", "items": {"type": "string", "enum": SearchKind::ALL.map(SearchKind::as_str)}, "description": "Only these kinds of hit (default: all): message (this conversation), task (a task's description), question (a task's questions and answers), plan (proposed plans and the feedback on them), transcript (what a worker said and did), review (feedback on finished work), note, digest."},
                    "task_id": {"type": "string", "description": "Only hits of this task."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_MODEL_HITS, "description": "At most this many hits (default 10)."}
                },
                "required": ["query"]
            }),
        },
        ToolSpec {
            name: "remember".into(),
            description: REMEMBER.into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["fact", "decision"], "description": "decision: something decided, to be kept to; fact: something true about the user, their work or their preferences."},
                    "text": {"type": "string", "minLength": 1, "maxLength": MAX_NOTE_CHARS, "description": "The note, self-contained: it is read later without this conversation."}
                },
                "required": ["kind", "text"]
            }),
        },
    ]
}

/// What `remember` is for, in the model's terms.
const REMEMBER: &str = "Keep a fact or a decision in every later context of this \
     conversation (the <notes> you are given), however old it gets. Use it when the user \
     decides something or states something lasting (a preference, a convention, a \
     constraint) that later work must respect, or asks you to remember it. The user sees \
     it at once and may edit or delete it. Keep each note short and self-contained.";

/// What `search_history` is for, in the model's terms.
const SEARCH_HISTORY: &str = "Search everything of the user's past that is stored: this \
     conversation (including the parts no longer in your context), tasks' descriptions, \
     their questions and answers, plans, workers' transcripts, review feedback, notes and \
     digests. Use it when the user refers to something earlier that you do not see \
     (\"what did we decide about the auth refactor?\", \"which task touched the billing \
     code?\", \"what did the worker say about the failing test?\") instead of guessing. \
     Returns the best hits first: each one's kind, id, task_id (open it with get_task), \
     title, a snippet around the words found, and when it was written.";

/// The most hits one `search_history` call returns: enough to answer from, few enough
/// to keep the context small.
const MAX_MODEL_HITS: u32 = 20;

#[derive(Deserialize)]
struct SpawnInput {
    description: String,
    repo: String,
    #[serde(default)]
    skip_plan: bool,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    budget_usd: Option<f64>,
    #[serde(default)]
    runner_labels: BTreeSet<String>,
}

#[derive(Deserialize)]
struct ListInput {
    state: Option<String>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
struct TaskInput {
    task_id: String,
}

#[derive(Deserialize)]
struct RememberInput {
    kind: String,
    text: String,
}

#[derive(Deserialize)]
struct SearchInput {
    query: String,
    #[serde(default)]
    kind: Option<OneOrMany>,
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// A list the model may also give as its one element.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The hits as the model reads them: what each is and where, without the offsets.
fn hits_for_model(hits: &[SearchHit]) -> Value {
    json!({
        "results": hits.iter().map(|h| json!({
            "kind": h.kind,
            "id": h.id,
            "task_id": h.task_id,
            "title": h.title,
            "snippet": h.snippet,
            "created_at": h.created_at,
        })).collect::<Vec<_>>()
    })
}

async fn search_history(engine: &Engine, user: UserId, i: SearchInput) -> Result<Value> {
    let kinds = match i.kind {
        None => Vec::new(),
        Some(OneOrMany::One(k)) => vec![k],
        Some(OneOrMany::Many(ks)) => ks,
    };
    let limit = i.limit.unwrap_or(10).clamp(1, MAX_MODEL_HITS);
    let query = crate::parse_search(
        &i.query,
        &kinds,
        None,
        i.task_id.as_deref(),
        None,
        None,
        Some(limit),
    )?;
    let hits = engine.search(user, &query).await?;
    Ok(hits_for_model(&hits))
}

fn summary(task: &mainloop_domain::records::Task) -> Value {
    json!({
        "task_id": task.id,
        "state": task.state,
        "description": task.description,
        "repo": task.repo,
        "agent": task.agent,
        "runner_labels": task.runner_labels,
        "branch": task.branch,
        "cost_usd": task.cost_usd,
        "error": task.error,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(input: &Value) -> std::result::Result<T, String> {
    serde_json::from_value(input.clone()).map_err(|e| format!("invalid input: {e}"))
}

fn task_id(raw: &str) -> std::result::Result<TaskId, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("'{raw}' is not a task id"))
}

impl Engine {
    /// Runs one main-thread tool for `user` from outside a chat turn's own loop (the MCP
    /// server). With `tool_use_id` (the model's id, which Claude Code passes along with
    /// each call) the call is recorded under it in the transaction of its side effect, so
    /// a replayed turn calling it again reads back the first result; without one it runs
    /// each time. Returns the result text and whether it is an error the caller made.
    ///
    /// # Errors
    /// Storage failures only; bad input comes back as an error result.
    pub async fn call_tool(
        &self,
        user: UserId,
        tool_use_id: Option<&str>,
        name: &str,
        input: &Value,
    ) -> Result<(String, bool)> {
        let at = crate::now();
        // A call the main thread's session makes again in a replayed turn comes under a
        // new tool_use id; the turn's own key finds the first one.
        let turn_key = self.turn_call_key(user, name, input);
        let keys: Vec<&str> = tool_use_id.into_iter().chain(turn_key.as_deref()).collect();
        let mut tx = self.store().begin().await?;
        for key in &keys {
            if let Some(recorded) = tx.tool_call(user, key).await? {
                return Ok(recorded);
            }
        }
        let id = keys.first().map_or_else(
            || format!("call-{}", uuid::Uuid::now_v7()),
            |k| (*k).to_owned(),
        );
        let (result, is_error) = execute(&mut tx, self, user, &id, name, input, at).await?;
        for key in &keys {
            tx.record_tool_call(user, key, name, &result, is_error, at)
                .await?;
        }
        tx.commit().await?;
        self.wake_dispatcher();
        Ok((result, is_error))
    }
}

/// Runs one tool call. The outer error is for storage failures (the turn is retried);
/// anything the model did wrong comes back as an error result it can read.
pub(crate) async fn execute(
    tx: &mut Tx,
    engine: &Engine,
    user: UserId,
    tool_use_id: &str,
    name: &str,
    input: &Value,
    at: Timestamp,
) -> Result<(String, bool)> {
    let outcome: Result<std::result::Result<Value, String>> = match name {
        "spawn_task" => match parse::<SpawnInput>(input) {
            Ok(i) => {
                let req = CreateTask {
                    description: i.description,
                    repo: i.repo,
                    skip_plan: i.skip_plan,
                    model: None,
                    agent: i.agent,
                    budget_usd: i.budget_usd,
                };
                create_task_in(
                    tx,
                    engine,
                    user,
                    &req,
                    &i.runner_labels,
                    Some(format!("tool:{tool_use_id}")),
                    at,
                )
                .await
                .map(|t| Ok(summary(&t)))
            }
            Err(e) => Ok(Err(e)),
        },
        "list_tasks" => match parse::<ListInput>(input) {
            Ok(i) => {
                let states: std::result::Result<Vec<TaskState>, String> = i
                    .state
                    .iter()
                    .map(|s| s.parse().map_err(|e| format!("{e}")))
                    .collect();
                match states {
                    Ok(states) => engine
                        .tasks(user, &states, i.limit.unwrap_or(20).clamp(1, 100))
                        .await
                        .map(|ts| Ok(json!({"tasks": ts.iter().map(summary).collect::<Vec<_>>()}))),
                    Err(e) => Ok(Err(e)),
                }
            }
            Err(e) => Ok(Err(e)),
        },
        "get_task" => match parse::<TaskInput>(input).and_then(|i| task_id(&i.task_id)) {
            Ok(id) => match tx.task(Some(user), id).await {
                Ok(Some(t)) => Ok(Ok(json!({
                    "task": summary(&t),
                    "questions": t.questions,
                    "answers": t.answers,
                    "plan": t.plan,
                }))),
                Ok(None) => Ok(Err(format!("no task {id}"))),
                Err(e) => Err(e.into()),
            },
            Err(e) => Ok(Err(e)),
        },
        "cancel_task" => match parse::<TaskInput>(input).and_then(|i| task_id(&i.task_id)) {
            Ok(id) => match apply_in(tx, user, id, TaskEvent::CancelRequested, at).await {
                Ok(t) => Ok(Ok(summary(&t))),
                // Another user's task reads as no task at all, as for get_task.
                Err(EngineError::NotFound(_)) => Ok(Err(format!("no task {id}"))),
                Err(e) => Err(e),
            },
            Err(e) => Ok(Err(e)),
        },
        // A read: nothing to keep once, so the store's transaction has no part in it.
        "search_history" => match parse::<SearchInput>(input) {
            Ok(i) => search_history(engine, user, i).await.map(Ok),
            Err(e) => Ok(Err(e)),
        },
        "remember" => match parse::<RememberInput>(input) {
            Ok(i) => {
                crate::notes::remember_in(tx, engine, user, tool_use_id, &i.kind, &i.text, at).await
            }
            Err(e) => Ok(Err(e)),
        },
        other => Ok(Err(format!("unknown tool '{other}'"))),
    };
    match outcome {
        Ok(Ok(v)) => Ok((v.to_string(), false)),
        Ok(Err(msg)) => Ok((msg, true)),
        // The model's mistakes (a bad id, a task in the wrong state) are results it can
        // act on; only storage trouble fails the turn.
        Err(
            e @ (EngineError::NotFound(_)
            | EngineError::Invalid(_)
            | EngineError::WrongState(_)
            | EngineError::Answers(_)),
        ) => Ok((e.to_string(), true)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_history_gives_the_model_a_bounded_compact_answer() {
        let specs = tool_specs();
        let search = specs.iter().find(|s| s.name == "search_history").unwrap();
        assert_eq!(search.input_schema["required"], json!(["query"]));
        assert_eq!(
            search.input_schema["properties"]["limit"]["maximum"],
            MAX_MODEL_HITS
        );
        assert!(search.description.contains("what did we decide"));
        let hit = SearchHit {
            kind: SearchKind::Plan,
            id: "t:2".into(),
            task_id: None,
            title: "Refactor auth".into(),
            snippet: "keep auth in the gateway".into(),
            highlights: vec![[5, 9]],
            created_at: Timestamp::from_millis(1_700_000_000_000),
        };
        assert_eq!(
            hits_for_model(&[hit]),
            json!({"results": [{"kind": "plan", "id": "t:2", "task_id": null,
                "title": "Refactor auth", "snippet": "keep auth in the gateway",
                "created_at": "2023-11-14T22:13:20Z"}]})
        );
    }

    #[test]
    fn spawn_task_keeps_its_public_shape() {
        let specs = tool_specs();
        let spawn = specs.iter().find(|s| s.name == "spawn_task").unwrap();
        assert_eq!(
            spawn.input_schema["required"],
            json!(["description", "repo"])
        );
        assert!(spawn.input_schema["properties"]["skip_plan"].is_object());
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "spawn_task",
                "list_tasks",
                "get_task",
                "cancel_task",
                "search_history",
                "remember"
            ]
        );
    }
}

//! The tools the MCP server offers: names, descriptions written for a model, input
//! schemas and hints. Pure data; `calls.rs` carries them out.

use super::bounded::{
    DEFAULT_DIFF_BYTES, DEFAULT_TRANSCRIPT_ENTRIES, MAX_DIFF_BYTES, MAX_TRANSCRIPT_BYTES,
    MAX_TRANSCRIPT_ENTRIES,
};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};
use std::sync::Arc;

/// Digests `get_digests` returns when not told.
pub const DEFAULT_MCP_DIGESTS: u32 = 7;
/// The most digests one `get_digests` call returns (each is a few hundred words).
pub const MAX_MCP_DIGESTS: u32 = 20;

/// The tools that run through [`mainloop_engine::Engine::call_tool`], recorded under the
/// caller's tool-use id, so a replayed call reads back its first result.
pub const RECORDED: [&str; 6] = [
    "spawn_task",
    "list_tasks",
    "get_task",
    "cancel_task",
    "search_history",
    "remember",
];

/// Every tool, in the order clients list them.
#[must_use]
pub fn tools() -> Vec<Tool> {
    let main_thread = mainloop_engine::tool_specs();
    let engine_description = |name: &str| {
        main_thread
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.description.clone())
            .unwrap_or_default()
    };
    let engine_schema = |name: &str| {
        main_thread
            .iter()
            .find(|s| s.name == name)
            .map_or_else(|| json!({"type": "object"}), |s| s.input_schema.clone())
    };
    let task_id = json!({"type": "string", "description": "The task's id (a UUID), as `spawn_task` or `list_tasks` return it."});
    let only_task =
        json!({"type": "object", "properties": {"task_id": task_id}, "required": ["task_id"]});
    vec![
        tool(
            "spawn_task",
            "Start a worker: a coding agent that works on the task in its own git worktree of \
             the repository (it plans, may ask questions, implements, runs the project's checks, \
             then waits for review). The description is all the worker sees, so make it \
             self-contained. Only call this once the user has confirmed they want the work \
             started. Returns the new task (its `task_id` and state).",
            engine_schema("spawn_task"),
            hints(false, false, false),
        ),
        tool(
            "list_tasks",
            "List the user's tasks, newest first, with each one's state, repository, branch, \
             cost and error. Use it to find a task's id or to see what is running.",
            engine_schema("list_tasks"),
            hints(true, false, true),
        ),
        tool(
            "get_task",
            "Get one task: its state, pending questions, answers, plan, cost and error.",
            engine_schema("get_task"),
            hints(true, false, true),
        ),
        tool(
            "get_inbox",
            "What needs the user: open inbox items (questions to answer, plans and finished \
             work to review, failures), most urgent first, then recently resolved ones; with \
             `needs_you`, how many open items ask the user to act. Check it to learn what to \
             do next.",
            json!({
                "type": "object",
                "properties": {
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "description": "At most this many open items (default 20)."},
                    "resolved": {"type": "integer", "minimum": 0, "maximum": 100, "description": "Also this many recently resolved items (default 0)."}
                }
            }),
            hints(true, false, true),
        ),
        tool(
            "answer_questions",
            "Answer a task's pending questions (the task is in state `waiting_answers`; \
             `get_task` shows the questions). Give one answer per question id: a list of the \
             chosen option labels for a question with options (one label unless it allows \
             several), or free text for a question without options. Relay the user's answers; \
             do not invent them.",
            json!({
                "type": "object",
                "properties": {
                    "task_id": task_id,
                    "answers": {
                        "type": "object",
                        "description": "Question id → the chosen option labels, free text, or both as {choices, note}.",
                        "additionalProperties": {
                            "anyOf": [
                                {"type": "array", "items": {"type": "string"}},
                                {"type": "string"},
                                {
                                    "type": "object",
                                    "properties": {
                                        "choices": {"type": "array", "items": {"type": "string"}},
                                        "note": {"type": "string"}
                                    },
                                    "required": ["choices", "note"]
                                }
                            ]
                        }
                    }
                },
                "required": ["task_id", "answers"]
            }),
            hints(false, false, false),
        ),
        tool(
            "decide_plan",
            "Decide on a task's proposed plan (state `waiting_plan_review`; `get_task` shows \
             it): `approve` starts the implementation, `revise` sends `feedback` (required) \
             for a new plan, `cancel` ends the task. Only on the user's decision.",
            json!({
                "type": "object",
                "properties": {
                    "task_id": task_id,
                    "action": {"type": "string", "enum": ["approve", "revise", "cancel"]},
                    "feedback": {"type": "string", "maxLength": 20000, "description": "What to change; required with `revise`."}
                },
                "required": ["task_id", "action"]
            }),
            hints(false, true, false),
        ),
        tool(
            "review_task",
            "Decide on a task's finished work (state `review`; `get_diff` shows it): \
             `approve` merges it into the base branch, `changes` sends `feedback` (required) \
             back to the worker. Only on the user's decision.",
            json!({
                "type": "object",
                "properties": {
                    "task_id": task_id,
                    "action": {"type": "string", "enum": ["approve", "changes"]},
                    "feedback": {"type": "string", "maxLength": 20000, "description": "What to change; required with `changes`."}
                },
                "required": ["task_id", "action"]
            }),
            hints(false, true, false),
        ),
        tool(
            "cancel_task",
            "Cancel a task that has not ended: its worker is stopped and nothing is merged. \
             Only when the user asks for it.",
            engine_schema("cancel_task"),
            hints(false, true, true),
        ),
        tool(
            "retry_task",
            "Run a failed task again from where it stopped (state `failed`; its `error` says \
             why it failed).",
            only_task,
            hints(false, false, false),
        ),
        tool(
            "answer_budget",
            "Answer a task held at a budget (state `on_hold` with `hold.kind` `budget`; \
             `hold.reason` says which budget, its cap and what is spent): `raise` sets that \
             budget to `usd` (above what is spent; every task it held goes on), \
             `continue_once` lets this task run once past it. Relay the user's decision; \
             never raise a budget on your own.",
            json!({
                "type": "object",
                "properties": {
                    "task_id": task_id,
                    "action": {"type": "string", "enum": ["raise", "continue_once"]},
                    "usd": {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000,
                            "description": "The new cap in US dollars, for `raise`."}
                },
                "required": ["task_id", "action"]
            }),
            hints(false, false, false),
        ),
        tool(
            "get_usage",
            "What the user's work has cost: spend and tokens per day (UTC) and per agent, the \
             costliest tasks, today and this week against the budgets, the agents' quota \
             windows (five_hour, seven_day) with their resets, and whether work is paused.",
            json!({
                "type": "object",
                "properties": {
                    "days": {"type": "integer", "minimum": 1, "maximum": 366,
                             "description": "Days reported, today included (default 7)."}
                }
            }),
            hints(true, false, true),
        ),
        tool(
            "pause_work",
            "Pause all of the user's work: no agent run starts; a running agent finishes its \
             turn and its task waits on hold. Lasts until `resume_work`, across restarts.",
            json!({"type": "object", "properties": {}}),
            hints(false, false, true),
        ),
        tool(
            "resume_work",
            "Resume the user's paused work: every paused task goes on.",
            json!({"type": "object", "properties": {}}),
            hints(false, false, true),
        ),
        tool(
            "get_transcript",
            &format!(
                "Read a task's transcript: what its worker said and did (text, tool calls and \
                 their results, questions, plans), in order, in pages. Returns entries after \
                 position `after` (default 0, the start), at most `limit` of them (default \
                 {DEFAULT_TRANSCRIPT_ENTRIES}, at most {MAX_TRANSCRIPT_ENTRIES}) and at most \
                 {MAX_TRANSCRIPT_BYTES} bytes of JSON; an entry larger than a quarter of that \
                 is cut short and says so. `next_after` is where the next page starts, and \
                 `more` says how many entries follow."
            ),
            json!({
                "type": "object",
                "properties": {
                    "task_id": task_id,
                    "after": {"type": "integer", "minimum": 0, "description": "Entries after this position (default 0)."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_TRANSCRIPT_ENTRIES, "description": "At most this many entries."}
                },
                "required": ["task_id"]
            }),
            hints(true, false, true),
        ),
        tool(
            "get_diff",
            &format!(
                "The task's work as a unified diff against its base branch, with per-file \
                 stats, once the worker has a workspace. The diff text comes in pages of at \
                 most `max_bytes` (default {DEFAULT_DIFF_BYTES}, at most {MAX_DIFF_BYTES}) \
                 starting at byte `offset` (default 0); `next_offset` and `more_bytes` say \
                 where the rest begins and how much is left."
            ),
            json!({
                "type": "object",
                "properties": {
                    "task_id": task_id,
                    "offset": {"type": "integer", "minimum": 0, "description": "Byte offset into the diff text (default 0)."},
                    "max_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_DIFF_BYTES, "description": "At most this many bytes of diff text."}
                },
                "required": ["task_id"]
            }),
            hints(true, false, true),
        ),
        tool(
            "search_history",
            &engine_description("search_history"),
            engine_schema("search_history"),
            hints(true, false, true),
        ),
        tool(
            "remember",
            &engine_description("remember"),
            engine_schema("remember"),
            hints(false, false, true),
        ),
        tool(
            "get_digests",
            &format!(
                "Read the user's digests: what happened each day, week (Monday to Sunday) \
                 and month, in the user's time zone — what was asked, what tasks were \
                 spawned, decided, merged, failed or left open, and what it cost. Use it to \
                 answer \"what happened last week\", \"summarise October\" or \"what did we do \
                 on Tuesday\": pick the `period`, and to reach further back give `before` (a \
                 date; only digests starting before it). Newest first, at most `limit` \
                 (default {DEFAULT_MCP_DIGESTS}, at most {MAX_MCP_DIGESTS}). A day's digest \
                 exists once that day has ended, so today has none; for exact words, use \
                 `search_history`."
            ),
            json!({
                "type": "object",
                "properties": {
                    "period": {"type": "string", "enum": ["day", "week", "month"],
                               "description": "Only digests of this length (default: all)."},
                    "before": {"type": "string", "format": "date",
                               "description": "Only digests starting before this local date (YYYY-MM-DD)."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_MCP_DIGESTS,
                              "description": "At most this many digests."}
                }
            }),
            hints(true, false, true),
        ),
    ]
}

fn tool(
    name: &'static str,
    description: &str,
    schema: Value,
    annotations: ToolAnnotations,
) -> Tool {
    let schema: JsonObject = match schema {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    };
    Tool::new(name, description.to_owned(), Arc::new(schema)).with_annotations(annotations)
}

fn hints(read_only: bool, destructive: bool, idempotent: bool) -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(read_only)
        .destructive(destructive)
        .idempotent(idempotent)
        .open_world(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_listed_once_with_an_object_schema() {
        let tools = tools();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "spawn_task",
                "list_tasks",
                "get_task",
                "get_inbox",
                "answer_questions",
                "decide_plan",
                "review_task",
                "cancel_task",
                "retry_task",
                "answer_budget",
                "get_usage",
                "pause_work",
                "resume_work",
                "get_transcript",
                "get_diff",
                "search_history",
                "remember",
                "get_digests"
            ]
        );
        for t in &tools {
            assert_eq!(t.input_schema["type"], "object", "{}", t.name);
            assert!(
                t.description.as_ref().is_some_and(|d| d.len() > 40),
                "{}",
                t.name
            );
        }
        for name in RECORDED {
            assert!(names.contains(&name));
        }
    }

    #[test]
    fn spawn_task_takes_the_main_threads_input() {
        let spawn = tools()
            .into_iter()
            .find(|t| t.name == "spawn_task")
            .unwrap();
        let engine = mainloop_engine::tool_specs()
            .into_iter()
            .find(|s| s.name == "spawn_task")
            .unwrap();
        assert_eq!(
            Value::Object((*spawn.input_schema).clone()),
            engine.input_schema
        );
    }
}

//! What the fake model says, for the main thread and for the workers' `claude` CLI.
//!
//! The worker rules are the same for every task, and every step is safe to repeat: a
//! killed server resumes sessions with "mainloop restarted… continue", and the agent must
//! then pick up where it was without the history (the fake's rules see only the latest
//! message, and the CLI's plan-mode text stays in a resumed session's history, so not
//! even the mode is known). So the agent looks at the disk: it reads the plan file and
//! asks its questions if there is none (nothing decided yet), else submits it (the
//! questions were answered); if the CLI answers that the plan was already approved, it
//! (re)writes its note, which is idempotent. The note is named after the worktree (the task's short id) and holds the
//! branch name, so the harness knows what every task's merge must contain.

use anyhow::Result;
use mainloop_fake_anthropic::Script;
use serde_json::{Value, json};

/// The main thread's system prompt says this; the CLI's never does.
const MAIN_THREAD: &str = "You are mainloop, the user's main thread";
/// The CLI's plan-mode system text names the plan file under this heading.
const PLAN_MODE: &str = "Plan File Info";

/// The agent's implementation: one file per task, content known from the task alone.
pub const NOTE_COMMAND: &str =
    "mkdir -p notes && git rev-parse --abbrev-ref HEAD > \"notes/$(basename \"$PWD\").txt\"";
pub const PLAN: &str = "# Plan\n\nWrite the task's note into notes/.\n";

/// One task the main thread spawns when the user's message carries `token`.
#[derive(Clone, Debug)]
pub struct ChatSpawn {
    pub token: String,
    pub description: String,
    pub repo: String,
}

/// The questions every worker asks (one round), and what the harness answers.
pub fn questions() -> Value {
    json!([
        {"question": "Which tone should the note have?", "header": "Tone",
         "options": [{"label": "Plain", "description": "just the facts"},
                     {"label": "Friendly", "description": "a warm word"}],
         "multiSelect": false},
        {"question": "Which extras?", "header": "Extras",
         "options": [{"label": "Date", "description": "when it was written"},
                     {"label": "Author", "description": "who wrote it"}],
         "multiSelect": true}
    ])
}

#[allow(clippy::needless_pass_by_value)] // built in place at every call
fn rule(name: &str, when: Value, reply: Value) -> Value {
    json!({"name": name, "match": when, "reply": reply})
}

fn ask() -> Value {
    json!([{"text": "Two questions first."},
           {"tool_use": {"name": "AskUserQuestion", "input": {"questions": questions()}}}])
}

fn write_plan() -> Value {
    json!([{"tool_use": {"name": "Write", "input": {"file_path": "{{plan_file}}", "content": PLAN}}}])
}

fn read_plan() -> Value {
    json!([{"tool_use": {"name": "Read", "input": {"file_path": "{{plan_file}}"}}}])
}

fn exit_plan() -> Value {
    json!([{"tool_use": {"name": "ExitPlanMode", "input": {}}}])
}

fn write_note() -> Value {
    json!([{"text": "Writing the note."},
           {"tool_use": {"name": "Bash", "input": {"command": NOTE_COMMAND, "description": "Write the note"}}}])
}

/// The whole script: the main thread's spawn and chatter replies, then the worker.
pub fn script(spawns: &[ChatSpawn]) -> Result<Script> {
    let main = |extra: Value| {
        let mut m = json!({"system_contains": MAIN_THREAD});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        m
    };
    let plan_mode = |extra: Value| {
        let mut m = json!({"system_contains": PLAN_MODE});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        m
    };
    let mut rules = vec![rule(
        "spawned",
        main(json!({"tool_result_for": "spawn_task"})),
        json!([{"text": "The worker is on it."}]),
    )];
    for s in spawns {
        rules.push(rule(
            &format!("spawn-{}", s.token),
            main(json!({"user_contains": s.token})),
            json!([{"text": "Starting a worker."},
                   {"tool_use": {"name": "spawn_task", "input": {"description": s.description, "repo": s.repo}}}]),
        ));
    }
    // Streamed slowly, so kills land mid-reply too.
    let mut chatter = rule(
        "chatter",
        main(json!({})),
        json!([{"text": "Noted. "}, {"text": "Nothing else to do right now."}]),
    );
    chatter["delay_ms"] = json!(60);
    rules.push(chatter);

    rules.extend([
        // Resumed after a crash, or retried: the plan file tells where it was.
        rule(
            "resumed",
            json!({"user_contains": "mainloop restarted"}),
            read_plan(),
        ),
        rule(
            "retried",
            json!({"user_contains": "previous attempt stopped"}),
            read_plan(),
        ),
        // A plan was written, so the questions were answered: submit it. Past plan
        // review the CLI says so, and the work goes on.
        rule(
            "plan-found",
            json!({"tool_result_for": "Read", "tool_result_contains": "Write the task's note"}),
            exit_plan(),
        ),
        rule(
            "plan-already-approved",
            json!({"tool_result_for": "ExitPlanMode", "tool_result_contains": "not in plan mode"}),
            write_note(),
        ),
        rule("plan-missing", json!({"tool_result_for": "Read"}), ask()),
        // Inputs delivered to a resumed session (the parked one was gone).
        rule(
            "answers-resumed",
            json!({"user_contains": "Answers to your questions"}),
            write_plan(),
        ),
        rule(
            "approved-resumed",
            json!({"user_contains": "Your plan was approved"}),
            write_note(),
        ),
        // The first run of a task.
        rule(
            "ask",
            plan_mode(json!({"user_contains": "Task: "})),
            ask(),
        ),
        rule(
            "write-plan",
            json!({"tool_result_for": "AskUserQuestion", "tool_result_contains": "have been answered"}),
            write_plan(),
        ),
        // An orphaned CLI (its server was killed) sees its question fail: it stops.
        rule(
            "unanswered",
            json!({"tool_result_for": "AskUserQuestion"}),
            json!([{"text": "No answers; stopping here."}]),
        ),
        rule(
            "exit-plan",
            json!({"tool_result_for": "Write", "tool_result_contains": "/.claude/plans/"}),
            exit_plan(),
        ),
        rule(
            "implement",
            json!({"tool_result_for": "ExitPlanMode", "tool_result_contains": "User has approved your plan"}),
            write_note(),
        ),
        rule(
            "done",
            json!({"tool_result_for": "Bash"}),
            json!([{"text": "Done: the note is written."}]),
        ),
    ]);
    Ok(Script::from_json(&json!({"rules": rules}).to_string())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_parses() {
        let s = script(&[ChatSpawn {
            token: "SPAWN-1".into(),
            description: "d".into(),
            repo: "r".into(),
        }]);
        assert!(s.is_ok_and(|s| s.rules.len() > 10));
    }
}

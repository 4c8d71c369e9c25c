//! What the fake model says, for the main thread and for the workers' agents: the
//! `claude` CLI, and `codex app-server` (its Responses requests read by the same rules).
//!
//! The worker rules are the same for every task of an agent, and every step is safe to
//! repeat: a killed server resumes sessions with "mainloop restarted… continue", and the
//! agent must then pick up where it was without the history (the fake's rules see only
//! the latest message). Claude's CLI keeps its plan-mode text in a resumed session's
//! history, so not even the mode is known: it looks at the disk, reads the plan file and
//! asks its questions if there is none (nothing decided yet), else submits it (the
//! questions were answered); if the CLI answers that the plan was already approved, it
//! (re)writes its note, which is idempotent. Codex follows the by-turn convention (the
//! planning reply is the plan, a `<mainloop-questions>` block asks), and its sandbox
//! tells the phase: once a thread was resumed to implement, its history holds the
//! writable sandbox's instructions, so a restart there (re)writes the note, and a
//! restart while still read-only asks the questions again (whether they were answered
//! is not known; a second round is checked as its own). The note is named after the
//! task's short id in its branch name and holds the branch name, so the harness knows what
//! every task's merge must contain.

use anyhow::Result;
use mainloop_fake_anthropic::Script;
use serde_json::{Value, json};

/// The main thread's system prompt says this; the CLI's never does.
const MAIN_THREAD: &str = "You are mainloop, the user's main thread";
/// The CLI's plan-mode system text names the plan file under this heading.
const PLAN_MODE: &str = "Plan File Info";
/// Every Codex request's developer message says this (before naming its sandbox); the
/// CLI's and the main thread's never do.
const CODEX: &str = "Filesystem sandboxing defines which files can be read or written.";
/// Codex's developer message for the sandbox it implements in: present in a thread's
/// history from its first implementing turn on, never while it only planned.
const CODEX_WRITABLE: &str = "`sandbox_mode` is `workspace-write`";

/// The agent's implementation: one file per task, content known from the task alone.
/// Named by the short id in the branch's name (`mainloop/<short id>-<slug>`), not by
/// the working directory's: on a runner that is `tasks/<task id>/work`.
pub const NOTE_COMMAND: &str = "b=$(git rev-parse --abbrev-ref HEAD) && s=${b#mainloop/} && \
     mkdir -p notes && echo \"$b\" > \"notes/${s%%-*}.txt\"";
pub const PLAN: &str = "# Plan\n\nWrite the task's note into notes/.\n";

/// One task the main thread spawns when the user's message carries `token`.
#[derive(Clone, Debug)]
pub struct ChatSpawn {
    pub token: String,
    pub description: String,
    pub repo: String,
    /// The agent the model names in `spawn_task` (None: the server's default, Claude).
    pub agent: Option<String>,
    /// The runner labels the model names in `spawn_task` (none: it may run anywhere).
    pub runner_labels: Vec<String>,
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

/// The questions block of the by-turn convention, with the same questions.
fn codex_ask() -> Value {
    let block = json!({"questions": questions()});
    json!([{"text": format!("Two questions first.\n<mainloop-questions>\n{block}\n</mainloop-questions>")}])
}

fn codex_note() -> Value {
    json!([{"text": "Writing the note."},
           {"tool_use": {"name": "exec_command", "input": {"cmd": NOTE_COMMAND}}}])
}

/// What Codex reports for a command that succeeded.
const NOTE_WRITTEN: &str = "Process exited with code 0";

/// The rule that answers a Codex request no other rule foresaw.
pub const CODEX_UNEXPECTED: &str = "codex-unexpected";

/// Codex's worker rules, each matched on Codex's developer message so they never answer
/// Claude's CLI (and Claude's, after them, never answer Codex: the last rule takes
/// whatever Codex sends that no other did).
fn codex_rules() -> Vec<Value> {
    let codex = |extra: Value| {
        let mut m = json!({"system_contains": CODEX});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        m
    };
    // Only Codex's developer message names a sandbox mode, so this is Codex's too.
    let writable = |user: &str| json!({"system_contains": CODEX_WRITABLE, "user_contains": user});
    let mut rules = vec![
        // Implementing (the thread's history holds the writable sandbox): resumed after a
        // crash, retried, or told its checks failed, it (re)writes the note.
        rule(
            "codex-resumed-implementing",
            writable("mainloop restarted"),
            codex_note(),
        ),
        rule(
            "codex-retried-implementing",
            writable("previous attempt stopped"),
            codex_note(),
        ),
        rule(
            "codex-approved",
            codex(json!({"user_contains": "Your plan was approved"})),
            codex_note(),
        ),
        rule(
            "codex-checks-failed",
            codex(json!({"user_contains": "checks failed"})),
            codex_note(),
        ),
        rule(
            "codex-done",
            codex(json!({"tool_result_for": "exec_command", "tool_result_contains": NOTE_WRITTEN})),
            json!([{"text": "Done: the note is written."}]),
        ),
        // As an agent would, it runs a command that failed again rather than claim it
        // done (seen: Codex's own sandbox, nested in mainloop's, failing to start).
        rule(
            "codex-command-failed",
            codex(json!({"tool_result_for": "exec_command"})),
            codex_note(),
        ),
        // Planning (read-only): the answers bring the plan, as the turn's final reply.
        rule(
            "codex-answers",
            codex(json!({"user_contains": "Answers to your questions"})),
            json!([{"text": PLAN}]),
        ),
    ];
    // A restart or retry while planning cannot tell whether the questions were answered:
    // it asks them again. So does the first turn.
    for (name, user) in [
        ("codex-resumed-planning", "mainloop restarted"),
        ("codex-retried-planning", "previous attempt stopped"),
        ("codex-ask", "Task: "),
    ] {
        rules.push(rule(
            name,
            codex(json!({"user_contains": user})),
            codex_ask(),
        ));
    }
    rules.push(rule(
        CODEX_UNEXPECTED,
        codex(json!({})),
        json!([{"text": "Nothing scripted for this."}]),
    ));
    rules
}

/// The whole script: the main thread's spawn and chatter replies, then the workers'.
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
        let mut input = json!({"description": s.description, "repo": s.repo});
        if let Some(agent) = &s.agent {
            input["agent"] = json!(agent);
        }
        if !s.runner_labels.is_empty() {
            input["runner_labels"] = json!(s.runner_labels);
        }
        rules.push(rule(
            &format!("spawn-{}", s.token),
            main(json!({"user_contains": s.token})),
            json!([{"text": "Starting a worker."},
                   {"tool_use": {"name": "spawn_task", "input": input}}]),
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
    rules.extend(codex_rules());

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
    use mainloop_fake_anthropic::{RequestView, conditions_hold};

    fn the_script() -> Script {
        script(&[ChatSpawn {
            token: "SPAWN-1".into(),
            description: "d".into(),
            repo: "r".into(),
            agent: Some("codex".into()),
            runner_labels: vec!["chaos".into()],
        }])
        .unwrap()
    }

    /// The rule that answers a Messages-shaped request (the script uses no `nth`/`times`).
    fn answer(script: &Script, system: &str, messages: &Value) -> String {
        let req = json!({"system": system, "messages": messages});
        let view = RequestView::new(&req);
        script
            .rules
            .iter()
            .find(|r| conditions_hold(&r.when, &view))
            .and_then(|r| r.name.clone())
            .unwrap_or_default()
    }

    fn user(text: &str) -> Value {
        json!([{"role": "user", "content": [{"type": "text", "text": text}]}])
    }

    /// A tool's result after the assistant called it.
    fn result_of(tool: &str, output: &str) -> Value {
        json!([
            {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": tool, "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": output}]}
        ])
    }

    const READ_ONLY: &str = "Filesystem sandboxing defines which files can be read or written. `sandbox_mode` is `read-only`: …";

    #[test]
    fn the_script_spawns_with_the_agent_and_labels_named() {
        let s = the_script();
        let spawn = s
            .rules
            .iter()
            .find(|r| r.name.as_deref() == Some("spawn-SPAWN-1"));
        let reply = serde_json::to_value(&spawn.unwrap().reply).unwrap();
        assert_eq!(reply[1]["tool_use"]["input"]["agent"], "codex", "{reply}");
        assert_eq!(
            reply[1]["tool_use"]["input"]["runner_labels"],
            json!(["chaos"]),
            "{reply}"
        );
    }

    #[test]
    fn codex_asks_plans_and_notes_by_its_sandbox_and_a_restart_repeats_the_step() {
        let s = the_script();
        let writable = format!("{READ_ONLY}\n{CODEX_WRITABLE}: …");
        let cases = [
            (
                READ_ONLY,
                user("Task: chaos r0t1\n\nYou are planning (read-only)."),
                "codex-ask",
            ),
            (
                READ_ONLY,
                user("Answers to your questions:\n- Tone → Plain"),
                "codex-answers",
            ),
            (
                READ_ONLY,
                user(prompts_restarted()),
                "codex-resumed-planning",
            ),
            (
                READ_ONLY,
                user("The previous attempt stopped before finishing."),
                "codex-retried-planning",
            ),
            (
                &writable,
                user("Your plan was approved. Implement it now."),
                "codex-approved",
            ),
            (
                &writable,
                user(prompts_restarted()),
                "codex-resumed-implementing",
            ),
            (
                &writable,
                user("The previous attempt stopped before finishing."),
                "codex-retried-implementing",
            ),
            (
                &writable,
                user("The project's checks failed on your work."),
                "codex-checks-failed",
            ),
            (
                &writable,
                result_of("exec_command", "Process exited with code 0"),
                "codex-done",
            ),
            (
                &writable,
                result_of(
                    "exec_command",
                    "Process exited with code 1\nOutput:\nbwrap: …",
                ),
                "codex-command-failed",
            ),
            (READ_ONLY, user("something else"), CODEX_UNEXPECTED),
        ];
        for (system, messages, want) in cases {
            assert_eq!(answer(&s, system, &messages), want, "{messages}");
        }
        let ask = s
            .rules
            .iter()
            .find(|r| r.name.as_deref() == Some("codex-ask"))
            .unwrap();
        let text = serde_json::to_value(&ask.reply).unwrap()[0]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        let block = text.split("<mainloop-questions>").nth(1).unwrap();
        let block = block.split("</mainloop-questions>").next().unwrap();
        let parsed: Value = serde_json::from_str(block.trim()).unwrap();
        assert_eq!(parsed["questions"], questions());
    }

    #[test]
    fn the_agents_rules_never_answer_each_other() {
        let s = the_script();
        let claude_plan =
            "You are Claude Code. Plan mode is active. ## Plan File Info: /h/.claude/plans/x.md";
        let claude = [
            (claude_plan, user("Task: chaos r0t0"), "ask"),
            ("You are Claude Code.", user(prompts_restarted()), "resumed"),
            (
                "You are Claude Code.",
                user("Your plan was approved"),
                "approved-resumed",
            ),
            ("You are Claude Code.", result_of("Bash", "ok"), "done"),
        ];
        for (system, messages, want) in claude {
            assert_eq!(answer(&s, system, &messages), want, "{messages}");
        }
        for messages in [
            user("Task: x"),
            user(prompts_restarted()),
            user("Your plan was approved"),
            result_of("Read", "# Plan"),
            result_of("Bash", "ok"),
        ] {
            let got = answer(&s, READ_ONLY, &messages);
            assert!(
                got.starts_with("codex-"),
                "{got} answered Codex's {messages}"
            );
        }
    }

    fn prompts_restarted() -> &'static str {
        "mainloop restarted while you were working. Continue the task where you left off."
    }
}

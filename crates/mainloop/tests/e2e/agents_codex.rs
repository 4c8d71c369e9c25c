//! Tasks run by Codex (the real pinned `codex app-server` against the fake model's
//! Responses API), driven through the HTTP API like the web app does: the by-turn
//! lifecycle from a question to the merge, and a SIGKILL of the server mid-turn that
//! resumes Codex's own thread.

use super::*;
use crate::agent_journey::{
    Journey, Kill, Question, Shell, journey, killed_mid_implementation, long_job,
};
use crate::agent_world::{AgentWorld, Cli, file_under};
use mainloop_test_support::TIMEOUT;

/// The shared Codex greeter (plan, revise, answered, approved, fix-checks, review-fix,
/// restarted), with a question asked first.
const GREETER: &str = include_str!("../../../mainloop-fake-anthropic/scripts/codex-greeter.yaml");

/// Asked once, in the planning turn, by the convention's questions block, after a
/// look around: a command Codex runs in its own read-only sandbox, inside mainloop's.
/// The marker is the shell's arithmetic, so only the command's output carries it.
const ASK: &str = r#"
rules:
  - name: explore
    match: {user_contains: "build the greeter", times: 1}
    reply:
      - tool_use: {name: exec_command, input: {cmd: "echo explored-$((20+1)) && ls"}}
  - name: ask
    match: {tool_result_for: exec_command, tool_result_contains: "explored-21", times: 1}
    reply:
      - text: "One thing first.\n<mainloop-questions>\n{\"questions\": [{\"question\": \"Which language should the greeter use?\", \"header\": \"Language\", \"options\": [{\"label\": \"Rust\", \"description\": \"fast\"}, {\"label\": \"Go\", \"description\": \"simple\"}], \"multiSelect\": false}]}\n</mainloop-questions>"
"#;

/// The rules before `shared`'s, as one script.
fn in_front(rules: &str, shared: &str) -> String {
    let shared = shared
        .split_once("\nrules:\n")
        .map_or(shared, |(_, list)| list);
    format!("{}\n{shared}", rules.trim_end())
}

/// Whether Codex keeps a rollout file for thread `id` under `dir`: proof that the id is
/// Codex's own.
fn own_session(dir: &Path, id: &str) -> bool {
    file_under(dir, &|n| n.starts_with("rollout-") && n.contains(id))
}

/// The greeter's journey, with its question asked first.
const JOURNEY: Journey = Journey {
    own_session,
    turn_wait: TIMEOUT,
    asks_with: "One thing first.",
    question: Question {
        text: "Which language should the greeter use?",
        header: "Language",
        options: [("Rust", "fast"), ("Go", "simple")],
        answer: "Rust",
    },
    plan: "A greeter in Rust.",
    revise_with: "add tests",
    revised: &["revised", "with tests"],
    implementing: &["write-greeting"],
    fix_has: &[],
    // Codex runs commands in its own sandbox rather than asking.
    asks_to_use: &[],
    changes_with: "Make it friendlier.",
    reviewing: &[],
    review_has: &[],
    merged: &[("greeting.txt", "hello, reviewed\n")],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_question_plan_revise_approve_checks_review_and_merge() {
    let Some(world) = AgentWorld::new(Cli::Codex, &in_front(ASK, GREETER)).await else {
        return;
    };
    journey(&world, &JOURNEY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_killed_mid_implementation_resumes_the_same_session() {
    let shell = Shell {
        tool: "exec_command",
        input: "{cmd: CMD}",
        main_match: "",
        side_rules: "",
    };
    let script = in_front(&long_job(&shell), GREETER);
    let Some(world) = AgentWorld::new(Cli::Codex, &script).await else {
        return;
    };
    let kill = Kill {
        own_session,
        resume_wait: TIMEOUT,
        // Unsandboxed, `codex app-server` may end with the server's end of its pipe.
        outlives_unsandboxed: false,
    };
    killed_mid_implementation(&world, &kill).await;
}

//! Tasks run by Gemini CLI (`gemini --acp`, the pinned CLI against the fake's Gemini
//! API) from start to merge through the HTTP API, and one killed with the server
//! mid-implementation and resumed by loading the same Gemini session.

use super::*;
use crate::agent_journey::{
    Kill, Shell, acp_journey, journey, killed_mid_implementation, long_job,
};
use crate::agent_world::{AgentWorld, Cli, file_under};

const JOURNEY: &str = include_str!("../../../mainloop-fake-anthropic/scripts/gemini-journey.yaml");

/// Whether Gemini keeps a chat file for session `id` under `dir`
/// (`session-<minute>-<id8>.jsonl`): proof that the id is Gemini's own, not one the
/// worker made up.
fn own_session(dir: &Path, id: &str) -> bool {
    let Some(short) = id.get(..8) else {
        return false;
    };
    file_under(dir, &|n| n.starts_with("session-") && n.contains(short))
}

/// How long a turn in a loaded session may take to start: Gemini's loads wait for the
/// minute its chat file is named by to turn.
const LOAD_WAIT: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_question_plan_revise_approve_checks_review_and_merge() {
    let Some(world) = AgentWorld::new(Cli::Gemini, JOURNEY).await else {
        return;
    };
    // The implementing process ends with its turn: the failed check's output and the
    // reviewer's changes go to the session loaded in a new process.
    journey(&world, &acp_journey(own_session, LOAD_WAIT)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_killed_mid_implementation_resumes_the_same_session() {
    let shell = Shell {
        tool: "run_shell_command",
        input: "{command: CMD, description: Run}",
        // The main rules ask for tools, so the CLI's side calls never take them.
        main_match: ", has_tools: true",
        // The CLI's model router asks a small model, without tools, how hard each
        // prompt is.
        side_rules: "  - name: router\n    match: {has_tools: false, system_contains: \"complexity\"}\n    \
                     reply:\n      - text: '{\"complexity_reasoning\": \"A small job.\", \"complexity_score\": 10}'",
    };
    let Some(world) = AgentWorld::new(Cli::Gemini, &long_job(&shell)).await else {
        return;
    };
    let kill = Kill {
        own_session,
        // Up to a minute more than the rest of the run, for the load.
        resume_wait: Duration::from_secs(180),
        outlives_unsandboxed: true,
    };
    killed_mid_implementation(&world, &kill).await;
}

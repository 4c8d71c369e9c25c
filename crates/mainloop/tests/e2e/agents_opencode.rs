//! Tasks run by OpenCode (`opencode acp`, the pinned CLI against the fake model) from
//! start to merge through the HTTP API, and one killed with the server mid-implementation
//! and resumed in the same OpenCode session.

use super::*;
use crate::agent_journey::{
    Kill, Shell, acp_journey, journey, killed_mid_implementation, long_job,
};
use crate::agent_world::{AgentWorld, Cli};
use mainloop_test_support::TIMEOUT;

const JOURNEY: &str =
    include_str!("../../../mainloop-fake-anthropic/scripts/opencode-journey.yaml");

/// OpenCode names its sessions `ses_…`.
fn own_session(_: &Path, id: &str) -> bool {
    id.starts_with("ses_")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_question_plan_revise_approve_checks_review_and_merge() {
    let Some(world) = AgentWorld::new(Cli::OpenCode, JOURNEY).await else {
        return;
    };
    journey(&world, &acp_journey(own_session, TIMEOUT)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_killed_mid_implementation_resumes_the_same_session() {
    let shell = Shell {
        tool: "bash",
        input: "{command: CMD, description: Run}",
        main_match: "",
        // OpenCode titles a new session with a small model and no tools.
        side_rules: "  - name: title\n    match: {has_tools: false}\n    reply: [{text: \"A long job\"}]",
    };
    let Some(world) = AgentWorld::new(Cli::OpenCode, &long_job(&shell)).await else {
        return;
    };
    let kill = Kill {
        own_session,
        resume_wait: TIMEOUT,
        outlives_unsandboxed: true,
    };
    killed_mid_implementation(&world, &kill).await;
}

//! ACP agents' runs moved between runners: a long job of Gemini CLI or OpenCode (the
//! pinned CLIs against the fake model) on a real `mainloop runner` that is SIGKILLed
//! mid-run finishes on another runner, resuming the same session from what the server
//! kept — Gemini's chats unpacked under the other runner's paths, OpenCode's database
//! restored on a runner whose paths are the same (a machine set up alike).

use super::*;
use crate::agent_journey::{Shell, long_job as long_job_script};
use crate::agent_world::{AgentWorld, Cli, request_for};
use crate::faults::{ServerLog, spawn_logged};
use crate::runner_faults::{connected, kept_state, long_job, new_runner};
use crate::runner_run::RunnerMachine;
use mainloop_test_support::node_bin;

/// How long the resumed run may take to finish on the other runner: the server's wait
/// for the lost one, a fresh copy there, the agent's start and its load.
const FINISH_WAIT: Duration = Duration::from_secs(180);

/// The long job with its slow reply slower still: the first runner must still be
/// waiting for it when a save during the run has kept the session with its first step.
fn long_job_for(shell: &Shell) -> String {
    let script = long_job_script(shell);
    assert!(script.contains("delay_ms: 3000"), "{script}");
    script.replace("delay_ms: 3000", "delay_ms: 120000")
}

/// `world`'s server, moving a run off a lost runner after 2 s.
fn server(world: &AgentWorld) -> (Server, ServerLog, String, String) {
    let mut cmd = world.command();
    cmd.env("MAINLOOP_WORKERS__RUNNER_RECONNECT_SECS", "2");
    let (server, log) = spawn_logged(cmd, &world.data.0);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    (server, log, base, token)
}

/// Waits until the task runs on a runner and the server keeps its session with the first
/// step's result; the task then.
async fn first_step_kept(world: &AgentWorld, base: &str, token: &str, id: &str) -> Value {
    wait_rule(&world.fake, "slow-work").await;
    wait_for_within(
        Duration::from_secs(90),
        "the server to keep the session with its first step",
        || async {
            kept_state(&world.data.0, id)
                .filter(|s| s.contains("step-2-started"))
                .map(drop)
        },
    )
    .await;
    let before = get(base, token, &format!("/api/tasks/{id}")).await;
    assert_eq!(before["state"], "implementing", "{before}");
    before
}

/// Waits for the moved run to finish; checks it resumed the session `before` had, told
/// to go on with its history, and did the rest of the work in `machine`'s copy.
async fn finished_resumed(
    world: &AgentWorld,
    (base, token): (&str, &str),
    id: &str,
    before: &Value,
    machine: &RunnerMachine,
) {
    let done = wait_for_within(FINISH_WAIT, "the moved run to finish", || async {
        let t = get(base, token, &format!("/api/tasks/{id}")).await;
        (t["state"] == "review" || t["state"] == "failed").then_some(t)
    })
    .await;
    assert_eq!(done["state"], "review", "{done:#} {}", machine.log());
    assert!(done["error"].is_null(), "{done}");
    assert_eq!(
        done["session_id"], before["session_id"],
        "the same session was resumed"
    );
    let rules = world.rules();
    assert_eq!(
        rules.iter().filter(|r| *r == "first-step").count(),
        1,
        "{rules:?}"
    );
    assert!(rules.iter().any(|r| r == "relaunched"), "{rules:?}");
    assert!(!rules.iter().any(|r| r == "started-again"), "{rules:?}");
    // The resumed turn carries the conversation the first runner had.
    let resumed = request_for(world, "relaunched");
    for said in ["long job", "step-2-started"] {
        assert!(resumed.contains(said), "{said:?} not in {resumed}");
    }
    let result = machine
        .data()
        .join("tasks")
        .join(id)
        .join("work/result.txt");
    assert_eq!(
        std::fs::read_to_string(&result).unwrap(),
        "done\n",
        "finished there: {}",
        machine.log()
    );
    let diff = get(base, token, &format!("/api/tasks/{id}/diff")).await;
    assert!(diff["text"].as_str().unwrap().contains("+done"), "{diff}");
}

/// The UTC minute as Gemini CLI writes it in a chat file's name, `2026-12-06T13-05`.
fn utc_minute() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute()
    )
}

/// Gemini's chat files for session `id` under the home `home`.
fn gemini_chats(home: &Path, id: &str) -> Vec<PathBuf> {
    let short = format!("-{}.jsonl", &id[..8]);
    let Ok(projects) = std::fs::read_dir(home.join(".gemini/tmp")) else {
        return Vec::new();
    };
    projects
        .flatten()
        .filter_map(|p| std::fs::read_dir(p.path().join("chats")).ok())
        .flat_map(|chats| chats.flatten().map(|c| c.path()))
        .filter(|c| c.to_string_lossy().ends_with(&short))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gemini_run_moved_to_another_runner_loads_the_same_session_there() {
    let shell = Shell {
        tool: "run_shell_command",
        input: "{command: CMD, description: Run}",
        main_match: ", has_tools: true",
        side_rules: "  - name: router\n    match: {has_tools: false, system_contains: \"complexity\"}\n    \
                     reply:\n      - text: '{\"complexity_reasoning\": \"A small job.\", \"complexity_score\": 10}'",
    };
    let Some(world) = AgentWorld::new(Cli::Gemini, &long_job_for(&shell)).await else {
        return;
    };
    // The pinned CLIs' directory goes first on the runners' PATH.
    let Some(clis) = node_bin("gemini") else {
        return;
    };
    let (_server, _log, base, token) = server(&world);
    // Ties go by name: alpha takes the task first.
    let (alpha, beta) = (RunnerMachine::new(), RunnerMachine::new());
    let alpha_token = new_runner(&base, &token, "alpha").await;
    let beta_token = new_runner(&base, &token, "beta").await;
    let mut alpha_run = alpha.start(None, &base, &alpha_token, "gpu", &clis);
    let _beta_run = beta.start(None, &base, &beta_token, "gpu", &clis);
    connected(&base, &token, 2).await;

    let id = long_job(&base, &token, &world.repo, "gpu").await;
    let before = first_step_kept(&world, &base, &token, &id).await;
    let session = before["session_id"].as_str().unwrap().to_owned();
    let alpha_home = alpha.data().join("tasks").join(&id).join("home");
    let chats = gemini_chats(&alpha_home, &session);
    assert_eq!(chats.len(), 1, "alpha keeps the chat: {}", alpha.log());
    // Gemini names a chat file by the minute it started, and a load names a new one by
    // the minute it happens in: within the same minute the two collide. Mainloop waits
    // for the minute to turn only where it can see the chats, not on a runner.
    let name = chats[0].file_name().unwrap().to_string_lossy().into_owned();
    wait_for_within(
        Duration::from_secs(70),
        "the minute the chat was started to pass",
        || async { (!name.contains(&utc_minute())).then_some(()) },
    )
    .await;
    alpha_run.sigkill();

    finished_resumed(&world, (&base, &token), &id, &before, &beta).await;
    // Under beta's own paths: Gemini found the project by its root file, which names
    // beta's copy now, and went on in the chat alpha began.
    let beta_task = beta.data().join("tasks").join(&id);
    let root = beta_task.join("home/.gemini/tmp/work/.project_root");
    let work = beta_task.join("work").canonicalize().unwrap();
    assert_eq!(
        std::fs::read_to_string(&root).unwrap(),
        work.display().to_string()
    );
    let moved = gemini_chats(&beta_task.join("home"), &session);
    assert!(
        moved.iter().any(|c| c.file_name() == chats[0].file_name()),
        "{moved:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opencode_run_moved_to_a_runner_with_the_same_paths_resumes_the_same_session() {
    let shell = Shell {
        tool: "bash",
        input: "{command: CMD, description: Run}",
        main_match: "",
        side_rules: "  - name: title\n    match: {has_tools: false}\n    reply: [{text: \"A long job\"}]",
    };
    let Some(world) = AgentWorld::new(Cli::OpenCode, &long_job_for(&shell)).await else {
        return;
    };
    let Some(clis) = node_bin("opencode") else {
        return;
    };
    let (_server, _log, base, token) = server(&world);
    // Two runners on machines set up alike: the same data directory path, one after the
    // other (OpenCode's database names the working directory, so it is restored only
    // where that is the same).
    let machine = RunnerMachine::new();
    let alpha_token = new_runner(&base, &token, "alpha").await;
    let beta_token = new_runner(&base, &token, "beta").await;
    let mut alpha_run = machine.start(None, &base, &alpha_token, "gpu", &clis);
    connected(&base, &token, 1).await;

    let id = long_job(&base, &token, &world.repo, "gpu").await;
    let before = first_step_kept(&world, &base, &token, &id).await;
    assert!(
        before["session_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("ses_")),
        "{before}"
    );
    let data = machine
        .data()
        .join("tasks")
        .join(&id)
        .join("home/.local/share/opencode");
    assert!(data.join("opencode.db").is_file(), "{}", machine.log());
    alpha_run.sigkill();
    machine.kill_leftovers();
    // Alpha's machine is gone with its disk: all beta has is what the server kept.
    std::fs::remove_dir_all(machine.data()).unwrap();
    let _beta_run = machine.start(None, &base, &beta_token, "gpu", &clis);

    finished_resumed(&world, (&base, &token), &id, &before, &machine).await;
    assert!(data.join("opencode.db").is_file());
}

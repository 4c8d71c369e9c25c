//! ACP agents' runs moved between runners: a long job of Gemini CLI or OpenCode (the
//! pinned CLIs against the fake model) on a real `mainloop runner` that is SIGKILLed
//! mid-run finishes on another runner, resuming the same session from what the server
//! kept — Gemini's chats unpacked under the other runner's paths, OpenCode's database
//! restored on a runner whose paths are the same (a machine set up alike); and a Gemini
//! session on a runner loaded twice, first within the minute it began, that keeps its
//! history each time.

use super::*;
use crate::agent_journey::{Shell, long_job as long_job_script};
use crate::agent_world::{AgentWorld, Cli, request_for, task};
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

/// The UTC minute of `at` as Gemini CLI writes it in a chat file's name,
/// `2026-12-06T13-05`.
fn gemini_minute(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// The minute a Gemini chat file's name says its session started in.
fn minute_of_chat(chat: &Path) -> String {
    let name = chat.file_name().unwrap().to_string_lossy();
    // `session-` and `YYYY-MM-DDTHH-MM`.
    name["session-".len()..][..16].to_owned()
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
    // the minute it happens in: a move within that minute makes beta hold Gemini's start
    // back until the minute has turned (`runner/gemini.rs`), within FINISH_WAIT.
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

/// A task Gemini CLI implements on a runner, each of its turns in a process of its own:
/// the first writes the greeting, the failed check's output and the reviewer's changes
/// go to the session loaded in a new process. The rules match only the latest message,
/// so they hold whether a load kept the history or not; the requests show which.
const LOADED_TWICE: &str = r#"rules:
  - name: router
    match: {has_tools: false, system_contains: "complexity"}
    reply:
      - text: '{"complexity_reasoning": "A small job.", "complexity_score": 10}'
  - name: implement
    match: {user_contains: "greet the runner", tool_offered: write_file, times: 1}
    reply:
      - tool_use: {name: write_file, input: {file_path: "greeting.txt", content: "hello\n"}}
  - name: implemented
    match: {tool_result_for: write_file, has_tools: true}
    reply: [{text: "Wrote greeting.txt: IMPLEMENTED-MARK."}]
  - name: fix-checks
    match: {user_contains: "checks failed", tool_offered: run_shell_command}
    reply:
      - tool_use: {name: run_shell_command, input: {command: "touch fixed.txt && echo FIXED-MARK", description: "Make the check pass"}}
  - name: fixed
    match: {tool_result_for: run_shell_command, tool_result_contains: "FIXED-MARK"}
    reply: [{text: "The checks pass now: FIXED-TURN-MARK."}]
  - name: review-fix
    match: {user_contains: "reviewer asked for changes", tool_offered: run_shell_command}
    reply:
      - tool_use: {name: run_shell_command, input: {command: "printf 'hello, world\\n' > greeting.txt && echo REVIEW-MARK", description: "Greet the whole world"}}
  - name: review-fixed
    match: {tool_result_for: run_shell_command, tool_result_contains: "REVIEW-MARK"}
    reply: [{text: "greeting.txt now greets the whole world."}]
"#;

/// The project's check: it fails until the agent has made `fixed.txt`.
const CHECK: &str =
    "check = \"test -f fixed.txt || { echo 'check: fixed.txt is missing'; exit 1; }\"\n";

/// How long a turn in a loaded session may take to start: up to a minute of it the
/// runner's wait for the minute to turn.
const LOAD_WAIT: Duration = Duration::from_secs(150);

/// When the task's first check failed, as the minute Gemini would name a file by: the
/// moment the server asked the runner to start the session's first load.
async fn first_failed_check_minute(base: &str, token: &str, id: &str) -> String {
    let transcript = get(
        base,
        token,
        &format!("/api/tasks/{id}/transcript?limit=1000"),
    )
    .await;
    let failed = transcript["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "checks" && e["payload"]["passed"] == false)
        .unwrap_or_else(|| panic!("no failed check: {transcript:#}"));
    let at = failed["created_at"].as_str().unwrap();
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
    gemini_minute(at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gemini_session_on_a_runner_loaded_in_its_first_minute_and_again_keeps_its_history() {
    let started = std::time::Instant::now();
    let Some(world) = AgentWorld::new(Cli::Gemini, LOADED_TWICE).await else {
        return;
    };
    let Some(clis) = node_bin("gemini") else {
        return;
    };
    std::fs::write(world.repo.path().join(".mainloop.toml"), CHECK).unwrap();
    world.repo.git(&["add", "-A"]);
    world.repo.git(&["commit", "-q", "-m", "checks"]);
    let (_server, _log, base, token) = server(&world);
    let (base, token) = (base.as_str(), token.as_str());
    let machine = RunnerMachine::new();
    let runner_token = new_runner(base, token, "alpha").await;
    let _run = machine.start(None, base, &runner_token, "gpu", &clis);
    connected(base, token, 1).await;

    // Not late in a minute, so that the first turn and the check (a few seconds) end
    // within the minute the session begins: the load after them is the one that would
    // collide with its file.
    wait_for_within(Duration::from_secs(70), "a minute's first half", || async {
        (time::OffsetDateTime::now_utc().second() < 30).then_some(())
    })
    .await;
    let (status, created) = post(
        base,
        token,
        "/api/tasks",
        json!({"description": "greet the runner", "repo": world.repo.path(),
               "skip_plan": true, "runner_labels": ["gpu"]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let id = id.as_str();

    // The first load: the check's output, in the minute the session began.
    wait_for_within(
        LOAD_WAIT,
        "the session loaded to fix the checks",
        || async {
            let t = task(base, token, id).await;
            assert_ne!(t["state"], "failed", "{t} {}", machine.log());
            world.rules().iter().any(|r| r == "fixed").then_some(())
        },
    )
    .await;
    let fixed = wait_task_state(base, token, id, "review").await;
    let session = fixed["session_id"].as_str().unwrap().to_owned();
    let fix = request_for(&world, "fix-checks");
    for said in [
        "greet the runner",
        "IMPLEMENTED-MARK",
        "fixed.txt is missing",
    ] {
        assert!(fix.contains(said), "the first load lost {said:?}: {fix}");
    }
    let home = machine.data().join("tasks").join(id).join("home");
    let mut chats = gemini_chats(&home, &session);
    chats.sort();
    assert_eq!(
        chats.len(),
        2,
        "the session's file and the load's: {chats:?}"
    );
    let began = minute_of_chat(&chats[0]);
    assert_eq!(
        first_failed_check_minute(base, token, id).await,
        began,
        "the first load was asked for in the minute the session began"
    );
    assert_ne!(
        minute_of_chat(&chats[1]),
        began,
        "the runner started the load once that minute had turned"
    );

    // The second load: the reviewer's changes. The first load's empty file is gone
    // before Gemini starts, so that its start does not delete the session with it. (This
    // start may wait for the minute to turn as well: the first load's process began a
    // chat file of a throwaway session of its own in that minute, which the runner
    // cannot tell from a session's first file by its name.)
    let changes = json!({"action": "changes", "feedback": "Greet the whole world."});
    let (status, body) = post(base, token, &format!("/api/tasks/{id}/review"), changes).await;
    assert_eq!(status, 200, "{body}");
    wait_for_within(LOAD_WAIT, "the session loaded again", || async {
        let t = task(base, token, id).await;
        assert_ne!(t["state"], "failed", "{t} {}", machine.log());
        world
            .rules()
            .iter()
            .any(|r| r == "review-fixed")
            .then_some(())
    })
    .await;
    let reviewed = wait_task_state(base, token, id, "review").await;
    assert_eq!(reviewed["session_id"], session.as_str());
    let review = request_for(&world, "review-fix");
    for said in [
        "greet the runner",
        "IMPLEMENTED-MARK",
        "FIXED-TURN-MARK",
        "Greet the whole world.",
    ] {
        assert!(
            review.contains(said),
            "the second load lost {said:?}: {review}"
        );
    }
    let chats = gemini_chats(&home, &session);
    assert!(
        chats.iter().any(|c| minute_of_chat(c) == began),
        "the session's own file is kept: {chats:?}"
    );
    let rules = world.rules();
    for rule in ["implement", "fix-checks", "review-fix"] {
        let n = rules.iter().filter(|r| *r == rule).count();
        assert_eq!(n, 1, "{rule}: {rules:?}");
    }
    assert!(!rules.iter().any(|r| r == "<none>"), "{rules:?}");
    let took = started.elapsed().as_secs_f64();
    eprintln!("gemini on a runner, loaded twice: {took:.1}s, rules {rules:?}");
}

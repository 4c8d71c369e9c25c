//! Tasks run by Gemini CLI (`gemini --acp`, the pinned CLI against the fake's Gemini
//! API) from start to merge through the HTTP API, and one killed with the server
//! mid-implementation and resumed by loading the same Gemini session.

use super::*;
use crate::agent_world::{AgentWorld, Cli, request_for, task, wait_state_with};

const JOURNEY: &str = include_str!("../../../mainloop-fake-anthropic/scripts/gemini-journey.yaml");

/// Gemini's chat file for session `id` under `dir` (`session-<minute>-<id8>.jsonl`):
/// proof that the id is Gemini's own, not one the worker made up.
fn chat_file_of(dir: &Path, id: &str) -> Option<PathBuf> {
    let short = id.get(..8)?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if entry.file_type().ok()?.is_dir() {
            if let Some(found) = chat_file_of(&path, id) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with("session-") && n.contains(short)
        }) {
            return Some(path);
        }
    }
    None
}

/// How long a turn in a loaded session may take to start: Gemini's loads wait for the
/// minute to turn.
const LOAD_WAIT: Duration = Duration::from_secs(150);

/// Waits until the fake answered with `rule`, within [`LOAD_WAIT`], the task not failed.
async fn wait_task_loaded(base: &str, token: &str, id: &str, rule: &str, world: &AgentWorld) {
    wait_for_within(LOAD_WAIT, format!("the model's rule {rule:?}"), || async {
        let t = task(base, token, id).await;
        assert_ne!(t["state"], "failed", "{}", t["error"]);
        world.rules().iter().any(|r| r == rule).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_question_plan_revise_approve_checks_review_and_merge() {
    let Some(world) = AgentWorld::new(Cli::Gemini, JOURNEY).await else {
        return;
    };
    // The check fails until the agent has made `fixed.txt`.
    std::fs::write(
        world.repo.path().join(".mainloop.toml"),
        "check = \"test -f fixed.txt\"\n",
    )
    .unwrap();
    world.repo.git(&["add", "-A"]);
    world.repo.git(&["commit", "-q", "-m", "checks"]);
    let (server, _log) = world.start();
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());

    let (status, created) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "Plan the greeter", "repo": world.repo.path(), "agent": "gemini"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    // The agent asks, by the convention; the question reaches the task and the inbox.
    let asking = wait_task_state(&base, &token, &id, "waiting_answers").await;
    let session = asking["session_id"].as_str().unwrap().to_owned();
    let home = world.data.0.join("homes").join(&id);
    assert!(
        chat_file_of(&world.data.0, &session).is_some(),
        "no Gemini chat file for session {session} under {}",
        home.display()
    );
    // The agent's process waits with the task (no slot held).
    let agent_pid = || std::fs::read_to_string(world.data.0.join("agents").join(&id)).unwrap();
    let asked_by = agent_pid();
    let question = &asking["questions"][0];
    assert_eq!(
        question["question"], "Which greeting should greeting.txt hold?",
        "{asking:#}"
    );
    let labels: Vec<&str> = question["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["hello", "good day"], "{asking:#}");
    assert_eq!(question["options"][0]["description"], "short and plain");
    let inbox = get(&base, &token, "/api/inbox").await;
    assert!(
        inbox["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["task_id"] == id.as_str()
                && i["kind"] == "question"
                && i["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("Which greeting should greeting.txt hold?"))),
        "{inbox:#}"
    );

    // Answered: the waiting session goes on and plans, with the earlier turn in view.
    let qid = question["id"].as_str().unwrap();
    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/answers"),
        json!({"answers": {qid: ["hello"]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let planned = wait_state_with(
        &base,
        &token,
        &id,
        "waiting_plan_review",
        "plan",
        "PLAN-MARK",
    )
    .await;
    assert_eq!(planned["session_id"], session.as_str());
    let answered = request_for(&world, "plan");
    assert!(
        answered.contains("Before I plan, one thing matters") && answered.contains("hello"),
        "the answered turn lacks the earlier history: {answered}"
    );

    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/plan"),
        json!({"action": "revise", "feedback": "Keep it to one line."}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let revised = wait_state_with(
        &base,
        &token,
        &id,
        "waiting_plan_review",
        "plan",
        "REVISED-MARK",
    )
    .await;
    assert_eq!(revised["session_id"], session.as_str());
    let revising = request_for(&world, "revised-plan");
    assert!(
        revising.contains("Keep it to one line.") && revising.contains("PLAN-MARK"),
        "{revising}"
    );

    // Approved: implementation, a failed check fed back, then green.
    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/plan"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_rule(&world.fake, "implement").await;
    assert_eq!(
        agent_pid(),
        asked_by,
        "the process that asked and planned implements: its mode switched mid-session"
    );
    // The implementing process ended with its turn; the failed check's output goes to
    // the session loaded in a new process.
    wait_task_loaded(&base, &token, &id, "fixed", &world).await;
    let in_review = wait_task_state(&base, &token, &id, "review").await;
    assert_eq!(in_review["session_id"], session.as_str());
    let rules = world.rules();
    for rule in ["implement", "implemented", "fix-checks", "fixed"] {
        assert!(rules.contains(&rule.to_owned()), "{rule}: {rules:?}");
    }
    let fixing = request_for(&world, "fix-checks");
    assert!(
        fixing.contains("The project's checks failed") && fixing.contains("IMPLEMENTED-MARK"),
        "the loaded session lacks the earlier history: {fixing}"
    );
    let diff = get(&base, &token, &format!("/api/tasks/{id}/diff")).await;
    let text = diff["text"].as_str().unwrap();
    assert!(
        text.contains("greeting.txt") && text.contains("+hello"),
        "{diff}"
    );
    let transcript = get(&base, &token, &format!("/api/tasks/{id}/transcript")).await;
    let allowed = |tool: &str| {
        transcript["entries"].as_array().unwrap().iter().any(|e| {
            let e = e.to_string();
            e.contains("\"permission\"")
                && e.contains(&format!("\"tool\":\"{tool}\""))
                && e.contains("\"allowed\":true")
        })
    };
    assert!(
        allowed("Write") && allowed("Bash"),
        "Gemini asked before writing and running, and was allowed: {transcript:#}"
    );

    // The reviewer asks for changes; the agent makes them in the same session.
    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/review"),
        json!({"action": "changes", "feedback": "Greet the whole world."}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_task_loaded(&base, &token, &id, "review-fixed", &world).await;
    let in_review = wait_task_state(&base, &token, &id, "review").await;
    assert_eq!(in_review["session_id"], session.as_str());
    // Loaded a second time: Gemini still has the whole history.
    let reviewing = request_for(&world, "review-fix");
    assert!(
        reviewing.contains("Greet the whole world.") && reviewing.contains("The checks pass now."),
        "{reviewing}"
    );

    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/review"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let merged = wait_task_state(&base, &token, &id, "merged").await;
    assert_eq!(merged["session_id"], session.as_str());
    assert_eq!(
        world.repo.git(&["show", "main:greeting.txt"]),
        "hello, world\n"
    );
    assert_eq!(world.repo.git(&["show", "main:fixed.txt"]), "");
    let rules = world.rules();
    assert!(
        !rules.contains(&"<none>".to_owned()),
        "every model call was scripted: {rules:?}"
    );
}

/// A long job whose second main model call is slow, so the server can be killed
/// mid-turn after a command has completed (Gemini has recorded it in its chat file).
const LONG_JOB: &str = r##"
rules:
  - name: router
    match: {has_tools: false, system_contains: "complexity"}
    reply:
      - text: '{"complexity_reasoning": "A small job.", "complexity_score": 10}'
  - name: relaunched
    match: {user_contains: "mainloop restarted", has_tools: true}
    reply:
      - tool_use: {name: run_shell_command, input: {command: "printf 'done\\n' > result.txt", description: "Finish"}}
  - name: first-step
    match: {user_contains: "long job", has_tools: true, times: 1}
    reply:
      - tool_use: {name: run_shell_command, input: {command: "echo step one", description: "Start"}}
  - name: slow-work
    match: {tool_result_for: run_shell_command, tool_result_contains: "step one", times: 1}
    delay_ms: 3000
    reply:
      - text: "Step one is done; now a long piece of work: step two, step three, step four."
  - name: started-again
    match: {user_contains: "long job", has_tools: true}
    reply:
      - tool_use: {name: run_shell_command, input: {command: "printf 'done\\n' > result.txt", description: "Finish"}}
  - name: finish
    match: {tool_result_for: run_shell_command}
    reply: [{text: "Finished after the restart."}]
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_killed_mid_implementation_resumes_the_same_session() {
    let Some(world) = AgentWorld::new(Cli::Gemini, LONG_JOB).await else {
        return;
    };
    let (server, _first_log) = world.start();
    let token = server.token.clone().unwrap();
    let (status, created) = post(
        &server.base,
        &token,
        "/api/tasks",
        json!({"description": "long job", "repo": world.repo.path(), "skip_plan": true}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    wait_rule(&world.fake, "slow-work").await;
    let before = task(&server.base, &token, &id).await;
    assert_eq!(before["state"], "implementing", "{before:#}");
    let session = before["session_id"].as_str().unwrap().to_owned();
    assert!(
        chat_file_of(&world.data.0, &session).is_some(),
        "no Gemini chat file for session {session}"
    );
    let record = std::fs::read_to_string(world.data.0.join("agents").join(&id)).unwrap();
    let orphan: u32 = record.split_whitespace().next().unwrap().parse().unwrap();
    server.sigkill();
    let path = std::env::var_os("PATH");
    if mainloop_sandbox::which("bwrap", path.as_deref()).is_some() {
        wait_for("the sandboxed agent to die with the server", || async {
            (!alive(orphan)).then_some(())
        })
        .await;
    } else {
        assert!(alive(orphan), "the agent outlived the server");
    }

    // Gemini's loads wait for the minute its chat file is named by to turn: up to a
    // minute more than the rest of the run.
    let (server, _log) = world.start();
    let done = wait_for_within(Duration::from_secs(180), "the task to finish", || async {
        let t = task(&server.base, &token, &id).await;
        (t["state"] == "review" || t["state"] == "failed").then_some(t)
    })
    .await;
    assert_eq!(done["state"], "review", "{done:#}");
    assert!(
        !alive(orphan),
        "the restarted server stopped the orphaned agent"
    );
    assert_eq!(
        done["session_id"],
        session.as_str(),
        "the same session was resumed"
    );
    let rules = world.rules();
    // The session was saved (a command had completed), so it is loaded and told to
    // continue rather than given the task again.
    assert!(rules.contains(&"relaunched".to_owned()), "{rules:?}");
    assert!(!rules.contains(&"started-again".to_owned()), "{rules:?}");
    let resumed = request_for(&world, "relaunched");
    assert!(
        resumed.contains("long job") && resumed.contains("step one"),
        "the resumed turn lacks the earlier history: {resumed}"
    );
    let diff = get(&server.base, &token, &format!("/api/tasks/{id}/diff")).await;
    assert!(diff["text"].as_str().unwrap().contains("+done"), "{diff}");
    // The resumed run's process ends with its turn too: nothing is left running.
    let record = world.data.0.join("agents").join(&id);
    wait_for("the resumed agent to be gone", || async {
        let pid = std::fs::read_to_string(&record)
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok());
        pid.is_none_or(|pid| !alive(pid)).then_some(())
    })
    .await;
}

//! Tasks run by Codex (the real pinned `codex app-server` against the fake model's
//! Responses API), driven through the HTTP API like the web app does: the by-turn
//! lifecycle from a question to the merge, and a SIGKILL of the server mid-turn that
//! resumes Codex's own thread.

use super::*;
use crate::agent_world::{AgentWorld, Cli};

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

/// The Claude restart test's long job, in Codex's tools.
const LONG_JOB: &str = r#"
rules:
  - name: relaunched
    match: {user_contains: "mainloop restarted"}
    reply:
      - tool_use: {name: exec_command, input: {cmd: "printf 'done\\n' > result.txt"}}
  - name: first-step
    match: {user_contains: "long job", times: 1}
    reply:
      - tool_use: {name: exec_command, input: {cmd: "echo step-$((1+1))-started"}}
  - name: slow-work
    match: {tool_result_for: exec_command, tool_result_contains: "step-2-started", times: 1}
    delay_ms: 3000
    reply:
      - text: "Step one is done; now a long piece of work: step two, step three, step four."
  - name: started-again
    match: {user_contains: "long job"}
    reply:
      - tool_use: {name: exec_command, input: {cmd: "printf 'done\\n' > result.txt"}}
  - name: finish
    match: {tool_result_for: exec_command}
    reply: [{text: "Finished after the restart."}]
"#;

/// The rules before `shared`'s, as one script.
fn in_front(rules: &str, shared: &str) -> String {
    let shared = shared
        .split_once("\nrules:\n")
        .map_or(shared, |(_, list)| list);
    format!("{}\n{shared}", rules.trim_end())
}

async fn task(base: &str, token: &str, id: &str) -> Value {
    get(base, token, &format!("/api/tasks/{id}")).await
}

/// Waits for `state` with `field` holding `needle` (a state reached again, e.g. a
/// revised plan's review).
async fn wait_task_with(
    base: &str,
    token: &str,
    id: &str,
    (state, field, needle): (&str, &str, &str),
) -> Value {
    wait_for(
        format!("task {id} in {state} with {field} holding {needle:?}"),
        || async {
            let t = task(base, token, id).await;
            assert_ne!(t["state"], "failed", "{t}");
            (t["state"] == state && t[field].as_str().is_some_and(|s| s.contains(needle)))
                .then_some(t)
        },
    )
    .await
}

/// Codex's rollout file for thread `id` under `dir`: proof that the id is Codex's own.
fn rollout_of(dir: &Path, id: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        let file_type = entry.file_type().ok()?;
        if file_type.is_dir() {
            if let Some(found) = rollout_of(&path, id) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with("rollout-") && n.contains(id)
        }) {
            return Some(path);
        }
    }
    None
}

/// The first request the fake answered with `rule`, as JSON text.
fn request_of(world: &AgentWorld, rule: &str) -> String {
    world
        .fake
        .message_requests()
        .into_iter()
        .find(|r| r.rule_name.as_deref() == Some(rule))
        .unwrap_or_else(|| panic!("no request answered by {rule}: {:?}", world.rules()))
        .body
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_question_plan_revise_approve_checks_review_and_merge() {
    let started = std::time::Instant::now();
    let Some(world) = AgentWorld::new(Cli::Codex, &in_front(ASK, GREETER)).await else {
        return;
    };
    std::fs::write(
        world.repo.path().join(".mainloop.toml"),
        "check = \"test -f fixed.txt || { echo 'greeter check: fixed.txt is missing'; exit 1; }\"\n",
    )
    .unwrap();
    world.repo.git(&["add", "-A"]);
    world.repo.git(&["commit", "-q", "-m", "checks"]);
    let (server, _log) = world.start();
    let token = server.token.clone().unwrap();
    let base = server.base.clone();

    let (status, created) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "build the greeter", "repo": world.repo.path(), "agent": "codex"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["agent"], "codex", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    // The planning turn's questions block asks.
    let asking = wait_task_state(&base, &token, &id, "waiting_answers").await;
    let question = &asking["questions"][0];
    assert_eq!(
        question["question"], "Which language should the greeter use?",
        "{asking}"
    );
    assert_eq!(question["header"], "Language");
    assert_eq!(question["options"][0]["label"], "Rust");
    assert_eq!(question["options"][1]["description"], "simple");
    let session = asking["session_id"].as_str().unwrap().to_owned();
    // The process that asked waits with the task.
    let agent_pid = || std::fs::read_to_string(world.data.0.join("agents").join(&id)).unwrap();
    let asked_by = agent_pid();
    // Codex's own thread id, with its rollout in the task's home (removed once merged).
    assert!(
        rollout_of(&world.data.0, &session).is_some(),
        "{session} is a Codex thread id with a rollout under the data directory"
    );
    let inbox = get(&base, &token, "/api/inbox").await;
    let item = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "question" && i["task_id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no question in the inbox: {inbox:#}"));
    assert!(
        item.to_string()
            .contains("Which language should the greeter use?"),
        "{item:#}"
    );

    // Answered: the same thread, still read-only, plans.
    let qid = question["id"].as_str().unwrap();
    let (status, t) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/answers"),
        json!({"answers": {qid: ["Rust"]}}),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    let planned = wait_task_state(&base, &token, &id, "waiting_plan_review").await;
    assert!(
        planned["plan"]
            .as_str()
            .unwrap()
            .contains("A greeter in Rust."),
        "{planned}"
    );
    let answered = request_of(&world, "answered");
    assert!(
        answered.contains("Which language should the greeter use?") && answered.contains("Rust"),
        "{answered}"
    );
    assert!(
        answered.contains("build the greeter"),
        "the resumed thread carried its history: {answered}"
    );

    // Revised in the same thread.
    let (status, t) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/plan"),
        json!({"action": "revise", "feedback": "add tests"}),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    let revised = wait_task_with(
        &base,
        &token,
        &id,
        ("waiting_plan_review", "plan", "revised"),
    )
    .await;
    assert!(
        revised["plan"].as_str().unwrap().contains("with tests"),
        "{revised}"
    );
    let revise = request_of(&world, "revise");
    assert!(revise.contains("add tests"), "{revise}");
    assert!(
        revise.contains("One thing first."),
        "the revision saw the earlier turns: {revise}"
    );

    // Approved: implemented through the permission policy; the check fails once.
    let (status, t) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/plan"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    wait_rule(&world.fake, "approved").await;
    assert_eq!(
        agent_pid(),
        asked_by,
        "the process that planned implements: its sandbox changed on its next turn"
    );
    let review = wait_task_state(&base, &token, &id, "review").await;
    let rules = world.rules();
    let fixes = rules.iter().filter(|r| *r == "fix-checks").count();
    assert_eq!(fixes, 1, "one failed check round, then green: {rules:?}");
    for rule in ["approved", "write-greeting", "fix-checks"] {
        assert!(rules.contains(&rule.to_owned()), "{rule}: {rules:?}");
    }
    let fix = request_of(&world, "fix-checks");
    assert!(
        fix.contains("fixed.txt is missing"),
        "the check's output: {fix}"
    );
    let diff = get(&base, &token, &format!("/api/tasks/{id}/diff")).await;
    assert!(diff["files"].to_string().contains("greeting.txt"), "{diff}");
    assert!(diff["files"].to_string().contains("fixed.txt"), "{diff}");

    // Changes requested, made, checked again; then approved and merged.
    let (status, t) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/review"),
        json!({"action": "changes", "feedback": "Make it friendlier."}),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    wait_rule(&world.fake, "review-fix").await;
    let reviewed = wait_task_state(&base, &token, &id, "review").await;
    assert!(
        request_of(&world, "review-fix").contains("Make it friendlier."),
        "the feedback reached the model"
    );
    let (status, t) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/review"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    let merged = wait_task_state(&base, &token, &id, "merged").await;
    assert_eq!(
        world.repo.git(&["show", "main:greeting.txt"]),
        "hello, reviewed\n"
    );

    // One Codex thread throughout, resumed by its own id.
    for t in [&planned, &revised, &review, &reviewed, &merged] {
        assert_eq!(t["session_id"], session.as_str(), "{t}");
    }
    let transcript = get(
        &base,
        &token,
        &format!("/api/tasks/{id}/transcript?limit=1000"),
    )
    .await;
    let text = transcript.to_string();
    assert!(text.contains("greeting.txt"), "{transcript:#}");
    drop(server);
    eprintln!(
        "codex journey: {:.1}s, rules {:?}",
        started.elapsed().as_secs_f64(),
        world.rules()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_killed_mid_implementation_resumes_the_same_session() {
    let started = std::time::Instant::now();
    let Some(world) = AgentWorld::new(Cli::Codex, &in_front(LONG_JOB, GREETER)).await else {
        return;
    };
    let (server, _log) = world.start();
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

    // Killed while the model is mid-reply, after a command completed (the thread is
    // saved).
    wait_for("the model's rule slow-work to be used", || async {
        let t = task(&server.base, &token, &id).await;
        assert_ne!(t["state"], "failed", "{t} {:?}", world.rules());
        world
            .rules()
            .contains(&"slow-work".to_owned())
            .then_some(())
    })
    .await;
    let before = task(&server.base, &token, &id).await;
    assert_eq!(before["state"], "implementing", "{before}");
    let session = before["session_id"].as_str().unwrap().to_owned();
    let record = std::fs::read_to_string(world.data.0.join("agents").join(&id)).unwrap();
    let orphan: u32 = record.split_whitespace().next().unwrap().parse().unwrap();
    server.sigkill();
    let path = std::env::var_os("PATH");
    if mainloop_sandbox::which("bwrap", path.as_deref()).is_some() {
        wait_for("the sandboxed agent to die with the server", || async {
            (!alive(orphan)).then_some(())
        })
        .await;
    }

    let (server, _log2) = world.start();
    let done = wait_for("the task to finish", || async {
        let t = task(&server.base, &token, &id).await;
        (t["state"] == "review" || t["state"] == "failed").then_some(t)
    })
    .await;
    assert_eq!(done["state"], "review", "{done} {:?}", world.rules());
    assert!(!alive(orphan), "no agent of the first server is left");
    assert_eq!(done["session_id"], session.as_str(), "the same thread");
    assert!(
        rollout_of(&world.data.0, &session).is_some(),
        "{session} is Codex's thread id"
    );
    let rules = world.rules();
    assert!(rules.contains(&"relaunched".to_owned()), "{rules:?}");
    assert!(!rules.contains(&"started-again".to_owned()), "{rules:?}");
    let relaunched = request_of(&world, "relaunched");
    assert!(
        relaunched.contains("long job") && relaunched.contains("step-2-started"),
        "the resumed thread carried its history: {relaunched}"
    );
    let diff = get(&server.base, &token, &format!("/api/tasks/{id}/diff")).await;
    assert!(diff["text"].as_str().unwrap().contains("+done"), "{diff}");
    drop(server);
    eprintln!(
        "codex restart: {:.1}s, rules {rules:?}",
        started.elapsed().as_secs_f64()
    );
}

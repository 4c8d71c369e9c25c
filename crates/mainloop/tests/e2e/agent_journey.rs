//! The lifecycle every agent besides Claude Code goes through, driven through the HTTP
//! API like the web app does: a question, a plan revised and approved, implementation
//! with a failed check fed back, review and merge; and a SIGKILL of the server
//! mid-implementation that resumes the agent's own session. What differs between the
//! agents (their scripts' texts, their tools, how slow their resumes are) is data.

use super::*;
use crate::agent_world::{AgentWorld, request_for, task, wait_state_with};
use mainloop_test_support::TIMEOUT;

/// The task every journey is given.
pub(crate) const TASK: &str = "build the greeter";

/// The project's check: it fails, saying why, until the agent has made `fixed.txt`.
const CHECK: &str =
    "check = \"test -f fixed.txt || { echo 'greeter check: fixed.txt is missing'; exit 1; }\"\n";

/// The question the agent asks while planning, and the option the reviewer picks.
pub(crate) struct Question {
    pub text: &'static str,
    pub header: &'static str,
    /// Each option's label and description, in order.
    pub options: [(&'static str, &'static str); 2],
    /// The label answered.
    pub answer: &'static str,
}

/// What one agent's script says on the way from the question to the merge. Its rules
/// are named alike: `answered` plans, `revise` revises, `approved` starts implementing,
/// `fix-checks` and `review-fix` take the failed check and the reviewer's changes.
pub(crate) struct Journey {
    /// Whether a session id is the agent's own (it has the agent's record of it under
    /// the data directory, or its shape).
    pub own_session: fn(&Path, &str) -> bool,
    /// How long a turn may take to start: some agents reload their session first.
    pub turn_wait: Duration,
    /// The text before the agent's questions block.
    pub asks_with: &'static str,
    pub question: Question,
    /// A text only the first plan holds.
    pub plan: &'static str,
    pub revise_with: &'static str,
    /// Texts the revised plan holds.
    pub revised: &'static [&'static str],
    /// The rules besides `approved` and `fix-checks` that implementing and fixing use.
    pub implementing: &'static [&'static str],
    /// Texts from earlier turns the request to fix the checks holds.
    pub fix_has: &'static [&'static str],
    /// The tools the agent asks to use while implementing, allowed by the policy.
    pub asks_to_use: &'static [&'static str],
    pub changes_with: &'static str,
    /// The rules besides `review-fix` that making the reviewer's changes uses.
    pub reviewing: &'static [&'static str],
    /// Texts from earlier turns the request to make the reviewer's changes holds.
    pub review_has: &'static [&'static str],
    /// Files on main after the merge, with their content.
    pub merged: &'static [(&'static str, &'static str)],
}

/// The journey the ACP agents' scripts (`opencode-journey`, `gemini-journey`) play,
/// with what is each agent's own.
pub(crate) const fn acp_journey(
    own_session: fn(&Path, &str) -> bool,
    turn_wait: Duration,
) -> Journey {
    Journey {
        own_session,
        turn_wait,
        asks_with: "Before I plan, one thing matters",
        question: Question {
            text: "Which greeting should greeting.txt hold?",
            header: "Greeting",
            options: [("hello", "short and plain"), ("good day", "formal")],
            answer: "hello",
        },
        plan: "PLAN-MARK",
        revise_with: "Keep it to one line.",
        revised: &["REVISED-MARK"],
        implementing: &["implemented", "fixed"],
        fix_has: &["IMPLEMENTED-MARK"],
        asks_to_use: &["Write", "Bash"],
        changes_with: "Greet the whole world.",
        reviewing: &["review-fixed"],
        review_has: &["The checks pass now."],
        merged: &[("greeting.txt", "hello, world\n"), ("fixed.txt", "")],
    }
}

/// A server on `world`'s data, its log kept, and its address and token.
fn serve(world: &AgentWorld) -> (Server, crate::faults::ServerLog, String, String) {
    let (server, log) = world.start();
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    (server, log, base, token)
}

/// Posts `body` to the task's `action` and expects it taken.
async fn act(base: &str, token: &str, id: &str, action: &str, body: Value) {
    let (status, t) = post(base, token, &format!("/api/tasks/{id}/{action}"), body).await;
    assert_eq!(status, 200, "{action}: {t}");
}

/// Waits, within `within`, until the fake answered with `rule`, the task not failed.
async fn wait_rule_within(
    world: &AgentWorld,
    base: &str,
    token: &str,
    id: &str,
    rule: &str,
    within: Duration,
) {
    wait_for_within(within, format!("the model's rule {rule:?}"), || async {
        let t = task(base, token, id).await;
        assert_ne!(t["state"], "failed", "{t} {:?}", world.rules());
        world.rules().iter().any(|r| r == rule).then_some(())
    })
    .await;
}

/// Asserts that the request the fake answered with `rule` holds each of `texts`.
fn request_holds(world: &AgentWorld, rule: &str, texts: &[&str], why: &str) {
    let request = request_for(world, rule);
    for text in texts {
        assert!(
            request.contains(text),
            "{why}: {text:?} is not in {request}"
        );
    }
}

/// A task on `world`'s agent from its question to the merge, in one session
/// throughout.
pub(crate) async fn journey(world: &AgentWorld, expect: &Journey) {
    let started = std::time::Instant::now();
    let name = world.cli.name();
    std::fs::write(world.repo.path().join(".mainloop.toml"), CHECK).unwrap();
    world.repo.git(&["add", "-A"]);
    world.repo.git(&["commit", "-q", "-m", "checks"]);
    let (server, _log, base, token) = serve(world);
    let (base, token) = (base.as_str(), token.as_str());

    let (status, created) = post(
        base,
        token,
        "/api/tasks",
        json!({"description": TASK, "repo": world.repo.path(), "agent": name}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["agent"], name, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let id = id.as_str();

    // The agent asks, by the convention; the question reaches the task and the inbox.
    let asking = wait_task_state(base, token, id, "waiting_answers").await;
    let session = asking["session_id"].as_str().unwrap().to_owned();
    assert!(
        (expect.own_session)(&world.data.0, &session),
        "{session} is not {name}'s own session id"
    );
    // The process that asked waits with the task (no slot held).
    let agent_pid = || std::fs::read_to_string(world.data.0.join("agents").join(id)).unwrap();
    let asked_by = agent_pid();
    let q = &expect.question;
    let question = &asking["questions"][0];
    assert_eq!(question["question"], q.text, "{asking:#}");
    assert_eq!(question["header"], q.header, "{asking:#}");
    let options: Vec<(&str, &str)> = question["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["label"].as_str().unwrap(),
                o["description"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(options, q.options, "{asking:#}");
    let inbox = get(base, token, "/api/inbox").await;
    assert!(
        inbox["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["task_id"] == id
                && i["kind"] == "question"
                && i["body"].as_str().is_some_and(|b| b.contains(q.text))),
        "{inbox:#}"
    );

    // Answered: the same session, still read-only, plans with the earlier turn in view.
    let qid = question["id"].as_str().unwrap();
    act(
        base,
        token,
        id,
        "answers",
        json!({"answers": {qid: [q.answer]}}),
    )
    .await;
    let planned =
        wait_state_with(base, token, id, "waiting_plan_review", "plan", expect.plan).await;
    let history = [expect.asks_with, q.text, q.answer, TASK];
    request_holds(
        world,
        "answered",
        &history,
        "the answered turn carries its history",
    );

    // Revised in the same session.
    let revise = json!({"action": "revise", "feedback": expect.revise_with});
    act(base, token, id, "plan", revise).await;
    let revised = expect.revised[0];
    let revised = wait_state_with(base, token, id, "waiting_plan_review", "plan", revised).await;
    for text in expect.revised {
        assert!(
            revised["plan"].as_str().unwrap().contains(text),
            "{revised}"
        );
    }
    let history = [expect.revise_with, expect.asks_with, expect.plan];
    request_holds(
        world,
        "revise",
        &history,
        "the revision saw the earlier turns",
    );

    // Approved: implemented through the permission policy; the check fails once.
    act(base, token, id, "plan", json!({"action": "approve"})).await;
    wait_rule(&world.fake, "approved").await;
    assert_eq!(
        agent_pid(),
        asked_by,
        "the process that asked and planned implements: its mode switched mid-session"
    );
    wait_rule_within(world, base, token, id, "fix-checks", expect.turn_wait).await;
    let review = wait_task_state(base, token, id, "review").await;
    let rules = world.rules();
    let fixes = rules.iter().filter(|r| *r == "fix-checks").count();
    assert_eq!(fixes, 1, "one failed check round, then green: {rules:?}");
    for rule in ["approved"].iter().chain(expect.implementing) {
        assert!(rules.iter().any(|r| r == rule), "{rule}: {rules:?}");
    }
    let mut fix_has = vec!["The project's checks failed", "fixed.txt is missing"];
    fix_has.extend(expect.fix_has);
    request_holds(
        world,
        "fix-checks",
        &fix_has,
        "the check's output, after the history",
    );
    let diff = get(base, token, &format!("/api/tasks/{id}/diff")).await;
    let files = diff["files"].to_string();
    assert!(
        files.contains("greeting.txt") && files.contains("fixed.txt"),
        "{diff}"
    );
    assert!(diff["text"].as_str().unwrap().contains("+hello"), "{diff}");
    let transcript = get(
        base,
        token,
        &format!("/api/tasks/{id}/transcript?limit=1000"),
    )
    .await;
    assert!(
        transcript.to_string().contains("greeting.txt"),
        "{transcript:#}"
    );
    let allowed = |tool: &str| {
        transcript["entries"].as_array().unwrap().iter().any(|e| {
            let e = e.to_string();
            e.contains("\"permission\"")
                && e.contains(&format!("\"tool\":\"{tool}\""))
                && e.contains("\"allowed\":true")
        })
    };
    for tool in expect.asks_to_use {
        assert!(
            allowed(tool),
            "{name} asked to use {tool} and was allowed: {transcript:#}"
        );
    }

    // The reviewer asks for changes; the agent makes them in the same session.
    let changes = json!({"action": "changes", "feedback": expect.changes_with});
    act(base, token, id, "review", changes).await;
    wait_rule_within(world, base, token, id, "review-fix", expect.turn_wait).await;
    let reviewed = wait_task_state(base, token, id, "review").await;
    let rules = world.rules();
    for rule in expect.reviewing {
        assert!(rules.iter().any(|r| r == rule), "{rule}: {rules:?}");
    }
    let mut review_has = vec![expect.changes_with];
    review_has.extend(expect.review_has);
    request_holds(
        world,
        "review-fix",
        &review_has,
        "the feedback, after the history",
    );

    act(base, token, id, "review", json!({"action": "approve"})).await;
    let merged = wait_task_state(base, token, id, "merged").await;
    for (file, content) in expect.merged {
        assert_eq!(
            world.repo.git(&["show", &format!("main:{file}")]),
            *content,
            "{file}"
        );
    }
    world.repo.git(&["cat-file", "-e", "main:fixed.txt"]);

    // One session throughout, resumed by its own id.
    for t in [&planned, &revised, &review, &reviewed, &merged] {
        assert_eq!(t["session_id"], session.as_str(), "{t}");
    }
    let rules = world.rules();
    assert!(
        !rules.iter().any(|r| r == "<none>"),
        "every model call was scripted: {rules:?}"
    );
    drop(server);
    let took = started.elapsed().as_secs_f64();
    eprintln!("{name} journey: {took:.1}s, rules {rules:?}");
}

/// How an agent runs a command, for the long job's script.
pub(crate) struct Shell {
    /// The shell tool's name.
    pub tool: &'static str,
    /// The `input` of a call to it, `CMD` standing for the quoted command.
    pub input: &'static str,
    /// What the matches on the task's own messages add (to keep the agent's side
    /// calls off them).
    pub main_match: &'static str,
    /// Rules for the agent's side calls (titles, routing), first.
    pub side_rules: &'static str,
}

/// The long job: a command, then a slow reply to its output, so the server can be
/// killed mid-turn after a command has completed (the agent has saved its session);
/// resumed, it is told to continue (`relaunched`) rather than given the task again
/// (`started-again`). The step's marker is `printf`'s, so only the command's
/// output carries it (Gemini refuses commands with `$(`).
pub(crate) fn long_job(shell: &Shell) -> String {
    let call = |cmd: &str| {
        let input = shell.input.replace("CMD", &format!("{cmd:?}"));
        format!("      - tool_use: {{name: {}, input: {input}}}", shell.tool)
    };
    let (tool, main) = (shell.tool, shell.main_match);
    let (step, finish) = (
        call("printf step-%s-started 2"),
        call("printf 'done\\n' > result.txt"),
    );
    format!(
        "rules:\n{side}\n\
         \x20 - name: relaunched\n    match: {{user_contains: \"mainloop restarted\"{main}}}\n    reply:\n{finish}\n\
         \x20 - name: first-step\n    match: {{user_contains: \"long job\"{main}, times: 1}}\n    reply:\n{step}\n\
         \x20 - name: slow-work\n    match: {{tool_result_for: {tool}, tool_result_contains: \"step-2-started\", times: 1}}\n\
         \x20   delay_ms: 3000\n    reply:\n\
         \x20     - text: \"Step one is done; now a long piece of work: step two, step three.\"\n\
         \x20 - name: started-again\n    match: {{user_contains: \"long job\"{main}}}\n    reply:\n{finish}\n\
         \x20 - name: finish\n    match: {{tool_result_for: {tool}}}\n    reply: [{{text: \"Finished after the restart.\"}}]\n",
        side = shell.side_rules.trim_end(),
    )
}

/// What differs between agents in the SIGKILL test.
pub(crate) struct Kill {
    pub own_session: fn(&Path, &str) -> bool,
    /// How long the task may take to finish after the restart.
    pub resume_wait: Duration,
    /// Whether an agent that is not sandboxed outlives the killed server (one that
    /// reads its requests from the server's pipe may end with it instead).
    pub outlives_unsandboxed: bool,
}

/// A skip-plan "long job" on `world`'s agent (its script built by [`long_job`]): the
/// server is killed mid-turn, and the restarted server resumes the same session,
/// leaving no agent process behind.
pub(crate) async fn killed_mid_implementation(world: &AgentWorld, expect: &Kill) {
    let started = std::time::Instant::now();
    let name = world.cli.name();
    let (server, _first_log, base, token) = serve(world);
    let body = json!({"description": "long job", "repo": world.repo.path(), "skip_plan": true});
    let (status, created) = post(&base, &token, "/api/tasks", body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    wait_rule_within(world, &base, &token, &id, "slow-work", TIMEOUT).await;
    let before = task(&base, &token, &id).await;
    assert_eq!(before["state"], "implementing", "{before:#}");
    let session = before["session_id"].as_str().unwrap().to_owned();
    assert!(
        (expect.own_session)(&world.data.0, &session),
        "{session} is not {name}'s own session id"
    );
    let record = world.data.0.join("agents").join(&id);
    let orphan = std::fs::read_to_string(&record).unwrap();
    let orphan: u32 = orphan.split_whitespace().next().unwrap().parse().unwrap();
    sigkill(server, orphan, expect.outlives_unsandboxed).await;

    // The restarted server keeps the first one's token.
    let (server, _log) = world.start();
    let base = server.base.clone();
    let done = wait_for_within(expect.resume_wait, "the task to finish", || async {
        let t = task(&base, &token, &id).await;
        (t["state"] == "review" || t["state"] == "failed").then_some(t)
    })
    .await;
    assert_eq!(done["state"], "review", "{done:#} {:?}", world.rules());
    assert!(
        !alive(orphan),
        "the restarted server stopped the orphaned agent"
    );
    assert_eq!(
        done["session_id"],
        session.as_str(),
        "the same session was resumed"
    );
    assert!(
        (expect.own_session)(&world.data.0, &session),
        "{session} is still {name}'s own session id"
    );
    let rules = world.rules();
    // The session was saved (a command had completed), so it is resumed and told to
    // continue rather than given the task again.
    assert!(rules.iter().any(|r| r == "relaunched"), "{rules:?}");
    assert!(!rules.iter().any(|r| r == "started-again"), "{rules:?}");
    let history = ["long job", "step-2-started"];
    request_holds(
        world,
        "relaunched",
        &history,
        "the resumed turn carries its history",
    );
    let diff = get(&base, &token, &format!("/api/tasks/{id}/diff")).await;
    assert!(diff["text"].as_str().unwrap().contains("+done"), "{diff}");
    // The resumed run's process ends with its turn too: nothing is left running.
    wait_for("the resumed agent to be gone", || async {
        let pid = std::fs::read_to_string(&record)
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok());
        pid.is_none_or(|pid| !alive(pid)).then_some(())
    })
    .await;
    drop(server);
    let took = started.elapsed().as_secs_f64();
    eprintln!("{name} restart: {took:.1}s, rules {rules:?}");
}

/// Kills the server with SIGKILL, and waits for its agent `orphan` to die with it when
/// sandboxed; unsandboxed, an agent that `outlives` the server must still be running.
pub(crate) async fn sigkill(server: Server, orphan: u32, outlives: bool) {
    server.sigkill();
    let path = std::env::var_os("PATH");
    if mainloop_sandbox::which("bwrap", path.as_deref()).is_some() {
        // bubblewrap's --die-with-parent: nothing is left running unsupervised.
        wait_for("the sandboxed agent to die with the server", || async {
            (!alive(orphan)).then_some(())
        })
        .await;
    } else if outlives {
        // The restarted server must reap it.
        assert!(alive(orphan), "the agent outlived the server");
    }
}

//! Task environments with the real `claude` against the fake model: a repository whose
//! `.mainloop.toml` declares `setup`, `copy`, `env` and `ports`; the agent's one command
//! prints the installed dependency, the copied `.env`, the variable and its two ports,
//! and the model's next rule matches only a tool result holding all of them — so the
//! agent saw them. Two tasks hold different ports. A hostile `copy` fails its task with
//! the reason, and the file outside the repository stays as it was. A failing setup
//! fails its task with its output and no agent starts; a retry runs it again; malformed
//! TOML is refused naming the file. Without `workers.task_database_url`, a task's
//! database lives on mainloop's own PostgreSQL, owned by the task's role, and goes at
//! merge.

use super::*;
use crate::faults::spawn_logged;

const SCRIPT: &str = r#"
rules:
  - name: saw-env
    match: {tool_result_for: Bash, tool_result_contains: "DEP=installed-dep ENV=SECRET=from-main APP=e2e PORTS=2"}
    reply: [{text: "I saw the environment."}]
  - name: blind
    match: {tool_result_for: Bash}
    reply: [{text: "Something was missing."}]
  - name: show-env
    match: {user_contains: "show the environment"}
    reply:
      - tool_use:
          name: Bash
          input:
            command: "printf 'DEP=%s ENV=%s APP=%s PORTS=%s,%s\\n' \"$(cat deps/dep.txt)\" \"$(cat .env)\" \"$APP_MODE\" \"$PORT\" \"$PORT_1\" | tee seen.txt"
            description: "Show the environment"
"#;

const SPEC: &str = r#"setup = ["mkdir -p deps && printf 'installed-dep' > deps/dep.txt"]
copy = [".env"]
ports = 2

[env]
APP_MODE = "e2e"
"#;

/// A repository whose second commit adds `files`.
fn committed(files: &[(&str, &str)]) -> GitRepo {
    let repo = GitRepo::new();
    for (path, text) in files {
        std::fs::write(repo.path().join(path), text).unwrap();
    }
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "the environment"]);
    repo
}

async fn create(base: &str, token: &str, repo: &Path, what: &str) -> String {
    let body = json!({"description": what, "repo": repo, "skip_plan": true});
    let (status, created) = post(base, token, "/api/tasks", body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// The two ports the agent printed in the task whose prompt holds `what`.
fn printed_ports(fake: &FakeAnthropic, what: &str) -> (u16, u16) {
    let body = fake
        .message_requests()
        .into_iter()
        .filter(|r| r.rule_name.as_deref() == Some("saw-env"))
        .map(|r| r.body.to_string())
        .find(|b| b.contains(what))
        .unwrap_or_else(|| panic!("no saw-env request for {what:?}"));
    let at = body.find("APP=e2e PORTS=").unwrap() + "APP=e2e PORTS=".len();
    let digits: String = body[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .collect();
    let (a, b) = digits.split_once(',').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_sees_its_setup_copied_files_variables_and_own_ports() {
    let Some(claude) = claude_path() else { return };
    let fake = FakeAnthropic::start(Script::from_yaml(SCRIPT).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = committed(&[(".mainloop.toml", SPEC), (".gitignore", ".env\ndeps/\n")]);
    // Untracked in the main checkout: only `copy` brings it into a worktree.
    std::fs::write(repo.path().join(".env"), "SECRET=from-main").unwrap();

    // A second repository asks to copy from beside itself, where a file lies.
    let outer = tempfile::tempdir().unwrap();
    let hostile = std::fs::canonicalize(outer.path()).unwrap().join("proj");
    std::fs::create_dir(&hostile).unwrap();
    let outside = hostile.parent().unwrap().join("outside");
    std::fs::write(&outside, "untouched\n").unwrap();
    std::fs::write(
        hostile.join(".mainloop.toml"),
        "copy = [\"../outside\"]\nsetup = [\"echo should-not-run > ../outside\"]\n",
    )
    .unwrap();
    git(&hostile, &["init", "-q", "-b", "main"]);
    git(&hostile, &["add", "-A"]);
    git(&hostile, &["commit", "-q", "-m", "hostile"]);

    let (server, _log) = spawn_logged(worker_command(data.path(), &fake, &claude), data.path());
    let (base, token) = (server.base.as_str(), server.token.clone().unwrap());
    let token = token.as_str();

    let one = create(base, token, repo.path(), "show the environment one").await;
    let two = create(base, token, repo.path(), "show the environment two").await;
    let bad = create(base, token, &hostile, "show the environment hostile").await;

    let failed = wait_task_state(base, token, &bad, "failed").await;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`copy`") && error.contains("..") && error.contains(".mainloop.toml"),
        "{failed:#}"
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched\n");

    wait_for("both tasks' agents to see their environment", || async {
        for id in [&one, &two] {
            let t = get(base, token, &format!("/api/tasks/{id}")).await;
            assert_ne!(t["state"], "failed", "{t:#}");
        }
        let rules: Vec<_> = fake
            .message_requests()
            .into_iter()
            .filter_map(|r| r.rule_name)
            .collect();
        assert!(!rules.iter().any(|r| r == "blind"), "{rules:?}");
        (rules.iter().filter(|r| *r == "saw-env").count() == 2).then_some(())
    })
    .await;
    let (a, b) = (
        printed_ports(&fake, "environment one"),
        printed_ports(&fake, "environment two"),
    );
    let all = [a.0, a.1, b.0, b.1];
    for (i, p) in all.iter().enumerate() {
        assert!((20000..=29999).contains(p), "{all:?}");
        assert!(!all[i + 1..].contains(p), "a port is shared: {all:?}");
    }
    drop(server);
}

const SETUP_SCRIPT: &str = r#"
rules:
  - name: set-up
    match: {user_contains: "after the setup", tool_offered: Bash}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'ok\\n' > work.txt", description: "Do the work"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done."}]
"#;

/// The setup fails the first time (its output says why) and passes the second: the
/// file it leaves lives in the worktree, which a retry keeps.
const FLAKY_SETUP: &str = r#"setup = ["if [ -f .tried ]; then echo second-try-passed; else touch .tried; echo broke-on-purpose; exit 3; fi"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_fails_its_task_with_its_output_and_a_retry_runs_it_again() {
    let Some(claude) = claude_path() else { return };
    let fake = FakeAnthropic::start(Script::from_yaml(SETUP_SCRIPT).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let flaky = committed(&[(".mainloop.toml", FLAKY_SETUP), (".gitignore", ".tried\n")]);
    // Malformed TOML: refused with the file's name, and no agent starts.
    let malformed = committed(&[(".mainloop.toml", "setup = [\"unclosed\n")]);

    let (server, _log) = spawn_logged(worker_command(data.path(), &fake, &claude), data.path());
    let (base, token) = (server.base.as_str(), server.token.clone().unwrap());
    let token = token.as_str();

    let bad = create(base, token, malformed.path(), "after the setup (malformed)").await;
    let id = create(base, token, flaky.path(), "after the setup (flaky)").await;

    let refused = wait_task_state(base, token, &bad, "failed").await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains(".mainloop.toml")),
        "{refused:#}"
    );

    let failed = wait_task_state(base, token, &id, "failed").await;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("setup failed (exit 3)") && error.contains("broke-on-purpose"),
        "{failed:#}"
    );
    assert!(
        crate::github::transcript_text(base, token, &id)
            .await
            .contains("broke-on-purpose"),
        "the failed setup's output is in the transcript"
    );
    assert!(
        fake.message_requests()
            .iter()
            .all(|r| r.rule_name.as_deref() != Some("set-up")),
        "an agent started although its setup failed"
    );

    let (status, body) = post(base, token, &format!("/api/tasks/{id}/retry"), json!(null)).await;
    assert_eq!(status, 200, "{body}");
    wait_task_state(base, token, &id, "review").await;
    assert!(
        fake.message_requests()
            .iter()
            .any(|r| r.rule_name.as_deref() == Some("set-up")
                && r.body.to_string().contains("flaky")),
        "the agent started after the retried setup"
    );
    assert!(
        crate::github::transcript_text(base, token, &id)
            .await
            .contains("second-try-passed")
    );
    drop(server);
}

const DB_SCRIPT: &str = r#"
rules:
  - name: saw-db
    match: {tool_result_for: Bash, tool_result_contains: "DB=mainloop_task_"}
    reply: [{text: "The database answers."}]
  - name: no-db
    match: {tool_result_for: Bash}
    reply: [{text: "No database."}]
  - name: query
    match: {user_contains: "use the database", tool_offered: Bash}
    reply:
      - tool_use:
          name: Bash
          input:
            command: "psql \"$DATABASE_URL\" -Atc \"create table t (x int); insert into t values (7); select 'DB=' || current_database() || ' AS=' || current_user || ' X=' || sum(x) from t\" 2>&1; printf 'URL=%s\\n' \"$DATABASE_URL\" > url.txt; echo used > used.txt"
            description: "Use the database"
"#;

/// Stops mainloop's own cluster for `data` (taking over a server a killed mainloop left)
/// and removes it, whatever the test did.
pub(super) struct ClusterGuard(pub(super) PathBuf);

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if self.0.join("data").is_dir()
            && let Ok(cluster) = mainloop_pgcluster::LocalCluster::start(&self.0)
        {
            let _ = cluster.stop();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_server_a_task_database_lives_on_mainloops_own_postgres() {
    let Some(claude) = claude_path() else { return };
    if mainloop_pgcluster::Binaries::find().is_err() {
        eprintln!("skipped: PostgreSQL is not installed");
        return;
    }
    let fake = FakeAnthropic::start(Script::from_yaml(DB_SCRIPT).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let _cluster = ClusterGuard(mainloop_pgcluster::LocalCluster::dir_for(data.path()));
    let repo = committed(&[
        (".mainloop.toml", "database = \"postgres\"\n"),
        (".gitignore", "url.txt\n"),
    ]);

    let mut cmd = worker_command(data.path(), &fake, &claude);
    cmd.env_remove("MAINLOOP_WORKERS__TASK_DATABASE_URL");
    let (server, _log) = spawn_logged(cmd, data.path());
    let (base, token) = (server.base.as_str(), server.token.clone().unwrap());
    let token = token.as_str();

    let id = create(base, token, repo.path(), "use the database").await;
    wait_for("the agent to use its database", || async {
        let t = get(base, token, &format!("/api/tasks/{id}")).await;
        assert_ne!(t["state"], "failed", "{t:#}");
        let rules: Vec<_> = fake
            .message_requests()
            .into_iter()
            .filter_map(|r| r.rule_name)
            .collect();
        assert!(
            !rules.iter().any(|r| r == "no-db"),
            "{:#?}",
            fake.message_requests().last().map(|r| r.body.to_string())
        );
        rules.iter().any(|r| r == "saw-db").then_some(())
    })
    .await;
    let seen = fake
        .message_requests()
        .into_iter()
        .find(|r| r.rule_name.as_deref() == Some("saw-db"))
        .unwrap()
        .body
        .to_string();
    // The task's own role owns its own database, and the table is the task's.
    let short = &id.replace('-', "")[24..];
    assert!(
        seen.contains(&format!(
            "DB=mainloop_task_{short} AS=mainloop_task_{short} X=7"
        )),
        "{seen}"
    );
    let worktree = get(base, token, &format!("/api/tasks/{id}")).await["worktree"]
        .as_str()
        .map(PathBuf::from)
        .unwrap();
    let url = std::fs::read_to_string(worktree.join("url.txt")).unwrap();
    let url = url.trim().strip_prefix("URL=").unwrap().to_owned();
    assert!(url.starts_with("postgres://mainloop_task_"), "{url}");

    // Merging ends the task: its database and role are dropped at once.
    wait_task_state(base, token, &id, "review").await;
    let (status, body) = post(
        base,
        token,
        &format!("/api/tasks/{id}/review"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_task_state(base, token, &id, "merged").await;
    wait_for("the task's database to be dropped", || async {
        <sqlx::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    drop(server);
}

//! The command-line client (`mainloop login`, `chat`, `tasks`, `task`, `answer`, `plan`,
//! `review`, `cancel`, `retry`, `new`, `inbox`) run as a user runs it, against a real
//! server: its output, its `--json`, its exit codes, and the stored login.

use super::super::faults::git_repo;
use super::super::*;
use std::os::unix::fs::PermissionsExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Rules of these tests' own, put in front of the shared greeter.
const RULES: &str = r#"
rules:
  - name: story
    match: {user_contains: "tell me a story"}
    delay_ms: 3000
    reply: [{text: "Once upon a time, a loop ran forever and everyone was happy with it."}]
  - name: short
    match: {user_contains: "say hi"}
    reply: [{text: "Hi there."}]
"#;

/// A user's machine: its own home and config directory, nothing of the test's
/// environment.
pub(crate) struct User {
    home: tempfile::TempDir,
}

#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }

    #[track_caller]
    pub(crate) fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    /// Refused with exit code `code`, saying `says` on standard error.
    #[track_caller]
    pub(crate) fn refused(self, code: i32, says: &str) -> Self {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stderr.contains(says), "{self:?}");
        self
    }
}

impl User {
    pub(crate) fn new() -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn login_file(&self) -> PathBuf {
        self.home.path().join("cfg/mainloop/client.toml")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("cfg"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tokio::process::Command::from(cmd)
    }

    /// Runs `mainloop ARGS` with `input` on its standard input.
    async fn run_with(&self, args: &[&str], input: Option<&str>) -> Out {
        let mut cmd = self.command(args);
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = input {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.as_bytes()).await.unwrap();
        }
        let out = child.wait_with_output().await.unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub(crate) async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None).await
    }
}

/// The id of the newest task, through the client's own `--json`.
async fn newest_task(user: &User) -> Value {
    let out = user.run(&["tasks", "--json"]).await.ok();
    out.json()["tasks"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_logs_in_chats_streaming_and_exits_with_codes_scripts_rely_on() {
    let fake = FakeAnthropic::start(Script::from_yaml(RULES).unwrap().then(script("greeter")))
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), Some(&fake.base_url()));
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let user = User::new();

    // Not logged in: nothing to talk to, and the error says what to do.
    let out = user.run(&["tasks"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("mainloop login URL"), "{out:?}");

    // A wrong token is refused and nothing is stored.
    let out = user.run(&["login", &base, "--token", "mlt_wrong"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("refused"), "{out:?}");
    assert!(!user.login_file().exists());

    // The token from a pipe (no terminal): checked, stored privately, never printed.
    let out = user
        .run_with(&["login", &format!("{base}/")], Some(&format!("{token}\n")))
        .await
        .ok();
    assert!(out.stdout.contains("as owner"), "{out:?}");
    assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&user.login_file()), 0o600);
    assert_eq!(mode(user.login_file().parent().unwrap()), 0o700);
    let stored = std::fs::read_to_string(user.login_file()).unwrap();
    assert!(
        stored.contains(&token) && stored.contains(&format!("\"{base}\"")),
        "{stored}"
    );

    let out = user.run(&["tasks"]).await.ok();
    assert_eq!(out.stdout, "No tasks.\n");
    assert_eq!(
        user.run(&["tasks", "--json"]).await.ok().json(),
        json!({"tasks": []})
    );

    // One message, its reply streamed: the first piece is on the terminal while the
    // model is still writing the rest.
    let mut child = user
        .command(&["chat", "tell", "me", "a", "story"])
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let first = stdout.fill_buf().await.unwrap().to_vec();
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(!first.is_empty() && "Once upon a time".starts_with(&first[..first.len().min(16)]));
    let user_message = messages(&base, &token)
        .await
        .into_iter()
        .find(|m| m["role"] == "user")
        .unwrap();
    assert!(
        replies(&base, &token, user_message["id"].as_str().unwrap())
            .await
            .is_empty(),
        "the reply was still being written when its first piece was shown ({first:?})"
    );
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut rest)
        .await
        .unwrap();
    assert!(child.wait().await.unwrap().success());
    assert_eq!(
        rest,
        "Once upon a time, a loop ran forever and everyone was happy with it.\n"
    );

    // --json: the stored reply, one document.
    let reply = user.run(&["chat", "--json", "say hi"]).await.ok().json();
    assert_eq!(
        (reply["role"].as_str(), reply["text"].as_str()),
        (Some("assistant"), Some("Hi there."))
    );

    // The interactive session: history first, then each line sent and answered.
    let out = user.run_with(&["chat"], Some("say hi again\n")).await.ok();
    assert!(out.stdout.contains("you: tell me a story\n"), "{out:?}");
    assert!(out.stdout.contains("mainloop: Hi there.\n"), "{out:?}");
    assert_eq!(
        out.stdout.matches("Hi there.").count(),
        2,
        "history, then the new reply: {out:?}"
    );

    // A task in a directory that is no git repository fails; retried, it runs again.
    let not_a_repo = tempfile::tempdir().unwrap();
    let not_a_repo = std::fs::canonicalize(not_a_repo.path()).unwrap();
    let out = user
        .run(&[
            "new",
            "--repo",
            not_a_repo.to_str().unwrap(),
            "--skip-plan",
            "fix",
            "the",
            "bug",
        ])
        .await
        .ok();
    assert!(out.stdout.starts_with("Created task "), "{out:?}");
    let task = newest_task(&user).await;
    let id = task["id"].as_str().unwrap().to_owned();
    assert_eq!(task["description"], "fix the bug");
    assert_eq!(task["skip_plan"], true);
    let short = &id[id.len() - 8..];
    wait_task_state(&base, &token, &id, "failed").await;
    let out = user.run(&["inbox"]).await.ok();
    assert!(
        out.stdout.contains(short) && out.stdout.contains("failed"),
        "{out:?}"
    );
    assert_eq!(
        user.run(&["inbox", "--json"]).await.ok().json()["items"][0]["kind"],
        "failed"
    );

    // A wrong state: the server's reason, exit 1.
    let out = user.run(&["plan", short, "approve"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("wrong_state") && out.stderr.contains("mainloop task"),
        "{out:?}"
    );
    let out = user.run(&["answer", short]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not waiting for answers"), "{out:?}");

    let out = user.run(&["retry", &id]).await.ok();
    assert!(out.stdout.starts_with("Retrying."), "{out:?}");
    assert!(!out.stdout.contains("now failed"), "{out:?}");

    // Unknown ids: exit 3, whether a short id or a full one.
    let out = user.run(&["task", "abcdef12"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("mainloop tasks"), "{out:?}");
    let out = user
        .run(&["cancel", "01234567-89ab-7def-8123-456789abcdef"])
        .await;
    assert_eq!(out.code, 3, "{out:?}");

    // The agents the server can run, the default starred; a task naming one it cannot
    // run is refused with the list, exit 1.
    let out = user.run(&["agents"]).await.ok();
    assert!(
        out.stdout.contains("claude *") && out.stdout.contains("codex-app-server"),
        "{out:?}"
    );
    let agents = user.run(&["agents", "--json"]).await.ok().json();
    assert_eq!(agents["agents"][0]["name"], "claude", "{agents}");
    let repo = not_a_repo.to_str().unwrap();
    let out = user
        .run(&["new", "--repo", repo, "--agent", "nobody", "fix it"])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("claude, codex, gemini, opencode"),
        "{out:?}"
    );
    let task = user
        .run(&[
            "new", "--json", "--repo", repo, "--agent", "codex", "fix it",
        ])
        .await
        .ok()
        .json();
    assert_eq!(task["agent"], "codex", "{task}");

    // Usage errors: exit 2.
    assert_eq!(user.run(&["plan", short, "maybe"]).await.code, 2);
    assert_eq!(user.run(&["task", "zz-top"]).await.code, 2);

    // Flags and their variables win over the stored login.
    let out = user.run(&["tasks", "--server", "http://127.0.0.1:9"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr
            .contains("cannot reach the server at http://127.0.0.1:9"),
        "{out:?}"
    );
    let out = user.run(&["tasks", "--token", "mlt_wrong"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains(&format!("mainloop login {base}")),
        "{out:?}"
    );
    let out = user
        .command(&["tasks", "--json"])
        .env("MAINLOOP_SERVER", &base)
        .env("MAINLOOP_TOKEN", &token)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // The server's own configuration ignores the client's variables.
    let out = command(data.path(), None)
        .env("MAINLOOP_SERVER", &base)
        .env("MAINLOOP_TOKEN", &token)
        .arg("print-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(
        user.run(&["logout"])
            .await
            .ok()
            .stdout
            .starts_with("Logged out")
    );
    assert!(!user.login_file().exists());
    assert_eq!(user.run(&["tasks"]).await.code, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_takes_a_task_from_questions_to_merge_and_follows_it_live() {
    let Some(claude) = claude_path() else { return };
    let fake = FakeAnthropic::start(script("greeter")).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = start_with_workers(data.path(), &fake, &claude);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let repo = git_repo();
    let user = User::new();
    let conn = ["--server", base.as_str(), "--token", token.as_str()];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().chain(&conn).map(|s| (*s).to_owned()).collect()
    };
    let run = |args: Vec<String>, input: Option<&'static str>| {
        let user = &user;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            user.run_with(&args, input).await
        }
    };

    let repo_path = repo.path().to_str().unwrap();
    run(
        with(&["new", "--repo", repo_path, "build the greeter"]),
        None,
    )
    .await
    .ok();
    let tasks = run(with(&["tasks", "--json"]), None).await.ok().json();
    let id = tasks["tasks"][0]["id"].as_str().unwrap().to_owned();
    let short = id[id.len() - 8..].to_owned();
    let out = run(
        with(&[
            "tasks",
            "--state",
            "queued",
            "--state",
            "planning",
            "--state",
            "waiting_answers",
        ]),
        None,
    )
    .await
    .ok();
    assert!(
        out.stdout.contains(&short) && out.stdout.contains("build the greeter"),
        "{out:?}"
    );
    wait_task_state(&base, &token, &id, "waiting_answers").await;

    let out = run(with(&["task", &short]), None).await.ok();
    assert!(
        out.stdout.contains("State:    waiting for answers"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("Which language?") && out.stdout.contains("  1. Rust — fast"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("Two questions first."),
        "the transcript: {out:?}"
    );
    let doc = run(with(&["task", &short, "--json"]), None)
        .await
        .ok()
        .json();
    assert_eq!(doc["task"]["id"], id.as_str());
    assert!(!doc["transcript"].as_array().unwrap().is_empty());

    // Answered through stdin, as a person at the terminal would type: a wrong number is
    // asked again.
    let out = run(with(&["answer", &short]), Some("9\n1\n1,3\n"))
        .await
        .ok();
    assert!(
        out.stdout
            .contains("9 is not an option; choose from 1 to 2"),
        "{out:?}"
    );
    assert!(out.stdout.contains("Answers sent."), "{out:?}");
    let t = get(&base, &token, &format!("/api/tasks/{id}")).await;
    assert_eq!(t["answers"], json!({"q1": ["Rust"], "q2": ["Tests", "CI"]}));
    wait_task_state(&base, &token, &id, "waiting_plan_review").await;

    // Followed live from here to the merge.
    let mut follow = user
        .command(
            &with(&["task", &id, "--follow"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .spawn()
        .unwrap();
    let mut follow_out = follow.stdout.take().unwrap();
    let seen = tokio::spawn(async move {
        let mut seen = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut follow_out, &mut seen)
            .await
            .unwrap();
        seen
    });
    let out = run(with(&["plan", &short, "approve"]), None).await.ok();
    assert!(out.stdout.starts_with("Plan approved."), "{out:?}");
    wait_task_state(&base, &token, &id, "review").await;
    let out = run(with(&["review", &short, "approve", "--json"]), None)
        .await
        .ok();
    assert_eq!(out.json()["id"], id.as_str());
    wait_task_state(&base, &token, &id, "merged").await;
    let followed = tokio::time::timeout(Duration::from_secs(60), follow.wait())
        .await
        .expect("--follow ends when the task does")
        .unwrap();
    assert!(followed.success());
    let seen = seen.await.unwrap();
    assert!(seen.contains("Implementing."), "{seen}");
    assert!(seen.contains("── merged ──"), "{seen}");

    // A merged task cannot be cancelled: exit 1 with the server's reason.
    let out = run(with(&["cancel", &short]), None).await;
    assert_eq!(out.code, 1, "{out:?}");

    // Another task, cancelled while it waits for answers.
    run(
        with(&["new", "--repo", repo_path, "build the greeter", "--json"]),
        None,
    )
    .await
    .ok();
    let second = newest_task_with(&user, &conn).await;
    wait_task_state(&base, &token, &second, "waiting_answers").await;
    let out = run(with(&["cancel", &second[..13]]), None).await.ok();
    assert!(out.stdout.contains("now cancelled"), "{out:?}");
}

async fn newest_task_with(user: &User, conn: &[&str]) -> String {
    let mut args = vec!["tasks", "--json"];
    args.extend_from_slice(conn);
    let doc = user.run(&args).await.ok().json();
    doc["tasks"][0]["id"].as_str().unwrap().to_owned()
}

//! A task's whole lifecycle on a runner: the real server, and a real `mainloop runner`
//! in a network namespace of its own that reaches only the server and the fake model
//! (so nothing else is needed), its own HOME and data directory. A task requiring the
//! runner's label is placed there; the real `claude` runs in the runner's copy of the
//! workspace (after the repository's setup ran there) and asks, plans, revises and
//! implements over the relayed protocol; the checks run there too, the work comes back
//! to the server's worktree, and merges.

use super::*;
use mainloop_test_support::netns::{self, Netns};

/// The runner binary's companion that gives it its namespace (built with the
/// workspace's tests, next to `mainloop`).
pub(super) fn bridge() -> PathBuf {
    let path = Path::new(BIN)
        .parent()
        .unwrap()
        .join("mainloop-netns-bridge");
    assert!(
        path.exists(),
        "{} is missing: cargo build -p mainloop-test-support --bins",
        path.display()
    );
    path
}

/// A runner's machine: its home and data directory, and what it said.
pub(super) struct RunnerMachine {
    dir: tempfile::TempDir,
}

impl RunnerMachine {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Self { dir }
    }

    pub(super) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("runner.log")).unwrap_or_default()
    }

    /// `mainloop runner` (in `ns` when given), offering `claude` (found on its PATH)
    /// with `label`.
    pub(super) fn start(
        &self,
        ns: Option<&Netns>,
        base: &str,
        token: &str,
        label: &str,
        claude: &Path,
    ) -> RunnerProcess {
        let path = format!(
            "{}:{}",
            claude.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("runner.log"))
            .unwrap();
        let mut cmd = match ns {
            Some(ns) => ns.command(&bridge(), Path::new(BIN)),
            None => tokio::process::Command::new(BIN),
        };
        cmd.env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path().join("home"))
            .env("MAINLOOP_RUNNER_TOKEN", token)
            .env("RUST_LOG", "warn")
            .args(["runner", "--server", base, "--slots", "1", "--label", label])
            .arg("--data-dir")
            .arg(self.data())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        RunnerProcess(cmd.spawn().unwrap())
    }

    /// Kills what a runner SIGKILLed left running (its agents are in process groups
    /// of their own): every process working under this machine's data directory.
    pub(super) fn kill_leftovers(&self) {
        let data = self.data();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let cwd = std::fs::read_link(p.path().join("cwd"));
            if cwd.is_ok_and(|c| c.starts_with(&data))
                && let Some(pid) = p.file_name().to_str()
            {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid])
                    .status();
            }
        }
    }
}

impl Drop for RunnerMachine {
    fn drop(&mut self) {
        self.kill_leftovers();
    }
}

/// A runner's process group (with `unshare` and the bridge when in a namespace).
pub(super) struct RunnerProcess(tokio::process::Child);

impl RunnerProcess {
    /// SIGKILLs the whole group, as a machine's crash would.
    pub(super) fn sigkill(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}

pub(super) fn port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap()
}

/// A runner labelled `gpu`, registered on `base` and connected, in a namespace that
/// reaches only the server and `fake`; drop the three to stop it.
pub(super) async fn gpu_runner(
    base: &str,
    token: &str,
    fake: &FakeAnthropic,
    claude: &Path,
) -> (Netns, RunnerMachine, RunnerProcess) {
    let (status, made) = post(base, token, "/api/runners", json!({"name": "gpu-box"})).await;
    assert_eq!(status, 201, "{made}");
    let ns = Netns::new(&[port(base), port(&fake.base_url())]);
    let machine = RunnerMachine::new();
    let process = machine.start(
        Some(&ns),
        base,
        made["token"].as_str().unwrap(),
        "gpu",
        claude,
    );
    wait_for("the runner to connect", || async {
        let list = get(base, token, "/api/runners").await;
        (list["runners"][0]["state"] == "connected").then_some(())
    })
    .await;
    (ns, machine, process)
}

/// Waits for task `id` to ask, and answers each question with its first option.
pub(super) async fn answer_first_options(base: &str, token: &str, id: &str) {
    let asked = wait_task_state(base, token, id, "waiting_answers").await;
    let answers: serde_json::Map<String, Value> = asked["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let first = q["options"][0]["label"].clone();
            (q["id"].as_str().unwrap().to_owned(), json!([first]))
        })
        .collect();
    let (status, body) = post(
        base,
        token,
        &format!("/api/tasks/{id}/answers"),
        json!({"answers": answers}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_requiring_a_label_runs_its_whole_lifecycle_on_the_runner() {
    let Some(claude) = claude_path() else { return };
    if !netns::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must give a network namespace"
        );
        eprintln!("skipping: no network namespace here (unshare -rn)");
        return;
    }
    let fake = FakeAnthropic::start(script("greeter")).await.unwrap();
    let repo = GitRepo::new();
    // Setup and the checks run in the runner's copy, with the repository's variables;
    // the check passes only where setup ran and the agent's work is.
    std::fs::write(
        repo.path().join(".mainloop.toml"),
        concat!(
            "setup = [\"echo \\\"$GREETING\\\" > .setup-ran\"]\n",
            "check = \"test -f greeting.txt && test -f .setup-ran && echo checked in $PWD\"\n",
            "[env]\nGREETING = \"set up\"\n",
        ),
    )
    .unwrap();
    std::fs::write(repo.path().join(".gitignore"), ".setup-ran\n").unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "the check"]);
    let data = tempfile::tempdir().unwrap();
    let server = start_with_workers(data.path(), &fake, &claude);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());

    let (_ns, machine, _runner) = gpu_runner(&base, &token, &fake, &claude).await;

    let (status, task) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "build the greeter", "repo": repo.path(), "runner_labels": ["gpu"]}),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();

    // Asked on the runner, answered here.
    answer_first_options(&base, &token, &id).await;
    let planned = wait_task_state(&base, &token, &id, "waiting_plan_review").await;
    assert!(
        planned["plan"]
            .as_str()
            .unwrap()
            .contains("A greeter in Rust"),
        "{planned}"
    );

    // Revised, then approved: implemented and checked there.
    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/plan"),
        json!({"action": "revise", "feedback": "add tests"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_for("the revised plan", || async {
        let t = get(&base, &token, &format!("/api/tasks/{id}")).await;
        (t["state"] == "waiting_plan_review"
            && t["plan"].as_str().is_some_and(|p| p.contains("with tests")))
        .then_some(())
    })
    .await;
    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/plan"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let review = wait_task_state(&base, &token, &id, "review").await;
    assert!(review["error"].is_null(), "{review}");

    // The agent ran in the runner's copy, never here.
    let copy = machine.data().join("tasks").join(&id).join("work");
    assert_eq!(
        std::fs::read_to_string(copy.join("greeting.txt")).unwrap(),
        "hello\n",
        "runner said: {}",
        machine.log()
    );
    assert!(!data.path().join("agents").join(&id).exists());
    let transcript = get(
        &base,
        &token,
        &format!("/api/tasks/{id}/transcript?limit=1000"),
    )
    .await;
    let said = transcript.to_string();
    assert!(
        said.contains("preparing the workspace on its runner")
            && said.contains("setup on its runner")
            && said.contains("running checks on its runner"),
        "{transcript:#}"
    );
    // Setup ran once there, with the repository's variables, and the checks in the
    // copy (the server's worktree never ran setup).
    assert_eq!(
        std::fs::read_to_string(copy.join(".setup-ran")).unwrap(),
        "set up\n"
    );
    assert_eq!(
        said.matches("setup on its runner").count(),
        1,
        "{transcript:#}"
    );
    let checked = format!("checked in {}", copy.canonicalize().unwrap().display());
    assert!(said.contains(&checked), "{checked}: {transcript:#}");

    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/review"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_task_state(&base, &token, &id, "merged").await;
    assert_eq!(
        repo.git(&["show", "main:greeting.txt"]),
        "hello\n",
        "the runner's work is on main"
    );
}

/// `workers.labels`: a server that has the labels a task requires runs it itself, with
/// no runner connected; a label that is not one stops the server at start, named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_the_labels_runs_the_task_itself_and_a_bad_label_stops_it() {
    let Some(claude) = claude_path() else { return };
    let fake = FakeAnthropic::start(script("greeter")).await.unwrap();
    let repo = GitRepo::new();
    let data = tempfile::tempdir().unwrap();

    let mut bad = worker_command(data.path(), &fake, &claude);
    let out = bad
        .env("MAINLOOP_WORKERS__LABELS", "gpu, GPU!")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("workers.labels") && said.contains("GPU!"),
        "{said}"
    );
    assert!(
        std::fs::read_dir(data.path()).unwrap().next().is_none(),
        "nothing was made"
    );

    let mut good = worker_command(data.path(), &fake, &claude);
    good.env("MAINLOOP_WORKERS__LABELS", "gpu, big");
    let server = Server::spawn(good);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let (status, task) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "build the greeter", "repo": repo.path(), "runner_labels": ["gpu"]}),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap();
    wait_task_state(&base, &token, id, "waiting_answers").await;
    let leased = get(&base, &token, "/api/runners").await;
    assert_eq!(leased["runners"], json!([]), "no runner exists to take it");
}

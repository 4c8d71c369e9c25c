//! `mainloop runner` against the real server, as an owner sets one up: a token made with
//! `mainloop runner-token add`, a runner process with its own home and a fake `claude`
//! on its PATH, listed as connected with its label and agent; it comes back by itself
//! after the server restarts, stops (exit 3) the moment its token is revoked, and
//! refuses a wrong token (3), a bad label (2) or no token (2); SIGTERM stops it (0).

use super::cli::client::User;
use super::*;
use std::os::unix::fs::PermissionsExt;

/// The server on `data` listening on `port`, its log beside `data`. The harness's own
/// spawn listens on port 0; a restart here must come back on the same address, since
/// that is what the runner was told.
fn serve_on(data: &Path, port: u16) -> Option<Server> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .unwrap();
    let mut child = command(data, None)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut token = None;
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            // It exited before listening (the port not free again yet).
            let _ = child.wait();
            return None;
        };
        if line.starts_with("created the owner") {
            token = Some(lines.next().unwrap().unwrap());
        } else if let Some(addr) = line.strip_prefix("mainloop listening on ") {
            break addr.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Some(Server { child, base, token })
}

/// A port free now.
pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A runner's machine: its own home, a PATH holding only a fake `claude`, its log.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let claude = bin.join("claude");
        std::fs::write(&claude, "#!/bin/sh\necho '9.9.9 (Claude Code)'\n").unwrap();
        std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Self { dir }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// `mainloop runner --server BASE ARGS` with `token` in its environment, its
    /// standard error in `<name>.log`.
    fn runner(&self, name: &str, base: &str, token: Option<&str>, args: &[&str]) -> Child {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", self.dir.path().join("bin"))
            .env("HOME", self.dir.path().join("home"))
            .args(["runner", "--server", base])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log(name)).unwrap());
        if let Some(token) = token {
            cmd.env("MAINLOOP_RUNNER_TOKEN", token);
        }
        cmd.spawn().unwrap()
    }

    fn said(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }
}

/// Waits for `child` to exit, within `limit`; its exit code.
async fn exit_code(child: &mut Child, limit: Duration, what: &str) -> i32 {
    wait_for_within(limit, what, async || {
        child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1))
    })
    .await
}

async fn runner_named(base: &str, token: &str, name: &str) -> Option<Value> {
    get(base, token, "/api/runners").await["runners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

/// The token in `mainloop runner-token add`'s output.
fn token_in(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("MAINLOOP_RUNNER_TOKEN="))
        .unwrap_or_else(|| panic!("no token in {stdout}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_connects_comes_back_after_a_restart_and_stops_when_revoked() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let port = free_port();
    let server = serve_on(&data, port).expect("the server starts");
    let (base, owner) = (server.base.clone(), server.token.clone().unwrap());
    let user = User::new();
    let cli = |args: &[&str]| {
        let flags = ["--server", base.as_str(), "--token", owner.as_str()];
        let args: Vec<String> = args
            .iter()
            .copied()
            .chain(flags)
            .map(String::from)
            .collect();
        let user = &user;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            user.run(&args).await
        }
    };

    let added = cli(&["runner-token", "add", "build-box"]).await.ok();
    assert!(
        added.stdout.contains("shown only now") && added.stdout.contains("mainloop runner"),
        "{added:?}"
    );
    let token = token_in(&added.stdout);
    assert!(token.starts_with("mlr_"), "{token}");

    let machine = Machine::new();
    let mut runner = machine.runner("box", &base, Some(&token), &["--label", "gpu"]);
    let seen = wait_for("the runner to be listed as connected", || async {
        runner_named(&base, &owner, "build-box")
            .await
            .filter(|r| r["state"] == "connected")
    })
    .await;
    assert_eq!(seen["labels"], json!(["gpu"]), "{seen}");
    assert_eq!(seen["agents"], json!(["claude"]), "{seen}");
    assert_eq!(seen["slots"], 1, "{seen}");
    assert_eq!(seen["version"], env!("CARGO_PKG_VERSION"), "{seen}");
    let listed = cli(&["runner-token", "list"]).await.ok();
    let line = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("build-box"))
        .unwrap_or_else(|| panic!("{listed:?}"));
    for cell in ["connected", "0/1", "gpu", "claude"] {
        assert!(line.contains(cell), "{cell}: {listed:?}");
    }
    assert!(
        machine.said("box").contains("connected to"),
        "{}",
        machine.said("box")
    );

    // The server dies and comes back on the same address: the runner reconnects by
    // itself (the port may take a moment to be free again).
    server.sigkill();
    let restarted = wait_for("the server to start again on its port", || async {
        serve_on(&data, port)
    })
    .await;
    wait_for("the runner to reconnect", || async {
        machine.said("box").contains("reconnected to").then_some(())
    })
    .await;
    wait_for("the runner to be listed as connected again", || async {
        runner_named(&restarted.base, &owner, "build-box")
            .await
            .filter(|r| r["state"] == "connected")
    })
    .await;
    assert!(
        runner.try_wait().unwrap().is_none(),
        "{}",
        machine.said("box")
    );

    // Revoked: the runner stops at once, exit 3.
    let revoked = cli(&["runner-token", "revoke", "build-box"]).await.ok();
    assert!(revoked.stdout.contains("Revoked"), "{revoked:?}");
    let code = exit_code(
        &mut runner,
        Duration::from_secs(10),
        "the revoked runner to exit",
    )
    .await;
    assert_eq!(code, 3, "{}", machine.said("box"));
    assert!(
        machine
            .said("box")
            .contains("mainloop runner: the token was revoked; stopping"),
        "{}",
        machine.said("box")
    );
    let gone = runner_named(&base, &owner, "build-box").await.unwrap();
    assert_eq!(gone["state"], "revoked", "{gone}");

    // The revoked token, and one the server never issued, are refused at the door.
    for (name, token) in [("again", token.as_str()), ("wrong", "mlr_not-a-real-token")] {
        let mut refused = machine.runner(name, &base, Some(token), &[]);
        let code = exit_code(&mut refused, Duration::from_secs(20), name).await;
        assert_eq!(code, 3, "{name}: {}", machine.said(name));
        assert!(
            machine.said(name).contains("the server refused the token"),
            "{}",
            machine.said(name)
        );
    }

    // Mistakes in how it is started: exit 2 with the reason, before connecting.
    let mut bad = machine.runner("label", &base, Some(&token), &["--label", "GPU!"]);
    let code = exit_code(&mut bad, Duration::from_secs(20), "a bad label").await;
    assert_eq!(code, 2, "{}", machine.said("label"));
    assert!(
        machine.said("label").contains("label \"GPU!\" is not"),
        "{}",
        machine.said("label")
    );
    let mut none = machine.runner("none", &base, None, &[]);
    let code = exit_code(&mut none, Duration::from_secs(20), "no token").await;
    assert_eq!(code, 2, "{}", machine.said("none"));
    assert!(
        machine
            .said("none")
            .contains("MAINLOOP_RUNNER_TOKEN is not set"),
        "{}",
        machine.said("none")
    );

    // SIGTERM: the runner closes its socket and exits 0; the server sees it go.
    let second = cli(&["runner-token", "add", "second", "--json"])
        .await
        .ok()
        .json();
    let second_token = second["token"].as_str().unwrap().to_owned();
    let mut calm = machine.runner("calm", &base, Some(&second_token), &[]);
    wait_for("the second runner to connect", || async {
        runner_named(&base, &owner, "second")
            .await
            .filter(|r| r["state"] == "connected")
    })
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &calm.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = exit_code(&mut calm, Duration::from_secs(10), "SIGTERM to stop it").await;
    assert_eq!(code, 0, "{}", machine.said("calm"));
    wait_for("the stopped runner to be offline", || async {
        runner_named(&base, &owner, "second")
            .await
            .filter(|r| r["state"] == "offline")
    })
    .await;
    let listed = cli(&["runner-token", "list", "--json"]).await.ok().json();
    assert_eq!(listed["runners"].as_array().unwrap().len(), 2, "{listed}");
    drop(restarted);
}

/// `--idle-exit`: a runner that holds no task for that long exits 0 by itself, having
/// connected first; without it a runner stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_holds_no_task_for_its_idle_limit_exits_by_itself() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let server = serve_on(&data, free_port()).expect("the server starts");
    let (base, owner) = (server.base.clone(), server.token.clone().unwrap());
    let (status, made) = post(&base, &owner, "/api/runners", json!({"name": "brief"})).await;
    assert_eq!(status, 201, "{made}");
    let token = made["token"].as_str().unwrap();
    let machine = Machine::new();
    let mut runner = machine.runner("brief", &base, Some(token), &["--idle-exit", "1"]);
    let code = exit_code(
        &mut runner,
        Duration::from_secs(30),
        "the idle runner to exit",
    )
    .await;
    assert_eq!(code, 0, "{}", machine.said("brief"));
    let said = machine.said("brief");
    assert!(
        said.contains("connected to") && said.contains("held no task for 1 s"),
        "{said}"
    );
}

//! Processes on a runner: the app in-process (so the test holds its `Engine`), a real
//! `mainloop runner` process with its own home and data directory, and processes
//! started on it through `RemotePlacement` as an adapter would — stdin, stdout, stderr
//! and the exit code relayed over the runner's socket, a large output whole and in
//! order, `kill_tree` ending a process and its child, a working directory outside the
//! workspace refused, a runner SIGKILLed mid-run (the server's `wait` fails at once,
//! the restarted runner kills what was left), and a hostile runner that can touch
//! nothing it was not given nor bring the server down.

use super::*;
use futures::{SinkExt, StreamExt};
use mainloop_agent::{AgentError, Launch, Placed, Placement};
use mainloop_domain::agents::AgentName;
use mainloop_domain::runner::Program;
use mainloop_domain::{RunnerId, TaskId, Timestamp};
use mainloop_engine::EngineError;
use mainloop_test_support::TestApp;
use mainloop_worker::RemotePlacement;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Where the server thinks the task's worktree is; the runner has its own.
const ROOT: &str = "/srv/mainloop/worktrees/task";

/// A runner's machine: a fake `claude` on its PATH (before the system's, for `sh`,
/// `head`, `sleep`), its own home and data directory.
pub(super) struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let claude = bin.join("claude");
        std::fs::write(
            &claude,
            "#!/bin/sh\necho \"claude $* home=$HOME tmp=$TMPDIR pwd=$(pwd) key=$API_KEY\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Self { dir }
    }

    pub(super) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(super) fn said(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("runner.log")).unwrap_or_default()
    }

    /// A runner whose processes are unconfined: these tests read their pids, which a
    /// sandbox's own process table would renumber.
    pub(super) fn runner(&self, base: &str, token: &str) -> Child {
        self.runner_sandboxed(base, token, "off")
    }

    /// A runner with `--sandbox MODE`.
    pub(super) fn runner_sandboxed(&self, base: &str, token: &str, mode: &str) -> Child {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("runner.log"))
            .unwrap();
        Command::new(BIN)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path().join("home"))
            .env("MAINLOOP_RUNNER_TOKEN", token)
            .env("RUST_LOG", "warn")
            .args([
                "runner",
                "--server",
                base,
                "--slots",
                "2",
                "--sandbox",
                mode,
            ])
            .arg("--data-dir")
            .arg(self.data())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }
}

/// A runner token made through the API: the runner's id and its token.
pub(super) async fn new_runner(app: &TestApp, name: &str) -> (RunnerId, String) {
    let (status, body) = app.post("/api/runners", json!({"name": name})).await;
    assert!(status.is_success(), "{body}");
    let id = body["runner"]["id"].as_str().unwrap().parse().unwrap();
    (id, body["token"].as_str().unwrap().to_owned())
}

pub(super) async fn connected(app: &TestApp, name: &str) {
    wait_for(format!("runner {name} to connect"), || async {
        let list = app.get("/api/runners").await;
        list["runners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == name && r["state"] == "connected")
            .then_some(())
    })
    .await;
}

fn task() -> TaskId {
    TaskId::new_v7(Timestamp::from_millis(1_800_000_000_000))
}

fn placement(app: &TestApp, runner: RunnerId, task: TaskId) -> RemotePlacement {
    RemotePlacement {
        engine: app.engine().clone(),
        runner,
        task,
        workspace_root: PathBuf::from(ROOT),
        agent: None,
    }
}

fn sh(script: &str) -> Launch {
    Launch {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        cwd: PathBuf::from(ROOT),
        env: vec![("LANG".into(), "C".into())],
    }
}

async fn read_all(mut from: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    from.read_to_end(&mut out).await.unwrap();
    out
}

/// Whether `pid` is gone (a zombie waiting for an init that does not reap counts).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// The numbers on the first `n` lines of `out`.
async fn pids(out: &mut (impl tokio::io::AsyncBufRead + Unpin), n: usize) -> Vec<u32> {
    let mut lines = Vec::new();
    for _ in 0..n {
        let mut line = String::new();
        out.read_line(&mut line).await.unwrap();
        lines.push(line.trim().parse().unwrap_or_else(|_| panic!("{line:?}")));
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_runs_processes_for_the_server_over_its_socket() {
    let app = TestApp::sqlite(None).await;
    let (runner, token) = new_runner(&app, "box").await;
    let machine = Machine::new();
    let mut child = machine.runner(&app.base, &token);
    connected(&app, "box").await;
    let t = task();
    let place = placement(&app, runner, t);

    // Input in, both outputs and the exit code back.
    let Placed {
        mut stdin,
        stdout,
        stderr,
        mut process,
    } = place
        .spawn(sh(r#"read x; echo "got $x"; echo oops >&2; exit 3"#))
        .unwrap();
    assert_eq!(process.pid(), None);
    stdin.write_all(b"hi\n").await.unwrap();
    let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
    assert_eq!(String::from_utf8_lossy(&out), "got hi\n");
    assert_eq!(String::from_utf8_lossy(&err), "oops\n");
    assert_eq!(process.wait().await.unwrap(), 3);

    // An agent runs as the runner's own program, in the task's workspace there, with
    // the runner's home and temporary directory and the server's other variables.
    let agent = RemotePlacement {
        agent: Some(AgentName::parse("claude").unwrap()),
        ..placement(&app, runner, t)
    };
    let launch = Launch {
        program: "/usr/local/bin/claude-on-the-server".into(),
        args: vec!["-p".into()],
        cwd: PathBuf::from(ROOT).join("sub"),
        env: vec![
            ("API_KEY".into(), "k1".into()),
            ("HOME".into(), "/server/home".into()),
        ],
    };
    let work = machine.data().join("tasks").join(t.to_string());
    std::fs::create_dir_all(work.join("work/sub")).unwrap();
    let placed = agent.spawn(launch).unwrap();
    let said = String::from_utf8(read_all(placed.stdout).await).unwrap();
    let expected = format!(
        "claude -p home={} tmp={} pwd={} key=k1\n",
        work.join("home").display(),
        work.join("tmp").display(),
        work.join("work/sub").display()
    );
    assert_eq!(said, expected);

    // A large output arrives whole and in order.
    let script = "head -c 1000000 /dev/zero | base64";
    let local = std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .unwrap()
        .stdout;
    let started = Instant::now();
    let Placed {
        stdout,
        mut process,
        ..
    } = place.spawn(sh(script)).unwrap();
    let remote = read_all(stdout).await;
    let took = started.elapsed();
    assert_eq!(process.wait().await.unwrap(), 0);
    assert_eq!(remote.len(), local.len());
    assert!(
        remote == local,
        "the output differs from the same command's here"
    );
    eprintln!(
        "runner relay: {} bytes in {:?} ({:.1} MB/s)",
        remote.len(),
        took,
        remote.len() as f64 / took.as_secs_f64() / 1e6
    );

    // Round trips through `cat`: one line in, the same line out.
    let Placed {
        mut stdin,
        stdout,
        mut process,
        ..
    } = place.spawn(sh("cat")).unwrap();
    let mut lines = tokio::io::BufReader::new(stdout);
    let rounds = 200;
    let started = Instant::now();
    for i in 0..rounds {
        stdin.write_all(format!("{i}\n").as_bytes()).await.unwrap();
        let mut line = String::new();
        lines.read_line(&mut line).await.unwrap();
        assert_eq!(line, format!("{i}\n"));
    }
    eprintln!(
        "runner relay: {:?} per round trip (stdin → cat → stdout), {rounds} rounds",
        started.elapsed() / rounds
    );
    stdin.shutdown().await.unwrap();
    assert_eq!(process.wait().await.unwrap(), 0, "end of input ends cat");

    // kill_tree ends the process and what it started.
    let Placed {
        stdout,
        mut process,
        ..
    } = place
        .spawn(sh("echo $$; sleep 300 & echo $!; wait"))
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(stdout);
    let started = pids(&mut stdout, 2).await;
    assert!(started.iter().all(|p| !gone(*p)), "{started:?} run");
    process.kill_tree();
    assert_eq!(process.wait().await.unwrap(), 137, "SIGKILL");
    wait_for("the killed process and its child to be gone", || async {
        started.iter().all(|p| gone(*p)).then_some(())
    })
    .await;

    // A working directory outside the workspace: refused, nothing runs.
    let other = task();
    let outside = RemotePlacement {
        task: other,
        ..placement(&app, runner, t)
    };
    let mut escape = sh("touch /tmp/never");
    escape.cwd = PathBuf::from(ROOT).join("../x");
    let err = outside.spawn(escape).unwrap_err();
    assert!(
        matches!(&err, AgentError::Spawn(m) if m.contains("leaves")),
        "{err}"
    );
    let err = app
        .engine()
        .runner_spawn(
            runner,
            other,
            Program::Path("sh".into()),
            vec![],
            "../x".into(),
            vec![],
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)), "{err}");
    assert!(
        !machine
            .data()
            .join("tasks")
            .join(other.to_string())
            .exists(),
        "the runner was never asked"
    );

    // A program the runner cannot start: the streams end and `wait` says why.
    let Placed {
        stdout,
        mut process,
        ..
    } = place
        .spawn(Launch {
            program: "no-such-program-here".into(),
            ..sh("")
        })
        .unwrap();
    assert!(read_all(stdout).await.is_empty());
    let err = process.wait().await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Spawn(m) if m.contains("no-such-program-here")),
        "{err}"
    );

    // A runner stopped by SIGTERM kills what it runs first; the server's wait fails.
    let Placed {
        stdout,
        mut process,
        ..
    } = place
        .spawn(sh("echo $$; sleep 300 & echo $!; wait"))
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(stdout);
    let running = pids(&mut stdout, 2).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let err = process.wait().await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Io(m) if m.contains("lost")),
        "{err}"
    );
    let code = wait_for("the runner to stop", async || {
        child.try_wait().unwrap().map(|s| s.code())
    })
    .await;
    assert_eq!(code, Some(0), "{}", machine.said());
    assert!(running.iter().all(|p| gone(*p)), "{running:?} were killed");
    assert_eq!(
        std::fs::read_dir(machine.data().join("pids"))
            .unwrap()
            .count(),
        0,
        "and unrecorded"
    );
    assert!(!machine.said().contains("panicked"), "{}", machine.said());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_mid_run_loses_its_processes_and_kills_them_when_it_returns() {
    let app = TestApp::sqlite(None).await;
    let (runner, token) = new_runner(&app, "box").await;
    let machine = Machine::new();
    let mut child = machine.runner(&app.base, &token);
    connected(&app, "box").await;
    let place = placement(&app, runner, task());
    let Placed {
        stdout,
        mut process,
        ..
    } = place
        .spawn(sh("echo $$; sleep 300 & echo $!; wait"))
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(stdout);
    let left = pids(&mut stdout, 2).await;
    let records = std::fs::read_dir(machine.data().join("pids"))
        .unwrap()
        .count();
    assert_eq!(records, 1, "the live process is recorded");

    child.kill().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), process.wait())
        .await
        .expect("wait returns promptly once the runner is gone")
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::Io(m) if m.contains("connection") && m.contains("lost")),
        "{err}"
    );
    eprintln!(
        "runner lost: wait returned {:?} after SIGKILL",
        started.elapsed()
    );
    assert!(
        left.iter().all(|p| !gone(*p)),
        "a killed runner leaves {left:?}"
    );
    let err = place.spawn(sh("true")).unwrap_err();
    assert!(err.to_string().contains("not connected"), "{err}");

    let mut again = machine.runner(&app.base, &token);
    wait_for("the restarted runner to kill what was left", || async {
        left.iter().all(|p| gone(*p)).then_some(())
    })
    .await;
    connected(&app, "box").await;
    assert!(
        machine.said().contains("stopped 1 process(es)"),
        "{}",
        machine.said()
    );
    assert_eq!(
        std::fs::read_dir(machine.data().join("pids"))
            .unwrap()
            .count(),
        0
    );
    // And it works again.
    // (A process whose handle is dropped is killed, as a local child would be: keep it.)
    let Placed {
        stdout,
        mut process,
        ..
    } = place.spawn(sh("echo back")).unwrap();
    assert_eq!(read_all(stdout).await, b"back\n");
    assert_eq!(process.wait().await.unwrap(), 0);
    again.kill().unwrap();
    again.wait().unwrap();
}

pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(super) async fn hostile(app: &TestApp, token: &str) -> Ws {
    let url = format!("{}/api/runners/connect", app.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = json!({"type": "hello", "protocol": 1, "version": "6.6.6",
                       "slots": 1, "labels": [], "agents": ["claude"]});
    ws.send(Message::text(hello.to_string())).await.unwrap();
    assert_eq!(read(&mut ws).await.unwrap()["type"], "welcome");
    ws
}

/// The next JSON message, or None once the server closed.
pub(super) async fn read(ws: &mut Ws) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the server answers in time");
        match frame {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return None,
        }
    }
}

pub(super) async fn send(ws: &mut Ws, msg: &Value) {
    ws.send(Message::text(msg.to_string())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_runner_touches_nothing_it_was_not_given_and_the_server_stays_up() {
    let app = TestApp::sqlite(None).await;
    let (good, good_token) = new_runner(&app, "good").await;
    let (bad, bad_token) = new_runner(&app, "bad").await;
    let machine = Machine::new();
    let mut child = machine.runner(&app.base, &good_token);
    connected(&app, "good").await;
    let place = placement(&app, good, task());

    // A process on the good runner, waiting for input.
    let Placed {
        mut stdin,
        stdout,
        mut process,
        ..
    } = place.spawn(sh("read x; echo \"good $x\"")).unwrap();
    let mut ws = hostile(&app, &bad_token).await;

    // The hostile runner is given one process of its own.
    let mut own = app
        .engine()
        .runner_spawn(
            bad,
            task(),
            Program::Path("sh".into()),
            vec![],
            String::new(),
            vec![],
        )
        .unwrap();
    let spawn = read(&mut ws).await.unwrap();
    assert_eq!(spawn["type"], "spawn", "{spawn}");
    let mine = spawn["process"].as_u64().unwrap();
    assert_eq!(mine, own.id);
    // It speaks of processes it was never given — the good runner's among them — and
    // of its own before it started: all ignored, the connection stays.
    let output = |process: u64, data: &str| json!({"type": "output", "process": process, "stream": "stdout", "data": data});
    let mut said = Vec::new();
    for other in [mine + 1, mine - 1, 0, u64::MAX] {
        said.extend([
            json!({"type": "started", "process": other, "pid": 9}),
            output(other, "cHduZWQK"),
            json!({"type": "exited", "process": other, "code": 0}),
        ]);
    }
    // Then its own: output before it started, the start, output, the exit, and more.
    said.extend([
        output(mine, "ZWFybHkK"),
        json!({"type": "started", "process": mine, "pid": 4242}),
        output(mine, "b3duCg=="),
        json!({"type": "exited", "process": mine, "code": 5}),
        output(mine, "bGF0ZQo="),
    ]);
    for message in &said {
        send(&mut ws, message).await;
    }
    let got: Vec<u8> = own
        .stdout
        .map(|b| b.to_vec())
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(
        got, b"own\n",
        "only its own process's output, between start and exit"
    );
    assert_eq!(own.handle.wait().await.unwrap(), 5);

    // The good runner's process never heard of any of it.
    assert!(
        futures::FutureExt::now_or_never(process.wait()).is_none(),
        "still running"
    );
    stdin.write_all(b"input\n").await.unwrap();
    assert_eq!(read_all(stdout).await, b"good input\n");
    assert_eq!(process.wait().await.unwrap(), 0);

    // Bad base64 and an oversized message: refused, the hostile connection closed.
    send(
        &mut ws,
        &json!({"type": "output", "process": mine, "stream": "stdout", "data": "!!!"}),
    )
    .await;
    let refused = read(&mut ws).await.unwrap();
    assert_eq!(refused["type"], "refused", "{refused}");
    assert!(
        refused["reason"].as_str().unwrap().contains("base64"),
        "{refused}"
    );
    assert!(read(&mut ws).await.is_none(), "closed");
    let mut ws = hostile(&app, &bad_token).await;
    let huge =
        json!({"type": "output", "process": mine, "stream": "stdout", "data": "A".repeat(70_000)});
    let _ = ws.send(Message::text(huge.to_string())).await;
    if let Some(refused) = read(&mut ws).await {
        assert_eq!(refused["type"], "refused", "{refused}");
    }
    assert!(read(&mut ws).await.is_none(), "closed");

    // The server is up, the good runner still connected and still working.
    connected(&app, "good").await;
    let Placed {
        stdout,
        mut process,
        ..
    } = place.spawn(sh("echo still")).unwrap();
    assert_eq!(read_all(stdout).await, b"still\n");
    assert_eq!(process.wait().await.unwrap(), 0);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Sandboxed (bubblewrap, as `--sandbox auto` picks where it is usable): a process sees
/// its own task's copy, home and temporary directory, writable, and nothing else of the
/// runner's data — not its records, not another task's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_runners_process_sees_only_its_own_task() {
    if mainloop_sandbox::which("bwrap", std::env::var_os("PATH").as_deref()).is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI installs bubblewrap");
        eprintln!("skipping: bubblewrap is not installed");
        return;
    }
    let app = TestApp::sqlite(None).await;
    let (runner, token) = new_runner(&app, "boxed").await;
    let machine = Machine::new();
    let mut child = machine.runner_sandboxed(&app.base, &token, "bubblewrap");
    connected(&app, "boxed").await;
    let data = machine.data();
    let (mine, other) = (
        task(),
        TaskId::new_v7(Timestamp::from_millis(1_800_000_000_001)),
    );
    // The other task's copy exists on the runner.
    let mut first = placement(&app, runner, other)
        .spawn(sh("echo theirs > secret.txt"))
        .unwrap();
    assert_eq!(first.process.wait().await.unwrap(), 0);

    let script = format!(
        "ls {data}/pids 2>&1; ls {data}/tasks; cat {data}/tasks/{other}/work/secret.txt 2>&1; \
         echo mine > mine.txt && echo wrote; touch \"$HOME/h\" \"$TMPDIR/t\" && echo home",
        data = data.display()
    );
    let Placed {
        stdout,
        mut process,
        ..
    } = placement(&app, runner, mine).spawn(sh(&script)).unwrap();
    let out = String::from_utf8_lossy(&read_all(stdout).await).into_owned();
    assert_eq!(process.wait().await.unwrap(), 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("No such file"),
        "the runner's records: {out}"
    );
    assert_eq!(lines[1], mine.to_string(), "only its own task: {out}");
    assert!(
        lines[2].contains("No such file"),
        "another task's copy: {out}"
    );
    assert_eq!(&lines[3..], ["wrote", "home"], "{out}");
    assert_eq!(
        std::fs::read_to_string(
            data.join("tasks")
                .join(mine.to_string())
                .join("work/mine.txt")
        )
        .unwrap(),
        "mine\n"
    );
    child.kill().unwrap();
    let _ = child.wait();
}

//! What a runner runs for the server: each `spawn` started as a local process (its own
//! process group, killed as a tree) in the task's workspace under the runner's data
//! directory, its stdin fed from `stdin`/`close_stdin`, its stdout and stderr relayed as
//! `output`, then `exited`. Every process ends with the connection it was started on,
//! and each live one is recorded in `<data>/pids/` so that a runner that was killed
//! stops its leftovers when it starts again.

use mainloop_agent::{Launch, LocalProcess, Placed, Placement};
use mainloop_domain::TaskId;
use mainloop_domain::agents::AgentName;
use mainloop_domain::runner::{
    Chunk, Program, RunnerMessage, ServerMessage, Spawn, Stream, check_server_message, fit_reason,
    workspace_path,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The most bytes one `output` message carries: below the protocol's 32 KiB.
pub const OUTPUT_CHUNK: usize = 24 * 1024;
/// Input received for one process and not yet written, beyond which it is killed: the
/// socket is shared, so a process that stops reading must not hold the others up.
pub const MAX_PENDING_INPUT: usize = 8 * 1024 * 1024;
/// Messages queued from the processes towards the socket; readers wait when it is full,
/// and the process then blocks on its pipe, as it would locally.
pub const OUTBOX: usize = 64;
/// After a process exited, how long its streams may stay open (a grandchild holding
/// them) before its group is killed.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long stopping waits for the processes' tasks to finish after killing them.
pub(super) const STOP_WAIT: Duration = Duration::from_secs(5);

/// Where and with what a runner runs processes.
#[derive(Debug, Clone)]
pub struct Config {
    /// The runner's data directory: `tasks/<task>/{work,home,tmp}`, `pids/`.
    pub data_dir: PathBuf,
    /// The program this runner runs for each agent it offers.
    pub agents: BTreeMap<AgentName, String>,
    /// The runner's own `PATH`, given to every process.
    pub path: String,
    /// Its slots: `busy` is never reported above them.
    pub slots: u16,
    /// What every process runs under; `None`: unconfined.
    pub sandbox: Option<RunnerSandbox>,
}

/// How a runner confines what it runs: bubblewrap, and its user's agent logins bound
/// into each task's home.
#[derive(Debug, Clone)]
pub struct RunnerSandbox {
    pub bwrap: mainloop_sandbox::Bubblewrap,
    /// `(outside path, path relative to the home)`.
    pub home_files: Vec<(PathBuf, PathBuf)>,
}

impl Config {
    fn pid_dir(&self) -> PathBuf {
        self.data_dir.join("pids")
    }

    /// What runs `launch` of `spawn`: a local process, under the sandbox when there is
    /// one — it sees the system read-only, the task's copy, home and temporary directory
    /// read-write (the copy's `.git` read-only), and nothing of the runner's data.
    fn process(&self, spawn: &Spawn, launch: &Launch) -> Result<LocalProcess, String> {
        let Some(sandbox) = &self.sandbox else {
            return Ok(LocalProcess::new());
        };
        let task = self.data_dir.join("tasks").join(spawn.task.to_string());
        let home = task.join("home");
        let scope = mainloop_sandbox::Scope {
            cwd: launch.cwd.clone(),
            home: home.clone(),
            read_only: vec![task.join("work").join(".git")],
            read_write: vec![task.join("tmp")],
            files: sandbox
                .home_files
                .iter()
                .map(|(outside, inside)| (outside.clone(), home.join(inside)))
                .collect(),
        };
        sandbox
            .bwrap
            .command_prefix(&scope)
            .map(LocalProcess::sandboxed)
            .map_err(|e| format!("could not set up the sandbox: {e}"))
    }

    /// The local launch for `spawn`, its directories created; or why there is none.
    fn launch(&self, spawn: &Spawn) -> Result<Launch, String> {
        let rel = workspace_path(&spawn.cwd)?;
        let task = self.data_dir.join("tasks").join(spawn.task.to_string());
        let (work, home, tmp) = (task.join("work"), task.join("home"), task.join("tmp"));
        for dir in [&work, &home, &tmp] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let program =
            match &spawn.program {
                Program::Agent(name) => self.agents.get(name).cloned().ok_or_else(|| {
                    format!("this runner does not offer the agent {}", name.as_str())
                })?,
                Program::Path(p) => p.clone(),
            };
        let launch = Launch {
            program,
            args: spawn.args.clone(),
            cwd: if rel.as_os_str().is_empty() {
                work
            } else {
                work.join(rel)
            },
            env: environment(&spawn.env, &home, &tmp, &self.path),
        };
        // Only here can Gemini CLI's quirks be seen to: its home is on this machine.
        let now = SystemTime::now();
        Ok(super::gemini::before_start(spawn, &home, launch, now))
    }
}

/// Exactly the server's variables, but `HOME`, `TMPDIR` and `PATH`, which are the
/// runner's: the server's paths mean nothing on this machine.
fn environment(
    sent: &[(String, String)],
    home: &Path,
    tmp: &Path,
    path: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = sent
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "HOME" | "TMPDIR" | "PATH"))
        .cloned()
        .collect();
    env.push(("HOME".into(), home.display().to_string()));
    env.push(("TMPDIR".into(), tmp.display().to_string()));
    env.push(("PATH".into(), path.to_owned()));
    env
}

enum Input {
    Data(Vec<u8>),
    Close,
}

struct Running {
    agent: bool,
    /// The task whose workspace it runs in: `release` kills it.
    of: TaskId,
    input: mpsc::UnboundedSender<Input>,
    pending: Arc<AtomicUsize>,
    kill: CancellationToken,
    task: JoinHandle<()>,
}

/// The processes of one connection.
pub struct Processes {
    config: Arc<Config>,
    out: mpsc::Sender<RunnerMessage>,
    live: HashMap<u64, Running>,
}

impl Processes {
    /// No processes yet; what they write goes to `out`.
    pub fn new(config: Arc<Config>, out: mpsc::Sender<RunnerMessage>) -> Self {
        Self {
            config,
            out,
            live: HashMap::new(),
        }
    }

    /// Agent processes running, as the heartbeat's `busy`: at most the slots.
    pub fn busy(&mut self) -> u16 {
        self.live.retain(|_, r| !r.task.is_finished());
        let agents = self.live.values().filter(|r| r.agent).count();
        u16::try_from(agents)
            .unwrap_or(u16::MAX)
            .min(self.config.slots)
    }

    /// Carries out one of the server's process messages; the answer to send at once
    /// (`started` or `spawn_failed`), before anything the process writes.
    pub fn handle(&mut self, msg: ServerMessage) -> Option<RunnerMessage> {
        if let Err(e) = check_server_message(&msg) {
            return match msg {
                ServerMessage::Spawn(s) => Some(failed(s.process, &e.to_string())),
                other => {
                    tracing::warn!(error = %e, ?other, "ignored a server message out of bounds");
                    None
                }
            };
        }
        match msg {
            ServerMessage::Spawn(spawn) => Some(self.spawn(&spawn)),
            ServerMessage::Stdin { process, data } => {
                self.input(process, Input::Data(data.0));
                None
            }
            ServerMessage::CloseStdin { process } => {
                self.input(process, Input::Close);
                None
            }
            ServerMessage::Kill { process } => {
                if let Some(r) = self.live.get(&process) {
                    r.kill.cancel();
                }
                None
            }
            // Workspace requests are `workspace.rs`'s; the rest are the session's.
            ServerMessage::Prepare(_)
            | ServerMessage::Save(_)
            | ServerMessage::Release { .. }
            | ServerMessage::Welcome { .. }
            | ServerMessage::Refused { .. }
            | ServerMessage::Revoked => None,
        }
    }

    /// Where this connection's answers go, in order with what the processes write.
    pub fn out(&self) -> &mpsc::Sender<RunnerMessage> {
        &self.out
    }

    /// Kills every process of `task` (it is released) and hands over their
    /// supervisors, which end once each is reaped and its `exited` queued.
    pub fn kill_task(&mut self, task: TaskId) -> Vec<JoinHandle<()>> {
        let ids: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, r)| r.of == task)
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .filter_map(|id| self.live.remove(id))
            .map(|r| {
                r.kill.cancel();
                r.task
            })
            .collect()
    }

    fn input(&self, process: u64, input: Input) {
        let Some(r) = self.live.get(&process) else {
            tracing::debug!(process, "input for a process that is not running");
            return;
        };
        if let Input::Data(d) = &input {
            let pending = r.pending.fetch_add(d.len(), Ordering::AcqRel) + d.len();
            if pending > MAX_PENDING_INPUT {
                tracing::warn!(
                    process,
                    "killed: more than {} MiB of its input waited unwritten",
                    MAX_PENDING_INPUT >> 20
                );
                r.kill.cancel();
                return;
            }
        }
        let _ = r.input.send(input);
    }

    fn spawn(&mut self, spawn: &Spawn) -> RunnerMessage {
        let process = spawn.process;
        if self
            .live
            .get(&process)
            .is_some_and(|r| !r.task.is_finished())
        {
            return failed(process, &format!("process {process} is already running"));
        }
        let launch = match self.config.launch(spawn) {
            Ok(l) => l,
            Err(reason) => return failed(process, &reason),
        };
        let local = match self.config.process(spawn, &launch) {
            Ok(l) => l,
            Err(reason) => return failed(process, &reason),
        };
        let placed = match local.spawn(launch) {
            Ok(p) => p,
            Err(e) => return failed(process, &e.to_string()),
        };
        let Some(pid) = placed.process.pid() else {
            return failed(process, "the process has no pid");
        };
        let record = record_pid(&self.config.pid_dir(), pid);
        let (input, input_rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let kill = CancellationToken::new();
        let task = tokio::spawn(supervise(Supervised {
            process,
            placed,
            kill: kill.clone(),
            input: input_rx,
            pending: Arc::clone(&pending),
            out: self.out.clone(),
            record,
        }));
        self.live.insert(
            process,
            Running {
                agent: matches!(spawn.program, Program::Agent(_)),
                of: spawn.task,
                input,
                pending,
                kill,
                task,
            },
        );
        RunnerMessage::Started { process, pid }
    }

    /// Kills every process at once (they cannot be reattached to another connection).
    pub fn kill_all(&self) {
        for r in self.live.values() {
            r.kill.cancel();
        }
    }

    /// Kills every process and waits (briefly) until each is reaped and unrecorded.
    pub async fn shutdown(mut self) {
        self.kill_all();
        let tasks: Vec<JoinHandle<()>> = self.live.drain().map(|(_, r)| r.task).collect();
        let _ = tokio::time::timeout(STOP_WAIT, futures::future::join_all(tasks)).await;
    }
}

fn failed(process: u64, reason: &str) -> RunnerMessage {
    RunnerMessage::SpawnFailed {
        process,
        reason: fit_reason(reason),
    }
}

struct Supervised {
    process: u64,
    placed: Placed,
    kill: CancellationToken,
    input: mpsc::UnboundedReceiver<Input>,
    pending: Arc<AtomicUsize>,
    out: mpsc::Sender<RunnerMessage>,
    record: Option<PathBuf>,
}

/// One process from start to `exited`: input written, output relayed, killed when
/// asked, reaped, and only then `exited` — after both streams were drained.
async fn supervise(s: Supervised) {
    let Placed {
        stdin,
        stdout,
        stderr,
        mut process,
    } = s.placed;
    let writer = tokio::spawn(write_input(stdin, s.input, s.pending));
    let out_relay = tokio::spawn(relay(s.process, Stream::Stdout, stdout, s.out.clone()));
    let err_relay = tokio::spawn(relay(s.process, Stream::Stderr, stderr, s.out.clone()));
    let aborts = [out_relay.abort_handle(), err_relay.abort_handle()];
    let mut relays = futures::future::join(out_relay, err_relay);
    let waited = tokio::select! {
        r = process.wait() => Some(r),
        () = s.kill.cancelled() => None,
    };
    let code = match waited {
        Some(r) => r,
        None => {
            process.kill_tree();
            process.wait().await
        }
    };
    let code = code.unwrap_or_else(|e| {
        tracing::warn!(process = s.process, error = %e, "could not reap a process");
        -1
    });
    if tokio::time::timeout(DRAIN_GRACE, &mut relays)
        .await
        .is_err()
    {
        // Something it started still holds its output: what is left of its group goes.
        process.kill_tree();
        if tokio::time::timeout(Duration::from_secs(1), &mut relays)
            .await
            .is_err()
        {
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
    }
    writer.abort();
    if let Some(record) = s.record {
        let _ = std::fs::remove_file(record);
    }
    let _ = s
        .out
        .send(RunnerMessage::Exited {
            process: s.process,
            code,
        })
        .await;
}

async fn write_input(
    mut stdin: std::pin::Pin<Box<dyn AsyncWrite + Send>>,
    mut input: mpsc::UnboundedReceiver<Input>,
    pending: Arc<AtomicUsize>,
) {
    let mut broken = false;
    while let Some(next) = input.recv().await {
        match next {
            Input::Data(data) => {
                pending.fetch_sub(data.len(), Ordering::AcqRel);
                // A process that closed its input drops what comes after, as a pipe would.
                if !broken {
                    broken = stdin.write_all(&data).await.is_err();
                }
            }
            Input::Close => break,
        }
    }
    let _ = stdin.shutdown().await;
}

async fn relay(
    process: u64,
    stream: Stream,
    mut from: std::pin::Pin<Box<dyn AsyncRead + Send>>,
    out: mpsc::Sender<RunnerMessage>,
) {
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let msg = RunnerMessage::Output {
            process,
            stream,
            data: Chunk(buf[..n].to_vec()),
        };
        if out.send(msg).await.is_err() {
            return;
        }
    }
}

/// Records a live process (`pid start-time group`, its group being its pid) in
/// `dir/<pid>`; the record's path.
fn record_pid(dir: &Path, pid: u32) -> Option<PathBuf> {
    let start = mainloop_agent::process_start_time(pid)?;
    let path = dir.join(pid.to_string());
    match std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, format!("{pid} {start} {pid}\n")))
    {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(error = %e, "could not record a process's pid");
            None
        }
    }
}

/// Kills the processes a previous run of this runner left (it was killed without a
/// chance to stop them), and everything they started; returns how many were found.
/// The data directory is locked by this runner, so every record is a leftover.
pub fn reap_leftovers(data_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(data_dir.join("pids")) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if let Some((pid, start, group)) = std::fs::read_to_string(&path)
            .ok()
            .as_deref()
            .and_then(parse_record)
        {
            if mainloop_agent::kill_stale_agent(pid, start) {
                killed += 1;
            } else {
                // The leader is gone; what it left in its group is not.
                mainloop_agent::kill_orphaned_group(group);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

fn parse_record(text: &str) -> Option<(u32, u64, u32)> {
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let start: u64 = parts.next()?.parse().ok()?;
    let group: u32 = parts.next().map_or(Some(pid), |g| g.parse().ok())?;
    (pid > 1 && group > 1).then_some((pid, start, group))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mainloop_domain::Timestamp;

    fn config(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            agents: BTreeMap::from([(
                AgentName::parse("claude").unwrap(),
                "/opt/claude/bin/claude".to_owned(),
            )]),
            path: "/usr/bin:/bin".into(),
            slots: 2,
            sandbox: None,
        }
    }

    fn spawn(program: Program, cwd: &str) -> Spawn {
        Spawn {
            process: 1,
            task: TaskId::new_v7(Timestamp::from_millis(1_700_000_000_000)),
            program,
            args: vec!["-p".into()],
            cwd: cwd.into(),
            env: vec![
                ("HOME".into(), "/server/home".into()),
                ("PATH".into(), "/server/bin".into()),
                ("ANTHROPIC_API_KEY".into(), "k".into()),
            ],
        }
    }

    #[test]
    fn a_launch_runs_in_the_tasks_workspace_with_the_runners_own_paths() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let agent = Program::Agent(AgentName::parse("claude").unwrap());
        let s = spawn(agent, "sub");
        let launch = cfg.launch(&s).unwrap();
        let task = dir.path().join("tasks").join(s.task.to_string());
        assert_eq!(launch.program, "/opt/claude/bin/claude");
        assert_eq!(launch.cwd, task.join("work").join("sub"));
        for d in ["work", "home", "tmp"] {
            assert!(task.join(d).is_dir(), "{d}");
        }
        let env: BTreeMap<_, _> = launch.env.iter().cloned().collect();
        assert_eq!(env["HOME"], task.join("home").display().to_string());
        assert_eq!(env["TMPDIR"], task.join("tmp").display().to_string());
        assert_eq!(env["PATH"], "/usr/bin:/bin");
        assert_eq!(env["ANTHROPIC_API_KEY"], "k");
        assert_eq!(launch.env.len(), 4, "nothing else, nothing twice");

        let path = cfg
            .launch(&Spawn {
                program: Program::Path("sh".into()),
                cwd: String::new(),
                ..s
            })
            .unwrap();
        assert_eq!((path.program.as_str(), path.cwd), ("sh", task.join("work")));
        let other = Program::Agent(AgentName::parse("codex").unwrap());
        let err = cfg.launch(&spawn(other, "")).unwrap_err();
        assert!(err.contains("does not offer the agent codex"), "{err}");
        let err = cfg
            .launch(&spawn(Program::Path("sh".into()), "../x"))
            .unwrap_err();
        assert!(err.contains("leaves"), "{err}");
    }

    #[tokio::test]
    async fn a_spawn_out_of_bounds_fails_and_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let mut procs = Processes::new(Arc::new(config(dir.path())), tx);
        let reply = procs.handle(ServerMessage::Spawn(spawn(
            Program::Path("sh".into()),
            "/etc",
        )));
        assert!(
            matches!(&reply, Some(RunnerMessage::SpawnFailed { process: 1, reason }) if reason.contains("absolute")),
            "{reply:?}"
        );
        assert!(!dir.path().join("tasks").exists(), "nothing was made");
        assert_eq!(procs.busy(), 0);
    }

    #[test]
    fn records_are_read_strictly() {
        assert_eq!(parse_record("42 1000 42\n"), Some((42, 1000, 42)));
        assert_eq!(parse_record("42 1000"), Some((42, 1000, 42)));
        for bad in ["", "x 1", "42", "1 5 1", "42 5 0", "0 5 7"] {
            assert_eq!(parse_record(bad), None, "{bad}");
        }
    }
}

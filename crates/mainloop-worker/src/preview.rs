//! Live previews: a task's `preview` command run by `sh -c` in its worktree under the
//! task's confinement (sandbox and variables, `PORT` first), in a process group of its
//! own; started on demand, ready once its port answers, stopped (the whole group) after
//! an idle time without a proxied request, when the task ends, on request and at
//! shutdown. The tail of its output explains a preview that would not start.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use mainloop_agent::{Launch, Placed, Placement};
use mainloop_domain::TaskId;
use mainloop_engine::PreviewPort;
use mainloop_git::Worktree;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Runtime;

/// How much of a preview's output is kept for the error that explains its failure.
const TAIL_BYTES: usize = 4096;
/// How often a starting preview's port is tried.
const READY_POLL: Duration = Duration::from_millis(100);

/// The preview's timings (`[previews]` in the configuration).
#[derive(Clone, Copy, Debug)]
pub struct PreviewSettings {
    /// A preview without a proxied request for this long is stopped.
    pub idle_timeout: Duration,
    /// How long a preview may take to answer on its port.
    pub start_timeout: Duration,
}

/// The running previews. Cheap to clone; installed into the engine as its
/// [`PreviewPort`].
#[derive(Clone, Debug)]
pub struct Previews {
    inner: Arc<State>,
}

#[derive(Debug)]
struct State {
    rt: Runtime,
    settings: PreviewSettings,
    running: Mutex<HashMap<TaskId, Running>>,
    /// One start at a time per task, so two clicks start one process.
    starts: Mutex<HashMap<TaskId, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Debug)]
struct Running {
    addr: SocketAddr,
    last_used: Instant,
    stop: CancellationToken,
    /// The exit code once the group is gone.
    exited: watch::Receiver<Option<i32>>,
}

/// What a preview runs, and where.
pub(crate) struct Plan {
    pub command: String,
    /// The port it is told to listen on (`PORT`).
    pub port: u16,
    /// The task's worktree on this machine.
    pub wt: Worktree,
}

/// A preview process just started: where it will answer, and what to do once it ended.
pub(crate) struct Started {
    pub placed: Placed,
    pub addr: SocketAddr,
    pub on_exit: BoxFuture<'static, ()>,
}

/// The last `TAIL_BYTES` of a preview's output.
#[derive(Debug, Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        if self.0.len() > TAIL_BYTES {
            let cut = self.0.len() - TAIL_BYTES;
            self.0.drain(..cut);
        }
    }

    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim();
        if text.is_empty() {
            "(no output)".to_owned()
        } else {
            text.to_owned()
        }
    }
}

impl Runtime {
    /// The preview runner of this runtime, with its idle and end-of-task stops running
    /// until `shutdown`, which stops every preview.
    #[must_use]
    pub fn previews(&self, settings: PreviewSettings, shutdown: CancellationToken) -> Previews {
        let previews = Previews {
            inner: Arc::new(State {
                rt: self.clone(),
                settings,
                running: Mutex::new(HashMap::new()),
                starts: Mutex::new(HashMap::new()),
            }),
        };
        tokio::spawn(previews.clone().reap(shutdown));
        previews
    }
}

impl Previews {
    fn start_lock(&self, id: TaskId) -> Arc<tokio::sync::Mutex<()>> {
        match self.inner.starts.lock() {
            Ok(mut map) => map.entry(id).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Where task `id`'s live preview answers, marking it used.
    fn use_running(&self, id: TaskId) -> Option<SocketAddr> {
        let mut running = self.inner.running.lock().ok()?;
        let r = running.get_mut(&id)?;
        if r.exited.borrow().is_some() {
            return None;
        }
        r.last_used = Instant::now();
        Some(r.addr)
    }

    /// Records the preview's process beside the agents' (the runtime's start-up reap
    /// stops whatever a killed server left running there); the record's path.
    fn record_pid(&self, id: TaskId, pid: Option<u32>) -> Option<PathBuf> {
        let pid = pid?;
        let start = mainloop_agent::process_start_time(pid)?;
        let dir = &self.inner.rt.inner.config.pid_dir;
        let path = dir.join(format!("preview-{id}"));
        match std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, format!("{pid} {start}\n")))
        {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(error = %e, "could not record a preview's pid");
                None
            }
        }
    }

    /// What the preview of task `id` runs: its command, port and worktree.
    async fn plan(&self, id: TaskId) -> Result<Plan, String> {
        let engine = &self.inner.rt.inner.engine;
        let (_, task) = engine
            .task_any_user(id)
            .await
            .map_err(|e| format!("could not read the task: {e}"))?
            .ok_or("the task no longer exists")?;
        let (Some(path), Some(branch), Some(base)) = (task.worktree, task.branch, task.base_branch)
        else {
            return Err(
                "the task has no worktree yet; open its preview once its work started".to_owned(),
            );
        };
        let path = PathBuf::from(path);
        if !path.is_dir() {
            return Err("the task's worktree is gone".to_owned());
        }
        let env = engine
            .task_env(id)
            .await
            .map_err(|e| format!("could not read the task's environment: {e}"))?
            .unwrap_or_default();
        let command = env.preview.ok_or(
            "this task has no preview: set `preview` (and `ports = 1`) in the repository's .mainloop.toml",
        )?;
        let port = *env.ports.first().ok_or(
            "the preview needs a port: set `ports = 1` next to `preview` in the repository's .mainloop.toml",
        )?;
        Ok(Plan {
            command,
            port,
            wt: Worktree { path, branch, base },
        })
    }

    async fn start_now(self, id: TaskId) -> Result<SocketAddr, String> {
        let lock = self.start_lock(id);
        let _one = lock.lock().await;
        if let Some(addr) = self.use_running(id) {
            return Ok(addr);
        }
        // A preview that exited leaves its entry; a new one replaces it.
        self.stop_now(id).await;
        let plan = self.plan(id).await?;
        let started = match self.inner.rt.launcher() {
            // With a launcher, the preview runs in a pod of the task's own.
            Some(_) => self.inner.rt.preview_in_pod(id, &plan).await?,
            None => self.start_here(id, &plan).await?,
        };
        self.supervise(id, &plan.command, started).await
    }

    /// Starts the preview on this machine, in the task's worktree and confinement.
    async fn start_here(&self, id: TaskId, plan: &Plan) -> Result<Started, String> {
        let confined = self.inner.rt.confine(id, &plan.wt).await?;
        let placed = confined
            .placement()
            .spawn(Launch {
                program: "sh".to_owned(),
                args: vec!["-c".to_owned(), plan.command.clone()],
                cwd: plan.wt.path.clone(),
                env: confined.env,
            })
            .map_err(|e| format!("could not start the preview `{}`: {e}", plan.command))?;
        // Found and stopped at the next start should this server be killed outright.
        let record = self.record_pid(id, placed.process.pid());
        let on_exit: BoxFuture<'static, ()> = Box::pin(async move {
            if let Some(record) = record {
                let _ = std::fs::remove_file(record);
            }
        });
        Ok(Started {
            placed,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, plan.port)),
            on_exit,
        })
    }

    /// Keeps the started preview's output tail, stops it (its whole group) when asked,
    /// and waits until it answers.
    async fn supervise(
        &self,
        id: TaskId,
        command: &str,
        started: Started,
    ) -> Result<SocketAddr, String> {
        let Started {
            placed,
            addr,
            on_exit,
        } = started;
        let tail = Arc::new(Mutex::new(Tail::default()));
        tokio::spawn(keep_tail(placed.stdout, tail.clone()));
        tokio::spawn(keep_tail(placed.stderr, tail.clone()));
        let stop = CancellationToken::new();
        let (exit_tx, mut exited) = watch::channel(None);
        let (mut process, stdin, until) = (placed.process, placed.stdin, stop.clone());
        tokio::spawn(async move {
            // Open stdin: some dev servers quit when it closes.
            let _stdin = stdin;
            let code = tokio::select! {
                code = process.wait() => code.ok(),
                () = until.cancelled() => None,
            };
            // The whole group: what the shell started outlives it otherwise.
            process.kill_tree();
            let code = match code {
                Some(code) => code,
                None => process.wait().await.unwrap_or(-1),
            };
            on_exit.await;
            exit_tx.send_replace(Some(code));
        });
        if let Ok(mut running) = self.inner.running.lock() {
            running.insert(
                id,
                Running {
                    addr,
                    last_used: Instant::now(),
                    stop,
                    exited: exited.clone(),
                },
            );
        }
        let deadline = tokio::time::Instant::now() + self.inner.settings.start_timeout;
        let output = |tail: &Arc<Mutex<Tail>>| tail.lock().map(|t| t.text()).unwrap_or_default();
        loop {
            let code = *exited.borrow();
            if let Some(code) = code {
                self.stop_now(id).await;
                return Err(format!(
                    "the preview `{command}` exited (code {code}) before answering on {addr}; its output:\n{}",
                    output(&tail)
                ));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                tracing::info!(task = %id, %addr, "preview ready");
                return Ok(addr);
            }
            if tokio::time::Instant::now() >= deadline {
                self.stop_now(id).await;
                return Err(format!(
                    "the preview `{command}` did not answer on {addr} within {} s; its output:\n{}",
                    self.inner.settings.start_timeout.as_secs(),
                    output(&tail)
                ));
            }
            tokio::select! {
                _ = exited.changed() => {}
                () = tokio::time::sleep(READY_POLL) => {}
            }
        }
    }

    /// Stops task `id`'s preview and waits until its group is gone.
    async fn stop_now(&self, id: TaskId) {
        let entry = self
            .inner
            .running
            .lock()
            .ok()
            .and_then(|mut r| r.remove(&id));
        if let Some(mut r) = entry {
            r.stop.cancel();
            let _ = r.exited.wait_for(Option::is_some).await;
            tracing::info!(task = %id, "preview stopped");
        }
    }

    /// Stops idle previews, those of ended tasks and, at `shutdown`, all of them.
    async fn reap(self, shutdown: CancellationToken) {
        let tick = (self.inner.settings.idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(tick) => {}
            }
            let live: Vec<(TaskId, bool)> = self.inner.running.lock().map_or_else(
                |_| Vec::new(),
                |r| {
                    r.iter()
                        .map(|(id, r)| {
                            let idle = r.last_used.elapsed() >= self.inner.settings.idle_timeout;
                            (*id, idle || r.exited.borrow().is_some())
                        })
                        .collect()
                },
            );
            for (id, idle) in live {
                let ended = match self.inner.rt.inner.engine.task_any_user(id).await {
                    Ok(task) => task.is_none_or(|(_, t)| t.state.is_final()),
                    Err(_) => false,
                };
                if idle || ended {
                    self.stop_now(id).await;
                }
            }
        }
        let all: Vec<TaskId> = self
            .inner
            .running
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        for id in all {
            self.stop_now(id).await;
        }
    }
}

async fn keep_tail(mut from: std::pin::Pin<Box<dyn AsyncRead + Send>>, tail: Arc<Mutex<Tail>>) {
    let mut buf = vec![0_u8; 8192];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Ok(mut t) = tail.lock() {
            t.push(&buf[..n]);
        }
    }
}

impl PreviewPort for Previews {
    fn start(&self, task: TaskId) -> BoxFuture<'static, Result<SocketAddr, String>> {
        Box::pin(self.clone().start_now(task))
    }

    fn touch(&self, task: TaskId) -> Option<SocketAddr> {
        self.use_running(task)
    }

    fn stop(&self, task: TaskId) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move { this.stop_now(task).await })
    }
}

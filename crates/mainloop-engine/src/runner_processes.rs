//! Processes on runners: each live runner connection's outbox (what the server sends it)
//! and table of the processes started through it, and [`RemoteProcess`], such a process
//! as the server holds it — its stdin as an `AsyncWrite`, stdout and stderr as streams
//! of bytes, its exit and a kill. What a runner says is applied only to processes of its
//! own connection, and every process of a connection ends when the connection does.

use crate::runner_workspaces::Requests;
use crate::{Engine, EngineError, Result};
use bytes::Bytes;
use mainloop_domain::runner::{
    Chunk, MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES, Program, RunnerMessage, ServerMessage, Spawn,
    Stream as Which, check_spawn,
};
use mainloop_domain::{RunnerId, TaskId};
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, PollSender};

/// Messages queued for one runner's socket; a stdin writer waits while it is full.
pub const OUTBOX_CAPACITY: usize = 64;
/// Output of one process received but not yet read, beyond which the process is killed:
/// the socket is shared by all of a runner's processes, so one reader that stalls must
/// not hold up the others, nor fill the server's memory.
pub const MAX_UNREAD_OUTPUT: usize = 8 * 1024 * 1024;
/// Ignored messages logged per connection as warnings; the rest only at debug.
const WARNINGS: usize = 20;

/// How a process ended other than by exiting, as its handle reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    /// The runner's connection ended; the process was killed there.
    Lost(String),
    /// It never ran, or was killed for a reason of the server's.
    Failed(String),
}

impl From<Failure> for EngineError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Lost(m) => Self::RunnerLost(m),
            Failure::Failed(m) => Self::Invalid(m),
        }
    }
}

type Exit = std::result::Result<i32, Failure>;

struct Entry {
    /// Set by `started`; output and `exited` are accepted only after it.
    pid: Option<u32>,
    stdout: mpsc::UnboundedSender<Bytes>,
    stderr: mpsc::UnboundedSender<Bytes>,
    unread: Arc<AtomicUsize>,
    ended: CancellationToken,
    exit: oneshot::Sender<Exit>,
}

impl Entry {
    /// Ends its streams (after what they hold) and tells its handle how it ended.
    fn finish(self, how: Exit) {
        self.ended.cancel();
        let _ = self.exit.send(how);
    }
}

#[derive(Default)]
struct Table {
    closed: bool,
    live: HashMap<u64, Entry>,
    ignored: usize,
}

/// One live runner connection's outbox, processes and workspace requests.
pub(crate) struct Connection {
    pub(crate) runner: RunnerId,
    pub(crate) outbox: mpsc::Sender<ServerMessage>,
    table: Mutex<Table>,
    /// The `prepare`s and `save`s sent and not yet answered (`runner_workspaces.rs`).
    pub(crate) requests: Requests,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("runner", &self.runner)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection and the receiving end of its outbox (the socket's to drain).
    pub(crate) fn new(runner: RunnerId) -> (Arc<Self>, mpsc::Receiver<ServerMessage>) {
        let (outbox, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let conn = Self {
            runner,
            outbox,
            table: Mutex::new(Table::default()),
            requests: Requests::default(),
        };
        (Arc::new(conn), rx)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn lost(&self) -> String {
        format!(
            "the connection to runner {} was lost; what ran there was killed",
            self.runner
        )
    }

    /// Registers `spawn` and queues it for the runner.
    pub(crate) fn spawn(&self, spawn: Spawn) -> Result<RemoteProcess> {
        check_spawn(&spawn).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let id = spawn.process;
        let msg = ServerMessage::Spawn(spawn);
        let size = serde_json::to_string(&msg).map_or(usize::MAX, |t| t.len());
        if size > MAX_MESSAGE_BYTES {
            return Err(EngineError::Invalid(format!(
                "the spawn message is {size} bytes; a runner accepts at most {MAX_MESSAGE_BYTES}"
            )));
        }
        let (stdout_tx, stdout_rx) = mpsc::unbounded_channel();
        let (stderr_tx, stderr_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        let unread = Arc::new(AtomicUsize::new(0));
        let ended = CancellationToken::new();
        let mut table = self.table();
        if table.closed {
            return Err(EngineError::RunnerLost(self.lost()));
        }
        // Queued under the lock, so that a close racing this spawn either finds the
        // entry or refused it above.
        self.outbox.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => EngineError::RunnerLost(format!(
                "runner {}'s connection is backed up; try elsewhere",
                self.runner
            )),
            mpsc::error::TrySendError::Closed(_) => EngineError::RunnerLost(self.lost()),
        })?;
        table.live.insert(
            id,
            Entry {
                pid: None,
                stdout: stdout_tx,
                stderr: stderr_tx,
                unread: Arc::clone(&unread),
                ended: ended.clone(),
                exit: exit_tx,
            },
        );
        drop(table);
        let output = |rx| RemoteOutput {
            rx,
            unread: Arc::clone(&unread),
        };
        Ok(RemoteProcess {
            id,
            stdin: RemoteStdin {
                process: id,
                sender: PollSender::new(self.outbox.clone()),
                ended: ended.clone(),
                closed: false,
            },
            stdout: output(stdout_rx),
            stderr: output(stderr_rx),
            handle: RemoteHandle {
                process: id,
                outbox: self.outbox.clone(),
                ended,
                exit: Some(exit_rx),
                outcome: None,
            },
        })
    }

    /// Applies what the runner said about one of its processes, or answered to one of
    /// its workspace requests. A message naming a process this connection did not
    /// start, or one that already ended, is ignored.
    pub(crate) fn deliver(&self, msg: RunnerMessage) {
        let mut table = self.table();
        let ignored = match msg {
            RunnerMessage::Started { process, pid } => match table.live.get_mut(&process) {
                Some(entry) if entry.pid.is_none() => {
                    entry.pid = Some(pid);
                    None
                }
                _ => Some(("started", process)),
            },
            RunnerMessage::SpawnFailed { process, reason } => match table.live.remove(&process) {
                Some(entry) if entry.pid.is_none() => {
                    entry.finish(Err(Failure::Failed(format!(
                        "the runner could not start it: {reason}"
                    ))));
                    None
                }
                Some(entry) => {
                    table.live.insert(process, entry);
                    Some(("spawn_failed", process))
                }
                None => Some(("spawn_failed", process)),
            },
            RunnerMessage::Output {
                process,
                stream,
                data,
            } => match table.live.get(&process) {
                Some(entry) if entry.pid.is_some() => {
                    if !push(entry, stream, data) {
                        if let Some(entry) = table.live.remove(&process) {
                            entry.finish(Err(Failure::Failed(format!(
                                "more than {} MiB of its output waited unread; it was killed",
                                MAX_UNREAD_OUTPUT >> 20
                            ))));
                        }
                        self.send_soon(ServerMessage::Kill { process });
                    }
                    None
                }
                _ => Some(("output", process)),
            },
            RunnerMessage::Exited { process, code } => match table.live.remove(&process) {
                Some(entry) if entry.pid.is_some() => {
                    entry.finish(Ok(code));
                    None
                }
                Some(entry) => {
                    table.live.insert(process, entry);
                    Some(("exited", process))
                }
                None => Some(("exited", process)),
            },
            answer @ (RunnerMessage::Prepared { .. }
            | RunnerMessage::Saved { .. }
            | RunnerMessage::RequestFailed { .. }) => {
                self.requests.deliver(self.runner, answer);
                None
            }
            RunnerMessage::Hello(_) | RunnerMessage::Heartbeat { .. } => Some(("hello", 0)),
        };
        if let Some((kind, process)) = ignored {
            table.ignored += 1;
            if table.ignored <= WARNINGS {
                tracing::warn!(runner = %self.runner, kind, process, "ignored a runner's message about a process it was not given or that already ended");
            } else {
                tracing::debug!(runner = %self.runner, kind, process, "ignored a runner's message");
            }
        }
    }

    /// Ends every process of this connection: their streams end and their handles
    /// report the connection lost, as do its unanswered requests. Later spawns and
    /// requests are refused.
    pub(crate) fn close(&self) {
        let mut table = self.table();
        table.closed = true;
        let lost = self.lost();
        for (_, entry) in table.live.drain() {
            entry.finish(Err(Failure::Lost(lost.clone())));
        }
        drop(table);
        self.requests.close(&lost);
    }

    /// Queues `msg` without waiting: now if there is room, else as soon as there is.
    fn send_soon(&self, msg: ServerMessage) {
        send_soon(&self.outbox, msg);
    }
}

pub(crate) fn send_soon(outbox: &mpsc::Sender<ServerMessage>, msg: ServerMessage) {
    match outbox.try_send(msg) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(msg)) => {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let outbox = outbox.clone();
                handle.spawn(async move {
                    let _ = outbox.send(msg).await;
                });
            }
        }
    }
}

/// Hands a chunk to its stream's reader; false when the process has too much unread.
fn push(entry: &Entry, stream: Which, data: Chunk) -> bool {
    let len = data.0.len();
    if entry.unread.load(Ordering::Acquire).saturating_add(len) > MAX_UNREAD_OUTPUT {
        return false;
    }
    let tx = match stream {
        Which::Stdout => &entry.stdout,
        Which::Stderr => &entry.stderr,
    };
    entry.unread.fetch_add(len, Ordering::AcqRel);
    // A reader that is gone (a caller not reading stderr) drops what it would have read.
    if tx.send(Bytes::from(data.0)).is_err() {
        entry.unread.fetch_sub(len, Ordering::AcqRel);
    }
    true
}

/// A process on a runner, as the server holds it.
#[derive(Debug)]
pub struct RemoteProcess {
    /// The server's number for it.
    pub id: u64,
    pub stdin: RemoteStdin,
    pub stdout: RemoteOutput,
    pub stderr: RemoteOutput,
    pub handle: RemoteHandle,
}

/// A remote process's standard input: each write of up to 32 KiB becomes one `stdin`
/// message; shutting it down (or dropping it) sends `close_stdin`. Writes fail with a
/// broken pipe once the process ended.
pub struct RemoteStdin {
    process: u64,
    sender: PollSender<ServerMessage>,
    ended: CancellationToken,
    closed: bool,
}

impl std::fmt::Debug for RemoteStdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStdin")
            .field("process", &self.process)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

fn broken() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the remote process's input is closed",
    )
}

impl AsyncWrite for RemoteStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closed || self.ended.is_cancelled() {
            return Poll::Ready(Err(broken()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.sender.poll_reserve(cx)).map_err(|_| broken())?;
        let n = buf.len().min(MAX_CHUNK_BYTES);
        let msg = ServerMessage::Stdin {
            process: self.process,
            data: Chunk(buf[..n].to_vec()),
        };
        self.sender.send_item(msg).map_err(|_| broken())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued is as far as the server can take it; the runner writes in order.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed || self.ended.is_cancelled() {
            self.closed = true;
            return Poll::Ready(Ok(()));
        }
        ready!(self.sender.poll_reserve(cx)).map_err(|_| broken())?;
        let msg = ServerMessage::CloseStdin {
            process: self.process,
        };
        self.sender.send_item(msg).map_err(|_| broken())?;
        self.closed = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for RemoteStdin {
    fn drop(&mut self) {
        // A dropped local pipe is end of input; the same here.
        if !self.closed
            && !self.ended.is_cancelled()
            && let Some(outbox) = self.sender.get_ref()
        {
            send_soon(
                outbox,
                ServerMessage::CloseStdin {
                    process: self.process,
                },
            );
        }
    }
}

/// One of a remote process's output streams: its chunks in order; it ends after the
/// process exited (once all it wrote was read), or when the connection is lost.
#[derive(Debug)]
pub struct RemoteOutput {
    rx: mpsc::UnboundedReceiver<Bytes>,
    unread: Arc<AtomicUsize>,
}

impl futures::Stream for RemoteOutput {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let next = ready!(self.rx.poll_recv(cx));
        if let Some(chunk) = &next {
            self.unread.fetch_sub(chunk.len(), Ordering::AcqRel);
        }
        Poll::Ready(next)
    }
}

/// A remote process's exit and kill. Dropped before the process ended, it kills it.
#[derive(Debug)]
pub struct RemoteHandle {
    process: u64,
    outbox: mpsc::Sender<ServerMessage>,
    ended: CancellationToken,
    exit: Option<oneshot::Receiver<Exit>>,
    outcome: Option<Exit>,
}

impl RemoteHandle {
    /// Waits for the process to end: its exit code (a death by signal N reads as
    /// 128 + N), or why it never ran or was cut off.
    ///
    /// # Errors
    /// [`EngineError::RunnerLost`] when the runner's connection ended first (the
    /// process was killed there; resume the work elsewhere); [`EngineError::Invalid`]
    /// when the runner could not start it, or it was killed for output left unread.
    pub async fn wait(&mut self) -> Result<i32> {
        if self.outcome.is_none() {
            let lost = || Failure::Lost("the runner's connection was lost".to_owned());
            // The receiver stays in place until it answers: a wait that is dropped
            // midway loses nothing.
            let how = match &mut self.exit {
                Some(rx) => rx.await.unwrap_or_else(|_| Err(lost())),
                None => Err(lost()),
            };
            self.exit = None;
            self.outcome = Some(how);
        }
        match &self.outcome {
            Some(Ok(code)) => Ok(*code),
            Some(Err(f)) => Err(f.clone().into()),
            None => Err(EngineError::Internal("no outcome".to_owned())),
        }
    }

    /// Whether the process has ended (exited, failed to start, or cut off).
    #[must_use]
    pub fn has_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Asks the runner to kill the process and everything it started; harmless once it
    /// ended. `wait` then reports its exit (137 for SIGKILL).
    pub fn kill(&self) {
        if !self.ended.is_cancelled() {
            send_soon(
                &self.outbox,
                ServerMessage::Kill {
                    process: self.process,
                },
            );
        }
    }
}

impl Drop for RemoteHandle {
    fn drop(&mut self) {
        // As a local child is killed on drop: nobody is left to wait for it.
        self.kill();
    }
}

impl Engine {
    /// Starts a process on a connected runner, in `task`'s workspace there (`cwd`
    /// relative to it, `""` its root), with exactly `env` (the runner sets `HOME`,
    /// `TMPDIR` and `PATH`). Returns at once: a process the runner cannot start shows
    /// as streams that end and a `wait` that fails.
    ///
    /// # Errors
    /// The runner is not connected, or its connection is backed up
    /// ([`EngineError::RunnerLost`]); a spawn out of the protocol's bounds (a `cwd`
    /// outside the workspace, too many or too large arguments or variables:
    /// [`EngineError::Invalid`]).
    pub fn runner_spawn(
        &self,
        runner: RunnerId,
        task: TaskId,
        program: Program,
        args: Vec<String>,
        cwd: String,
        env: Vec<(String, String)>,
    ) -> Result<RemoteProcess> {
        let registry = &self.inner.runners;
        let conn = registry
            .connection(runner)
            .ok_or_else(|| EngineError::RunnerLost(format!("runner {runner} is not connected")))?;
        let process = registry.next_process();
        conn.spawn(Spawn {
            process,
            task,
            program,
            args,
            cwd,
            env,
        })
    }
}

#[cfg(test)]
#[path = "runner_processes_tests.rs"]
mod tests;

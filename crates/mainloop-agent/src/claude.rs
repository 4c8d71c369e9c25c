//! Claude Code as an [`Agent`]: its command line, the reader tasks for stdout (parsed
//! into events) and stderr (a bounded tail), the writer task for stdin, and reaping.
//! Where the process runs is the [`Placement`]'s business.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::placement::{Launch, Placed, PlacedProcess, Placement};
use crate::protocol::{self, MALFORMED_LINE_BYTES};
use crate::{Agent, AgentError, AgentEvent, AgentSession, ControlReply, RunSpec};

/// Default cap on one stdout line; a longer line becomes `Malformed` and is dropped
/// (a single huge tool result must not grow our memory without bound).
pub const DEFAULT_MAX_LINE_BYTES: usize = 10 * 1024 * 1024;
/// How many stderr lines a session keeps.
pub const STDERR_TAIL_LINES: usize = 40;
/// Cap on one kept stderr line.
const STDERR_LINE_BYTES: usize = 4096;
/// Events buffered between the stdout reader and `next_event`; when full, the reader
/// stops reading and the CLI blocks on its stdout pipe, which is the backpressure we want.
const EVENT_BUFFER: usize = 256;
/// After the process exits, how long to wait for the stderr reader to drain: a
/// grandchild that inherited stderr could otherwise hold us forever.
const STDERR_DRAIN: Duration = Duration::from_secs(2);

/// The Claude Code CLI (or anything speaking its stream-json protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaudeCode {
    command: Vec<String>,
    max_line_bytes: usize,
}

impl Default for ClaudeCode {
    fn default() -> Self {
        Self::new(vec!["claude".to_owned()])
    }
}

impl ClaudeCode {
    /// `command` is the program and any leading arguments, e.g. `["claude"]` or
    /// `["/repo/node_modules/.bin/claude"]`; the stream-json flags are appended.
    pub fn new(command: Vec<String>) -> Self {
        Self {
            command,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// Overrides the stdout line cap ([`DEFAULT_MAX_LINE_BYTES`]).
    #[must_use]
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max.max(1);
        self
    }

    /// What `start` asks the placement to run for `spec`.
    pub fn launch(&self, spec: &RunSpec) -> Result<Launch, AgentError> {
        let Some((program, leading)) = self.command.split_first() else {
            return Err(AgentError::Spawn("empty command".to_owned()));
        };
        let mut args = leading.to_vec();
        args.extend(protocol::claude_args(
            &spec.session,
            spec.mode,
            spec.model.as_deref(),
            spec.append_system_prompt.as_deref(),
        ));
        Ok(Launch {
            program: program.clone(),
            args,
            cwd: spec.cwd.clone(),
            env: spec.env.clone(),
        })
    }

    /// Like [`Agent::start`], with the concrete session type.
    pub fn spawn(
        &self,
        spec: &RunSpec,
        placement: &dyn Placement,
    ) -> Result<ClaudeSession, AgentError> {
        let Placed {
            stdin,
            stdout,
            stderr,
            process,
        } = placement.spawn(self.launch(spec)?)?;
        let (event_tx, events) = mpsc::channel(EVENT_BUFFER);
        let stdout_task = tokio::spawn(read_stdout(stdout, event_tx, self.max_line_bytes));
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let stderr_task = tokio::spawn(read_stderr(stderr, Arc::clone(&tail)));
        let (writes, write_rx) = mpsc::channel(16);
        let stdin_task = tokio::spawn(write_stdin(stdin, write_rx));

        let session = ClaudeSession {
            process,
            code: None,
            exit_reported: false,
            events,
            writes: Some(writes),
            tail,
            stdout_task,
            stderr_task: Some(stderr_task),
            stdin_task,
        };
        // Queued, not awaited: `start` is synchronous. Failure surfaces on the next write.
        session.queue_write(protocol::initialize_line());
        Ok(session)
    }
}

impl Agent for ClaudeCode {
    fn name(&self) -> &str {
        "claude-code"
    }

    fn start(
        &self,
        spec: RunSpec,
        placement: &dyn Placement,
    ) -> Result<Box<dyn AgentSession>, AgentError> {
        Ok(Box::new(self.spawn(&spec, placement)?))
    }
}

struct WriteRequest {
    line: String,
    done: Option<oneshot::Sender<io::Result<()>>>,
}

/// One running CLI process. Dropping it kills the process and everything it started,
/// if it is still running.
pub struct ClaudeSession {
    process: Box<dyn PlacedProcess>,
    /// The exit code, once reaped.
    code: Option<i32>,
    /// Whether `next_event` has returned the `Exited` event.
    exit_reported: bool,
    events: mpsc::Receiver<AgentEvent>,
    /// None once input is closed.
    writes: Option<mpsc::Sender<WriteRequest>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    stdout_task: JoinHandle<()>,
    stderr_task: Option<JoinHandle<()>>,
    stdin_task: JoinHandle<()>,
}

impl fmt::Debug for ClaudeSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaudeSession")
            .field("process", &self.process)
            .field("code", &self.code)
            .field("input_open", &self.writes.is_some())
            .finish_non_exhaustive()
    }
}

impl ClaudeSession {
    fn queue_write(&self, line: String) {
        if let Some(writes) = &self.writes {
            let _ = writes.try_send(WriteRequest { line, done: None });
        }
    }

    async fn write(&mut self, line: String) -> Result<(), AgentError> {
        let writes = self.writes.as_ref().ok_or(AgentError::Closed)?;
        let (done, result) = oneshot::channel();
        writes
            .send(WriteRequest {
                line,
                done: Some(done),
            })
            .await
            .map_err(|_| AgentError::Closed)?;
        match result.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => Err(AgentError::Closed),
            Ok(Err(e)) => Err(AgentError::Io(e.to_string())),
            Err(_) => Err(AgentError::Closed),
        }
    }

    /// Waits for the process to exit, records its code and lets stderr drain.
    async fn reap(&mut self) {
        if self.code.is_none() {
            match self.process.wait().await {
                Ok(code) => self.code = Some(code),
                Err(e) => tracing::warn!(error = %e, "waiting for the agent failed"),
            }
        }
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(STDERR_DRAIN, task).await;
        }
    }

    fn lock_tail(&self) -> MutexGuard<'_, VecDeque<String>> {
        self.tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl AgentSession for ClaudeSession {
    fn next_event(&mut self) -> BoxFuture<'_, Option<AgentEvent>> {
        Box::pin(async move {
            if let Some(event) = self.events.recv().await {
                return Some(event);
            }
            // stdout is closed: the process has exited or is about to.
            self.reap().await;
            if self.exit_reported {
                return None;
            }
            self.exit_reported = true;
            let tail = self.stderr_tail();
            Some(AgentEvent::Exited {
                code: self.code,
                failure: protocol::exit_failure(self.code, &tail),
            })
        })
    }

    fn reply(
        &mut self,
        request_id: &str,
        reply: ControlReply,
    ) -> BoxFuture<'_, Result<(), AgentError>> {
        let line = protocol::control_response_line(request_id, &reply);
        Box::pin(self.write(line))
    }

    fn send_user_message(&mut self, text: &str) -> BoxFuture<'_, Result<(), AgentError>> {
        let line = protocol::user_message_line(text);
        Box::pin(self.write(line))
    }

    fn close_input(&mut self) -> BoxFuture<'_, ()> {
        // The writer task finishes queued lines, then drops stdin: the CLI sees EOF.
        self.writes = None;
        Box::pin(async {})
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.writes = None;
            self.process.kill_tree();
            self.reap().await;
        })
    }

    fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    fn stderr_tail(&self) -> Vec<String> {
        self.lock_tail().iter().cloned().collect()
    }

    fn exit_code(&self) -> Option<i32> {
        self.code
    }
}

impl Drop for ClaudeSession {
    fn drop(&mut self) {
        // Dropping the placed process kills what is left of it.
        self.stdout_task.abort();
        self.stdin_task.abort();
        if let Some(task) = &self.stderr_task {
            task.abort();
        }
    }
}

async fn write_stdin(
    mut stdin: Pin<Box<dyn AsyncWrite + Send>>,
    mut requests: mpsc::Receiver<WriteRequest>,
) {
    while let Some(WriteRequest { mut line, done }) = requests.recv().await {
        line.push('\n');
        let result = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        }
        .await;
        let failed = result.is_err();
        if let Some(done) = done {
            let _ = done.send(result);
        }
        if failed {
            // The pipe is broken for good; later writers see the channel closed.
            break;
        }
    }
}

/// Reads `stdout` as lines into a channel, for an adapter that reads the stream-json
/// lines itself (the main thread's). A line over `max_line_bytes` is dropped with a
/// warning; the channel closes at the end of the output.
pub fn line_reader(
    stdout: impl AsyncRead + Unpin + Send + 'static,
    max_line_bytes: usize,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while let Ok(Some(len)) = read_line_capped(&mut reader, &mut buf, max_line_bytes).await {
            if len > max_line_bytes {
                tracing::warn!(len, "dropped an output line over the size limit");
                continue;
            }
            if tx
                .send(String::from_utf8_lossy(&buf).into_owned())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

/// Keeps the last [`STDERR_TAIL_LINES`] lines of `stderr` (for failure reports).
pub fn stderr_tail(
    stderr: impl AsyncRead + Unpin + Send + 'static,
) -> Arc<Mutex<VecDeque<String>>> {
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
    tokio::spawn(read_stderr(stderr, Arc::clone(&tail)));
    tail
}

async fn read_stdout(
    stdout: impl AsyncRead + Unpin,
    events: mpsc::Sender<AgentEvent>,
    max_line_bytes: usize,
) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    let mut lines = protocol::LineParser::default();
    loop {
        let parsed = match read_line_capped(&mut reader, &mut buf, max_line_bytes).await {
            Ok(None) => break,
            Ok(Some(len)) if len > max_line_bytes => {
                vec![AgentEvent::Malformed {
                    line: protocol::truncate_bytes(
                        &String::from_utf8_lossy(&buf),
                        MALFORMED_LINE_BYTES,
                    ),
                    error: format!("line of {len} bytes exceeds the {max_line_bytes}-byte limit"),
                }]
            }
            Ok(Some(_)) => lines.parse(&String::from_utf8_lossy(&buf)),
            Err(e) => {
                tracing::warn!(error = %e, "reading the agent's stdout failed");
                break;
            }
        };
        for event in parsed {
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Keeps the last lines an agent writes to stderr in `tail` (for failure reports), until
/// its stderr closes.
pub async fn read_stderr(stderr: impl AsyncRead + Unpin, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    while let Ok(Some(_)) = read_line_capped(&mut reader, &mut buf, STDERR_LINE_BYTES).await {
        let line = String::from_utf8_lossy(&buf).into_owned();
        let mut tail = tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// Reads one line into `buf` (without the newline or a trailing `\r`), keeping at most
/// `cap` bytes of it but consuming all of it. Returns the line's full length, or None
/// at end of input.
pub async fn read_line_capped(
    reader: &mut (impl AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Option<usize>> {
    buf.clear();
    let mut total = 0usize;
    let mut saw_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            break;
        }
        saw_any = true;
        let newline = available.iter().position(|b| *b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        total = total.saturating_add(chunk.len());
        let consumed = newline.map_or(available.len(), |i| i + 1);
        reader.consume(consumed);
        if newline.is_some() {
            break;
        }
    }
    if !saw_any {
        return Ok(None);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn capped_reader_consumes_long_lines_whole() {
        let input: &[u8] = b"short\r\nxxxxxxxxxxxxxxxxxxxx\nlast";
        let mut reader = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Ok(Some(len)) = read_line_capped(&mut reader, &mut buf, 8).await {
            got.push((len, String::from_utf8_lossy(&buf).into_owned()));
        }
        assert_eq!(
            got,
            [
                (6, "short".to_owned()),
                (20, "xxxxxxxx".to_owned()),
                (4, "last".to_owned())
            ]
        );
    }
}

//! The `codex app-server` process behind the port: its command line and environment,
//! a reader task for stdout (lines capped, never held whole past the cap), a driver
//! task that feeds the [`Conversation`] and carries out its effects, a writer task for
//! stdin, the stderr tail, and reaping. Where the process runs is the
//! [`Placement`]'s business.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use mainloop_agent::{
    Agent, AgentError, AgentEvent, AgentFailure, AgentMode, AgentSession, ControlReply, Launch,
    Placed, PlacedProcess, Placement, RunSpec, read_line_capped, read_stderr,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::protocol::{Conversation, Effects, MAX_LINE_BYTES, Opening};

/// Events buffered for `next_event`; when full, the driver stops reading and Codex
/// blocks on its stdout pipe, which is the backpressure we want.
const EVENT_BUFFER: usize = 256;
/// After the process exits, how long to wait for stderr to drain: a grandchild that
/// inherited stderr could otherwise hold us forever.
const STDERR_DRAIN: Duration = Duration::from_secs(2);
/// How many stderr lines a session keeps.
const STDERR_TAIL_LINES: usize = 40;

/// OpenAI's Codex CLI, driven through `codex app-server`.
///
/// A new session is a new Codex thread, whose id Codex chooses: the caller's id in
/// `SessionRef::New` cannot be used, so the `SessionStarted` event carries Codex's id,
/// and that is the id the caller must store to resume the thread
/// (`SessionRef::Resume`) in a later process.
///
/// The environment is `RunSpec::env`. Codex keeps its threads and configuration in
/// `CODEX_HOME`, by default `<HOME>/.codex`, and refuses to sandbox commands when
/// `CODEX_HOME` or `TMPDIR` lies under the temporary directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codex {
    command: Vec<String>,
    max_line_bytes: usize,
}

impl Default for Codex {
    fn default() -> Self {
        Self::new(vec!["codex".to_owned()])
    }
}

impl Codex {
    /// `command` is the program and any leading arguments (`-c key=value` overrides,
    /// e.g. a model provider); `app-server` is appended unless it is there already.
    #[must_use]
    pub fn new(command: Vec<String>) -> Self {
        Self {
            command,
            max_line_bytes: MAX_LINE_BYTES,
        }
    }

    /// Overrides the stdout line cap ([`MAX_LINE_BYTES`]).
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
        if !args.iter().any(|a| a == "app-server") {
            args.push("app-server".to_owned());
        }
        // `CODEX_HOME` is left to Codex unless the env names one: its default,
        // `<HOME>/.codex`, is created when missing (a fresh sandboxed home has none),
        // while a `CODEX_HOME` that does not exist is a fatal error.
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
    ) -> Result<CodexSession, AgentError> {
        let Placed {
            stdin,
            stdout,
            stderr,
            process,
        } = placement.spawn(self.launch(spec)?)?;
        let (line_tx, line_rx) = mpsc::channel(EVENT_BUFFER);
        let stdout_task = tokio::spawn(read_stdout(stdout, line_tx, self.max_line_bytes));
        let (write_tx, write_rx) = mpsc::unbounded_channel();
        let stdin_task = tokio::spawn(write_stdin(stdin, write_rx));
        let (event_tx, events) = mpsc::channel(EVENT_BUFFER);
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let mut conversation = Conversation::new(Opening::of(spec));
        let first = conversation.start();
        let driver_task = tokio::spawn(drive(
            conversation,
            first,
            line_rx,
            command_rx,
            event_tx,
            write_tx,
        ));
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let stderr_task = tokio::spawn(read_stderr(stderr, Arc::clone(&tail)));
        Ok(CodexSession {
            process,
            code: None,
            exit_reported: false,
            events,
            commands: Some(command_tx),
            tail,
            stderr_task: Some(stderr_task),
            tasks: [stdout_task, stdin_task, driver_task],
        })
    }
}

impl Agent for Codex {
    fn name(&self) -> &str {
        "codex"
    }

    fn start(
        &self,
        spec: RunSpec,
        placement: &dyn Placement,
    ) -> Result<Box<dyn AgentSession>, AgentError> {
        Ok(Box::new(self.spawn(&spec, placement)?))
    }
}

/// What the host asks of the driver.
enum Command {
    Message(String),
    /// The turns after this one run in this mode.
    Mode(AgentMode),
    Reply(String, ControlReply),
    /// Interrupt the running turn, then close Codex's stdin.
    Close,
}

/// One line of stdout, or the start of one too long to keep.
enum Incoming {
    Line(String),
    /// Its start, its length, and the limit it broke.
    Oversized(String, usize, usize),
}

/// One running `codex app-server`. Dropping it kills the process and everything it
/// started, if it is still running.
pub struct CodexSession {
    process: Box<dyn PlacedProcess>,
    code: Option<i32>,
    exit_reported: bool,
    events: mpsc::Receiver<AgentEvent>,
    /// None once input is closed.
    commands: Option<mpsc::UnboundedSender<Command>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr_task: Option<JoinHandle<()>>,
    tasks: [JoinHandle<()>; 3],
}

impl fmt::Debug for CodexSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodexSession")
            .field("process", &self.process)
            .field("code", &self.code)
            .field("input_open", &self.commands.is_some())
            .finish_non_exhaustive()
    }
}

impl CodexSession {
    fn send(&self, command: Command) -> Result<(), AgentError> {
        let commands = self.commands.as_ref().ok_or(AgentError::Closed)?;
        commands.send(command).map_err(|_| AgentError::Closed)
    }

    async fn reap(&mut self) {
        if self.code.is_none() {
            match self.process.wait().await {
                Ok(code) => self.code = Some(code),
                Err(e) => tracing::warn!(error = %e, "waiting for codex failed"),
            }
        }
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(STDERR_DRAIN, task).await;
        }
    }
}

impl AgentSession for CodexSession {
    fn next_event(&mut self) -> BoxFuture<'_, Option<AgentEvent>> {
        Box::pin(async move {
            if let Some(event) = self.events.recv().await {
                return Some(event);
            }
            self.reap().await;
            if self.exit_reported {
                return None;
            }
            self.exit_reported = true;
            Some(AgentEvent::Exited {
                code: self.code,
                failure: exit_failure(self.code, &self.stderr_tail()),
            })
        })
    }

    fn reply(
        &mut self,
        request_id: &str,
        reply: ControlReply,
    ) -> BoxFuture<'_, Result<(), AgentError>> {
        let sent = self.send(Command::Reply(request_id.to_owned(), reply));
        Box::pin(async move { sent })
    }

    fn set_mode(&mut self, mode: AgentMode) -> BoxFuture<'_, Result<(), AgentError>> {
        let sent = self.send(Command::Mode(mode));
        Box::pin(async move { sent })
    }

    fn send_user_message(&mut self, text: &str) -> BoxFuture<'_, Result<(), AgentError>> {
        let sent = self.send(Command::Message(text.to_owned()));
        Box::pin(async move { sent })
    }

    fn close_input(&mut self) -> BoxFuture<'_, ()> {
        if let Some(commands) = self.commands.take() {
            let _ = commands.send(Command::Close);
        }
        Box::pin(async {})
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.commands = None;
            self.process.kill_tree();
            self.reap().await;
        })
    }

    fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    fn stderr_tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn exit_code(&self) -> Option<i32> {
        self.code
    }
}

impl Drop for CodexSession {
    fn drop(&mut self) {
        // Dropping the placed process kills what is left of it.
        for task in self.tasks.iter().chain(&self.stderr_task) {
            task.abort();
        }
    }
}

/// What went wrong when Codex exited with `code`; None for a clean exit.
#[must_use]
pub fn exit_failure(code: Option<i32>, stderr_tail: &[String]) -> Option<AgentFailure> {
    (code != Some(0)).then(|| AgentFailure::Other {
        reason: stderr_tail.join("\n"),
    })
}

/// Feeds the conversation with Codex's lines and the host's commands, and carries out
/// its effects, until Codex's stdout ends.
async fn drive(
    mut conversation: Conversation,
    first: Effects,
    mut lines: mpsc::Receiver<Incoming>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<AgentEvent>,
    writes: mpsc::UnboundedSender<String>,
) {
    let mut writes = Some(writes);
    let mut commands_open = true;
    let mut effects = first;
    loop {
        for line in effects.lines.drain(..) {
            if let Some(w) = &writes {
                let _ = w.send(line);
            }
        }
        if effects.close_input {
            // The writer finishes what is queued, then drops stdin: Codex sees EOF.
            writes = None;
        }
        for event in effects.events.drain(..) {
            if events.send(event).await.is_err() {
                return;
            }
        }
        effects = tokio::select! {
            incoming = lines.recv() => match incoming {
                Some(Incoming::Line(line)) => conversation.on_line(&line),
                Some(Incoming::Oversized(start, len, limit)) => Effects {
                    events: vec![Conversation::oversized(&start, len, limit)],
                    ..Effects::default()
                },
                None => return,
            },
            command = commands.recv(), if commands_open => match command {
                Some(Command::Message(text)) => conversation.user_message(&text),
                Some(Command::Mode(mode)) => {
                    conversation.set_mode(mode);
                    Effects::default()
                }
                Some(Command::Reply(id, reply)) => conversation.reply(&id, &reply)
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "a reply to codex was dropped");
                        Effects::default()
                    }),
                Some(Command::Close) | None => {
                    commands_open = false;
                    let mut closing = conversation.interrupt();
                    closing.close_input = true;
                    closing
                }
            },
        };
    }
}

async fn write_stdin(
    mut stdin: Pin<Box<dyn AsyncWrite + Send>>,
    mut lines: mpsc::UnboundedReceiver<String>,
) {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        }
        .await;
        if let Err(e) = written {
            tracing::debug!(error = %e, "codex's stdin is closed");
            break;
        }
    }
}

async fn read_stdout(
    stdout: impl AsyncRead + Unpin,
    lines: mpsc::Sender<Incoming>,
    max_line_bytes: usize,
) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        let incoming = match read_line_capped(&mut reader, &mut buf, max_line_bytes).await {
            Ok(None) => break,
            Ok(Some(len)) if len > max_line_bytes => Incoming::Oversized(
                String::from_utf8_lossy(&buf).into_owned(),
                len,
                max_line_bytes,
            ),
            Ok(Some(_)) => Incoming::Line(String::from_utf8_lossy(&buf).into_owned()),
            Err(e) => {
                tracing::warn!(error = %e, "reading codex's stdout failed");
                break;
            }
        };
        if lines.send(incoming).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mainloop_agent::{AgentMode, SessionRef};

    #[test]
    fn the_command_line_ends_in_app_server_and_codex_home_is_codexs_default() {
        let agent = Codex::new(vec!["codex".into(), "-c".into(), "model=x".into()]);
        let spec = |env: Vec<(&str, &str)>| RunSpec {
            cwd: "/w".into(),
            session: SessionRef::New("u".into()),
            mode: AgentMode::Plan,
            model: None,
            append_system_prompt: None,
            env: env
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        let launch = agent.launch(&spec(vec![("HOME", "/home/u")])).unwrap();
        assert_eq!(launch.program, "codex");
        assert_eq!(launch.args, ["-c", "model=x", "app-server"]);
        // Codex creates its default home when it is missing, but fails on a
        // `CODEX_HOME` that does not exist: a fresh task home has no `.codex` yet.
        assert_eq!(
            launch.env,
            [("HOME".to_owned(), "/home/u".to_owned())],
            "no CODEX_HOME of ours"
        );
        let given = agent
            .launch(&spec(vec![("HOME", "/home/u"), ("CODEX_HOME", "/c")]))
            .unwrap();
        let homes: Vec<_> = given
            .env
            .iter()
            .filter(|(k, _)| k == "CODEX_HOME")
            .collect();
        assert_eq!(homes, [&("CODEX_HOME".to_owned(), "/c".to_owned())]);
        assert!(Codex::new(Vec::new()).launch(&spec(Vec::new())).is_err());
    }
}

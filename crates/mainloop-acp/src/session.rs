//! One ACP agent process as an [`AgentSession`]: a driver task runs the protocol
//! connection (setup, then one `session/prompt` per user message), the agent's
//! requests are answered by handlers (permissions through the host's `reply`, files
//! inside the worktree only), and everything the agent says arrives as port events.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agent_client_protocol::v1::schema::{
    CancelNotification, ContentBlock, CreateElicitationResponse, PermissionOption, PromptRequest,
    ReadTextFileRequest, ReadTextFileResponse, RequestPermissionRequest, RequestPermissionResponse,
    SessionId, SessionNotification, TextContent, WriteTextFileRequest, WriteTextFileResponse,
};
use agent_client_protocol::v1::{ConnectionTo, Responder};
use agent_client_protocol::{
    Agent as AcpRole, Client, Lines, is_connection_terminated, is_incoming_transport_closed,
};
use futures::future::BoxFuture;
use mainloop_agent::protocol::{MALFORMED_LINE_BYTES, truncate_bytes};
use mainloop_agent::{
    AgentError, AgentEvent, AgentFailure, AgentMode, AgentSession, ControlReply, Placed,
    PlacedProcess, RunSpec,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::elicit::{self, RawElicitation};
use crate::modes;
use crate::normalize::{self, Transcript};
use crate::paths::{Worktree, slice_lines};
use crate::{Error, lines};

mod start;
use start::{setup, switch};

/// Events buffered between the connection and `next_event`; when full, the handlers
/// wait and the agent blocks on its stdout, which is the backpressure we want.
const EVENT_BUFFER: usize = 256;
/// After the process exits, how long to wait for the stderr reader to drain.
const STDERR_DRAIN: Duration = Duration::from_secs(2);

/// A request of the agent waiting for the host's answer.
enum Pending {
    Permission {
        responder: Responder<RequestPermissionResponse>,
        options: Vec<PermissionOption>,
    },
    Elicitation {
        responder: Responder<CreateElicitationResponse>,
        fields: Vec<elicit::Field>,
    },
}

/// What the host side of the session shares with the driver (never the event
/// sender, so that the event channel closes when the driver ends).
#[derive(Default)]
struct Control {
    pending: Mutex<HashMap<String, Pending>>,
    connection: Mutex<Option<ConnectionTo<AcpRole>>>,
    session_id: Mutex<Option<SessionId>>,
    /// Why the session could not start, reported with `Exited`.
    failure: Mutex<Option<AgentFailure>>,
    /// The session as started, its mode kept current by `switch`.
    started: Mutex<Option<modes::Started>>,
    /// Read-only: file writes are refused.
    planning: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the driver and its handlers share.
struct Ctx {
    control: Arc<Control>,
    events: mpsc::Sender<AgentEvent>,
    transcript: Mutex<Transcript>,
    worktree: Worktree,
    next_request: AtomicU64,
    /// When the agent last sent a `session/update` (to wait out a replay).
    last_update: Mutex<Instant>,
    /// Whether the agent's files are this machine's: only then does the client write
    /// files for it, or look into its home.
    local: bool,
}

impl Ctx {
    async fn emit(&self, events: Vec<AgentEvent>) {
        for event in events {
            if self.events.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// One running ACP agent. Dropping it kills the process and everything it started.
pub struct AcpSession {
    process: Box<dyn PlacedProcess>,
    code: Option<i32>,
    exit_reported: bool,
    events: mpsc::Receiver<AgentEvent>,
    /// None once input is closed.
    prompts: Option<mpsc::UnboundedSender<String>>,
    control: Arc<Control>,
    tail: Arc<Mutex<VecDeque<String>>>,
    driver: JoinHandle<()>,
    stderr_drained: bool,
}

impl fmt::Debug for AcpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcpSession")
            .field("process", &self.process)
            .field("code", &self.code)
            .field("input_open", &self.prompts.is_some())
            .finish_non_exhaustive()
    }
}

impl AcpSession {
    /// Connects to the placed process and starts the session `spec` asks for; must be
    /// called within a Tokio runtime.
    pub(crate) fn start(placed: Placed, spec: RunSpec, max_line_bytes: usize, local: bool) -> Self {
        let Placed {
            stdin,
            stdout,
            stderr,
            process,
        } = placed;
        let (event_tx, events) = mpsc::channel(EVENT_BUFFER);
        let (prompts, prompt_rx) = mpsc::unbounded_channel();
        let control = Arc::new(Control::default());
        control
            .planning
            .store(spec.mode == AgentMode::Plan, Ordering::Relaxed);
        let ctx = Arc::new(Ctx {
            control: Arc::clone(&control),
            events: event_tx.clone(),
            transcript: Mutex::new(Transcript::new(&spec.cwd)),
            worktree: Worktree::new(&spec.cwd),
            next_request: AtomicU64::new(1),
            last_update: Mutex::new(Instant::now()),
            local,
        });
        let transport = Lines::new(
            lines::outgoing(stdin),
            lines::incoming(stdout, event_tx, max_line_bytes),
        );
        let driver = tokio::spawn(drive(ctx, transport, spec, prompt_rx));
        Self {
            process,
            code: None,
            exit_reported: false,
            events,
            prompts: Some(prompts),
            control,
            tail: mainloop_agent::stderr_tail(stderr),
            driver,
            stderr_drained: false,
        }
    }

    async fn reap(&mut self) {
        if self.code.is_none() {
            match self.process.wait().await {
                Ok(code) => self.code = Some(code),
                Err(e) => tracing::warn!(error = %e, "waiting for the agent failed"),
            }
        }
        if !self.stderr_drained {
            // The tail reader ends with stderr; a grandchild holding it must not hold us.
            let _ = tokio::time::timeout(STDERR_DRAIN, async {
                while Arc::strong_count(&self.tail) > 1 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            self.stderr_drained = true;
        }
    }
}

async fn drive(
    ctx: Arc<Ctx>,
    transport: Lines<
        impl futures::Sink<String, Error = std::io::Error> + Send + 'static,
        impl futures::Stream<Item = std::io::Result<String>> + Send + 'static,
    >,
    spec: RunSpec,
    prompts: mpsc::UnboundedReceiver<String>,
) {
    let on_update = Arc::clone(&ctx);
    let on_permission = Arc::clone(&ctx);
    let on_write = Arc::clone(&ctx);
    let on_read = Arc::clone(&ctx);
    let on_elicit = Arc::clone(&ctx);
    let main = Arc::clone(&ctx);
    let result = Client
        .v1()
        .name("mainloop")
        .on_receive_notification(
            async move |n: SessionNotification, _cx| {
                *lock(&on_update.last_update) = Instant::now();
                let events = lock(&on_update.transcript).update(&n.update);
                on_update.emit(events).await;
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |req: RequestPermissionRequest,
                        responder: Responder<RequestPermissionResponse>,
                        _cx| {
                let ctx = &on_permission;
                let n = ctx.next_request.fetch_add(1, Ordering::Relaxed);
                let request_id = format!("acp-permission-{n}");
                let call_id = req.tool_call.tool_call_id.0.to_string();
                let (tool, mut events) =
                    lock(&ctx.transcript).permission(&call_id, &req.tool_call.fields);
                lock(&ctx.control.pending).insert(
                    request_id.clone(),
                    Pending::Permission {
                        responder,
                        options: req.options,
                    },
                );
                events.push(AgentEvent::Permission {
                    request_id,
                    tool: tool.name,
                    input: tool.input,
                });
                ctx.emit(events).await;
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: WriteTextFileRequest,
                        responder: Responder<WriteTextFileResponse>,
                        _cx| {
                match write_file(&on_write, &req).await {
                    Ok(()) => responder.respond(WriteTextFileResponse::new()),
                    Err(e) => responder.respond_with_error(refusal(&e)),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: ReadTextFileRequest,
                        responder: Responder<ReadTextFileResponse>,
                        _cx| {
                match read_file(&on_read, &req).await {
                    Ok(text) => responder.respond(ReadTextFileResponse::new(text)),
                    Err(e) => responder.respond_with_error(refusal(&e)),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |req: RawElicitation,
                        responder: Responder<CreateElicitationResponse>,
                        _cx| {
                let ctx = &on_elicit;
                match elicit::form(&req.0) {
                    Ok(form) => {
                        let n = ctx.next_request.fetch_add(1, Ordering::Relaxed);
                        let request_id = format!("acp-elicitation-{n}");
                        let mut events = lock(&ctx.transcript).flush();
                        lock(&ctx.control.pending).insert(
                            request_id.clone(),
                            Pending::Elicitation {
                                responder,
                                fields: form.fields,
                            },
                        );
                        events.push(AgentEvent::Question {
                            request_id,
                            questions: form.questions,
                            input: form.input,
                        });
                        ctx.emit(events).await;
                        Ok(())
                    }
                    Err(e) => {
                        let line = truncate_bytes(&req.0.to_string(), MALFORMED_LINE_BYTES);
                        ctx.emit(vec![AgentEvent::Malformed {
                            line,
                            error: e.to_string(),
                        }])
                        .await;
                        responder.respond(elicit::decline())
                    }
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(transport, async move |cx: ConnectionTo<AcpRole>| {
            run(&main, cx, &spec, prompts).await;
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "the ACP connection failed");
    }
}

fn refusal(e: &Error) -> agent_client_protocol::Error {
    agent_client_protocol::Error::invalid_params().data(serde_json::Value::String(e.to_string()))
}

async fn write_file(ctx: &Ctx, req: &WriteTextFileRequest) -> Result<(), Error> {
    let path = ctx.worktree.resolve(&req.path)?;
    if ctx.control.planning.load(Ordering::Relaxed) {
        return Err(Error::ReadOnly {
            path: path.display().to_string(),
        });
    }
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io)?;
    }
    tokio::fs::write(&path, req.content.as_bytes())
        .await
        .map_err(io)
}

async fn read_file(ctx: &Ctx, req: &ReadTextFileRequest) -> Result<String, Error> {
    let path = ctx.worktree.resolve(&req.path)?;
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(slice_lines(&text, req.line, req.limit))
}

/// The connection's foreground: sets the session up, then runs one prompt per user
/// message until the host closes its input or the agent's output ends.
async fn run(
    ctx: &Ctx,
    cx: ConnectionTo<AcpRole>,
    spec: &RunSpec,
    mut prompts: mpsc::UnboundedReceiver<String>,
) {
    *lock(&ctx.control.connection) = Some(cx.clone());
    let (session_id, model) = match setup(ctx, &cx, spec).await {
        Ok(started) => started,
        Err(failure) => {
            *lock(&ctx.control.failure) = Some(failure);
            return;
        }
    };
    *lock(&ctx.control.session_id) = Some(session_id.clone());
    ctx.emit(vec![AgentEvent::SessionStarted {
        session_id: session_id.0.to_string(),
        model,
    }])
    .await;
    let mut instructions = spec.append_system_prompt.clone();
    loop {
        let text = tokio::select! {
            text = prompts.recv() => text,
            () = cx.incoming_closed() => None,
        };
        let Some(text) = text else { break };
        let mut blocks = Vec::new();
        // ACP has no system prompt: the instructions lead the process's first prompt.
        if let Some(instructions) = instructions.take() {
            blocks.push(ContentBlock::Text(TextContent::new(instructions)));
        }
        blocks.push(ContentBlock::Text(TextContent::new(text)));
        lock(&ctx.transcript).begin_turn();
        let response = cx
            .send_request(PromptRequest::new(session_id.clone(), blocks))
            .block_task()
            .await;
        let (end, usage) = match response {
            Ok(response) => (
                normalize::turn_end(response.stop_reason),
                modes::usage(&response),
            ),
            Err(e) if is_incoming_transport_closed(&e) || is_connection_terminated(&e) => break,
            Err(e) => (normalize::failed_turn(&e.to_string()), (0, 0)),
        };
        let events = lock(&ctx.transcript).end_turn(end, &session_id.0, usage);
        ctx.emit(events).await;
    }
}

impl AgentSession for AcpSession {
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
            let failure = lock(&self.control.failure).take().or_else(|| {
                (self.code != Some(0)).then(|| AgentFailure::Other {
                    reason: self.stderr_tail().join("\n"),
                })
            });
            Some(AgentEvent::Exited {
                code: self.code,
                failure,
            })
        })
    }

    fn reply(
        &mut self,
        request_id: &str,
        reply: ControlReply,
    ) -> BoxFuture<'_, Result<(), AgentError>> {
        let pending = lock(&self.control.pending).remove(request_id);
        let request_id = request_id.to_owned();
        Box::pin(async move {
            let (allow, interrupt) = match &reply {
                ControlReply::Allow { .. } => (true, false),
                ControlReply::Deny { interrupt, .. } => (false, *interrupt),
            };
            match pending {
                None => return Err(AgentError::Io(format!("no pending request {request_id:?}"))),
                Some(Pending::Permission { responder, options }) => {
                    let outcome = normalize::permission_outcome(&options, allow);
                    responder
                        .respond(RequestPermissionResponse::new(outcome))
                        .map_err(|_| AgentError::Closed)?;
                }
                Some(Pending::Elicitation { responder, fields }) => {
                    // An answer that does not fit the form declines it: the agent
                    // asks again or goes on without, and the turn carries on.
                    let response = elicit::response(&fields, &reply).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "declined an elicitation");
                        elicit::decline()
                    });
                    responder
                        .respond(response)
                        .map_err(|_| AgentError::Closed)?;
                }
            }
            if interrupt {
                let cx = lock(&self.control.connection).clone();
                let id = lock(&self.control.session_id).clone();
                if let (Some(cx), Some(id)) = (cx, id) {
                    cx.send_notification(CancelNotification::new(id))
                        .map_err(|_| AgentError::Closed)?;
                }
            }
            Ok(())
        })
    }

    fn set_mode(&mut self, mode: AgentMode) -> BoxFuture<'_, Result<(), AgentError>> {
        let control = Arc::clone(&self.control);
        Box::pin(async move {
            let cx = lock(&control.connection)
                .clone()
                .ok_or(AgentError::Closed)?;
            let mut started = lock(&control.started).clone().ok_or(AgentError::Closed)?;
            switch(&cx, &mut started, mode)
                .await
                .map_err(|e| AgentError::Io(format!("the agent refused the mode switch: {e}")))?;
            control
                .planning
                .store(mode == AgentMode::Plan, Ordering::Relaxed);
            *lock(&control.started) = Some(started);
            Ok(())
        })
    }

    fn send_user_message(&mut self, text: &str) -> BoxFuture<'_, Result<(), AgentError>> {
        let sent = match &self.prompts {
            Some(prompts) => prompts
                .send(text.to_owned())
                .map_err(|_| AgentError::Closed),
            None => Err(AgentError::Closed),
        };
        Box::pin(async move { sent })
    }

    fn close_input(&mut self) -> BoxFuture<'_, ()> {
        // The driver finishes the current turn, then ends the connection: stdin closes.
        self.prompts = None;
        Box::pin(async {})
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.prompts = None;
            self.process.kill_tree();
            self.driver.abort();
            self.reap().await;
        })
    }

    fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    fn stderr_tail(&self) -> Vec<String> {
        lock(&self.tail).iter().cloned().collect()
    }

    fn exit_code(&self) -> Option<i32> {
        self.code
    }
}

impl Drop for AcpSession {
    fn drop(&mut self) {
        // Dropping the placed process kills what is left of it.
        self.driver.abort();
    }
}

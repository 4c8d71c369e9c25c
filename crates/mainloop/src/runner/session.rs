//! One connection to the server: the upgrade with the token, `hello`, the wait for
//! `welcome`, then heartbeats until the server says something final, the connection
//! drops, or the runner is told to stop. Meanwhile messages flow both ways: the
//! server's process messages go to the connection's [`Processes`], its workspace
//! requests to the runner's [`Workspaces`], and what those processes write and those
//! requests answer comes back through a channel to the socket. Its only result is how
//! it ended ([`super::policy::Outcome`]); what to do about that is decided elsewhere.
//! Every process of the connection is killed when it ends.

use super::exec::{self, Processes};
use super::policy::Outcome;
use super::workspace::Workspaces;
use futures::{SinkExt, StreamExt};
use mainloop_domain::RunnerId;
use mainloop_domain::runner::{MAX_MESSAGE_BYTES, RunnerMessage, ServerMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

/// How long the TCP, TLS and HTTP upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server has to answer `hello`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a clean close waits for the server's answering close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub token: String,
    /// The `hello` message, ready to send.
    pub hello: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// What the server said when it accepted the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub runner_id: RunnerId,
    pub name: String,
    pub heartbeat_secs: u64,
}

/// Connects once and stays connected as long as the server keeps the runner, running
/// the processes it asks for with `exec` and its workspace requests with `work`;
/// `welcomed` is told when the server accepts it.
pub async fn connect(
    target: &Target,
    exec: &Arc<exec::Config>,
    work: &Arc<Workspaces>,
    stop: &CancellationToken,
    welcomed: impl FnOnce(&Welcome),
) -> Outcome {
    let mut request = match target.url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return Outcome::Unreachable(e.to_string()),
    };
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {}", target.token)) else {
        return Outcome::Unauthorized;
    };
    request.headers_mut().insert("authorization", bearer);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let ws = tokio::select! {
        () = stop.cancelled() => return Outcome::Stopped,
        r = timeout(CONNECT_TIMEOUT, connecting) => match r {
            Err(_) => return Outcome::Unreachable("it did not answer in time".to_owned()),
            Ok(Err(WsError::Http(response))) => {
                return match response.status().as_u16() {
                    401 => Outcome::Unauthorized,
                    status => Outcome::Rejected(status),
                };
            }
            Ok(Err(e)) => return Outcome::Unreachable(innermost(&e)),
            Ok(Ok((ws, _))) => ws,
        },
    };
    let (mut tx, mut rx) = ws.split();
    if let Err(e) = tx.send(Message::text(target.hello.clone())).await {
        return lost(false, &e.to_string());
    }

    let welcome = tokio::select! {
        () = stop.cancelled() => return close(tx, rx).await,
        r = timeout(WELCOME_TIMEOUT, next_message(&mut rx)) => match r {
            Err(_) => return lost(false, "the server did not answer hello in time"),
            Ok(Err(outcome)) => return outcome,
            Ok(Ok(ServerMessage::Welcome { runner_id, name, heartbeat_secs, .. })) => Welcome {
                runner_id,
                name,
                heartbeat_secs: heartbeat_secs.max(1),
            },
            Ok(Ok(other)) => return final_word(other, false),
        },
    };
    welcomed(&welcome);

    let (out, out_rx) = mpsc::channel(exec::OUTBOX);
    let mut procs = Processes::new(Arc::clone(exec), out);
    let outcome = serve(tx, rx, &welcome, stop, &mut procs, work, out_rx).await;
    // They cannot be reattached to another connection: the server resumes the work.
    procs.shutdown().await;
    outcome
}

/// The welcomed connection: heartbeats, the server's messages, the processes' output.
async fn serve(
    mut tx: Tx,
    mut rx: Rx,
    welcome: &Welcome,
    stop: &CancellationToken,
    procs: &mut Processes,
    work: &Arc<Workspaces>,
    mut out: mpsc::Receiver<RunnerMessage>,
) -> Outcome {
    let every = Duration::from_secs(welcome.heartbeat_secs);
    // A server that says nothing for three heartbeats (not even the pong to our ping)
    // is gone even if the socket looks open (a half-open TCP connection).
    let silence = every.saturating_mul(3);
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                procs.kill_all();
                return close(tx, rx).await;
            }
            _ = ticks.tick() => {
                if heard.elapsed() > silence {
                    return lost(true, "the server went silent");
                }
                let beat = RunnerMessage::Heartbeat { busy: procs.busy() };
                let sent = send(&mut tx, &beat).await;
                let pinged = tx.send(Message::Ping(Vec::new().into())).await;
                if let Err(e) = sent.and(pinged) {
                    return lost(true, &e.to_string());
                }
            }
            Some(msg) = out.recv() => {
                if let Err(e) = send(&mut tx, &msg).await {
                    return lost(true, &e.to_string());
                }
            }
            frame = rx.next() => {
                heard = Instant::now();
                match read(frame) {
                    Read::Message(ServerMessage::Welcome { .. }) | Read::Skip => {}
                    Read::Message(
                        msg @ (ServerMessage::Spawn(_)
                        | ServerMessage::Stdin { .. }
                        | ServerMessage::CloseStdin { .. }
                        | ServerMessage::Kill { .. }),
                    ) => {
                        // Sent before anything the new process writes, which queues
                        // behind it in `out`.
                        if let Some(answer) = procs.handle(msg)
                            && let Err(e) = send(&mut tx, &answer).await
                        {
                            return lost(true, &e.to_string());
                        }
                    }
                    Read::Message(
                        msg @ (ServerMessage::Prepare(_)
                        | ServerMessage::Save(_)
                        | ServerMessage::Release { .. }),
                    ) => {
                        // Carried out in the background; only a refusal answers now.
                        if let Some(answer) = work.handle(msg, procs)
                            && let Err(e) = send(&mut tx, &answer).await
                        {
                            return lost(true, &e.to_string());
                        }
                    }
                    Read::Message(other) => return final_word(other, true),
                    Read::End(outcome) => return outcome.welcomed(),
                }
            }
        }
    }
}

async fn send(tx: &mut Tx, msg: &RunnerMessage) -> Result<(), WsError> {
    let text = serde_json::to_string(msg).map_err(|e| WsError::Io(std::io::Error::other(e)))?;
    tx.send(Message::text(text)).await
}

type Rx = futures::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;
type Tx = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// One frame read, as the session sees it.
enum Read {
    Message(ServerMessage),
    /// A ping, a pong, or a frame of no meaning here.
    Skip,
    /// The connection ended.
    End(Outcome),
}

impl Outcome {
    /// The same loss, on a connection where the runner had been welcomed.
    fn welcomed(self) -> Self {
        match self {
            Self::Lost { why, .. } => Self::Lost {
                welcomed: true,
                why,
            },
            other => other,
        }
    }
}

fn read(frame: Option<Result<Message, WsError>>) -> Read {
    match frame {
        None => Read::End(lost(false, "the server closed the connection")),
        Some(Err(e)) => Read::End(lost(false, &e.to_string())),
        Some(Ok(Message::Close(frame))) => {
            let why = frame
                .map(|f| f.reason.to_string())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "the server closed the connection".to_owned());
            Read::End(lost(false, &why))
        }
        Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
            Ok(message) => Read::Message(message),
            // A message from a newer server that this runner does not know: the
            // protocol version guards anything that matters, so it is ignored.
            Err(_) => Read::Skip,
        },
        Some(Ok(_)) => Read::Skip,
    }
}

/// The next message from the server, skipping pings and unknown messages.
async fn next_message(rx: &mut Rx) -> Result<ServerMessage, Outcome> {
    loop {
        match read(rx.next().await) {
            Read::Message(m) => return Ok(m),
            Read::Skip => {}
            Read::End(outcome) => return Err(outcome),
        }
    }
}

/// The outcome of a message that ends the connection.
fn final_word(message: ServerMessage, welcomed: bool) -> Outcome {
    match message {
        ServerMessage::Revoked => Outcome::Revoked,
        ServerMessage::Refused { reason, retry } => Outcome::Refused { reason, retry },
        ServerMessage::Welcome { .. } => lost(welcomed, "a second welcome"),
        ServerMessage::Spawn(_)
        | ServerMessage::Stdin { .. }
        | ServerMessage::CloseStdin { .. }
        | ServerMessage::Kill { .. }
        | ServerMessage::Prepare(_)
        | ServerMessage::Save(_)
        | ServerMessage::Release { .. } => lost(welcomed, "a process message before welcome"),
    }
}

fn lost(welcomed: bool, why: &str) -> Outcome {
    Outcome::Lost {
        welcomed,
        why: why.to_owned(),
    }
}

/// Closes the socket cleanly (a close frame, then the server's answer or a short wait).
async fn close(mut tx: Tx, mut rx: Rx) -> Outcome {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "the runner is stopping".into(),
    };
    if tx.send(Message::Close(Some(frame))).await.is_ok() {
        let _ = timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(_)) = rx.next().await {}
        })
        .await;
    }
    Outcome::Stopped
}

/// The innermost cause of a connection error (connection refused, a DNS failure).
fn innermost(e: &WsError) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

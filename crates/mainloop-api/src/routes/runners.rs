//! Runners: creating one (its token shown once), listing the user's with each one's
//! state, revoking one, and `GET /api/runners/connect`, the WebSocket a runner holds
//! open — authenticated by its runner token, then `hello` → `welcome`, heartbeats, and
//! the server's `refused` or `revoked` before it closes. Between, it carries the
//! processes the server runs there and the task workspaces it prepares and saves: the
//! lease's outbox (spawns, stdin, kills, prepare, save, release) goes out, and the
//! runner's `started`/`spawn_failed`/`output`/`exited` and
//! `prepared`/`saved`/`request_failed` go to the lease.

use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::{AppState, RunnerTimeouts};
use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mainloop_domain::runner::{
    HEARTBEAT_SECS, Hello, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, RunnerMessage, ServerMessage,
    parse_runner_message,
};
use mainloop_domain::{RunnerId, TaskId, Timestamp};
use mainloop_engine::{Ending, EngineError, RunnerInfo, RunnerRow, RunnerState};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// How long the server waits for the runner's answer to its close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Whether a runner can take work now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RunnerState)]
pub enum RunnerStateName {
    Connected,
    Offline,
    Revoked,
}

/// A runner: a machine that connects out to this server and runs agents for its owner.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Runner {
    pub id: RunnerId,
    pub name: String,
    pub state: RunnerStateName,
    pub created_at: Timestamp,
    // Always present (null when unknown): `required` says so to client generators.
    #[schema(required = true)]
    pub last_seen_at: Option<Timestamp>,
    #[schema(required = true)]
    pub revoked_at: Option<Timestamp>,
    /// The `mainloop` version of its last `hello`.
    #[schema(required = true)]
    pub version: Option<String>,
    /// Agent runs at once, as its last `hello` offered.
    #[schema(required = true)]
    pub slots: Option<u16>,
    /// Slots busy, while connected.
    #[schema(required = true)]
    pub busy: Option<u16>,
    pub labels: Vec<String>,
    pub agents: Vec<String>,
    /// The task it is bound to: a launcher's one-shot runners for that task's runs
    /// connect as it (made and revoked by the server; it runs no other task).
    #[schema(required = true)]
    pub task_id: Option<TaskId>,
}

impl From<RunnerInfo> for Runner {
    fn from(r: RunnerInfo) -> Self {
        let (slots, labels, agents) = r.offer.map_or_else(
            || (None, Vec::new(), Vec::new()),
            |o| {
                (
                    Some(o.slots),
                    o.labels.into_iter().collect(),
                    o.agents.iter().map(ToString::to_string).collect(),
                )
            },
        );
        Self {
            id: r.id,
            name: r.name,
            state: match r.state {
                RunnerState::Connected => RunnerStateName::Connected,
                RunnerState::Offline => RunnerStateName::Offline,
                RunnerState::Revoked => RunnerStateName::Revoked,
            },
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            revoked_at: r.revoked_at,
            version: r.version,
            slots,
            busy: r.busy,
            labels,
            agents,
            task_id: r.task_id,
        }
    }
}

/// The user's runners, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerList {
    pub runners: Vec<Runner>,
}

/// A new runner's name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunner {
    /// 1 to 64 letters, digits, `-`, `_` or `.`; unique among the user's runners that
    /// are not revoked.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
}

/// A new runner and its token, shown only in this answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedRunner {
    pub runner: Runner,
    /// The runner token (`mlr_…`): `mainloop runner --server <url>` reads it.
    pub token: String,
}

/// The user's runners.
#[utoipa::path(
    get,
    path = "/api/runners",
    operation_id = "list_runners",
    tag = "runners",
    responses(
        (status = 200, description = "The runners, newest first (revoked ones included)", body = RunnerList),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn list(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> ApiResult<Json<RunnerList>> {
    let runners = state.engine.runners(user.id).await?;
    Ok(Json(RunnerList {
        runners: runners.into_iter().map(Runner::from).collect(),
    }))
}

/// Creates a runner and its token. The token is in this answer only; it is stored
/// hashed.
#[utoipa::path(
    post,
    path = "/api/runners",
    operation_id = "create_runner",
    tag = "runners",
    request_body = CreateRunner,
    responses(
        (status = 201, description = "The runner and its token", body = CreatedRunner),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 409, description = "One of your runners that is not revoked has this name", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "A bad name", body = ErrorBody),
    )
)]
pub async fn create(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateRunner>,
) -> ApiResult<(StatusCode, Json<CreatedRunner>)> {
    let (runner, token) = state
        .engine
        .create_runner(user.id, &body.name)
        .await
        .map_err(|e| match e {
            // The engine's words name the clash; the generic mapping hides store text.
            EngineError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            other => other.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedRunner {
            runner: runner.into(),
            token,
        }),
    ))
}

/// Revokes a runner's token. A connected runner is told `revoked` and its connection
/// closes at once; it stays listed as revoked.
#[utoipa::path(
    delete,
    path = "/api/runners/{id}",
    operation_id = "revoke_runner",
    tag = "runners",
    params(("id" = RunnerId, Path, description = "Runner id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No such runner", body = ErrorBody),
    )
)]
pub async fn revoke(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RunnerId>,
) -> ApiResult<StatusCode> {
    state.engine.revoke_runner(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The runner a request's `Authorization: Bearer <runner token>` names. Nothing else
/// (no session, no API token) is a runner's credential.
#[derive(Debug)]
pub struct CurrentRunner(pub RunnerRow);

impl FromRequestParts<AppState> for CurrentRunner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(crate::auth::bearer_token)
            .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <runner token>`"))?;
        let runner = state
            .engine
            .authenticate_runner(token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked runner token"))?;
        Ok(Self(runner))
    }
}

/// A runner's connection: a WebSocket carrying JSON text messages, at most 64 KiB each.
///
/// Authenticate with `Authorization: Bearer <runner token>` (from `POST /api/runners`);
/// an unknown or revoked token is a 401 before any upgrade, and no other credential
/// works here (nor does a runner token anywhere else).
///
/// After the upgrade the runner sends `RunnerMessage`s and the server `ServerMessage`s:
/// 1. runner → `{"type":"hello","protocol":1,"version":"…","slots":2,"labels":["gpu"],"agents":["claude"]}`,
///    first and once, within 10 s;
/// 2. server → `{"type":"welcome","protocol":1,"runner_id":"…","name":"…","heartbeat_secs":15}`;
/// 3. runner → `{"type":"heartbeat","busy":0}` at least every `heartbeat_secs`; after
///    three times that in silence the server closes;
/// 4. server → `spawn`, `stdin`, `close_stdin`, `kill` for the processes it runs there;
///    runner → `started` or `spawn_failed`, `output` (base64, at most 32 KiB decoded),
///    then `exited`. A message about a process this connection was not given, or one
///    that already exited, is ignored;
/// 5. server → `prepare`, `save`, `release` for the tasks' workspaces there; runner →
///    `prepared` (absolute paths), `saved` (a commit id) or `request_failed`. An answer
///    to a request this connection was not sent, or a second one, is ignored.
///
/// A message the server refuses (malformed, unknown type, another protocol version, an
/// offer out of bounds, a binary frame, a second `hello`, more than 64 KiB) gets
/// `{"type":"refused","reason":"…","retry":false}` and the close; nothing is recorded.
/// When the runner's token is revoked it gets `{"type":"revoked"}` and the close; when
/// another connection with the same token arrives, this one gets `refused` (`another
/// runner connected with this token`) and the close.
#[utoipa::path(
    get,
    path = "/api/runners/connect",
    operation_id = "connect_runner",
    tag = "runners",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 401, description = "No runner token, or an unknown or revoked one", body = ErrorBody),
    )
)]
pub async fn connect(
    CurrentRunner(runner): CurrentRunner,
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|r| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("this route is a WebSocket: {}", r.body_text()),
        )
    })?;
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(state, runner, socket))
        .into_response())
}

/// What one frame from a runner means where the conversation is.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    Hello(Box<Hello>),
    Heartbeat(u16),
    /// About one of the processes the server started there, or an answer to one of its
    /// workspace requests: the lease's to apply.
    Process(RunnerMessage),
    /// Refuse with this reason, then close.
    Refuse(String),
    /// Control frames the socket answers itself.
    Nothing,
    Gone,
}

/// Decides what a frame means: `greeted` is whether `hello` was already accepted.
fn hear(frame: Option<Result<Message, axum::Error>>, greeted: bool) -> Heard {
    let text = match frame {
        None | Some(Ok(Message::Close(_))) => return Heard::Gone,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Heard::Nothing,
        Some(Ok(Message::Binary(_))) => {
            return Heard::Refuse("binary frames are not part of the protocol".into());
        }
        Some(Err(e)) => return Heard::Refuse(format!("unreadable message: {e}")),
        Some(Ok(Message::Text(text))) => text,
    };
    match (parse_runner_message(text.as_str()), greeted) {
        (Err(e), _) => Heard::Refuse(e.to_string()),
        (Ok(RunnerMessage::Hello(hello)), false) => Heard::Hello(Box::new(hello)),
        (Ok(RunnerMessage::Hello(_)), true) => Heard::Refuse("hello was already sent".into()),
        (Ok(RunnerMessage::Heartbeat { .. }), false) => {
            Heard::Refuse("the first message must be hello".into())
        }
        (Ok(RunnerMessage::Heartbeat { busy }), true) => Heard::Heartbeat(busy),
        (Ok(_), false) => Heard::Refuse("the first message must be hello".into()),
        (Ok(msg), true) => Heard::Process(msg),
    }
}

/// The close code for a refusal: "too big" for an oversized message (the socket's
/// limit or the parser's), "policy" for everything else.
fn refusal_code(reason: &str) -> u16 {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("too long") || lower.contains("bytes; at most") {
        close_code::SIZE
    } else {
        close_code::POLICY
    }
}

async fn send(socket: &mut WebSocket, msg: &ServerMessage) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

/// Sends `last` (if any), then the close, and waits briefly for the runner's close so
/// that it reads both before the connection goes.
async fn close(mut socket: WebSocket, last: Option<ServerMessage>, code: u16, reason: &str) {
    if let Some(msg) = last
        && !send(&mut socket, &msg).await
    {
        return;
    }
    // A close frame's reason is at most 123 bytes.
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..cut].into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn refuse(socket: WebSocket, reason: String, code: u16) {
    let msg = ServerMessage::Refused {
        reason: reason.clone(),
        retry: false,
    };
    close(socket, Some(msg), code, &reason).await;
}

async fn serve(state: AppState, runner: RunnerRow, mut socket: WebSocket) {
    let RunnerTimeouts {
        hello: hello_wait,
        silence,
    } = state.config.runner_timeouts;
    let hello = loop {
        let Ok(frame) = tokio::time::timeout(hello_wait, socket.recv()).await else {
            let reason = format!("no hello within {} s", hello_wait.as_secs_f32());
            return refuse(socket, reason, close_code::POLICY).await;
        };
        match hear(frame, false) {
            Heard::Hello(hello) => break hello,
            Heard::Nothing => {}
            Heard::Gone => return,
            Heard::Refuse(reason) => {
                let code = refusal_code(&reason);
                return refuse(socket, reason, code).await;
            }
            // `hear` refuses anything else before hello; this arm only keeps the match whole.
            Heard::Heartbeat(_) | Heard::Process(_) => {
                let reason = "the first message must be hello".to_owned();
                return refuse(socket, reason, close_code::POLICY).await;
            }
        }
    };
    let mut lease = match state.engine.connect_runner(runner.id, &hello).await {
        Ok(lease) => lease,
        Err(EngineError::NotFound(_)) => {
            let msg = Some(ServerMessage::Revoked);
            return close(socket, msg, close_code::POLICY, "revoked").await;
        }
        Err(e) => {
            tracing::warn!(runner = %runner.id, error = %e, "could not record a runner's hello");
            let msg = ServerMessage::Refused {
                reason: "the server could not record this connection; try again".into(),
                retry: true,
            };
            return close(socket, Some(msg), close_code::AGAIN, "try again").await;
        }
    };
    tracing::info!(runner = %runner.id, name = %runner.name, version = %hello.version, "runner connected");
    let welcome = ServerMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        runner_id: runner.id,
        name: runner.name.clone(),
        heartbeat_secs: HEARTBEAT_SECS,
    };
    if !send(&mut socket, &welcome).await {
        return;
    }
    let Some(mut outbox) = lease.take_outbox() else {
        return;
    };
    // Measured from the last frame heard, whatever the server sent meanwhile.
    let mut heard_by = tokio::time::Instant::now() + silence;
    loop {
        tokio::select! {
            why = lease.ended() => {
                tracing::info!(runner = %runner.id, ?why, "runner connection ended by the server");
                return match why {
                    Ending::Revoked => {
                        close(socket, Some(ServerMessage::Revoked), close_code::POLICY, "revoked").await;
                    }
                    Ending::Replaced => {
                        let reason = "another runner connected with this token".to_owned();
                        refuse(socket, reason, close_code::POLICY).await;
                    }
                };
            }
            () = state.shutdown.cancelled() => {
                return close(socket, None, close_code::RESTART, "server shutting down").await;
            }
            Some(msg) = outbox.recv() => {
                // A runner that stops reading for as long as it may stay silent is gone.
                if !matches!(tokio::time::timeout(silence, send(&mut socket, &msg)).await, Ok(true)) {
                    return;
                }
            }
            frame = tokio::time::timeout_at(heard_by, socket.recv()) => {
                heard_by = tokio::time::Instant::now() + silence;
                let Ok(frame) = frame else {
                    let reason = format!("no heartbeat for {} s", silence.as_secs_f32());
                    return close(socket, None, close_code::AWAY, &reason).await;
                };
                match hear(frame, true) {
                    Heard::Heartbeat(busy) => match lease.heartbeat(busy).await {
                        Ok(()) => {}
                        Err(EngineError::Invalid(reason)) => {
                            return refuse(socket, reason, close_code::POLICY).await;
                        }
                        Err(e) => {
                            tracing::warn!(runner = %runner.id, error = %e, "could not record a heartbeat");
                        }
                    },
                    Heard::Process(msg) => lease.deliver(msg),
                    Heard::Nothing => {}
                    Heard::Gone => return,
                    Heard::Refuse(reason) => {
                        let code = refusal_code(&reason);
                        return refuse(socket, reason, code).await;
                    }
                    Heard::Hello(_) => {
                        let reason = "hello was already sent".to_owned();
                        return refuse(socket, reason, close_code::POLICY).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(s: &str) -> Option<Result<Message, axum::Error>> {
        Some(Ok(Message::Text(s.to_owned().into())))
    }

    #[test]
    fn the_first_message_is_hello_and_only_the_first() {
        let hello = r#"{"type":"hello","protocol":1,"version":"1.0","slots":1,"labels":[],"agents":["claude"]}"#;
        assert!(matches!(hear(text(hello), false), Heard::Hello(_)));
        assert_eq!(
            hear(text(hello), true),
            Heard::Refuse("hello was already sent".into())
        );
        let beat = r#"{"type":"heartbeat","busy":1}"#;
        assert_eq!(hear(text(beat), true), Heard::Heartbeat(1));
        assert!(matches!(hear(text(beat), false), Heard::Refuse(_)));
        assert!(matches!(
            hear(Some(Ok(Message::Binary(vec![1].into()))), true),
            Heard::Refuse(_)
        ));
        assert_eq!(hear(None, true), Heard::Gone);
        assert!(matches!(hear(text("{"), false), Heard::Refuse(_)));
        let exited = r#"{"type":"exited","process":1,"code":0}"#;
        assert!(matches!(hear(text(exited), true), Heard::Process(_)));
        assert!(matches!(hear(text(exited), false), Heard::Refuse(_)));
        let bad = r#"{"type":"output","process":1,"stream":"stdout","data":"!!"}"#;
        assert!(matches!(hear(text(bad), true), Heard::Refuse(r) if r.contains("base64")));
        let saved = r#"{"type":"saved","request":1,"commit":"0123456789abcdef0123456789abcdef01234567","clean":true}"#;
        assert!(matches!(hear(text(saved), true), Heard::Process(_)));
        assert!(matches!(hear(text(saved), false), Heard::Refuse(_)));
        let bad = r#"{"type":"saved","request":1,"commit":"HEAD","clean":true}"#;
        assert!(matches!(hear(text(bad), true), Heard::Refuse(r) if r.contains("object id")));
    }
}

//! Runners as both ends see them: the versioned protocol a runner speaks to the server
//! over its one outgoing WebSocket (`GET /api/runners/connect`), the limits every
//! message is held to, and what a runner offers (slots, labels, agents). Parsing is
//! strict: a message that is too large, malformed, unknown, or out of bounds is refused
//! with a reason, and nothing a runner says is trusted beyond what it describes.
//! Processes the server starts on a runner (`spawn`, their stdio both ways, their exit)
//! are shaped and bounded in [`process`]; a task's workspace there, prepared from and
//! saved to the server's repository over git (`prepare`, `save`, `release`), in
//! [`workspace`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use utoipa::ToSchema;

use crate::agents::AgentName;

pub mod process;
pub mod workspace;

pub use process::{
    Chunk, MAX_CHUNK_BYTES, MAX_REASON_BYTES, Program, Spawn, Stream, check_spawn, fit_reason,
    workspace_path,
};
pub use workspace::{MAX_REF_BYTES, Prepare, Save, check_prepare, check_save, git_path};

/// The protocol version this build speaks. A runner of another version is refused at
/// `hello` with both versions named; bumped on any change a peer of the old version
/// would misread.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest message either side accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The most slots one runner offers.
pub const MAX_SLOTS: u16 = 64;
/// The most labels one runner carries.
pub const MAX_LABELS: usize = 32;
/// The longest label.
pub const MAX_LABEL_LEN: usize = 63;
/// The most agents one runner offers.
pub const MAX_AGENTS: usize = 16;
/// The longest runner name (`mainloop runner-token add NAME`).
pub const MAX_RUNNER_NAME: usize = 64;
/// The longest version string a runner reports.
pub const MAX_VERSION_LEN: usize = 64;
/// How often the server expects to hear from a runner; one silent for three times as
/// long is taken as gone.
pub const HEARTBEAT_SECS: u64 = 15;

/// What a runner says. The first message must be `hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RunnerMessage {
    /// Who it is and what it offers; sent once, first.
    Hello(Hello),
    /// Still here, with how many of its slots are busy.
    Heartbeat { busy: u16 },
    /// The process the server asked for runs, as `pid` on the runner's machine.
    Started { process: u64, pid: u32 },
    /// The process could not be started; nothing runs.
    SpawnFailed { process: u64, reason: String },
    /// Bytes the process wrote, in order per stream.
    Output {
        process: u64,
        stream: Stream,
        data: Chunk,
    },
    /// The process was reaped after both its streams were drained; a death by signal N
    /// reads as 128 + N.
    Exited { process: u64, code: i32 },
    /// The task's workspace is ready for the `prepare` numbered `request`: the branch
    /// checked out with the snapshot's work uncommitted on top, in `workspace`; `home`
    /// is the task's `HOME` there. Both absolute paths on the runner's machine.
    Prepared {
        request: u64,
        workspace: String,
        home: String,
    },
    /// The workspace's state was sent for the `save` numbered `request` as the snapshot
    /// commit `commit`; `clean` when it had no uncommitted work.
    Saved {
        request: u64,
        commit: String,
        clean: bool,
    },
    /// The `prepare` or `save` numbered `request` could not be carried out.
    RequestFailed { request: u64, reason: String },
}

/// A runner's introduction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The protocol version it speaks ([`PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// Its `mainloop` version, shown in the runner list.
    pub version: String,
    /// What it offers.
    #[serde(flatten)]
    pub offer: Offer,
}

/// What a runner offers: how many agent runs at once, its labels, the agents it has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Offer {
    /// Agent runs at once, 1 to 64.
    pub slots: u16,
    /// Labels tasks can require (`gpu`, `linux-x64`, `big`): each 1 to 63 lowercase
    /// letters, digits, `-`, `_` or `.`, at most 32.
    pub labels: BTreeSet<String>,
    /// The agents installed on it (`claude`, `codex`, …), at most 16.
    pub agents: BTreeSet<AgentName>,
}

/// What the server says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The runner is accepted.
    Welcome {
        protocol: u32,
        runner_id: crate::RunnerId,
        name: String,
        /// Send a heartbeat at least this often.
        heartbeat_secs: u64,
    },
    /// The runner's message was refused; the connection closes after it. `retry`
    /// says whether reconnecting can help (false for a wrong version or a bad offer).
    Refused { reason: String, retry: bool },
    /// The runner's token was revoked: it must stop and not reconnect.
    Revoked,
    /// Start a process in a task's workspace; answered by `started` or `spawn_failed`.
    Spawn(Spawn),
    /// Bytes for the process's standard input.
    Stdin { process: u64, data: Chunk },
    /// Close the process's standard input.
    CloseStdin { process: u64 },
    /// Kill the process and everything it started.
    Kill { process: u64 },
    /// Bring the task's workspace to its branch plus the server's snapshot; answered by
    /// `prepared` or `request_failed`.
    Prepare(Prepare),
    /// Send the task's workspace back as a snapshot; answered by `saved` or
    /// `request_failed`.
    Save(Save),
    /// The task is done here: kill its processes and remove its directory (no answer).
    Release { task: crate::TaskId },
}

/// Why a runner's message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message of {0} bytes; at most {MAX_MESSAGE_BYTES} are accepted")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error(
        "this server speaks runner protocol {PROTOCOL_VERSION}; the runner speaks {0}: run the same mainloop version on both"
    )]
    Version(u32),
    #[error("{0}")]
    Offer(String),
    #[error("{0}")]
    Process(String),
    #[error("{0}")]
    Workspace(String),
}

/// Reads one message from a runner: size, shape, then every bound.
///
/// # Errors
/// What is wrong with it, in words fit to send back.
pub fn parse_runner_message(text: &str) -> Result<RunnerMessage, ProtocolError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge(text.len()));
    }
    let msg: RunnerMessage = serde_json::from_str(text).map_err(|e| {
        // serde's message quotes at most the offending token; keep it short anyway.
        ProtocolError::Malformed(e.to_string().chars().take(200).collect())
    })?;
    match &msg {
        RunnerMessage::Hello(hello) => check_hello(hello)?,
        RunnerMessage::Heartbeat { busy } => {
            if *busy > MAX_SLOTS {
                return Err(ProtocolError::Offer(format!(
                    "busy {busy} exceeds the most slots a runner has ({MAX_SLOTS})"
                )));
            }
        }
        RunnerMessage::Started { pid, .. } => {
            if *pid == 0 {
                return Err(ProtocolError::Process("pid 0 is no process".to_owned()));
            }
        }
        RunnerMessage::SpawnFailed { reason, .. } => process::check_reason(reason)?,
        RunnerMessage::Output { data, .. } => process::check_chunk(data)?,
        RunnerMessage::Exited { .. } => {}
        RunnerMessage::Prepared {
            workspace, home, ..
        } => {
            workspace::check_absolute_path("workspace", workspace)?;
            workspace::check_absolute_path("home", home)?;
        }
        RunnerMessage::Saved { commit, .. } => workspace::check_commit(commit)?,
        RunnerMessage::RequestFailed { reason, .. } => process::check_reason(reason)?,
    }
    Ok(msg)
}

/// Checks a message from the server against the bounds the server holds itself to; a
/// runner checks every `spawn`, `stdin`, `prepare` and `save` with it before acting.
///
/// # Errors
/// The first bound it breaks, in words.
pub fn check_server_message(msg: &ServerMessage) -> Result<(), ProtocolError> {
    match msg {
        ServerMessage::Spawn(spawn) => check_spawn(spawn),
        ServerMessage::Stdin { data, .. } => process::check_chunk(data),
        ServerMessage::Prepare(p) => check_prepare(p),
        ServerMessage::Save(s) => check_save(s),
        _ => Ok(()),
    }
}

fn check_hello(hello: &Hello) -> Result<(), ProtocolError> {
    if hello.protocol != PROTOCOL_VERSION {
        return Err(ProtocolError::Version(hello.protocol));
    }
    if hello.version.is_empty()
        || hello.version.len() > MAX_VERSION_LEN
        || hello.version.chars().any(char::is_control)
    {
        return Err(ProtocolError::Offer(format!(
            "version is 1 to {MAX_VERSION_LEN} printable characters"
        )));
    }
    check_offer(&hello.offer).map_err(ProtocolError::Offer)
}

/// Checks an offer's bounds.
///
/// # Errors
/// The first bound it breaks, in words.
pub fn check_offer(offer: &Offer) -> Result<(), String> {
    if offer.slots == 0 || offer.slots > MAX_SLOTS {
        return Err(format!(
            "slots must be 1 to {MAX_SLOTS}, got {}",
            offer.slots
        ));
    }
    if offer.labels.len() > MAX_LABELS {
        return Err(format!(
            "at most {MAX_LABELS} labels, got {}",
            offer.labels.len()
        ));
    }
    if let Some(bad) = offer.labels.iter().find(|l| !is_label(l)) {
        let shown: String = bad.chars().take(40).collect();
        return Err(format!(
            "label {shown:?} is not 1 to {MAX_LABEL_LEN} lowercase letters, digits, '-', '_' or '.'"
        ));
    }
    if offer.agents.is_empty() || offer.agents.len() > MAX_AGENTS {
        return Err(format!(
            "a runner offers 1 to {MAX_AGENTS} agents, got {}",
            offer.agents.len()
        ));
    }
    Ok(())
}

/// Whether `label` is a valid runner label.
#[must_use]
pub fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Checks a runner's name as its owner gives it.
///
/// # Errors
/// What is wrong with it.
pub fn check_runner_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_RUNNER_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a runner's name is 1 to {MAX_RUNNER_NAME} letters, digits, '-', '_' or '.'"
        ))
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;

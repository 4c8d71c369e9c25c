//! Processes the server starts on a runner and whose stdio travels over the runner's
//! WebSocket: the shapes of `spawn` and of the byte chunks both ways (base64 in JSON),
//! the bounds each is held to, and `workspace_path`, the one check that a working
//! directory stays inside the task's workspace.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::{Component, Path, PathBuf};
use utoipa::ToSchema;

use super::ProtocolError;
use crate::TaskId;
use crate::agents::AgentName;

/// The most bytes one `stdin` or `output` message carries, decoded.
pub const MAX_CHUNK_BYTES: usize = 32 * 1024;
/// The longest reason a `spawn_failed` gives, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// The most arguments one `spawn` passes.
pub const MAX_ARGS: usize = 256;
/// The longest argument, in bytes.
pub const MAX_ARG_BYTES: usize = 32 * 1024;
/// The most environment variables one `spawn` sets.
pub const MAX_ENV: usize = 256;
/// The longest variable name, in bytes.
pub const MAX_ENV_NAME_BYTES: usize = 256;
/// The longest variable value, in bytes.
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// The longest program path or working directory, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Bytes as base64 (standard alphabet, padded) in JSON.
#[derive(Clone, Default, PartialEq, Eq, ToSchema)]
#[schema(value_type = String, format = Byte)]
pub struct Chunk(pub Vec<u8>);

impl std::fmt::Debug for Chunk {
    // Stdio can carry secrets; a log says how much, not what.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chunk({} bytes)", self.0.len())
    }
}

impl Serialize for Chunk {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Chunk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Chunk)
            .map_err(|e| serde::de::Error::custom(format!("data is not base64: {e}")))
    }
}

/// Which program a runner starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Program {
    /// The runner's own installed program for this agent (the server's path for it
    /// means nothing on another machine).
    Agent(AgentName),
    /// This program, a bare name looked up on the runner's `PATH` or a path.
    Path(String),
}

/// Which of a process's output streams a chunk is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What the server asks a runner to start.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Spawn {
    /// The server's number for it, unique on this server; every later message about it
    /// names it.
    pub process: u64,
    /// The task whose workspace it runs in.
    pub task: TaskId,
    pub program: Program,
    pub args: Vec<String>,
    /// The working directory relative to the task's workspace (`""` is its root); never
    /// absolute, never `..`.
    pub cwd: String,
    /// The process's environment as `[name, value]` pairs; the runner sets `HOME`,
    /// `TMPDIR` and `PATH` itself.
    #[schema(value_type = Vec<Vec<String>>)]
    pub env: Vec<(String, String)>,
}

// Hand-written: `env` carries API keys and tokens.
impl std::fmt::Debug for Spawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Spawn")
            .field("process", &self.process)
            .field("task", &self.task)
            .field("program", &self.program)
            .field("args", &self.args.len())
            .field("cwd", &self.cwd)
            .field("env_keys", &keys)
            .finish()
    }
}

/// Checks a `spawn` against every bound, as the server does before sending it and the
/// runner does before starting anything.
///
/// # Errors
/// The first bound it breaks, in words.
pub fn check_spawn(spawn: &Spawn) -> Result<(), ProtocolError> {
    let bad = |m: String| Err(ProtocolError::Process(m));
    if let Program::Path(p) = &spawn.program
        && (p.is_empty() || p.len() > MAX_PATH_BYTES || p.contains('\0'))
    {
        return bad(format!(
            "a program path is 1 to {MAX_PATH_BYTES} bytes without NUL"
        ));
    }
    if spawn.args.len() > MAX_ARGS {
        return bad(format!(
            "at most {MAX_ARGS} arguments, got {}",
            spawn.args.len()
        ));
    }
    if spawn
        .args
        .iter()
        .any(|a| a.len() > MAX_ARG_BYTES || a.contains('\0'))
    {
        return bad(format!(
            "an argument is at most {MAX_ARG_BYTES} bytes without NUL"
        ));
    }
    if spawn.env.len() > MAX_ENV {
        return bad(format!(
            "at most {MAX_ENV} environment variables, got {}",
            spawn.env.len()
        ));
    }
    for (name, value) in &spawn.env {
        if name.is_empty()
            || name.len() > MAX_ENV_NAME_BYTES
            || name.contains(['=', '\0'])
            || value.len() > MAX_ENV_VALUE_BYTES
            || value.contains('\0')
        {
            let shown: String = name.chars().take(40).collect();
            return bad(format!(
                "environment variable {shown:?}: a name is 1 to {MAX_ENV_NAME_BYTES} bytes \
                 without '=' or NUL, a value at most {MAX_ENV_VALUE_BYTES} bytes without NUL"
            ));
        }
    }
    workspace_path(&spawn.cwd).map_err(ProtocolError::Process)?;
    Ok(())
}

/// The relative path `cwd` names inside a workspace: `""` (or `.`) is the workspace's
/// root; an absolute path, a `..` anywhere, a NUL or more than [`MAX_PATH_BYTES`] is
/// refused. Lexical only: the caller joins the result under its workspace.
///
/// # Errors
/// Why the path would leave the workspace, in words.
pub fn workspace_path(cwd: &str) -> Result<PathBuf, String> {
    if cwd.len() > MAX_PATH_BYTES || cwd.contains('\0') {
        return Err(format!(
            "a working directory is at most {MAX_PATH_BYTES} bytes without NUL"
        ));
    }
    let mut out = PathBuf::new();
    for part in Path::new(cwd).components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "the working directory {:?} is absolute; it must be relative to the task's workspace",
                    shown(cwd)
                ));
            }
            Component::ParentDir => {
                return Err(format!(
                    "the working directory {:?} leaves the task's workspace ('..')",
                    shown(cwd)
                ));
            }
        }
    }
    Ok(out)
}

fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Checks a chunk's size.
pub(super) fn check_chunk(data: &Chunk) -> Result<(), ProtocolError> {
    if data.0.len() > MAX_CHUNK_BYTES {
        return Err(ProtocolError::Process(format!(
            "data of {} bytes; at most {MAX_CHUNK_BYTES} per message",
            data.0.len()
        )));
    }
    Ok(())
}

/// Checks a `spawn_failed` reason: 1 to [`MAX_REASON_BYTES`] printable characters.
pub(super) fn check_reason(reason: &str) -> Result<(), ProtocolError> {
    if reason.is_empty() || reason.len() > MAX_REASON_BYTES || reason.chars().any(char::is_control)
    {
        return Err(ProtocolError::Process(format!(
            "a reason is 1 to {MAX_REASON_BYTES} bytes of printable characters"
        )));
    }
    Ok(())
}

/// `text` made fit for a `spawn_failed` reason: control characters become spaces, cut
/// to [`MAX_REASON_BYTES`] on a character boundary, never empty.
#[must_use]
pub fn fit_reason(text: &str) -> String {
    let mut out = String::new();
    for c in text.trim().chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_REASON_BYTES {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        out.push_str("unknown reason");
    }
    out
}

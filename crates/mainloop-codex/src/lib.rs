//! OpenAI's Codex as a coding agent behind the agent port of `mainloop-agent`, driven
//! through `codex app-server` (JSON-RPC over stdio): threads are sessions, turns are
//! the port's turns, command and patch approvals become `Permission` events answered
//! by the worker's policy, and a thread is resumed in a later process by its id.
//!
//! The conversation is a pure state machine in [`protocol`], with Codex's items mapped
//! to the port's tool vocabulary in `items`; the process plumbing is in `live`.

mod items;
mod live;
pub mod protocol;
mod quiet;

pub use items::{Change, failure_of, unwrap_shell};
pub use live::{Codex, CodexSession, exit_failure};
pub use protocol::{Conversation, Effects, MAX_LINE_BYTES, Opening};

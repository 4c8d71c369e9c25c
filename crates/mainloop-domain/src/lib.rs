//! The pure domain core of mainloop: identifiers, the task state machine, inbox rules,
//! the main-thread conversation model and the event vocabulary.
//!
//! Nothing in this crate performs IO, reads the clock or spawns tasks; callers pass in
//! everything (including "now"), which keeps every rule exhaustively unit-testable.

pub mod agents;
pub mod chat;
pub mod digest;
pub mod environment;
pub mod event;
pub mod failure;
pub mod ids;
pub mod inbox;
pub mod notes;
pub mod placement;
pub mod question;
pub mod records;
pub mod runner;
pub mod search;
pub mod task;
pub mod time;
pub mod transcript;
pub mod usage;

pub use ids::*;
pub use time::Timestamp;

//! The one place tests get a world from: a temporary data directory, a database (SQLite
//! or a fresh PostgreSQL one), the engine, the whole app built in-process on port 0 by
//! the binary's own `mainloop::App::build` (feature `app`), a local git repository, the fake model
//! with a named script, and waits on conditions instead of fixed sleeps.
//!
//! Failures panic with a message saying what was awaited: this crate is for tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "app")]
mod app;
mod db;
mod dirs;
mod engine;
mod git;
mod model;
pub mod netns;
mod wait;

#[cfg(feature = "app")]
pub use app::{TestApp, test_config, with_model};
pub use db::{Database, jobs_idle, try_jobs_idle};
pub use dirs::TestDir;
pub use engine::{EngineWorld, model_provider, try_model_provider};
pub use git::{GitRepo, git, try_git};
pub use model::{
    FakeModel, claude_path, fake_model, mcp_inspector_path, node_bin, script, script_path, settled,
};
pub use wait::{TIMEOUT, try_wait_for, wait_for, wait_for_within};

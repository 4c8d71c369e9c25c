//! The `mainloop` server as a library: the composition root ([`app::App`]), the
//! command line (server commands, and the client that talks to a server over HTTP), so
//! that tests start the very wiring `mainloop serve` runs.

mod agents;
pub mod app;
pub mod cli;
pub mod client;
mod data_dir;
mod launcher;
pub mod main_thread;
pub mod mcp_stdio;
pub mod runner;
mod sandbox;
pub mod signin_link;

pub use app::App;

//! The `mainloop` server as a library: the composition root ([`app::App`]) and the
//! command line, so that tests start the very wiring `mainloop serve` runs.

pub mod app;
pub mod cli;
mod sandbox;

pub use app::App;

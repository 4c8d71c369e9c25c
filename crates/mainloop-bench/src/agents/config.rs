//! The `agents` benchmark's command-line settings: the load (agents, rate, seconds) and
//! what else to measure.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Concurrent agent runs (tasks, and agent slots).
    #[arg(long, default_value_t = 50)]
    pub agents: usize,
    /// Events per second each agent streams.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Seconds each agent streams: it emits `rate × seconds` events.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Give up waiting for the tasks to reach `review` this long after creating them.
    #[arg(long, default_value_t = 55)]
    pub timeout: u64,
    /// Milliseconds between API requests (alternately `/api/tasks` and `/api/inbox`).
    #[arg(long, default_value_t = 50)]
    pub probe_ms: u64,
    /// The fake agent; default: `mainloop-fake-agent` next to this executable.
    #[arg(long)]
    pub fake_agent: Option<PathBuf>,
    /// A real `claude` CLI whose idle RSS to measure, if it exists.
    #[arg(long, default_value = "node_modules/.bin/claude")]
    pub claude: PathBuf,
    /// Print the 200 ms samples once a second: CPU, children's CPU, RSS, live agents.
    #[arg(long)]
    pub timeline: bool,
    /// Seconds per variant of the store's write ceiling (without agents): the agents'
    /// write path from `--agents` concurrent writers, relaxed, batched; 0 skips it.
    #[arg(long, default_value_t = 3)]
    pub ceiling_seconds: u64,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            agents: 50,
            rate: 100,
            seconds: 20,
            timeout: 55,
            probe_ms: 50,
            fake_agent: None,
            claude: PathBuf::from("node_modules/.bin/claude"),
            timeline: false,
            ceiling_seconds: 3,
        }
    }
}

impl Args {
    /// The fake agent to run: `--fake-agent`, or `mainloop-fake-agent` next to this
    /// executable; an error saying how to build it when it is missing.
    pub fn fake_agent(&self) -> Result<PathBuf> {
        let path = match &self.fake_agent {
            Some(p) => p.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("the bench executable has no directory")?
                .join("mainloop-fake-agent"),
        };
        if !path.exists() {
            bail!(
                "{} is missing: build it with `cargo build --release -p mainloop-agent --bins`",
                path.display()
            );
        }
        Ok(path)
    }
}

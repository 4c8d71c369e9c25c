//! What the runner benches share: the in-process server with the worker runtime running
//! the probe agent, one real `mainloop runner` process connected over loopback, a
//! repository, and every event of the owner's stream as the engine's hub hands it out,
//! stamped on arrival. A task is placed here or on the runner by the scheduler itself: a
//! task requiring the runner's label can only run there.

use super::probe::{self, now_us};
use super::process::RunnerProcess;
use crate::harness::Server;
use anyhow::{Context, Result};
use futures::StreamExt;
use mainloop_agent::ClaudeCode;
use mainloop_domain::TaskId;
use mainloop_domain::event::EventName;
use mainloop_domain::records::Event;
use mainloop_engine::{CreateTask, EngineConfig};
use mainloop_git::Git;
use mainloop_test_support::GitRepo;
use mainloop_worker::Runtime;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The label only the runner has: a task requiring it runs there.
const LABEL: &str = "bench-runner";

/// Where a task's agent runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    Local,
    Runner,
}

impl Site {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Runner => "runner",
        }
    }
}

/// An event of the owner's stream and when (wall clock, µs) the bench got it.
#[derive(Debug)]
pub struct Seen {
    pub at_us: i64,
    pub event: Arc<Event>,
}

impl Seen {
    /// The task a `task.updated` event is about, and its state's name.
    pub fn task_state(&self) -> Option<(String, &str)> {
        if self.event.name != EventName::TaskUpdated {
            return None;
        }
        let p = &self.event.payload;
        Some((p["id"].as_str()?.to_owned(), p["state"].as_str()?))
    }

    /// The task of a `task.output` event.
    pub fn output_task(&self) -> Option<&str> {
        (self.event.name == EventName::TaskOutput)
            .then(|| self.event.payload["task_id"].as_str())
            .flatten()
    }
}

/// Whether a state's name is one a run ends in.
pub fn settled(state: &str) -> bool {
    matches!(state, "review" | "failed" | "cancelled" | "merged")
}

#[derive(Debug)]
pub struct World {
    pub server: Server,
    pub runner: RunnerProcess,
    runtime_stop: CancellationToken,
    scheduler: tokio::task::JoinHandle<()>,
    repo: GitRepo,
    events: mpsc::UnboundedReceiver<Seen>,
    _work: tempfile::TempDir,
}

impl World {
    /// The server running `probe-agent probe_args…` for every task, and a runner
    /// (`bin runner`) connected to it.
    pub async fn start(bin: &Path, probe_args: &[String]) -> Result<Self> {
        let repo = GitRepo::try_with_readme("bench\n")?;
        let work = tempfile::Builder::new()
            .prefix("mainloop-bench-runner-server-")
            .tempdir()?;
        let config = crate::agents::runtime_config(1, work.path())?;
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut command = vec![exe.display().to_string(), probe::SUBCOMMAND.to_owned()];
        command.extend(probe_args.iter().cloned());
        let agent = Arc::new(ClaudeCode::new(command));
        let git = Git::new(work.path().join("repos"), work.path().join("worktrees"));
        // Where the agents' sessions a runner sends back are kept, as `mainloop serve`
        // keeps them under its data directory.
        let engine_config = EngineConfig {
            runner_state_dir: Some(work.path().join("runner-state")),
            ..EngineConfig::default()
        };
        let (server, runtime) = Server::start_with_runtime(engine_config, |engine| {
            Runtime::new(engine, agent, git, config)
        })
        .await?;
        let runtime_stop = server.shutdown_token().child_token();
        let scheduler = runtime.spawn(runtime_stop.clone());
        let runner = RunnerProcess::start(bin, &server, "bench", &[LABEL]).await?;

        let engine = server.engine().clone();
        let after = engine.latest_event_id().await?;
        let mut stream = engine.subscribe(server.user(), after);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                // Stamped first: what follows is the bench's own work.
                let at_us = now_us();
                if tx.send(Seen { at_us, event }).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            server,
            runner,
            runtime_stop,
            scheduler,
            repo,
            events,
            _work: work,
        })
    }

    /// Creates task `n` (implementing at once, no plan) to run on `site`.
    pub async fn create(&self, site: Site, n: usize) -> Result<TaskId> {
        let labels: BTreeSet<String> = match site {
            Site::Local => BTreeSet::new(),
            Site::Runner => BTreeSet::from([LABEL.to_owned()]),
        };
        let task = self
            .server
            .engine()
            .create_task_requiring(
                self.server.user(),
                &CreateTask {
                    description: format!("runner bench task {n} ({})", site.name()),
                    repo: self.repo.path().display().to_string(),
                    skip_plan: true,
                    model: None,
                    agent: None,
                    budget_usd: None,
                },
                &labels,
            )
            .await?;
        Ok(task.id)
    }

    /// The next event of the stream, or None at `deadline`.
    pub async fn next(&mut self, deadline: Instant) -> Option<Seen> {
        tokio::time::timeout_at(deadline.into(), self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Checks that `task` ran where it was meant to: a task on the runner holds a run
    /// lease on it, one here none (so the two figures never measure the same path).
    pub async fn check_site(&self, task: TaskId, site: Site) -> Result<()> {
        let lease = self.server.engine().run_lease(task).await?;
        let on_runner = lease.is_some_and(|l| l.runner_id == self.runner.id);
        if on_runner != (site == Site::Runner) {
            anyhow::bail!("task {task} meant for {} ran elsewhere", site.name());
        }
        Ok(())
    }

    /// Where a task stands, for a run that did not finish: its state, error and last
    /// status or error lines.
    pub async fn describe(&self, task: TaskId) -> String {
        let (engine, user) = (self.server.engine(), self.server.user());
        let Ok(t) = engine.task(user, task).await else {
            return format!("task {task}: unreadable");
        };
        let said: Vec<String> = engine
            .task_transcript(user, task, 0, 1000)
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.entry.kind() == "status" || r.entry.kind() == "error")
            .filter_map(|r| r.entry.text().map(str::to_owned))
            .collect();
        let last = &said[said.len().saturating_sub(3)..];
        format!(
            "task {task} is {} ({}); said: {}",
            t.state,
            t.error.unwrap_or_default(),
            last.join(" / ")
        )
    }

    /// The task's error, if it failed.
    pub async fn error(&self, task: TaskId) -> Option<String> {
        let t = self
            .server
            .engine()
            .task(self.server.user(), task)
            .await
            .ok()?;
        t.error
    }

    /// Stops the runner, the runtime and the server.
    pub async fn stop(self) {
        let Self {
            server,
            runner,
            runtime_stop,
            scheduler,
            ..
        } = self;
        if let Err(e) = runner.stop().await {
            println!("  (stopping the runner: {e:#})");
        }
        runtime_stop.cancel();
        server.stop().await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), scheduler).await;
    }
}

/// Every `[tag N …]` marker in the strings of `v`, as its numbers (`[probe 7 1733…]` →
/// `[7, 1733…]`): the probe agent's words, wherever the transcript entry keeps them.
pub fn marks(v: &Value, tag: &str) -> Vec<Vec<i64>> {
    let mut found = Vec::new();
    collect(v, &format!("[{tag} "), &mut found);
    found
}

fn collect(v: &Value, open: &str, found: &mut Vec<Vec<i64>>) {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(at) = rest.find(open) {
                let after = &rest[at + open.len()..];
                let Some(end) = after.find(']') else { break };
                let numbers: Option<Vec<i64>> =
                    after[..end].split(' ').map(|n| n.parse().ok()).collect();
                if let Some(numbers) = numbers {
                    found.push(numbers);
                }
                rest = &after[end..];
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, open, found)),
        Value::Object(map) => map.values().for_each(|i| collect(i, open, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn marks_are_found_in_any_string_of_an_entry() {
        let v = json!({"kind": "tool_call", "summary": "Bash: echo [probe 4 1700000000123456]",
                       "other": ["[answer 2 10 20] and [answer x]"]});
        assert_eq!(marks(&v, "probe"), vec![vec![4, 1_700_000_000_123_456]]);
        assert_eq!(marks(&v, "answer"), vec![vec![2, 10, 20]]);
    }
}

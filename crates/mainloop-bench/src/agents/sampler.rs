//! The sampler: every 200 ms, this process's CPU, context switches and RSS, and each
//! fake agent's CPU and RSS (their pids from the runtime's pid files).

use super::procfs::{context_switches, proc_stat, status_kib};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    /// Since the epoch instant, ms.
    pub at_ms: f64,
    /// utime + stime of this process, ticks.
    pub self_ticks: u64,
    /// stime (kernel) of this process, ticks.
    pub self_sys: u64,
    /// Context switches of all this process's threads (voluntary + involuntary).
    pub ctx_switches: u64,
    /// cutime + cstime (waited-for children: agents and git), ticks.
    pub child_ticks: u64,
    pub rss_kib: u64,
    /// Fake agents alive (not zombies).
    pub live_agents: usize,
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct AgentProc {
    /// utime + stime at the last sample that saw it alive, ticks.
    pub ticks: u64,
    pub rss_max_pages: u64,
    /// RSS at the last sample, pages.
    pub rss_last_pages: u64,
}

#[derive(Debug, Default)]
pub(super) struct Sampled {
    pub samples: Vec<Sample>,
    pub agents: HashMap<u32, AgentProc>,
}

pub(super) async fn sample(
    pid_dir: PathBuf,
    n_agents: usize,
    epoch: Instant,
    stop: CancellationToken,
) -> Sampled {
    let mut out = Sampled::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = Path::new("/proc/self/stat");
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Each task's agent pid is recorded by the runtime in `pid_dir/<task id>`.
        if out.agents.len() < n_agents
            && let Ok(entries) = std::fs::read_dir(&pid_dir)
        {
            for e in entries.flatten() {
                let record = std::fs::read_to_string(e.path()).unwrap_or_default();
                if let Some(Ok(pid)) = record.split_whitespace().next().map(str::parse::<u32>) {
                    out.agents.entry(pid).or_default();
                }
            }
        }
        let mut live = 0;
        for (pid, a) in &mut out.agents {
            if let Some(s) = proc_stat(Path::new(&format!("/proc/{pid}/stat")))
                && s.state != 'Z'
            {
                live += 1;
                a.ticks = s.utime + s.stime;
                a.rss_last_pages = s.rss_pages;
                a.rss_max_pages = a.rss_max_pages.max(s.rss_pages);
            }
        }
        let s = proc_stat(me).unwrap_or_default();
        out.samples.push(Sample {
            at_ms: epoch.elapsed().as_secs_f64() * 1000.0,
            self_ticks: s.utime + s.stime,
            self_sys: s.stime,
            ctx_switches: context_switches(),
            child_ticks: s.cutime + s.cstime,
            rss_kib: status_kib("self", "VmRSS").unwrap_or_default(),
            live_agents: live,
        });
    }
    out
}

/// The samples in `[from, to]` ms, plus the nearest ones outside so a short window
/// still has two ends.
pub(super) fn window(samples: &[Sample], from: f64, to: f64) -> Option<(Sample, Sample)> {
    let first = samples
        .iter()
        .rev()
        .find(|s| s.at_ms <= from)
        .or(samples.first())?;
    let last = samples.iter().find(|s| s.at_ms >= to).or(samples.last())?;
    (last.at_ms > first.at_ms).then_some((*first, *last))
}

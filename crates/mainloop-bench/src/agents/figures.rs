//! The figures of one run, worked out from what it measured: the streaming window and
//! the recording rate in it, the server's and the agents' CPU and memory, the API's
//! latency, and what the SSE client missed.

use super::procfs::{Machine, median};
use super::sampler;
use super::stream::Measured;
use super::transcripts::Tally;
use crate::stats::{Summary, percentile};
use anyhow::{Result, bail};

/// The streaming window: the first to the last agent entry of any task, ms since the
/// epoch; "all streaming": from the last task's first entry to the first task's last.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    pub from: f64,
    pub to: f64,
    pub all_from: f64,
    pub all_to: f64,
}

impl Window {
    /// Seconds from the first to the last agent entry.
    pub fn seconds(&self) -> f64 {
        (self.to - self.from) / 1000.0
    }

    /// Seconds in which every task streamed.
    pub fn all_seconds(&self) -> f64 {
        ((self.all_to - self.all_from) / 1000.0).max(0.0)
    }
}

/// The server's (this process's) and the fake agents' CPU.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cpu {
    /// % of one core over the window.
    pub server_core: f64,
    /// Of that, in the kernel.
    pub server_sys_core: f64,
    /// Waited-for children (agents and git) in the window, s.
    pub children_s: f64,
    pub switches_per_s: f64,
    pub ms_per_event: f64,
    pub switches_per_event: f64,
    pub agents_s: f64,
    pub agents_core: f64,
    /// Children after every agent exited and was reaped, s.
    pub children_total_s: f64,
}

/// Resident memory, KiB.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Rss {
    /// Samples in which every agent was alive.
    pub all_live_n: usize,
    pub all_live_median: u64,
    pub all_live_max: u64,
    pub peak: u64,
    pub per_task: f64,
    pub agent_median: f64,
    pub agent_max: f64,
    pub agent_processes: usize,
    pub max_live: usize,
}

/// The API's latency: idle (before the tasks) and while the agents stream.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Latency {
    pub tasks: Summary,
    pub inbox: Summary,
    pub tasks_idle: Summary,
    pub inbox_idle: Summary,
    pub errors: usize,
    pub tasks_bytes: usize,
}

#[derive(Debug)]
pub(super) struct Figures {
    pub tally: Tally,
    pub window: Window,
    /// Agent entries recorded per second of the window.
    pub throughput: f64,
    pub per_second: Vec<u64>,
    pub cpu: Cpu,
    pub rss: Rss,
    pub latency: Latency,
    pub sse_lost: u64,
    /// The SSE client's delivery lag, ms, at p50, p99 and the maximum.
    pub lag: [i64; 3],
}

impl Figures {
    /// The figures of `m`, a run of `agents` agents with `events` lines each.
    #[allow(clippy::cast_precision_loss)]
    pub fn of(m: &Measured, machine: &Machine, agents: usize, events: u64) -> Result<Self> {
        let tally = m.transcripts.tally(events);
        let window = streaming_window(m)?;
        let throughput = tally.recorded as f64 / window.seconds().max(0.001);
        let per_second = per_second(m, &window);
        let cpu = cpu(m, machine, &window, throughput);
        let rss = rss(m, machine, agents);
        let latency = latency(m, &window);
        let mut lags = m.sse.lags_ms.clone();
        lags.sort_unstable();
        Ok(Self {
            tally,
            window,
            throughput,
            per_second,
            cpu,
            rss,
            latency,
            sse_lost: tally.recorded.saturating_sub(m.sse.agent_events),
            lag: [50.0, 99.0, 100.0].map(|p| percentile(&lags, p)),
        })
    }
}

fn streaming_window(m: &Measured) -> Result<Window> {
    let spans: Vec<(i64, i64)> = m.transcripts.spans.iter().flatten().copied().collect();
    let from = spans.iter().map(|s| s.0).min();
    let to = spans.iter().map(|s| s.1).max();
    let (Some(from), Some(to)) = (from, to) else {
        bail!(
            "no agent output was recorded; task states {:?}; errors {:?}",
            m.states,
            m.errors.first()
        );
    };
    Ok(Window {
        from: m.since_epoch(from),
        to: m.since_epoch(to),
        all_from: spans
            .iter()
            .map(|s| s.0)
            .max()
            .map_or(0.0, |t| m.since_epoch(t)),
        all_to: spans
            .iter()
            .map(|s| s.1)
            .min()
            .map_or(0.0, |t| m.since_epoch(t)),
    })
}

/// Recorded per second of the window.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn per_second(m: &Measured, window: &Window) -> Vec<u64> {
    let mut per_second = vec![0_u64; (window.seconds().ceil() as usize).max(1)];
    for t in &m.transcripts.times {
        let sec = ((m.since_epoch(*t) - window.from) / 1000.0)
            .floor()
            .max(0.0) as usize;
        let last = per_second.len() - 1;
        if let Some(slot) = per_second.get_mut(sec.min(last)) {
            *slot += 1;
        }
    }
    per_second
}

#[allow(clippy::cast_precision_loss)]
fn cpu(m: &Measured, machine: &Machine, window: &Window, throughput: f64) -> Cpu {
    let tick_hz = machine.tick_hz;
    let (server_core, server_sys_core, children_s, switches_per_s) =
        match sampler::window(&m.sampled.samples, window.from, window.to) {
            Some((a, b)) => {
                let wall = (b.at_ms - a.at_ms) / 1000.0;
                let cpu = (b.self_ticks - a.self_ticks) as f64 / tick_hz;
                let sys = (b.self_sys - a.self_sys) as f64 / tick_hz;
                (
                    cpu / wall * 100.0,
                    sys / wall * 100.0,
                    (b.child_ticks - a.child_ticks) as f64 / tick_hz,
                    b.ctx_switches.saturating_sub(a.ctx_switches) as f64 / wall,
                )
            }
            None => (0.0, 0.0, 0.0, 0.0),
        };
    let agents_s: f64 = m
        .sampled
        .agents
        .values()
        .map(|a| a.ticks as f64)
        .sum::<f64>()
        / tick_hz;
    Cpu {
        server_core,
        server_sys_core,
        children_s,
        switches_per_s,
        ms_per_event: server_core / 100.0 / throughput.max(0.001) * 1000.0,
        switches_per_event: switches_per_s / throughput.max(0.001),
        agents_s,
        agents_core: agents_s / window.seconds().max(0.001) * 100.0,
        children_total_s: m
            .sampled
            .samples
            .last()
            .map_or(0.0, |s| s.child_ticks as f64 / tick_hz),
    }
}

/// RSS while all agents are alive.
#[allow(clippy::cast_precision_loss)]
fn rss(m: &Measured, machine: &Machine, agents: usize) -> Rss {
    let samples = &m.sampled.samples;
    let all_live: Vec<u64> = samples
        .iter()
        .filter(|s| s.live_agents >= agents)
        .map(|s| s.rss_kib)
        .collect();
    let all_live_median = median(all_live.clone());
    let agent_rss: Vec<u64> = m.sampled.agents.values().map(|a| a.rss_max_pages).collect();
    Rss {
        all_live_n: all_live.len(),
        all_live_median,
        all_live_max: all_live.iter().copied().max().unwrap_or_default(),
        peak: samples.iter().map(|s| s.rss_kib).max().unwrap_or_default(),
        per_task: all_live_median.saturating_sub(m.baseline_rss) as f64 / agents as f64,
        agent_median: median(agent_rss.clone()) as f64 * machine.page_kib,
        agent_max: agent_rss.iter().copied().max().unwrap_or_default() as f64 * machine.page_kib,
        agent_processes: agent_rss.len(),
        max_live: samples
            .iter()
            .map(|s| s.live_agents)
            .max()
            .unwrap_or_default(),
    }
}

fn latency(m: &Measured, window: &Window) -> Latency {
    let probes = &m.probes;
    let pick = |tasks: bool, from: f64, to: f64| {
        Summary::of(
            probes
                .iter()
                .filter(|p| p.tasks == tasks && p.at_ms >= from && p.at_ms <= to)
                .map(|p| p.took)
                .collect(),
        )
    };
    Latency {
        tasks: pick(true, window.from, window.to),
        inbox: pick(false, window.from, window.to),
        tasks_idle: pick(true, 0.0, m.create_at),
        inbox_idle: pick(false, 0.0, m.create_at),
        errors: probes.iter().filter(|p| !p.ok).count(),
        tasks_bytes: probes
            .iter()
            .filter(|p| p.tasks && p.at_ms >= window.from)
            .map(|p| p.bytes)
            .max()
            .unwrap_or_default(),
    }
}

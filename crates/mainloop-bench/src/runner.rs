//! What a runner costs: per transcript event and per question round trip, a task on a
//! real `mainloop runner` over loopback against the same task here (`runner-stream`,
//! `runner-questions`), and the memory of an idle connected runner (`runner-idle`). The
//! agent is the probe (`probe-agent`, this executable), which stamps what it writes.

pub mod idle;
pub mod probe;
mod process;
pub mod questions;
mod relay;
pub mod stream;
mod world;

/// The machine's 1-minute load average (`/proc/loadavg`): these figures are sensitive
/// to other work on the machine, so each run says how busy it was.
pub fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

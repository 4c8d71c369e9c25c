//! What `/proc` and `getconf` say about a process and the machine: CPU ticks, resident
//! memory, context switches, and the units to read them in.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The fields of `/proc/PID/stat` we use (ticks and pages).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ProcStat {
    pub state: char,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    pub rss_pages: u64,
}

pub(super) fn proc_stat(path: &Path) -> Option<ProcStat> {
    let text = std::fs::read_to_string(path).ok()?;
    // `pid (comm) state …`: comm may contain spaces, so split after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field N is f[N - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        utime: num(14)?,
        stime: num(15)?,
        cutime: num(16)?,
        cstime: num(17)?,
        rss_pages: num(24)?,
    })
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
pub(super) fn status_kib(pid: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Context switches of this process's live threads, voluntary and involuntary.
pub(super) fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn getconf(name: &str, default: u64) -> u64 {
    std::process::Command::new("getconf")
        .arg(name)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

pub(super) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

pub(super) fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

/// The units the figures are read in.
#[derive(Clone, Copy, Debug)]
pub(super) struct Machine {
    /// Clock ticks per second (CPU times in `/proc/PID/stat`).
    pub tick_hz: f64,
    /// KiB per page (RSS in `/proc/PID/stat`).
    pub page_kib: f64,
    pub cores: f64,
}

impl Machine {
    #[allow(clippy::cast_precision_loss)]
    pub fn read() -> Self {
        Self {
            tick_hz: getconf("CLK_TCK", 100) as f64,
            page_kib: getconf("PAGESIZE", 4096) as f64 / 1024.0,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64,
        }
    }
}

pub(super) fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let s = proc_stat(Path::new("/proc/self/stat")).unwrap();
        assert!(s.rss_pages > 0);
        assert!(matches!(s.state, 'R' | 'S'));
    }
}

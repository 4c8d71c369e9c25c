//! Looking at processes through `/proc` (Linux): whether an agent a killed server left
//! behind is still running, and which processes still work inside a run's directory.

use std::path::Path;

/// The process's start time (clock ticks since boot, field 22 of `stat`) and whether it
/// is a zombie; `None` when there is no such process.
fn stat(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; the fields after the last
    // ')' are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let zombie = fields.next()? == "Z";
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, zombie))
}

/// Whether `pid` is still the process that started at `start` and has not exited (a
/// zombie waiting to be reaped by init has).
pub fn running(pid: u32, start: u64) -> bool {
    stat(pid).is_some_and(|(s, zombie)| s == start && !zombie)
}

/// The agents a server recorded in `<data>/agents/<task id>` (`pid start`).
pub fn recorded_agents(pid_dir: &Path) -> Vec<(u32, u64)> {
    let Ok(entries) = std::fs::read_dir(pid_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|record| {
            let mut parts = record.split_whitespace();
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect()
}

/// Live processes whose working directory is inside `dir`, as `(pid, start, command)`.
pub fn working_in(dir: &Path) -> Vec<(u32, u64, String)> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir))
        })
        .filter_map(|pid| {
            let (start, zombie) = stat(pid)?;
            if zombie {
                return None;
            }
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            Some((pid, start, cmd))
        })
        .collect()
}

/// SIGKILLs a process this run started (directly or through the server), if it is still
/// the same process.
pub fn kill(pid: u32, start: u64) {
    if running(pid, start)
        && let Ok(raw) = i32::try_from(pid)
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let (start, zombie) = stat(me).unwrap_or_default();
        assert!(!zombie);
        assert!(running(me, start));
        assert!(!running(me, start + 1));
        assert!(!running(u32::MAX - 1, 0));
    }
}

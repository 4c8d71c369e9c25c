//! Looking at processes through `/proc` (Linux): whether an agent a killed server or
//! runner left behind is still running, and which processes still work inside a run's
//! directory; killing a process group.

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

/// The processes a runner recorded in `<data>/pids/<pid>` (`pid start group`).
pub fn recorded_runner_processes(pid_dir: &Path) -> Vec<(u32, u64, u32)> {
    let Ok(entries) = std::fs::read_dir(pid_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|record| {
            let mut parts = record.split_whitespace();
            let pid: u32 = parts.next()?.parse().ok()?;
            let start = parts.next()?.parse().ok()?;
            let group = parts.next().map_or(Some(pid), |g| g.parse().ok())?;
            Some((pid, start, group))
        })
        .collect()
}

/// SIGKILLs process group `group` (a runner, or an agent with what it started).
pub fn kill_group(group: u32) {
    if let Ok(raw) = i32::try_from(group)
        && raw > 1
    {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
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

/// The processes that have `file` open, as `(pid, state, command)`.
pub fn holding(file: &Path) -> Vec<(u32, String, String)> {
    let Ok(file) = file.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == file))
            })
        })
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|i| stat.get(i + 2..i + 3))
                .unwrap_or("?")
                .to_owned();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            (pid, state, cmd)
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

    #[test]
    fn a_file_this_process_holds_open_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let file = std::fs::File::create(&path).unwrap();
        let holders = holding(&path);
        assert!(
            holders.iter().any(|(pid, _, _)| *pid == std::process::id()),
            "{holders:?}"
        );
        drop(file);
        assert!(holding(&path).is_empty());
    }
}

//! Killing an agent and everything it started.
//!
//! The agent's own process group is not enough: Claude Code runs each Bash tool command
//! in a shell under `setsid`, a session and process group of its own, so a group kill
//! misses it and the shell is reparented to init, running on. The only link from the
//! agent to such a process is the parent chain, and that link breaks the moment the
//! agent dies. So, while the agent is still alive, we freeze it and walk its process
//! tree in `/proc` (Linux; elsewhere only the group is killed), then kill every group
//! led by a member of the tree and every member.

use std::collections::{BTreeMap, BTreeSet};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgrp};

/// Rounds of freeze-and-look: a process that was forking while we looked shows up in the
/// next round, and every round stops more of the tree.
const FREEZE_ROUNDS: usize = 8;

/// SIGKILLs the process group `root` (the agent was spawned as its leader) and all
/// descendants of `root`, including those that moved to other groups or sessions.
/// `root` must not have been reaped yet, or its number may belong to someone else.
pub(crate) fn kill_tree(root: u32) {
    let Ok(root) = i32::try_from(root) else {
        return;
    };
    kill_all(&BTreeSet::from([root]), BTreeSet::from([root]));
}

/// SIGKILLs what is left of the process group `group` after its leader exited and was
/// reaped (tools still running in it), and their descendants. The kernel keeps a group's
/// number from being reused while a member remains, so members of a group whose leader
/// is gone are the leader's leftovers; a live process with that number is someone
/// else's, and then nothing is done.
pub fn kill_orphaned_group(group: u32) {
    let Ok(group) = i32::try_from(group) else {
        return;
    };
    let table = process_table();
    if table.contains_key(&group) || group == getpgrp().as_raw() {
        return;
    }
    let members: BTreeSet<i32> = table
        .iter()
        .filter(|(_, p)| p.pgid == group)
        .map(|(pid, _)| *pid)
        .collect();
    if !members.is_empty() {
        kill_all(&members, BTreeSet::from([group]));
    }
}

/// Freezes `roots`, `groups` and every descendant of `roots`, round after round until
/// the tree stops growing, then SIGKILLs them all.
fn kill_all(roots: &BTreeSet<i32>, mut groups: BTreeSet<i32>) {
    // Never signal the server's own group, whatever a descendant did with setpgid.
    let own_group = getpgrp().as_raw();
    let mut pids = roots.clone();
    for _ in 0..FREEZE_ROUNDS {
        for group in &groups {
            signal_group(*group, Signal::SIGSTOP);
        }
        for pid in &pids {
            signal_pid(*pid, Signal::SIGSTOP);
        }
        let table = process_table();
        let tree: BTreeSet<i32> = roots
            .iter()
            .flat_map(|root| descendants(*root, &table))
            .collect();
        let tree_groups: BTreeSet<i32> = tree
            .iter()
            .filter_map(|pid| table.get(pid).map(|p| p.pgid))
            .filter(|g| *g != own_group && (tree.contains(g) || groups.contains(g)))
            .collect();
        let grew = !tree.is_subset(&pids) || !tree_groups.is_subset(&groups);
        pids.extend(tree);
        groups.extend(tree_groups);
        if !grew {
            break;
        }
    }
    for group in &groups {
        signal_group(*group, Signal::SIGKILL);
    }
    for pid in &pids {
        signal_pid(*pid, Signal::SIGKILL);
    }
}

fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pgid, ?signal, error = %e, "signalling an agent's process group failed");
        }
    }
}

fn signal_pid(pid: i32, signal: Signal) {
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pid, ?signal, error = %e, "signalling an agent process failed");
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ProcInfo {
    ppid: i32,
    pgid: i32,
}

/// Every process's parent and group, from `/proc/<pid>/stat`; empty without procfs.
fn process_table() -> BTreeMap<i32, ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            Some((pid, parse_stat(&stat)?))
        })
        .collect()
}

/// `pid (comm) state ppid pgrp …`; comm may itself contain spaces and parentheses.
fn parse_stat(stat: &str) -> Option<ProcInfo> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(1);
    Some(ProcInfo {
        ppid: fields.next()?.parse().ok()?,
        pgid: fields.next()?.parse().ok()?,
    })
}

/// `root` and all its descendants.
fn descendants(root: i32, table: &BTreeMap<i32, ProcInfo>) -> BTreeSet<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (pid, info) in table {
        children.entry(info.ppid).or_default().push(*pid);
    }
    let mut out = BTreeSet::from([root]);
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if out.insert(*child) {
                todo.push(*child);
            }
        }
    }
    out
}

/// The kernel's start time of `pid` (clock ticks since boot, field 22 of
/// `/proc/<pid>/stat`): with the pid, it identifies one process across pid reuse.
#[must_use]
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after the
    // last ')' are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kills an agent left running by a previous server process (one killed without a
/// chance to clean up), and everything it started — only if `pid` still is the process
/// that started at `start_time`. Returns whether it was found and killed.
pub fn kill_stale_agent(pid: u32, start_time: u64) -> bool {
    if process_start_time(pid) != Some(start_time) {
        return false;
    }
    // A stale agent lost its server, so it was reparented; one that is our own child was
    // started by this server. The start-up reap runs beside the dispatcher, whose
    // relaunched run can record its new agent before the reap reads the record: killing
    // that agent fails the task it was about to resume.
    if parent_of(pid) == Some(std::process::id()) {
        return false;
    }
    kill_tree(pid);
    true
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    u32::try_from(parse_stat(&stat)?.ppid).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_this_process_started_is_never_stale() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let start = process_start_time(child.id()).expect("its start time");
        assert!(!kill_stale_agent(child.id(), start));
        assert!(
            child.try_wait().expect("waitable").is_none(),
            "still running"
        );
        child.kill().expect("killed");
        child.wait().expect("reaped");
    }

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let info = parse_stat("42 (my (odd) prog) S 7 42 42 0 -1 4194560").unwrap();
        assert_eq!((info.ppid, info.pgid), (7, 42));
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn descendants_follow_parent_links() {
        let table = BTreeMap::from([
            (10, ProcInfo { ppid: 1, pgid: 10 }),
            (11, ProcInfo { ppid: 10, pgid: 10 }),
            (12, ProcInfo { ppid: 11, pgid: 12 }),
            (13, ProcInfo { ppid: 1, pgid: 10 }),
        ]);
        assert_eq!(descendants(10, &table), BTreeSet::from([10, 11, 12]));
    }
}

//! The project's check command: where it is configured (`check` in `.mainloop.toml`)
//! and how it runs — `sh -c` in its own process group, stdout and stderr interleaved
//! through one pipe, only the tail of the output kept, and the whole group killed on
//! timeout or when it leaves background processes behind.

use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::GitError;
use crate::exec::GroupKiller;

/// The per-project config file at the root of a worktree.
pub const CONFIG_FILE: &str = ".mainloop.toml";

/// How long a timed-out check gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long we keep reading output after the check's processes are gone; only a
/// process that escaped the group (setsid) could hold the pipe open longer.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// The result of one run of a check command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// Exit code 0 within the deadline.
    pub passed: bool,
    /// `None` when killed by a signal (including our timeout) or never started.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// The last `max_bytes` of stdout and stderr, interleaved as written.
    pub output_tail: String,
    pub duration: Duration,
}

/// The `check` key of `.mainloop.toml` at the worktree root. `Ok(None)` when the file
/// or the key is missing or the command is blank; an error when the file is not valid
/// TOML or `check` is not a string.
pub fn read_check_command(worktree: &Path) -> Result<Option<String>, GitError> {
    let path = worktree.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(GitError::io("read", path, e)),
    };
    parse_check_command(&text, path)
}

fn parse_check_command(text: &str, path: std::path::PathBuf) -> Result<Option<String>, GitError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| GitError::Config {
            path: path.clone(),
            message: e.message().to_owned(),
        })?;
    match table.get("check") {
        None => Ok(None),
        Some(toml::Value::String(cmd)) => Ok(Some(cmd.trim().to_owned()).filter(|c| !c.is_empty())),
        Some(other) => Err(GitError::Config {
            path,
            message: format!("`check` must be a string, not {}", other.type_str()),
        }),
    }
}

impl crate::Git {
    /// The check command as the task's base branch has it. The agent can edit the
    /// worktree's copy, so the gate its work must pass is read from where it cannot.
    pub async fn check_command_at_base(
        &self,
        wt: &crate::Worktree,
    ) -> Result<Option<String>, GitError> {
        let spec = format!("refs/heads/{}:{CONFIG_FILE}", wt.base);
        let out = self.cmd(&wt.path).args(["show", &spec]).output().await?;
        if !out.success() {
            // No such file on the base branch: no check configured.
            return Ok(None);
        }
        parse_check_command(&out.text(), std::path::PathBuf::from(spec))
    }
}

/// Runs `sh -c <command>` in `cwd` with exactly `env` as its environment (nothing of
/// the server's is inherited: the code under test is the agent's), under `wrapper` (a
/// sandbox command ending in `--`) unless it is empty.
/// Never fails: a check that cannot even start is a failed check, with the reason in
/// `output_tail`.
pub async fn run_check(
    cwd: &Path,
    command: &str,
    env: &[(String, String)],
    wrapper: &[String],
    timeout: Duration,
    max_bytes: usize,
) -> CheckOutcome {
    let started = Instant::now();
    let failed = |why: String| CheckOutcome {
        passed: false,
        exit_code: None,
        timed_out: false,
        output_tail: tail_of(why.as_bytes(), max_bytes),
        duration: started.elapsed(),
    };

    // One pipe for both streams keeps their relative order, as a terminal shows it.
    let (reader, writer) = match std::io::pipe() {
        Ok(pair) => pair,
        Err(e) => return failed(format!("mainloop: cannot create a pipe for the check: {e}")),
    };
    let writer_err = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return failed(format!("mainloop: cannot create a pipe for the check: {e}")),
    };
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args).arg("sh");
            cmd
        }
        None => tokio::process::Command::new("sh"),
    };
    cmd.arg("-c")
        .arg(command)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer_err))
        .process_group(0)
        .kill_on_drop(true);
    let spawned = cmd.spawn();
    // The Command holds our copies of the write end; until they are closed the read
    // end never sees EOF.
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return failed(format!(
                "mainloop: cannot start `sh -c` in {}: {e}",
                cwd.display()
            ));
        }
    };
    let mut killer = GroupKiller::new(child.id());
    let mut output = match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
        Ok(rx) => rx,
        Err(e) => return failed(format!("mainloop: cannot read the check's output: {e}")),
    };

    let mut tail = OutputTail::new(max_bytes);
    let mut buf = vec![0u8; 16 * 1024];
    let mut eof = false;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut status = None;
    let mut timed_out = false;
    loop {
        tokio::select! {
            read = output.read(&mut buf), if !eof => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => tail.push(&buf[..n]),
            },
            exited = child.wait() => {
                status = exited.ok();
                break;
            }
            () = tokio::time::sleep_until(deadline) => {
                timed_out = true;
                break;
            }
        }
    }

    if timed_out {
        killer.signal(Signal::SIGTERM);
        if let Ok(Ok(s)) = tokio::time::timeout(TERM_GRACE, child.wait()).await {
            status = Some(s);
        }
    }
    // Whatever is left of the group — background jobs of a finished check, or
    // stragglers that ignored SIGTERM — goes now, so nothing outlives the check.
    // The leader may already be reaped here; its id stays reserved as long as any
    // member of its group lives, so this reaches only the check's own processes.
    killer.signal(Signal::SIGKILL);
    if status.is_none()
        && let Ok(s) = child.wait().await
    {
        status = Some(s);
    }
    let drain_deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    while !eof {
        match tokio::time::timeout_at(drain_deadline, output.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => tail.push(&buf[..n]),
            _ => eof = true,
        }
    }
    killer.disarm();

    let exit_code = status.and_then(|s| s.code());
    if timed_out {
        tracing::info!(command, ?timeout, "check timed out; process group killed");
    }
    CheckOutcome {
        passed: !timed_out && exit_code == Some(0),
        exit_code: if timed_out { None } else { exit_code },
        timed_out,
        output_tail: tail.finish(),
        duration: started.elapsed(),
    }
}

/// The last `max` bytes of a stream, without keeping the whole stream in memory.
#[derive(Debug)]
pub struct OutputTail {
    buf: Vec<u8>,
    max: usize,
    truncated: bool,
}

impl OutputTail {
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            truncated: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        // Trim in batches rather than on every push, to keep this linear.
        if self.buf.len() > self.max.saturating_mul(2).max(64 * 1024) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > self.max {
            let cut = self.buf.len() - self.max;
            self.buf.drain(..cut);
            self.truncated = true;
        }
    }

    /// What was kept, as text that begins on a character.
    #[must_use]
    pub fn finish(mut self) -> String {
        self.trim();
        let mut start = 0;
        if self.truncated {
            // Do not begin in the middle of a UTF-8 sequence.
            while start < self.buf.len() && (self.buf[start] & 0xC0) == 0x80 {
                start += 1;
            }
        }
        String::from_utf8_lossy(&self.buf[start..]).into_owned()
    }
}

fn tail_of(data: &[u8], max: usize) -> String {
    let mut tail = OutputTail::new(max);
    tail.push(data);
    tail.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_char_boundaries() {
        let mut t = OutputTail::new(5);
        t.push("héllo wörld".as_bytes());
        let s = t.finish();
        assert!(s.len() <= 5);
        assert!("héllo wörld".ends_with(&s));
        assert_eq!(tail_of(b"abc", 0), "");
        assert_eq!(tail_of(b"abc", 10), "abc");
    }
}

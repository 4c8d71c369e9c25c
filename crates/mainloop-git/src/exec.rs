//! Running git as a child process: one place that decides the environment, the
//! config overrides, the process group, the deadline and how failures are reported.
//! Nothing else in the crate builds a `tokio::process::Command` for git.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{Git, GitError};

/// Config overrides on every invocation. They make our parsing and behaviour
/// independent of whatever the user has in their global or repo config.
const CONFIG_OVERRIDES: &[&str] = &[
    // The user's hooks (pre-commit linters, post-checkout installers) are for their own
    // interactive work; running them inside mainloop's bookkeeping makes it slow and
    // lets them fail or block it. The project's check command is the gate instead.
    "core.hooksPath=/dev/null",
    // An fsmonitor daemon per temporary worktree would outlive the operation.
    "core.fsmonitor=false",
    "core.quotePath=false",
    "core.pager=cat",
    "color.ui=false",
    // Signing would prompt for a passphrase or fail without an agent.
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    // Recorded resolutions would silently change what merges produce.
    "rerere.enabled=false",
    "advice.detachedHead=false",
    // Transport helpers that run arbitrary commands never have a place here, even if
    // a URL slipped through validation or a submodule asks for them.
    "protocol.ext.allow=never",
    "protocol.fd.allow=never",
];

/// Inherited variables that would redirect git to another repository, index or
/// identity than the one we point it at.
const SCRUBBED_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_QUARANTINE_PATH",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
    "LANGUAGE",
];

const STDERR_TAIL_LINES: usize = 20;
const STDERR_TAIL_CHARS: usize = 2000;

/// Kills a child's whole process group when dropped, unless disarmed after the child
/// was reaped. `kill_on_drop` only reaches the direct child; git's own children (ssh,
/// remote helpers, index-pack) and a check command's background jobs live on in the
/// group otherwise.
#[derive(Debug)]
pub(crate) struct GroupKiller {
    pgid: Option<Pid>,
}

impl GroupKiller {
    /// `pid` is the child's id; with `process_group(0)` it is also the group id.
    pub(crate) fn new(pid: Option<u32>) -> Self {
        let pgid = pid
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1)
            .map(Pid::from_raw);
        Self { pgid }
    }

    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH just means the group is already gone.
            let _ = killpg(pgid, signal);
        }
    }

    pub(crate) fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// What a finished git process left behind.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) command: String,
    pub(crate) code: Option<i32>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

impl Output {
    pub(crate) fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout as text, without the trailing newline git always adds.
    pub(crate) fn text(&self) -> String {
        let s = String::from_utf8_lossy(&self.stdout);
        s.trim_end_matches(['\n', '\r']).to_owned()
    }

    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    pub(crate) fn into_error(self) -> GitError {
        GitError::Command {
            command: self.command,
            code: self.code,
            stderr: stderr_tail(&self.stderr),
        }
    }

    /// Fails unless the exit code is 0.
    pub(crate) fn ok(self) -> Result<Self, GitError> {
        if self.success() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }
}

/// One git invocation under construction.
#[derive(Debug)]
pub(crate) struct GitCmd<'g> {
    git: &'g Git,
    cwd: PathBuf,
    config: Vec<String>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    network: bool,
}

impl Git {
    /// A git command run in `cwd`.
    pub(crate) fn cmd(&self, cwd: &Path) -> GitCmd<'_> {
        GitCmd {
            git: self,
            cwd: cwd.to_path_buf(),
            config: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            network: false,
        }
    }
}

impl GitCmd<'_> {
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// An extra `-c key=value` for this invocation only.
    pub(crate) fn config(mut self, kv: impl Into<String>) -> Self {
        self.config.push(kv.into());
        self
    }

    pub(crate) fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Talks to a remote: gets the (longer) network deadline and the transport policy.
    pub(crate) fn network(mut self) -> Self {
        self.network = true;
        self
    }

    fn display(&self) -> String {
        let mut s = String::from("git");
        for a in &self.args {
            s.push(' ');
            s.push_str(&redact(&a.to_string_lossy()));
        }
        s
    }

    /// Runs to completion and returns whatever the exit code was.
    pub(crate) async fn output(self) -> Result<Output, GitError> {
        let command = self.display();
        let timeout = if self.network {
            self.git.network_timeout
        } else {
            self.git.timeout
        };
        let mut cmd = tokio::process::Command::new(&self.git.program);
        for kv in CONFIG_OVERRIDES {
            cmd.arg("-c").arg(kv);
        }
        if !self.git.allow_file_urls {
            cmd.arg("-c").arg("protocol.file.allow=never");
        }
        for kv in &self.config {
            cmd.arg("-c").arg(kv);
        }
        cmd.args(&self.args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GCM_INTERACTIVE", "never")
            // Our read-only status/diff calls must not take the index lock a user's
            // concurrent `git commit` in the same worktree needs.
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_PAGER", "cat")
            // English messages, so the stderr we report and match on is predictable.
            .env("LC_ALL", "C");
        for (k, v) in self.git.extra_env.iter().chain(&self.env) {
            cmd.env(k, v);
        }

        tracing::debug!(cwd = %self.cwd.display(), %command, "git");
        let child = cmd.spawn().map_err(|source| GitError::Spawn {
            command: command.clone(),
            source,
        })?;
        let mut killer = GroupKiller::new(child.id());
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                killer.disarm();
                Ok(Output {
                    command,
                    code: out.status.code(),
                    stdout: out.stdout,
                    stderr: out.stderr,
                })
            }
            Ok(Err(source)) => Err(GitError::Spawn { command, source }),
            Err(_elapsed) => {
                killer.signal(Signal::SIGKILL);
                tracing::warn!(%command, ?timeout, "git timed out; killed its process group");
                Err(GitError::Timeout { command, timeout })
            }
        }
    }

    /// Runs and requires exit code 0.
    pub(crate) async fn run(self) -> Result<Output, GitError> {
        self.output().await?.ok()
    }

    /// Runs, requires success and returns stdout as trimmed text.
    pub(crate) async fn text(self) -> Result<String, GitError> {
        Ok(self.run().await?.text())
    }

    /// Runs a yes/no query: exit 0 is yes, exit 1 is no, anything else an error.
    pub(crate) async fn yes_no(self) -> Result<bool, GitError> {
        let out = self.output().await?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(out.into_error()),
        }
    }
}

/// The last lines of stderr, bounded, so errors stay readable in logs and the inbox.
pub(crate) fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    let joined = lines[start..].join("\n");
    if joined.chars().count() > STDERR_TAIL_CHARS {
        let skip = joined.chars().count() - STDERR_TAIL_CHARS;
        joined.chars().skip(skip).collect()
    } else {
        joined
    }
}

/// Hides the userinfo of `scheme://user:secret@host/...` so tokens embedded in clone
/// URLs never reach error messages or logs.
pub(crate) fn redact(arg: &str) -> String {
    let Some(scheme_end) = arg.find("://") else {
        return arg.to_owned();
    };
    let rest = &arg[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***{}", &arg[..scheme_end], &rest[at..]),
        None => arg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_only() {
        assert_eq!(
            redact("https://user:tok@github.com/a/b.git"),
            "https://***@github.com/a/b.git"
        );
        assert_eq!(redact("https://github.com/a@b"), "https://github.com/a@b");
        assert_eq!(redact("git@github.com:a/b"), "git@github.com:a/b");
        assert_eq!(redact("--quiet"), "--quiet");
    }

    #[test]
    fn stderr_tail_keeps_last_lines() {
        let input: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(input.as_bytes());
        assert!(tail.starts_with("line 30"));
        assert!(tail.ends_with("line 49"));
    }
}

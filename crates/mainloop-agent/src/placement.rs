//! The placement port: where an agent's process runs. An adapter decides which program
//! to run and speaks its protocol over the byte streams; a [`Placement`] starts that
//! program somewhere and gives back its stdin, stdout and stderr and a handle to stop
//! it. [`LocalProcess`] is the one placement today: a child process in its own process
//! group, run under a command prefix (a sandbox such as `bwrap … --`) or not. A remote
//! runner or a Kubernetes pod implements the same trait.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::{Child, Command};

use crate::AgentError;
use crate::kill;

/// One program to start: what an adapter asks of a placement.
#[derive(Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    /// The working directory (the task's worktree).
    pub cwd: PathBuf,
    /// The process's entire environment: nothing else is inherited.
    pub env: Vec<(String, String)>,
}

// Hand-written because `env` carries API keys and OAuth tokens, which must not reach logs.
impl fmt::Debug for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_keys: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Launch")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("cwd", &self.cwd)
            .field("env_keys", &env_keys)
            .finish()
    }
}

/// A started program's byte streams and its handle.
pub struct Placed {
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    pub process: Box<dyn PlacedProcess>,
}

impl fmt::Debug for Placed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placed")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

/// A running program, wherever it runs.
pub trait PlacedProcess: Send + fmt::Debug {
    /// The local process id while it has not been reaped (recorded so that a server that
    /// was killed can stop its agents at the next start); None elsewhere.
    fn pid(&self) -> Option<u32>;
    /// Waits for the exit, once; the code of a death by signal N reads as 128 + N.
    fn wait(&mut self) -> BoxFuture<'_, Result<i32, AgentError>>;
    /// Kills the program and everything it started, at once; harmless once it exited.
    fn kill_tree(&mut self);
}

/// Where agent processes are started.
pub trait Placement: Send + Sync + fmt::Debug {
    /// Starts `launch`; must be called within a Tokio runtime.
    fn spawn(&self, launch: Launch) -> Result<Placed, AgentError>;

    /// Whether the process sees this machine's files, so that a path it names can be
    /// served from here (an adapter that writes files for its agent); not so on a
    /// runner, whose paths are another machine's.
    fn shares_files(&self) -> bool {
        true
    }
}

/// A local child process in a process group of its own, under `prefix` when given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalProcess {
    prefix: Vec<String>,
}

impl LocalProcess {
    /// A plain child process.
    #[must_use]
    pub const fn new() -> Self {
        Self { prefix: Vec::new() }
    }

    /// A child process run under `prefix`, program first (a sandbox such as
    /// `bwrap … --`); the prefix's process is the one recorded, grouped and killed.
    #[must_use]
    pub fn sandboxed(prefix: Vec<String>) -> Self {
        Self { prefix }
    }

    /// The full command line `spawn` runs for `launch`, program first.
    #[must_use]
    pub fn command_line(&self, launch: &Launch) -> Vec<String> {
        let mut line = self.prefix.clone();
        line.push(launch.program.clone());
        line.extend(launch.args.iter().cloned());
        line
    }
}

impl Placement for LocalProcess {
    fn spawn(&self, launch: Launch) -> Result<Placed, AgentError> {
        let line = self.command_line(&launch);
        let Some((program, args)) = line.split_first() else {
            return Err(AgentError::Spawn("empty command".to_owned()));
        };
        if program.is_empty() {
            return Err(AgentError::Spawn("empty command".to_owned()));
        }
        let mut child = Command::new(program)
            .args(args)
            .current_dir(&launch.cwd)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that killing reaches the shells and tools it spawns.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AgentError::Spawn(format!("{program}: {e}")))?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            if let Some(pid) = pid {
                kill::kill_tree(pid);
            }
            return Err(AgentError::Spawn("child without piped stdio".to_owned()));
        };
        Ok(Placed {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            process: Box::new(LocalChild {
                child,
                pid,
                group: pid,
                code: None,
            }),
        })
    }
}

/// A child of [`LocalProcess`].
#[derive(Debug)]
struct LocalChild {
    child: Child,
    /// Cleared once reaped: the number may then be reused.
    pid: Option<u32>,
    /// The process group, which outlives the leader while members remain.
    group: Option<u32>,
    code: Option<i32>,
}

impl PlacedProcess for LocalChild {
    fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<i32, AgentError>> {
        Box::pin(async move {
            if let Some(code) = self.code {
                return Ok(code);
            }
            let status = self
                .child
                .wait()
                .await
                .map_err(|e| AgentError::Io(format!("waiting for the agent: {e}")))?;
            self.pid = None;
            let code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(-1);
            self.code = Some(code);
            Ok(code)
        })
    }

    fn kill_tree(&mut self) {
        match (self.pid, self.group) {
            // Still ours: freeze and walk its whole tree.
            (Some(pid), _) => kill::kill_tree(pid),
            // Exited: tools it left running in its group still hold the group's number.
            (None, Some(group)) => kill::kill_orphaned_group(group),
            (None, None) => {}
        }
    }
}

impl Drop for LocalChild {
    fn drop(&mut self) {
        // kill_on_drop only reaches the leader, not the tools and shells it started.
        if let Some(pid) = self.pid {
            kill::kill_tree(pid);
        }
    }
}

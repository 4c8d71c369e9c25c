//! [`RemotePlacement`]: an agent's process on a runner, its stdio relayed over the
//! runner's connection (`Engine::runner_spawn`), so that any adapter runs there
//! unchanged. The launch's working directory, a path in the server's worktree, becomes
//! the same path relative to the task's workspace on the runner.

use futures::StreamExt;
use mainloop_agent::{AgentError, Launch, Placed, PlacedProcess, Placement};
use mainloop_domain::agents::AgentName;
use mainloop_domain::runner::{Program, workspace_path};
use mainloop_domain::{RunnerId, TaskId};
use mainloop_engine::{Engine, EngineError, RemoteHandle};
use std::path::PathBuf;
use tokio_util::io::StreamReader;

/// Processes of one task started on one runner.
#[derive(Debug, Clone)]
pub struct RemotePlacement {
    pub engine: Engine,
    pub runner: RunnerId,
    pub task: TaskId,
    /// The server-side worktree the adapter's `Launch::cwd` is under.
    pub workspace_root: PathBuf,
    /// When set, the runner starts its own program for this agent (the server's path
    /// for it means nothing there); otherwise the launch's program as named.
    pub agent: Option<AgentName>,
}

impl RemotePlacement {
    /// `cwd` relative to the workspace, as the protocol names it.
    fn relative_cwd(&self, cwd: &std::path::Path) -> Result<String, AgentError> {
        let outside = || {
            AgentError::Spawn(format!(
                "{} is outside the task's workspace {}",
                cwd.display(),
                self.workspace_root.display()
            ))
        };
        let rel = cwd
            .strip_prefix(&self.workspace_root)
            .map_err(|_| outside())?;
        let rel = rel.to_str().ok_or_else(outside)?;
        // Lexical: `root/../x` strips to `../x`, which is refused here.
        workspace_path(rel).map_err(AgentError::Spawn)?;
        Ok(rel.to_owned())
    }
}

impl Placement for RemotePlacement {
    fn shares_files(&self) -> bool {
        false
    }

    fn spawn(&self, launch: Launch) -> Result<Placed, AgentError> {
        let cwd = self.relative_cwd(&launch.cwd)?;
        let program = match &self.agent {
            Some(name) => Program::Agent(name.clone()),
            None => Program::Path(launch.program),
        };
        let process = self
            .engine
            .runner_spawn(
                self.runner,
                self.task,
                program,
                launch.args,
                cwd,
                launch.env,
            )
            .map_err(|e| AgentError::Spawn(e.to_string()))?;
        let reader = |out: mainloop_engine::RemoteOutput| {
            StreamReader::new(out.map(Ok::<_, std::io::Error>))
        };
        Ok(Placed {
            stdin: Box::pin(process.stdin),
            stdout: Box::pin(reader(process.stdout)),
            stderr: Box::pin(reader(process.stderr)),
            process: Box::new(RemoteChild {
                handle: process.handle,
            }),
        })
    }
}

/// A process on a runner.
#[derive(Debug)]
struct RemoteChild {
    handle: RemoteHandle,
}

impl PlacedProcess for RemoteChild {
    fn pid(&self) -> Option<u32> {
        // Its pid is on another machine: nothing here to record or reap.
        None
    }

    fn wait(&mut self) -> futures::future::BoxFuture<'_, Result<i32, AgentError>> {
        Box::pin(async move {
            self.handle.wait().await.map_err(|e| match e {
                EngineError::Invalid(m) => AgentError::Spawn(m),
                other => AgentError::Io(other.to_string()),
            })
        })
    }

    fn kill_tree(&mut self) {
        self.handle.kill();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mainloop_test_support::{Database, EngineWorld};

    #[tokio::test]
    async fn a_working_directory_outside_the_workspace_is_refused_before_anything_runs() {
        let world = EngineWorld::new(Database::sqlite(), None, EngineWorld::fast_config()).await;
        let placement = RemotePlacement {
            engine: world.engine,
            runner: RunnerId::new_v7(mainloop_domain::Timestamp::from_millis(1)),
            task: TaskId::new_v7(mainloop_domain::Timestamp::from_millis(1)),
            workspace_root: PathBuf::from("/srv/worktrees/t1"),
            agent: None,
        };
        let launch = |cwd: &str| Launch {
            program: "sh".into(),
            args: vec![],
            cwd: PathBuf::from(cwd),
            env: vec![],
        };
        for cwd in ["/srv/worktrees/t1/../x", "/srv/worktrees/t2", "/etc"] {
            let err = placement.spawn(launch(cwd)).unwrap_err();
            assert!(
                matches!(&err, AgentError::Spawn(m) if m.contains("outside") || m.contains("leaves")),
                "{cwd}: {err}"
            );
        }
        assert_eq!(
            placement
                .relative_cwd(std::path::Path::new("/srv/worktrees/t1/src"))
                .unwrap(),
            "src"
        );
        // Inside, but the runner is not connected.
        let err = placement.spawn(launch("/srv/worktrees/t1")).unwrap_err();
        assert!(err.to_string().contains("not connected"), "{err}");
    }
}

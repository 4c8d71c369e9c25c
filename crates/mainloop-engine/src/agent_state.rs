//! The agent state runners keep on the server: one opaque archive per task (the agent's
//! saved sessions, packed by the runner holding the task's lease at each save), at
//! `<runner state dir>/<task>.tar.gz`, so that a run moved to another runner resumes
//! the same session there. Written to a temporary file and renamed, so a crash never
//! leaves half a state; removed with the task's other leftovers.

use crate::{Engine, EngineError, Result};
use mainloop_domain::{RunnerId, TaskId};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The largest agent state a runner may keep here (`EngineConfig::runner_state_max_bytes`
/// by default).
pub const MAX_RUNNER_STATE: u64 = 256 * 1024 * 1024;

/// What temporary files are named after: `<task>.tar.gz.<random>.part`.
const PART: &str = ".part";

/// A state being stored: written to a temporary file beside its place, which only
/// [`AgentStateUpload::finish`] puts there. Dropped unfinished, it leaves nothing.
#[derive(Debug)]
pub struct AgentStateUpload {
    file: Option<tokio::fs::File>,
    part: PathBuf,
    dest: PathBuf,
    written: u64,
    max: u64,
}

impl AgentStateUpload {
    /// Appends `chunk`.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] past the size cap (the caller counts too, and answers
    /// 413 before this); disk failures.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.written = self.written.saturating_add(chunk.len() as u64);
        if self.written > self.max {
            return Err(EngineError::Invalid(format!(
                "the agent state is larger than {} bytes",
                self.max
            )));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| EngineError::Internal("the state upload was finished".into()))?;
        file.write_all(chunk)
            .await
            .map_err(|e| disk(&self.part, &e))
    }

    /// Puts the state in place, replacing the task's earlier one; returns its size.
    ///
    /// # Errors
    /// Disk failures (the earlier state stays then).
    pub async fn finish(mut self) -> Result<u64> {
        let file = self
            .file
            .take()
            .ok_or_else(|| EngineError::Internal("the state upload was finished".into()))?;
        // On disk before it replaces the earlier state: after a crash there is one
        // whole state or the other.
        file.sync_all().await.map_err(|e| disk(&self.part, &e))?;
        drop(file);
        tokio::fs::rename(&self.part, &self.dest)
            .await
            .map_err(|e| disk(&self.dest, &e))?;
        if let Some(dir) = self.dest.parent()
            && let Ok(dir) = tokio::fs::File::open(dir).await
        {
            let _ = dir.sync_all().await;
        }
        Ok(self.written)
    }
}

impl Drop for AgentStateUpload {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

fn disk(path: &Path, e: &std::io::Error) -> EngineError {
    EngineError::Internal(format!("runner state {}: {e}", path.display()))
}

impl Engine {
    fn runner_state_dir(&self) -> Result<&Path> {
        self.config()
            .runner_state_dir
            .as_deref()
            .ok_or_else(|| EngineError::Internal("this server keeps no runner state".into()))
    }

    /// Where `task`'s agent state is kept.
    ///
    /// # Errors
    /// A server configured without a runner state directory.
    pub fn agent_state_path(&self, task: TaskId) -> Result<PathBuf> {
        Ok(self.runner_state_dir()?.join(format!("{task}.tar.gz")))
    }

    /// Starts storing `task`'s agent state for `runner`: only the runner holding the
    /// task's lease may, exactly as for its git ([`Engine::runner_repo_access`]).
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for a runner without the lease, alike whether the task
    /// exists or not; storage and disk failures.
    pub async fn agent_state_upload(
        &self,
        runner: RunnerId,
        task: TaskId,
    ) -> Result<AgentStateUpload> {
        self.runner_repo_access(runner, task).await?;
        let dest = self.agent_state_path(task)?;
        let dir = self.runner_state_dir()?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| disk(dir, &e))?;
        let part = dir.join(format!(
            "{task}.tar.gz.{}{PART}",
            uuid::Uuid::new_v4().simple()
        ));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .await
            .map_err(|e| disk(&part, &e))?;
        Ok(AgentStateUpload {
            file: Some(file),
            part,
            dest,
            written: 0,
            max: self.config().runner_state_max_bytes,
        })
    }

    /// `task`'s agent state for `runner`, opened, with its size; `None` when none is
    /// kept. Only the runner holding the task's lease may read it.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for a runner without the lease; storage and disk
    /// failures.
    pub async fn agent_state(
        &self,
        runner: RunnerId,
        task: TaskId,
    ) -> Result<Option<(tokio::fs::File, u64)>> {
        self.runner_repo_access(runner, task).await?;
        let path = self.agent_state_path(task)?;
        // Opened once: a state stored meanwhile replaces the name, not this file.
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(disk(&path, &e)),
        };
        let len = file.metadata().await.map_err(|e| disk(&path, &e))?.len();
        Ok(Some((file, len)))
    }

    /// Removes `task`'s agent state and any upload of it a crash left: for the cleanup
    /// of a finished task. Nothing kept is not an error.
    ///
    /// # Errors
    /// Disk failures other than the state being absent.
    pub async fn remove_runner_state(&self, task: TaskId) -> Result<()> {
        let Some(dir) = self.config().runner_state_dir.as_deref() else {
            return Ok(());
        };
        let name = format!("{task}.tar.gz");
        let mut entries = match tokio::fs::read_dir(dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(disk(dir, &e)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(|e| disk(dir, &e))? {
            let file = entry.file_name();
            let file = file.to_string_lossy();
            let ours = *file == *name || (file.starts_with(&name) && file.ends_with(PART));
            if !ours {
                continue;
            }
            match tokio::fs::remove_file(entry.path()).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(disk(&entry.path(), &e)),
            }
        }
        Ok(())
    }
}

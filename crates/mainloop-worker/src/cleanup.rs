//! Cleaning up after finished tasks. The sweep (at start, then hourly) removes the
//! worktree (the branch stays), the private home and the environment of every task its
//! retention has passed, and records it cleaned; it runs `git gc --auto` on cached
//! clones and removes clones no remaining task uses. At start it also removes what a
//! crash left: directories of no task (or of a cleaned one) under the worktrees root,
//! the homes dir and the clone cache, temporaries of a clone or merge an earlier
//! process began, and `index.lock` files no live git holds. Which directories go is
//! decided by the pure `strays` over names; the rest carries it out. Also what the
//! workspaces hold on disk, walked at most once a minute.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use mainloop_domain::{TaskId, Timestamp};
use mainloop_engine::{DiskUsage, Retention, TaskFootprint, due_for_cleanup};
use mainloop_git::{DirEntry, is_temporary};
use tokio_util::sync::CancellationToken;

use crate::Runtime;

/// How often the sweep runs after the one at start.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How long a walk of the directories is reused.
const DISK_TTL: Duration = Duration::from_secs(60);

/// The last walk of the workspaces' directories.
#[derive(Debug, Default)]
pub(crate) struct DiskCache(tokio::sync::Mutex<Option<(Instant, DiskUsage)>>);

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Tasks recorded cleaned.
    pub cleaned: Vec<TaskId>,
    /// Tasks due whose cleaning failed (tried again next sweep).
    pub failed: Vec<TaskId>,
    /// Cached clones removed because no remaining task uses them.
    pub clones_removed: Vec<PathBuf>,
}

/// Directories left at start that belong to nothing: a crash's leftovers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub worktrees: Vec<PathBuf>,
    pub homes: Vec<PathBuf>,
    pub clones: Vec<PathBuf>,
    pub locks: Vec<PathBuf>,
}

/// The entries to remove: temporaries made before `started` (an earlier process's), and
/// entries named as a task's would be (`task_shaped`) whose name `keep` lacks; anything
/// else is not mainloop's to judge and stays. An entry of this process's making is never
/// chosen: directories are listed before the tasks, and a task is stored before its
/// directories are made.
#[must_use]
pub(crate) fn strays(
    entries: &[DirEntry],
    keep: &HashSet<String>,
    task_shaped: fn(&str) -> bool,
    started: SystemTime,
) -> Vec<PathBuf> {
    entries
        .iter()
        .filter(|e| {
            if is_temporary(&e.name) {
                e.modified.is_some_and(|m| m < started)
            } else {
                task_shaped(&e.name) && !keep.contains(&e.name)
            }
        })
        .map(|e| e.path.clone())
        .collect()
}

/// A worktree's name: a task's short id (the last 8 hex digits of its id).
fn short_id_shaped(name: &str) -> bool {
    name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A private home's name: a task's id.
fn task_id_shaped(name: &str) -> bool {
    name.parse::<TaskId>().is_ok()
}

/// Clones of no remaining task, unchanged for longer than `unused_for` at `now`.
#[must_use]
pub(crate) fn unused_clones(
    entries: &[DirEntry],
    used: &HashSet<String>,
    now: SystemTime,
    unused_for: Duration,
) -> Vec<PathBuf> {
    entries
        .iter()
        .filter(|e| !is_temporary(&e.name) && !used.contains(&e.name))
        .filter(|e| {
            e.modified
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= unused_for)
        })
        .map(|e| e.path.clone())
        .collect()
}

/// The directories under `dir` (the homes dir), as the git layer lists its own.
fn list_dirs(dir: &Path) -> Vec<DirEntry> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            Some(DirEntry {
                name: e.file_name().to_str()?.to_owned(),
                path: e.path(),
                modified: e.metadata().ok().and_then(|m| m.modified().ok()),
            })
        })
        .collect()
}

fn remove_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn to_system_time(at: Timestamp) -> SystemTime {
    let ms = u64::try_from(at.as_millis()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

impl Runtime {
    /// Starts the cleanup: what a crash left, then a sweep, at start and hourly.
    pub(crate) fn spawn_cleanup(&self, shutdown: CancellationToken) {
        let rt = self.clone();
        let started = SystemTime::now();
        tokio::spawn(async move {
            rt.remove_leftovers(started).await;
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = rt.inner.engine.config().clock.now();
                rt.sweep(now).await;
            }
        });
    }

    /// Whether task `id` has a live run or a parked session in this process.
    fn is_active(&self, id: TaskId) -> bool {
        self.inner.running.lock().is_ok_and(|r| r.contains_key(&id)) || self.is_parked(id)
    }

    /// Cleans every finished task whose retention has passed at `now`, and the clone
    /// cache. A failure is logged and the task tried again next time.
    pub async fn sweep(&self, now: Timestamp) -> SweepReport {
        let mut report = SweepReport::default();
        let retention = self.inner.config.retention;
        let due = match self
            .inner
            .engine
            .tasks_due_for_cleanup(&retention, now)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the tasks to clean up");
                return report;
            }
        };
        for task in due {
            match self.clean_task(&retention, &task, now).await {
                Ok(true) => report.cleaned.push(task.id),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(task = %task.id, error = %e, "could not clean up the task; trying again next sweep");
                    report.failed.push(task.id);
                }
            }
        }
        report.clones_removed = self.sweep_clones(&retention, now).await;
        if !report.cleaned.is_empty() || !report.clones_removed.is_empty() {
            tracing::info!(
                tasks = report.cleaned.len(),
                clones = report.clones_removed.len(),
                "cleaned up after finished tasks"
            );
        }
        report
    }

    /// Removes a due task's worktree, home and environment, then records it cleaned.
    /// `Ok(false)`: it turned out not to be due (retried meanwhile).
    async fn clean_task(
        &self,
        retention: &Retention,
        due: &TaskFootprint,
        now: Timestamp,
    ) -> Result<bool, String> {
        let engine = &self.inner.engine;
        // Read again just before removing anything: a retry since the listing makes the
        // task live again.
        let Some((_, task)) = engine
            .task_any_user(due.id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        if !due_for_cleanup(retention, task.state, task.updated_at, now) || self.is_active(task.id)
        {
            return Ok(false);
        }
        if let Some(path) = &task.worktree
            && self.inner.git.holds_worktree(Path::new(path))
        {
            self.inner
                .git
                .discard_worktree(Path::new(path))
                .await
                .map_err(|e| format!("worktree {path}: {e}"))?;
        }
        if let Some(sandbox) = &self.inner.config.sandbox {
            let home = sandbox.homes_dir.join(task.id.to_string());
            remove_dir(&home).map_err(|e| format!("home {}: {e}", home.display()))?;
        }
        self.release_environment(&task).await?;
        // The runner's copy and the agent's home there go too (if it is offline, they
        // stay until it is told again; the lease ends either way).
        if let Some(lease) = engine.run_lease(task.id).await.map_err(|e| e.to_string())? {
            engine.runner_release(lease.runner_id, task.id);
            engine
                .release_run(task.id, lease.epoch)
                .await
                .map_err(|e| e.to_string())?;
        }
        engine
            .remove_runner_state(task.id)
            .await
            .map_err(|e| e.to_string())?;
        engine
            .mark_task_cleaned(task.id, task.updated_at, now)
            .await
            .map_err(|e| e.to_string())
    }

    /// `git gc --auto` on the clones tasks still use; clones none uses, unchanged for
    /// longer than the longest retention, removed.
    async fn sweep_clones(&self, retention: &Retention, now: Timestamp) -> Vec<PathBuf> {
        let git = &self.inner.git;
        let Ok(entries) = git.clone_entries() else {
            return Vec::new();
        };
        let Ok(tasks) = self.inner.engine.uncleaned_tasks().await else {
            return Vec::new();
        };
        let used = clone_names(git, &tasks);
        let mut removed = Vec::new();
        for path in unused_clones(&entries, &used, to_system_time(now), retention.longest()) {
            match git.remove_entry(&path).await {
                Ok(()) => removed.push(path),
                Err(e) => tracing::warn!(error = %e, "could not remove an unused clone"),
            }
        }
        for entry in entries.iter().filter(|e| used.contains(&e.name)) {
            if let Err(e) = git.gc_clone(&entry.path).await {
                tracing::warn!(clone = %entry.path.display(), error = %e, "git gc failed");
            }
        }
        removed
    }

    /// Removes what belongs to no remaining task: directories under the worktrees root,
    /// the homes dir and the clone cache, temporaries older than `started`, and
    /// `index.lock` files older than `started` in worktrees of tasks not running here.
    /// Then `git worktree prune` in every repository tasks use and every cached clone.
    pub async fn remove_leftovers(&self, started: SystemTime) -> Leftovers {
        let git = &self.inner.git;
        let homes_dir = self
            .inner
            .config
            .sandbox
            .as_ref()
            .map(|s| s.homes_dir.clone());
        // Listed before the tasks: a directory made after the listing is never chosen.
        let (Ok(worktrees), Ok(clones)) = (git.worktree_entries(), git.clone_entries()) else {
            tracing::warn!("could not list the worktrees root or the clone cache");
            return Leftovers::default();
        };
        let homes = homes_dir.as_deref().map(list_dirs).unwrap_or_default();
        let tasks = match self.inner.engine.uncleaned_tasks().await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::warn!(error = %e, "could not list tasks; leftovers stay");
                return Leftovers::default();
            }
        };
        let mut left = Leftovers::default();
        let keep_worktrees: HashSet<String> = tasks
            .iter()
            .flat_map(|t| {
                let recorded = t
                    .worktree
                    .as_deref()
                    .and_then(|w| Path::new(w).file_name()?.to_str().map(str::to_owned));
                std::iter::once(t.id.short()).chain(recorded)
            })
            .collect();
        for path in strays(&worktrees, &keep_worktrees, short_id_shaped, started) {
            match git.discard_worktree(&path).await {
                Ok(()) => left.worktrees.push(path),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a stray worktree");
                }
            }
        }
        let keep_homes: HashSet<String> = tasks.iter().map(|t| t.id.to_string()).collect();
        for path in strays(&homes, &keep_homes, task_id_shaped, started) {
            match remove_dir(&path) {
                Ok(()) => left.homes.push(path),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a stray home");
                }
            }
        }
        // Unused clones wait for the sweep and their retention; only a crashed clone goes.
        let temporaries: Vec<DirEntry> = clones
            .into_iter()
            .filter(|e| is_temporary(&e.name))
            .collect();
        for path in strays(&temporaries, &HashSet::new(), |_| false, started) {
            match git.remove_entry(&path).await {
                Ok(()) => left.clones.push(path),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove an unfinished clone");
                }
            }
        }
        left.locks = self.remove_stale_locks(&tasks, started).await;
        self.prune_all(&tasks).await;
        if left != Leftovers::default() {
            tracing::info!(?left, "removed what an earlier run left behind");
        }
        left
    }

    /// `index.lock` in the worktree of a task with no run here, older than this
    /// process: the git that took it belonged to an earlier process, whose agents were
    /// stopped at start.
    async fn remove_stale_locks(
        &self,
        tasks: &[TaskFootprint],
        started: SystemTime,
    ) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for task in tasks {
            let Some(worktree) = task.worktree.as_deref().map(Path::new) else {
                continue;
            };
            if !worktree.is_dir() || self.is_active(task.id) {
                continue;
            }
            let Some(lock) = self.inner.git.index_lock(worktree).await else {
                continue;
            };
            let old = std::fs::metadata(&lock)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m < started);
            if old && !self.is_active(task.id) && std::fs::remove_file(&lock).is_ok() {
                removed.push(lock);
            }
        }
        removed
    }

    /// `git worktree prune` in each local repository tasks use and each cached clone.
    async fn prune_all(&self, tasks: &[TaskFootprint]) {
        let git = &self.inner.git;
        let mut repos: Vec<PathBuf> = tasks
            .iter()
            .filter(|t| git.clone_path(&t.repo).is_none())
            .map(|t| PathBuf::from(&t.repo))
            .filter(|p| p.is_absolute() && p.is_dir())
            .collect();
        repos.extend(
            git.clone_entries()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| !is_temporary(&e.name))
                .map(|e| e.path),
        );
        repos.sort();
        repos.dedup();
        for repo in repos {
            if let Err(e) = git.prune_worktrees(&repo).await {
                tracing::debug!(repo = %repo.display(), error = %e, "git worktree prune failed");
            }
        }
    }

    /// What the worktrees, private homes and cached clones hold, walked at most once a
    /// minute.
    pub(crate) async fn disk_usage(&self) -> DiskUsage {
        let mut cache = self.inner.disk.0.lock().await;
        if let Some((at, usage)) = *cache
            && at.elapsed() < DISK_TTL
        {
            return usage;
        }
        let dirs = [
            Some(self.inner.git.worktrees_dir().to_path_buf()),
            self.inner
                .config
                .sandbox
                .as_ref()
                .map(|s| s.homes_dir.clone()),
            Some(self.inner.git.cache_dir().to_path_buf()),
        ];
        let walked =
            tokio::task::spawn_blocking(move || dirs.map(|d| d.as_deref().map_or(0, dir_bytes)))
                .await
                .unwrap_or_default();
        let usage = DiskUsage {
            worktrees_bytes: walked[0],
            homes_bytes: walked[1],
            clones_bytes: walked[2],
        };
        *cache = Some((Instant::now(), usage));
        usage
    }
}

/// The cache names of the clones `tasks` use.
fn clone_names(git: &mainloop_git::Git, tasks: &[TaskFootprint]) -> HashSet<String> {
    tasks
        .iter()
        .filter_map(|t| git.clone_path(&t.repo))
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect()
}

/// The bytes of every file under `dir`, symlinks counted as themselves and never
/// followed.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in read.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, modified: u64) -> DirEntry {
        DirEntry {
            name: name.to_owned(),
            path: PathBuf::from("/data").join(name),
            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(modified)),
        }
    }

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn strays_are_entries_of_no_task_and_temporaries_of_an_earlier_process() {
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let entries = [
            entry("0000aaaa", 10),
            entry("0000dddd", 10),
            entry(".merge-1-old", 99),
            entry(".merge-2-new", 100),
            entry(".tmp-3-old", 5),
            entry("0000eeee", 150),
            entry("notes", 10),
        ];
        let keep: HashSet<String> = ["0000aaaa".to_owned(), "0000eeee".to_owned()].into();
        assert_eq!(
            names(&strays(&entries, &keep, short_id_shaped, started)),
            ["0000dddd", ".merge-1-old", ".tmp-3-old"]
        );
        assert!(task_id_shaped(
            &TaskId::new_v7(Timestamp::from_millis(1)).to_string()
        ));
        assert!(!task_id_shaped("0000dddd"));
    }

    #[test]
    fn a_clone_goes_when_no_task_uses_it_and_it_is_older_than_the_retention() {
        let day = 24 * 3600;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(30 * day);
        let entries = [
            entry("used", 0),
            entry("unused-old", 20 * day),
            entry("unused-recent", 25 * day),
            entry(".tmp-1", 0),
        ];
        let used: HashSet<String> = ["used".to_owned()].into();
        assert_eq!(
            names(&unused_clones(
                &entries,
                &used,
                now,
                Duration::from_secs(7 * day)
            )),
            ["unused-old"]
        );
    }

    #[test]
    fn the_walk_counts_files_and_never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/one"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("a/b/two"), [0u8; 32]).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("a/root")).unwrap();
        let bytes = dir_bytes(dir.path());
        assert!((42..100).contains(&bytes), "{bytes}");
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
    }
}

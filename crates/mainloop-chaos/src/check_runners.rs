//! The runners' part of a run: where each task's agent worked, watched while the run
//! lasts (a runner's copy of the task, `<runner data>/tasks/<task id>/work`; the
//! server's record of a local agent, `<data>/agents/<task id>`, kept until the server's
//! next start), and the checks that every task requiring the runners' label was placed
//! on a runner and worked there, never on the server, while the others stayed on it.

use crate::check::{Checker, Db, s};
use crate::driver::Outcome;
use crate::runners::LABEL;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the transcript of a run placed on a runner says first.
const PREPARING: &str = "preparing the workspace on its runner";
/// How often the watcher looks: an agent's record on the server lives until the
/// server's next start, a runner's copy until the task is released, both far longer.
const EVERY: Duration = Duration::from_millis(100);

/// Where each task's agent was seen working.
#[derive(Debug, Default)]
pub struct Sightings {
    /// Task id → the runners whose data directory held its copy.
    pub on_runner: BTreeMap<String, BTreeSet<String>>,
    /// The tasks the server recorded a local agent for.
    pub on_server: BTreeSet<String>,
}

impl Sightings {
    fn look(&mut self, server_agents: &Path, runners: &[(String, PathBuf)]) {
        for id in names(server_agents) {
            self.on_server.insert(id);
        }
        for (name, data) in runners {
            let tasks = data.join("tasks");
            for id in names(&tasks) {
                if tasks.join(&id).join("work").is_dir() {
                    self.on_runner.entry(id).or_default().insert(name.clone());
                }
            }
        }
    }
}

/// The names of the entries of `dir` (none when it does not exist).
fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Watches the server's agent records and the runners' copies until finished.
#[derive(Debug)]
pub struct Watcher {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Sightings>,
}

impl Watcher {
    /// `server_agents` is the server's `<data>/agents`; `runners` each runner's name and
    /// data directory.
    pub fn start(server_agents: PathBuf, runners: Vec<(String, PathBuf)>) -> Self {
        let stop = CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Sightings::default();
            loop {
                seen.look(&server_agents, &runners);
                tokio::select! {
                    () = until.cancelled() => break,
                    () = tokio::time::sleep(EVERY) => {}
                }
            }
            // Once more, after everything stopped.
            seen.look(&server_agents, &runners);
            seen
        });
        Self { stop, task }
    }

    /// Stops watching and returns what was seen.
    pub async fn finish(self) -> Sightings {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// What the runners' checks counted.
#[derive(Debug, Default)]
pub struct Placed {
    /// Tasks that required the runners' label.
    pub on_runners: usize,
    /// Placements on a runner beyond each task's first (after a runner or server died).
    pub replaced: i64,
}

/// Each task that required [`LABEL`]: stored with it, placed on one of the run's runners
/// (a run lease, the transcript's status), its copy seen on a runner, and no agent of it
/// recorded by the server. Each task that did not (GitHub's): no lease, its agent
/// recorded by the server — which also shows the watcher sees such records.
pub fn placed(
    c: &mut Checker,
    db: &Db,
    outcomes: &[Outcome],
    seen: &Sightings,
    runner_names: &[String],
) -> Placed {
    let mut placed = Placed::default();
    let runner_name = |id: &str| {
        db.runners
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| s(&r["name"]).to_owned())
    };
    for o in outcomes {
        let Some(id) = o.id.as_deref() else { continue };
        let Some(task) = db.tasks.iter().find(|t| t["id"] == id) else {
            continue;
        };
        let labels: Vec<String> =
            serde_json::from_str(s(&task["runner_labels"])).unwrap_or_default();
        let lease = db.leases.iter().find(|l| l["task_id"] == id);
        let on_server = seen.on_server.contains(id);
        if o.plan.runner_labels.is_empty() {
            c.check(lease.is_none(), || {
                format!("task {id} (GitHub, no labels): placed on a runner ({lease:?})")
            });
            c.check(on_server, || {
                format!(
                    "task {id} (GitHub, no labels): no agent of it was seen recorded by the server"
                )
            });
            continue;
        }
        placed.on_runners += 1;
        c.check(labels.iter().any(|l| l == LABEL), || {
            format!("task {id}: stored with runner labels {labels:?}, {LABEL:?} asked for")
        });
        let epoch = lease.and_then(|l| l["epoch"].as_i64()).unwrap_or(0);
        placed.replaced += (epoch - 1).max(0);
        let holder = lease.and_then(|l| l["runner_id"].as_str()).map(runner_name);
        c.check(
            epoch >= 1
                && holder
                    .as_ref()
                    .is_none_or(|n| n.as_ref().is_some_and(|n| runner_names.contains(n))),
            || {
                format!(
                    "task {id}: its run lease is {lease:?}, expected one on a runner of this run"
                )
            },
        );
        let preparing = db
            .statuses
            .iter()
            .filter(|st| st["task_id"] == id && s(&st["payload"]).contains(PREPARING))
            .count();
        c.check(preparing >= 1, || {
            format!("task {id}: its transcript never says {PREPARING:?}")
        });
        let copies = seen.on_runner.get(id);
        c.check(copies.is_some_and(|r| !r.is_empty()), || {
            format!("task {id}: no runner ever held its copy (tasks/{id}/work)")
        });
        c.check(!on_server, || {
            format!("task {id}: requires {LABEL:?}, yet the server recorded an agent of it (data/agents/{id})")
        });
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_sees_the_servers_records_and_the_runners_copies() {
        let dir = tempfile::tempdir().unwrap();
        let agents = dir.path().join("agents");
        let r1 = dir.path().join("r1");
        std::fs::create_dir_all(&agents).unwrap();
        std::fs::write(agents.join("t-server"), "1 2\n").unwrap();
        std::fs::create_dir_all(r1.join("tasks/t-runner/work")).unwrap();
        // Prepared only in part: no copy yet.
        std::fs::create_dir_all(r1.join("tasks/t-half/home")).unwrap();
        let mut seen = Sightings::default();
        seen.look(&agents, &[("r1".to_owned(), r1)]);
        seen.look(&agents, &[("r2".to_owned(), dir.path().join("missing"))]);
        assert_eq!(seen.on_server, BTreeSet::from(["t-server".to_owned()]));
        assert_eq!(
            seen.on_runner,
            BTreeMap::from([("t-runner".to_owned(), BTreeSet::from(["r1".to_owned()]))])
        );
    }
}

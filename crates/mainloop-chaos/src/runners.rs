//! Runners: `mainloop runner` processes, each with its own home and data directory in
//! the run's directory, registered over the API and offering the run's agents with the
//! label [`LABEL`]. The killer SIGKILLs one at seeded random moments — its process
//! group, and (a seeded half of the time) the agents it runs too, as when its machine
//! dies — and starts it again after a seeded pause with the same token and data, as a
//! supervisor would. The agents a killed runner left running must be stopped by its next
//! start.

use crate::api::{Api, Sent};
use crate::procs;
use crate::rng::Rng;
use crate::server;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The label every runner offers and every local task of a run with runners requires.
pub const LABEL: &str = "chaos";

/// How runners are started and killed.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The `mainloop` binary (`mainloop runner`).
    pub bin: PathBuf,
    /// The server's URL.
    pub server: String,
    /// Where the runners' directories are made (`<run>/runners`).
    pub dir: PathBuf,
    /// The agent CLIs a runner offers (each linked into its `PATH` under the agent's name).
    pub agents: Vec<(&'static str, PathBuf)>,
    /// Where the harness's lines about runners go (the server's log, to read in context).
    pub log: PathBuf,
    pub kill_budget: u32,
    /// How long a killed runner stays down before it is started again.
    pub pause: (Duration, Duration),
    /// What the log's `+N s` count from (the server's supervisor's start).
    pub since: Instant,
    /// The runners' `--sandbox`: the run's `workers.sandbox`, so that their agents die
    /// with them in some runs and outlive them (to be stopped by the next start) in others.
    pub sandbox: &'static str,
}

/// One runner: its name, directory, token and slots, and its process.
#[derive(Debug)]
struct One {
    name: String,
    dir: PathBuf,
    token: String,
    slots: u64,
    child: tokio::sync::Mutex<Option<Child>>,
}

impl One {
    /// Its data directory (`--data-dir`).
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

/// The run's runners and what happened to them.
#[derive(Debug)]
pub struct Runners {
    setup: Setup,
    path: String,
    all: Vec<One>,
    kills_left: AtomicU32,
    /// No more kills: the run is finishing.
    frozen: AtomicBool,
    pub kills: AtomicU32,
    problems: Arc<Mutex<Vec<String>>>,
    checks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Runners {
    /// Registers `n` runners (`r1`, `r2`, …; 1 or 2 slots each, drawn from `rng`) with
    /// the owner's `api` and starts them; returns once every one is connected.
    pub async fn start(setup: Setup, api: &Api, n: u32, rng: &mut Rng) -> Result<Self> {
        // The agents under their own names, so that the runner finds them on its PATH
        // whatever the harness was given.
        let bin = setup.dir.join("bin");
        std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
        for (name, program) in &setup.agents {
            // Its directories resolved (`crates/x/../../node_modules/.bin/claude` becomes
            // `node_modules/.bin/claude`): a sandbox resolves a link's `..` through
            // directories it hides, such as the checkout under a hidden /tmp.
            let program = match (program.parent(), program.file_name()) {
                (Some(dir), Some(file)) => std::fs::canonicalize(dir)
                    .map_or_else(|_| program.clone(), |dir| dir.join(file)),
                _ => program.clone(),
            };
            std::os::unix::fs::symlink(&program, bin.join(name))
                .with_context(|| format!("linking {} into {}", program.display(), bin.display()))?;
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut all = Vec::new();
        for i in 1..=n {
            let name = format!("r{i}");
            let dir = setup.dir.join(&name);
            std::fs::create_dir_all(dir.join("home"))
                .with_context(|| format!("creating {}", dir.display()))?;
            let token = match api.post("/api/runners", &json!({ "name": name })).await {
                Sent::Answered(201, body) => body["token"].as_str().unwrap_or_default().to_owned(),
                Sent::Answered(status, body) => bail!("POST /api/runners: {status} {body}"),
                Sent::Unreachable => bail!("POST /api/runners: the server did not answer"),
            };
            all.push(One {
                name,
                dir,
                token,
                slots: 1 + rng.below(2),
                child: tokio::sync::Mutex::new(None),
            });
        }
        let runners = Self {
            kills_left: AtomicU32::new(setup.kill_budget),
            setup,
            path,
            all,
            frozen: AtomicBool::new(false),
            kills: AtomicU32::new(0),
            problems: Arc::new(Mutex::new(Vec::new())),
            checks: Mutex::new(Vec::new()),
        };
        for one in &runners.all {
            *one.child.lock().await = Some(runners.spawn(one)?);
        }
        runners.wait_connected(api).await?;
        Ok(runners)
    }

    /// The runners' names and data directories.
    pub fn data_dirs(&self) -> Vec<(String, PathBuf)> {
        self.all
            .iter()
            .map(|o| (o.name.clone(), o.data()))
            .collect()
    }

    /// What went wrong with the runner processes themselves (one that exited by itself,
    /// or failed to start again, or to stop; agents a killed one left that were never
    /// stopped).
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn problem(&self, what: String) {
        self.say(&format!("PROBLEM: {what}"));
        if let Ok(mut p) = self.problems.lock() {
            p.push(what);
        }
    }

    fn say(&self, line: &str) {
        server::append(&self.setup.log, &format!("chaos: {line}"));
    }

    fn at(&self) -> f64 {
        self.setup.since.elapsed().as_secs_f64()
    }

    /// `mainloop runner` for `one`, in a process group of its own, with nothing of the
    /// harness's environment but its `PATH`.
    fn spawn(&self, one: &One) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(one.dir.join("runner.log"))
            .with_context(|| format!("opening {}/runner.log", one.dir.display()))?;
        Command::new(&self.setup.bin)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", one.dir.join("home"))
            .env("MAINLOOP_RUNNER_TOKEN", &one.token)
            .args(["runner", "--server", &self.setup.server, "--label", LABEL])
            .args(["--slots", &one.slots.to_string()])
            .args(["--sandbox", self.setup.sandbox])
            .arg("--data-dir")
            .arg(one.data())
            .current_dir(&one.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting runner {}", one.name))
    }

    async fn wait_connected(&self, api: &Api) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = api.get("/api/runners").await?;
            let connected = list["runners"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["state"] == "connected")
                .count();
            if connected == self.all.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{connected} of {} runners connected within 30 s (see runners/*/runner.log)",
                    self.all.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills runners at seeded moments every `every` until the budget is spent.
    pub fn killer(
        self: &Arc<Self>,
        mut rng: Rng,
        every: (Duration, Duration),
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            while me.kills_left.load(Ordering::SeqCst) > 0 && !me.frozen.load(Ordering::SeqCst) {
                tokio::time::sleep(rng.between(every.0, every.1)).await;
                let n = u64::try_from(me.all.len()).unwrap_or(1).max(1);
                let which = usize::try_from(rng.below(n)).unwrap_or(0);
                let machine = rng.chance(50);
                let pause = rng.between(me.setup.pause.0, me.setup.pause.1);
                // In a task of its own, so that aborting the killer never leaves a
                // runner killed and not started again.
                let it = Arc::clone(&me);
                let _ = tokio::spawn(async move { it.crash(which, machine, pause).await }).await;
            }
        })
    }

    /// SIGKILLs runner `which` (its process group; with `machine`, every agent it runs
    /// too), waits `pause`, and starts it again on the same token and data.
    async fn crash(&self, which: usize, machine: bool, pause: Duration) {
        let Some(one) = self.all.get(which) else {
            return;
        };
        let mut slot = one.child.lock().await;
        if self.frozen.load(Ordering::SeqCst)
            || self
                .kills_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return;
        }
        let Some(mut child) = slot.take() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            self.problem(format!(
                "runner {} had exited by itself ({status}); see {}/runner.log",
                one.name,
                one.dir.display()
            ));
        }
        // The agents it runs: each the leader of a group of its own, recorded in its
        // data directory, so the runner's next start can stop them.
        let agents: Vec<(u32, u64, u32)> =
            procs::recorded_runner_processes(&one.data().join("pids"))
                .into_iter()
                .filter(|(pid, start, _)| procs::running(*pid, *start))
                .collect();
        if let Some(pid) = child.id() {
            procs::kill_group(pid);
        }
        reap(&mut child).await;
        if machine {
            for (pid, start, group) in &agents {
                if procs::running(*pid, *start) {
                    procs::kill_group(*group);
                }
            }
        }
        let n = self.kills.fetch_add(1, Ordering::SeqCst) + 1;
        let what = match (agents.len(), machine) {
            (0, _) => "it ran no agent".to_owned(),
            (k, true) => format!("and its {k} agent(s): its machine died"),
            (k, false) => format!("its {k} agent(s) left running"),
        };
        self.say(&format!(
            "SIGKILL runner {} (runner kill #{n}) at +{:.1}s, {what}; back in {:.1}s",
            one.name,
            self.at(),
            pause.as_secs_f64()
        ));
        tokio::time::sleep(pause).await;
        self.say(&format!(
            "starting runner {} at +{:.1}s",
            one.name,
            self.at()
        ));
        match self.spawn(one) {
            Ok(c) => *slot = Some(c),
            Err(e) => {
                self.problem(format!(
                    "restarting runner {} after runner kill #{n}: {e:#}",
                    one.name
                ));
                return;
            }
        }
        drop(slot);
        if !machine {
            let left: Vec<(u32, u64)> = agents.iter().map(|(p, s, _)| (*p, *s)).collect();
            self.check_left_stop(&one.name, n, left);
        }
    }

    /// The restarted runner must stop every agent its killed process left running.
    fn check_left_stop(&self, name: &str, kill: u32, left: Vec<(u32, u64)>) {
        if left.is_empty() {
            return;
        }
        let log = self.setup.log.clone();
        let problems = Arc::clone(&self.problems);
        let name = name.to_owned();
        let handle = tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let alive: Vec<u32> = left
                    .iter()
                    .filter(|(p, s)| procs::running(*p, *s))
                    .map(|(p, _)| *p)
                    .collect();
                if alive.is_empty() {
                    return;
                }
                if Instant::now() > deadline {
                    let what = format!(
                        "agents {alive:?} left by runner {name} killed in runner kill #{kill} still run 20 s after its restart"
                    );
                    server::append(&log, &format!("chaos: PROBLEM: {what}"));
                    if let Ok(mut p) = problems.lock() {
                        p.push(what);
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        if let Ok(mut c) = self.checks.lock() {
            c.push(handle);
        }
    }

    /// Stops killing; waits for a kill in progress and the pending checks.
    pub async fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        for one in &self.all {
            drop(one.child.lock().await);
        }
        let checks: Vec<_> = self
            .checks
            .lock()
            .map(|mut c| c.drain(..).collect())
            .unwrap_or_default();
        for c in checks {
            let _ = c.await;
        }
    }

    /// Stops every runner the way its supervisor would (SIGTERM): each must exit 0.
    pub async fn stop(&self) {
        self.freeze().await;
        for one in &self.all {
            let Some(mut child) = one.child.lock().await.take() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.problem(format!(
                    "runner {} had exited by itself ({status}); see {}/runner.log",
                    one.name,
                    one.dir.display()
                ));
                continue;
            }
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            self.problem(format!(
                                "runner {} exited with {status} on SIGTERM",
                                one.name
                            ));
                        }
                        break;
                    }
                    Err(e) => {
                        self.problem(format!("waiting for runner {}: {e}", one.name));
                        break;
                    }
                    Ok(None) if Instant::now() > deadline => {
                        self.problem(format!(
                            "runner {} did not stop within 20 s of SIGTERM",
                            one.name
                        ));
                        if let Some(pid) = child.id() {
                            procs::kill_group(pid);
                        }
                        reap(&mut child).await;
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        self.say(&format!("runners stopped at +{:.1}s", self.at()));
    }
}

/// Waits (a while) for a killed child to exit; polled, as the server's supervisor does.
async fn reap(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Which of the run's `n` runs have runners: `runners` when given, else a third of them
/// (every third, where it starts chosen by the seed), two runners each.
pub fn for_run(runners: Option<u32>, seed: u64, index: u32) -> u32 {
    match runners {
        Some(n) => n,
        None if u64::from(index).wrapping_add(seed).is_multiple_of(3) => 2,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_third_of_the_runs_have_runners_unless_told() {
        for seed in 0..10 {
            let with: Vec<u32> = (0..9).filter(|i| for_run(None, seed, *i) > 0).collect();
            assert_eq!(with.len(), 3, "{seed}: {with:?}");
            assert!(with.windows(2).all(|w| w[1] - w[0] == 3), "{with:?}");
            assert!(with[0] < 3);
        }
        assert_eq!(for_run(Some(1), 0, 1), 1);
        assert_eq!(for_run(Some(0), 0, 0), 0);
    }
}

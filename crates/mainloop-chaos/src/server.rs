//! The real `mainloop serve`, supervised: always on the same port and data directory,
//! SIGKILLed when the chaos says so (like a crash: no signal handler runs, agents are
//! left behind), and started again at once. A restarted server must stop the agents the
//! dead one left running; the supervisor checks that it does.

use crate::procs;
use anyhow::{Context, Result, bail};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Spec {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    /// The server's whole environment (it starts from an empty one).
    pub env: Vec<(String, String)>,
    /// Where its stderr (the log) is appended, across restarts.
    pub log: PathBuf,
}

impl Spec {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The server process and what happened to it.
#[derive(Debug)]
pub struct Supervisor {
    spec: Spec,
    http: reqwest::Client,
    child: tokio::sync::Mutex<Option<Child>>,
    kills_left: AtomicU32,
    /// No more kills: the run is finishing.
    frozen: AtomicBool,
    pub kills: AtomicU32,
    /// Kills after which the server came back and answered.
    pub survived: AtomicU32,
    problems: Arc<Mutex<Vec<String>>>,
    checks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    started: Instant,
}

impl Supervisor {
    pub fn new(spec: Spec, http: reqwest::Client, kill_budget: u32) -> Self {
        Self {
            spec,
            http,
            child: tokio::sync::Mutex::new(None),
            kills_left: AtomicU32::new(kill_budget),
            frozen: AtomicBool::new(false),
            kills: AtomicU32::new(0),
            survived: AtomicU32::new(0),
            problems: Arc::new(Mutex::new(Vec::new())),
            checks: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// When it was made: the time the log's `+N s` count from.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn problem(&self, what: String) {
        log(&self.spec, &format!("chaos: PROBLEM: {what}"));
        if let Ok(mut p) = self.problems.lock() {
            p.push(what);
        }
    }

    /// What went wrong with the process itself (a restart that failed, an orphaned agent
    /// that was never stopped, a shutdown that hung).
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn kills_left(&self) -> u32 {
        self.kills_left.load(Ordering::SeqCst)
    }

    /// Starts the first server.
    pub async fn start(&self) -> Result<()> {
        let mut slot = self.child.lock().await;
        *slot = Some(self.spawn().await?);
        drop(slot);
        self.wait_healthy().await
    }

    async fn spawn(&self) -> Result<Child> {
        let spec = &self.spec;
        log(
            spec,
            &format!(
                "chaos: starting mainloop at +{:.1}s",
                self.started.elapsed().as_secs_f64()
            ),
        );
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("opening {}", spec.log.display()))?;
        let mut child = Command::new(&spec.bin)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["serve", "--listen", &format!("127.0.0.1:{}", spec.port)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", spec.bin.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("mainloop listening on ") {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        match ready {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!(
                "mainloop exited before listening (see {})",
                spec.log.display()
            ),
            Ok(Err(e)) => return Err(e).context("reading the server's stdout"),
            Err(_) => bail!("mainloop did not listen within 60 s"),
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(child)
    }

    async fn wait_healthy(&self) -> Result<()> {
        let url = format!("{}/api/health", self.spec.base());
        for _ in 0..300 {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the server did not answer /api/health within 30 s")
    }

    /// SIGKILLs the server (if the run's kill budget allows) and starts it again on the
    /// same data. Returns whether it killed. Runs to the end even when the caller goes
    /// away (the proxy's caller is the server being killed, whose request is dropped).
    pub async fn crash(self: &Arc<Self>, why: &str) -> bool {
        let me = Arc::clone(self);
        let why = why.to_owned();
        tokio::spawn(async move { me.crash_now(&why).await })
            .await
            .unwrap_or(false)
    }

    async fn crash_now(&self, why: &str) -> bool {
        if self.frozen.load(Ordering::SeqCst) {
            return false;
        }
        let mut slot = self.child.lock().await;
        if self.frozen.load(Ordering::SeqCst)
            || self
                .kills_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return false;
        }
        let Some(mut child) = slot.take() else {
            return false;
        };
        let _ = child.start_kill();
        reap(&mut child, Duration::from_secs(10)).await;
        let n = self.kills.fetch_add(1, Ordering::SeqCst) + 1;
        log(
            &self.spec,
            &format!(
                "chaos: SIGKILL #{n} at +{:.1}s ({why})",
                self.started.elapsed().as_secs_f64()
            ),
        );
        // The agents it left behind: a process of their own group each, still running.
        let orphans: Vec<(u32, u64)> = procs::recorded_agents(&self.spec.data.join("agents"))
            .into_iter()
            .filter(|(pid, start)| procs::running(*pid, *start))
            .collect();
        let mut restarted = None;
        for attempt in 1..=3 {
            match self.spawn().await {
                Ok(c) => {
                    restarted = Some(c);
                    break;
                }
                Err(e) => {
                    // Who still has the data directory's lock open, if anyone: the
                    // evidence for "another mainloop server is using …".
                    let holders = procs::holding(&self.spec.data.join("mainloop.lock"));
                    self.problem(format!(
                        "restart {attempt} after kill #{n} failed: {e:#}; the lock file is open in {holders:?}"
                    ));
                }
            }
        }
        let Some(child) = restarted else {
            self.frozen.store(true, Ordering::SeqCst);
            return true;
        };
        *slot = Some(child);
        drop(slot);
        match self.wait_healthy().await {
            Ok(()) => {
                self.survived.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => self.problem(format!("after kill #{n}: {e:#}")),
        }
        self.check_orphans_stop(n, orphans);
        true
    }

    /// The restarted server must stop every agent the killed one left running.
    fn check_orphans_stop(&self, kill: u32, orphans: Vec<(u32, u64)>) {
        if orphans.is_empty() {
            return;
        }
        let spec = self.spec.clone();
        let problems = Arc::clone(&self.problems);
        let handle = tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let alive: Vec<_> = orphans
                    .iter()
                    .filter(|(p, s)| procs::running(*p, *s))
                    .collect();
                if alive.is_empty() {
                    return;
                }
                if Instant::now() > deadline {
                    let pids: Vec<u32> = alive.iter().map(|(p, _)| *p).collect();
                    let what = format!(
                        "agents {pids:?} left by the server killed in kill #{kill} still run 20 s after the restart"
                    );
                    log(&spec, &format!("chaos: PROBLEM: {what}"));
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

    /// Stops killing; waits for the pending orphan checks.
    pub async fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        // Taking the lock waits out a crash in progress.
        drop(self.child.lock().await);
        let checks: Vec<_> = self
            .checks
            .lock()
            .map(|mut c| c.drain(..).collect())
            .unwrap_or_default();
        for c in checks {
            let _ = c.await;
        }
    }

    /// Stops the server the way an operator does (SIGTERM) and waits for it to exit.
    pub async fn stop(&self) {
        self.freeze().await;
        let mut slot = self.child.lock().await;
        let Some(mut child) = slot.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        self.problem(format!("mainloop exited with {status} on SIGTERM"));
                    }
                    break;
                }
                Err(e) => {
                    self.problem(format!("waiting for mainloop: {e}"));
                    break;
                }
                Ok(None) if Instant::now() > deadline => {
                    self.problem("mainloop did not stop within 40 s of SIGTERM".into());
                    let _ = child.start_kill();
                    reap(&mut child, Duration::from_secs(10)).await;
                    break;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        log(
            &self.spec,
            &format!(
                "chaos: stopped at +{:.1}s",
                self.started.elapsed().as_secs_f64()
            ),
        );
    }
}

/// Waits for a killed child to exit. Polls rather than awaiting `Child::wait`, which
/// was seen to hang after a SIGKILL while other children came and went.
async fn reap(child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() > deadline => return false,
            Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A line in the server's log, so its own lines read in context.
pub fn log(spec: &Spec, line: &str) {
    append(&spec.log, line);
}

/// A line appended to the log at `path`.
pub fn append(path: &std::path::Path, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

//! 50 concurrent agent runs, each streaming 100 events/s: the worker runtime with the
//! protocol-speaking fake agent (`mainloop-fake-agent`) in real git worktrees, on the
//! in-process server. Measures lost events (transcript and SSE), the server's CPU and
//! memory per running task, the agents' CPU and memory, and `GET /api/tasks` /
//! `GET /api/inbox` latency while they stream.

use crate::harness::{Server, client, fresh_store};
use crate::sse;
use crate::stats::{Summary, round3};
use anyhow::{Context, Result, bail};
use mainloop_agent::ClaudeCode;
use mainloop_domain::records::Task;
use mainloop_domain::task::TaskState;
use mainloop_domain::{TaskId, Timestamp};
use mainloop_engine::{CreateTask, EngineConfig};
use mainloop_git::Git;
use mainloop_worker::{Runtime, WorkerConfig};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The transcript kinds one fake-agent progress line becomes (in rotation).
const AGENT_KINDS: [&str; 3] = ["text", "tool_call", "tool_result"];

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Concurrent agent runs (tasks, and agent slots).
    #[arg(long, default_value_t = 50)]
    pub agents: usize,
    /// Events per second each agent streams.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Seconds each agent streams: it emits `rate × seconds` events.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Give up waiting for the tasks to reach `review` this long after creating them.
    #[arg(long, default_value_t = 55)]
    pub timeout: u64,
    /// Milliseconds between API requests (alternately `/api/tasks` and `/api/inbox`).
    #[arg(long, default_value_t = 50)]
    pub probe_ms: u64,
    /// The fake agent; default: `mainloop-fake-agent` next to this executable.
    #[arg(long)]
    pub fake_agent: Option<PathBuf>,
    /// A real `claude` CLI whose idle RSS to measure, if it exists.
    #[arg(long, default_value = "node_modules/.bin/claude")]
    pub claude: PathBuf,
    /// Print the 200 ms samples once a second: CPU, children's CPU, RSS, live agents.
    #[arg(long)]
    pub timeline: bool,
    /// Seconds per variant of the store's write ceiling (without agents): the agents'
    /// write path from `--agents` concurrent writers, relaxed, batched; 0 skips it.
    #[arg(long, default_value_t = 3)]
    pub ceiling_seconds: u64,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            agents: 50,
            rate: 100,
            seconds: 20,
            timeout: 55,
            probe_ms: 50,
            fake_agent: None,
            claude: PathBuf::from("node_modules/.bin/claude"),
            timeline: false,
            ceiling_seconds: 3,
        }
    }
}

// ---------------------------------------------------------------------------------------
// /proc

/// The fields of `/proc/PID/stat` we use (ticks and pages).
#[derive(Clone, Copy, Debug, Default)]
struct ProcStat {
    state: char,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
    rss_pages: u64,
}

fn proc_stat(path: &Path) -> Option<ProcStat> {
    let text = std::fs::read_to_string(path).ok()?;
    // `pid (comm) state …`: comm may contain spaces, so split after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field N is f[N - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        utime: num(14)?,
        stime: num(15)?,
        cutime: num(16)?,
        cstime: num(17)?,
        rss_pages: num(24)?,
    })
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(pid: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Context switches of this process's live threads, voluntary and involuntary.
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn getconf(name: &str, default: u64) -> u64 {
    std::process::Command::new("getconf")
        .arg(name)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

// ---------------------------------------------------------------------------------------
// Sampler: the bench process and the fake agents, every 200 ms.

#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Since the epoch instant, ms.
    at_ms: f64,
    /// utime + stime of this process, ticks.
    self_ticks: u64,
    /// stime (kernel) of this process, ticks.
    self_sys: u64,
    /// Context switches of all this process's threads (voluntary + involuntary).
    ctx_switches: u64,
    /// cutime + cstime (waited-for children: agents and git), ticks.
    child_ticks: u64,
    rss_kib: u64,
    /// Fake agents alive (not zombies).
    live_agents: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct AgentProc {
    /// utime + stime at the last sample that saw it alive, ticks.
    ticks: u64,
    rss_max_pages: u64,
    /// RSS at the last sample, pages.
    rss_last_pages: u64,
}

#[derive(Debug, Default)]
struct Sampled {
    samples: Vec<Sample>,
    agents: HashMap<u32, AgentProc>,
}

async fn sample(
    pid_dir: PathBuf,
    n_agents: usize,
    epoch: Instant,
    stop: CancellationToken,
) -> Sampled {
    let mut out = Sampled::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = Path::new("/proc/self/stat");
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Each task's agent pid is recorded by the runtime in `pid_dir/<task id>`.
        if out.agents.len() < n_agents
            && let Ok(entries) = std::fs::read_dir(&pid_dir)
        {
            for e in entries.flatten() {
                let record = std::fs::read_to_string(e.path()).unwrap_or_default();
                if let Some(Ok(pid)) = record.split_whitespace().next().map(str::parse::<u32>) {
                    out.agents.entry(pid).or_default();
                }
            }
        }
        let mut live = 0;
        for (pid, a) in &mut out.agents {
            if let Some(s) = proc_stat(Path::new(&format!("/proc/{pid}/stat")))
                && s.state != 'Z'
            {
                live += 1;
                a.ticks = s.utime + s.stime;
                a.rss_last_pages = s.rss_pages;
                a.rss_max_pages = a.rss_max_pages.max(s.rss_pages);
            }
        }
        let s = proc_stat(me).unwrap_or_default();
        out.samples.push(Sample {
            at_ms: epoch.elapsed().as_secs_f64() * 1000.0,
            self_ticks: s.utime + s.stime,
            self_sys: s.stime,
            ctx_switches: context_switches(),
            child_ticks: s.cutime + s.cstime,
            rss_kib: status_kib("self", "VmRSS").unwrap_or_default(),
            live_agents: live,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// API prober: every `probe_ms`, alternately GET /api/tasks and GET /api/inbox.

#[derive(Clone, Copy, Debug)]
struct Probe {
    tasks: bool,
    at_ms: f64,
    took: Duration,
    ok: bool,
    bytes: usize,
}

async fn probe(
    http: reqwest::Client,
    base: String,
    token: String,
    every: Duration,
    epoch: Instant,
    stop: CancellationToken,
) -> Vec<Probe> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let url = if tasks {
            format!("{base}/api/tasks")
        } else {
            format!("{base}/api/inbox")
        };
        let at = epoch.elapsed();
        let started = Instant::now();
        let res = async {
            let resp = http
                .get(&url)
                .bearer_auth(&token)
                .timeout(Duration::from_secs(10))
                .send()
                .await?;
            let ok = resp.status().is_success();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((ok, body.len()))
        }
        .await;
        let took = started.elapsed();
        let (ok, bytes) = res.unwrap_or((false, 0));
        out.push(Probe {
            tasks,
            at_ms: at.as_secs_f64() * 1000.0,
            took,
            ok,
            bytes,
        });
        tasks = !tasks;
    }
    out
}

// ---------------------------------------------------------------------------------------
// One SSE client on /api/events, counting the agents' `task.output` events.

#[derive(Debug, Default)]
struct SseReport {
    /// `task.output` events of the agent kinds.
    agent_events: u64,
    /// All `task.output` events.
    outputs: u64,
    /// Receipt − the event's `created_at`, ms (wall clock, ms resolution).
    lags_ms: Vec<i64>,
    caught_up: bool,
    error: Option<String>,
}

async fn count_sse(
    mut reader: sse::SseReader,
    mut expected: watch::Receiver<Option<u64>>,
) -> SseReport {
    let mut r = SseReport::default();
    loop {
        if expected.borrow().is_some_and(|n| r.agent_events >= n) {
            r.caught_up = true;
            return r;
        }
        tokio::select! {
            changed = expected.changed() => {
                if changed.is_err() {
                    return r;
                }
            }
            ev = reader.next() => match ev {
                Ok(Some(ev)) if ev.event == "task.output" => {
                    r.outputs += 1;
                    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else { continue };
                    let kind = v["kind"].as_str().unwrap_or_default();
                    if AGENT_KINDS.contains(&kind) {
                        r.agent_events += 1;
                        if let Some(at) = v["created_at"]
                            .as_str()
                            .and_then(|s| Timestamp::parse_rfc3339(s).ok())
                        {
                            r.lags_ms.push(wall_ms() - at.as_millis());
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    r.error = Some("the server closed the event stream".into());
                    return r;
                }
                Err(e) => {
                    r.error = Some(format!("{e:#}"));
                    return r;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Setup helpers

pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn fake_agent_path(args: &Args) -> Result<PathBuf> {
    let path = match &args.fake_agent {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench executable has no directory")?
            .join("mainloop-fake-agent"),
    };
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p mainloop-agent --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// What the transcripts hold.
#[derive(Debug, Default)]
struct Transcripts {
    /// Per task: count of each agent kind.
    per_task: Vec<[u64; 3]>,
    /// Per task: `finished` entries.
    finished: Vec<u64>,
    /// Per task: how many of the agent's lines, from the first, are recorded in order
    /// without a gap.
    prefix: Vec<u64>,
    /// Lines missing inside a task's recorded sequence (a later one is recorded).
    gaps: u64,
    /// Entries whose step repeats or goes back.
    repeated: u64,
    /// Entries whose step is unreadable or does not match their kind.
    mismatched: u64,
    /// Per task: first and last agent-kind entry, wall ms.
    spans: Vec<Option<(i64, i64)>>,
    /// `created_at` (wall ms) of every agent-kind entry.
    times: Vec<i64>,
    rows: u64,
}

/// Which of the fake agent's progress lines (`i`) an entry of kind `AGENT_KINDS[kind]`
/// records: text `Working on step i.`, tool call `Bash: echo step i`, tool result
/// `step i-1` (the output of the call before it).
fn step_of(kind: usize, payload: &Value) -> Option<u64> {
    let text = payload["text"]
        .as_str()
        .or_else(|| payload["summary"].as_str())?;
    let digits: String = text
        .rsplit(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .to_owned();
    let n: u64 = digits.parse().ok()?;
    Some(if kind == 2 { n + 1 } else { n })
}

async fn read_transcripts(server: &Server, ids: &[TaskId]) -> Result<Transcripts> {
    let mut t = Transcripts::default();
    for id in ids {
        let mut counts = [0_u64; 3];
        let mut finished = 0;
        let mut span: Option<(i64, i64)> = None;
        let mut after = 0;
        let mut next = 0_u64;
        loop {
            let page = server
                .engine
                .task_transcript(server.user, *id, after, 1000)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                t.rows += 1;
                let kind = e.entry.kind();
                if kind == "finished" {
                    finished += 1;
                }
                if let Some(k) = AGENT_KINDS.iter().position(|k| *k == kind) {
                    counts[k] += 1;
                    let stored = serde_json::to_value(&e.entry).unwrap_or_default();
                    match step_of(k, &stored["payload"]) {
                        Some(step) if step % 3 == k as u64 => {
                            if step >= next {
                                t.gaps += step - next;
                                next = step + 1;
                            } else {
                                t.repeated += 1;
                            }
                        }
                        _ => t.mismatched += 1,
                    }
                    let at = e.created_at.as_millis();
                    t.times.push(at);
                    span = Some(span.map_or((at, at), |(a, b)| (a.min(at), b.max(at))));
                }
            }
        }
        t.per_task.push(counts);
        t.finished.push(finished);
        t.prefix.push(next);
        t.spans.push(span);
    }
    Ok(t)
}

/// Starts the real `claude` CLI idle in stream-json mode (no network: the API URL is a
/// closed loopback port), sends `initialize`, waits for the answer and 3 s more, and
/// reads its RSS (with any child processes).
async fn claude_idle_rss(claude: &Path) -> Result<Value> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let home = tempfile::Builder::new()
        .prefix("mainloop-bench-claude-")
        .tempdir()?;
    let mut child = tokio::process::Command::new(claude)
        .args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-prompt-tool",
            "stdio",
        ])
        .current_dir(home.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("ANTHROPIC_API_KEY", "sk-bench")
        .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", claude.display()))?;
    let pid = child.id().context("claude has no pid")?;
    let started = Instant::now();
    let mut stdin = child.stdin.take().context("no stdin")?;
    let stdout = child.stdout.take().context("no stdout")?;
    stdin
        .write_all(
            b"{\"type\":\"control_request\",\"request_id\":\"init-1\",\"request\":{\"subtype\":\"initialize\"}}\n",
        )
        .await?;
    stdin.flush().await?;
    let mut lines = BufReader::new(stdout).lines();
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("control_response") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid_s = pid.to_string();
    let rss = status_kib(&pid_s, "VmRSS").unwrap_or_default();
    let hwm = status_kib(&pid_s, "VmHWM").unwrap_or_default();
    // Any processes it started (none expected).
    let children: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|c| {
                    c.split_whitespace()
                        .filter_map(|p| status_kib(p, "VmRSS"))
                        .collect::<Vec<_>>()
                })
                .sum()
        })
        .unwrap_or_default();
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    Ok(json!({
        "answered_initialize": answered,
        "ready_ms": round3(ready_ms),
        "rss_mib": round3(mib(rss as f64)),
        "hwm_mib": round3(mib(hwm as f64)),
        "children_rss_mib": round3(mib(children as f64)),
    }))
}

// ---------------------------------------------------------------------------------------
// The store's write ceiling: what the agents' write path can do without agents.

#[derive(Clone, Copy, Debug)]
enum WriteMode {
    /// `Engine::record_task_output`, as the worker runtime calls it per agent event.
    Engine,
    /// The same transaction through `Store::begin_relaxed` (no flush at commit).
    Relaxed,
    /// `n` events (transcript row + event each) per `Store::begin` transaction.
    Batched(usize),
}

impl WriteMode {
    fn name(self) -> String {
        match self {
            Self::Engine => "record_task_output (1 event per tx, synchronous=FULL)".to_owned(),
            Self::Relaxed => "the same tx via begin_relaxed (synchronous=NORMAL)".to_owned(),
            Self::Batched(n) => format!("{n} events per tx (synchronous=FULL)"),
        }
    }
}

/// One write of `mode`; returns the events written.
async fn write_once(
    engine: &mainloop_engine::Engine,
    user: mainloop_domain::UserId,
    task: TaskId,
    mode: WriteMode,
    step: u64,
) -> Result<u64> {
    use mainloop_domain::event::EventName;
    let payload = json!({"text": format!("Working on step {step}.")});
    let (mut tx, n) = match mode {
        WriteMode::Engine => {
            engine
                .record_task_output(user, task, "text", &payload)
                .await?;
            return Ok(1);
        }
        WriteMode::Relaxed => (engine.store().begin_relaxed().await?, 1),
        WriteMode::Batched(n) => (engine.store().begin().await?, n),
    };
    for _ in 0..n {
        let at = mainloop_engine::now();
        let seq = tx.append_transcript(task, "text", &payload, at).await?;
        tx.append_event(
            user,
            EventName::TaskOutput,
            &json!({"task_id": task, "seq": seq, "kind": "text", "payload": payload, "created_at": at}),
            at,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(n as u64)
}

#[allow(clippy::cast_precision_loss)]
async fn write_ceiling(writers: usize, duration: Duration, tick_hz: f64) -> Result<Value> {
    let server = Server::start(None, EngineConfig::default()).await?;
    // Tasks to write to; without a worker runtime they stay queued.
    let mut tasks = Vec::with_capacity(writers);
    for i in 0..writers {
        let t = server
            .engine
            .create_task(
                server.user,
                &CreateTask {
                    description: format!("ceiling {i}"),
                    repo: "/nonexistent".into(),
                    skip_plan: true,
                    model: None,
                },
            )
            .await?;
        tasks.push(t.id);
    }
    let mut rows = Vec::new();
    for mode in [
        WriteMode::Engine,
        WriteMode::Relaxed,
        WriteMode::Batched(10),
    ] {
        let started = Instant::now();
        let cpu0 = proc_stat(Path::new("/proc/self/stat")).unwrap_or_default();
        let mut handles = Vec::with_capacity(writers);
        for task in &tasks {
            let engine = server.engine.clone();
            let (user, task) = (server.user, *task);
            handles.push(tokio::spawn(async move {
                let mut calls = Vec::new();
                let mut written = 0_u64;
                let mut error = None;
                while started.elapsed() < duration {
                    let t = Instant::now();
                    match write_once(&engine, user, task, mode, written).await {
                        Ok(k) => written += k,
                        Err(e) => {
                            error = Some(format!("{e:#}"));
                            break;
                        }
                    }
                    calls.push(t.elapsed());
                }
                (written, calls, error)
            }));
        }
        let (mut written, mut calls, mut errors) = (0, Vec::new(), Vec::new());
        for h in handles {
            let (w, mut c, e) = h.await?;
            written += w;
            calls.append(&mut c);
            errors.extend(e);
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu1 = proc_stat(Path::new("/proc/self/stat")).unwrap_or_default();
        let cpu = ((cpu1.utime + cpu1.stime) - (cpu0.utime + cpu0.stime)) as f64 / tick_hz;
        let calls = Summary::of(calls);
        rows.push(json!({
            "variant": mode.name(),
            "writers": writers,
            "events": written,
            "events_per_s": round3(written as f64 / wall),
            "cpu_pct_core": round3(cpu / wall * 100.0),
            "call_ms": calls.json(),
            "call_line": calls.line(),
            "errors": errors.len(),
            "first_error": errors.first(),
        }));
    }
    server.stop().await;
    Ok(Value::Array(rows))
}

// ---------------------------------------------------------------------------------------

/// The samples in `[from, to]` ms, plus the nearest ones outside so a short window
/// still has two ends.
fn window(samples: &[Sample], from: f64, to: f64) -> Option<(Sample, Sample)> {
    let first = samples
        .iter()
        .rev()
        .find(|s| s.at_ms <= from)
        .or(samples.first())?;
    let last = samples.iter().find(|s| s.at_ms >= to).or(samples.last())?;
    (last.at_ms > first.at_ms).then_some((*first, *last))
}

fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

#[allow(clippy::too_many_lines, clippy::cast_precision_loss)]
pub async fn run(args: &Args) -> Result<()> {
    let n = args.agents;
    let events = args.rate * args.seconds;
    println!(
        "== agents: {n} concurrent fake agents × {} events/s for {} s ({events} events each) through the worker runtime (SQLite, git worktrees)",
        args.rate, args.seconds
    );
    if n == 0 {
        bail!("--agents must be at least 1");
    }
    let fake = fake_agent_path(args)?;
    let tick_hz = getconf("CLK_TCK", 100) as f64;
    let page_kib = getconf("PAGESIZE", 4096) as f64 / 1024.0;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;

    // A repo with one commit, and the runtime's directories.
    let work = tempfile::Builder::new()
        .prefix("mainloop-bench-agents-")
        .tempdir()?;
    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    std::fs::write(repo.join("README.md"), "bench\n")?;
    git(&repo, &["add", "-A"])?;
    git(&repo, &["commit", "-q", "-m", "init"])?;
    let home = work.path().join("home");
    std::fs::create_dir_all(&home)?;
    let pid_dir = work.path().join("agents");

    let command = vec![
        fake.display().to_string(),
        "--events".into(),
        events.to_string(),
        "--rate".into(),
        args.rate.to_string(),
    ];
    let config = WorkerConfig {
        max_agents: n,
        idle_timeout: Duration::from_secs(600),
        inactivity_timeout: Duration::from_secs(120),
        api_retries: 0,
        api_retry_delay: Duration::from_secs(1),
        check_timeout: Duration::from_secs(60),
        check_output_bytes: 16 * 1024,
        model: None,
        agent_env: vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".to_owned(), home.display().to_string()),
        ],
        plans_dir: home.join(".claude/plans"),
        sandbox: None,
        pid_dir: pid_dir.clone(),
        forge: None,
    };
    let git_dirs = Git::new(work.path().join("repos"), work.path().join("worktrees"));
    let (store, dir) = fresh_store().await?;
    let mut runtime = None;
    let server = Server::start_with(store, Some(dir), None, EngineConfig::default(), |engine| {
        let rt = Runtime::new(
            engine.clone(),
            Arc::new(ClaudeCode::new(command)),
            git_dirs,
            config,
        );
        rt.install();
        runtime = Some(rt);
    })
    .await?;
    let runtime = runtime.context("the runtime was not installed")?;
    // Its own token (under the server's), to stop the agents on timeout.
    let runtime_stop = server.shutdown_token().child_token();
    let scheduler = runtime.spawn(runtime_stop.clone());

    let epoch = Instant::now();
    let epoch_wall = wall_ms();
    // Transcript times (wall ms) → ms since `epoch`.
    let since_epoch = |wall: i64| (wall - epoch_wall) as f64;
    let http = client()?;
    let after = server.engine.store().latest_event_id().await?.0;
    let reader = sse::connect(&http, &server.base, &server.token, Some(after)).await?;
    let (expected_tx, expected_rx) = watch::channel(None::<u64>);
    let sse_task = tokio::spawn(count_sse(reader, expected_rx));
    let stop_sampler = CancellationToken::new();
    let sampler = tokio::spawn(sample(pid_dir, n, epoch, stop_sampler.clone()));
    let stop_probe = CancellationToken::new();
    let prober = tokio::spawn(probe(
        http.clone(),
        server.base.clone(),
        server.token.clone(),
        Duration::from_millis(args.probe_ms.max(1)),
        epoch,
        stop_probe.clone(),
    ));
    // One idle second: the baseline RSS and idle API latency.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_rss = status_kib("self", "VmRSS").unwrap_or_default();
    let rss_note = (baseline_rss > 40 * 1024).then_some(
        " (the heap was already grown by earlier work in this process, so the per-task figure is too low: run `agents` alone)",
    );
    let create_at = epoch.elapsed().as_secs_f64() * 1000.0;

    let repo_s = repo.display().to_string();
    let mut ids = Vec::with_capacity(n);
    let creating = Instant::now();
    for i in 0..n {
        let task = server
            .engine
            .create_task(
                server.user,
                &CreateTask {
                    description: format!("bench task {i}"),
                    repo: repo_s.clone(),
                    skip_plan: true,
                    model: None,
                },
            )
            .await?;
        ids.push(task.id);
    }
    let create_ms = creating.elapsed().as_secs_f64() * 1000.0;

    // Wait for every task to reach review (or to fail), up to the timeout.
    let deadline = creating + Duration::from_secs(args.timeout);
    let mut max_implementing = 0;
    let mut states: BTreeMap<String, usize>;
    let mut timed_out = false;
    loop {
        let tasks: Vec<Task> = server.engine.tasks(server.user, &[], 1000).await?;
        states = BTreeMap::new();
        for t in tasks.iter().filter(|t| ids.contains(&t.id)) {
            *states.entry(t.state.to_string()).or_default() += 1;
        }
        let implementing = tasks
            .iter()
            .filter(|t| t.state == TaskState::Implementing)
            .count();
        max_implementing = max_implementing.max(implementing);
        let settled = tasks
            .iter()
            .filter(|t| {
                matches!(
                    t.state,
                    TaskState::Review
                        | TaskState::Failed
                        | TaskState::Cancelled
                        | TaskState::Merged
                )
            })
            .count();
        if settled >= n {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled_ms = creating.elapsed().as_secs_f64() * 1000.0;
    stop_probe.cancel();
    let probes = prober.await.unwrap_or_default();
    if timed_out {
        // Stop the agents (the runtime kills them) so that the transcripts stop changing
        // while they are counted.
        runtime_stop.cancel();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until
            && server
                .engine
                .store()
                .count_unfinished("task.run_agent")
                .await
                .unwrap_or(0)
                > 0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let errors: Vec<String> = server
        .engine
        .tasks(server.user, &[TaskState::Failed], 1000)
        .await?
        .into_iter()
        .filter_map(|t| t.error)
        .collect();

    // Lost events: the transcripts against what the fake agents wrote.
    let tr = read_transcripts(&server, &ids).await?;
    // Lost: a line missing inside a task's recorded sequence, or missing at the end of
    // a task whose agent finished. A task still streaming at the deadline has a backlog
    // instead: lines its agent had not written yet or we had not read (back-pressure).
    let (mut lost, mut backlog, mut complete_tasks) = (tr.gaps, 0_u64, 0_usize);
    for (i, prefix) in tr.prefix.iter().enumerate() {
        let missing = events.saturating_sub(*prefix);
        if tr.finished[i] > 0 {
            lost += missing;
        } else {
            backlog += missing;
        }
        complete_tasks +=
            usize::from(*prefix == events && tr.per_task[i].iter().sum::<u64>() == events);
    }
    let extra = tr.repeated + tr.mismatched;
    let recorded: u64 = tr.per_task.iter().flatten().sum();
    let emitted_expected = events * n as u64;
    let finished_tasks = tr.finished.iter().filter(|f| **f == 1).count();

    // SSE: wait (≤ 10 s) for the client to see every recorded row.
    expected_tx.send_replace(Some(recorded));
    let sse_report = match tokio::time::timeout(Duration::from_secs(10), sse_task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => SseReport {
            error: Some(format!("the SSE client failed: {e}")),
            ..SseReport::default()
        },
        Err(_) => SseReport {
            error: Some("the SSE client did not catch up within 10 s".into()),
            ..SseReport::default()
        },
    };
    // Let exited agents be reaped (cutime), then stop sampling.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_sampler.cancel();
    let sampled = sampler.await.unwrap_or_default();
    let run_ms = epoch.elapsed().as_secs_f64() * 1000.0;
    let server_hwm = status_kib("self", "VmHWM").unwrap_or_default();
    server.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(3), scheduler).await;

    // The streaming window: the first to the last agent entry of any task; "all
    // streaming": from the last task's first entry to the first task's last entry.
    let spans: Vec<(i64, i64)> = tr.spans.iter().flatten().copied().collect();
    let stream_from = spans.iter().map(|s| s.0).min().map(since_epoch);
    let stream_to = spans.iter().map(|s| s.1).max().map(since_epoch);
    let (Some(stream_from), Some(stream_to)) = (stream_from, stream_to) else {
        bail!(
            "no agent output was recorded; task states {states:?}; errors {:?}",
            errors.first()
        );
    };
    let all_from = spans.iter().map(|s| s.0).max().map_or(0.0, since_epoch);
    let all_to = spans.iter().map(|s| s.1).min().map_or(0.0, since_epoch);
    let stream_s = (stream_to - stream_from) / 1000.0;
    let throughput = recorded as f64 / stream_s.max(0.001);
    // Recorded per second of the window.
    let mut per_second = vec![0_u64; (stream_s.ceil() as usize).max(1)];
    for t in &tr.times {
        let sec = ((since_epoch(*t) - stream_from) / 1000.0).floor().max(0.0) as usize;
        let last = per_second.len() - 1;
        if let Some(slot) = per_second.get_mut(sec.min(last)) {
            *slot += 1;
        }
    }

    // CPU over the streaming window.
    let (server_cpu_core, server_sys_core, child_cpu_s, switches_per_s) =
        match window(&sampled.samples, stream_from, stream_to) {
            Some((a, b)) => {
                let wall = (b.at_ms - a.at_ms) / 1000.0;
                let cpu = (b.self_ticks - a.self_ticks) as f64 / tick_hz;
                let sys = (b.self_sys - a.self_sys) as f64 / tick_hz;
                (
                    cpu / wall * 100.0,
                    sys / wall * 100.0,
                    (b.child_ticks - a.child_ticks) as f64 / tick_hz,
                    b.ctx_switches.saturating_sub(a.ctx_switches) as f64 / wall,
                )
            }
            None => (0.0, 0.0, 0.0, 0.0),
        };
    let cpu_per_event_ms = server_cpu_core / 100.0 / throughput.max(0.001) * 1000.0;
    let switches_per_event = switches_per_s / throughput.max(0.001);
    let agents_cpu_s: f64 = sampled.agents.values().map(|a| a.ticks as f64).sum::<f64>() / tick_hz;
    let agents_cpu_core = agents_cpu_s / stream_s.max(0.001) * 100.0;
    // Final children figure after every agent exited and was reaped.
    let total_child_s = sampled
        .samples
        .last()
        .map_or(0.0, |s| s.child_ticks as f64 / tick_hz);

    // RSS while all agents are alive.
    let all_live: Vec<u64> = sampled
        .samples
        .iter()
        .filter(|s| s.live_agents >= n)
        .map(|s| s.rss_kib)
        .collect();
    let all_live_n = all_live.len();
    let rss_all_median = median(all_live.clone());
    let rss_all_max = all_live.iter().copied().max().unwrap_or_default();
    let rss_peak = sampled
        .samples
        .iter()
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or_default();
    let per_task_kib = rss_all_median.saturating_sub(baseline_rss) as f64 / n as f64;
    let agent_rss: Vec<u64> = sampled.agents.values().map(|a| a.rss_max_pages).collect();
    let agent_rss_median_kib = median(agent_rss.clone()) as f64 * page_kib;
    let agent_rss_max_kib = agent_rss.iter().copied().max().unwrap_or_default() as f64 * page_kib;
    let max_live = sampled
        .samples
        .iter()
        .map(|s| s.live_agents)
        .max()
        .unwrap_or_default();

    // API latency: idle (before the tasks) and while the agents stream.
    let pick = |tasks: bool, from: f64, to: f64| {
        Summary::of(
            probes
                .iter()
                .filter(|p| p.tasks == tasks && p.at_ms >= from && p.at_ms <= to)
                .map(|p| p.took)
                .collect(),
        )
    };
    let tasks_idle = pick(true, 0.0, create_at);
    let inbox_idle = pick(false, 0.0, create_at);
    let tasks_lat = pick(true, stream_from, stream_to);
    let inbox_lat = pick(false, stream_from, stream_to);
    let probe_errors = probes.iter().filter(|p| !p.ok).count();
    let tasks_bytes = probes
        .iter()
        .filter(|p| p.tasks && p.at_ms >= stream_from)
        .map(|p| p.bytes)
        .max()
        .unwrap_or_default();

    let sse_lost = recorded.saturating_sub(sse_report.agent_events);
    let mut lags = sse_report.lags_ms.clone();
    lags.sort_unstable();
    let lag_at = |p: f64| -> i64 {
        if lags.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * lags.len() as f64).ceil() as usize;
        lags[rank.clamp(1, lags.len()) - 1]
    };

    let ceiling = if args.ceiling_seconds > 0 {
        println!(
            "  (measuring the store's write ceiling without agents, {} s per variant…)",
            args.ceiling_seconds
        );
        Some(write_ceiling(n, Duration::from_secs(args.ceiling_seconds), tick_hz).await?)
    } else {
        None
    };
    let claude = if let Ok(path) = std::fs::canonicalize(&args.claude) {
        match claude_idle_rss(&path).await {
            Ok(v) => Some(v),
            Err(e) => Some(json!({"error": format!("{e:#}")})),
        }
    } else {
        None
    };

    // Report.
    if args.timeline {
        for w in sampled.samples.windows(6).step_by(5) {
            let (a, b) = (w[0], w[5]);
            let wall = (b.at_ms - a.at_ms) / 1000.0;
            println!(
                "    t={:5.1}s  cpu {:5.1} %  children {:6.1} %  rss {:6.1} MiB  agents alive {}",
                (b.at_ms - create_at) / 1000.0,
                (b.self_ticks - a.self_ticks) as f64 / tick_hz / wall * 100.0,
                (b.child_ticks - a.child_ticks) as f64 / tick_hz / wall * 100.0,
                mib(b.rss_kib as f64),
                b.live_agents
            );
        }
    }
    println!(
        "  {n} tasks created in {create_ms:.0} ms; {} after {:.1} s; states {states:?}; at most {max_implementing} implementing, {max_live} agent processes alive at once",
        if timed_out {
            "DEADLINE reached (not every task in review; the agents were stopped)"
        } else {
            "all settled"
        },
        settled_ms / 1000.0
    );
    if let Some(e) = errors.first() {
        println!("    failed ({}): {e}", errors.len());
    }
    println!(
        "  events: {recorded} recorded of {emitted_expected} (lost {lost}, repeated or wrong {extra} {}; not yet recorded at the deadline {backlog}); {complete_tasks}/{n} transcripts complete, {finished_tasks}/{n} with one `finished`",
        if lost == 0 && extra == 0 {
            "(ok)"
        } else {
            "(MUST BE 0)"
        }
    );
    println!(
        "  SSE client: {} agent task.output events of {recorded} rows (lost {sse_lost}{}); delivery lag p50 {} ms, p99 {} ms, max {} ms",
        sse_report.agent_events,
        sse_report
            .error
            .as_deref()
            .map(|e| format!(", {e}"))
            .unwrap_or_default(),
        lag_at(50.0),
        lag_at(99.0),
        lag_at(100.0)
    );
    println!(
        "  streaming window {stream_s:.1} s (all {n} streaming for {:.1} s): {throughput:.0} events/s recorded (target {} = {n} × {})",
        ((all_to - all_from) / 1000.0).max(0.0),
        n as u64 * args.rate,
        args.rate
    );
    println!("    recorded per second: {per_second:?}");
    println!(
        "  server CPU (this process) over the window: {server_cpu_core:.1} % of one core ({server_sys_core:.1} % in the kernel) = {:.1} % of the {cores} cores; {cpu_per_event_ms:.3} ms CPU and {switches_per_event:.1} thread context switches per recorded event",
        server_cpu_core / cores
    );
    println!(
        "  fake agents' CPU: {agents_cpu_s:.2} s in all = {agents_cpu_core:.1} % of one core over the window; children (agents + git) {child_cpu_s:.2} s in the window, {total_child_s:.2} s in all"
    );
    println!(
        "  server RSS: {:.1} MiB before the tasks, {:.1} MiB median while all {n} agents are alive ({all_live_n} samples, max {:.1}), peak {:.1} MiB → {:.0} KiB per running task",
        mib(baseline_rss as f64),
        mib(rss_all_median as f64),
        mib(rss_all_max as f64),
        mib(rss_peak as f64),
        per_task_kib
    );
    if let Some(note) = rss_note {
        println!("   {note}");
    }
    println!(
        "  fake agent RSS: median {:.1} MiB, max {:.1} MiB (peak per process, {} processes)",
        mib(agent_rss_median_kib),
        mib(agent_rss_max_kib),
        agent_rss.len()
    );
    if let Some(c) = &claude {
        println!("  real claude CLI, idle in stream-json mode: {c}");
    }
    if let Some(Value::Array(rows)) = &ceiling {
        println!("  store write ceiling without agents ({n} concurrent writers):");
        for r in rows {
            println!(
                "    {}: {:.0} events/s, server CPU {:.0} % of one core, per call {}",
                r["variant"].as_str().unwrap_or_default(),
                r["events_per_s"].as_f64().unwrap_or_default(),
                r["cpu_pct_core"].as_f64().unwrap_or_default(),
                r["call_line"].as_str().unwrap_or_default()
            );
        }
    }
    println!("  GET /api/tasks while streaming: {}", tasks_lat.line());
    println!("  GET /api/inbox while streaming: {}", inbox_lat.line());
    println!(
        "    idle before the tasks: tasks {}; inbox {}; errors {probe_errors}",
        tasks_idle.line(),
        inbox_idle.line()
    );
    let p99_ok = tasks_lat.p99 < 50.0 && inbox_lat.p99 < 50.0;
    println!(
        "  targets: lost 0 {}; p99 < 50 ms {}; {} events/s {}",
        if lost == 0 && sse_lost == 0 {
            "met"
        } else {
            "MISSED"
        },
        if p99_ok { "met" } else { "MISSED" },
        n as u64 * args.rate,
        if throughput >= 0.95 * (n as u64 * args.rate) as f64 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "{}",
        json!({
            "bench": "agents",
            "agents": n,
            "rate_per_agent": args.rate,
            "seconds": args.seconds,
            "events_per_agent": events,
            "run": {
                "timed_out": timed_out,
                "states": states,
                "failed": errors.len(),
                "create_ms": round3(create_ms),
                "settled_s": round3(settled_ms / 1000.0),
                "max_implementing": max_implementing,
                "max_live_agents": max_live,
                "run_s": round3(run_ms / 1000.0),
            },
            "events": {
                "emitted": emitted_expected,
                "recorded": recorded,
                "lost": lost,
                "repeated_or_wrong": extra,
                "gaps": tr.gaps,
                "backlog_at_deadline": backlog,
                "complete_transcripts": complete_tasks,
                "transcript_rows_total": tr.rows,
                "stream_window_s": round3(stream_s),
                "all_streaming_s": round3(((all_to - all_from) / 1000.0).max(0.0)),
                "per_s": round3(throughput),
                "target_per_s": n as u64 * args.rate,
                "recorded_per_second": per_second,
            },
            "sse": {
                "agent_events": sse_report.agent_events,
                "task_outputs": sse_report.outputs,
                "lost": sse_lost,
                "error": sse_report.error,
                "lag_p50_ms": lag_at(50.0),
                "lag_p99_ms": lag_at(99.0),
                "lag_max_ms": lag_at(100.0),
            },
            "cpu": {
                "server_pct_core": round3(server_cpu_core),
                "server_pct_machine": round3(server_cpu_core / cores),
                "server_sys_pct_core": round3(server_sys_core),
                "server_ms_per_event": round3(cpu_per_event_ms),
                "server_context_switches_per_s": round3(switches_per_s),
                "server_context_switches_per_event": round3(switches_per_event),
                "cores": cores,
                "agents_s": round3(agents_cpu_s),
                "agents_pct_core": round3(agents_cpu_core),
                "children_s_window": round3(child_cpu_s),
                "children_s_total": round3(total_child_s),
            },
            "rss": {
                "server_before_mib": round3(mib(baseline_rss as f64)),
                "server_all_live_median_mib": round3(mib(rss_all_median as f64)),
                "server_all_live_max_mib": round3(mib(rss_all_max as f64)),
                "server_all_live_samples": all_live_n,
                "server_peak_mib": round3(mib(rss_peak as f64)),
                "server_hwm_mib": round3(mib(server_hwm as f64)),
                "server_per_task_kib": round3(per_task_kib),
                "fake_agent_median_mib": round3(mib(agent_rss_median_kib)),
                "fake_agent_max_mib": round3(mib(agent_rss_max_kib)),
                "claude_idle": claude,
            },
            "write_ceiling": ceiling,
            "latency": {
                "tasks_ms": tasks_lat.json(),
                "inbox_ms": inbox_lat.json(),
                "tasks_idle_ms": tasks_idle.json(),
                "inbox_idle_ms": inbox_idle.json(),
                "tasks_response_bytes": tasks_bytes,
                "errors": probe_errors,
            },
        })
    );
    drop(work);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_of_the_fake_agents_lines() {
        assert_eq!(
            step_of(0, &json!({"text": "Working on step 12."})),
            Some(12)
        );
        assert_eq!(
            step_of(
                1,
                &json!({"id": "toolu_fake_agent_4", "summary": "Bash: echo step 13"})
            ),
            Some(13)
        );
        assert_eq!(
            step_of(
                2,
                &json!({"tool_use_id": "toolu_fake_agent_4", "summary": "step 13"})
            ),
            Some(14)
        );
        assert_eq!(step_of(0, &json!({"text": "no number"})), None);
    }

    #[test]
    fn parses_proc_stat() {
        let s = proc_stat(Path::new("/proc/self/stat")).unwrap();
        assert!(s.rss_pages > 0);
        assert!(matches!(s.state, 'R' | 'S'));
    }
}

//! The run itself: the worker runtime with the fake agent on the in-process server,
//! `--agents` tasks created at once, the sampler, the API prober and the SSE client
//! around them, until every task is in review or the deadline; then the transcripts.

use super::clients::{Probe, SseReport, count_sse, probe};
use super::config::Args;
use super::procfs::{status_kib, wall_ms};
use super::sampler::{Sampled, sample};
use super::transcripts::{Transcripts, read_transcripts};
use crate::harness::{Server, client};
use crate::sse;
use anyhow::Result;
use mainloop_agent::ClaudeCode;
use mainloop_domain::TaskId;
use mainloop_domain::records::Task;
use mainloop_domain::task::TaskState;
use mainloop_engine::{CreateTask, EngineConfig, RunAgent};
use mainloop_git::Git;
use mainloop_test_support::GitRepo;
use mainloop_worker::{Runtime, WorkerConfig};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What one run measured, before any figure is worked out.
#[derive(Debug)]
pub(super) struct Measured {
    /// Wall clock (ms) at the epoch every `*_ms`/`at_ms` below counts from.
    pub epoch_wall: i64,
    /// When the tasks were created, ms since the epoch.
    pub create_at: f64,
    /// How long creating the tasks took.
    pub create_ms: f64,
    /// From creating the tasks until all settled or the deadline.
    pub settled_ms: f64,
    pub timed_out: bool,
    /// The tasks' states at the end, by name.
    pub states: BTreeMap<String, usize>,
    pub max_implementing: usize,
    /// The failed tasks' errors.
    pub errors: Vec<String>,
    pub transcripts: Transcripts,
    pub sse: SseReport,
    pub probes: Vec<Probe>,
    pub sampled: Sampled,
    /// This process's `VmRSS` (KiB) after the idle second, before the tasks.
    pub baseline_rss: u64,
    /// This process's `VmHWM` (KiB) at the end.
    pub server_hwm: u64,
    pub run_ms: f64,
}

impl Measured {
    /// A transcript time (wall ms) as ms since the epoch.
    #[allow(clippy::cast_precision_loss)]
    pub fn since_epoch(&self, wall: i64) -> f64 {
        (wall - self.epoch_wall) as f64
    }
}

/// The runtime's settings for `max_agents` agents, its directories under `work` (the
/// runner benches use them too).
pub(crate) fn runtime_config(max_agents: usize, work: &Path) -> Result<WorkerConfig> {
    let home = work.join("home");
    std::fs::create_dir_all(&home)?;
    Ok(WorkerConfig {
        max_agents,
        labels: std::collections::BTreeSet::new(),
        runner_grace: std::time::Duration::from_secs(60),
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
        pid_dir: work.join("agents"),
        forge: None,
        port_range: mainloop_worker::DEFAULT_PORT_RANGE,
        task_databases: None,
        retention: mainloop_engine::Retention::default(),
        launcher: None,
    })
}

/// The fake agent writing `events` lines at `args.rate` a second.
fn fake_agent_command(args: &Args, fake: &Path, events: u64) -> Vec<String> {
    vec![
        fake.display().to_string(),
        "--events".into(),
        events.to_string(),
        "--rate".into(),
        args.rate.to_string(),
    ]
}

/// Runs `args.agents` fake agents (`fake`) of `events` lines each to the end, or to
/// the deadline, and stops the server.
#[allow(clippy::too_many_lines)]
pub(super) async fn measure(args: &Args, fake: &Path, events: u64) -> Result<Measured> {
    let n = args.agents;
    // A repo with one commit, and the runtime's directories.
    let repo = GitRepo::try_with_readme("bench\n")?;
    let work = tempfile::Builder::new()
        .prefix("mainloop-bench-agents-")
        .tempdir()?;
    let config = runtime_config(args.agents, work.path())?;
    let pid_dir = config.pid_dir.clone();
    let agent = Arc::new(ClaudeCode::new(fake_agent_command(args, fake, events)));
    let git_dirs = Git::new(work.path().join("repos"), work.path().join("worktrees"));
    let (server, runtime) = Server::start_with_runtime(EngineConfig::default(), |engine| {
        Runtime::new(engine, agent, git_dirs, config)
    })
    .await?;
    // Its own token (under the server's), to stop the agents on timeout.
    let runtime_stop = server.shutdown_token().child_token();
    let scheduler = runtime.spawn(runtime_stop.clone());
    let (engine, user) = (server.engine().clone(), server.user());

    let epoch = Instant::now();
    let epoch_wall = wall_ms();
    let http = client()?;
    let after = engine.latest_event_id().await?.0;
    let reader = sse::connect(&http, &server.base, server.token(), Some(after)).await?;
    let (expected_tx, expected_rx) = watch::channel(None::<u64>);
    let sse_task = tokio::spawn(count_sse(reader, expected_rx));
    let stop_sampler = CancellationToken::new();
    let sampler = tokio::spawn(sample(pid_dir, n, epoch, stop_sampler.clone()));
    let stop_probe = CancellationToken::new();
    let prober = tokio::spawn(probe(
        http.clone(),
        server.base.clone(),
        server.token().to_owned(),
        Duration::from_millis(args.probe_ms.max(1)),
        epoch,
        stop_probe.clone(),
    ));
    // One idle second: the baseline RSS and idle API latency.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_rss = status_kib("self", "VmRSS").unwrap_or_default();
    let create_at = epoch.elapsed().as_secs_f64() * 1000.0;

    let repo_s = repo.path().display().to_string();
    let mut ids = Vec::with_capacity(n);
    let creating = Instant::now();
    for i in 0..n {
        let task = engine
            .create_task(
                user,
                &CreateTask {
                    description: format!("bench task {i}"),
                    repo: repo_s.clone(),
                    skip_plan: true,
                    model: None,
                    agent: None,
                    budget_usd: None,
                },
            )
            .await?;
        ids.push(task.id);
    }
    let create_ms = creating.elapsed().as_secs_f64() * 1000.0;

    // Wait for every task to reach review (or to fail), up to the timeout.
    let deadline = creating + Duration::from_secs(args.timeout);
    let mut progress = Progress::default();
    let timed_out = loop {
        let tasks: Vec<Task> = engine.tasks(user, &[], 1000).await?;
        if progress.update(&tasks, &ids) >= n {
            break false;
        }
        if Instant::now() >= deadline {
            break true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let settled_ms = creating.elapsed().as_secs_f64() * 1000.0;
    stop_probe.cancel();
    let probes = prober.await.unwrap_or_default();
    if timed_out {
        // Stop the agents (the runtime kills them) so that the transcripts stop changing
        // while they are counted.
        runtime_stop.cancel();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && engine.count_unfinished::<RunAgent>().await.unwrap_or(0) > 0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let errors: Vec<String> = engine
        .tasks(user, &[TaskState::Failed], 1000)
        .await?
        .into_iter()
        .filter_map(|t| t.error)
        .collect();

    // Lost events: the transcripts against what the fake agents wrote.
    let transcripts = read_transcripts(&engine, user, &ids).await?;

    // SSE: wait (≤ 10 s) for the client to see every recorded row.
    expected_tx.send_replace(Some(transcripts.tally(events).recorded));
    let sse = match tokio::time::timeout(Duration::from_secs(10), sse_task).await {
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
    drop(work);
    Ok(Measured {
        epoch_wall,
        create_at,
        create_ms,
        settled_ms,
        timed_out,
        states: progress.states,
        max_implementing: progress.max_implementing,
        errors,
        transcripts,
        sse,
        probes,
        sampled,
        baseline_rss,
        server_hwm,
        run_ms,
    })
}

/// The tasks' states while they run.
#[derive(Debug, Default)]
struct Progress {
    states: BTreeMap<String, usize>,
    max_implementing: usize,
}

impl Progress {
    /// Counts the states of the tasks `ids` among `tasks`; returns how many have settled
    /// (in review, failed, cancelled or merged).
    fn update(&mut self, tasks: &[Task], ids: &[TaskId]) -> usize {
        self.states = BTreeMap::new();
        for t in tasks.iter().filter(|t| ids.contains(&t.id)) {
            *self.states.entry(t.state.to_string()).or_default() += 1;
        }
        let implementing = tasks
            .iter()
            .filter(|t| t.state == TaskState::Implementing)
            .count();
        self.max_implementing = self.max_implementing.max(implementing);
        tasks
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
            .count()
    }
}

//! `mainloop-chaos`: the crash harness. Each run sets up a world (the fake model and a
//! fake GitHub in-process, a local repository, a data directory), starts the real
//! `mainloop serve` with workers on the real `claude` CLI and, for a seeded share of the
//! tasks, the real `codex app-server`, drives several tasks from chat message or API
//! call to merge, SIGKILLs the server at seeded random moments (and right after GitHub
//! carries out a write), restarts it on the same data, and at the end checks that
//! nothing was lost or done twice. Some runs place the local tasks on `mainloop runner`
//! processes, which are SIGKILLed and restarted too.

mod agents;
mod api;
mod check;
mod check_github;
mod check_runners;
mod driver;
mod gh;
mod procs;
mod proxy;
mod rng;
mod run;
mod runners;
mod script;
mod server;
mod sse;
mod world;

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    about = "Kills mainloop at random moments across whole task lifecycles and checks nothing was lost or done twice"
)]
struct Cli {
    /// Seed for every random choice (default: from the clock; printed at start).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of runs (default: as many as fit in --budget-secs, else 3).
    #[arg(long)]
    runs: Option<u32>,
    /// Start no new run after this many seconds.
    #[arg(long)]
    budget_secs: Option<u64>,
    /// Index of the first run (to replay one run of a seed: --start-run N --runs 1).
    #[arg(long, default_value_t = 0)]
    start_run: u32,
    /// Keep every run's directory (failed runs are always kept).
    #[arg(long)]
    keep: bool,
    /// The `mainloop` binary (default: next to this one).
    #[arg(long)]
    mainloop: Option<PathBuf>,
    /// The `claude` CLI workers run (default: node_modules/.bin/claude of the workspace).
    #[arg(long)]
    claude: Option<PathBuf>,
    /// The `codex` CLI Codex tasks run (default: node_modules/.bin/codex of the workspace).
    #[arg(long)]
    codex: Option<PathBuf>,
    /// The share (percent, rounded to whole tasks) of each run's tasks that run on Codex
    /// rather than Claude Code; 0 runs Claude only and needs no `codex`.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=100))]
    codex_percent: u64,
    /// Where run directories are made (default: the workspace's target/chaos-runs; not
    /// under the temporary directory, where Codex refuses to sandbox its commands).
    #[arg(long)]
    runs_dir: Option<PathBuf>,
    /// Tasks per run, about half of them on GitHub.
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    /// SIGKILLs of the server per run at most.
    #[arg(long, default_value_t = 10)]
    kills: u32,
    /// Runners in every run (each `mainloop runner` with 1 or 2 slots and label
    /// `chaos`, which the run's local tasks then require); default: 2 in every third
    /// run (which ones, by the seed), none in the others.
    #[arg(long)]
    runners: Option<u32>,
    /// SIGKILLs of a runner per run at most (in runs with runners).
    #[arg(long, default_value_t = 6)]
    runner_kills: u32,
    /// Chance (percent) that a write GitHub carried out is followed at once by a kill.
    #[arg(long, default_value_t = 20)]
    proxy_kill_percent: u64,
    /// Plain chat messages per run, besides the ones that spawn tasks.
    #[arg(long, default_value_t = 3)]
    chatter: usize,
    /// A run whose tasks are not all merged after this many seconds fails.
    #[arg(long, default_value_t = 150)]
    run_limit_secs: u64,
    /// The server's log filter (`MAINLOOP_LOG__FILTER`); a failed run prints what it logged about its tasks.
    #[arg(long, default_value = "info,rmcp=warn")]
    log_filter: String,
    /// Plant a fault to show the checks catch it (the run must then fail).
    #[arg(long, value_enum)]
    plant: Option<run::Plant>,
}

fn default_mainloop() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe.parent().context("this executable's directory")?;
    Ok(dir.join("mainloop"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn default_claude() -> PathBuf {
    workspace().join("node_modules/.bin/claude")
}

fn default_codex() -> PathBuf {
    workspace().join("node_modules/.bin/codex")
}

#[allow(clippy::print_stdout)]
fn say(line: &str) {
    println!("{line}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("chaos: could not start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            say(&format!("chaos: error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The flags besides the seed and the runs that shape a run, as given.
fn options(cli: &Cli) -> String {
    let defaults = Cli::parse_from(["mainloop-chaos"]);
    let mut out = String::new();
    for (name, value, default) in [
        ("--tasks", cli.tasks.to_string(), defaults.tasks.to_string()),
        ("--kills", cli.kills.to_string(), defaults.kills.to_string()),
        (
            "--runner-kills",
            cli.runner_kills.to_string(),
            defaults.runner_kills.to_string(),
        ),
        (
            "--proxy-kill-percent",
            cli.proxy_kill_percent.to_string(),
            defaults.proxy_kill_percent.to_string(),
        ),
        (
            "--chatter",
            cli.chatter.to_string(),
            defaults.chatter.to_string(),
        ),
        (
            "--codex-percent",
            cli.codex_percent.to_string(),
            defaults.codex_percent.to_string(),
        ),
        (
            "--run-limit-secs",
            cli.run_limit_secs.to_string(),
            defaults.run_limit_secs.to_string(),
        ),
    ] {
        if value != default {
            out.push_str(&format!(" {name} {value}"));
        }
    }
    if let Some(n) = cli.runners {
        out.push_str(&format!(" --runners {n}"));
    }
    if let Some(plant) = cli.plant
        && let Some(v) = clap::ValueEnum::to_possible_value(&plant)
    {
        out.push_str(&format!(" --plant {}", v.get_name()));
    }
    for (name, path) in [
        ("--mainloop", &cli.mainloop),
        ("--claude", &cli.claude),
        ("--codex", &cli.codex),
        ("--runs-dir", &cli.runs_dir),
    ] {
        if let Some(p) = path {
            out.push_str(&format!(" {name} {}", p.display()));
        }
    }
    out
}

/// The seed of run `index`, derived from the master seed.
fn run_seed(seed: u64, index: u32) -> u64 {
    rng::Rng::new(seed ^ u64::from(index).wrapping_mul(0xA076_1D64_78BD_642F)).next_u64()
}

async fn main_async(cli: Cli) -> Result<bool> {
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            % 1_000_000
    });
    let mainloop = match &cli.mainloop {
        Some(p) => p.clone(),
        None => default_mainloop()?,
    };
    if !mainloop.exists() {
        bail!(
            "{} is missing: build it first (cargo build --bins) or pass --mainloop",
            mainloop.display()
        );
    }
    let claude = cli.claude.clone().unwrap_or_else(default_claude);
    if !claude.exists() {
        bail!(
            "{} is missing: run `npm ci` or pass --claude",
            claude.display()
        );
    }
    let codex = if cli.codex_percent > 0 {
        let codex = cli.codex.clone().unwrap_or_else(default_codex);
        // Resolved, so that the path names the same file inside an agent's sandbox.
        let resolved = codex.canonicalize().map_err(|e| {
            anyhow::anyhow!(
                "{} is missing ({e}): run `npm ci`, pass --codex, or --codex-percent 0 to run Claude only",
                codex.display()
            )
        })?;
        Some(resolved)
    } else {
        None
    };
    let runs_dir = cli
        .runs_dir
        .clone()
        .unwrap_or_else(|| workspace().join("target/chaos-runs"));
    let runs_dir = std::fs::create_dir_all(&runs_dir)
        .and_then(|()| runs_dir.canonicalize())
        .with_context(|| format!("creating {}", runs_dir.display()))?;
    let runs = cli.runs.unwrap_or(if cli.budget_secs.is_some() {
        u32::MAX
    } else {
        3
    });
    let budget = cli.budget_secs.map(Duration::from_secs);
    let settings = run::Settings {
        mainloop,
        claude,
        codex,
        codex_percent: cli.codex_percent,
        runs_dir,
        tasks: cli.tasks,
        kills: cli.kills,
        proxy_percent: cli.proxy_kill_percent,
        kill_every: (Duration::from_millis(1500), Duration::from_millis(6000)),
        runner_kills: cli.runner_kills,
        runner_kill_every: (Duration::from_millis(2000), Duration::from_millis(7000)),
        // Around the server's 2 s wait for a runner: sometimes back in time to resume
        // there, sometimes too late, and the run moves.
        runner_pause: (Duration::from_millis(300), Duration::from_millis(4000)),
        chatter: cli.chatter,
        time_limit: Duration::from_secs(cli.run_limit_secs),
        log_filter: cli.log_filter.clone(),
        keep: cli.keep,
        plant: cli.plant,
    };
    say(&format!(
        "chaos: seed={seed} ({} tasks, {}% on Codex, up to {} kills per run; {}{})",
        settings.tasks,
        if settings.codex.is_some() {
            settings.codex_percent
        } else {
            0
        },
        settings.kills,
        match cli.runners {
            None => format!(
                "2 runners in every third run, up to {} runner kills",
                settings.runner_kills
            ),
            Some(0) => "no runners".to_owned(),
            Some(n) => format!(
                "{n} runner{} in every run, up to {} runner kills",
                if n == 1 { "" } else { "s" },
                settings.runner_kills
            ),
        },
        budget.map_or_else(String::new, |b| format!(", budget {}s", b.as_secs()))
    ));
    let started = Instant::now();
    let (mut done, mut kills, mut survived, mut tasks, mut checked) = (0_u32, 0, 0, 0, 0);
    let mut codex_tasks = 0;
    let (mut runner_kills, mut runner_tasks) = (0, 0);
    let mut failed: Option<(u32, run::Report)> = None;
    for index in cli.start_run..cli.start_run.saturating_add(runs) {
        // Within the budget, a run starts only if one as long as the average so far fits.
        let average = started.elapsed().checked_div(done).unwrap_or_default();
        if done > 0 && budget.is_some_and(|b| started.elapsed() + average > b) {
            break;
        }
        let runner_count = runners::for_run(cli.runners, seed, index);
        let report = run::run(index, run_seed(seed, index), runner_count, &settings).await?;
        done += 1;
        kills += report.kills;
        survived += report.survived;
        tasks += report.tasks;
        codex_tasks += report.codex_tasks;
        runner_kills += report.runner_kills;
        runner_tasks += report.runner_tasks;
        checked += report.checked;
        let on_runners = if report.runners > 0 {
            format!(
                ", {} on {} runner{}, {} runner kills, {} re-placed",
                report.runner_tasks,
                report.runners,
                if report.runners == 1 { "" } else { "s" },
                report.runner_kills,
                report.replaced
            )
        } else {
            String::new()
        };
        say(&format!(
            "chaos: run {index}: {} tasks ({} on Codex{on_runners}), sandbox {}, {} kills ({} survived), {} GitHub writes, {} invariants checked, {} violated, {:.0}s{}",
            report.tasks,
            report.codex_tasks,
            report.sandbox,
            report.kills,
            report.survived,
            report.github_writes,
            report.checked,
            report.violations.len(),
            report.elapsed.as_secs_f64(),
            report
                .kept
                .as_ref()
                .map_or_else(String::new, |k| format!(" (kept {})", k.display()))
        ));
        if !report.violations.is_empty() {
            failed = Some((index, report));
            break;
        }
    }
    let status = if failed.is_some() { "FAILED" } else { "ok" };
    say(&format!(
        "chaos: seed={seed} runs={done} kills={kills} survived={survived} runner_kills={runner_kills} tasks={tasks} codex_tasks={codex_tasks} runner_tasks={runner_tasks} invariants_checked={checked} wall={:.0}s {status}",
        started.elapsed().as_secs_f64()
    ));
    let Some((index, report)) = failed else {
        return Ok(true);
    };
    if let Some(dir) = &report.kept {
        say(&format!(
            "chaos: the run's directory (server.log, data/mainloop.db, repositories) is kept at {}",
            dir.display()
        ));
        // Where the directory is gone with the machine (CI), its log is the evidence.
        for line in log_tail(&dir.join("server.log"), &report.violations) {
            say(&format!("chaos: log: {line}"));
        }
    }
    // Last, so that a log which keeps only its tail (CI) still says what broke.
    for v in &report.violations {
        say(&format!("chaos: violated: {v}"));
    }
    say(&format!(
        "chaos: reproduce with: cargo build --bins --locked && cargo run --locked -q -p mainloop-chaos -- --seed {seed} --start-run {index} --runs 1{}",
        options(&cli)
    ));
    say(
        "chaos: (kill moments are seeded, but timing on a busy machine varies; rerun a few times if it does not fail at once)",
    );
    Ok(false)
}

/// The server log's lines about the tasks a failed run names (their warnings, errors and
/// job spans), the last [`LOG_TAIL`] of them, without colour codes.
fn log_tail(path: &std::path::Path, violations: &[String]) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let ids: Vec<&str> = violations
        .iter()
        .flat_map(|v| v.split(|c: char| !(c.is_ascii_hexdigit() || c == '-')))
        .filter(|w| w.len() == 36 && w.matches('-').count() == 4)
        .collect();
    let plain = |l: &str| {
        let mut out = String::with_capacity(l.len());
        let mut chars = l.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for n in chars.by_ref() {
                    if n.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let lines: Vec<String> = text
        .lines()
        .map(plain)
        .filter(|l| {
            l.starts_with("chaos:")
                || ids.iter().any(|id| l.contains(id))
                || l.contains("WARN")
                || l.contains("ERROR")
        })
        .collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].to_vec()
}

/// How many log lines a failed run prints.
const LOG_TAIL: usize = 80;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_runs_log_tail_keeps_its_tasks_lines_without_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        let id = "01a24a39-f7fb-71f1-bb3d-147793383a15";
        std::fs::write(
            &path,
            format!(
                "\u{1b}[2mINFO\u{1b}[0m merged task={id}\nINFO other work\n WARN slow\nchaos: SIGKILL #1\n"
            ),
        )
        .unwrap();
        let lines = log_tail(&path, &[format!("task {id}: ended \"review\"")]);
        assert_eq!(
            lines,
            [
                format!("INFO merged task={id}"),
                " WARN slow".to_owned(),
                "chaos: SIGKILL #1".to_owned()
            ]
        );
    }
}

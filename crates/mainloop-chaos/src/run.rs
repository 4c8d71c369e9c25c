//! One run: a fresh world (data directory, local repository, fake model, fake GitHub
//! behind the killing proxy), the real server and (some runs) runners, the tasks driven
//! concurrently while the killers strike, then a clean shutdown and the invariant checks.

use crate::agents;
use crate::api::Api;
use crate::check::{self, Checker, Db};
use crate::check_github;
use crate::check_runners::{self, Watcher};
use crate::driver::{self, Approve, Outcome, Plan};
use crate::gh::{self, Gh};
use crate::procs;
use crate::proxy;
use crate::rng::Rng;
use crate::runners::{self, Runners};
use crate::script::{self, ChatSpawn};
use crate::server::{self, Spec, Supervisor};
use crate::sse::Follower;
use crate::world::{environment, free_port, local_repo, plans};
use anyhow::{Context, Result, bail};
use mainloop_fake_anthropic::FakeAnthropic;
use mainloop_fake_github::FakeGithub;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mainloop: PathBuf,
    pub claude: PathBuf,
    /// The `codex` CLI, when some tasks run on it.
    pub codex: Option<PathBuf>,
    /// The share of each run's tasks that run on Codex.
    pub codex_percent: u64,
    /// Where each run's directory is made (outside the temporary directory: Codex
    /// refuses to sandbox commands when its home lies under it).
    pub runs_dir: PathBuf,
    pub tasks: usize,
    pub kills: u32,
    /// Chance (percent) that a write GitHub carried out is followed by a kill.
    pub proxy_percent: u64,
    pub kill_every: (Duration, Duration),
    /// Runner kills per run at most, how often, and how long a killed runner stays down.
    pub runner_kills: u32,
    pub runner_kill_every: (Duration, Duration),
    pub runner_pause: (Duration, Duration),
    pub chatter: usize,
    pub time_limit: Duration,
    pub log_filter: String,
    pub keep: bool,
    pub plant: Option<Plant>,
}

/// A deliberate fault, to show the checks catch it (`--plant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Plant {
    /// Post one of mainloop's GitHub comments a second time.
    GithubComment,
    /// Post a chat message twice.
    ChatMessage,
}

/// What a run did and found.
#[derive(Debug)]
pub struct Report {
    pub kills: u32,
    pub survived: u32,
    pub tasks: usize,
    /// Of them, the tasks that ran on Codex.
    pub codex_tasks: usize,
    pub checked: usize,
    pub violations: Vec<String>,
    pub kept: Option<PathBuf>,
    pub elapsed: Duration,
    pub github_writes: u32,
    /// The run's `workers.sandbox` setting (`auto` or `off`).
    pub sandbox: &'static str,
    /// How many runners it had, how often one was killed, how many tasks required
    /// them, and how many placements on one came after a task's first.
    pub runners: u32,
    pub runner_kills: u32,
    pub runner_tasks: usize,
    pub replaced: i64,
}

/// Runs once with `seed`, with `runner_count` runners (none: every task on the server).
pub async fn run(index: u32, seed: u64, runner_count: u32, settings: &Settings) -> Result<Report> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix(&format!("mainloop-chaos-{index}-"))
        .tempdir_in(&settings.runs_dir)
        .context("creating the run's directory")?;
    let world = dir.path().canonicalize()?;
    let mut rng = Rng::new(seed);
    let mut plan_rng = rng.fork(1);
    let killer_rng = rng.fork(2);
    let proxy_rng = rng.fork(3);
    let mut chatter_rng = rng.fork(4);
    let mut fault_rng = rng.fork(5);
    let mut agent_rng = rng.fork(6);
    let mut runner_rng = rng.fork(7);
    let runner_killer_rng = rng.fork(8);
    // Every other run confines agents (where bubblewrap works), so a crash is met both ways:
    // sandboxed agents die with their server, unconfined ones live on and must be reaped.
    let sandbox = if index % 2 == 1 { "auto" } else { "off" };

    let local = world.join("repo");
    local_repo(&local)?;
    std::fs::create_dir_all(world.join("home"))?;
    let github_root = world.join("github");
    let fake_gh = FakeGithub::start(mainloop_fake_github::Config::new(
        &github_root,
        &[(gh::BOT_TOKEN, gh::BOT), (gh::ALICE_TOKEN, gh::ALICE)],
    ))
    .await
    .context("starting the fake GitHub")?;
    fake_gh.create_repo(gh::OWNER, gh::REPO, "main").await?;
    // Pull requests approved close together race on the base branch: GitHub answers a
    // merge that lost with 409, which must be tried again, never fail the task.
    fake_gh.race_next_merges(fault_rng.below(3));
    let bare_parent = fake_gh
        .repo_path(gh::OWNER, gh::REPO)
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("the fake GitHub's repository root")?;

    let codex = match &settings.codex {
        Some(_) => agents::codex_tasks(&mut agent_rng, settings.tasks, settings.codex_percent),
        None => Vec::new(),
    };
    // With runners, the local tasks require their label (GitHub's stay on the server).
    let local_labels: Vec<String> = if runner_count > 0 {
        vec![runners::LABEL.to_owned()]
    } else {
        Vec::new()
    };
    let plans = plans(
        &mut plan_rng,
        settings.tasks,
        index,
        &local,
        &codex,
        &local_labels,
    );
    let spawns: Vec<ChatSpawn> = plans.iter().filter_map(|p| p.chat.clone()).collect();
    let fake_model = FakeAnthropic::start(script::script(&spawns)?)
        .await
        .context("starting the fake model")?;

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let (proxy_listener, proxy_base) = proxy::bind().await?;
    let config = match &settings.codex {
        Some(codex) => {
            let path = world.join("mainloop.toml");
            std::fs::write(&path, agents::codex_config(codex, &fake_model.base_url()))?;
            Some(path)
        }
        None => None,
    };
    let spec = Spec {
        bin: settings.mainloop.clone(),
        data: world.join("data"),
        port: free_port()?,
        env: environment(
            &world,
            &settings.log_filter,
            sandbox,
            &fake_model.base_url(),
            &settings.claude,
            &proxy_base,
            &bare_parent,
            config.as_deref(),
        ),
        log: world.join("server.log"),
    };
    let supervisor = Arc::new(Supervisor::new(spec, http.clone(), settings.kills));
    let proxy = proxy::serve(
        proxy_listener,
        fake_gh.base_url(),
        Arc::clone(&supervisor),
        proxy_rng,
        settings.proxy_percent,
    );
    supervisor.start().await?;
    let token = std::fs::read_to_string(world.join("data").join("owner.token"))
        .context("reading the owner's token")?
        .trim()
        .to_owned();
    let api = Api::new(http.clone(), supervisor.spec().base(), token.clone());
    let github = Gh::new(http.clone(), fake_gh.base_url());
    let follower = Follower::start(http.clone(), supervisor.spec().base(), token);
    let runners = if runner_count > 0 {
        let mut agents = vec![("claude", settings.claude.clone())];
        if let Some(codex) = &settings.codex {
            agents.push(("codex", codex.clone()));
        }
        let setup = runners::Setup {
            bin: settings.mainloop.clone(),
            server: supervisor.spec().base(),
            dir: world.join("runners"),
            agents,
            log: supervisor.spec().log.clone(),
            kill_budget: settings.runner_kills,
            pause: settings.runner_pause,
            since: supervisor.started(),
            sandbox,
        };
        let started = Runners::start(setup, &api, runner_count, &mut runner_rng).await?;
        Some(Arc::new(started))
    } else {
        None
    };
    let watcher = runners
        .as_ref()
        .map(|r| Watcher::start(world.join("data").join("agents"), r.data_dirs()));
    let runner_killer = runners
        .as_ref()
        .map(|r| r.killer(runner_killer_rng, settings.runner_kill_every));

    // The killer: SIGKILL at seeded random moments until the budget is spent or the
    // tasks are done.
    let killer = {
        let supervisor = Arc::clone(&supervisor);
        let (lo, hi) = settings.kill_every;
        let mut rng = killer_rng;
        tokio::spawn(async move {
            while supervisor.kills_left() > 0 {
                tokio::time::sleep(rng.between(lo, hi)).await;
                supervisor.crash("at a random moment").await;
            }
        })
    };

    // A job that gave up fails the run whatever else happens: stop driving at once
    // rather than wait out the time limit (looked for in the database every second).
    let deadline = driver::Deadline {
        at: started + settings.time_limit,
        gave_up: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let gave_up = {
        let flag = Arc::clone(&deadline.gave_up);
        let db = world.join("data").join("mainloop.db");
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if Db::a_job_gave_up(&db).await {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            }
        })
    };
    let drives: Vec<_> = plans
        .iter()
        .cloned()
        .map(|p| {
            tokio::spawn(driver::drive(
                api.clone(),
                github.clone(),
                p,
                started,
                deadline.clone(),
            ))
        })
        .collect();
    let chatter_texts: Vec<String> = (0..settings.chatter)
        .map(|i| format!("chatter {i} of run {index} ({})", chatter_rng.token()))
        .collect();
    let chatter = {
        let api = api.clone();
        let texts = chatter_texts.clone();
        let mut rng = chatter_rng;
        tokio::spawn(async move {
            for t in texts {
                tokio::time::sleep(rng.between(Duration::from_millis(500), Duration::from_secs(8)))
                    .await;
                driver::post_chat(&api, &t).await?;
            }
            anyhow::Ok(())
        })
    };

    let mut outcomes: Vec<Outcome> = Vec::new();
    for d in drives {
        outcomes.push(d.await.context("a task driver panicked")?);
    }
    let chatter_result = chatter.await.context("the chatter panicked")?;
    gave_up.abort();
    killer.abort();
    if let Some(k) = runner_killer {
        k.abort();
    }
    supervisor.freeze().await;
    if let Some(r) = &runners {
        r.freeze().await;
    }

    let mut c = Checker::default();
    if let Err(e) = chatter_result {
        c.check(false, || format!("chatter: {e:#}"));
    }
    // Let the mirror finish (the issue is closed after the merge) before stopping.
    let gh_tasks: Vec<(String, String, String)> = outcomes
        .iter()
        .filter(|o| o.plan.github)
        .filter_map(|o| {
            let id = o.id.clone()?;
            Some((id, o.plan.description.clone(), String::new()))
        })
        .collect();
    settle_github(&github, &gh_tasks).await;

    if settings.plant == Some(Plant::ChatMessage) {
        let text = chatter_texts.first().cloned().unwrap_or_default();
        let _ = api
            .post("/api/chat", &serde_json::json!({"text": text}))
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut posted: Vec<String> = plans.iter().filter_map(Plan::chat_text).collect();
    posted.extend(chatter_texts);

    supervisor.stop().await;
    if let Some(r) = &runners {
        r.stop().await;
    }
    let sightings = match watcher {
        Some(w) => Some(w.finish().await),
        None => None,
    };
    let seen = follower.finish().await;
    let db = Db::read(&world.join("data").join("mainloop.db")).await?;

    // Branches come from the stored tasks.
    let branch_of = |id: &str| -> String {
        db.tasks
            .iter()
            .find(|t| t["id"] == id)
            .and_then(|t| t["branch"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    if settings.plant == Some(Plant::GithubComment) {
        plant_comment(&github).await?;
    }

    for p in supervisor.problems() {
        c.check(false, || format!("server: {p}"));
    }
    let mut placed = check_runners::Placed::default();
    if let (Some(r), Some(sightings)) = (&runners, &sightings) {
        for p in r.problems() {
            c.check(false, || format!("runner: {p}"));
        }
        let names: Vec<String> = r.data_dirs().into_iter().map(|(n, _)| n).collect();
        placed = check_runners::placed(&mut c, &db, &outcomes, sightings, &names);
    }
    let rounds = check::tasks(&mut c, &db, &outcomes);
    check::events(&mut c, &db, &seen.ids, seen.connections);
    check::chat(&mut c, &db, &posted);
    check::jobs(&mut c, &db);
    let local_tasks: Vec<(String, String)> = outcomes
        .iter()
        .filter(|o| !o.plan.github)
        .filter_map(|o| o.id.clone())
        .map(|id| {
            let b = branch_of(&id);
            (id, b)
        })
        .collect();
    if let Err(e) = check::repo(&mut c, "local repository", &local, &local_tasks) {
        c.check(false, || format!("local repository: {e:#}"));
    }
    let gh_tasks: Vec<check_github::GhTask> = outcomes
        .iter()
        .filter(|o| o.plan.github)
        .filter_map(|o| {
            let id = o.id.clone()?;
            Some(check_github::GhTask {
                branch: branch_of(&id),
                id,
                title: o.plan.description.clone(),
                answers_on_github: o.plan.answer_on_github,
                plan_on_github: o.plan.approve != Approve::App,
            })
        })
        .collect();
    let gh_repo_tasks: Vec<(String, String)> = gh_tasks
        .iter()
        .map(|t| (t.id.clone(), t.branch.clone()))
        .collect();
    if let Err(e) = check::repo(
        &mut c,
        "GitHub repository",
        &fake_gh.repo_path(gh::OWNER, gh::REPO),
        &gh_repo_tasks,
    ) {
        c.check(false, || format!("GitHub repository: {e:#}"));
    }
    if let Err(e) = check_github::github(&mut c, &github, &gh_tasks, &rounds).await {
        c.check(false, || format!("GitHub: {e:#}"));
    }
    // Nothing the run started may outlive the server.
    let left = procs::working_in(&world);
    c.check(left.is_empty(), || {
        format!("processes still running in the run's directory after shutdown: {left:?}")
    });
    for (pid, start, _) in left {
        procs::kill(pid, start);
    }

    // Codex asked nothing the script does not foresee (its rules end in a catch-all).
    let requests = fake_model.message_requests();
    let unforeseen = requests
        .iter()
        .filter(|r| r.rule_name.as_deref() == Some(script::CODEX_UNEXPECTED))
        .count();
    c.check(unforeseen == 0, || {
        format!(
            "Codex sent {unforeseen} model requests no rule of its script foresaw (see model.jsonl)"
        )
    });
    if settings.keep || !c.violations.is_empty() {
        if let Err(e) = dump_github(&github, &world.join("github.json")).await {
            c.check(false, || format!("dumping GitHub's state: {e:#}"));
        }
        if let Err(e) = dump_model(&requests, &world.join("model.jsonl")) {
            c.check(false, || format!("dumping the model's requests: {e:#}"));
        }
    }
    let (github_writes, _) = proxy.counts();
    let report = Report {
        sandbox,
        kills: supervisor.kills.load(std::sync::atomic::Ordering::SeqCst),
        survived: supervisor
            .survived
            .load(std::sync::atomic::Ordering::SeqCst),
        tasks: outcomes.len(),
        codex_tasks: outcomes.iter().filter(|o| o.plan.agent.is_some()).count(),
        checked: c.checked,
        violations: c.violations,
        kept: None,
        elapsed: started.elapsed(),
        github_writes,
        runners: runner_count,
        runner_kills: runners
            .as_ref()
            .map_or(0, |r| r.kills.load(std::sync::atomic::Ordering::SeqCst)),
        runner_tasks: placed.on_runners,
        replaced: placed.replaced,
    };
    drop(fake_model);
    drop(proxy);
    fake_gh.shutdown().await;
    let kept = if settings.keep || !report.violations.is_empty() {
        server::log(supervisor.spec(), "chaos: run finished");
        Some(dir.keep())
    } else {
        None
    };
    Ok(Report { kept, ..report })
}

/// Waits (a while) for every GitHub task's issue to be closed, the mirror's last step.
async fn settle_github(gh: &Gh, tasks: &[(String, String, String)]) {
    let titles: Vec<String> = tasks
        .iter()
        .map(|(_, d, _)| d.lines().next().unwrap_or_default().trim().to_owned())
        .collect();
    for _ in 0..100 {
        let Ok(issues) = gh.issues().await else { break };
        let open = issues.iter().any(|i| {
            i.get("pull_request").is_none()
                && i["state"] == "open"
                && titles.iter().any(|t| i["title"] == t.as_str())
        });
        if !open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And whatever else the last transitions enqueued.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Every issue and pull request with its comments, for reading a failed run.
async fn dump_github(gh: &Gh, path: &Path) -> Result<()> {
    let mut out = Vec::new();
    for mut issue in gh.issues().await? {
        if let Some(n) = issue["number"].as_u64() {
            issue["comments_list"] = serde_json::Value::Array(gh.comments(n).await?);
        }
        out.push(issue);
    }
    std::fs::write(path, serde_json::to_vec_pretty(&out)?)?;
    Ok(())
}

/// Every model request and the rule that answered it, one JSON line each, for reading a
/// failed run.
fn dump_model(requests: &[mainloop_fake_anthropic::LoggedRequest], path: &Path) -> Result<()> {
    let mut out = Vec::new();
    for r in requests {
        serde_json::to_writer(&mut out, r)?;
        out.push(b'\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// Posts one of mainloop's comments again, as mainloop (the `--plant` self-test).
async fn plant_comment(gh: &Gh) -> Result<()> {
    for issue in gh.issues().await? {
        let Some(n) = issue["number"].as_u64() else {
            continue;
        };
        if let Some(c) = gh
            .comments(n)
            .await?
            .into_iter()
            .find(|c| c["user"]["login"] == gh::BOT)
        {
            gh.comment_as_bot(n, c["body"].as_str().unwrap_or_default())
                .await?;
            return Ok(());
        }
    }
    bail!("no mainloop comment to duplicate")
}

//! `github-idle`: what one idle pull request under review costs in GitHub API calls. A
//! task is put in review with a real pull request on the fake GitHub, the worker's own
//! review watch polls it (pull request state, reviews, line comments, conversation) at a
//! short interval, and the fake's counters give the requests per poll and how many were
//! free 304s; per hour assumes the default 60 s poll interval.

use crate::harness::Server;
use anyhow::Result;
use mainloop_agent::ClaudeCode;
use mainloop_domain::task::TaskState;
use mainloop_engine::EngineConfig;
use mainloop_forge::{Forge, NewPullRequest, RepoRef};
use mainloop_git::Git;
use mainloop_store::{NewTask, TaskForge};
use mainloop_test_support::try_git;
use mainloop_worker::{ForgeSettings, Runtime, WorkerConfig};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many polls to measure.
    #[arg(long, default_value_t = 60)]
    pub polls: u64,
    /// Poll interval during the measurement, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            polls: 60,
            interval_ms: 200,
        }
    }
}

pub async fn run(args: &Args) -> Result<()> {
    println!(
        "github-idle: one pull request in review, {} polls",
        args.polls
    );
    let work = tempfile::Builder::new()
        .prefix("mainloop-bench-github-")
        .tempdir()?;
    let fake = mainloop_fake_github::FakeGithub::start(mainloop_fake_github::Config::new(
        work.path().join("github"),
        &[("bot-token", "mainloop-bot")],
    ))
    .await?;
    fake.create_repo("octo", "app", "main").await?;

    // A branch with one commit on the fake's bare repository, and its pull request.
    let clone = work.path().join("clone");
    let bare = fake.repo_path("octo", "app");
    try_git(
        work.path(),
        &["clone", "-q", &bare.display().to_string(), "clone"],
    )?;
    std::fs::write(clone.join("feature.txt"), "feature\n")?;
    try_git(&clone, &["checkout", "-q", "-b", "feature"])?;
    try_git(&clone, &["add", "-A"])?;
    try_git(&clone, &["commit", "-q", "-m", "feature"])?;
    try_git(&clone, &["push", "-q", "origin", "feature"])?;
    let client = mainloop_github::GithubConfig {
        api_url: fake.base_url(),
        ..mainloop_github::GithubConfig::new("bot-token".to_owned().into())
    };
    let forge: Arc<dyn Forge> = Arc::new(mainloop_github::GithubForge::new(&client)?);
    let repo = RepoRef {
        owner: "octo".into(),
        name: "app".into(),
    };
    let pr = forge
        .open_pull_request(
            &repo,
            NewPullRequest {
                head: "feature",
                base: "main",
                title: "feature",
                body: "",
                draft: false,
            },
        )
        .await?;

    let settings = ForgeSettings {
        forge: forge.clone(),
        web_host: "github.com".into(),
        git_url: format!(
            "file://{}/{{owner}}/{{name}}.git",
            work.path().join("github").display()
        ),
        label: "mainloop".into(),
        mention: "mainloop".into(),
        poll_interval: Duration::from_millis(args.interval_ms),
        ci_pending_timeout: Duration::from_secs(3600),
        ci_appear_timeout: Duration::from_secs(120),
        log_tail_bytes: 8 * 1024,
        trusted_users: Vec::new(),
    };
    let home = work.path().join("home");
    let config = WorkerConfig {
        max_agents: 1,
        labels: std::collections::BTreeSet::new(),
        runner_grace: std::time::Duration::from_secs(60),
        idle_timeout: Duration::from_secs(600),
        inactivity_timeout: Duration::from_secs(600),
        api_retries: 0,
        api_retry_delay: Duration::from_secs(1),
        check_timeout: Duration::from_secs(60),
        check_output_bytes: 16 * 1024,
        model: None,
        agent_env: Vec::new(),
        plans_dir: home.join(".claude/plans"),
        sandbox: None,
        pid_dir: work.path().join("agents"),
        forge: Some(settings),
        port_range: mainloop_worker::DEFAULT_PORT_RANGE,
        task_databases: None,
        retention: mainloop_engine::Retention::default(),
        launcher: None,
    };
    let engine_config = EngineConfig {
        forge_host: Some("github.com".into()),
        ..EngineConfig::default()
    };
    let git_dirs = Git::new(work.path().join("repos"), work.path().join("worktrees"));
    let agent = Arc::new(ClaudeCode::new(vec!["false".into()]));
    let (server, runtime) = Server::start_with_runtime(engine_config, |engine| {
        Runtime::new(engine, agent, git_dirs, config)
    })
    .await?;

    // A task already in review on that pull request.
    let store = server.engine().store_for_tests();
    let now = mainloop_engine::now();
    let mut tx = store.begin().await?;
    let project = tx.upsert_project(server.user(), "octo/app", now).await?;
    let (mut task, _) = tx
        .insert_task(
            server.user(),
            project.id,
            &NewTask {
                description: "idle in review".into(),
                repo: "octo/app".into(),
                workplace: mainloop_domain::records::Workplace::Forge,
                skip_plan: true,
                max_check_rounds: 5,
                model: None,
                agent: mainloop_domain::agents::AgentName::default(),
                origin_key: None,
                budget_usd: None,
            },
            now,
        )
        .await?;
    task.core.state = TaskState::Review;
    task.state = TaskState::Review;
    tx.save_task(&task, now).await?;
    tx.put_task_forge(&TaskForge {
        task_id: task.id,
        repo: "octo/app".into(),
        issue_number: None,
        pr_number: i64::try_from(pr.number).ok(),
        data: serde_json::json!({"pr": pr, "ready_marked": true}),
        updated_at: now,
    })
    .await?;
    tx.commit().await?;

    mainloop_worker::wake_forge_watch(&runtime, task.id)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    // Let the first (full) poll pass, then measure the steady state.
    tokio::time::sleep(Duration::from_millis(args.interval_ms * 3)).await;
    fake.reset_stats();
    tokio::time::sleep(Duration::from_millis(args.interval_ms * args.polls)).await;
    let stats = fake.stats();
    let polls = stats
        .by_route
        .iter()
        .filter(|(route, _)| {
            route.starts_with("GET /repos/{o}/{r}/pulls/{n}")
                && !route.contains("/reviews")
                && !route.contains("/comments")
        })
        .map(|(_, n)| *n)
        .sum::<u64>()
        .max(1);
    let per_poll = stats.requests as f64 / polls as f64;
    let paid = stats.requests.saturating_sub(stats.not_modified) as f64 / polls as f64;
    println!("  polls measured:            {polls}");
    println!(
        "  requests per poll:         {per_poll:.2} ({:.0}% answered 304 Not Modified)",
        100.0 * stats.not_modified as f64 / stats.requests.max(1) as f64
    );
    println!(
        "  per hour at 60 s interval: {:.0} requests, {:.1} counted against the rate limit",
        per_poll * 60.0,
        paid * 60.0
    );
    for (route, n) in &stats.by_route {
        println!("    {route}: {n}");
    }
    drop(server);
    Ok(())
}

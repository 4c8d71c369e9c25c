//! What a run's world is made of: the local repository, the tasks' plans (which agent,
//! where they start, how they are answered, whether they require a runner), and the
//! server's environment.

use crate::agents;
use crate::driver::{Approve, Plan};
use crate::gh;
use crate::rng::Rng;
use crate::script::ChatSpawn;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=chaos",
            "-c",
            "user.email=chaos@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("git {args:?}"))?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A local repository whose checks pass once a note exists.
pub fn local_repo(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    git(dir, &["init", "-q", "-b", "main"])?;
    std::fs::write(dir.join("README.md"), "notes, one per task\n")?;
    std::fs::write(dir.join(".mainloop.toml"), "check = \"ls notes\"\n")?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", "init"])
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The tasks of a run: about half on GitHub, started from the chat or the API, answered
/// and approved every possible way, on Claude or on Codex (`codex`, drawn apart so that
/// the rest of a seed's choices do not depend on it). The local ones require
/// `local_labels` (a runner's; GitHub tasks always stay on the server), which draws
/// nothing, so a seed's tasks are the same with runners or without.
pub fn plans(
    rng: &mut Rng,
    n: usize,
    run: u32,
    local_repo: &Path,
    codex: &[bool],
    local_labels: &[String],
) -> Vec<Plan> {
    (0..n)
        .map(|i| {
            let agent = codex
                .get(i)
                .copied()
                .unwrap_or(false)
                .then(|| "codex".to_owned());
            let github = i % 2 == 1;
            let runner_labels = if github {
                Vec::new()
            } else {
                local_labels.to_vec()
            };
            let token = rng.token();
            // The description's words become the branch name; the note is checked by it.
            let description = format!("chaos r{run}t{i} {token} write a note");
            let repo = if github {
                if rng.chance(50) {
                    format!("{}/{}", gh::OWNER, gh::REPO)
                } else {
                    format!("https://github.com/{}/{}", gh::OWNER, gh::REPO)
                }
            } else {
                local_repo.display().to_string()
            };
            // The first task always comes from the chat, so every run spawns through it.
            let chat = (i == 0 || rng.chance(50)).then(|| ChatSpawn {
                token: format!("SPAWN-{token}-{i}"),
                description: description.clone(),
                repo: repo.clone(),
                agent: agent.clone(),
                runner_labels: runner_labels.clone(),
            });
            let approve = if github {
                match rng.below(3) {
                    0 => Approve::App,
                    1 => Approve::Comment,
                    _ => Approve::ThumbsUp,
                }
            } else {
                Approve::App
            };
            Plan {
                index: i,
                github,
                description,
                repo,
                chat,
                answer_on_github: github && rng.chance(50),
                approve,
                start_after: rng.between(Duration::ZERO, Duration::from_secs(4)),
                agent,
                runner_labels,
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)] // one call, every argument a different kind of thing
pub fn environment(
    world: &Path,
    log_filter: &str,
    sandbox: &str,
    model: &str,
    claude: &Path,
    github_api: &str,
    github_root: &Path,
    config: Option<&Path>,
) -> Vec<(String, String)> {
    let home = world.join("home");
    let mut env: Vec<(String, String)> = [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", home.display().to_string()),
        (
            "MAINLOOP_DATA_DIR",
            world.join("data").display().to_string(),
        ),
        ("MAINLOOP_LOG__FILTER", log_filter.to_owned()),
        ("MAINLOOP_DISPATCHER__BACKOFF_BASE_MS", "50".to_owned()),
        ("MAINLOOP_DISPATCHER__BACKOFF_MAX_MS", "500".to_owned()),
        ("ANTHROPIC_BASE_URL", model.to_owned()),
        ("ANTHROPIC_API_KEY", "sk-chaos".to_owned()),
        (
            "MAINLOOP_WORKERS__CLAUDE_COMMAND",
            claude.display().to_string(),
        ),
        ("MAINLOOP_WORKERS__ALLOW_FILE_URLS", "true".to_owned()),
        ("MAINLOOP_WORKERS__SANDBOX", sandbox.to_owned()),
        // A run whose runner was killed waits this long for it before it moves: short,
        // so that both happen within a run (the pause before a restart is drawn around it).
        ("MAINLOOP_WORKERS__RUNNER_RECONNECT_SECS", "2".to_owned()),
        ("GITHUB_TOKEN", gh::BOT_TOKEN.to_owned()),
        ("GITHUB_API_URL", github_api.to_owned()),
        (
            "MAINLOOP_GITHUB__GIT_URL",
            format!("file://{}/{{owner}}/{{name}}.git", github_root.display()),
        ),
        ("MAINLOOP_GITHUB__POLL_INTERVAL_SECS", "1".to_owned()),
        // The harness reports CI as soon as it sees the push; "no CI" only if it is slow.
        ("MAINLOOP_GITHUB__CI_APPEAR_TIMEOUT_SECS", "60".to_owned()),
        ("MAINLOOP_GITHUB__TRUSTED_USERS", gh::ALICE.to_owned()),
        ("DISABLE_TELEMETRY", "1".to_owned()),
        ("DISABLE_AUTOUPDATER", "1".to_owned()),
        ("DISABLE_ERROR_REPORTING", "1".to_owned()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(config) = config {
        env.push(("MAINLOOP_CONFIG".to_owned(), config.display().to_string()));
        env.push((
            agents::CODEX_KEY_VAR.to_owned(),
            "sk-chaos-codex".to_owned(),
        ));
    }
    env.sort();
    env
}

//! `mainloop runner`: a process on another machine that connects out to a mainloop
//! server over one WebSocket with a runner token, introduces itself (`hello`: protocol,
//! version, slots, labels, agents), then heartbeats; it reconnects with backoff when the
//! connection is lost and stops when its token is revoked or refused (`docs/RUNNERS.md`).
//! While connected it runs the processes the server asks for (`exec.rs`) and prepares
//! and saves the tasks' workspaces over git (`workspace.rs`) with the agents' sessions
//! (`agent_state.rs`), in its own data directory, which it locks; at start it kills
//! what a killed run of it left. It works around Gemini CLI's quirks in the task's home
//! before starting it (`gemini.rs`): the server cannot see that home.
//! Exit codes: 0 stopped by SIGINT/SIGTERM (or done: `--once`, `--idle-exit`), 2 a mistake in how it was started or a
//! refusal that reconnecting cannot cure, 3 the token is refused or revoked.

mod agent_places;
mod agent_state;
mod exec;
mod gemini;
mod policy;
mod session;
mod setup;
mod workspace;

pub use exec::RunnerSandbox;
pub use setup::{RunnerArgs, TOKEN_VAR};

use mainloop_config::Config;
use policy::{Decision, Outcome};
use session::Target;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The lock file in the runner's data directory: one runner per directory, or each
/// would take the other's processes for leftovers.
const LOCK_FILE: &str = "runner.lock";

#[allow(clippy::print_stderr)]
fn say(line: &str) {
    eprintln!("mainloop runner: {line}");
}

/// Runs the runner until it stops; returns the process's exit code, having said why.
pub async fn run(args: RunnerArgs, config: &Config) -> u8 {
    let (target, exec, work, _lock) = match prepare(&args, config) {
        Ok(t) => t,
        Err(reason) => {
            say(&reason);
            return 2;
        }
    };
    let left = exec::reap_leftovers(&exec.data_dir);
    if left > 0 {
        say(&format!(
            "stopped {left} process(es) a previous run of this runner left running"
        ));
    }
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    if args.once || args.idle_exit.is_some() {
        let idle = args.idle_exit.map(std::time::Duration::from_secs);
        tokio::spawn(exit_when_done(
            work.activity(),
            args.once,
            idle,
            stop.clone(),
        ));
    }
    let mut failures: u32 = 0;
    let mut ever_welcomed = false;
    loop {
        let mut welcomed = false;
        let outcome = session::connect(&target, &exec, &work, &stop, |w| {
            welcomed = true;
            let again = if ever_welcomed { "re" } else { "" };
            say(&format!(
                "{again}connected to {} as {} (runner {}); heartbeat every {}s",
                args.server.trim(),
                w.name,
                w.runner_id,
                w.heartbeat_secs
            ));
        })
        .await;
        ever_welcomed |= welcomed;
        let after = match policy::decide(&outcome, failures, policy::jitter()) {
            Decision::Exit { code, message } => {
                if let Some(message) = message {
                    say(&message);
                }
                return code;
            }
            Decision::Reconnect { after, failures: n } => {
                failures = n;
                after
            }
        };
        say(&format!(
            "{}; trying again in {}",
            why(&outcome, &args.server),
            policy::seconds(after)
        ));
        tokio::select! {
            () = stop.cancelled() => return 0,
            () = tokio::time::sleep(after) => {}
        }
    }
}

/// What a runner needs to start connecting: the target, what runs processes, what keeps
/// workspaces, and the data directory's lock (held while it runs).
type Ready = (
    Target,
    Arc<exec::Config>,
    Arc<workspace::Workspaces>,
    std::fs::File,
);

/// What the runner needs to start, or why it cannot.
fn prepare(args: &RunnerArgs, config: &Config) -> Result<Ready, String> {
    let url = setup::connect_url(&args.server)?;
    let git_base = setup::http_base(&args.server)?;
    let known = setup::known_agents(config);
    let offer = setup::offer(args, &known, setup::on_path)?;
    let path = std::env::var("PATH").unwrap_or_default();
    let data_dir = setup::data_dir(
        args.data_dir.as_deref(),
        std::env::var("XDG_DATA_HOME").ok(),
        std::env::var("HOME").ok(),
    )?;
    let lock = lock(&data_dir)?;
    let token = setup::token(
        args.token_file.as_deref(),
        std::env::var(setup::TOKEN_VAR).ok(),
    )?;
    let work = Arc::new(workspace::Workspaces::new(&data_dir, git_base, &token)?);
    let agents = setup::agent_programs(&offer, &known, Some(&path));
    let programs: Vec<&str> = agents.values().map(String::as_str).collect();
    let sandbox = crate::sandbox::runner_sandbox(
        &args.sandbox,
        &data_dir,
        args.token_file.as_deref(),
        &path,
        &programs,
    )?;
    let exec = Arc::new(exec::Config {
        agents,
        data_dir,
        path,
        slots: offer.slots,
        sandbox,
    });
    if let Some(path) = &args.token_file {
        warn_if_readable_by_others(path);
    }
    if url.starts_with("wss://") {
        // Both of rustls's providers are in the build; name the one to use.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let hello = setup::hello(offer)?;
    Ok((Target { url, token, hello }, exec, work, lock))
}

/// Creates the data directory and holds its lock for as long as the runner runs.
fn lock(dir: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::File::create(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another runner uses {}; give each runner its own --data-dir",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        say(&format!(
            "warning: {} can be read by other users; `chmod 600` it",
            path.display()
        ));
    }
}

/// The log line for a connection that ended and will be tried again.
fn why(outcome: &Outcome, server: &str) -> String {
    let server = server.trim();
    match outcome {
        Outcome::Unreachable(e) => format!("cannot reach {server} ({e})"),
        Outcome::Rejected(status) => format!("{server} refused the connection (HTTP {status})"),
        Outcome::Refused { reason, .. } => format!("the server refused this runner: {reason}"),
        Outcome::Lost { why, .. } => format!("lost the connection to {server} ({why})"),
        Outcome::Stopped | Outcome::Unauthorized | Outcome::Revoked => String::new(),
    }
}

/// Cancels `stop` (the runner then exits 0, as on SIGTERM) once its work is done: with
/// `once`, when a release leaves it holding no task; with `idle`, when it has held none
/// for that long.
async fn exit_when_done(
    mut activity: tokio::sync::watch::Receiver<workspace::Activity>,
    once: bool,
    idle: Option<std::time::Duration>,
    stop: CancellationToken,
) {
    loop {
        let now = activity.borrow_and_update().clone();
        if once && now.released > 0 && now.held.is_empty() {
            say("its task was released; exiting (--once)");
            return stop.cancel();
        }
        let idle = idle.filter(|_| now.held.is_empty());
        tokio::select! {
            changed = activity.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = async {
                match idle {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            } => {
                let secs = idle.map_or(0, |d| d.as_secs());
                say(&format!("held no task for {secs} s; exiting (--idle-exit)"));
                return stop.cancel();
            }
        }
    }
}

/// Cancels `stop` at the first SIGINT or SIGTERM.
async fn stop_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    stop.cancel();
}

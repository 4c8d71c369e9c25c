//! `mainloop runner`: a process on another machine that connects out to a mainloop
//! server over one WebSocket with a runner token, introduces itself (`hello`: protocol,
//! version, slots, labels, agents), then heartbeats; it reconnects with backoff when the
//! connection is lost and stops when its token is revoked or refused (`docs/RUNNERS.md`).
//! Exit codes: 0 stopped by SIGINT/SIGTERM, 2 a mistake in how it was started or a
//! refusal that reconnecting cannot cure, 3 the token is refused or revoked.

mod policy;
mod session;
mod setup;

pub use setup::{RunnerArgs, TOKEN_VAR};

use mainloop_config::Config;
use policy::{Decision, Outcome};
use session::Target;
use tokio_util::sync::CancellationToken;

#[allow(clippy::print_stderr)]
fn say(line: &str) {
    eprintln!("mainloop runner: {line}");
}

/// Runs the runner until it stops; returns the process's exit code, having said why.
pub async fn run(args: RunnerArgs, config: &Config) -> u8 {
    let target = match prepare(&args, config) {
        Ok(t) => t,
        Err(reason) => {
            say(&reason);
            return 2;
        }
    };
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let mut failures: u32 = 0;
    let mut ever_welcomed = false;
    loop {
        let mut welcomed = false;
        let outcome = session::connect(&target, &stop, |w| {
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

/// The target, or why the runner cannot start.
fn prepare(args: &RunnerArgs, config: &Config) -> Result<Target, String> {
    let url = setup::connect_url(&args.server)?;
    let offer = setup::offer(args, &setup::known_agents(config), setup::on_path)?;
    let token = setup::token(
        args.token_file.as_deref(),
        std::env::var(setup::TOKEN_VAR).ok(),
    )?;
    if let Some(path) = &args.token_file {
        warn_if_readable_by_others(path);
    }
    if url.starts_with("wss://") {
        // Both of rustls's providers are in the build; name the one to use.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let hello = setup::hello(offer)?;
    Ok(Target { url, token, hello })
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

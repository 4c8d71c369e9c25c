//! What a runner needs before it connects, read from its command line, environment and
//! configuration: the WebSocket URL, the token (from the environment or a file, never
//! an argument that `ps` would show), and the offer (slots, labels, the agents found
//! here). Every mistake is a reason in words; the runner exits 2 with it.

use clap::Args;
use mainloop_config::Config;
use mainloop_domain::agents::{AgentName, find_program};
use mainloop_domain::runner::{
    Hello, Offer, PROTOCOL_VERSION, RunnerMessage, check_offer, parse_runner_message,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The variable a runner's token is read from.
pub const TOKEN_VAR: &str = "MAINLOOP_RUNNER_TOKEN";
/// The server's route runners connect to.
pub const CONNECT_PATH: &str = "/api/runners/connect";

/// `mainloop runner`'s flags.
#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// The server's URL, e.g. https://mainloop.example.com (http becomes ws, https wss).
    #[arg(long, env = "MAINLOOP_SERVER", value_name = "URL")]
    pub server: String,
    /// A file holding the runner token (default: $MAINLOOP_RUNNER_TOKEN). The token is
    /// never a command-line argument, so that `ps` does not show it.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Agent runs at once, 1 to 64.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub slots: u16,
    /// A label tasks can require (repeatable): lowercase letters, digits, '-', '_', '.'.
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// An agent to offer (repeatable; default: every known agent whose program is on
    /// PATH).
    #[arg(long = "agent", value_name = "NAME")]
    pub agents: Vec<String>,
    /// Where the runner keeps the tasks' workspaces and its records (default:
    /// $XDG_DATA_HOME/mainloop-runner, else ~/.local/share/mainloop-runner).
    #[arg(long, env = "MAINLOOP_RUNNER_DATA_DIR", value_name = "PATH")]
    pub data_dir: Option<PathBuf>,
    /// How the agents it runs are confined: auto (bubblewrap when installed and usable
    /// here, else unconfined with a warning), bubblewrap (refuse to start without it)
    /// or off.
    #[arg(long, env = "MAINLOOP_RUNNER_SANDBOX", value_name = "MODE", default_value = "auto",
          value_parser = ["auto", "bubblewrap", "off"])]
    pub sandbox: String,
    /// A one-shot runner (a Kubernetes Job per run, a CI job): exit 0 once the server
    /// releases the task it worked on and it holds no other.
    #[arg(long)]
    pub once: bool,
    /// Exit 0 after this many seconds holding no task (never having had one, or since
    /// the last was released).
    #[arg(long, value_name = "SECS")]
    pub idle_exit: Option<u64>,
}

/// The runner's data directory: the flag's, else under `$XDG_DATA_HOME`, else under
/// `$HOME/.local/share`.
///
/// # Errors
/// None of them is given (or a relative `XDG_DATA_HOME`/`HOME`, which the base
/// directory rules ignore).
pub fn data_dir(
    flag: Option<&Path>,
    xdg_data_home: Option<String>,
    home: Option<String>,
) -> Result<PathBuf, String> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    let absolute = |v: Option<String>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    absolute(xdg_data_home)
        .or_else(|| absolute(home).map(|h| h.join(".local").join("share")))
        .map(|base| base.join("mainloop-runner"))
        .ok_or_else(|| "no data directory: set HOME or pass --data-dir".to_owned())
}

/// The program this runner runs for each agent it offers: the configured program as
/// found on `path` (or as configured, when it is not there: a named agent is trusted).
#[must_use]
pub fn agent_programs(
    offer: &Offer,
    known: &[(String, String)],
    path: Option<&str>,
) -> BTreeMap<AgentName, String> {
    offer
        .agents
        .iter()
        .filter_map(|name| {
            let (_, program) = known.iter().find(|(n, _)| n == name.as_str())?;
            let found = find_program(program, path, is_program)
                .map_or_else(|| program.clone(), |p| p.display().to_string());
            Some((name.clone(), found))
        })
        .collect()
}

/// The runner token: `--token-file`'s content when given, else the variable's value.
///
/// # Errors
/// No token, an unreadable or empty file.
pub fn token(file: Option<&Path>, var: Option<String>) -> Result<String, String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?,
        None => var.unwrap_or_default(),
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        let from = file.map_or_else(
            || format!("${TOKEN_VAR} is not set"),
            |p| format!("the token file {} is empty", p.display()),
        );
        return Err(format!(
            "no runner token: {from}; `mainloop runner-token add NAME` creates one, then \
             pass it in ${TOKEN_VAR} or --token-file"
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the runner token has spaces or control characters in it".to_owned());
    }
    Ok(token)
}

/// The WebSocket URL for `server`: http → ws, https → wss, any path kept (a server behind
/// a path prefix), [`CONNECT_PATH`] appended.
///
/// # Errors
/// A URL of another scheme, with a query or fragment, or without a host.
pub fn connect_url(server: &str) -> Result<String, String> {
    let (secure, rest) = split_server(server)?;
    let scheme = if secure { "wss" } else { "ws" };
    Ok(format!("{scheme}://{rest}{CONNECT_PATH}"))
}

/// The server's base URL for git over HTTP: ws → http, wss → https, any path kept,
/// without a trailing `/` (a task's `git_path` is appended to it).
///
/// # Errors
/// As [`connect_url`].
pub fn http_base(server: &str) -> Result<String, String> {
    let (secure, rest) = split_server(server)?;
    let scheme = if secure { "https" } else { "http" };
    Ok(format!("{scheme}://{rest}"))
}

/// Whether `server` is TLS, and what follows its scheme (host, port, path prefix).
fn split_server(server: &str) -> Result<(bool, &str), String> {
    let server = server.trim().trim_end_matches('/');
    let (scheme, rest) = server
        .split_once("://")
        .ok_or_else(|| format!("--server {server:?} is not a URL (http://… or https://…)"))?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => false,
        "https" | "wss" => true,
        other => {
            return Err(format!(
                "--server must be an http:// or https:// URL, not {other}://"
            ));
        }
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("--server {server:?} has no host"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "--server {server:?} must be the server's base URL, without a query"
        ));
    }
    Ok((secure, rest))
}

/// What the runner offers: its slots and labels, and its agents (those named, each one
/// this configuration knows; or every known agent `on_path` finds).
///
/// # Errors
/// An unknown agent, none found, or a bound the protocol sets (the domain's words).
pub fn offer(
    args: &RunnerArgs,
    known: &[(String, String)],
    on_path: impl Fn(&str) -> bool,
) -> Result<Offer, String> {
    let names: Vec<&str> = known.iter().map(|(name, _)| name.as_str()).collect();
    let agents: BTreeSet<AgentName> = if args.agents.is_empty() {
        let found: BTreeSet<AgentName> = known
            .iter()
            .filter(|(_, program)| on_path(program))
            .filter_map(|(name, _)| AgentName::parse(name).ok())
            .collect();
        if found.is_empty() {
            return Err(format!(
                "no coding agent found on PATH (looked for {}); install one, or name one \
                 with --agent",
                names.join(", ")
            ));
        }
        found
    } else {
        args.agents
            .iter()
            .map(|wanted| {
                if !names.contains(&wanted.as_str()) {
                    return Err(format!(
                        "unknown agent {:?}; known: {}",
                        wanted.chars().take(40).collect::<String>(),
                        names.join(", ")
                    ));
                }
                AgentName::parse(wanted).map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?
    };
    let offer = Offer {
        slots: args.slots,
        labels: args.labels.iter().cloned().collect(),
        agents,
    };
    check_offer(&offer)?;
    Ok(offer)
}

/// The known agents and their programs, from the configuration (the built-ins and any
/// `[agents.<name>]` tables).
#[must_use]
pub fn known_agents(config: &Config) -> Vec<(String, String)> {
    config
        .agents()
        .into_iter()
        .map(|a| (a.name, a.command.into_iter().next().unwrap_or_default()))
        .collect()
}

/// Whether `program` (a bare name looked up on `$PATH`, or a path) is an executable here.
#[must_use]
pub fn on_path(program: &str) -> bool {
    let path = std::env::var("PATH").ok();
    find_program(program, path.as_deref(), is_program).is_some()
}

fn is_program(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `hello` this runner sends, checked as the server will check it.
///
/// # Errors
/// The domain's words for a bound it breaks.
pub fn hello(offer: Offer) -> Result<String, String> {
    let hello = RunnerMessage::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        offer,
    });
    let text = serde_json::to_string(&hello).map_err(|e| e.to_string())?;
    parse_runner_message(&text).map_err(|e| e.to_string())?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(labels: &[&str], agents: &[&str]) -> RunnerArgs {
        RunnerArgs {
            server: "http://h".into(),
            token_file: None,
            slots: 2,
            labels: labels.iter().map(|s| (*s).to_owned()).collect(),
            agents: agents.iter().map(|s| (*s).to_owned()).collect(),
            data_dir: None,
            sandbox: "auto".into(),
            once: false,
            idle_exit: None,
        }
    }

    #[test]
    fn the_data_directory_is_the_flags_or_the_base_directorys() {
        let flag = Path::new("/srv/runner");
        assert_eq!(
            data_dir(Some(flag), Some("/x".into()), Some("/h".into())).unwrap(),
            flag
        );
        assert_eq!(
            data_dir(None, Some("/x".into()), Some("/h".into())).unwrap(),
            Path::new("/x/mainloop-runner")
        );
        assert_eq!(
            data_dir(None, Some("rel".into()), Some("/h".into())).unwrap(),
            Path::new("/h/.local/share/mainloop-runner")
        );
        assert!(
            data_dir(None, None, None)
                .unwrap_err()
                .contains("--data-dir")
        );
    }

    #[test]
    fn each_offered_agent_runs_its_program_found_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let claude = dir.path().join("claude");
        std::fs::write(&claude, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
        let offer = offer(&args(&[], &["claude", "codex"]), &known(), |_| true).unwrap();
        let path = dir.path().display().to_string();
        let programs = agent_programs(&offer, &known(), Some(&path));
        let by_name: Vec<(&str, &str)> = programs
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_str()))
            .collect();
        let found = claude.display().to_string();
        assert_eq!(by_name, [("claude", found.as_str()), ("codex", "codex")]);
    }

    fn known() -> Vec<(String, String)> {
        ["claude", "codex", "gemini"]
            .iter()
            .map(|n| ((*n).to_owned(), (*n).to_owned()))
            .collect()
    }

    #[test]
    fn http_becomes_ws_and_the_route_is_appended() {
        assert_eq!(
            connect_url("http://127.0.0.1:8080/").unwrap(),
            "ws://127.0.0.1:8080/api/runners/connect"
        );
        assert_eq!(
            connect_url(" HTTPS://m.example.com/prefix ").unwrap(),
            "wss://m.example.com/prefix/api/runners/connect"
        );
        assert_eq!(
            connect_url("wss://m.example.com").unwrap(),
            "wss://m.example.com/api/runners/connect"
        );
        for bad in [
            "ftp://h",
            "h:8080",
            "http://",
            "http:///x",
            "http://h/?a=1",
            "http://h h",
        ] {
            assert!(connect_url(bad).is_err(), "{bad}");
            assert!(http_base(bad).is_err(), "{bad}");
        }
        // Git goes to the same server, prefix kept, over http(s).
        assert_eq!(
            http_base(" HTTPS://m.example.com/prefix/ ").unwrap(),
            "https://m.example.com/prefix"
        );
        assert_eq!(
            http_base("ws://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn the_token_comes_from_the_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "mlr_fromfile\n").unwrap();
        assert_eq!(
            token(Some(&file), Some("mlr_env".into())).unwrap(),
            "mlr_fromfile",
            "the flag wins"
        );
        assert_eq!(token(None, Some(" mlr_env ".into())).unwrap(), "mlr_env");
        let none = token(None, None).unwrap_err();
        assert!(none.contains("MAINLOOP_RUNNER_TOKEN is not set"), "{none}");
        std::fs::write(&file, "\n").unwrap();
        assert!(token(Some(&file), None).unwrap_err().contains("is empty"));
        assert!(
            token(Some(&dir.path().join("missing")), None)
                .unwrap_err()
                .contains("cannot read the token file")
        );
        assert!(token(None, Some("mlr_a b".into())).is_err());
    }

    #[test]
    fn agents_default_to_those_on_path_and_named_ones_must_be_known() {
        let offer = offer(&args(&["gpu"], &[]), &known(), |p| p != "codex").unwrap();
        let names: Vec<&str> = offer.agents.iter().map(AgentName::as_str).collect();
        assert_eq!(names, ["claude", "gemini"]);
        assert_eq!(offer.slots, 2);
        assert!(offer.labels.contains("gpu"));
        let none = super::offer(&args(&[], &[]), &known(), |_| false).unwrap_err();
        assert!(
            none.contains("no coding agent found on PATH (looked for claude, codex, gemini)"),
            "{none}"
        );
        let named = super::offer(&args(&[], &["codex"]), &known(), |_| false).unwrap();
        assert_eq!(named.agents.len(), 1, "named agents are trusted");
        let unknown = super::offer(&args(&[], &["nope"]), &known(), |_| true).unwrap_err();
        assert!(unknown.starts_with("unknown agent \"nope\""), "{unknown}");
    }

    #[test]
    fn bounds_are_the_protocols() {
        let bad = offer(&args(&["GPU!"], &[]), &known(), |_| true).unwrap_err();
        assert!(bad.contains("label \"GPU!\" is not"), "{bad}");
        let mut many = args(&[], &[]);
        many.slots = 65;
        assert!(
            offer(&many, &known(), |_| true)
                .unwrap_err()
                .contains("slots")
        );
        let ok = offer(&args(&["gpu", "linux-x64"], &[]), &known(), |_| true).unwrap();
        let text = hello(ok).unwrap();
        assert!(
            text.starts_with(r#"{"type":"hello","protocol":1,"#),
            "{text}"
        );
    }
}

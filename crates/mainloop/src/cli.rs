//! Command-line interface: subcommands and their flags. The server's commands run here;
//! the client's (`login`, `chat`, `tasks`, …) are [`crate::client`]'s.

use crate::app;
use crate::client::{self, ClientCommand};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mainloop_config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;

/// mainloop: one conversation with an AI that runs parallel coding workers, and one inbox
/// for what needs you.
#[derive(Debug, Parser)]
#[command(name = "mainloop", version, about)]
pub struct Cli {
    /// Configuration file (default: $MAINLOOP_CONFIG, <data dir>/mainloop.toml, ./mainloop.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Server(ServerCommand),
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// Run the server (API, web app, workers).
    Serve {
        /// Address to listen on (default from config: 127.0.0.1:8080). A non-loopback
        /// address requires authentication to be on.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration, secrets redacted.
    PrintConfig,
    /// Print the owner's API token, creating the owner and a token if needed.
    Token {
        /// Issue a new token even if one is on file.
        #[arg(long)]
        new: bool,
    },
    /// Print a one-time link that signs a browser in (within 10 minutes, once), with a
    /// QR code for a phone when run in a terminal. Works whether or not the server runs.
    LoginLink {
        /// Whose session the link opens (default: the owner).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Run a runner: connect out to a server with a runner token and offer this
    /// machine's agents (`docs/RUNNERS.md`). The token comes from
    /// $MAINLOOP_RUNNER_TOKEN or --token-file. Exits 2 on a mistake, 3 when the token is
    /// refused or revoked.
    Runner(crate::runner::RunnerArgs),
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user and print their API token (shown once).
    Add { name: String },
    /// List users.
    List,
}

#[allow(clippy::print_stdout)]
fn say(line: &str) {
    println!("{line}");
}

/// Runs the command. A client command's failure is a [`client::ClientError`], whose
/// exit code the caller finds with `downcast_ref`.
///
/// # Errors
/// What failed, with what to do about it.
pub async fn run(cli: Cli) -> Result<()> {
    // The client talks to a server; it neither needs nor reads the server's configuration.
    let command = match cli.command {
        Command::Client(c) => return Ok(client::run(c).await?),
        Command::Server(ServerCommand::Runner(args)) => {
            return runner(args, cli.config.as_deref()).await;
        }
        Command::Server(c) => c,
    };
    let mut config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    app::init_logging(&config);
    match command {
        ServerCommand::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            app::serve(config, cli.config.as_deref()).await
        }
        ServerCommand::Migrate => {
            let store = app::open_store(&config).await?;
            store.close().await;
            say("migrations applied");
            Ok(())
        }
        ServerCommand::PrintConfig => {
            say(config.redacted_toml()?.trim_end());
            let (kind, why) = app::main_thread_choice(&config);
            let kind = kind.map_or("none", mainloop_config::ModelProviderKind::as_str);
            say(&format!("\n# The chat is answered by: {kind}. {why}"));
            Ok(())
        }
        ServerCommand::Token { new } => {
            let engine = app::offline_engine(&config).await?;
            let token = app::owner_token(&engine, &config, new).await?;
            say(&token);
            Ok(())
        }
        ServerCommand::LoginLink { user } => {
            if !config.auth.enabled {
                bail!("authentication is off, so the server needs no sign-in; open it directly");
            }
            let engine = app::offline_engine(&config).await?;
            let (owner, _) = app::ensure_owner(&engine, &config).await?;
            let user = match user {
                None => owner,
                Some(name) => engine.user_by_name(&name).await?.with_context(|| {
                    format!("no user '{name}'; `mainloop user list` shows them")
                })?,
            };
            let base = crate::signin_link::base_url(config.public_url.as_deref(), config.listen);
            crate::signin_link::print_new(&engine, &user, &base).await?;
            engine.close().await;
            Ok(())
        }
        // Handled above, before the configuration is loaded.
        ServerCommand::Runner(_) => Ok(()),
        ServerCommand::User { command } => {
            let engine = app::offline_engine(&config).await?;
            match command {
                UserCommand::Add { name } => {
                    app::ensure_owner(&engine, &config).await?;
                    if engine.user_by_name(&name).await?.is_some() {
                        bail!("user '{name}' already exists");
                    }
                    let (_, token) = engine.create_user(&name, false).await?;
                    say(&format!("created user '{name}'. API token (shown once):"));
                    say(&token);
                }
                UserCommand::List => {
                    for u in engine.users().await? {
                        let owner = if u.is_owner { " (owner)" } else { "" };
                        say(&format!("{}{owner}\t{}\t{}", u.name, u.id, u.created_at));
                    }
                }
            }
            Ok(())
        }
    }
}

/// `mainloop runner`. The configuration only says which agents are known (a runner
/// reads no database).
async fn runner(args: crate::runner::RunnerArgs, file: Option<&std::path::Path>) -> Result<()> {
    let config = Config::load(file).context("loading configuration")?;
    let code = crate::runner::run(args, &config).await;
    if code != 0 {
        // The runner has said why; its exit code is what supervisors act on (3: do not
        // restart with this token).
        std::process::exit(i32::from(code));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// A flag's variable is the command line's, not configuration: the configuration
    /// loader, which refuses unknown `MAINLOOP_*` names, must pass it over.
    #[test]
    fn every_variable_a_flag_reads_is_left_to_the_command_line() {
        fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                    out.push(env.to_owned());
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, out);
            }
        }
        let mut vars = Vec::new();
        walk(&Cli::command(), &mut vars);
        assert!(
            vars.iter().any(|v| v == "MAINLOOP_RUNNER_SANDBOX"),
            "{vars:?}"
        );
        for var in vars.iter().filter(|v| v.starts_with("MAINLOOP_")) {
            assert!(
                mainloop_config::NOT_CONFIGURATION.contains(&var.as_str()),
                "{var} is read by a flag but would be refused as configuration"
            );
        }
    }

    #[test]
    fn the_command_line_is_consistent_and_client_flags_go_anywhere() {
        Cli::command().debug_assert();
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("mainloop").chain(args.iter().copied()))
        };
        assert!(matches!(
            parse(&["review", "abc", "approve", "--json", "--server", "http://h"])
                .unwrap()
                .command,
            Command::Client(ClientCommand::Review { .. })
        ));
        assert!(parse(&["plan", "abc", "revise", "add", "tests", "--token", "t"]).is_ok());
        assert!(
            parse(&["plan", "abc", "revise"]).is_err(),
            "revise needs its text"
        );
        assert!(parse(&["plan", "abc", "maybe"]).is_err());
        assert!(
            parse(&["new", "--repo", "r"]).is_err(),
            "a description is required"
        );
        assert!(matches!(
            parse(&["login-link", "--user", "bob"]).unwrap().command,
            Command::Server(ServerCommand::LoginLink { user: Some(_) })
        ));
        assert!(matches!(
            parse(&[
                "runner", "--server", "http://h", "--label", "gpu", "--agent", "claude"
            ])
            .unwrap()
            .command,
            Command::Server(ServerCommand::Runner(_))
        ));
        assert!(
            parse(&["runner", "--server", "http://h", "--token", "mlr_x"]).is_err(),
            "a runner token is never an argument"
        );
        assert!(matches!(
            parse(&["runner-token", "revoke", "build-box", "--json"])
                .unwrap()
                .command,
            Command::Client(ClientCommand::RunnerToken { .. })
        ));
        assert!(matches!(
            parse(&["serve"]).unwrap().command,
            Command::Server(ServerCommand::Serve { .. })
        ));
    }
}

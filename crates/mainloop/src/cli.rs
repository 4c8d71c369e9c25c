//! Command-line interface: subcommands and their flags.

use crate::app;
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

pub async fn run(cli: Cli) -> Result<()> {
    let mut config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    app::init_logging(&config);
    match cli.command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            app::serve(config, cli.config.as_deref()).await
        }
        Command::Migrate => {
            let store = app::open_store(&config).await?;
            store.close().await;
            say("migrations applied");
            Ok(())
        }
        Command::PrintConfig => {
            say(config.redacted_toml()?.trim_end());
            Ok(())
        }
        Command::Token { new } => {
            let engine = app::offline_engine(&config).await?;
            let token = app::owner_token(&engine, &config, new).await?;
            say(&token);
            Ok(())
        }
        Command::User { command } => {
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

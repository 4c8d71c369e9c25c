//! Command-line entry point: serves a fake GitHub over a directory of bare repositories
//! until killed.

use clap::Parser;
use mainloop_fake_github::{Config, Error, FakeGithub};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A fake GitHub (REST API and one GraphQL mutation) for end-to-end tests.
#[derive(Debug, Parser)]
#[command(name = "mainloop-fake-github", version)]
struct Args {
    /// Address to bind; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory holding the bare repositories (`<root>/<owner>/<name>.git`).
    #[arg(long)]
    root: PathBuf,
    /// An accepted token and the login it authenticates as, `TOKEN=LOGIN`; repeatable.
    #[arg(long = "token", value_parser = parse_token)]
    tokens: Vec<(String, String)>,
}

fn parse_token(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((t, l)) if !t.is_empty() && !l.is_empty() => Ok((t.to_owned(), l.to_owned())),
        _ => Err("expected TOKEN=LOGIN".to_owned()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let fake = FakeGithub::start(Config {
        listen: args.listen,
        root: args.root,
        tokens: args.tokens,
    })
    .await?;
    // A harness reads this line to learn the port, so it goes to stdout and is flushed now.
    let mut out = std::io::stdout().lock();
    writeln!(out, "fake github listening on {}", fake.base_url())?;
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await?;
    fake.shutdown().await;
    Ok(())
}

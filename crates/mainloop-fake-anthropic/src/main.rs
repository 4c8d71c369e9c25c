//! Command-line entry point: serves a script file until killed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use mainloop_fake_anthropic::{Error, FakeAnthropic, Script};

/// Scripted fake model server (Anthropic Messages API and OpenAI Responses API).
#[derive(Debug, Parser)]
#[command(name = "mainloop-fake-anthropic", version)]
struct Args {
    /// Address to bind; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Script file (.json, .yaml or .yml); without one every request gets the fallback.
    /// Repeatable: the files' rules are tried in the order given, and the first file's
    /// fallback applies.
    #[arg(long)]
    script: Vec<PathBuf>,
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
    let mut files = args.script.iter();
    let mut script = files
        .next()
        .map(|f| Script::from_path(f))
        .transpose()?
        .unwrap_or_default();
    for file in files {
        script = script.then(Script::from_path(file)?);
    }
    let fake = FakeAnthropic::bind(args.listen, script).await?;
    // A harness reads this line to learn the port, so it goes to stdout and is flushed now.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", fake.base_url())?;
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await?;
    Ok(())
}

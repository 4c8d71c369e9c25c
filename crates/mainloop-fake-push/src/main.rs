//! Command-line entry point: serves a fake push service until killed.

use clap::Parser;
use mainloop_fake_push::{Error, FakePush};
use std::io::Write;
use std::net::SocketAddr;

/// A fake Web Push service that verifies VAPID and decrypts what it receives.
#[derive(Debug, Parser)]
#[command(name = "mainloop-fake-push", version)]
struct Args {
    /// Address to bind; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
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
    let fake = FakePush::bind(args.listen).await?;
    // A harness reads this line to learn the port, so it goes to stdout and is flushed now.
    let mut out = std::io::stdout().lock();
    writeln!(out, "fake push listening on {}", fake.base_url())?;
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await?;
    Ok(())
}

//! Command-line entry point: serves a fake Kubernetes API until killed. Pods stay
//! `Pending` until driven through `/_fake/pods/{ns}/{name}/{running|succeed|fail|kill}`;
//! CloudNativePG Clusters (`--cloudnativepg`) never get a status, as no operator runs.

use clap::Parser;
use mainloop_fake_kube::{Config, Error, FakeKube};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A fake Kubernetes API server for tests.
#[derive(Debug, Parser)]
#[command(name = "mainloop-fake-kube", version)]
struct Args {
    /// Address to bind; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// How long a deleted namespace stays Terminating, in milliseconds.
    #[arg(long, default_value_t = 200)]
    termination_delay_ms: u64,
    /// How often watches get a BOOKMARK, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
    /// How many watch events are kept for resuming watches.
    #[arg(long, default_value_t = 1000)]
    history_window: usize,
    /// Serve CloudNativePG's `clusters.postgresql.cnpg.io`, as if its CRDs were installed.
    #[arg(long)]
    cloudnativepg: bool,
    /// The IP every running pod reports (default: one of 10.244.0.0/24 each).
    #[arg(long)]
    pod_ip: Option<IpAddr>,
}

// Returned once, to be printed: its size costs nothing here.
#[allow(clippy::result_large_err)]
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
    let fake = FakeKube::start(Config {
        listen: args.listen,
        namespace_termination_delay: Duration::from_millis(args.termination_delay_ms),
        bookmark_interval: Duration::from_millis(args.bookmark_interval_ms),
        history_window: args.history_window,
        cloudnativepg: args.cloudnativepg,
        pod_ip: args.pod_ip,
    })
    .await?;
    // A harness reads this line to learn the port, so it goes to stdout and is flushed now.
    let mut out = std::io::stdout().lock();
    writeln!(out, "fake kube listening on {}", fake.base_url())?;
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await?;
    fake.shutdown().await;
    Ok(())
}

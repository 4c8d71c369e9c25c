//! The launcher's client for a real cluster: an `https` API server URL builds a client
//! (rustls is compiled in), and a server that does not answer is `Unavailable`.

use crate::common::{settings, task};
use kube::{Client, Config};
use mainloop_kube::KubeLauncher;
use mainloop_launch::{LaunchError, Launcher};
use std::time::Duration;

#[tokio::test]
async fn an_https_cluster_builds_a_client() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = Config::new(format!("https://127.0.0.1:{port}").parse().unwrap());
    config.default_retry = false;
    config.connect_timeout = Some(Duration::from_secs(2));
    let client = Client::try_from(config).expect("a TLS client (the rustls-tls feature)");
    let launcher = KubeLauncher::new(client, settings());
    match launcher.launched_tasks().await {
        Err(LaunchError::Unavailable(why)) => {
            assert!(
                why.starts_with("listing the launcher's namespaces"),
                "{why}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    match launcher.prepare_task(&task()).await {
        Err(LaunchError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

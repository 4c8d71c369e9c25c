//! The runner tests' network namespace: a program inside reaches the ports it was given
//! and nothing else on this machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mainloop_test_support::netns::{self, Netns};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Accepts one connection, answers its first line with "ok" and returns that line.
async fn listen() -> (u16, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut s = BufReader::new(s);
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        s.get_mut().write_all(b"ok\n").await.unwrap();
        line
    });
    (port, got)
}

#[tokio::test]
async fn inside_reaches_the_forwarded_port_and_not_another() {
    if !netns::available() {
        // CI provides it (`.ci/run`); elsewhere the skip is said, not hidden.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must give a network namespace (unshare -rn, ip)"
        );
        eprintln!("skipped: this machine gives no network namespace (unshare -rn)");
        return;
    }
    let (open, got) = listen().await;
    let (closed, _never) = listen().await;
    let ns = Netns::new(&[open]);
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{open} && echo hello >&3 && read -r reply <&3 && [ \"$reply\" = ok ] || exit 6
         if echo x >/dev/tcp/127.0.0.1/{closed}; then exit 7; fi"
    );
    let status = ns
        .command(
            Path::new(env!("CARGO_BIN_EXE_mainloop-netns-bridge")),
            Path::new("bash"),
        )
        .args(["-c", &script])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "inside the namespace: {status:?}");
    assert_eq!(got.await.unwrap(), "hello\n");
}

//! `mainloop-netns-bridge`: runs one program inside a network namespace of its own
//! (started under `unshare -rn`) that can reach only the TCP ports it is told to
//! forward. Each `--forward 127.0.0.1:PORT=SOCKET` listens on the namespace's loopback
//! and carries every connection to a Unix socket, which the test serves outside and
//! joins to the real port: Unix sockets live in the file system, which both sides share,
//! so no other network path exists.
//!
//! Usage: `unshare -rn mainloop-netns-bridge --forward ADDR=SOCKET ... -- PROGRAM ARGS...`.
//! It exits with the program's code (128 + N after signal N).
#![allow(clippy::print_stderr)]

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Semaphore;

/// How long connections still open may finish after the program exits.
const DRAIN: Duration = Duration::from_secs(5);
/// Connections carried at once, at most.
const MAX_CONNECTIONS: u32 = 1024;

fn usage() -> ExitCode {
    eprintln!(
        "usage: mainloop-netns-bridge --forward 127.0.0.1:PORT=SOCKET ... -- PROGRAM ARGS..."
    );
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(split) = args.iter().position(|a| a == "--") else {
        return usage();
    };
    let (flags, command) = (&args[..split], &args[split + 1..]);
    let mut forwards: Vec<(String, PathBuf)> = Vec::new();
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        let pair = match (flag.as_str(), flags.next()) {
            ("--forward", Some(pair)) => pair,
            _ => return usage(),
        };
        let Some((addr, socket)) = pair.split_once('=') else {
            return usage();
        };
        forwards.push((addr.to_owned(), PathBuf::from(socket)));
    }
    let Some((program, program_args)) = command.split_first() else {
        return usage();
    };

    // A new namespace's loopback is down.
    match tokio::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .await
    {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("mainloop-netns-bridge: could not bring up the loopback: {other:?}");
            return ExitCode::from(2);
        }
    }
    // Each open connection holds a permit, so the exit can wait for them to finish.
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS as usize));
    for (addr, socket) in forwards {
        let listener = match TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mainloop-netns-bridge: cannot listen on {addr}: {e}");
                return ExitCode::from(2);
            }
        };
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            while let Ok((mut inside, _)) = listener.accept().await {
                let Ok(permit) = Arc::clone(&open).acquire_owned().await else {
                    break;
                };
                let socket = socket.clone();
                tokio::spawn(async move {
                    if let Ok(mut outside) = UnixStream::connect(&socket).await {
                        let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                    }
                    drop(permit);
                });
            }
        });
    }
    let status = tokio::process::Command::new(program)
        .args(program_args)
        .status()
        .await;
    // What the program wrote just before it exited may still be on its way out.
    let _ = tokio::time::timeout(DRAIN, open.acquire_many(MAX_CONNECTIONS)).await;
    match status {
        Ok(s) => {
            let code = s
                .code()
                .or_else(|| s.signal().map(|n| 128 + n))
                .unwrap_or(1);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("mainloop-netns-bridge: cannot start {program}: {e}");
            ExitCode::from(127)
        }
    }
}

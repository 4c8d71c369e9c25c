//! A network namespace for one process (a runner) that can reach only the ports a test
//! names: the outside half of `mainloop-netns-bridge`. Each port gets a Unix socket here
//! that is joined to `127.0.0.1:PORT`; inside, the bridge listens on the same port and
//! carries connections to that socket, so URLs mean the same on both sides.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::net::{TcpStream, UnixListener};

/// The sockets that join a namespace to this machine's ports; they stop with it.
#[derive(Debug)]
pub struct Netns {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Whether this machine lets a process have a network namespace of its own (`unshare
/// -rn`, which needs user namespaces) and has `ip` to bring its loopback up.
#[must_use]
pub fn available() -> bool {
    std::process::Command::new("unshare")
        .args(["-rn", "ip", "link", "set", "lo", "up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    /// Serves one socket per port in `ports`, each joined to `127.0.0.1:PORT`.
    ///
    /// # Panics
    /// When a socket cannot be made: this is for tests.
    #[must_use]
    pub fn new(ports: &[u16]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mainloop-netns-")
            .tempdir()
            .expect("a directory for the namespace's sockets");
        let tasks = ports
            .iter()
            .map(|&port| {
                let path = dir.path().join(format!("{port}.sock"));
                let listener = UnixListener::bind(&path).expect("a Unix socket to bridge");
                tokio::spawn(async move {
                    while let Ok((mut inside, _)) = listener.accept().await {
                        tokio::spawn(async move {
                            if let Ok(mut outside) = TcpStream::connect(("127.0.0.1", port)).await {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                            }
                        });
                    }
                })
            })
            .collect();
        Self {
            dir,
            ports: ports.to_vec(),
            tasks,
        }
    }

    /// A command that runs `program` inside a fresh namespace reaching only these
    /// ports; `bridge` is the `mainloop-netns-bridge` binary.
    #[must_use]
    pub fn command(&self, bridge: &Path, program: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("unshare");
        cmd.arg("-rn").arg(bridge);
        for port in &self.ports {
            cmd.arg("--forward")
                .arg(format!("127.0.0.1:{port}={}", self.socket(*port).display()));
        }
        cmd.arg("--").arg(program);
        cmd
    }

    fn socket(&self, port: u16) -> PathBuf {
        self.dir.path().join(format!("{port}.sock"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

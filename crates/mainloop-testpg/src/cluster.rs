//! The private PostgreSQL cluster: initdb, start, and cleanup at exit, on the building
//! blocks of `mainloop-pgcluster`.
//!
//! Everything here is blocking; it runs once per process on tokio's blocking pool.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use mainloop_pgcluster::{Binaries, ClusterFiles, PgCtl, Runner, free_port};

use crate::TestPgError;

/// A running cluster; lives until the process exits (the watchdog then removes it).
#[derive(Debug)]
pub(crate) struct Cluster {
    port: u16,
    ctl: PgCtl,
    options: String,
}

impl Cluster {
    /// Superuser URL of the maintenance database, from which test databases are created.
    pub(crate) fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restarts the server (fast shutdown: open connections are cut), on the same port,
    /// for tests of what survives a database restart.
    pub(crate) fn restart(&self) -> Result<(), TestPgError> {
        self.pg_ctl("restart")
    }

    /// Stops the server (fast shutdown), keeps it down for `down`, and starts it again
    /// on the same port: a restart as slow as a real server's can be.
    pub(crate) fn outage(&self, down: std::time::Duration) -> Result<(), TestPgError> {
        self.pg_ctl("stop")?;
        std::thread::sleep(down);
        self.pg_ctl("start")
    }

    fn pg_ctl(&self, action: &str) -> Result<(), TestPgError> {
        self.ctl
            .run(action, Some(&self.options))
            .map(drop)
            .map_err(TestPgError::from)
    }

    pub(crate) fn start() -> Result<Self, TestPgError> {
        let bins = Binaries::find()?;
        let runner = Runner::detect()?;
        let root = make_root_dir(&runner)?;
        // Armed before anything else exists so even a half-initialised cluster is removed.
        spawn_watchdog(&runner, &bins, &root)?;

        let files = ClusterFiles {
            data: root.join("data"),
            log: root.join("server.log"),
            root,
        };
        let ctl = PgCtl::new(bins, runner, files);
        ctl.initdb(
            &ctl.files().data,
            ["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]
                .into_iter()
                // The host locale may be unset or not generated in containers; C always exists.
                .chain(["--locale=C"]),
        )?;
        let sock = ctl.files().root.display().to_string();
        let (port, options) = ctl.start(
            |_| free_port(),
            |port| {
                format!(
                    "-p {port} -k '{sock}' -c listen_addresses=127.0.0.1 -c max_connections=200 \
                     -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                )
            },
        )?;
        Ok(Self { port, ctl, options })
    }
}

/// A fresh directory owned by the runner: holds the data dir, the socket and the log, and is
/// deletable by the watchdog running as that same user.
fn make_root_dir(runner: &Runner) -> Result<PathBuf, TestPgError> {
    let base = temp_base(runner);
    let dir = tempfile::Builder::new()
        .prefix("mainloop-testpg-")
        .tempdir_in(&base)
        .map_err(|e| TestPgError::io(format!("creating a temp dir in {}", base.display()), e))?;
    runner.chown(dir.path())?;
    // From here on the watchdog owns deletion; TempDir's Drop would never run in a static.
    Ok(dir.keep())
}

/// The system temp dir if the runner can traverse it, else `/tmp`.
fn temp_base(runner: &Runner) -> PathBuf {
    let base = std::env::temp_dir();
    if runner.can_traverse(&base) {
        base
    } else {
        PathBuf::from("/tmp")
    }
}

/// Statics are never dropped and test threads come and go, so the only reliable "test
/// process ended" signal is the process disappearing. A child shell polls for that and then
/// stops the cluster and deletes its files. It polls `/proc` rather than `kill -0` because
/// an unprivileged user may not signal a root process; a zombie counts as gone.
///
/// If the test process died mid-start, an orphaned `initdb`/`pg_ctl` may still be writing
/// into the directory while we delete it, so stop+delete repeats until the directory has
/// stayed gone for two consecutive checks (bounded at ~30 s).
fn spawn_watchdog(runner: &Runner, bins: &Binaries, root: &Path) -> Result<(), TestPgError> {
    const SCRIPT: &str = r#"
while [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; do
    sleep 0.5
done
absent=0
i=0
while [ "$i" -lt 60 ]; do
    i=$((i + 1))
    "$2" -D "$3" stop -m immediate >/dev/null 2>&1
    rm -rf "$4" 2>/dev/null
    if [ -e "$4" ]; then absent=0; else absent=$((absent + 1)); fi
    [ "$absent" -ge 2 ] && exit 0
    sleep 0.5
done
"#;
    let mut cmd = runner.command(Path::new("/bin/sh"), root);
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("mainloop-testpg-watchdog")
        .arg(std::process::id().to_string())
        .arg(&bins.pg_ctl)
        .arg(root.join("data"))
        .arg(root)
        // Don't hold the test's stdout/stderr open after it exits (would stall pipes).
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Own process group, so a Ctrl-C aimed at the test run doesn't kill the cleaner.
        .process_group(0);
    // The Child handle is dropped without waiting: the watchdog must outlive us.
    cmd.spawn()
        .map(drop)
        .map_err(|e| TestPgError::io("spawning the cleanup watchdog (/bin/sh)", e))
}

//! The private PostgreSQL cluster: finding the binaries, initdb, start, and cleanup at exit.
//!
//! Everything here is blocking; it runs once per process on tokio's blocking pool.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::unistd::{Gid, Uid, User};

use crate::TestPgError;

/// Ports are picked by binding port 0 and releasing it, so another process can grab the port
/// before postgres binds it; a few retries make that race practically irrelevant.
const START_ATTEMPTS: u32 = 3;

/// How many lines of output/log to quote in errors.
const TAIL_LINES: usize = 25;

/// Variables that would make pg_ctl/initdb look at some other cluster or server.
const PG_ENV_TO_CLEAR: &[&str] = &[
    "PGDATA",
    "PGPORT",
    "PGHOST",
    "PGHOSTADDR",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGPASSWORD",
];

/// A running cluster; lives until the process exits (the watchdog then removes it).
#[derive(Debug)]
pub(crate) struct Cluster {
    port: u16,
    bins: Binaries,
    runner: Runner,
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
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
        let mut pg_ctl = self.runner.command(&self.bins.pg_ctl, &self.root);
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-m", "fast", "-o", &self.options, action]);
        run(&mut pg_ctl).map(|_| ())
    }

    pub(crate) fn start() -> Result<Self, TestPgError> {
        let bins = Binaries::find()?;
        let runner = Runner::detect()?;
        let root = runner.make_root_dir()?;
        // Armed before anything else exists so even a half-initialised cluster is removed.
        runner.spawn_watchdog(&bins, &root)?;

        let data = root.join("data");
        let log = root.join("server.log");
        let mut initdb = runner.command(&bins.initdb, &root);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            // The host locale may be unset or not generated in containers; C always exists.
            .arg("--locale=C");
        run(&mut initdb)?;

        let mut last_detail = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port()?;
            let options = format!(
                "-p {port} -k '{sock}' -c listen_addresses=127.0.0.1 -c max_connections=200 \
                 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                sock = root.display()
            );
            let mut pg_ctl = runner.command(&bins.pg_ctl, &root);
            pg_ctl
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &options, "start"]);
            match run(&mut pg_ctl) {
                Ok(_) => {
                    return Ok(Self {
                        port,
                        bins,
                        runner,
                        root,
                        data,
                        log,
                        options,
                    });
                }
                Err(err) => {
                    last_detail = err.to_string();
                    let log_tail = tail_of_file(&log);
                    let port_taken =
                        log_tail.contains("could not bind") || log_tail.contains("already in use");
                    if !port_taken || attempt == START_ATTEMPTS {
                        return Err(TestPgError::StartFailed {
                            data_dir: data,
                            log,
                            attempts: attempt,
                            detail: last_detail,
                            log_tail,
                        });
                    }
                }
            }
        }
        Err(TestPgError::StartFailed {
            log_tail: tail_of_file(&log),
            data_dir: data,
            log,
            attempts: START_ATTEMPTS,
            detail: last_detail,
        })
    }
}

/// Absolute paths of the server programs we invoke (pg_ctl finds `postgres` beside itself).
#[derive(Debug)]
struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl Binaries {
    fn find() -> Result<Self, TestPgError> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        dirs.extend(debian_bin_dirs());
        dirs.into_iter()
            .find(|dir| {
                ["initdb", "pg_ctl", "postgres"]
                    .iter()
                    .all(|name| is_executable(&dir.join(name)))
            })
            .map(|dir| Self {
                initdb: dir.join("initdb"),
                pg_ctl: dir.join("pg_ctl"),
            })
            .ok_or(TestPgError::BinariesNotFound)
    }
}

/// `/usr/lib/postgresql/<version>/bin`, highest version first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            // Old majors are "9.6"; compare numerically so 16 beats 9.6.
            let version = name
                .split('.')
                .map(str::parse::<u32>)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by(|a, b| b.0.cmp(&a.0));
    versioned.into_iter().map(|(_, dir)| dir).collect()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Who the server processes run as: ourselves, or (when we are root, which initdb refuses)
/// an unprivileged account.
#[derive(Debug)]
struct Runner {
    user: Option<(Uid, Gid)>,
}

impl Runner {
    fn detect() -> Result<Self, TestPgError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(Self { user: None });
        }
        for name in ["postgres", "nobody"] {
            if let Ok(Some(user)) = User::from_name(name) {
                return Ok(Self {
                    user: Some((user.uid, user.gid)),
                });
            }
        }
        Err(TestPgError::NoUnprivilegedUser)
    }

    fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        if let Some((uid, gid)) = self.user {
            // std drops supplementary groups when root switches uid, so root's groups don't leak.
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        for var in PG_ENV_TO_CLEAR {
            cmd.env_remove(var);
        }
        // Our cwd may be unreadable for the unprivileged user (e.g. under /root), which makes
        // initdb warn and postgres fail to resolve relative paths.
        cmd.current_dir(cwd).stdin(Stdio::null());
        cmd
    }

    /// A fresh directory owned by the runner: holds the data dir, the socket and the log, and is
    /// deletable by the watchdog running as that same user.
    fn make_root_dir(&self) -> Result<PathBuf, TestPgError> {
        let base = self.temp_base();
        let dir = tempfile::Builder::new()
            .prefix("mainloop-testpg-")
            .tempdir_in(&base)
            .map_err(|e| {
                TestPgError::io(format!("creating a temp dir in {}", base.display()), e)
            })?;
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(dir.path(), Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(|e| TestPgError::io(format!("chown {}", dir.path().display()), e))?;
        }
        // From here on the watchdog owns deletion; TempDir's Drop would never run in a static.
        Ok(dir.keep())
    }

    /// The system temp dir if the runner can traverse it, else `/tmp`.
    fn temp_base(&self) -> PathBuf {
        let base = std::env::temp_dir();
        let Some((uid, _)) = self.user else {
            return base;
        };
        let traversable = base.ancestors().all(|dir| {
            fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0 || m.uid() == uid.as_raw())
        });
        if traversable {
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
    fn spawn_watchdog(&self, bins: &Binaries, root: &Path) -> Result<(), TestPgError> {
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
        let mut cmd = self.command(Path::new("/bin/sh"), root);
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
}

fn free_port() -> Result<u16, TestPgError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| TestPgError::io("picking a free TCP port on 127.0.0.1", e))
}

fn run(cmd: &mut Command) -> Result<Output, TestPgError> {
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let output = cmd
        .output()
        .map_err(|e| TestPgError::io(format!("running {command}"), e))?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(TestPgError::CommandFailed {
        command,
        status: output.status.to_string(),
        output: tail(&text),
    })
}

fn tail_of_file(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes)),
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(&text);
        assert_eq!(t.lines().count(), TAIL_LINES);
        assert!(t.ends_with("line 99"));
        assert_eq!(tail(""), "");
    }
}

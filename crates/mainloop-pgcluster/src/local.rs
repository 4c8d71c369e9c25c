//! The persistent cluster task databases are made on when no server is configured: one
//! directory holding the data, the superuser's password (0600), the port it last ran
//! on, its log and its unix socket. It outlives the process that started it: a later
//! [`LocalCluster::start`] on the same directory finds the data (and the server, if a
//! killed predecessor left it running) and goes on with it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sqlx::{Connection, PgConnection};

use crate::{Binaries, ClusterFiles, PgClusterError, PgCtl, Runner, free_port};

const DATA_DIR: &str = "data";
/// initdb works here; only a complete cluster is renamed to `data`, so a start killed
/// mid-initdb leaves nothing that looks usable.
const STAGING_DIR: &str = "data.init";
const PASSWORD_FILE: &str = "superuser.password";
const PORT_FILE: &str = "port";
const LOG_FILE: &str = "server.log";
/// The log is appended to across runs; past this size the next start begins a new one.
const LOG_KEEP_BYTES: u64 = 10 * 1024 * 1024;
/// A unix socket path must fit `sun_path` (108 bytes with its NUL); a longer directory
/// gets no socket rather than a server that refuses to start.
const SOCKET_PATH_MAX: usize = 100;

/// The superuser's URL of the maintenance database. Never shown: it carries the password.
#[derive(Clone)]
pub struct AdminUrl(String);

impl AdminUrl {
    /// The URL itself, for connecting.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminUrl([redacted])")
    }
}

/// A running persistent cluster. Dropping it leaves the server running; [`LocalCluster::stop`]
/// stops it.
#[derive(Debug)]
pub struct LocalCluster {
    ctl: PgCtl,
    dir: PathBuf,
    port: u16,
    admin: AdminUrl,
}

/// Where root's clusters live: the server runs as an unprivileged account, which cannot
/// reach a data directory under `/root` (mainloop keeps its data directory 0700).
const ROOT_CLUSTERS: &str = "/var/lib/mainloop";

impl LocalCluster {
    /// The directory of the cluster that belongs to mainloop's `data_dir`:
    /// `<data_dir>/task-postgres`, or — when mainloop runs as root, whose data directory
    /// the server's account cannot reach — `/var/lib/mainloop/task-postgres-<hash of
    /// data_dir>`, so each data directory still has a cluster of its own.
    #[must_use]
    pub fn dir_for(data_dir: &Path) -> PathBuf {
        if !nix::unistd::geteuid().is_root() {
            return data_dir.join("task-postgres");
        }
        let canonical = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        Path::new(ROOT_CLUSTERS).join(format!(
            "task-postgres-{:016x}",
            fnv1a(canonical.as_os_str().as_encoded_bytes())
        ))
    }

    /// Starts the cluster in `dir` (made on first use: initdb with scram-sha-256 and a
    /// random superuser password), or takes over the server already running there. It
    /// listens on 127.0.0.1 only, on the port it had last time when that is free.
    ///
    /// # Errors
    /// When the binaries are missing, the directory is out of the server account's
    /// reach, initdb fails or the server does not come up.
    pub fn start(dir: &Path) -> Result<Self, PgClusterError> {
        let bins = Binaries::find()?;
        let runner = Runner::detect()?;
        prepare_dir(&runner, dir)?;
        let ctl = PgCtl::new(
            bins,
            runner,
            ClusterFiles {
                root: dir.to_path_buf(),
                data: dir.join(DATA_DIR),
                log: dir.join(LOG_FILE),
            },
        );
        let password = if ctl.files().data.is_dir() {
            read_password(dir)?
        } else {
            init(&ctl, dir)?
        };
        let port = match live_postmaster(&ctl.files().data) {
            // A previous process was killed and its server lived on.
            Some((_, port)) => port,
            None => start_server(&ctl, dir)?,
        };
        // Not secret, and only a hint: a taken port is replaced at the next start.
        let port_file = dir.join(PORT_FILE);
        fs::write(&port_file, format!("{port}\n"))
            .map_err(|e| PgClusterError::io(format!("writing {}", port_file.display()), e))?;
        let admin = AdminUrl(format!(
            "postgres://postgres:{password}@127.0.0.1:{port}/postgres"
        ));
        Ok(Self {
            ctl,
            dir: dir.to_path_buf(),
            port,
            admin,
        })
    }

    /// The superuser's URL, from which task databases and their roles are made.
    #[must_use]
    pub fn admin_url(&self) -> AdminUrl {
        self.admin.clone()
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's process, while it runs.
    #[must_use]
    pub fn postmaster_pid(&self) -> Option<i32> {
        live_postmaster(&self.ctl.files().data)
            .filter(|(_, port)| *port == self.port)
            .map(|(pid, _)| pid)
    }

    /// Whether the server still runs (it may have been killed since it started).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// Stops the server (fast: open connections are cut); the data stays. Stopping a
    /// server that is not running is fine.
    ///
    /// # Errors
    /// When `pg_ctl stop` fails and the server still runs.
    pub fn stop(&self) -> Result<(), PgClusterError> {
        match self.ctl.run("stop", None) {
            Ok(_) => Ok(()),
            Err(_) if live_postmaster(&self.ctl.files().data).is_none() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// How many databases whose name is `LIKE` `pattern` the server at `admin` holds.
///
/// # Errors
/// When the server cannot be reached or the query fails.
pub async fn database_count(admin: &AdminUrl, pattern: &str) -> Result<i64, PgClusterError> {
    let sql = |action: &str| {
        let action = action.to_owned();
        move |source| PgClusterError::Sql { action, source }
    };
    let mut conn = PgConnection::connect(admin.expose())
        .await
        .map_err(sql("connect to the local cluster"))?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
        .bind(pattern)
        .fetch_one(&mut conn)
        .await
        .map_err(sql("count the local cluster's databases"))?;
    // Best effort: the server reaps the session either way.
    let _ = conn.close().await;
    Ok(n)
}

/// Makes `dir` private to the server account, which must be able to reach it.
fn prepare_dir(runner: &Runner, dir: &Path) -> Result<(), PgClusterError> {
    let shared = Path::new(ROOT_CLUSTERS);
    if dir.parent() == Some(shared) {
        // Root's clusters' parent: the server's account must pass through it.
        fs::create_dir_all(shared)
            .and_then(|()| fs::set_permissions(shared, fs::Permissions::from_mode(0o755)))
            .map_err(|e| PgClusterError::io(format!("preparing {}", shared.display()), e))?;
    }
    fs::create_dir_all(dir)
        .map_err(|e| PgClusterError::io(format!("creating {}", dir.display()), e))?;
    // The socket and the password file live here.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| PgClusterError::io(format!("chmod 700 {}", dir.display()), e))?;
    runner.chown(dir)?;
    match runner.uid() {
        Some(uid) if !runner.can_traverse(dir) => Err(PgClusterError::Unreachable {
            dir: dir.to_path_buf(),
            uid,
        }),
        _ => Ok(()),
    }
}

/// Makes the cluster with a new random superuser password; returns the password.
fn init(ctl: &PgCtl, dir: &Path) -> Result<String, PgClusterError> {
    let staging = dir.join(STAGING_DIR);
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .map_err(|e| PgClusterError::io(format!("removing {}", staging.display()), e))?;
    }
    let password = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    let file = dir.join(PASSWORD_FILE);
    write_private(&file, &password)?;
    // initdb reads it as the server account.
    ctl.runner().chown(&file)?;
    let mut pwfile = std::ffi::OsString::from("--pwfile=");
    pwfile.push(&file);
    ctl.initdb(
        &staging,
        [
            "-A".into(),
            "scram-sha-256".into(),
            "-U".into(),
            "postgres".into(),
            "-E".into(),
            "UTF8".into(),
            // The host locale may be unset or not generated in containers; C always exists.
            "--locale=C".into(),
            pwfile,
        ]
        .iter(),
    )?;
    let data = &ctl.files().data;
    fs::rename(&staging, data).map_err(|e| {
        PgClusterError::io(
            format!("renaming {} to {}", staging.display(), data.display()),
            e,
        )
    })?;
    Ok(password)
}

fn write_private(path: &Path, text: &str) -> Result<(), PgClusterError> {
    let io = |e| PgClusterError::io(format!("writing {}", path.display()), e);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    // `mode` only applies to a file it creates.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.write_all(b"\n").map_err(io)
}

fn read_password(dir: &Path) -> Result<String, PgClusterError> {
    let path = dir.join(PASSWORD_FILE);
    let password = fs::read_to_string(&path)
        .map(|text| text.trim().to_owned())
        .unwrap_or_default();
    if password.is_empty() {
        return Err(PgClusterError::PasswordMissing {
            path,
            dir: dir.to_path_buf(),
        });
    }
    Ok(password)
}

/// Starts the stopped cluster on its recorded port when that is free; returns the port.
fn start_server(ctl: &PgCtl, dir: &Path) -> Result<u16, PgClusterError> {
    // A killed server leaves its postmaster.pid and socket lock; should its pid since
    // belong to another process (or to its unreaped zombie), postgres would take it for
    // a running server and refuse to start. No server runs here, so both are stale.
    let sockets = fs::read_dir(dir)
        .map_err(|e| PgClusterError::io(format!("reading {}", dir.display()), e))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(".s.PGSQL."))
        });
    for stale in std::iter::once(ctl.files().data.join("postmaster.pid")).chain(sockets) {
        match fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(PgClusterError::io(
                    format!("removing stale {}", stale.display()),
                    e,
                ));
            }
        }
    }
    rotate_log(&ctl.files().log);
    let recorded = fs::read_to_string(dir.join(PORT_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<u16>().ok())
        .filter(|&port| port != 0 && bindable(port));
    let (port, _) = ctl.start(
        |first| match recorded {
            Some(port) if first => Ok(port),
            _ => free_port(),
        },
        |port| options(dir, port),
    )?;
    Ok(port)
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn rotate_log(log: &Path) {
    if fs::metadata(log).is_ok_and(|m| m.len() > LOG_KEEP_BYTES) {
        // Best effort: a log that cannot be moved just keeps growing.
        let _ = fs::rename(log, log.with_extension("log.old"));
    }
}

/// The server options, split by the shell pg_ctl starts postgres with.
fn options(dir: &Path, port: u16) -> String {
    let socket = dir.join(format!(".s.PGSQL.{port}"));
    let sockets = if socket.as_os_str().len() <= SOCKET_PATH_MAX {
        sh_quote(&dir.to_string_lossy())
    } else {
        "''".to_owned()
    };
    format!("-p {port} -k {sockets} -c listen_addresses=127.0.0.1")
}

fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The pid and port of the server running on `data`, from its `postmaster.pid` (pid on
/// the first line, port on the fourth), if that process is alive and a postgres.
fn live_postmaster(data: &Path) -> Option<(i32, u16)> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let port: u16 = lines.nth(2)?.trim().parse().ok()?;
    is_postmaster(pid).then_some((pid, port))
}

/// Whether `pid` is a live postgres process (not a zombie, not a stranger that got
/// its pid after a crash).
fn is_postmaster(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // `pid (comm) state …`; comm may hold spaces and parentheses.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let comm = &stat[open + 1..close];
            let state = stat[close + 1..].trim_start().chars().next();
            comm == "postgres" && !matches!(state, Some('Z' | 'X'))
        }
        Err(_) if Path::new("/proc/self/stat").exists() => false,
        // Without /proc, ask the kernel whether the pid exists at all.
        Err(_) => match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Ok(()) | Err(nix::errno::Errno::EPERM) => true,
            Err(_) => false,
        },
    }
}

/// FNV-1a: a name stable across builds for a path (std's hasher promises no such thing).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_quote_the_socket_dir_and_drop_an_overlong_one() {
        assert_eq!(
            options(Path::new("/d/it's"), 5433),
            r"-p 5433 -k '/d/it'\''s' -c listen_addresses=127.0.0.1"
        );
        let long = format!("/{}", "x".repeat(120));
        assert_eq!(
            options(Path::new(&long), 5433),
            "-p 5433 -k '' -c listen_addresses=127.0.0.1"
        );
    }

    #[test]
    fn a_dead_or_foreign_pid_is_no_postmaster() {
        let dir = tempfile::tempdir().unwrap();
        assert!(live_postmaster(dir.path()).is_none());
        // Our own pid: alive, but a test binary, not postgres.
        let me = std::process::id();
        fs::write(
            dir.path().join("postmaster.pid"),
            format!("{me}\n/data\n1\n5433\n/tmp\n127.0.0.1\n1 2\nready\n"),
        )
        .unwrap();
        assert!(live_postmaster(dir.path()).is_none());
    }

    #[test]
    fn the_admin_url_is_never_shown() {
        let url = AdminUrl("postgres://postgres:secret@127.0.0.1:1/postgres".to_owned());
        assert!(!format!("{url:?}").contains("secret"));
    }
}

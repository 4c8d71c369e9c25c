//! Finding the server programs and running them: as ourselves, or as an unprivileged
//! account when we are root (initdb and postgres refuse root), with a clean environment
//! and the tail of their output in errors.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::unistd::{Gid, Uid, User};

use crate::PgClusterError;

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

/// Absolute paths of the server programs we invoke (pg_ctl finds `postgres` beside itself).
#[derive(Clone, Debug)]
pub struct Binaries {
    pub initdb: PathBuf,
    pub pg_ctl: PathBuf,
}

impl Binaries {
    /// The first directory on `PATH`, then under `/usr/lib/postgresql/<version>/bin`
    /// (highest version first), holding `initdb`, `pg_ctl` and `postgres`.
    ///
    /// # Errors
    /// [`PgClusterError::BinariesNotFound`] when there is none.
    pub fn find() -> Result<Self, PgClusterError> {
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
            .ok_or(PgClusterError::BinariesNotFound)
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
#[derive(Clone, Debug)]
pub struct Runner {
    user: Option<(Uid, Gid)>,
}

impl Runner {
    /// Ourselves, or when root the `postgres` account, else `nobody`.
    ///
    /// # Errors
    /// [`PgClusterError::NoUnprivilegedUser`] as root without either account.
    pub fn detect() -> Result<Self, PgClusterError> {
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
        Err(PgClusterError::NoUnprivilegedUser)
    }

    /// The account switched to, if any (`None`: ourselves).
    #[must_use]
    pub fn uid(&self) -> Option<u32> {
        self.user.map(|(uid, _)| uid.as_raw())
    }

    /// `program` run as the runner in `cwd`, stdin closed, no `PG*` variable leaking in.
    #[must_use]
    pub fn command(&self, program: &Path, cwd: &Path) -> Command {
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

    /// Hands `path` to the runner (nothing to do when we run as ourselves).
    ///
    /// # Errors
    /// When `chown` fails.
    pub fn chown(&self, path: &Path) -> Result<(), PgClusterError> {
        let Some((uid, gid)) = self.user else {
            return Ok(());
        };
        std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
            .map_err(|e| PgClusterError::io(format!("chown {}", path.display()), e))
    }

    /// Whether the runner may pass through `dir` and each directory above it.
    #[must_use]
    pub fn can_traverse(&self, dir: &Path) -> bool {
        let Some((uid, _)) = self.user else {
            return true;
        };
        dir.ancestors().all(|dir| {
            fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0 || m.uid() == uid.as_raw())
        })
    }
}

/// Runs `cmd` to completion; a failure carries the command line and its output's tail.
///
/// # Errors
/// When it cannot be spawned or exits unsuccessfully.
pub fn run(cmd: &mut Command) -> Result<Output, PgClusterError> {
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let output = cmd
        .output()
        .map_err(|e| PgClusterError::io(format!("running {command}"), e))?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(PgClusterError::CommandFailed {
        command,
        status: output.status.to_string(),
        output: tail(&text),
    })
}

/// The last lines of file `path` from byte `from` on (or why it could not be read).
#[must_use]
pub fn tail_of_file(path: &Path, from: u64) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let from = usize::try_from(from).unwrap_or(0).min(bytes.len());
            tail(&String::from_utf8_lossy(&bytes[from..]))
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// The last lines of `text`.
#[must_use]
pub fn tail(text: &str) -> String {
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

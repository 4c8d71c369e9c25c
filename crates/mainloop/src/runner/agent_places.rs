//! Where each coding agent keeps its sessions in a task's home, as `agent_state.rs`
//! carries them: Claude Code's project directory (named after the working directory),
//! Gemini CLI's project directories (`~/.gemini/tmp/<project>/`: the project's root
//! file, its chats and each session's own directory), and OpenCode's SQLite database
//! (`~/.local/share/opencode/opencode.db` and its write-ahead log), copied as one state
//! SQLite can open even while OpenCode writes to it.

use super::agent_state::{real_dirs, writing};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};
use std::time::Duration;

/// Claude Code cuts a project directory's name here and adds a hash of the path.
const CLAUDE_NAME_MAX: usize = 200;

/// Gemini CLI's directory of per-project state in the home.
pub(super) const GEMINI_TMP: &str = ".gemini/tmp";
/// The file in a Gemini project directory naming the project's root: Gemini finds a
/// project's directory by it (so it must name this runner's path once unpacked).
pub(super) const GEMINI_ROOT: &str = ".project_root";
/// The longest `.project_root` read.
const GEMINI_ROOT_MAX: u64 = 4096;

/// OpenCode's data directory in the home (its default `$XDG_DATA_HOME/opencode`).
pub(super) const OPENCODE_DATA: &str = ".local/share/opencode";
/// OpenCode's database, its write-ahead log and its shared-memory index.
pub(super) const OPENCODE_DB: &str = "opencode.db";
pub(super) const OPENCODE_WAL: &str = "opencode.db-wal";
const OPENCODE_SHM: &str = "opencode.db-shm";
/// How many times a copy of the database is tried before the pack gives up.
const COPY_TRIES: usize = 20;
/// The pause between two tries: a checkpoint that got in the way is over by then.
const COPY_PAUSE: Duration = Duration::from_millis(50);
/// A write-ahead log's header: its magic, page size, checkpoint sequence and salts. A
/// log reset (after a checkpoint) or made afresh gets new salts.
const WAL_HEADER: usize = 32;

/// The directory under `~/.claude/projects` where Claude Code keeps the sessions of a
/// process working in `cwd` (its real path): every UTF-16 unit that is not an ASCII
/// letter or digit becomes `-`; a name longer than 200 is cut there and followed by `-`
/// and a hash of the path in base 36 (as the CLI does, checked against it).
pub(super) fn claude_project_name(cwd: &str) -> String {
    let mut name = String::with_capacity(cwd.len());
    for c in cwd.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else {
            name.extend(std::iter::repeat_n('-', c.len_utf16()));
        }
    }
    if name.len() <= CLAUDE_NAME_MAX {
        return name;
    }
    // Java's string hash over UTF-16 units, as a 32-bit integer.
    let hash = cwd.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    // The name is all ASCII, so cutting at a byte count cuts at a character.
    format!(
        "{}-{}",
        &name[..CLAUDE_NAME_MAX],
        base36(hash.unsigned_abs())
    )
}

pub(super) fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// The Gemini CLI project directories under `tmp` (`~/.gemini/tmp`) whose root lies in
/// the task's directory `task` (the working directory or one below it), sorted. Gemini
/// names a project's directory by the last part of its root (`work`, from the registry
/// `~/.gemini/projects.json`), the same on every runner, and finds it again by its
/// `.project_root`; the registry is left behind, Gemini rebuilds it from those files.
pub(super) fn gemini_projects(tmp: &Path, task: &str) -> Vec<std::ffi::OsString> {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    let inside = format!("{}/", task.trim_end_matches('/'));
    let mut projects: Vec<_> = entries
        .flatten()
        .filter(|e| std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir()))
        .filter(|e| {
            let root = e.path().join(GEMINI_ROOT);
            let plain = std::fs::symlink_metadata(&root)
                .is_ok_and(|m| m.is_file() && m.len() <= GEMINI_ROOT_MAX);
            plain
                && std::fs::read_to_string(&root)
                    .is_ok_and(|r| format!("{}/", r.trim()).starts_with(&inside))
        })
        .map(|e| e.file_name())
        .collect();
    projects.sort();
    projects
}

/// Whether `rel`, a path in a Gemini project directory, is of its sessions: the
/// project's root file, a chat (`chats/session-<minute>-<id8>.jsonl`) or a session's
/// own directory (`<session id>/`: its plans, its task tracker). Its logs, checkpoints,
/// memory and shell history stay behind.
pub(super) fn gemini_kept(rel: &Path) -> bool {
    let mut parts = rel.components();
    let (Some(Component::Normal(first)), rest) = (parts.next(), parts.as_path()) else {
        return false;
    };
    if rest.as_os_str().is_empty() {
        return first == GEMINI_ROOT;
    }
    first == "chats" || is_session_id(first)
}

/// Whether a top-level entry of a Gemini project directory holds sessions.
pub(super) fn gemini_kept_dir(name: &OsStr) -> bool {
    name == "chats" || is_session_id(name)
}

/// A session id as Gemini CLI makes them: a UUID in lowercase hex.
fn is_session_id(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
        })
}

/// Copies OpenCode's database in `data` and its write-ahead log into `to` as one state
/// SQLite can open; the names copied, none when there is no database.
///
/// OpenCode may be writing as this runs. It appends to the log, and a checkpoint copies
/// pages that are in the log into the database; a copy of the database taken first and
/// then of the log is one state as long as the log was not reset (its header's salts
/// unchanged) from before the first to after the second: every page a checkpoint wrote
/// meanwhile is in the copied log, which SQLite applies over the database, and a
/// transaction the log copy caught half-written fails its checksums and is left out.
/// Without a log, the database must not change while it is copied. Otherwise the copy
/// is tried again, and after a few tries the pack fails (the server keeps what it had).
pub(super) fn copy_database(data: &Path, to: &Path) -> Result<Vec<&'static str>, String> {
    copy_database_between(data, to, &mut || {})
}

/// [`copy_database`], calling `between` after each copy of the database and before the
/// copy of its log: where a checkpoint and a reset of the log would tear the copy (a
/// test makes them happen there).
pub(super) fn copy_database_between(
    data: &Path,
    to: &Path,
    between: &mut dyn FnMut(),
) -> Result<Vec<&'static str>, String> {
    let (db, wal) = (data.join(OPENCODE_DB), data.join(OPENCODE_WAL));
    if !std::fs::symlink_metadata(&db).is_ok_and(|m| m.is_file()) {
        return Ok(Vec::new());
    }
    let copying = |e: std::io::Error| format!("could not copy OpenCode's database: {e}");
    for _ in 0..COPY_TRIES {
        let log_before = wal_header(&wal).map_err(copying)?;
        let db_before = stamp(&db).map_err(copying)?;
        copy_plain(&db, &to.join(OPENCODE_DB)).map_err(copying)?;
        between();
        let copied_log = match &log_before {
            Some(_) => {
                let into = to.join(OPENCODE_WAL);
                copy_plain(&wal, &into).map_err(copying)?;
                wal_header(&into).map_err(copying)?
            }
            None => None,
        };
        let log_after = wal_header(&wal).map_err(copying)?;
        let db_after = stamp(&db).map_err(copying)?;
        let log_kept = log_before == copied_log && copied_log == log_after;
        // A log too short for its header holds no transaction: as if there were none.
        let with_log = log_before.as_ref().is_some_and(|h| h.len() == WAL_HEADER);
        if log_kept && (with_log || db_before == db_after) {
            return Ok(if copied_log.is_some() {
                vec![OPENCODE_DB, OPENCODE_WAL]
            } else {
                vec![OPENCODE_DB]
            });
        }
        let _ = std::fs::remove_file(to.join(OPENCODE_WAL));
        std::thread::sleep(COPY_PAUSE);
    }
    Err("OpenCode's database kept changing while it was copied; trying again later".to_owned())
}

/// The first bytes of the write-ahead log at `path` (up to its header's length), or
/// `None` when there is none; a link counts as none, never followed.
fn wal_header(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut head = Vec::with_capacity(WAL_HEADER);
    match open_plain(path) {
        Ok(file) => {
            file.take(WAL_HEADER as u64).read_to_end(&mut head)?;
            Ok(Some(head))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What tells whether a file changed: its identity, size and modification time.
fn stamp(path: &Path) -> std::io::Result<(u64, u64, u64, i64, i64)> {
    let m = std::fs::symlink_metadata(path)?;
    Ok((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// Copies the plain file `from` (never through a link) to a new file `to`.
fn copy_plain(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut source = open_plain(from)?;
    let _ = std::fs::remove_file(to);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    std::io::copy(&mut source, &mut out)?;
    Ok(())
}

/// Opens `path` for reading if it is a plain file: the file opened is the one checked,
/// so a link put in its place meanwhile is refused rather than followed.
pub(super) fn open_plain(path: &Path) -> std::io::Result<File> {
    let before = std::fs::symlink_metadata(path)?;
    let file = File::open(path)?;
    let opened = file.metadata()?;
    if !before.is_file() || opened.dev() != before.dev() || opened.ino() != before.ino() {
        return Err(std::io::Error::other(format!(
            "{} is not a plain file",
            path.display()
        )));
    }
    Ok(file)
}

/// What of OpenCode's database goes before a kept one takes its place: the log and the
/// index of one database must never meet another (SQLite would apply the log to it).
const OPENCODE_STALE: [&str; 2] = [OPENCODE_WAL, OPENCODE_SHM];

/// Puts the OpenCode database unpacked in `from` into `target` (its data directory in
/// `home`, made as needed through real directories), in place of the home's as a whole:
/// the home's log and index go first, since SQLite would apply a log to the database
/// beside it. A log kept without its database is no database.
pub(super) fn replace_database(from: &Path, home: &Path, target: &Path) -> Result<(), String> {
    let db = from.join(OPENCODE_DB);
    if !std::fs::symlink_metadata(&db).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    real_dirs(home, target)?;
    for name in OPENCODE_STALE {
        let stale = target.join(name);
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(writing(&stale, &e)),
        }
    }
    for name in [OPENCODE_DB, OPENCODE_WAL] {
        let (kept, dest) = (from.join(name), target.join(name));
        if std::fs::symlink_metadata(&kept).is_ok_and(|m| m.is_file()) {
            std::fs::rename(&kept, &dest).map_err(|e| writing(&dest, &e))?;
        }
    }
    Ok(())
}

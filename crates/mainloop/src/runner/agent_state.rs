//! A task's agent state on a runner, kept on the server between runs so that a run moved
//! to another runner resumes the same session: on `save` the sessions the agents left in
//! the task's home are packed into a tar.gz and stored (`PUT /api/runners/state/<task>`);
//! on `prepare` the kept archive is fetched and unpacked into this runner's home for the
//! task. Only sessions travel — Claude Code's project directory for the copy's working
//! directory (renamed for the runner's own path on the way in) and its plan files,
//! Codex's `sessions/`, Gemini CLI's project directories in the task's directory (root
//! file, chats, sessions' own directories) and OpenCode's database (`agent_places.rs`)
//! — never credentials, settings or caches. A session names the paths it ran in (its
//! working directory, its plan file in the home), so the archive says where it was packed
//! (`origin`: the task's directory on that runner; `workdir`: the working directory) and
//! another runner rewrites those paths to its own in the text files as it unpacks: the
//! agent resumes as if it had always run there. OpenCode's database is binary (records
//! of fixed lengths, a checksummed log), never rewritten: it is restored only where both
//! paths are the same as where it was packed. An archive is checked before any of it
//! lands: plain files and directories of those kinds (and the two paths) only, nothing
//! absolute, no `..`, no link or device, within a size cap.

use super::agent_places::{
    self, GEMINI_ROOT, GEMINI_TMP, OPENCODE_DATA, OPENCODE_DB, OPENCODE_WAL, claude_project_name,
};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The largest archive, packed or fetched: what the server keeps at most.
pub(super) const MAX_ARCHIVE: u64 = mainloop_engine::MAX_RUNNER_STATE;
/// The most an archive may unpack to (session logs compress about tenfold).
const MAX_UNPACKED: u64 = 4 * 1024 * 1024 * 1024;
/// The most entries an archive may hold.
const MAX_ENTRIES: usize = 100_000;

/// The file in an archive naming the task's directory on the runner that packed it.
const ORIGIN: &str = "origin";
/// The file in an archive naming the working directory on the runner that packed it.
const WORKDIR: &str = "workdir";
/// The longest `origin` or `workdir` read.
const META_MAX: u64 = 4096;
/// A session file larger than this is moved as it is, its paths not rewritten.
const REWRITE_MAX: u64 = 512 * 1024 * 1024;

/// The task's directory on this runner, the home's parent: every path a session names
/// that is the runner's own lies under it.
fn task_dir(home: &Path) -> Result<String, String> {
    home.parent()
        .and_then(Path::to_str)
        .filter(|d| d.starts_with('/'))
        .map(str::to_owned)
        .ok_or_else(|| format!("{} is not a task's home", home.display()))
}

/// The names in an archive, each a directory of one kind of session file.
const CLAUDE_PROJECT: &str = "claude/project";
const CLAUDE_PLANS: &str = "claude/plans";
const CODEX_SESSIONS: &str = "codex/sessions";
const GEMINI: &str = "gemini/tmp";
const OPENCODE: &str = "opencode/data";
const KNOWN: [&str; 5] = [
    CLAUDE_PROJECT,
    CLAUDE_PLANS,
    CODEX_SESSIONS,
    GEMINI,
    OPENCODE,
];

/// Where the agents' text session files are: (name in the archive, path in the task's
/// home). Claude Code's plan files travel too: a session names its plan by a slug, and a
/// plan written before a move must be there when the agent, resumed elsewhere, proposes
/// it. Gemini's directory is packed only in part ([`agent_places::gemini_kept`]).
fn text_places(home: &Path, cwd: &str) -> [(&'static str, PathBuf); 4] {
    let claude = home.join(".claude");
    [
        (
            CLAUDE_PROJECT,
            claude.join("projects").join(claude_project_name(cwd)),
        ),
        (CLAUDE_PLANS, claude.join("plans")),
        (CODEX_SESSIONS, home.join(".codex").join("sessions")),
        (GEMINI, home.join(GEMINI_TMP)),
    ]
}

/// Packs the sessions in `home` of an agent working in `cwd` into `out`; returns how many
/// files it holds (none: there is nothing to keep).
pub(super) fn pack(home: &Path, cwd: &str, out: &Path) -> Result<usize, String> {
    let file = File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let capped = Capped {
        inner: file,
        written: 0,
    };
    let mut tar = tar::Builder::new(GzEncoder::new(capped, Compression::default()));
    let origin = task_dir(home)?;
    append_meta(&mut tar, ORIGIN, &origin)?;
    append_meta(&mut tar, WORKDIR, cwd)?;
    let mut files = 0;
    let [claude, plans, codex, (gemini, gemini_dir)] = text_places(home, cwd);
    for (name, dir) in [claude, plans, codex] {
        if is_real_dir(&dir) {
            files += add_dir(&mut tar, &dir, Path::new(name))?;
        }
    }
    for project in agent_places::gemini_projects(&gemini_dir, &origin) {
        files += add_gemini_project(
            &mut tar,
            &gemini_dir.join(&project),
            &Path::new(gemini).join(&project),
        )?;
    }
    // Copied aside first: OpenCode may be writing to it, and only a copy checked whole
    // can go into the archive.
    let scratch = out.with_extension("opencode");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| writing(&scratch, &e))?;
    let database =
        agent_places::copy_database(&home.join(OPENCODE_DATA), &scratch).and_then(|names| {
            for name in &names {
                let path = scratch.join(name);
                let meta = std::fs::symlink_metadata(&path).map_err(|e| packing(&e))?;
                add_file(&mut tar, &path, &Path::new(OPENCODE).join(name), &meta)?;
            }
            Ok(names.len())
        });
    let _ = std::fs::remove_dir_all(&scratch);
    files += database?;
    let gz = tar.into_inner().map_err(|e| packing(&e))?;
    let capped = gz.finish().map_err(|e| packing(&e))?;
    capped.inner.sync_all().map_err(|e| packing(&e))?;
    Ok(files)
}

/// Adds `text` as the archive's file `name`.
fn append_meta<W: Write>(tar: &mut tar::Builder<W>, name: &str, text: &str) -> Result<(), String> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(text.len() as u64);
    header.set_mode(0o600);
    tar.append_data(&mut header, name, text.as_bytes())
        .map_err(|e| packing(&e))
}

/// Adds what of the Gemini project directory `dir` is its sessions, as `name/…`.
fn add_gemini_project<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
) -> Result<usize, String> {
    let mut files = 0;
    let root = dir.join(GEMINI_ROOT);
    if let Ok(meta) = std::fs::symlink_metadata(&root)
        && meta.is_file()
    {
        add_file(tar, &root, &name.join(GEMINI_ROOT), &meta)?;
        files += 1;
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| agent_places::gemini_kept_dir(&e.file_name()))
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        if is_real_dir(&entry.path()) {
            files += add_dir(tar, &entry.path(), &name.join(entry.file_name()))?;
        }
    }
    Ok(files)
}

fn packing(e: &std::io::Error) -> String {
    format!("could not pack the agent's session: {e}")
}

fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Adds the plain files under `dir` as `name/…`; links and anything else are left out.
fn add_dir<W: Write>(tar: &mut tar::Builder<W>, dir: &Path, name: &Path) -> Result<usize, String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    let mut files = 0;
    for entry in entries {
        let path = entry.path();
        let inside = name.join(entry.file_name());
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // gone meanwhile
        };
        if meta.is_dir() {
            files += add_dir(tar, &path, &inside)?;
        } else if meta.is_file() {
            add_file(tar, &path, &inside, &meta)?;
            files += 1;
        }
    }
    Ok(files)
}

fn add_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
    meta: &std::fs::Metadata,
) -> Result<(), String> {
    let mut file = agent_places::open_plain(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // The agent may be writing as this runs: a session log is taken up to its last
    // whole line, anything else up to the size it had.
    let len = if path.extension().is_some_and(|x| x == "jsonl") {
        whole_lines(&mut file, meta.len()).map_err(|e| packing(&e))?
    } else {
        meta.len()
    };
    file.seek(SeekFrom::Start(0)).map_err(|e| packing(&e))?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(len);
    header.set_mode(0o600);
    header.set_mtime(
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
    );
    let exact = Exact {
        inner: file,
        left: len,
    };
    tar.append_data(&mut header, name, exact)
        .map_err(|e| packing(&e))
}

/// The length of `file`'s first `len` bytes up to and with their last newline.
fn whole_lines(file: &mut File, len: u64) -> std::io::Result<u64> {
    const STEP: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; usize::try_from(STEP).unwrap_or(65_536)];
    while end > 0 {
        let start = end.saturating_sub(STEP);
        let n = usize::try_from(end - start).unwrap_or(0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Exactly `left` bytes of `inner`, or an error: a file that shrank while it was packed
/// must fail the pack, not make an archive whose sizes lie.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "a file shrank while it was packed",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A file that refuses to grow past [`MAX_ARCHIVE`].
struct Capped {
    inner: File,
    written: u64,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written = self.written.saturating_add(buf.len() as u64);
        if self.written > MAX_ARCHIVE {
            return Err(std::io::Error::other(format!(
                "the agent's session is more than the {} MiB the server keeps",
                MAX_ARCHIVE / (1024 * 1024)
            )));
        }
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Unpacks `archive` into `home` for an agent working in `cwd`, through `staging` (made
/// afresh, removed after): every entry is checked and written there first, so an archive
/// refused halfway leaves the home as it was. A text file the home already has that goes
/// on from the kept one (this runner's own, newer copy of a session log) stays.
pub(super) fn unpack(archive: &Path, staging: &Path, home: &Path, cwd: &str) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(staging);
    std::fs::create_dir_all(staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let result = extract(archive, staging).and_then(|()| {
        let origin = meta(staging, ORIGIN)?;
        let workdir = meta(staging, WORKDIR)?;
        let here = task_dir(home)?;
        if let Some(origin) = origin.as_deref().filter(|o| *o != here) {
            rewrite_origin(staging, origin, &here)?;
        }
        for (name, target) in text_places(home, cwd) {
            let from = staging.join(name);
            if is_real_dir(&from) {
                move_into(&from, home, &target)?;
            }
        }
        // Its records name the working directory and the home, and OpenCode runs a
        // resumed session in the directory it names: elsewhere it would fail, so it is
        // left out and the agent starts afresh.
        let from = staging.join(OPENCODE);
        if origin.as_deref() == Some(here.as_str())
            && workdir.as_deref() == Some(cwd)
            && is_real_dir(&from)
        {
            agent_places::replace_database(&from, home, &home.join(OPENCODE_DATA))?;
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(staging);
    result
}

/// The path the archive's file `name` (`origin`, `workdir`) holds; `None` in an archive
/// from before it was kept.
fn meta(staging: &Path, name: &str) -> Result<Option<String>, String> {
    let file = staging.join(name);
    let Ok(meta) = std::fs::symlink_metadata(&file) else {
        return Ok(None);
    };
    if !meta.is_file() || meta.len() > META_MAX {
        return Err(corrupt(format!("its {name} is not a short file")));
    }
    let path = std::fs::read_to_string(&file).map_err(corrupt)?;
    if !path.starts_with('/') || path.contains(['\n', '\0']) {
        return Err(corrupt(format!("its {name} is not an absolute path")));
    }
    Ok(Some(path))
}

/// Rewrites the task directory `origin` of the runner that packed the archive to this
/// one's, `here`, in every text session file under `staging` (never in OpenCode's
/// database, whose records would no longer hold together).
fn rewrite_origin(staging: &Path, origin: &str, here: &str) -> Result<(), String> {
    let mut stack: Vec<PathBuf> = KNOWN
        .iter()
        .filter(|k| **k != OPENCODE)
        .map(|k| staging.join(k))
        .collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && meta.len() <= REWRITE_MAX {
                let text = std::fs::read(&path).map_err(|e| writing(&path, &e))?;
                if let Some(new) = replaced(&text, origin.as_bytes(), here.as_bytes()) {
                    std::fs::write(&path, new).map_err(|e| writing(&path, &e))?;
                }
            }
        }
    }
    Ok(())
}

/// `text` with every `from` replaced by `to`; `None` when it has none.
fn replaced(text: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut any = false;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
        any = true;
    }
    if !any {
        return None;
    }
    out.extend_from_slice(rest);
    Some(out)
}

fn corrupt(why: impl std::fmt::Display) -> String {
    format!("the agent state kept on the server is unusable: {why}")
}

/// Writes the archive's entries under `staging`, refusing anything but plain files and
/// directories under the known names, with relative paths, within the caps.
fn extract(archive: &Path, staging: &Path) -> Result<(), String> {
    let file =
        File::open(archive).map_err(|e| format!("cannot read {}: {e}", archive.display()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut total: u64 = 0;
    for (count, entry) in tar.entries().map_err(corrupt)?.enumerate() {
        if count >= MAX_ENTRIES {
            return Err(corrupt(format!("more than {MAX_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        let rel = checked_path(&path).map_err(corrupt)?;
        let kind = entry.header().entry_type();
        let dest = staging.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).map_err(|e| writing(&dest, &e))?;
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) || !session_file(&rel) {
            return Err(corrupt(format!(
                "{} is not a plain file of a session",
                path.display()
            )));
        }
        total = total.saturating_add(entry.size());
        if total > MAX_UNPACKED {
            return Err(corrupt(format!(
                "it unpacks to more than {} GiB",
                MAX_UNPACKED >> 30
            )));
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| writing(parent, &e))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(|e| writing(&dest, &e))?;
        std::io::copy(&mut entry, &mut out).map_err(corrupt)?;
    }
    Ok(())
}

pub(super) fn writing(path: &Path, e: &std::io::Error) -> String {
    format!("cannot write {}: {e}", path.display())
}

/// `path` as a relative path of plain names under one of the [`KNOWN`] names.
fn checked_path(path: &Path) -> Result<PathBuf, String> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(name) => rel.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{} leaves the archive", path.display()));
            }
        }
    }
    if is_meta(&rel) || KNOWN.iter().any(|p| rel.starts_with(p)) {
        Ok(rel)
    } else {
        Err(format!("{} is not an agent's session", path.display()))
    }
}

fn is_meta(rel: &Path) -> bool {
    rel == Path::new(ORIGIN) || rel == Path::new(WORKDIR)
}

/// Whether `rel` (under a [`KNOWN`] name) may be a file: one inside a kind's directory,
/// of the sessions of a Gemini project, or OpenCode's database and its log.
fn session_file(rel: &Path) -> bool {
    if is_meta(rel) {
        return true;
    }
    if let Ok(inside) = rel.strip_prefix(GEMINI) {
        let mut parts = inside.components();
        return parts.next().is_some() && agent_places::gemini_kept(parts.as_path());
    }
    if let Ok(inside) = rel.strip_prefix(OPENCODE) {
        return inside == Path::new(OPENCODE_DB) || inside == Path::new(OPENCODE_WAL);
    }
    rel.components().count() >= 3
}

/// Moves the files under `from` to the same places under `target`, a directory inside
/// `home` made as needed: never through a link, so nothing lands outside the home.
fn move_into(from: &Path, home: &Path, target: &Path) -> Result<(), String> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = from.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(|e| writing(&dir, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| writing(&dir, &e))?;
            let rel = rel.join(entry.file_name());
            let meta = entry.metadata().map_err(|e| writing(&entry.path(), &e))?;
            if meta.is_dir() {
                stack.push(rel);
                continue;
            }
            let dest = target.join(&rel);
            let parent = dest.parent().unwrap_or(target);
            real_dirs(home, parent)?;
            if !extends(&dest, &entry.path()).map_err(|e| writing(&dest, &e))? {
                // A rename replaces whatever the name was, a link included, never what
                // a link points to.
                std::fs::rename(entry.path(), &dest).map_err(|e| writing(&dest, &e))?;
            }
        }
    }
    Ok(())
}

/// Makes `dir` (inside `home`) a directory, each part of it below `home` a real
/// directory, not a link.
pub(super) fn real_dirs(home: &Path, dir: &Path) -> Result<(), String> {
    let rel = dir
        .strip_prefix(home)
        .map_err(|_| format!("{} is outside {}", dir.display(), home.display()))?;
    let mut at = home.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{} is in the way of the agent's session (not a directory)",
                    at.display()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(|e| writing(&at, &e))?;
            }
            Err(e) => return Err(writing(&at, &e)),
        }
    }
    Ok(())
}

/// Whether `have` is a plain file that begins with all of `kept`: the same session log,
/// as far as or further than the one kept.
fn extends(have: &Path, kept: &Path) -> std::io::Result<bool> {
    let meta = match std::fs::symlink_metadata(have) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let kept_len = std::fs::metadata(kept)?.len();
    if !meta.is_file() || meta.len() < kept_len {
        return Ok(false);
    }
    let (mut a, mut b) = (File::open(have)?.take(kept_len), File::open(kept)?);
    let (mut x, mut y) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = b.read(&mut y)?;
        if n == 0 {
            return Ok(true);
        }
        a.read_exact(&mut x[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
#[path = "agent_state_tests.rs"]
mod tests;

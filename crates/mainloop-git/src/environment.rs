//! A task's environment as the base branch declares it (`.mainloop.toml`, read where
//! the agent cannot rewrite it) and the safe copy of untracked files (`.env`, local
//! config) from the repository's main checkout into a task's worktree: regular files
//! only, never through or onto a symlink, never outside the worktree, never over a
//! file the worktree has, and within fixed limits, checked before anything is written.

use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use mainloop_domain::environment::EnvSpec;

use crate::check::CONFIG_FILE;
use crate::{Git, GitError, Repo, Worktree};

/// Most files one task's `copy` may bring in.
pub const MAX_COPY_FILES: usize = 1000;
/// Most bytes one task's `copy` may bring in.
pub const MAX_COPY_BYTES: u64 = 50 * 1024 * 1024;
/// Most directory entries a glob may look at before it is refused as too broad.
const MAX_VISITED: usize = 100_000;

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Paths copied, relative to the worktree.
    pub copied: Vec<String>,
    /// Paths the worktree already had, left as they were.
    pub kept: Vec<String>,
    /// Patterns that matched nothing.
    pub unmatched: Vec<String>,
}

impl Git {
    /// `.mainloop.toml` as the task's base branch has it, as JSON; `Null` when the file
    /// is missing. An error when it is not valid TOML.
    pub async fn config_at_base(&self, wt: &Worktree) -> Result<serde_json::Value, GitError> {
        let spec = format!("refs/heads/{}:{CONFIG_FILE}", wt.base);
        let out = self.cmd(&wt.path).args(["show", &spec]).output().await?;
        if !out.success() {
            return Ok(serde_json::Value::Null);
        }
        parse_config(&out.text(), Path::new(&spec))
    }

    /// The environment spec as the task's base branch has it; the default when the
    /// file is missing. An error when the file is not valid TOML or a value is refused.
    pub async fn env_spec_at_base(&self, wt: &Worktree) -> Result<EnvSpec, GitError> {
        let value = self.config_at_base(wt).await?;
        EnvSpec::from_value(&value).map_err(|message| GitError::Config {
            path: PathBuf::from(format!("refs/heads/{}:{CONFIG_FILE}", wt.base)),
            message,
        })
    }

    /// The local checkout a task's repository is, where untracked files live; `None`
    /// for a cached clone or a bare repository, which have none.
    #[must_use]
    pub fn main_checkout(&self, repo: &Repo) -> Option<PathBuf> {
        (!repo.is_clone && repo.path.join(".git").exists()).then(|| repo.path.clone())
    }
}

/// `.mainloop.toml` as JSON, for the spec's parser (which also sees `check`, and
/// ignores it).
pub fn parse_config(text: &str, path: &Path) -> Result<serde_json::Value, GitError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| GitError::Config {
            path: path.to_path_buf(),
            message: e.message().to_owned(),
        })?;
    serde_json::to_value(table).map_err(|e| GitError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Copies what `patterns` match in `main` (a checkout) into `worktree`. Blocking; run
/// it off the async threads. Refuses, before writing anything, a pattern that reaches a
/// symlink or leaves the checkout, and more than [`MAX_COPY_FILES`] files or
/// [`MAX_COPY_BYTES`] bytes; while writing, refuses any directory on the way that is
/// not a real directory inside the worktree.
pub fn copy_into_worktree(
    main: &Path,
    worktree: &Path,
    patterns: &[String],
) -> Result<CopyReport, GitError> {
    let main = canonical(main)?;
    let root = canonical(worktree)?;
    let mut report = CopyReport::default();
    let mut files: Vec<(PathBuf, u64)> = Vec::new();
    let mut visited = 0usize;
    for pattern in patterns {
        let parts = pattern_parts(pattern)?;
        let before = files.len();
        collect(&main, &main, &parts, pattern, &mut files, &mut visited)?;
        if files.len() == before {
            report.unmatched.push(pattern.clone());
        }
        if files.len() > MAX_COPY_FILES {
            return Err(refused(format!(
                "`copy` matches more than {MAX_COPY_FILES} files; name fewer"
            )));
        }
    }
    files.sort();
    files.dedup();
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    if total > MAX_COPY_BYTES {
        return Err(refused(format!(
            "`copy` matches {total} bytes, more than the {MAX_COPY_BYTES} allowed"
        )));
    }
    for (rel, _) in &files {
        let shown = rel.display().to_string();
        if copy_one(&main, &root, rel)? {
            report.copied.push(shown);
        } else {
            report.kept.push(shown);
        }
    }
    Ok(report)
}

fn refused(message: String) -> GitError {
    GitError::Config {
        path: PathBuf::from(CONFIG_FILE),
        message,
    }
}

fn canonical(path: &Path) -> Result<PathBuf, GitError> {
    std::fs::canonicalize(path).map_err(|e| GitError::io("resolve", path, e))
}

/// A pattern's components, each a literal name or a glob; anything that is not a plain
/// relative path is refused here too, whatever the spec's parser let through.
fn pattern_parts(pattern: &str) -> Result<Vec<String>, GitError> {
    let mut parts = Vec::new();
    for c in Path::new(pattern).components() {
        match c {
            Component::Normal(name) => match name.to_str() {
                Some(".git") | None => {
                    return Err(refused(format!("`copy` entry {pattern:?} is not allowed")));
                }
                Some(name) => parts.push(name.to_owned()),
            },
            Component::CurDir => {}
            _ => {
                return Err(refused(format!(
                    "`copy` entry {pattern:?} must stay inside the repository"
                )));
            }
        }
    }
    if parts.is_empty() {
        return Err(refused(format!("`copy` entry {pattern:?} names no file")));
    }
    Ok(parts)
}

fn is_glob(part: &str) -> bool {
    part.contains(['*', '?'])
}

/// Adds the regular files under `dir` (inside `main`) that `parts` match, as paths
/// relative to `main`. Symlinks are refused by name; `.git` is never entered.
fn collect(
    main: &Path,
    dir: &Path,
    parts: &[String],
    pattern: &str,
    out: &mut Vec<(PathBuf, u64)>,
    visited: &mut usize,
) -> Result<(), GitError> {
    let Some((first, rest)) = parts.split_first() else {
        return add_entry(main, dir, pattern, out, visited);
    };
    if first == "**" {
        // Zero directories, then each subdirectory in turn.
        collect(main, dir, rest, pattern, out, visited)?;
        for (path, meta) in entries(dir, visited)? {
            if meta.is_dir() {
                collect(main, &path, parts, pattern, out, visited)?;
            }
        }
        return Ok(());
    }
    if !is_glob(first) {
        let path = dir.join(first);
        return match std::fs::symlink_metadata(&path) {
            Ok(_) => collect(main, &path, rest, pattern, out, visited),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(GitError::io("read", path, e)),
        };
    }
    for (path, _) in entries(dir, visited)? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if glob_match(first.as_bytes(), name.as_bytes()) {
            collect(main, &path, rest, pattern, out, visited)?;
        }
    }
    Ok(())
}

/// The entries of `dir` (none when it is not a directory), `.git` left out, counted
/// against the limit that refuses a glob over half the disk.
fn entries(dir: &Path, visited: &mut usize) -> Result<Vec<(PathBuf, std::fs::Metadata)>, GitError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| GitError::io("read", dir, e))?;
    if !meta.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| GitError::io("read", dir, e))? {
        let entry = entry.map_err(|e| GitError::io("read", dir, e))?;
        *visited += 1;
        if *visited > MAX_VISITED {
            return Err(refused(format!(
                "`copy` looks at more than {MAX_VISITED} files; make its patterns narrower"
            )));
        }
        if entry.file_name() == ".git" {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(|e| GitError::io("read", entry.path(), e))?;
        out.push((entry.path(), meta));
    }
    Ok(out)
}

/// A matched path: a regular file is taken, a directory's files all are, a symlink
/// (or anything else) is refused.
fn add_entry(
    main: &Path,
    path: &Path,
    pattern: &str,
    out: &mut Vec<(PathBuf, u64)>,
    visited: &mut usize,
) -> Result<(), GitError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| GitError::io("read", path, e))?;
    let rel = path.strip_prefix(main).unwrap_or(path).to_path_buf();
    if meta.file_type().is_symlink() {
        return Err(refused(format!(
            "`copy` entry {pattern:?} reaches {}, a symlink; only regular files are copied",
            rel.display()
        )));
    }
    if meta.is_dir() {
        let all = ["**".to_owned(), "*".to_owned()];
        for (child, child_meta) in entries(path, visited)? {
            if child_meta.is_dir() {
                collect(main, &child, &all, pattern, out, visited)?;
            } else {
                add_entry(main, &child, pattern, out, visited)?;
            }
        }
        return Ok(());
    }
    if !meta.is_file() {
        return Err(refused(format!(
            "`copy` entry {pattern:?} reaches {}, which is not a regular file",
            rel.display()
        )));
    }
    // A literal path may pass through a symlinked directory of the checkout.
    let resolved = canonical(path)?;
    if !resolved.starts_with(main) {
        return Err(refused(format!(
            "`copy` entry {pattern:?} reaches {}, which lies outside the repository through a symlink",
            rel.display()
        )));
    }
    if out.len() <= MAX_COPY_FILES {
        out.push((rel, meta.len()));
    }
    Ok(())
}

/// Copies `rel` from `main` into `root`, creating each missing directory and checking
/// each existing one is a real directory inside `root`. Whether it wrote the file
/// (`false`: the worktree had one, which is kept).
fn copy_one(main: &Path, root: &Path, rel: &Path) -> Result<bool, GitError> {
    let mut dest = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    let Some((file, dirs)) = parts.split_last() else {
        return Ok(false);
    };
    for dir in dirs {
        dest.push(dir);
        match std::fs::symlink_metadata(&dest) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(refused(format!(
                    "cannot copy {}: {} in the worktree is not a directory (a symlink?)",
                    rel.display(),
                    dest.strip_prefix(root).unwrap_or(&dest).display()
                )));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                std::fs::create_dir(&dest).map_err(|e| GitError::io("create", &dest, e))?;
            }
            Err(e) => return Err(GitError::io("read", &dest, e)),
        }
        if !canonical(&dest)?.starts_with(root) {
            return Err(refused(format!(
                "cannot copy {}: {} leaves the worktree",
                rel.display(),
                dest.display()
            )));
        }
    }
    dest.push(file);
    if std::fs::symlink_metadata(&dest).is_ok() {
        return Ok(false);
    }
    let src_path = main.join(rel);
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&src_path)
        .map_err(|e| GitError::io("open", &src_path, e))?;
    let mode = src
        .metadata()
        .map_err(|e| GitError::io("read", &src_path, e))?
        .permissions()
        .mode()
        & 0o777;
    // `create_new` fails on anything already there, a dangling symlink included.
    let mut out = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(mode)
        .open(&dest)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(GitError::io("create", &dest, e)),
    };
    std::io::copy(&mut src, &mut out).map_err(|e| GitError::io("copy", &dest, e))?;
    Ok(true)
}

/// `*` (any run within a name) and `?` (one character) against one path component; a
/// leading dot is matched only by a leading dot in the pattern, as shells do.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pattern.first() != Some(&b'.') {
        return false;
    }
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_within_one_name() {
        let m = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
        assert!(m("*.env", "local.env"));
        assert!(m("*", "a"));
        assert!(!m("*", ".env"));
        assert!(m(".*", ".env"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m(".env*", ".env.local"));
    }
}

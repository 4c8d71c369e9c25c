//! A local git repository with one commit on `main`, as a task's repository.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir` with a fixed identity; fails the test when git does.
pub fn git(dir: &Path, args: &[&str]) -> String {
    try_git(dir, args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`git`], or an error saying which command failed and what git said.
pub fn try_git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A repository in a temporary directory (removed on drop), by its canonical path.
#[derive(Debug)]
pub struct GitRepo {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl GitRepo {
    /// `main` with one commit adding `README.md`.
    #[must_use]
    pub fn new() -> Self {
        Self::with_readme("x\n")
    }

    /// `main` with one commit adding a `README.md` that says `readme`.
    #[must_use]
    pub fn with_readme(readme: &str) -> Self {
        Self::try_with_readme(readme).unwrap()
    }

    /// [`GitRepo::with_readme`], or the error that stopped it.
    pub fn try_with_readme(readme: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = std::fs::canonicalize(dir.path())?;
        try_git(&path, &["init", "-q", "-b", "main"])?;
        std::fs::write(path.join("README.md"), readme)?;
        try_git(&path, &["add", "-A"])?;
        try_git(&path, &["commit", "-q", "-m", "init"])?;
        Ok(Self { path, _dir: dir })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs git in the repository.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.path, args)
    }
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

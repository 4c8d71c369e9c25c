//! Confining local agents, and the check commands that run the code they write, with
//! bubblewrap (`bwrap`): each run sees the system read-only, its task's worktree and a
//! private home read-write, and nothing of mainloop's data directory, the server user's
//! home, other tasks' worktrees or the server's processes.
//!
//! The sandbox is a command prefix: [`Bubblewrap::command_prefix`] returns the `bwrap`
//! argument list that ends in `--`, and the caller appends the real command. That keeps
//! process handling (groups, killing, stdio) in one place, the agent adapter.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "bubblewrap (bwrap) is not installed; install it (Debian/Ubuntu: apt-get install bubblewrap) or set workers.sandbox = \"off\""
    )]
    NotInstalled,
    #[error(
        "bubblewrap cannot create a sandbox here ({0}); unprivileged user namespaces may be disabled"
    )]
    Unusable(String),
    #[error("{what} {path} does not exist")]
    Missing { what: &'static str, path: String },
    /// `bwrap` takes paths as arguments, and our command lines are strings.
    #[error("path is not valid UTF-8: {0}")]
    NotUtf8(String),
}

/// What every sandboxed run hides and shows, fixed when the server starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Hidden from every run: an empty directory over a directory, an empty file over a
    /// file. mainloop's data directory, the server user's home and the shared temporary
    /// directories belong here. Paths that do not exist are skipped.
    pub hidden: Vec<PathBuf>,
    /// Visible read-only even inside a hidden path: the agent's installation, `PATH`
    /// entries, toolchains. Paths that do not exist are skipped.
    pub read_only: Vec<PathBuf>,
    /// Visible read-write in every run (a shared cache the user chose to allow).
    /// Paths that do not exist are skipped.
    pub read_write: Vec<PathBuf>,
}

/// What one run may touch, beyond the [`Policy`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The working directory (the task's worktree), read-write. Must exist.
    pub cwd: PathBuf,
    /// The run's private home, read-write. Must exist.
    pub home: PathBuf,
    /// More read-only paths for this run, mounted even inside read-write ones: the
    /// repository's shared git directory, and the worktree's `.git` file, so the agent
    /// cannot point git elsewhere for the commands mainloop later runs there.
    /// Paths that do not exist are skipped.
    pub read_only: Vec<PathBuf>,
    /// More read-write paths for this run (the worktree's own git directory).
    pub read_write: Vec<PathBuf>,
    /// Single files bound read-write at another path, `(outside, inside)`: the agent's
    /// login credentials placed in its private home. Skipped when `outside` is missing.
    pub files: Vec<(PathBuf, PathBuf)>,
}

/// The bubblewrap sandbox.
#[derive(Clone, PartialEq, Eq)]
pub struct Bubblewrap {
    program: PathBuf,
    policy: Policy,
    /// How the server's root user is kept from lending the agent its power.
    root: AsRoot,
}

/// What a sandbox started by root runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AsRoot {
    /// The server does not run as root: the agent has no capabilities anyway.
    NotRoot,
    /// An unprivileged user in a user namespace of its own, as for any other user, so
    /// the agent can sandbox its own commands in turn (Codex runs bubblewrap itself,
    /// which a capability-less root cannot).
    UserNamespace,
    /// Root with every capability dropped, where user namespaces are refused.
    CapDrop,
}

/// The user and group a sandbox started by root runs as inside its user namespace.
const SANDBOX_ID: &str = "1000";

impl fmt::Debug for Bubblewrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bubblewrap")
            .field("program", &self.program)
            .field("hidden", &self.policy.hidden)
            .field("read_only", &self.policy.read_only)
            .field("read_write", &self.policy.read_write)
            .finish_non_exhaustive()
    }
}

/// How one path is mounted; the order of the variants is the order at equal depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mount {
    Hide,
    ReadOnly,
    ReadWrite,
}

impl Bubblewrap {
    /// Finds `bwrap` on `path_var` (a `PATH` value) and checks that it can create a
    /// sandbox on this machine.
    pub fn detect(path_var: Option<&OsStr>, policy: Policy) -> Result<Self, SandboxError> {
        let program = which("bwrap", path_var).ok_or(SandboxError::NotInstalled)?;
        let mut sandbox = Self::new(program, policy);
        if sandbox.root == AsRoot::CapDrop {
            sandbox.root = AsRoot::UserNamespace;
            if sandbox.probe().is_ok() {
                return Ok(sandbox);
            }
            sandbox.root = AsRoot::CapDrop;
        }
        sandbox.probe()?;
        Ok(sandbox)
    }

    #[must_use]
    pub fn new(program: PathBuf, policy: Policy) -> Self {
        Self {
            program,
            policy,
            root: if running_as_root() {
                AsRoot::CapDrop
            } else {
                AsRoot::NotRoot
            },
        }
    }

    #[must_use]
    pub fn program(&self) -> &Path {
        &self.program
    }

    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Runs `true` in a minimal sandbox with the namespaces every run uses.
    pub fn probe(&self) -> Result<(), SandboxError> {
        let mut args = self.base_args();
        args.extend(["--ro-bind", "/", "/", "--", "true"].map(str::to_owned));
        let out = Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| SandboxError::Unusable(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(SandboxError::Unusable(stderr.trim().to_owned()))
        }
    }

    fn base_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            // The sandbox dies with the process that started it, so killing the agent
            // (the bwrap process) kills everything inside.
            "--die-with-parent",
            // A session of its own: no way to push keystrokes into the server's terminal.
            "--new-session",
            // Its own process table: the server's /proc/PID/environ (API keys, database
            // URL) is not even visible.
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]
        .map(str::to_owned)
        .to_vec();
        match self.root {
            AsRoot::NotRoot => {}
            AsRoot::UserNamespace => args.extend(
                ["--unshare-user", "--uid", SANDBOX_ID, "--gid", SANDBOX_ID].map(str::to_owned),
            ),
            AsRoot::CapDrop => args.extend(["--cap-drop", "ALL"].map(str::to_owned)),
        }
        args
    }

    /// The `bwrap` command line for one run, program first and ending in `--`; append
    /// the command to run inside.
    pub fn command_prefix(&self, scope: &Scope) -> Result<Vec<String>, SandboxError> {
        let cwd = existing("working directory", &scope.cwd)?;
        let home = existing("home", &scope.home)?;

        let hidden: Vec<PathBuf> = self
            .policy
            .hidden
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        // A hidden path inside another hidden path is hidden already.
        let hidden: Vec<PathBuf> = hidden
            .iter()
            .filter(|p| !hidden.iter().any(|o| o != *p && p.starts_with(o)))
            .cloned()
            .collect();
        let is_hidden = |p: &Path| hidden.iter().any(|h| p.starts_with(h));

        let mut mounts: Vec<(Mount, PathBuf)> =
            hidden.iter().map(|p| (Mount::Hide, p.clone())).collect();
        for p in &self.policy.read_only {
            // Outside hidden paths everything is read-only already.
            if let Ok(p) = std::fs::canonicalize(p)
                && is_hidden(&p)
            {
                mounts.push((Mount::ReadOnly, p));
            }
        }
        // Always mounted: these may sit inside a read-write path (a worktree's `.git`).
        for p in &scope.read_only {
            if let Ok(p) = std::fs::canonicalize(p) {
                mounts.push((Mount::ReadOnly, p));
            }
        }
        for p in &self.policy.read_write {
            if let Ok(p) = std::fs::canonicalize(p) {
                mounts.push((Mount::ReadWrite, p));
            }
        }
        for p in &scope.read_write {
            mounts.push((Mount::ReadWrite, existing("read-write path", p)?));
        }
        mounts.push((Mount::ReadWrite, home));
        mounts.push((Mount::ReadWrite, cwd.clone()));
        // A mount hides whatever was mounted below it before, so shallow paths go
        // first: a worktree's own git directory (read-write) after the repository's
        // shared one (read-only), the worktree after the hidden data directory.
        mounts.sort_by_key(|(kind, p)| (depth(p), *kind));
        mounts.dedup();

        let mut args = vec![utf8(&self.program)?];
        args.extend(self.base_args());
        args.extend(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"].map(str::to_owned));
        for (kind, path) in &mounts {
            let path = utf8(path)?;
            match kind {
                Mount::Hide if Path::new(&path).is_dir() => {
                    args.extend(["--tmpfs".to_owned(), path]);
                }
                Mount::Hide => {
                    args.extend(["--ro-bind".to_owned(), "/dev/null".to_owned(), path]);
                }
                Mount::ReadOnly => args.extend(["--ro-bind".to_owned(), path.clone(), path]),
                Mount::ReadWrite => args.extend(["--bind".to_owned(), path.clone(), path]),
            }
        }
        for (outside, inside) in &scope.files {
            if let Ok(outside) = std::fs::canonicalize(outside) {
                args.extend(["--bind".to_owned(), utf8(&outside)?, utf8(inside)?]);
            }
        }
        args.extend(["--chdir".to_owned(), utf8(&cwd)?, "--".to_owned()]);
        Ok(args)
    }
}

/// The directories a program needs to run when its location is hidden: for a script in
/// a Node package (`node_modules/.bin/claude` links into the package), the whole
/// `node_modules` tree it sits in, for its dependencies and bundled binaries; otherwise
/// the directory of the resolved file (a native install's versions directory).
#[must_use]
pub fn install_roots(program: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(parent) = program.parent().filter(|p| !p.as_os_str().is_empty()) {
        roots.push(parent.to_path_buf());
    }
    if let Ok(real) = std::fs::canonicalize(program) {
        let node_modules = real
            .ancestors()
            .find(|a| a.file_name() == Some(OsStr::new("node_modules")));
        match node_modules {
            Some(dir) => roots.push(dir.to_path_buf()),
            None => roots.extend(real.parent().map(Path::to_path_buf)),
        }
    }
    roots
}

/// The path to execute `program` by inside a sandbox: a bare name is looked up in
/// `path_var` as a shell would; a path is made absolute with its directories resolved
/// (no `..`, no symlinked directories), keeping its own file name (`node_modules/.bin`
/// links stay links). A path such as `crates/x/../../node_modules/.bin/claude` cannot
/// resolve inside the sandbox, where the directories it walks through are hidden.
#[must_use]
pub fn program_path(program: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    let found = which(program, path_var)?;
    let (Some(dir), Some(name)) = (found.parent(), found.file_name()) else {
        return Some(found);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    Some(
        std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(found),
    )
}

/// Looks `program` up like a shell would: a name with a slash is taken as it is.
#[must_use]
pub fn which(program: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn existing(what: &'static str, p: &Path) -> Result<PathBuf, SandboxError> {
    std::fs::canonicalize(p).map_err(|_| SandboxError::Missing {
        what,
        path: p.display().to_string(),
    })
}

fn depth(p: &Path) -> usize {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

fn utf8(p: &Path) -> Result<String, SandboxError> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| SandboxError::NotUtf8(p.display().to_string()))
}

/// Whether this process runs as root, read from `/proc` so the crate needs no libc
/// bindings; elsewhere (no `/proc`) it answers no, which only skips the root measures.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeper_mounts_come_after_shallower_ones_and_nested_hides_collapse() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let wt = data.join("worktrees/a");
        let home = data.join("homes/a");
        let repo_git = root.path().join("repo/.git");
        let wt_git = repo_git.join("worktrees/a");
        for d in [&wt, &home, &wt_git] {
            std::fs::create_dir_all(d).unwrap();
        }
        let bw = Bubblewrap::new(
            PathBuf::from("/usr/bin/bwrap"),
            Policy {
                hidden: vec![root.path().to_path_buf(), data, "/nonexistent".into()],
                read_only: vec!["/usr/bin".into()],
                read_write: vec![],
            },
        );
        let args = bw
            .command_prefix(&Scope {
                cwd: wt.clone(),
                home,
                read_only: vec![repo_git.clone()],
                read_write: vec![wt_git.clone()],
                files: vec![],
            })
            .unwrap();
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap().display().to_string();
        let pos = |s: &str| args.iter().position(|a| a == s).unwrap();
        assert_eq!(args.last().map(String::as_str), Some("--"));
        // The data directory is inside the hidden root: one tmpfs, not two.
        assert_eq!(args.iter().filter(|a| *a == "--tmpfs").count(), 1);
        assert!(!args.iter().any(|a| a == "/nonexistent"));
        // /usr/bin is not hidden, so it needs no mount of its own.
        assert!(!args.iter().any(|a| a == "/usr/bin"));
        assert!(pos(&canon(root.path())) < pos(&canon(&repo_git)));
        assert!(pos(&canon(&repo_git)) < pos(&canon(&wt_git)));
        assert!(pos(&canon(root.path())) < pos(&canon(&wt)));
        assert_eq!(args[pos(&canon(&wt_git)) - 1], "--bind");
        assert_eq!(args[pos(&canon(&repo_git)) - 1], "--ro-bind");
        assert_eq!(args[args.len() - 2], canon(&wt));
    }

    #[test]
    fn a_missing_worktree_is_an_error_not_a_wider_sandbox() {
        let bw = Bubblewrap::new(PathBuf::from("bwrap"), Policy::default());
        let err = bw
            .command_prefix(&Scope {
                cwd: "/nonexistent/wt".into(),
                home: "/".into(),
                ..Scope::default()
            })
            .unwrap_err();
        assert!(matches!(err, SandboxError::Missing { .. }), "{err}");
    }

    #[test]
    fn which_finds_executables_on_the_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths([dir.path()]).unwrap();
        assert_eq!(which("tool", Some(&path)), None, "not executable yet");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(which("tool", Some(&path)), Some(exe.clone()));
        assert_eq!(which("missing", Some(&path)), None);
        assert_eq!(which(exe.to_str().unwrap(), None), Some(exe));
    }

    #[test]
    fn node_packages_bring_their_whole_node_modules_tree() {
        let dir = tempfile::tempdir().unwrap();
        let nm = dir.path().join("node_modules");
        let pkg = nm.join("@scope/cli");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::create_dir_all(nm.join(".bin")).unwrap();
        std::fs::write(pkg.join("cli.js"), "").unwrap();
        let link = nm.join(".bin/cli");
        std::os::unix::fs::symlink("../@scope/cli/cli.js", &link).unwrap();
        let roots = install_roots(&link);
        assert!(
            roots.contains(&std::fs::canonicalize(&nm).unwrap()),
            "{roots:?}"
        );
        let native = dir.path().join("versions/2.1.0");
        std::fs::create_dir_all(native.parent().unwrap()).unwrap();
        std::fs::write(&native, "").unwrap();
        let roots = install_roots(&native);
        assert!(roots.contains(&std::fs::canonicalize(dir.path().join("versions")).unwrap()));
    }
}

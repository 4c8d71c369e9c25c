//! The sandbox against the real `bwrap`: what a confined process can and cannot reach.
//! These tests need bubblewrap (`.ci/run` installs it) and fail without it, rather than
//! pass while proving nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mainloop_sandbox::{Bubblewrap, Policy, Scope, install_roots, program_path};

/// A server's world: a data directory with a database and two tasks' worktrees (on
/// one repository), the server user's home with a private key, and a private home
/// for task A's agent.
struct World {
    _root: tempfile::TempDir,
    data: PathBuf,
    user_home: PathBuf,
    repo: PathBuf,
    wt_a: PathBuf,
    wt_b: PathBuf,
    agent_home: PathBuf,
    bwrap: Bubblewrap,
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

fn world() -> World {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let user_home = root.path().join("home");
    let repo = root.path().join("repo");
    std::fs::create_dir_all(user_home.join(".ssh")).unwrap();
    std::fs::write(user_home.join(".ssh/id_ed25519"), "SECRET-KEY").unwrap();
    std::fs::create_dir_all(data.join("worktrees")).unwrap();
    std::fs::write(data.join("mainloop.db"), "SECRET-DATABASE").unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    let wt_a = data.join("worktrees/a");
    let wt_b = data.join("worktrees/b");
    git(
        &repo,
        &["worktree", "add", "-q", "-b", "a", wt_a.to_str().unwrap()],
    );
    git(
        &repo,
        &["worktree", "add", "-q", "-b", "b", wt_b.to_str().unwrap()],
    );
    std::fs::write(wt_b.join("secret.txt"), "SECRET-OTHER-TASK").unwrap();
    let agent_home = data.join("homes/a");
    std::fs::create_dir_all(&agent_home).unwrap();

    let path = std::env::var_os("PATH").unwrap_or_default();
    let bwrap = Bubblewrap::detect(
        Some(&path),
        Policy {
            // As the server hides them: its data, its user's home, the shared /tmp (where
            // these test directories live, so everything above is hidden twice over).
            hidden: vec![data.clone(), user_home.clone(), "/tmp".into()],
            read_only: std::env::split_paths(&path).collect(),
            read_write: vec![],
        },
    )
    .unwrap_or_else(|e| panic!("these tests need a working bubblewrap: {e}"));
    World {
        _root: root,
        data,
        user_home,
        repo,
        wt_a,
        wt_b,
        agent_home,
        bwrap,
    }
}

impl World {
    fn scope(&self) -> Scope {
        Scope {
            cwd: self.wt_a.clone(),
            home: self.agent_home.clone(),
            read_only: vec![self.repo.join(".git"), self.wt_a.join(".git")],
            read_write: vec![],
            files: vec![],
        }
    }

    /// Runs `script` in task A's sandbox; returns (exit code, stdout + stderr).
    fn sh(&self, script: &str) -> (i32, String) {
        let prefix = self.bwrap.command_prefix(&self.scope()).unwrap();
        let out = Command::new(&prefix[0])
            .args(&prefix[1..])
            .args(["sh", "-c", script])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.agent_home)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn refused(&self, script: &str) {
        let (code, out) = self.sh(script);
        assert_ne!(
            code, 0,
            "`{script}` should fail in the sandbox, printed: {out}"
        );
        assert!(!out.contains("SECRET"), "`{script}` leaked: {out}");
    }
}

#[test]
fn the_worktree_and_home_are_writable_and_the_rest_is_out_of_reach() {
    let w = world();
    let db = w.data.join("mainloop.db");
    let other = w.wt_b.join("secret.txt");
    let key = w.user_home.join(".ssh/id_ed25519");

    // The task's own worktree: read and write, and git works (read-only).
    let (code, out) = w
        .sh("cat README && echo made > new.txt && git status --short && git log --oneline | wc -l");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello") && out.contains("?? new.txt"), "{out}");
    assert_eq!(
        std::fs::read_to_string(w.wt_a.join("new.txt")).unwrap(),
        "made\n"
    );
    // The private home.
    let (code, out) = w.sh("echo x > \"$HOME/.note\" && cat \"$HOME/.note\"");
    assert_eq!(code, 0, "{out}");

    // mainloop's database, another task's worktree, the server user's home.
    w.refused(&format!("cat {}", db.display()));
    // Only the mount points of this run show in the data directory.
    let (_, out) = w.sh(&format!(
        "ls -a {} {}/worktrees",
        w.data.display(),
        w.data.display()
    ));
    assert!(
        !out.contains("mainloop.db") && !out.contains("b\n"),
        "{out}"
    );
    w.refused(&format!("cat {}", other.display()));
    w.refused(&format!("ls {}", w.wt_b.display()));
    w.refused(&format!("cat {}", key.display()));
    // Not through a path that resolves elsewhere either.
    w.refused(&format!("ln -s {} link && cat link", db.display()));
    w.refused("cat ../b/secret.txt");

    // The system and the repository's git data are read-only; so is the `.git` file
    // that tells git (run later by mainloop, unconfined) where the repository is.
    w.refused("touch /usr/sandbox-was-here");
    w.refused("touch /etc/sandbox-was-here");
    w.refused(&format!(
        "touch {}/.git/hooks/post-commit",
        w.repo.display()
    ));
    w.refused(&format!(
        "echo '[core] fsmonitor = evil' >> {}/.git/config",
        w.repo.display()
    ));
    w.refused("echo 'gitdir: /elsewhere' > .git");
    w.refused("rm -f .git");
    w.refused("git commit --allow-empty -q -m sneaky");
    assert!(!Path::new("/usr/sandbox-was-here").exists());
    let config = std::fs::read_to_string(w.repo.join(".git/config")).unwrap();
    assert!(!config.contains("evil"));

    // The server's processes (and their environment: API keys, database URL) are not
    // even visible: the sandbox has its own process table.
    let me = std::process::id();
    w.refused(&format!("cat /proc/{me}/environ"));
    let (_, out) = w.sh("ls /proc | grep -c '^[0-9]'");
    let visible: u32 = out.trim().parse().unwrap();
    assert!(visible <= 4, "the sandbox sees {visible} processes");
}

#[test]
fn credentials_files_are_bound_into_the_private_home() {
    let w = world();
    let creds = w.user_home.join(".claude/.credentials.json");
    std::fs::create_dir_all(creds.parent().unwrap()).unwrap();
    std::fs::write(&creds, "{\"token\":\"agent-login\"}").unwrap();
    std::fs::create_dir_all(w.agent_home.join(".claude")).unwrap();
    let mut scope = w.scope();
    scope.files = vec![(creds, w.agent_home.join(".claude/.credentials.json"))];
    let prefix = w.bwrap.command_prefix(&scope).unwrap();
    let out = Command::new(&prefix[0])
        .args(&prefix[1..])
        .args([
            "sh",
            "-c",
            "cat \"$HOME/.claude/.credentials.json\"; ls \"$0\" 2>&1 || true",
        ])
        .arg(w.user_home.join(".ssh"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &w.agent_home)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("agent-login"), "{text}");
    assert!(!text.contains("id_ed25519"), "{text}");
}

/// Killing the agent (the `bwrap` process, as the agent adapter does) leaves nothing
/// running inside, even a process that detached into a session of its own.
#[tokio::test]
async fn killing_a_sandboxed_agent_kills_everything_inside() {
    use mainloop_agent::{Agent, AgentMode, ClaudeCode, LocalProcess, RunSpec, SessionRef};
    let w = world();
    let marker = format!("{}", 4000 + (std::process::id() % 1000));
    let script = format!("setsid sleep {marker}.5 & sleep {marker}.25 & echo started; wait");
    let agent = ClaudeCode::new(vec!["/bin/sh".into(), "-c".into(), script]);
    let mut session = agent
        .start(
            RunSpec {
                cwd: w.wt_a.clone(),
                session: SessionRef::New(uuid::Uuid::new_v4().to_string()),
                mode: AgentMode::Implement,
                model: None,
                append_system_prompt: None,
                env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
            },
            &LocalProcess::sandboxed(w.bwrap.command_prefix(&w.scope()).unwrap()),
        )
        .unwrap();
    // Processes whose command line names the marker (no pgrep: procps may be missing).
    let needle = format!("sleep\0{marker}");
    let running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|c| String::from_utf8_lossy(c).contains(&needle))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while running() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandboxed sleeps never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    session.kill().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while running() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "processes survived the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An agent named by a path through directories the sandbox hides (`…/crates/x/../../
/// node_modules/.bin/claude` in a clone under the home directory) runs by its resolved
/// path; the path as written cannot be walked inside the sandbox.
#[test]
fn a_program_named_through_hidden_directories_runs_by_its_resolved_path() {
    let w = world();
    let root = w.data.parent().unwrap().to_path_buf();
    let bin = root.join("clone/node_modules/.bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.join("clone/crates/mainloop")).unwrap();
    let tool = root.join("clone/node_modules/tool.sh");
    std::fs::write(&tool, "#!/bin/sh\necho agent-ran\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../tool.sh", bin.join("agent")).unwrap();
    let written = root.join("clone/crates/mainloop/../../node_modules/.bin/agent");
    let written = written.to_str().unwrap();
    let resolved = program_path(written, None).unwrap();
    assert_eq!(resolved, std::fs::canonicalize(&bin).unwrap().join("agent"));

    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut read_only: Vec<PathBuf> = std::env::split_paths(&path).collect();
    read_only.extend(install_roots(&resolved));
    let bwrap = Bubblewrap::detect(
        Some(&path),
        Policy {
            hidden: vec![root, "/tmp".into()],
            read_only,
            read_write: vec![],
        },
    )
    .unwrap();
    let run = |program: &str| {
        let prefix = bwrap.command_prefix(&w.scope()).unwrap();
        Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(program)
            .env_clear()
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let out = run(resolved.to_str().unwrap());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("agent-ran"),
        "{out:?}"
    );
    // As written, the path walks through `clone/crates`, which the sandbox hides.
    assert!(!run(written).status.success());
}

#[test]
fn an_agent_can_sandbox_its_own_commands_but_not_lift_its_read_only_mounts() {
    let w = world();
    // Codex runs each command in a bubblewrap of its own, inside ours.
    let (code, out) =
        w.sh("bwrap --unshare-user --ro-bind / / --dev /dev -- sh -c 'echo nested-ok'");
    assert_eq!(code, 0, "a nested sandbox failed: {out}");
    assert!(out.contains("nested-ok"), "{out}");
    // Whoever started it, the agent holds no capability to undo a read-only mount.
    w.refused("mount -o remount,rw /usr 2>&1 && echo SECRET-remounted");
    w.refused("touch /usr/mainloop-probe 2>&1 || exit 1");
}

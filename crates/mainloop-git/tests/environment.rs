#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A task's environment from git: the spec read at the base branch, and the copy of
//! untracked files from the main checkout against symlinks, `..`, escaping
//! directories, huge globs and tracked files — nothing outside the worktree touched.

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use mainloop_git::{Git, GitError, MAX_COPY_FILES, Worktree, copy_into_worktree};
use tempfile::TempDir;

mod common;
use common::{git, write};

struct Fx {
    tmp: TempDir,
    git: Git,
    main: PathBuf,
}

impl Fx {
    /// A checkout on `main` whose commit has `files`.
    fn new(files: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let git_ = Git::new(data.join("repos"), data.join("worktrees"))
            .with_env("GIT_CONFIG_GLOBAL", "/dev/null")
            .with_env("GIT_CONFIG_NOSYSTEM", "1");
        let main = tmp.path().join("proj");
        std::fs::create_dir_all(&main).unwrap();
        git(&main, &["init", "-q", "-b", "main"]);
        write(&main.join("README.md"), "hello\n");
        for (path, content) in files {
            write(&main.join(path), content);
        }
        git(&main, &["add", "-A"]);
        git(&main, &["commit", "-q", "-m", "init"]);
        let main = std::fs::canonicalize(main).unwrap();
        Self {
            tmp,
            git: git_,
            main,
        }
    }

    async fn worktree(&self) -> Worktree {
        let repo = self
            .git
            .resolve_repo(self.main.to_str().unwrap())
            .await
            .unwrap();
        assert_eq!(
            self.git.main_checkout(&repo).as_deref(),
            Some(self.main.as_path())
        );
        self.git
            .ensure_worktree(&repo, "abc123", "env", "main")
            .await
            .unwrap()
    }

    fn copy(&self, wt: &Worktree, patterns: &[&str]) -> Result<mainloop_git::CopyReport, GitError> {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        copy_into_worktree(&self.main, &wt.path, &patterns)
    }
}

fn message(e: &GitError) -> String {
    e.to_string()
}

#[tokio::test]
async fn the_spec_is_read_at_the_base_branch_not_from_the_worktree() {
    let fx = Fx::new(&[(
        ".mainloop.toml",
        "check = \"true\"\nsetup = [\"touch dep\"]\nports = 2\n[env]\nAPP = \"x\"\n",
    )]);
    let wt = fx.worktree().await;
    // The agent's copy says otherwise; the base branch wins.
    write(&wt.path.join(".mainloop.toml"), "ports = 8\n");
    let spec = fx.git.env_spec_at_base(&wt).await.unwrap();
    assert_eq!(spec.setup, ["touch dep"]);
    assert_eq!(spec.ports, 2);
    assert_eq!(spec.env["APP"], "x");

    // Malformed TOML and hostile values are refused with the file and the key.
    for (text, words) in [
        ("ports = [", "invalid"),
        ("copy = [\"../outside\"]", "`copy`"),
        ("[env]\nPATH = \"/evil\"", "`env`"),
    ] {
        write(&fx.main.join(".mainloop.toml"), text);
        git(&fx.main, &["commit", "-q", "-am", "change"]);
        let e = fx.git.env_spec_at_base(&wt).await.unwrap_err();
        assert!(message(&e).contains(words), "{text}: {e}");
        assert!(message(&e).contains(".mainloop.toml"), "{e}");
    }
    // No file: nothing to prepare.
    git(&fx.main, &["rm", "-q", ".mainloop.toml"]);
    git(&fx.main, &["commit", "-q", "-m", "rm"]);
    assert!(fx.git.env_spec_at_base(&wt).await.unwrap().is_empty());
}

#[tokio::test]
async fn untracked_files_and_globs_are_copied_and_tracked_files_kept() {
    let fx = Fx::new(&[("config/app.json", "tracked\n")]);
    write(&fx.main.join(".env"), "SECRET=1\n");
    write(&fx.main.join("config/app.json"), "the user's edit\n");
    write(&fx.main.join("config/local.json"), "local\n");
    write(&fx.main.join("deep/a/b/keys.txt"), "k\n");
    write(&fx.main.join("certs/one.pem"), "1\n");
    write(&fx.main.join("certs/sub/two.pem"), "2\n");
    let wt = fx.worktree().await;
    let report = fx
        .copy(
            &wt,
            &[
                ".env",
                "config/*.json",
                "**/keys.txt",
                "certs",
                "missing.txt",
            ],
        )
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(wt.path.join(".env")).unwrap(),
        "SECRET=1\n"
    );
    assert_eq!(
        std::fs::read_to_string(wt.path.join("config/local.json")).unwrap(),
        "local\n"
    );
    assert_eq!(
        std::fs::read_to_string(wt.path.join("deep/a/b/keys.txt")).unwrap(),
        "k\n"
    );
    assert!(wt.path.join("certs/sub/two.pem").is_file());
    // The worktree's tracked file is not overwritten by the checkout's edit.
    assert_eq!(
        std::fs::read_to_string(wt.path.join("config/app.json")).unwrap(),
        "tracked\n"
    );
    assert_eq!(report.kept, ["config/app.json"]);
    assert_eq!(report.unmatched, ["missing.txt"]);
    assert_eq!(report.copied.len(), 5, "{report:?}");
    // Again (a retried setup): everything is there already, nothing changes.
    let again = fx.copy(&wt, &[".env"]).unwrap();
    assert!(again.copied.is_empty() && again.kept == [".env"]);
}

#[tokio::test]
async fn symlinks_dotdot_and_escaping_directories_are_refused_and_nothing_outside_is_touched() {
    let fx = Fx::new(&[]);
    let outside = fx.tmp.path().join("outside");
    write(&outside.join("secret"), "do not read\n");
    symlink(outside.join("secret"), fx.main.join("link.env")).unwrap();
    symlink(&outside, fx.main.join("linkdir")).unwrap();
    write(&fx.main.join("sub/file.txt"), "x\n");
    let wt = fx.worktree().await;

    // A symlink named or matched is refused by name.
    for patterns in [&["link.env"][..], &["*.env"], &["linkdir/secret"]] {
        let e = fx.copy(&wt, patterns).unwrap_err();
        assert!(message(&e).contains("link"), "{patterns:?}: {e}");
    }
    // `..` and absolute paths never reach the disk.
    for pattern in [
        "../outside/secret",
        "/etc/passwd",
        "sub/../../outside/secret",
    ] {
        let e = fx.copy(&wt, &[pattern]).unwrap_err();
        assert!(message(&e).contains("`copy`"), "{pattern}: {e}");
    }
    // A directory of the worktree that is a symlink out of it is not written through.
    symlink(&outside, wt.path.join("sub")).unwrap();
    let e = fx.copy(&wt, &["sub/file.txt"]).unwrap_err();
    assert!(message(&e).contains("not a directory"), "{e}");
    let names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["secret"]);
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "do not read\n"
    );
    assert!(!wt.path.join("link.env").exists());
}

#[tokio::test]
async fn a_huge_glob_is_refused_before_anything_is_copied() {
    let fx = Fx::new(&[]);
    for i in 0..=MAX_COPY_FILES {
        write(&fx.main.join(format!("gen/f{i}.txt")), "x");
    }
    let wt = fx.worktree().await;
    let e = fx.copy(&wt, &["gen/*.txt"]).unwrap_err();
    assert!(message(&e).contains("more than 1000 files"), "{e}");
    assert!(!wt.path.join("gen").exists());
    // Too many bytes, in a few files.
    let big = vec![b'x'; 26 * 1024 * 1024];
    std::fs::write(fx.main.join("big1.bin"), &big).unwrap();
    std::fs::write(fx.main.join("big2.bin"), &big).unwrap();
    let e = fx.copy(&wt, &["big*.bin"]).unwrap_err();
    assert!(message(&e).contains("bytes"), "{e}");
    assert!(!wt.path.join("big1.bin").exists());
}

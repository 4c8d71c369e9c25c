#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! mainloop-git against real git repositories in temp dirs. The library runs with the
//! user's global and system config switched off, which proves it does not rely on
//! them (no identity, no init.defaultBranch). The helpers below set up repositories
//! with a test identity of their own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mainloop_git::{
    FileStat, Git, GitError, MergeOutcome, Repo, Worktree, read_check_command, run_check, slug,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// helpers

mod common;
use common::{git, git_raw, read, write};

struct Fx {
    tmp: TempDir,
    git: Git,
}

impl Fx {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let git = Git::new(data.join("repos"), data.join("worktrees"))
            .with_allow_file_urls(true)
            .with_env("GIT_CONFIG_GLOBAL", "/dev/null")
            .with_env("GIT_CONFIG_NOSYSTEM", "1");
        Self { tmp, git }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// A user's repository on `main` with one commit (README.md).
    fn user_repo(&self, rel: &str) -> PathBuf {
        let dir = self.path(rel);
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        write(&dir.join("README.md"), "hello\n");
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "init"]);
        std::fs::canonicalize(dir).unwrap()
    }

    async fn local(&self, rel: &str) -> Repo {
        let dir = self.user_repo(rel);
        self.git.resolve_repo(dir.to_str().unwrap()).await.unwrap()
    }
}

fn rev(dir: &Path, rev: &str) -> String {
    git(dir, &["rev-parse", rev])
}

fn has_merge_head(dir: &Path) -> bool {
    git_raw(dir, &["rev-parse", "-q", "--verify", "MERGE_HEAD"])
        .status
        .success()
}

// ---------------------------------------------------------------------------
// resolve_repo / base_branch

#[tokio::test]
async fn resolves_a_local_repository() {
    let fx = Fx::new();
    let dir = fx.user_repo("proj");
    let repo = fx.git.resolve_repo(dir.to_str().unwrap()).await.unwrap();
    assert_eq!(repo.path, dir);
    assert!(!repo.is_clone);
    assert_eq!(repo.origin, None);
    assert_eq!(fx.git.base_branch(&repo).await.unwrap(), "main");

    // A path that reaches the same directory through `..` is canonicalised.
    let indirect = dir.join("..").join("proj");
    let again = fx
        .git
        .resolve_repo(indirect.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(again.path, dir);

    // The base is whatever branch is checked out.
    git(&dir, &["checkout", "-q", "-b", "feature"]);
    assert_eq!(fx.git.base_branch(&repo).await.unwrap(), "feature");

    // No branch at all: an error, not a guess.
    git(&dir, &["checkout", "-q", "--detach"]);
    let err = fx.git.base_branch(&repo).await.unwrap_err();
    assert!(matches!(err, GitError::DetachedHead { .. }), "{err}");
}

#[tokio::test]
async fn local_repo_reports_its_origin_url() {
    let fx = Fx::new();
    let dir = fx.user_repo("proj");
    git(
        &dir,
        &["remote", "add", "origin", "https://example.com/a/b.git"],
    );
    let repo = fx.git.resolve_repo(dir.to_str().unwrap()).await.unwrap();
    assert_eq!(repo.origin.as_deref(), Some("https://example.com/a/b.git"));
    assert!(!repo.is_clone);
}

#[tokio::test]
async fn refuses_paths_that_are_not_repositories() {
    let fx = Fx::new();
    let plain = fx.path("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let err = fx
        .git
        .resolve_repo(plain.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::NotARepo { .. }), "{err}");

    let missing = fx.path("missing");
    let err = fx
        .git
        .resolve_repo(missing.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::NotARepo { .. }), "{err}");

    // A directory inside a repository is not that repository.
    let dir = fx.user_repo("proj");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let err = fx
        .git
        .resolve_repo(dir.join("sub").to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::NotARepo { .. }), "{err}");
    assert!(err.to_string().contains("inside the repository"), "{err}");
}

#[tokio::test]
async fn resolves_a_bare_local_repository() {
    let fx = Fx::new();
    let dir = fx.user_repo("proj");
    let bare = fx.path("bare.git");
    git(
        fx.tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            dir.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let repo = fx.git.resolve_repo(bare.to_str().unwrap()).await.unwrap();
    assert_eq!(repo.path, std::fs::canonicalize(&bare).unwrap());
    assert!(!repo.is_clone);
    assert_eq!(fx.git.base_branch(&repo).await.unwrap(), "main");
}

#[tokio::test]
async fn refuses_transport_tricks_and_options() {
    let fx = Fx::new();
    let marker = fx.path("pwned");
    let ext = format!("ext::sh -c touch% {}", marker.display());
    for bad in [
        ext.as_str(),
        "ext::sh -c true",
        "fd::3",
        "--upload-pack=touch /tmp/x",
        "-c",
        "ssh://-oProxyCommand=touch/x",
        "https://example.com/a\nb",
        "",
    ] {
        let err = fx.git.resolve_repo(bad).await.unwrap_err();
        assert!(
            matches!(err, GitError::InvalidRepo { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(!marker.exists());
    // Nothing was cloned.
    assert!(
        !fx.git.cache_dir().exists()
            || std::fs::read_dir(fx.git.cache_dir())
                .unwrap()
                .next()
                .is_none()
    );
}

#[tokio::test]
async fn file_urls_only_when_allowed() {
    let fx = Fx::new();
    let dir = fx.user_repo("proj");
    let url = format!("file://{}", dir.display());
    let strict = Git::new(fx.path("strict/repos"), fx.path("strict/worktrees"));
    let err = strict.resolve_repo(&url).await.unwrap_err();
    assert!(matches!(err, GitError::InvalidRepo { .. }), "{err}");
    assert!(!fx.path("strict/repos").exists());

    // A missing path is refused before git runs; a failed clone leaves nothing behind
    // in the cache.
    let missing = format!("file://{}", fx.path("no-such-remote.git").display());
    let err = fx.git.resolve_repo(&missing).await.unwrap_err();
    assert!(matches!(err, GitError::NotARepo { .. }), "{err}");
    let not_a_repo = fx.path("empty-dir");
    std::fs::create_dir_all(&not_a_repo).unwrap();
    let err = fx
        .git
        .resolve_repo(&format!("file://{}", not_a_repo.display()))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Command { .. }), "{err}");
    assert_eq!(std::fs::read_dir(fx.git.cache_dir()).unwrap().count(), 0);

    let repo = fx.git.resolve_repo(&url).await.unwrap();
    assert!(repo.is_clone);
    assert_eq!(repo.origin.as_deref(), Some(url.as_str()));
    assert_eq!(
        repo.path.parent().unwrap(),
        std::fs::canonicalize(fx.git.cache_dir()).unwrap()
    );
    assert_eq!(rev(&repo.path, "refs/heads/main"), rev(&dir, "main"));
}

#[tokio::test]
async fn local_repositories_are_absolute_existing_and_inside_the_roots() {
    let fx = Fx::new();
    let inside = fx.user_repo("allowed/proj");
    let outside = fx.user_repo("elsewhere/proj");
    std::os::unix::fs::symlink(&outside, fx.path("allowed/link")).unwrap();
    let git = Git::new(fx.path("r/repos"), fx.path("r/worktrees"))
        .with_allow_file_urls(true)
        .with_repo_roots(vec![fx.path("allowed")]);

    git.validate_repo_name(&inside.display().to_string())
        .unwrap();
    git.validate_repo_name(&format!("file://{}", inside.display()))
        .unwrap();
    assert!(
        git.resolve_repo(&inside.display().to_string())
            .await
            .is_ok()
    );
    // URLs are not local: the roots do not apply.
    git.validate_repo_name("https://example.com/a/b.git")
        .unwrap();

    let refused = [
        "proj".to_owned(),
        "./allowed/proj".to_owned(),
        outside.display().to_string(),
        format!("file://{}", outside.display()),
        fx.path("allowed/link").display().to_string(),
        format!("{}/../../elsewhere/proj", inside.display()),
        fx.path("allowed/missing").display().to_string(),
    ];
    for name in &refused {
        let err = git.validate_repo_name(name).unwrap_err();
        assert!(
            matches!(
                err,
                GitError::InvalidRepo { .. } | GitError::NotARepo { .. }
            ),
            "{name}: {err}"
        );
        // Resolving applies the same rules, and so never runs git there.
        assert!(git.resolve_repo(name).await.is_err(), "{name}");
    }
    let err = git
        .validate_repo_name(&outside.display().to_string())
        .unwrap_err();
    assert!(err.to_string().contains("repo_roots"), "{err}");
    // Without roots, any absolute path to an existing directory passes the name check.
    let open = Git::new(fx.path("o/repos"), fx.path("o/worktrees"));
    open.validate_repo_name(&outside.display().to_string())
        .unwrap();
    assert!(open.validate_repo_name("proj").is_err(), "relative");
    // mainloop's own worktrees and clones are never a task's repository, roots or not.
    for own in ["o/worktrees/other-task", "o/repos/a-clone"] {
        let path = fx.user_repo(own);
        let err = open
            .validate_repo_name(&path.display().to_string())
            .unwrap_err();
        assert!(err.to_string().contains("mainloop's own"), "{own}: {err}");
        assert!(
            open.resolve_repo(&format!("{}/.", path.display()))
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn clones_a_remote_into_the_cache_and_fetches_on_reuse() {
    let fx = Fx::new();
    let work = fx.user_repo("work");
    let remote = fx.path("remote.git");
    git(
        fx.tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            remote.to_str().unwrap(),
        ],
    );
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    let url = format!("file://{}", remote.display());

    let repo = fx.git.resolve_repo(&url).await.unwrap();
    assert!(repo.is_clone);
    assert_eq!(fx.git.base_branch(&repo).await.unwrap(), "main");
    let first = rev(&work, "main");
    assert_eq!(rev(&repo.path, "refs/remotes/origin/main"), first);
    // Only the clone itself is in the cache: no temporary leftovers.
    assert_eq!(std::fs::read_dir(fx.git.cache_dir()).unwrap().count(), 1);

    write(&work.join("new.txt"), "new\n");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "second"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let second = rev(&work, "main");
    assert_ne!(first, second);

    let again = fx.git.resolve_repo(&url).await.unwrap();
    assert_eq!(again, repo);
    assert_eq!(rev(&repo.path, "refs/remotes/origin/main"), second);
    // The local base follows the remote while it has nothing of its own.
    assert_eq!(rev(&repo.path, "refs/heads/main"), second);

    // Work on a clone starts from the fetched base and merges into the cache's main.
    let wt = fx
        .git
        .ensure_worktree(&repo, "c10e", "clone work", "main")
        .await
        .unwrap();
    assert_eq!(rev(&wt.path, "HEAD"), second);
    write(&wt.path.join("feature.txt"), "feature\n");
    let sha = fx.git.commit_all(&wt, "feature").await.unwrap().unwrap();
    let merged = fx.git.merge(&repo, &wt, "Feature").await.unwrap();
    let MergeOutcome::Merged { sha: merge_sha } = merged else {
        panic!("expected a merge, got {merged:?}");
    };
    assert_eq!(rev(&repo.path, "refs/heads/main"), merge_sha);
    assert_eq!(rev(&repo.path, "refs/heads/main^2"), sha);
    // Nothing was pushed.
    assert_eq!(rev(&remote, "main"), second);
    // Unpushed local merges survive the next fetch.
    fx.git.resolve_repo(&url).await.unwrap();
    assert_eq!(rev(&repo.path, "refs/heads/main"), merge_sha);
}

#[tokio::test]
async fn errors_carry_command_exit_code_and_stderr() {
    let fx = Fx::new();
    let repo = fx.local("proj").await;
    let wt = fx
        .git
        .ensure_worktree(&repo, "e0e0e0e0", "errors", "main")
        .await
        .unwrap();
    let bogus = Worktree {
        base: "vanished".into(),
        ..wt
    };
    let err = fx.git.diff(&bogus).await.unwrap_err();
    let GitError::Command {
        command,
        code,
        stderr,
    } = &err
    else {
        panic!("expected a command error, got {err:?}");
    };
    assert!(command.starts_with("git merge-base"), "{command}");
    assert_eq!(*code, Some(128));
    assert!(stderr.contains("vanished"), "{stderr}");
    assert!(err.to_string().contains("exit 128"), "{err}");
}

#[tokio::test]
async fn git_commands_time_out_and_their_group_is_killed() {
    let fx = Fx::new();
    let dir = fx.user_repo("proj");
    let marker = unique_sleep_seconds(3);
    let marker = marker.as_str();
    let fake = fx.path("fake-git");
    write(
        &fake,
        &format!("#!/bin/sh\nsleep {marker} &\nsleep {marker}\n"),
    );
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let slow = fx
        .git
        .clone()
        .with_program(&fake)
        .with_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let err = slow.resolve_repo(dir.to_str().unwrap()).await.unwrap_err();
    assert!(matches!(err, GitError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !live_processes_with(marker).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live_processes_with(marker), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// worktrees and commits

#[tokio::test]
async fn ensure_worktree_is_idempotent_and_starts_at_the_base() {
    let fx = Fx::new();
    let repo = fx.local("proj").await;
    let wt = fx
        .git
        .ensure_worktree(&repo, "ab12cd34", "Fix the login bug!", "main")
        .await
        .unwrap();
    assert_eq!(wt.branch, "mainloop/ab12cd34-fix-the-login-bug");
    assert_eq!(wt.base, "main");
    assert_eq!(
        wt.path,
        std::fs::canonicalize(fx.git.worktrees_dir())
            .unwrap()
            .join("ab12cd34")
    );
    assert_eq!(rev(&wt.path, "HEAD"), rev(&repo.path, "main"));
    assert_eq!(
        git(&wt.path, &["symbolic-ref", "HEAD"]),
        "refs/heads/mainloop/ab12cd34-fix-the-login-bug"
    );
    // The user's checkout is untouched.
    assert_eq!(
        git(&repo.path, &["symbolic-ref", "--short", "HEAD"]),
        "main"
    );

    // Second call (a restart): same worktree, local changes intact.
    write(&wt.path.join("scratch.txt"), "in progress\n");
    let again = fx
        .git
        .ensure_worktree(&repo, "ab12cd34", "Fix the login bug!", "main")
        .await
        .unwrap();
    assert_eq!(again, wt);
    assert_eq!(read(&wt.path.join("scratch.txt")), "in progress\n");

    // A different task that collides on the short id does not get this worktree.
    let err = fx
        .git
        .ensure_worktree(&repo, "ab12cd34", "Something else", "main")
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::WrongBranch { .. }), "{err}");

    // Bad inputs.
    for bad_id in ["", "../x", "-x", "a b"] {
        let err = fx
            .git
            .ensure_worktree(&repo, bad_id, "x", "main")
            .await
            .unwrap_err();
        assert!(
            matches!(err, GitError::InvalidName { .. }),
            "{bad_id:?}: {err}"
        );
    }
    let err = fx
        .git
        .ensure_worktree(&repo, "ffff0000", "x", "no-such-branch")
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::InvalidName { .. }), "{err}");
    let err = fx
        .git
        .ensure_worktree(&repo, "ffff0001", "x", "--force")
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::InvalidName { .. }), "{err}");
}

#[tokio::test]
async fn worktree_is_recreated_on_its_branch_after_removal() {
    let fx = Fx::new();
    let repo = fx.local("proj").await;
    let wt = fx
        .git
        .ensure_worktree(&repo, "deadbeef", "keep my work", "main")
        .await
        .unwrap();
    write(&wt.path.join("work.txt"), "work\n");
    let sha = fx.git.commit_all(&wt, "work").await.unwrap().unwrap();

    fx.git.remove_worktree(&repo, &wt).await.unwrap();
    assert!(!wt.path.exists());
    assert_eq!(rev(&repo.path, &format!("refs/heads/{}", wt.branch)), sha);
    // Removing twice is fine.
    fx.git.remove_worktree(&repo, &wt).await.unwrap();

    let again = fx
        .git
        .ensure_worktree(&repo, "deadbeef", "keep my work", "main")
        .await
        .unwrap();
    assert_eq!(again, wt);
    assert_eq!(rev(&wt.path, "HEAD"), sha);
    assert_eq!(read(&wt.path.join("work.txt")), "work\n");

    // The directory vanishing behind git's back (a cleaned data dir) is handled too.
    std::fs::remove_dir_all(&wt.path).unwrap();
    let third = fx
        .git
        .ensure_worktree(&repo, "deadbeef", "keep my work", "main")
        .await
        .unwrap();
    assert_eq!(rev(&third.path, "HEAD"), sha);
}

#[tokio::test]
async fn commit_all_commits_on_the_task_branch_only() {
    let fx = Fx::new();
    let repo = fx.local("proj").await;
    let main_before = rev(&repo.path, "main");
    let wt = fx
        .git
        .ensure_worktree(&repo, "c0ffee00", "add a feature", "main")
        .await
        .unwrap();
    assert_eq!(fx.git.commit_all(&wt, "nothing").await.unwrap(), None);

    write(&wt.path.join("src/feature.rs"), "fn feature() {}\n");
    write(&wt.path.join("README.md"), "hello\nworld\n");
    let sha = fx
        .git
        .commit_all(&wt, "#42 add the feature\n\nbody")
        .await
        .unwrap()
        .expect("a commit");
    assert_eq!(rev(&repo.path, &format!("refs/heads/{}", wt.branch)), sha);
    assert_eq!(rev(&repo.path, "main"), main_before);
    assert_eq!(read(&repo.path.join("README.md")), "hello\n");
    assert!(!repo.path.join("src/feature.rs").exists());
    // The author is mainloop; a '#' line is kept, not stripped as a comment.
    assert_eq!(
        git(&repo.path, &["log", "-1", "--format=%an <%ae>|%s", &sha]),
        "mainloop <mainloop@localhost>|#42 add the feature"
    );
    // Nothing left: idempotent.
    assert_eq!(fx.git.commit_all(&wt, "again").await.unwrap(), None);
    assert_eq!(git(&wt.path, &["status", "--porcelain"]), "");

    // A worktree switched to another branch is refused rather than committed onto.
    git(&wt.path, &["checkout", "-q", "--detach"]);
    write(&wt.path.join("stray.txt"), "x\n");
    let err = fx.git.commit_all(&wt, "stray").await.unwrap_err();
    assert!(matches!(err, GitError::WrongBranch { .. }), "{err}");
}

#[tokio::test]
async fn commits_use_the_repository_identity_as_committer_when_it_has_one() {
    let fx = Fx::new();
    let repo = fx.local("proj").await;
    git(&repo.path, &["config", "user.name", "Repo Owner"]);
    git(&repo.path, &["config", "user.email", "owner@example.com"]);
    let wt = fx
        .git
        .ensure_worktree(&repo, "1d1d1d1d", "identity", "main")
        .await
        .unwrap();
    write(&wt.path.join("a.txt"), "a\n");
    let sha = fx.git.commit_all(&wt, "a").await.unwrap().unwrap();
    assert_eq!(
        git(&repo.path, &["log", "-1", "--format=%an|%cn <%ce>", &sha]),
        "mainloop|Repo Owner <owner@example.com>"
    );
}

// ---------------------------------------------------------------------------
// diff

#[tokio::test]
async fn diff_reports_added_modified_and_deleted_files() {
    let fx = Fx::new();
    let dir = fx.user_repo("proj");
    write(&dir.join("a.txt"), "one\ntwo\nthree\n");
    write(&dir.join("b.txt"), "bye\nnow\n");
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "files"]);
    let repo = fx.git.resolve_repo(dir.to_str().unwrap()).await.unwrap();
    let wt = fx
        .git
        .ensure_worktree(&repo, "d1ff0000", "diff me", "main")
        .await
        .unwrap();

    let empty = fx.git.diff(&wt).await.unwrap();
    assert!(empty.files.is_empty() && empty.text.is_empty());

    write(&wt.path.join("a.txt"), "one\nTWO\nthree\n");
    std::fs::remove_file(wt.path.join("b.txt")).unwrap();
    write(&wt.path.join("new.txt"), "fresh\nlines\n");
    fx.git.commit_all(&wt, "changes").await.unwrap().unwrap();
    // Uncommitted work is not part of the diff.
    write(&wt.path.join("uncommitted.txt"), "x\n");
    // Base moving on does not show up as a reverse change.
    write(&dir.join("later.txt"), "later\n");
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "later on main"]);

    let diff = fx.git.diff(&wt).await.unwrap();
    assert_eq!(
        diff.files,
        vec![
            FileStat {
                path: "a.txt".into(),
                added: 1,
                removed: 1
            },
            FileStat {
                path: "b.txt".into(),
                added: 0,
                removed: 2
            },
            FileStat {
                path: "new.txt".into(),
                added: 2,
                removed: 0
            },
        ]
    );
    assert_eq!((diff.added, diff.removed), (3, 3));
    assert!(
        diff.text.contains("diff --git a/new.txt b/new.txt"),
        "{}",
        diff.text
    );
    assert!(diff.text.contains("-two\n+TWO\n"), "{}", diff.text);
    assert!(diff.text.contains("deleted file mode"), "{}", diff.text);
    assert!(!diff.text.contains("later.txt"));
    assert!(!diff.text.contains("uncommitted.txt"));
}

// ---------------------------------------------------------------------------
// merge

/// A repository with a task worktree whose branch adds `feature.txt` (committed).
async fn repo_with_task(fx: &Fx, base: &str) -> (Repo, Worktree) {
    let repo = fx.local("proj").await;
    if base != "main" {
        git(&repo.path, &["branch", base, "main"]);
    }
    let wt = fx
        .git
        .ensure_worktree(&repo, "5e1f5e1f", "ship it", base)
        .await
        .unwrap();
    write(&wt.path.join("feature.txt"), "feature\n");
    fx.git
        .commit_all(&wt, "add feature")
        .await
        .unwrap()
        .unwrap();
    (repo, wt)
}

fn no_extra_worktrees(repo: &Repo, wt: &Worktree) {
    let list = git(&repo.path, &["worktree", "list", "--porcelain"]);
    let paths: Vec<&str> = list
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .collect();
    assert_eq!(paths.len(), 2, "{list}");
    assert!(paths.contains(&wt.path.to_str().unwrap()), "{list}");
}

#[tokio::test]
async fn merges_into_a_checked_out_clean_base() {
    let fx = Fx::new();
    let (repo, wt) = repo_with_task(&fx, "main").await;
    let old_main = rev(&repo.path, "main");
    let tip = rev(&wt.path, "HEAD");

    let outcome = fx.git.merge(&repo, &wt, "Ship it").await.unwrap();
    let MergeOutcome::Merged { sha } = outcome else {
        panic!("expected Merged, got {outcome:?}");
    };
    assert_eq!(rev(&repo.path, "main"), sha);
    assert_eq!(rev(&repo.path, "main^1"), old_main);
    assert_eq!(rev(&repo.path, "main^2"), tip);
    assert_eq!(
        git(&repo.path, &["log", "-1", "--format=%s", "main"]),
        "Merge mainloop/5e1f5e1f-ship-it: Ship it"
    );
    // The user's worktree shows the result and is clean.
    assert_eq!(read(&repo.path.join("feature.txt")), "feature\n");
    assert_eq!(git(&repo.path, &["status", "--porcelain"]), "");
    no_extra_worktrees(&repo, &wt);

    let again = fx.git.merge(&repo, &wt, "Ship it").await.unwrap();
    assert_eq!(again, MergeOutcome::AlreadyMerged);
    assert_eq!(rev(&repo.path, "main"), sha);
}

async fn merge_into_unchecked_out_base(lib: &Git, fx: &Fx) {
    let (repo, wt) = repo_with_task(fx, "release").await;
    let main_before = rev(&repo.path, "main");
    let release_before = rev(&repo.path, "release");

    let outcome = lib.merge(&repo, &wt, "Release it").await.unwrap();
    let MergeOutcome::Merged { sha } = outcome else {
        panic!("expected Merged, got {outcome:?}");
    };
    assert_eq!(rev(&repo.path, "release"), sha);
    assert_eq!(rev(&repo.path, "release^1"), release_before);
    assert_eq!(rev(&repo.path, "main"), main_before);
    // No working tree was touched.
    assert!(!repo.path.join("feature.txt").exists());
    assert_eq!(git_status(&repo.path), "");
    assert_eq!(git_status(&wt.path), "");
    no_extra_worktrees(&repo, &wt);
    assert_eq!(
        lib.merge(&repo, &wt, "Release it").await.unwrap(),
        MergeOutcome::AlreadyMerged
    );
}

fn git_status(dir: &Path) -> String {
    git(dir, &["status", "--porcelain"])
}

#[tokio::test]
async fn merges_into_a_base_checked_out_nowhere() {
    let fx = Fx::new();
    merge_into_unchecked_out_base(&fx.git, &fx).await;
}

#[tokio::test]
async fn merges_into_a_base_checked_out_nowhere_without_merge_tree() {
    let fx = Fx::new();
    let git = fx.git.clone().with_merge_tree(false);
    merge_into_unchecked_out_base(&git, &fx).await;
}

#[tokio::test]
async fn refuses_to_merge_into_a_dirty_checkout() {
    let fx = Fx::new();
    let (repo, wt) = repo_with_task(&fx, "main").await;
    let before = rev(&repo.path, "main");
    write(&repo.path.join("README.md"), "user's unsaved edit\n");

    let err = fx.git.merge(&repo, &wt, "Ship it").await.unwrap_err();
    assert!(matches!(err, GitError::Dirty { .. }), "{err}");
    assert_eq!(rev(&repo.path, "main"), before);
    assert_eq!(read(&repo.path.join("README.md")), "user's unsaved edit\n");
    assert!(!repo.path.join("feature.txt").exists());
    assert!(!has_merge_head(&repo.path));

    // Once the user commits, the merge goes through.
    git(&repo.path, &["commit", "-q", "-am", "user edit"]);
    let outcome = fx.git.merge(&repo, &wt, "Ship it").await.unwrap();
    assert!(
        matches!(outcome, MergeOutcome::Merged { .. }),
        "{outcome:?}"
    );
    assert_eq!(read(&repo.path.join("feature.txt")), "feature\n");
}

async fn conflict_changes_nothing(lib: &Git, fx: &Fx) {
    let (repo, wt) = repo_with_task(fx, "main").await;
    write(&wt.path.join("README.md"), "task version\n");
    lib.commit_all(&wt, "task edits readme")
        .await
        .unwrap()
        .unwrap();
    write(&repo.path.join("README.md"), "user version\n");
    git(&repo.path, &["commit", "-q", "-am", "user edits readme"]);
    let before = rev(&repo.path, "main");
    let task_tip = rev(&wt.path, "HEAD");

    let outcome = lib.merge(&repo, &wt, "Ship it").await.unwrap();
    assert_eq!(
        outcome,
        MergeOutcome::Conflict {
            files: vec!["README.md".into()]
        }
    );
    assert_eq!(rev(&repo.path, "main"), before);
    assert_eq!(rev(&wt.path, "HEAD"), task_tip);
    assert_eq!(read(&repo.path.join("README.md")), "user version\n");
    assert_eq!(git_status(&repo.path), "");
    assert_eq!(git_status(&wt.path), "");
    assert!(!has_merge_head(&repo.path));
    assert!(!has_merge_head(&wt.path));
    no_extra_worktrees(&repo, &wt);
}

#[tokio::test]
async fn conflicting_merge_changes_nothing() {
    let fx = Fx::new();
    conflict_changes_nothing(&fx.git, &fx).await;
}

#[tokio::test]
async fn conflicting_merge_changes_nothing_without_merge_tree() {
    let fx = Fx::new();
    let git = fx.git.clone().with_merge_tree(false);
    conflict_changes_nothing(&git, &fx).await;
}

#[tokio::test]
async fn merge_base_into_branch_leaves_markers_for_the_agent() {
    let fx = Fx::new();
    let (repo, wt) = repo_with_task(&fx, "main").await;
    write(&wt.path.join("README.md"), "task version\n");
    fx.git
        .commit_all(&wt, "task edits readme")
        .await
        .unwrap()
        .unwrap();
    write(&repo.path.join("README.md"), "user version\n");
    write(&repo.path.join("other.txt"), "other\n");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "-q", "-m", "user edits"]);

    let files = fx.git.merge_base_into_branch(&wt).await.unwrap();
    assert_eq!(files, vec!["README.md".to_owned()]);
    let readme = read(&wt.path.join("README.md"));
    assert!(
        readme.contains("<<<<<<<") && readme.contains(">>>>>>>"),
        "{readme}"
    );
    assert!(has_merge_head(&wt.path));
    // The clean part of the merge is already there.
    assert_eq!(read(&wt.path.join("other.txt")), "other\n");
    // Asking again reports the same conflicts without starting over.
    assert_eq!(
        fx.git.merge_base_into_branch(&wt).await.unwrap(),
        vec!["README.md".to_owned()]
    );

    // The agent resolves; commit_all concludes the merge; then it merges cleanly.
    write(&wt.path.join("README.md"), "resolved\n");
    let sha = fx.git.commit_all(&wt, "resolve").await.unwrap().unwrap();
    assert!(!has_merge_head(&wt.path));
    assert_eq!(rev(&wt.path, &format!("{sha}^2")), rev(&repo.path, "main"));
    let outcome = fx.git.merge(&repo, &wt, "Ship it").await.unwrap();
    assert!(
        matches!(outcome, MergeOutcome::Merged { .. }),
        "{outcome:?}"
    );
    assert_eq!(read(&repo.path.join("README.md")), "resolved\n");

    // Nothing to bring in: no conflicts, no merge in progress.
    let (_, wt2) = {
        let wt2 = fx
            .git
            .ensure_worktree(&repo, "0a0a0a0a", "up to date", "main")
            .await
            .unwrap();
        ((), wt2)
    };
    assert!(
        fx.git
            .merge_base_into_branch(&wt2)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!has_merge_head(&wt2.path));
}

// ---------------------------------------------------------------------------
// check command

#[test]
fn reads_the_check_command() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_check_command(dir.path()).unwrap(), None);

    write(
        &dir.path().join(".mainloop.toml"),
        "# project settings\ncheck = \"cargo test --workspace\"\nother = 1\n",
    );
    assert_eq!(
        read_check_command(dir.path()).unwrap().as_deref(),
        Some("cargo test --workspace")
    );

    write(&dir.path().join(".mainloop.toml"), "other = 1\n");
    assert_eq!(read_check_command(dir.path()).unwrap(), None);

    write(&dir.path().join(".mainloop.toml"), "check = \"   \"\n");
    assert_eq!(read_check_command(dir.path()).unwrap(), None);

    write(&dir.path().join(".mainloop.toml"), "check = [\"a\"]\n");
    let err = read_check_command(dir.path()).unwrap_err();
    assert!(matches!(err, GitError::Config { .. }), "{err}");

    write(
        &dir.path().join(".mainloop.toml"),
        "check = \"unterminated\n",
    );
    let err = read_check_command(dir.path()).unwrap_err();
    assert!(matches!(err, GitError::Config { .. }), "{err}");
    assert!(err.to_string().contains(".mainloop.toml"), "{err}");
}

#[tokio::test]
async fn check_passes_and_fails_with_output() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("MAINLOOP_TEST_VAR".to_owned(), "bar".to_owned())];
    let ok = run_check(
        dir.path(),
        // Only the given environment: nothing of the server's (cargo sets CARGO_PKG_NAME
        // for this test process) reaches the code under test.
        "echo out; echo err >&2; test \"$MAINLOOP_TEST_VAR\" = bar && test -z \"$CARGO_PKG_NAME\" && pwd",
        &env,
        &[],
        Duration::from_secs(30),
        10_000,
    )
    .await;
    assert!(ok.passed, "{ok:?}");
    assert_eq!(ok.exit_code, Some(0));
    assert!(!ok.timed_out);
    assert_eq!(
        ok.output_tail,
        format!(
            "out\nerr\n{}\n",
            std::fs::canonicalize(dir.path()).unwrap().display()
        )
    );

    let bad = run_check(
        dir.path(),
        "echo compiling; echo 'error: it broke' >&2; exit 3",
        &[],
        &[],
        Duration::from_secs(30),
        10_000,
    )
    .await;
    assert!(!bad.passed);
    assert_eq!(bad.exit_code, Some(3));
    assert!(!bad.timed_out);
    assert_eq!(bad.output_tail, "compiling\nerror: it broke\n");

    let missing_dir = run_check(
        &dir.path().join("nope"),
        "true",
        &[],
        &[],
        Duration::from_secs(5),
        1000,
    )
    .await;
    assert!(!missing_dir.passed);
    assert_eq!(missing_dir.exit_code, None);
    assert!(
        missing_dir.output_tail.contains("cannot start"),
        "{missing_dir:?}"
    );
}

/// A `sleep` duration no other test run uses, to find that run's processes in /proc.
fn unique_sleep_seconds(slot: u32) -> String {
    (100_000 + std::process::id() * 4 + slot).to_string()
}

/// Live (non-zombie) processes with `marker` among their arguments.
fn live_processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !cmdline.split(|b| *b == 0).any(|a| a == marker.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state.is_some_and(|s| s != 'Z' && s != 'X') {
            found.push(format!("{name}: {}", String::from_utf8_lossy(&cmdline)));
        }
    }
    found
}

#[tokio::test]
async fn check_timeout_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let marker = unique_sleep_seconds(1);
    let marker = marker.as_str();
    // The probe sees a live process with the marker (so an empty answer means something).
    let mut control = Command::new("sleep")
        .arg(marker)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A freshly spawned process shows its arguments only once exec has finished.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = live_processes_with(marker).len();
    while seen == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        seen = live_processes_with(marker).len();
    }
    control.kill().unwrap();
    control.wait().unwrap();
    assert_eq!(seen, 1);
    assert!(live_processes_with(marker).is_empty());

    let started = Instant::now();
    let out = run_check(
        dir.path(),
        &format!("echo started; sleep {marker} & sleep {marker}"),
        &[],
        &[],
        Duration::from_millis(700),
        10_000,
    )
    .await;
    assert!(out.timed_out, "{out:?}");
    assert!(!out.passed);
    assert_eq!(out.exit_code, None);
    assert_eq!(out.output_tail, "started\n");
    assert!(started.elapsed() < Duration::from_secs(10), "{out:?}");
    assert!(out.duration >= Duration::from_millis(700));
    assert_eq!(live_processes_with(marker), Vec::<String>::new());
}

#[tokio::test]
async fn finished_check_leaves_no_background_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = unique_sleep_seconds(2);
    let marker = marker.as_str();
    let started = Instant::now();
    let out = run_check(
        dir.path(),
        &format!("sleep {marker} & echo done"),
        &[],
        &[],
        Duration::from_secs(60),
        10_000,
    )
    .await;
    assert!(out.passed, "{out:?}");
    assert_eq!(out.output_tail, "done\n");
    // The background job held the output pipe; we did not wait for it.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(live_processes_with(marker), Vec::<String>::new());
}

#[tokio::test]
async fn check_output_is_capped_to_its_tail() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_check(
        dir.path(),
        "i=0; while [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i+1)); done; echo THE-END",
        &[],
        &[],
        Duration::from_secs(60),
        1000,
    )
    .await;
    assert!(out.passed, "{:?}", out.exit_code);
    assert!(out.output_tail.len() <= 1000, "{}", out.output_tail.len());
    assert!(out.output_tail.len() >= 900);
    assert!(out.output_tail.ends_with("line 19999\nTHE-END\n"));
    assert!(!out.output_tail.contains("line 1\n"));
}

// ---------------------------------------------------------------------------
// slug

#[test]
fn slugs() {
    assert_eq!(slug("Fix the login bug!"), "fix-the-login-bug");
    assert_eq!(slug("  --Hello,   World--  "), "hello-world");
    assert_eq!(slug("Café naïve Straße"), "cafe-naive-strasse");
    assert_eq!(slug("日本語のタスク"), "task");
    assert_eq!(slug("emoji 🚀 launch"), "emoji-launch");
    assert_eq!(slug(""), "task");
    assert_eq!(slug("!!! ??? ..."), "task");
    assert_eq!(
        slug("v2.0: release/notes_update"),
        "v2-0-release-notes-update"
    );
    assert_eq!(slug("ÉCOLE"), "ecole");

    let long = slug("implement the new billing pipeline with retries and idempotency keys");
    assert_eq!(long, "implement-the-new-billing-pipeline-with");
    assert!(long.len() <= 40);

    let one_word = slug(&"x".repeat(100));
    assert_eq!(one_word.len(), 40);

    for input in ["a/b", "..", "x.lock", "@{u}", "a\nb", "HEAD^", "ß"] {
        let s = slug(input);
        assert!(!s.is_empty());
        assert!(
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(!s.starts_with('-') && !s.ends_with('-') && !s.contains("--"));
    }
}

#[tokio::test]
async fn the_check_command_comes_from_the_base_branch_not_the_worktree() {
    let fx = Fx::new();
    let (repo, wt) = repo_with_task(&fx, "main").await;
    assert_eq!(fx.git.check_command_at_base(&wt).await.unwrap(), None);

    write(&repo.path.join(".mainloop.toml"), "check = \"make test\"\n");
    git(&repo.path, &["add", ".mainloop.toml"]);
    git(
        &repo.path,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "check",
        ],
    );
    // The agent rewrites its copy to make the gate pass trivially; it does not count.
    write(&wt.path.join(".mainloop.toml"), "check = \"true\"\n");
    assert_eq!(
        fx.git.check_command_at_base(&wt).await.unwrap().as_deref(),
        Some("make test")
    );

    write(&repo.path.join(".mainloop.toml"), "check = 5\n");
    git(
        &repo.path,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qam",
            "bad",
        ],
    );
    assert!(fx.git.check_command_at_base(&wt).await.is_err());
}

#[tokio::test]
async fn push_branch_publishes_the_task_branch_without_a_remote() {
    let fx = Fx::new();
    let (repo, wt) = repo_with_task(&fx, "main").await;
    let bare = fx.path("remote.git");
    git(
        fx.tmp.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    let url = format!("file://{}", bare.display());
    let sha = fx.git.push_branch(&wt, &url).await.unwrap();
    assert_eq!(rev(&bare, &format!("refs/heads/{}", wt.branch)), sha);
    // A second commit moves the remote branch; no remote was configured on the way.
    write(&wt.path.join("more.txt"), "more\n");
    let second = fx.git.commit_all(&wt, "more").await.unwrap().unwrap();
    assert_eq!(fx.git.push_branch(&wt, &url).await.unwrap(), second);
    assert_eq!(rev(&bare, &format!("refs/heads/{}", wt.branch)), second);
    assert!(!git(&repo.path, &["remote"]).contains("remote.git"));
    // A push the remote refuses is an error, not a silent success.
    let err = fx
        .git
        .push_branch(&wt, "file:///nonexistent/x.git")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("push"), "{err}");
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Snapshots against real repositories: a workspace's uncommitted state taken in one
//! clone and restored in another at the same commit reads the same there, and neither
//! side's index or ignored files are disturbed.

use std::path::{Path, PathBuf};

use mainloop_git::{Git, GitError};

mod common;
use common::{git, read, write};

struct Fx {
    _tmp: tempfile::TempDir,
    git: Git,
    /// Where the work was (a runner's copy).
    there: PathBuf,
    /// Where it goes (the server's worktree), at the same commit.
    here: PathBuf,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let git_ = Git::new(tmp.path().join("cache"), tmp.path().join("worktrees"))
        .with_allow_file_urls(true)
        .with_env("GIT_CONFIG_GLOBAL", "/dev/null")
        .with_env("GIT_CONFIG_NOSYSTEM", "1");
    let here = tmp.path().join("here");
    std::fs::create_dir_all(&here).unwrap();
    git(&here, &["init", "-q", "-b", "main"]);
    write(&here.join("a.txt"), "a\n");
    write(&here.join("b.txt"), "b\n");
    write(&here.join(".gitignore"), "*.log\n");
    git(&here, &["add", "-A"]);
    git(&here, &["commit", "-q", "-m", "init"]);
    let there = tmp.path().join("there");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            here.to_str().unwrap(),
            there.to_str().unwrap(),
        ],
    );
    Fx {
        _tmp: tmp,
        git: git_,
        there,
        here,
    }
}

/// `git status` as a sorted list, ignoring nothing that is not ignored.
fn status(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = git(dir, &["status", "--porcelain", "--untracked-files=all"])
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// Moves `commit` from `from` to `to` as git would over the wire.
fn carry(from: &Path, to: &Path, commit: &str) {
    git(
        from,
        &[
            "push",
            "-q",
            to.to_str().unwrap(),
            &format!("{commit}:refs/mainloop/sync/test"),
        ],
    );
}

#[tokio::test]
async fn a_workspace_taken_there_reads_the_same_here() {
    let f = fx();
    // Both sides had an untracked file; the work deletes it there.
    write(&f.here.join("scratch.txt"), "old\n");
    // The work: a change, a deletion, a new file in a new directory, a log that is ignored.
    write(&f.there.join("a.txt"), "a changed\n");
    std::fs::remove_file(f.there.join("b.txt")).unwrap();
    write(&f.there.join("src/new.rs"), "fn main() {}\n");
    write(&f.there.join("build.log"), "noise\n");
    write(&f.here.join("server.log"), "kept\n");
    git(&f.there, &["add", "a.txt"]);
    let index_before = git(&f.there, &["diff", "--cached", "--name-only"]);

    let snap = f.git.snapshot(&f.there).await.unwrap();
    assert!(!snap.clean);
    assert_eq!(snap.head, git(&f.there, &["rev-parse", "HEAD"]));
    // Taking it changed nothing there: the index keeps what was staged.
    assert_eq!(
        git(&f.there, &["diff", "--cached", "--name-only"]),
        index_before
    );
    // The ignored file is not in it.
    let files = git(&f.there, &["ls-tree", "-r", "--name-only", &snap.commit]);
    assert!(!files.contains("build.log"), "{files}");

    carry(&f.there, &f.here, &snap.commit);
    f.git.restore_snapshot(&f.here, &snap.commit).await.unwrap();
    assert_eq!(read(&f.here.join("a.txt")), "a changed\n");
    assert!(!f.here.join("b.txt").exists());
    assert!(!f.here.join("scratch.txt").exists());
    assert_eq!(read(&f.here.join("src/new.rs")), "fn main() {}\n");
    assert_eq!(read(&f.here.join("server.log")), "kept\n");
    // Uncommitted here, as it was there: HEAD did not move and nothing is staged.
    assert_eq!(git(&f.here, &["rev-parse", "HEAD"]), snap.head);
    assert_eq!(git(&f.here, &["diff", "--cached", "--name-only"]), "");
    git(&f.there, &["reset", "-q"]);
    assert_eq!(status(&f.here), status(&f.there));
}

#[tokio::test]
async fn a_clean_workspace_says_so_and_restores_to_itself() {
    let f = fx();
    let snap = f.git.snapshot(&f.there).await.unwrap();
    assert!(snap.clean);
    carry(&f.there, &f.here, &snap.commit);
    f.git.restore_snapshot(&f.here, &snap.commit).await.unwrap();
    assert!(status(&f.here).is_empty());
}

#[tokio::test]
async fn a_snapshot_of_another_commit_is_refused_and_changes_nothing() {
    let f = fx();
    write(&f.there.join("a.txt"), "there\n");
    let snap = f.git.snapshot(&f.there).await.unwrap();
    carry(&f.there, &f.here, &snap.commit);
    // The branch moved here meanwhile.
    write(&f.here.join("c.txt"), "c\n");
    git(&f.here, &["add", "-A"]);
    git(&f.here, &["commit", "-q", "-m", "moved"]);
    write(&f.here.join("a.txt"), "here\n");
    let err = f
        .git
        .restore_snapshot(&f.here, &snap.commit)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::SnapshotElsewhere { .. }), "{err}");
    assert_eq!(read(&f.here.join("a.txt")), "here\n");
}

/// The round trip a run on a runner makes: the server's worktree (a linked worktree of
/// the repository) publishes its uncommitted work, the runner's copy takes it, works,
/// and sends its own back, which the server's worktree restores; after the server
/// commits, the copy follows the branch and drops what it had.
#[tokio::test]
async fn work_goes_to_a_copy_and_comes_back() {
    let f = fx();
    let repo = &f.here;
    let wt = f.here.parent().unwrap().join("wt");
    git(
        repo,
        &["worktree", "add", "-q", "-b", "task", wt.to_str().unwrap()],
    );
    let url = format!("file://{}", repo.display());
    let refname = "refs/mainloop/snapshots/t1".to_owned();
    let copy = f.there.parent().unwrap().join("copy");

    // Nothing uncommitted yet: no snapshot, and the copy is the branch.
    assert!(
        f.git
            .publish_snapshot(&wt, &refname)
            .await
            .unwrap()
            .is_none()
    );
    f.git
        .checkout_copy(&copy, &url, "task", None)
        .await
        .unwrap();
    assert_eq!(read(&copy.join("a.txt")), "a\n");

    // The server's worktree has work the copy must start from.
    write(&wt.join("a.txt"), "from the server\n");
    let published = f.git.publish_snapshot(&wt, &refname).await.unwrap();
    assert!(published.is_some());
    f.git
        .checkout_copy(&copy, &url, "task", Some(&refname))
        .await
        .unwrap();
    assert_eq!(read(&copy.join("a.txt")), "from the server\n");
    assert_eq!(git(&copy, &["diff", "--cached", "--name-only"]), "");

    // The agent works in the copy; the work comes back.
    write(&copy.join("a.txt"), "from the runner\n");
    write(&copy.join("new.txt"), "new\n");
    let sent = f.git.send_snapshot(&copy, &url, &refname).await.unwrap();
    assert!(!sent.clean);
    f.git.take_back(&wt, &refname).await.unwrap();
    assert_eq!(read(&wt.join("a.txt")), "from the runner\n");
    assert_eq!(read(&wt.join("new.txt")), "new\n");

    // The server commits; the copy follows and its stale state is gone.
    git(&wt, &["add", "-A"]);
    git(&wt, &["commit", "-q", "-m", "work"]);
    write(&copy.join("stray.txt"), "left over\n");
    f.git
        .checkout_copy(&copy, &url, "task", None)
        .await
        .unwrap();
    assert_eq!(read(&copy.join("new.txt")), "new\n");
    assert!(!copy.join("stray.txt").exists());
    assert_eq!(
        git(&copy, &["rev-parse", "HEAD"]),
        git(&wt, &["rev-parse", "HEAD"])
    );
    assert!(status(&copy).is_empty());
}

#[tokio::test]
async fn a_copy_of_a_branch_that_is_not_there_fails_clearly() {
    let f = fx();
    let url = format!("file://{}", f.here.display());
    let copy = f.there.parent().unwrap().join("copy");
    let err = f
        .git
        .checkout_copy(&copy, &url, "no-such-branch", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-branch"), "{err}");
    let err = f
        .git
        .checkout_copy(&copy, &url, "-x", None)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::InvalidName { .. }), "{err}");
}

/// An agent that commits in the copy: the server's branch moves forward to its commits,
/// and what it left uncommitted stays uncommitted; a copy of an older branch is refused.
#[tokio::test]
async fn commits_made_in_the_copy_move_the_branch_when_taken_back() {
    let f = fx();
    let wt = f.here.parent().unwrap().join("wt");
    git(
        &f.here,
        &["worktree", "add", "-q", "-b", "task", wt.to_str().unwrap()],
    );
    let url = format!("file://{}", f.here.display());
    let refname = "refs/mainloop/snapshots/t2";
    let copy = f.there.parent().unwrap().join("copy2");
    // The server's worktree had uncommitted work that the copy starts from.
    write(&wt.join("b.txt"), "b from the server\n");
    f.git.publish_snapshot(&wt, refname).await.unwrap();
    f.git
        .checkout_copy(&copy, &url, "task", Some(refname))
        .await
        .unwrap();
    write(&copy.join("a.txt"), "committed there\n");
    git(&copy, &["add", "a.txt"]);
    git(&copy, &["commit", "-q", "-m", "agent commit"]);
    write(&copy.join("c.txt"), "left uncommitted\n");
    let sent = f.git.send_snapshot(&copy, &url, refname).await.unwrap();
    f.git.take_back(&wt, refname).await.unwrap();
    assert_eq!(git(&wt, &["rev-parse", "HEAD"]), sent.head);
    assert_eq!(git(&wt, &["log", "-1", "--format=%s"]), "agent commit");
    assert_eq!(read(&wt.join("a.txt")), "committed there\n");
    assert_eq!(read(&wt.join("b.txt")), "b from the server\n");
    assert_eq!(read(&wt.join("c.txt")), "left uncommitted\n");
    let mut st = status(&wt);
    st.sort();
    assert_eq!(st, vec![" M b.txt".to_owned(), "?? c.txt".to_owned()]);

    // The branch moved here on its own meanwhile: an old copy's work is refused.
    write(&wt.join("d.txt"), "d\n");
    git(&wt, &["add", "-A"]);
    git(&wt, &["commit", "-q", "-m", "server commit"]);
    let before = git(&wt, &["rev-parse", "HEAD"]);
    let err = f.git.take_back(&wt, refname).await.unwrap_err();
    assert!(matches!(err, GitError::SnapshotElsewhere { .. }), "{err}");
    assert_eq!(git(&wt, &["rev-parse", "HEAD"]), before);
}

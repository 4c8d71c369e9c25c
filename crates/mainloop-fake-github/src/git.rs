//! The bare repositories behind the fake: creating one with a first commit, reading
//! branch tips and history, and merging one branch into another, all through the `git`
//! CLI so that clients pushing and cloning over `file://` see exactly what the API says.

use crate::Error;
use std::path::Path;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Who the fake's own commits (the first one, merges) are made by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Identity<'a> {
    pub name: &'a str,
    pub email: &'a str,
}

/// One commit from `git log`.
#[derive(Clone, Debug)]
pub(crate) struct LogEntry {
    pub sha: String,
    pub author_name: String,
    pub author_email: String,
    pub author_date: String,
    pub committer_name: String,
    pub committer_email: String,
    pub committer_date: String,
    pub message: String,
}

/// What a merge of head into base would give.
#[derive(Debug)]
pub(crate) enum MergeProbe {
    Clean { tree: String },
    Conflict,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs git to its end even when the request that asked is dropped (its client went
/// away): as on GitHub, a request cut short still completes on the server, and a git
/// killed halfway would leave a lock file (`refs/heads/main.lock`) that fails every
/// later update of that ref.
async fn run(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Result<Run, Error> {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let input = input.map(<[u8]>::to_vec);
    tokio::spawn(async move { run_to_end(&dir, &args, input.as_deref()).await })
        .await
        .map_err(|e| Error::Git(format!("git stopped: {e}")))?
}

async fn run_to_end(dir: &Path, args: &[String], input: Option<&[u8]>) -> Result<Run, Error> {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        // The host's config must not change what the fake's repositories look like.
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Git(format!("cannot run git: {e}")))?;
    if let Some(bytes) = input
        && let Some(mut stdin) = child.stdin.take()
    {
        stdin.write_all(bytes).await?;
        drop(stdin);
    }
    let out = child.wait_with_output().await?;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

async fn ok(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Result<String, Error> {
    let r = run(dir, args, input).await?;
    if r.code == Some(0) {
        Ok(r.stdout.trim_end().to_owned())
    } else {
        Err(Error::Git(format!(
            "git {} failed: {}",
            args.join(" "),
            r.stderr.trim()
        )))
    }
}

/// Whether a branch name is one git accepts and cannot be read as an option.
pub(crate) fn valid_branch(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains("//")
        && name
            .chars()
            .all(|c| !c.is_control() && !" ~^:?*[\\".contains(c))
}

/// Creates a bare repository whose default branch holds one commit with a README.
pub(crate) async fn init(
    path: &Path,
    default_branch: &str,
    readme: &str,
    who: Identity<'_>,
) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let parent = path.parent().unwrap_or(path);
    let target = path.to_string_lossy();
    ok(
        parent,
        &[
            "init",
            "--quiet",
            "--bare",
            &format!("--initial-branch={default_branch}"),
            &target,
        ],
        None,
    )
    .await?;
    // Plumbing builds the first commit without a working tree to clean up afterwards.
    let blob = ok(
        path,
        &["hash-object", "-w", "--stdin"],
        Some(readme.as_bytes()),
    )
    .await?;
    let tree = ok(
        path,
        &["mktree"],
        Some(format!("100644 blob {blob}\tREADME.md\n").as_bytes()),
    )
    .await?;
    let commit = commit_tree(path, &tree, &[], "Initial commit", who).await?;
    ok(
        path,
        &[
            "update-ref",
            &format!("refs/heads/{default_branch}"),
            &commit,
        ],
        None,
    )
    .await?;
    Ok(())
}

/// The commit a branch points at, if the branch exists.
pub(crate) async fn branch_sha(path: &Path, branch: &str) -> Result<Option<String>, Error> {
    if !valid_branch(branch) {
        return Ok(None);
    }
    let r = run(
        path,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}^{{commit}}"),
        ],
        None,
    )
    .await?;
    Ok((r.code == Some(0)).then(|| r.stdout.trim().to_owned()))
}

/// A branch name or a (possibly abbreviated) commit sha, as a full sha.
pub(crate) async fn resolve(path: &Path, rev: &str) -> Result<Option<String>, Error> {
    if let Some(sha) = branch_sha(path, rev).await? {
        return Ok(Some(sha));
    }
    if rev.len() < 4 || rev.len() > 40 || !rev.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let r = run(
        path,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
        None,
    )
    .await?;
    Ok((r.code == Some(0)).then(|| r.stdout.trim().to_owned()))
}

/// History from a commit, newest first.
pub(crate) async fn log(path: &Path, sha: &str) -> Result<Vec<LogEntry>, Error> {
    let out = ok(
        path,
        &[
            "log",
            "--format=%H%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B%x1e",
            sha,
            "--",
        ],
        None,
    )
    .await?;
    Ok(out
        .split('\x1e')
        .filter_map(|rec| {
            let rec = rec.trim_start_matches('\n');
            let mut f = rec.splitn(8, '\0');
            let sha = f.next()?.to_owned();
            if sha.is_empty() {
                return None;
            }
            Some(LogEntry {
                sha,
                author_name: f.next()?.to_owned(),
                author_email: f.next()?.to_owned(),
                author_date: f.next()?.to_owned(),
                committer_name: f.next()?.to_owned(),
                committer_email: f.next()?.to_owned(),
                committer_date: f.next()?.to_owned(),
                message: f.next()?.trim_end().to_owned(),
            })
        })
        .collect())
}

/// How many commits head has that base lacks.
pub(crate) async fn ahead(path: &Path, base: &str, head: &str) -> Result<u64, Error> {
    let out = ok(
        path,
        &["rev-list", "--count", &format!("{base}..{head}")],
        None,
    )
    .await?;
    out.trim()
        .parse()
        .map_err(|e| Error::Git(format!("rev-list --count: {e}")))
}

/// Whether base is an ancestor of head (so merging needs no new tree).
async fn is_ancestor(path: &Path, base: &str, head: &str) -> Result<bool, Error> {
    let r = run(path, &["merge-base", "--is-ancestor", base, head], None).await?;
    Ok(r.code == Some(0))
}

/// Merges in memory (`git merge-tree`), touching no ref.
pub(crate) async fn probe_merge(path: &Path, base: &str, head: &str) -> Result<MergeProbe, Error> {
    if is_ancestor(path, base, head).await? {
        let tree = ok(path, &["rev-parse", &format!("{head}^{{tree}}")], None).await?;
        return Ok(MergeProbe::Clean { tree });
    }
    let r = run(path, &["merge-tree", "--write-tree", base, head], None).await?;
    match r.code {
        Some(0) => Ok(MergeProbe::Clean {
            tree: r
                .stdout
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }),
        Some(1) => Ok(MergeProbe::Conflict),
        _ => Err(Error::Git(format!(
            "git merge-tree failed: {}",
            r.stderr.trim()
        ))),
    }
}

/// The tree of a commit.
pub(crate) async fn tree_of(path: &Path, commit: &str) -> Result<String, Error> {
    ok(path, &["rev-parse", &format!("{commit}^{{tree}}")], None).await
}

/// Writes a commit object; returns its sha.
pub(crate) async fn commit_tree(
    path: &Path,
    tree: &str,
    parents: &[&str],
    message: &str,
    who: Identity<'_>,
) -> Result<String, Error> {
    let name = format!("user.name={}", who.name);
    let email = format!("user.email={}", who.email);
    let mut args: Vec<&str> = vec!["-c", &name, "-c", &email, "commit-tree", tree];
    for p in parents {
        args.push("-p");
        args.push(p);
    }
    ok(path, &args, Some(message.as_bytes())).await
}

/// Moves a branch from `old` to `new`, failing if it no longer points at `old` (a push
/// raced the merge).
pub(crate) async fn move_branch(
    path: &Path,
    branch: &str,
    new: &str,
    old: &str,
) -> Result<bool, Error> {
    let r = run(
        path,
        &["update-ref", &format!("refs/heads/{branch}"), new, old],
        None,
    )
    .await?;
    Ok(r.code == Some(0))
}

/// Every branch and its tip, in one call (lists of pull requests read many).
pub(crate) async fn branches(
    path: &Path,
) -> Result<std::collections::HashMap<String, String>, Error> {
    let out = ok(
        path,
        &[
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "refs/heads/",
        ],
        None,
    )
    .await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (sha, name) = l.split_once(' ')?;
            Some((name.strip_prefix("refs/heads/")?.to_owned(), sha.to_owned()))
        })
        .collect())
}

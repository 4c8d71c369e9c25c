//! The task's committed work as a reviewer sees it: the branch against its merge-base
//! with the base branch, as unified text plus per-file line counts.

use crate::{Diff, FileStat, Git, GitError, Worktree};

/// Flags shared by the text and the stats, so both describe the same change set.
/// Explicit prefixes and `--no-relative` undo user config that would change paths.
const DIFF_FLAGS: &[&str] = &["--no-color", "--no-ext-diff", "--no-relative", "-M"];

impl Git {
    /// Diff of the task branch against its merge-base with the base branch (what a
    /// merge would bring in). Uncommitted changes are not included.
    pub async fn diff(&self, wt: &Worktree) -> Result<Diff, GitError> {
        let branch_ref = format!("refs/heads/{}", wt.branch);
        let base_ref = format!("refs/heads/{}", wt.base);
        let merge_base = self
            .cmd(&wt.path)
            .args(["merge-base", &base_ref, &branch_ref])
            .text()
            .await?;
        let text = self
            .cmd(&wt.path)
            .arg("diff")
            .args(DIFF_FLAGS)
            .args([
                "--src-prefix=a/",
                "--dst-prefix=b/",
                &merge_base,
                &branch_ref,
                "--",
            ])
            .run()
            .await?;
        let numstat = self
            .cmd(&wt.path)
            .arg("diff")
            .args(DIFF_FLAGS)
            .args(["--numstat", "-z", &merge_base, &branch_ref, "--"])
            .run()
            .await?;
        let files = parse_numstat_z(&numstat.stdout).map_err(|detail| GitError::Parse {
            command: numstat.command.clone(),
            detail,
        })?;
        Ok(Diff {
            text: String::from_utf8_lossy(&text.stdout).into_owned(),
            added: files.iter().map(|f| f.added).sum(),
            removed: files.iter().map(|f| f.removed).sum(),
            files,
        })
    }
}

/// Parses `git diff --numstat -z`: `added\tremoved\tpath\0`, or for renames and copies
/// `added\tremoved\t\0old\0new\0`. Binary files show `-` counts, taken as 0.
fn parse_numstat_z(raw: &[u8]) -> Result<Vec<FileStat>, String> {
    let text = String::from_utf8_lossy(raw);
    let mut tokens = text.split('\0');
    let mut files = Vec::new();
    while let Some(record) = tokens.next() {
        if record.is_empty() {
            continue;
        }
        let mut parts = record.splitn(3, '\t');
        let (Some(added), Some(removed), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("malformed numstat record {record:?}"));
        };
        let path = if path.is_empty() {
            let _old = tokens.next();
            tokens
                .next()
                .ok_or_else(|| format!("rename record without new path: {record:?}"))?
                .to_owned()
        } else {
            path.to_owned()
        };
        files.push(FileStat {
            path,
            added: parse_count(added)?,
            removed: parse_count(removed)?,
        });
    }
    Ok(files)
}

fn parse_count(s: &str) -> Result<u64, String> {
    if s == "-" {
        return Ok(0);
    }
    s.parse().map_err(|_| format!("bad line count {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_binary_and_renames() {
        let raw = b"3\t1\tsrc/a.rs\0-\t-\timg.png\x002\t0\t\0old name.txt\0new name.txt\0";
        let files = parse_numstat_z(raw).unwrap();
        assert_eq!(
            files,
            vec![
                FileStat {
                    path: "src/a.rs".into(),
                    added: 3,
                    removed: 1
                },
                FileStat {
                    path: "img.png".into(),
                    added: 0,
                    removed: 0
                },
                FileStat {
                    path: "new name.txt".into(),
                    added: 2,
                    removed: 0
                },
            ]
        );
        assert!(parse_numstat_z(b"").unwrap().is_empty());
        assert!(parse_numstat_z(b"x\ty\tz\0").is_err());
    }
}

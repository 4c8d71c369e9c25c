//! Which file paths an agent's `fs/*` requests may touch: only those inside the task's
//! worktree. The lexical rules are pure; the symlink check reads the file system.

use std::path::{Component, Path, PathBuf};

use crate::Error;

/// The worktree as the agent was told it (`cwd`) and as the file system resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worktree {
    given: PathBuf,
    canonical: PathBuf,
}

impl Worktree {
    /// Resolves `cwd`; a worktree that does not exist refuses every path.
    #[must_use]
    pub fn new(cwd: &Path) -> Self {
        let canonical = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
        Self {
            given: cwd.to_path_buf(),
            canonical,
        }
    }

    /// The path as given to the agent.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.given
    }

    /// `path` if it names a file inside the worktree, after following every symlink
    /// that exists on the way to it; otherwise why not.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, Error> {
        let path = lexically_inside(&[&self.given, &self.canonical], path)?;
        // The deepest part of the path that exists decides where it really points; the
        // parts below it do not exist yet, so they cannot be links.
        let existing = path
            .ancestors()
            .find(|p| std::fs::symlink_metadata(p).is_ok())
            .ok_or_else(|| refused(&path, "nothing of it exists"))?;
        let real = std::fs::canonicalize(existing)
            .map_err(|_| refused(&path, "it goes through a broken link"))?;
        if !real.starts_with(&self.canonical) {
            return Err(refused(&path, "a link leads outside the worktree"));
        }
        Ok(path)
    }
}

fn refused(path: &Path, why: &str) -> Error {
    Error::PathRefused {
        path: path.display().to_string(),
        reason: why.to_owned(),
    }
}

/// `path` with `.` parts removed, if it is absolute, has no `..` part, and lies under
/// one of `roots`. Pure: no file system access.
pub fn lexically_inside(roots: &[&Path], path: &Path) -> Result<PathBuf, Error> {
    if !path.is_absolute() {
        return Err(refused(path, "it is not an absolute path"));
    }
    let mut clean = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => return Err(refused(path, "it contains `..`")),
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    if roots.iter().any(|root| clean.starts_with(root)) {
        Ok(clean)
    } else {
        Err(refused(path, "it is outside the worktree"))
    }
}

/// The text of `content` from 1-based `line`, at most `limit` lines: what
/// `fs/read_text_file` asks for.
#[must_use]
pub fn slice_lines(content: &str, line: Option<u32>, limit: Option<u32>) -> String {
    if line.is_none() && limit.is_none() {
        return content.to_owned();
    }
    let skip = line.map_or(0, |l| l.saturating_sub(1) as usize);
    let take = limit.map_or(usize::MAX, |l| l as usize);
    content
        .split_inclusive('\n')
        .skip(skip)
        .take(take)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lexical_rules() {
        let root = Path::new("/w/t");
        let ok = |p: &str| lexically_inside(&[root], Path::new(p));
        assert_eq!(ok("/w/t/a.md").unwrap(), PathBuf::from("/w/t/a.md"));
        assert_eq!(ok("/w/t/./b/c").unwrap(), PathBuf::from("/w/t/b/c"));
        assert!(
            ok("/w/t/../t/a").is_err(),
            "`..` is refused even when it comes back"
        );
        assert!(
            ok("/w/tt/a").is_err(),
            "a sibling sharing the prefix is outside"
        );
        assert!(ok("a.md").is_err());
        assert!(ok("/etc/passwd").is_err());
    }

    #[test]
    fn links_out_of_the_worktree_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = Worktree::new(dir.path());
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("dangling"))
            .unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(tree.resolve(&dir.path().join("sub/new/file.txt")).is_ok());
        assert!(tree.resolve(&dir.path().join("new.txt")).is_ok());
        assert!(tree.resolve(&dir.path().join("out/x.txt")).is_err());
        assert!(tree.resolve(&dir.path().join("out")).is_err());
        assert!(tree.resolve(&dir.path().join("dangling")).is_err());
        assert!(tree.resolve(&outside.path().join("x")).is_err());
    }

    #[test]
    fn slices_lines() {
        let text = "a\nb\nc\n";
        assert_eq!(slice_lines(text, None, None), text);
        assert_eq!(slice_lines(text, Some(2), None), "b\nc\n");
        assert_eq!(slice_lines(text, Some(2), Some(1)), "b\n");
        assert_eq!(slice_lines(text, Some(9), Some(1)), "");
        assert_eq!(slice_lines(text, Some(0), Some(1)), "a\n");
    }

    proptest! {
        #[test]
        fn accepted_paths_stay_under_the_root(parts in proptest::collection::vec(
            prop_oneof![Just("..".to_owned()), Just(".".to_owned()), "[a-z]{1,3}"], 0..6)
        ) {
            let root = Path::new("/w/t");
            let path = format!("/w/t/{}", parts.join("/"));
            if let Ok(clean) = lexically_inside(&[root], Path::new(&path)) {
                prop_assert!(clean.starts_with(root));
                prop_assert!(!clean.components().any(|c| c == Component::ParentDir));
            } else {
                prop_assert!(parts.iter().any(|p| p == ".."));
            }
        }

        #[test]
        fn any_path_text_is_judged_without_panicking(path in ".{0,40}") {
            let _ = lexically_inside(&[Path::new("/w")], Path::new(&path));
        }
    }
}

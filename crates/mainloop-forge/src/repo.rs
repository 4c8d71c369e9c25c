//! Repository names on a forge: `owner/name`, or a web or git URL of the forge's host.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A repository on a forge.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RepoRef {
    pub owner: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a repository on the forge (expected owner/name or a URL of {1})")]
pub struct RepoRefError(pub String, pub String);

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl RepoRef {
    /// Reads `owner/name`, `https://HOST/owner/name[.git][/]`, `git@HOST:owner/name[.git]`
    /// or `ssh://git@HOST/owner/name[.git]`, where HOST is the forge's web/git host.
    ///
    /// # Errors
    /// Anything else, including URLs of other hosts and local paths.
    pub fn parse(spec: &str, host: &str) -> Result<Self, RepoRefError> {
        let err = || RepoRefError(spec.to_owned(), host.to_owned());
        let s = spec.trim();
        let rest = if let Some(r) = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
        {
            r.strip_prefix(host)
                .and_then(|r| r.strip_prefix('/'))
                .ok_or_else(err)?
        } else if let Some(r) = s.strip_prefix("ssh://git@") {
            r.strip_prefix(host)
                .and_then(|r| r.strip_prefix('/'))
                .ok_or_else(err)?
        } else if let Some(r) = s.strip_prefix("git@") {
            r.strip_prefix(host)
                .and_then(|r| r.strip_prefix(':'))
                .ok_or_else(err)?
        } else if s.contains("://")
            || s.starts_with('/')
            || s.starts_with('.')
            || s.starts_with('~')
        {
            return Err(err());
        } else {
            s
        };
        let rest = rest.trim_end_matches('/');
        let rest = rest.strip_suffix(".git").unwrap_or(rest);
        let mut parts = rest.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(owner), Some(name), None) if valid_part(owner) && valid_part(name) => Ok(Self {
                owner: owner.to_owned(),
                name: name.to_owned(),
            }),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        RepoRef::parse(s, "github.com")
            .map(|r| r.to_string())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn accepts_the_usual_spellings() {
        for s in [
            "octo/hello",
            " octo/hello ",
            "https://github.com/octo/hello",
            "https://github.com/octo/hello.git",
            "https://github.com/octo/hello/",
            "git@github.com:octo/hello.git",
            "ssh://git@github.com/octo/hello.git",
        ] {
            assert_eq!(ok(s), "octo/hello", "{s}");
        }
        assert_eq!(ok("my-org/my.repo_2"), "my-org/my.repo_2");
    }

    #[test]
    fn refuses_paths_other_hosts_and_junk() {
        for s in [
            "/home/me/repo",
            "./repo",
            "~/repo",
            "repo",
            "a/b/c",
            "https://gitlab.com/octo/hello",
            "https://github.com.evil.com/octo/hello",
            "file:///tmp/x",
            "octo/",
            "/hello",
            "../etc",
            "octo/..",
            "octo/hel lo",
            "",
        ] {
            assert!(RepoRef::parse(s, "github.com").is_err(), "{s} was accepted");
        }
    }

    #[test]
    fn enterprise_hosts_work() {
        assert_eq!(
            RepoRef::parse("https://git.corp.example/team/app", "git.corp.example")
                .map(|r| r.to_string()),
            Ok("team/app".to_owned())
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(spec in "\\PC{0,60}") {
            if let Ok(r) = RepoRef::parse(&spec, "github.com") {
                proptest::prop_assert_eq!(RepoRef::parse(&r.to_string(), "github.com"), Ok(r.clone()));
                proptest::prop_assert!(!r.owner.contains('/') && !r.name.contains('/'));
                proptest::prop_assert!(r.owner != ".." && r.name != "..");
            }
        }
    }
}

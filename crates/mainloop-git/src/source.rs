//! Deciding what a task's `repo` string is — a local path or a remote URL — and
//! refusing anything that could make git do more than fetch a repository: transport
//! helpers (`ext::`, `fd::`), option-looking arguments, ssh host names that are really
//! options, control characters and schemes we do not support.

use std::path::PathBuf;

use crate::GitError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RepoSource {
    Local(PathBuf),
    Url(String),
}

fn invalid(repo: &str, reason: impl Into<String>) -> GitError {
    GitError::InvalidRepo {
        repo: repo.to_owned(),
        reason: reason.into(),
    }
}

fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
}

pub(crate) fn parse(repo: &str, allow_file_urls: bool) -> Result<RepoSource, GitError> {
    let s = repo.trim();
    if s.is_empty() {
        return Err(invalid(repo, "empty"));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(repo, "contains control characters"));
    }
    if s.starts_with('-') {
        return Err(invalid(repo, "looks like a command-line option"));
    }
    // git reads `<helper>::<address>` as "run git-remote-<helper>", which for `ext`
    // means "run this shell command". No helper is ever legitimate input here.
    let leading: String = s.chars().take_while(|c| is_scheme_char(*c)).collect();
    if s[leading.len()..].starts_with("::") {
        return Err(invalid(
            repo,
            "transport helper syntax (<helper>::) is not allowed",
        ));
    }

    if let Some((scheme, rest)) = s.split_once("://") {
        return parse_url(repo, s, scheme, rest, allow_file_urls);
    }
    if s.contains("::") {
        return Err(invalid(repo, "transport helper syntax (::) is not allowed"));
    }
    if let Some(url) = parse_scp_like(repo, s)? {
        return Ok(RepoSource::Url(url));
    }
    Ok(RepoSource::Local(PathBuf::from(s)))
}

fn parse_url(
    repo: &str,
    s: &str,
    scheme: &str,
    rest: &str,
    allow_file_urls: bool,
) -> Result<RepoSource, GitError> {
    if s.chars().any(char::is_whitespace) {
        return Err(invalid(repo, "URLs must not contain whitespace"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" | "ssh" | "git+ssh" | "ssh+git" => {}
        "file" if allow_file_urls => {}
        "file" => return Err(invalid(repo, "file:// URLs are not enabled on this server")),
        other => {
            return Err(invalid(
                repo,
                format!("unsupported scheme {other:?}; use https://, ssh:// or git@host:path"),
            ));
        }
    }
    if scheme.eq_ignore_ascii_case("file") {
        if !rest.starts_with('/') {
            return Err(invalid(repo, "file:// URLs need an absolute path"));
        }
        return Ok(RepoSource::Url(s.to_owned()));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() {
        return Err(invalid(repo, "missing host"));
    }
    // `ssh://-oProxyCommand=...` would reach ssh as an option (CVE-2017-1000117).
    if host.starts_with('-') || authority.starts_with('-') {
        return Err(invalid(repo, "host looks like a command-line option"));
    }
    if rest.len() <= authority.len() + 1 {
        return Err(invalid(repo, "missing repository path"));
    }
    Ok(RepoSource::Url(s.to_owned()))
}

/// `user@host:path`, the scp-like ssh syntax. Requiring the `user@` keeps Windows-ish
/// or odd local paths with a colon from being mistaken for a host.
fn parse_scp_like(repo: &str, s: &str) -> Result<Option<String>, GitError> {
    let Some((before, path)) = s.split_once(':') else {
        return Ok(None);
    };
    if before.contains('/') || !before.contains('@') {
        return Ok(None);
    }
    let (user, host) = before.split_once('@').unwrap_or_default();
    let user_ok = !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '~'));
    let host_ok = !host.is_empty()
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    if !user_ok || !host_ok || user.starts_with('-') {
        return Err(invalid(repo, "malformed user@host:path"));
    }
    if path.is_empty() || path.starts_with('-') || path.chars().any(char::is_whitespace) {
        return Err(invalid(repo, "malformed repository path after ':'"));
    }
    Ok(Some(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RepoSource {
        RepoSource::Url(s.to_owned())
    }

    #[test]
    fn accepts_supported_forms() {
        assert_eq!(
            parse("https://github.com/a/b.git", false).ok(),
            Some(url("https://github.com/a/b.git"))
        );
        assert_eq!(
            parse("ssh://git@host:22/a/b", false).ok(),
            Some(url("ssh://git@host:22/a/b"))
        );
        assert_eq!(
            parse("git@github.com:a/b.git", false).ok(),
            Some(url("git@github.com:a/b.git"))
        );
        assert_eq!(
            parse("  /srv/repo ", false).ok(),
            Some(RepoSource::Local(PathBuf::from("/srv/repo")))
        );
        assert_eq!(
            parse("file:///srv/x.git", true).ok(),
            Some(url("file:///srv/x.git"))
        );
        assert_eq!(
            parse("relative/dir", false).ok(),
            Some(RepoSource::Local(PathBuf::from("relative/dir")))
        );
    }

    #[test]
    fn refuses_tricks() {
        for bad in [
            "",
            "   ",
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "EXT::x",
            "x-y.z::whatever",
            "--upload-pack=touch /tmp/x",
            "-u",
            "ssh://-oProxyCommand=touch/x",
            "ssh://user@-oProxyCommand=x/y",
            "git@-oProxyCommand=x:y",
            "git@host:-bad",
            "http://example.com/a.git",
            "git://example.com/a.git",
            "ftp://example.com/a",
            "file:///srv/x.git",
            "https://example.com/a\n.git",
            "/srv/repo\0x",
            "https://exa mple.com/a",
            "https://",
            "https://host",
            "a/b::c",
        ] {
            assert!(parse(bad, false).is_err(), "{bad:?} should be refused");
        }
        assert!(parse("file://relative", true).is_err());
    }
}

//! Git credentials without tokens in URLs: the clone/push URL from a template, and an
//! askpass script that hands git the token from its environment.
//!
//! A token in a remote URL ends up in `.git/config`, in `git remote -v`, in error
//! messages and in process listings. Instead git runs `GIT_ASKPASS`, which answers the
//! username prompt with `x-access-token` and the password prompt with the token, read
//! from an environment variable of that one `git` process.

use crate::GithubError;
use mainloop_config::{REDACTED, Secret};
use mainloop_forge::RepoRef;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Where repositories are cloned from and pushed to on github.com.
pub const DEFAULT_GIT_URL: &str = "https://github.com/{owner}/{name}.git";

/// The script's file name inside the directory given to [`install_askpass`].
pub const ASKPASS_FILE_NAME: &str = "git-askpass";

/// The environment variable the script reads the token from.
pub const PASSWORD_VAR: &str = "MAINLOOP_GIT_PASSWORD";

const ASKPASS_SCRIPT: &str = r#"#!/bin/sh
# Written by mainloop. git runs this with its prompt as $1; the token comes from the
# environment of that git process only, never from a file or a URL.
case "$1" in
  [Uu]sername*) echo x-access-token ;;
  *) printf '%s\n' "$MAINLOOP_GIT_PASSWORD" ;;
esac
"#;

/// The URL to clone from and push to: `template` with `{owner}` and `{name}` filled in.
///
/// # Errors
/// A template without both placeholders, or names that could escape their path segment.
pub fn git_url(template: &str, repo: &RepoRef) -> Result<String, GithubError> {
    if !(template.contains("{owner}") && template.contains("{name}")) {
        return Err(GithubError::Config(format!(
            "git URL template {template:?} must contain {{owner}} and {{name}}"
        )));
    }
    for part in [&repo.owner, &repo.name] {
        let ok = !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(GithubError::Config(format!(
                "{part:?} is not a repository owner or name"
            )));
        }
    }
    Ok(template
        .replace("{owner}", &repo.owner)
        .replace("{name}", &repo.name))
}

/// Writes the askpass script into `dir` (created if missing) unless an identical one is
/// already there, executable by its owner only, and returns its path. Safe to call from
/// several tasks at once: the file is replaced atomically.
///
/// # Errors
/// When the directory or the file cannot be written.
pub fn install_askpass(dir: &Path) -> Result<PathBuf, GithubError> {
    let path = dir.join(ASKPASS_FILE_NAME);
    let io = |source| GithubError::Askpass {
        path: path.clone(),
        source,
    };
    if std::fs::read(&path).is_ok_and(|existing| existing == ASKPASS_SCRIPT.as_bytes())
        && is_private_executable(&path)
    {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{ASKPASS_FILE_NAME}.{}.{nanos}.tmp",
        std::process::id()
    ));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o700);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(ASKPASS_SCRIPT.as_bytes())?;
        file.sync_all()?;
        drop(file);
        // The umask may have narrowed the mode at creation; set it exactly.
        set_private_executable(&tmp)?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(path)
}

#[cfg(unix)]
fn set_private_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn set_private_executable(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn is_private_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o700)
}

#[cfg(not(unix))]
fn is_private_executable(_path: &Path) -> bool {
    true
}

/// The environment for one `git` process that talks to GitHub. `Debug` redacts the token;
/// pass [`GitEnv::vars`] to `Command::envs`.
#[derive(Clone)]
pub struct GitEnv {
    askpass: PathBuf,
    token: Secret,
}

impl GitEnv {
    /// Uses the script [`install_askpass`] wrote.
    #[must_use]
    pub fn new(askpass: PathBuf, token: Secret) -> Self {
        Self { askpass, token }
    }

    /// `GIT_ASKPASS`, `MAINLOOP_GIT_PASSWORD` and `GIT_TERMINAL_PROMPT=0` (fail instead
    /// of waiting for a terminal that is not there).
    pub fn vars(&self) -> impl Iterator<Item = (&str, &std::ffi::OsStr)> {
        [
            ("GIT_ASKPASS", self.askpass.as_os_str()),
            (PASSWORD_VAR, std::ffi::OsStr::new(self.token.expose())),
            ("GIT_TERMINAL_PROMPT", std::ffi::OsStr::new("0")),
        ]
        .into_iter()
    }
}

impl fmt::Debug for GitEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitEnv")
            .field("GIT_ASKPASS", &self.askpass)
            .field(PASSWORD_VAR, &REDACTED)
            .field("GIT_TERMINAL_PROMPT", &"0")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(owner: &str, name: &str) -> RepoRef {
        RepoRef {
            owner: owner.into(),
            name: name.into(),
        }
    }

    #[test]
    fn fills_the_template() {
        assert_eq!(
            git_url(DEFAULT_GIT_URL, &repo("octo", "hello.rs"))
                .ok()
                .as_deref(),
            Some("https://github.com/octo/hello.rs.git")
        );
        assert_eq!(
            git_url("file:///srv/fake/{owner}/{name}.git", &repo("o", "n"))
                .ok()
                .as_deref(),
            Some("file:///srv/fake/o/n.git")
        );
    }

    #[test]
    fn refuses_bad_templates_and_names() {
        assert!(git_url("https://github.com/{owner}.git", &repo("o", "n")).is_err());
        assert!(git_url(DEFAULT_GIT_URL, &repo("..", "n")).is_err());
        assert!(git_url(DEFAULT_GIT_URL, &repo("o", "a/b")).is_err());
        assert!(git_url(DEFAULT_GIT_URL, &repo("o", "x@evil")).is_err());
        assert!(git_url(DEFAULT_GIT_URL, &repo("", "n")).is_err());
    }

    fn run(script: &Path, prompt: &str, password: &str) -> String {
        let out = std::process::Command::new(script)
            .arg(prompt)
            .env(PASSWORD_VAR, password)
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => format!("FAILED {o:?}"),
            Err(e) => format!("FAILED {e}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn askpass_answers_prompts_and_is_private() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir()?;
        let sub = dir.path().join("bin");
        let path = install_askpass(&sub)?;
        assert_eq!(path, sub.join(ASKPASS_FILE_NAME));
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            run(&path, "Username for 'https://github.com': ", "tok"),
            "x-access-token\n"
        );
        assert_eq!(
            run(
                &path,
                "Password for 'https://x-access-token@github.com': ",
                "ghp_abc"
            ),
            "ghp_abc\n"
        );
        // A second call leaves the file alone; a tampered file is rewritten.
        let before = std::fs::metadata(&path)?.modified()?;
        assert_eq!(install_askpass(&sub)?, path);
        assert_eq!(std::fs::metadata(&path)?.modified()?, before);
        std::fs::write(&path, "#!/bin/sh\necho pwned\n")?;
        install_askpass(&sub)?;
        assert_eq!(std::fs::read_to_string(&path)?, ASKPASS_SCRIPT);
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o700
        );
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(&sub)?.count(), 1);
        Ok(())
    }

    #[test]
    fn env_redacts_the_token() {
        let env = GitEnv::new(PathBuf::from("/x/git-askpass"), Secret::new("ghp_secret"));
        let shown = format!("{env:?}");
        assert!(!shown.contains("ghp_secret"), "{shown}");
        let vars: Vec<(String, String)> = env
            .vars()
            .map(|(k, v)| (k.to_owned(), v.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            vars,
            vec![
                ("GIT_ASKPASS".to_owned(), "/x/git-askpass".to_owned()),
                (PASSWORD_VAR.to_owned(), "ghp_secret".to_owned()),
                ("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned()),
            ]
        );
    }
}

//! Which server the client talks to and with which token: the stored login
//! (`client.toml` in the user's config directory, readable by the user alone) and the
//! `--server`/`--token` flags that override it.

use super::http::ClientError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The login file's name inside the config directory.
const FILE_NAME: &str = "client.toml";

/// A stored login: the server's URL and an API token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub url: String,
    pub token: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("url", &self.url)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// The server and token a command uses.
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    pub url: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Where the login is stored: `$XDG_CONFIG_HOME/mainloop/client.toml` when that is an
/// absolute path, else the platform's config directory (`~/.config/mainloop` on Linux).
///
/// # Errors
/// When no config directory can be found (no home directory).
pub fn login_path() -> Result<PathBuf, ClientError> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
    let platform =
        directories::ProjectDirs::from("", "", "mainloop").map(|d| d.config_dir().to_owned());
    choose_login_path(xdg, platform).ok_or_else(|| {
        ClientError::Local(
            "cannot find a config directory to keep the login in (set HOME or \
             XDG_CONFIG_HOME); pass --server and --token instead"
                .into(),
        )
    })
}

fn choose_login_path(xdg: Option<PathBuf>, platform: Option<PathBuf>) -> Option<PathBuf> {
    xdg.filter(|p| p.is_absolute())
        .map(|p| p.join("mainloop"))
        .or(platform)
        .map(|dir| dir.join(FILE_NAME))
}

/// A server URL as typed, checked and without a trailing slash.
///
/// # Errors
/// When it is not an `http://` or `https://` URL.
pub fn normalize_url(raw: &str) -> Result<String, ClientError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed).map_err(|e| {
        ClientError::Usage(format!(
            "'{raw}' is not a URL ({e}); give the server as http://HOST:PORT or https://HOST"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ClientError::Usage(format!(
            "'{raw}' is not an http:// or https:// URL; give the server as \
             http://HOST:PORT or https://HOST"
        )));
    }
    Ok(trimmed.to_owned())
}

/// Reads the stored login, if any.
///
/// # Errors
/// When the file exists but cannot be read or parsed.
pub fn load(path: &Path) -> Result<Option<Login>, ClientError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ClientError::local(
                &format!("reading {}", path.display()),
                e,
            ));
        }
    };
    toml::from_str(&text).map(Some).map_err(|e| {
        ClientError::Local(format!(
            "{} is not a login file ({e}); run `mainloop logout`, then `mainloop login URL`",
            path.display()
        ))
    })
}

/// Stores `login` at `path`: the directory made private (0700), the file written
/// readable by the user alone (0600) and renamed into place, so no other user can ever
/// read the token, not even for a moment.
///
/// # Errors
/// When the directory or file cannot be written.
pub fn store(path: &Path, login: &Login) -> Result<(), ClientError> {
    let fail = |e: std::io::Error| ClientError::local(&format!("writing {}", path.display()), e);
    let dir = path
        .parent()
        .ok_or_else(|| ClientError::Local(format!("{} has no directory", path.display())))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    let text = toml::to_string(login).map_err(|e| ClientError::local("encoding the login", e))?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    // A leftover from an interrupted write may have other permissions.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Removes the stored login; whether there was one.
///
/// # Errors
/// When it exists and cannot be removed.
pub fn remove(path: &Path) -> Result<bool, ClientError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ClientError::local(
            &format!("removing {}", path.display()),
            e,
        )),
    }
}

/// The connection from the flags (or their environment variables) and the stored login.
/// The stored token goes only to the stored server, never to another URL.
///
/// # Errors
/// No server given and no login stored.
pub fn resolve(
    server: Option<&str>,
    token: Option<&str>,
    stored: Option<&Login>,
) -> Result<Connection, ClientError> {
    let token = token.filter(|t| !t.is_empty()).map(str::to_owned);
    let Some(server) = server.filter(|s| !s.trim().is_empty()) else {
        return match stored {
            Some(login) => Ok(Connection {
                url: login.url.clone(),
                token: token.or_else(|| Some(login.token.clone())),
            }),
            None => Err(ClientError::Unreachable(
                "no server given and not logged in; run `mainloop login URL`, or pass \
                 --server URL --token TOKEN (or set MAINLOOP_SERVER and MAINLOOP_TOKEN)"
                    .into(),
            )),
        };
    };
    let url = normalize_url(server)?;
    let token = token.or_else(|| stored.filter(|l| l.url == url).map(|l| l.token.clone()));
    Ok(Connection { url, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(url: &str) -> Login {
        Login {
            url: url.into(),
            token: "mlt_stored".into(),
        }
    }

    #[test]
    fn xdg_config_home_wins_when_absolute() {
        let platform = Some(PathBuf::from("/home/u/.config/mainloop"));
        assert_eq!(
            choose_login_path(Some("/x/cfg".into()), platform.clone()),
            Some(PathBuf::from("/x/cfg/mainloop/client.toml"))
        );
        assert_eq!(
            choose_login_path(Some("relative".into()), platform),
            Some(PathBuf::from("/home/u/.config/mainloop/client.toml"))
        );
        assert_eq!(choose_login_path(None, None), None);
    }

    #[test]
    fn flags_win_and_the_stored_token_stays_with_its_server() {
        let stored = login("http://a:1");
        let c = resolve(None, None, Some(&stored)).unwrap();
        assert_eq!(
            (c.url.as_str(), c.token.as_deref()),
            ("http://a:1", Some("mlt_stored"))
        );
        let c = resolve(Some("http://a:1/"), None, Some(&stored)).unwrap();
        assert_eq!(c.token.as_deref(), Some("mlt_stored"));
        let c = resolve(Some("http://b:2"), None, Some(&stored)).unwrap();
        assert_eq!(c.token, None, "another server never gets the stored token");
        let c = resolve(Some("http://b:2"), Some("mlt_flag"), Some(&stored)).unwrap();
        assert_eq!(c.token.as_deref(), Some("mlt_flag"));
        let e = resolve(None, None, None).unwrap_err();
        assert_eq!(e.exit_code(), 4);
        assert!(e.to_string().contains("mainloop login URL"), "{e}");
        assert_eq!(
            resolve(Some("localhost:80"), None, None)
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(
            resolve(Some("ftp://h"), None, None)
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn stored_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/mainloop/client.toml");
        assert_eq!(load(&path).unwrap(), None);
        store(&path, &login("http://a:1")).unwrap();
        store(&path, &login("http://a:2")).unwrap();
        assert_eq!(load(&path).unwrap(), Some(login("http://a:2")));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(!format!("{:?}", login("u")).contains("mlt_stored"));
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
    }
}

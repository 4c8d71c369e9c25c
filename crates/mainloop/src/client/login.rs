//! `mainloop login` and `mainloop logout`: checking a token against the server and
//! keeping it, with the server's URL, in the user's config directory.

use super::config::{self, Login};
use super::http::{Api, ClientError};
use super::print;
use std::io::{BufRead, IsTerminal};

/// Checks `token` (asked for when `None`) with `GET /api/auth/me` and stores the login.
///
/// # Errors
/// A malformed URL, an unreachable server, a refused token, or an unwritable file.
pub async fn login(url: &str, token: Option<String>) -> Result<(), ClientError> {
    let url = config::normalize_url(url)?;
    let path = config::login_path()?;
    let token = match token {
        Some(t) => t,
        None => read_token()?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(ClientError::Usage(
            "no token given; `mainloop token` on the server's machine prints one".into(),
        ));
    }
    let api = Api::new(&url, Some(&token))?;
    let me = api.get("/api/auth/me", &[]).await.map_err(|e| match e {
        ClientError::Auth(_) => ClientError::Auth(format!(
            "{url} refused this token; `mainloop token` on the server's machine prints a \
             valid one (or `mainloop user add NAME` makes one for another user)"
        )),
        ClientError::NotFound(_) => ClientError::Unreachable(format!(
            "{url} has no mainloop API (GET /api/auth/me is not found); check the URL"
        )),
        other => other,
    })?;
    config::store(
        &path,
        &Login {
            url: url.clone(),
            token,
        },
    )?;
    let name = me["name"].as_str().unwrap_or("?");
    print(&format!(
        "Logged in to {url} as {name}. The login is stored in {} (readable by you only).\n",
        path.display()
    ))
}

/// Reads the token from standard input: without echo on a terminal, as a plain line
/// from a pipe.
fn read_token() -> Result<String, ClientError> {
    let io = |e: std::io::Error| ClientError::local("reading the token", e);
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password("API token (`mainloop token` prints it): ").map_err(io);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(io)?;
    Ok(line)
}

/// Removes the stored login.
///
/// # Errors
/// When the file cannot be removed.
pub fn logout() -> Result<(), ClientError> {
    let path = config::login_path()?;
    if config::remove(&path)? {
        print(&format!("Logged out ({} removed).\n", path.display()))
    } else {
        print("Not logged in.\n")
    }
}

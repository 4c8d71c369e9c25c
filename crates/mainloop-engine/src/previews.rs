//! Live previews as the engine sees them: the port through which the worker starts,
//! uses and stops a task's preview process, which host name serves which task's
//! preview (`t-<short id>.<domain>`), and the one-time codes and cookies that let only
//! the task's owner in. Codes and cookies live in memory: a restart stops every preview
//! anyway.

use crate::{Engine, EngineError, Result};
use futures::future::BoxFuture;
use mainloop_domain::{TaskId, UserId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long a code from [`Engine::open_preview`] can be exchanged for a cookie.
pub const PREVIEW_CODE_TTL: Duration = Duration::from_secs(120);
/// How long a preview cookie lets its holder in.
pub const PREVIEW_COOKIE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Starts, uses and stops tasks' preview processes (implemented by the worker runtime;
/// installed by the binary).
pub trait PreviewPort: Send + Sync + std::fmt::Debug + 'static {
    /// Starts the task's preview unless it runs, waits until it answers, and gives
    /// where it answers (a loopback port, or its pod's address); the error says why it
    /// could not, with the command's output.
    fn start(&self, task: TaskId) -> BoxFuture<'static, Result<SocketAddr, String>>;
    /// Where the task's running preview answers, counting as use (it keeps the preview
    /// from its idle stop); `None` when it does not run.
    fn touch(&self, task: TaskId) -> Option<SocketAddr>;
    /// Stops the task's preview, if it runs.
    fn stop(&self, task: TaskId) -> BoxFuture<'static, ()>;
}

/// What opens a task's preview in a browser: its host and a one-time code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewLink {
    /// `t-<short id>.<domain>`, without a port.
    pub host: String,
    /// Exchanged once, within [`PREVIEW_CODE_TTL`], for the preview's cookie.
    pub code: String,
}

/// A request's host that names a preview: its `t-<short id>` label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewHost(pub String);

/// Where a request to a preview host goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviewTarget {
    /// To the preview process listening there (loopback, or its pod).
    At(SocketAddr),
    /// Nowhere: no valid cookie of the task's owner for this host.
    Refused,
    /// The visitor may enter, but the preview no longer runs (idle or the task ended).
    Stopped,
}

/// One preview host that a code or cookie (made only for the task's owner) opens, until
/// when.
#[derive(Clone, Debug)]
struct Grant {
    label: String,
    task: TaskId,
    until: Instant,
}

/// The engine's preview state.
#[derive(Debug, Default)]
pub(crate) struct Previews {
    port: RwLock<Option<(Arc<dyn PreviewPort>, String)>>,
    /// By the hash of the code, then of the cookie.
    codes: Mutex<HashMap<String, Grant>>,
    cookies: Mutex<HashMap<String, Grant>>,
}

/// The label of `host` (a `Host` header, port and case aside) when it is a preview
/// host under `domain`: exactly `t-` and eight hex digits, then `.domain`.
#[must_use]
pub fn preview_label(host: &str, domain: &str) -> Option<String> {
    let host = host.trim().to_ascii_lowercase();
    // A port follows the last colon; host names never contain one.
    let name = host.rsplit_once(':').map_or(host.as_str(), |(n, _)| n);
    let name = name.strip_suffix('.').unwrap_or(name);
    let domain = domain.trim().trim_matches('.').to_ascii_lowercase();
    let label = name.strip_suffix(&domain)?.strip_suffix('.')?;
    let id = label.strip_prefix("t-")?;
    (id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| label.to_owned())
}

/// The label of task `id`'s preview host.
#[must_use]
pub fn preview_host_label(id: TaskId) -> String {
    format!("t-{}", id.short())
}

fn take_grant(
    map: &Mutex<HashMap<String, Grant>>,
    key: &str,
    label: &str,
    keep: bool,
) -> Option<Grant> {
    let mut map = map.lock().ok()?;
    let now = Instant::now();
    map.retain(|_, g| g.until > now);
    let hash = crate::hash_token(key);
    let grant = if keep {
        map.get(&hash).cloned()
    } else {
        map.remove(&hash)
    }?;
    (grant.label == label).then_some(grant)
}

fn put_grant(map: &Mutex<HashMap<String, Grant>>, grant: Grant) -> String {
    let key = crate::auth::new_token("");
    if let Ok(mut map) = map.lock() {
        let now = Instant::now();
        map.retain(|_, g| g.until > now);
        map.insert(crate::hash_token(&key), grant);
    }
    key
}

impl Engine {
    /// Installs the preview runner and the domain preview hosts are named under.
    pub fn set_previews(&self, port: Arc<dyn PreviewPort>, domain: &str) {
        if let Ok(mut p) = self.inner.previews.port.write() {
            *p = Some((port, domain.trim().trim_matches('.').to_owned()));
        }
    }

    fn preview_port(&self) -> Option<(Arc<dyn PreviewPort>, String)> {
        self.inner.previews.port.read().ok().and_then(|p| p.clone())
    }

    /// Starts task `id`'s preview for its owner `user` (if it is not running) once it
    /// answers, and gives the host and a one-time code that opens it.
    ///
    /// # Errors
    /// `NotFound` for another user's task; `Invalid` when previews are off or the
    /// preview cannot start (the reason, with the command's output).
    pub async fn open_preview(&self, user: UserId, id: TaskId) -> Result<PreviewLink> {
        let task = self.task(user, id).await?;
        let Some((port, domain)) = self.preview_port() else {
            return Err(EngineError::Invalid(
                "previews are not available on this server".to_owned(),
            ));
        };
        if task.state.is_final() {
            return Err(EngineError::Invalid(format!(
                "the task is {}; its preview is gone",
                task.state.as_str()
            )));
        }
        port.start(id).await.map_err(EngineError::Invalid)?;
        let label = preview_host_label(id);
        let code = put_grant(
            &self.inner.previews.codes,
            Grant {
                label: label.clone(),
                task: id,
                until: Instant::now() + PREVIEW_CODE_TTL,
            },
        );
        Ok(PreviewLink {
            host: format!("{label}.{domain}"),
            code,
        })
    }

    /// Stops task `id`'s preview and forgets who could enter it.
    ///
    /// # Errors
    /// `NotFound` for another user's task.
    pub async fn close_preview(&self, user: UserId, id: TaskId) -> Result<()> {
        self.task(user, id).await?;
        if let Some((port, _)) = self.preview_port() {
            port.stop(id).await;
        }
        for map in [&self.inner.previews.codes, &self.inner.previews.cookies] {
            if let Ok(mut map) = map.lock() {
                map.retain(|_, g| g.task != id);
            }
        }
        Ok(())
    }

    /// Whether a request's `Host` names a preview: such a request goes to the preview
    /// (or is refused), never to the API or the web app.
    #[must_use]
    pub fn preview_for_host(&self, host: &str) -> Option<PreviewHost> {
        let (_, domain) = self.preview_port()?;
        preview_label(host, &domain).map(PreviewHost)
    }

    /// Exchanges a one-time code for the cookie of `host`; `None` when the code is
    /// unknown, used, expired, or made for another host.
    #[must_use]
    pub fn redeem_preview_code(&self, host: &PreviewHost, code: &str) -> Option<String> {
        let grant = take_grant(&self.inner.previews.codes, code, &host.0, false)?;
        Some(put_grant(
            &self.inner.previews.cookies,
            Grant {
                until: Instant::now() + PREVIEW_COOKIE_TTL,
                ..grant
            },
        ))
    }

    /// Where a request to `host` carrying preview cookie `cookie` goes.
    #[must_use]
    pub fn preview_target(&self, host: &PreviewHost, cookie: Option<&str>) -> PreviewTarget {
        let Some(grant) =
            cookie.and_then(|c| take_grant(&self.inner.previews.cookies, c, &host.0, true))
        else {
            return PreviewTarget::Refused;
        };
        match self.preview_port().and_then(|(p, _)| p.touch(grant.task)) {
            Some(addr) => PreviewTarget::At(addr),
            None => PreviewTarget::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::preview_label;

    #[test]
    fn only_a_task_label_under_the_domain_is_a_preview_host() {
        let l = |h| preview_label(h, "localhost");
        assert_eq!(
            l("t-0a1b2c3d.localhost:8080").as_deref(),
            Some("t-0a1b2c3d")
        );
        assert_eq!(l("T-0A1B2C3D.LOCALHOST").as_deref(), Some("t-0a1b2c3d"));
        assert_eq!(l("t-0a1b2c3d.localhost.:80").as_deref(), Some("t-0a1b2c3d"));
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "t-0a1b2c3d.localhostx",
            "t-0a1b2c3d.xlocalhost",
            "x.t-0a1b2c3d.localhost",
            "t-0a1b2c3.localhost",
            "t-0a1b2c3dd.localhost",
            "t-0a1b2c3g.localhost",
            "t-0a1b2c3dlocalhost",
            "[::1]:8080",
            "",
        ] {
            assert_eq!(l(host), None, "{host}");
        }
        assert_eq!(
            preview_label("t-0a1b2c3d.preview.example.com", ".preview.example.com.").as_deref(),
            Some("t-0a1b2c3d")
        );
        assert_eq!(
            preview_label("t-0a1b2c3d.example.com", "preview.example.com"),
            None
        );
    }
}

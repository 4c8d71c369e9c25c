//! The server's data directory: made private to its user, and locked for as long as
//! one server uses it.

use anyhow::{Context, Result, bail};
use mainloop_config::Config;
use std::fs::File;
use std::path::Path;

const LOCK_FILE: &str = "mainloop.lock";

pub(crate) fn ensure_data_dir(config: &Config) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    restrict(&config.data_dir, 0o700);
    Ok(())
}

#[cfg(unix)]
pub(crate) fn restrict(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        tracing::warn!(path = %path.display(), error = %e, "could not restrict permissions");
    }
}

#[cfg(not(unix))]
pub(crate) fn restrict(_path: &Path, _mode: u32) {}

/// Holds an exclusive lock on the data directory: a second server on the same data
/// would break the single-process assumptions (job reclaim at start). A server killed a
/// moment ago may still hold it for a while — a child it forked keeps the lock until it
/// execs — so a held lock is waited for before it is taken as another server's.
pub(crate) async fn lock_data_dir(config: &Config) -> Result<File> {
    let path = config.data_dir.join(LOCK_FILE);
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let since = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if since.elapsed() < LOCK_WAIT => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another mainloop server is using {}; stop it first",
                config.data_dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).context("locking the data directory");
            }
        }
    }
}

/// How long a held lock on the data directory is waited for.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

//! Directories for tests whose agents must not live under the temporary directory
//! (Codex refuses to sandbox its commands when its home lies under `TMPDIR`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under the workspace's `target/test-homes`, removed when dropped
/// (with the `<dir>.log` a server started on it writes beside it).
#[derive(Debug)]
pub struct TestDir(pub PathBuf);

impl TestDir {
    /// A directory whose name starts with `what`.
    #[must_use]
    pub fn new(what: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = crate::model::repo_root().join(format!(
            "target/test-homes/{what}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }

    #[must_use]
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("log"));
    }
}

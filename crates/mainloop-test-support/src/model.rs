//! The fake model and the scripts it plays (defined once, in
//! `crates/mainloop-fake-anthropic/scripts/`), and the real `claude` CLI by a path that
//! resolves inside the sandbox too.

use mainloop_fake_anthropic::{FakeAnthropic, Script};
use std::path::{Path, PathBuf};

/// The fake model, as tests hold it.
pub type FakeModel = FakeAnthropic;

pub(crate) fn repo_root() -> PathBuf {
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).unwrap()
}

/// The script file named `name` (`greeter` is `scripts/greeter.yaml`).
#[must_use]
pub fn script_path(name: &str) -> PathBuf {
    let dir = repo_root().join("crates/mainloop-fake-anthropic/scripts");
    ["yaml", "yml", "json"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no script {name:?} in {}", dir.display()))
}

/// The script named `name`, loaded from its file.
#[must_use]
pub fn script(name: &str) -> Script {
    let path = script_path(name);
    Script::from_path(&path).unwrap_or_else(|e| panic!("script {}: {e}", path.display()))
}

/// The fake model serving `script` on an ephemeral port.
pub async fn fake_model(script: Script) -> FakeModel {
    FakeAnthropic::start(script).await.unwrap()
}

/// Waits until the fake has answered every request it was sent (none in flight).
/// Together with an idle job queue, nothing more is coming from the model.
pub async fn settled(fake: &FakeModel) {
    crate::wait_for("the fake model's requests to be answered", || async {
        (fake.in_flight() == 0).then_some(())
    })
    .await;
}

/// The real `claude` CLI (`node_modules/.bin/claude` at the repository's root) by an
/// absolute path without `..`: a sandboxed agent is started by that path, and a path
/// through a directory the sandbox hides would not resolve inside it. `None` (and the
/// test skips) when it is not installed, except under CI, where that is a failure.
#[must_use]
pub fn claude_path() -> Option<PathBuf> {
    node_bin("claude")
}

/// The MCP Inspector's CLI (pinned in the root `package.json`), or `None` (and the test
/// skips) when `npm ci` has not installed it, except under CI.
#[must_use]
pub fn mcp_inspector_path() -> Option<PathBuf> {
    node_bin("mcp-inspector")
}

/// A pinned CLI of the root `node_modules/.bin` (`codex`, `opencode`, `gemini`, …) by a
/// resolved path; `None` (and the test skips) when it is missing, except under CI,
/// where that is a failure.
#[allow(clippy::print_stderr)]
#[must_use]
pub fn node_bin(name: &str) -> Option<PathBuf> {
    let bin = repo_root().join("node_modules/.bin");
    let program = std::fs::canonicalize(&bin)
        .map(|dir| dir.join(name))
        .unwrap_or_else(|_| bin.join(name));
    if program.exists() {
        return Some(program);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing",
        program.display()
    );
    eprintln!("skipping: {} is missing (run `npm ci`)", program.display());
    None
}

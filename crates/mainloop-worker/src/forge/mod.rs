//! The lifecycle on a forge (GitHub): the plan issue with the worker's questions and plan
//! (answered there or in the app, whichever is first), the pushed branch and draft pull
//! request, CI watched with conditional requests, ready for review, review feedback sent
//! back to the agent, and merge or close detected. The task state machine is the same as
//! for local work; this module mirrors it outward and reads decisions back in.
//!
//! - `ledger.rs`: the crash-safe write ledger (typed keys; a write recorded as begun and
//!   found again instead of repeated).
//! - `state.rs`: the task's mirror record and the context a step works in ([`Ctx::once`]).
//! - `mirror.rs`: the outbound mirror, a pure `(task, record) -> writes` and the
//!   `forge.sync` job that carries them out.
//! - `replies.rs`: reading replies, a pure `(task, replies) -> reading`; `watch.rs`, the
//!   `forge.watch` job that polls for them and acts.
//! - `hosted.rs`: [`Hosted`], the forge as where a task's work goes (publish, check,
//!   merge).
//! - `jobs.rs`, `error.rs`: how forge steps end, and whose failure stopped them.
//!
//! "Forge" here always means a code host: the `Forge` port, its [`ForgeSettings`], and
//! this module. Both jobs, and the commit, checks and merge steps of a forge task, read
//! and write the task's `task_forge` record under a per-task lock, so they never
//! overwrite each other's bookkeeping.

mod error;
mod hosted;
mod jobs;
mod ledger;
mod mirror;
mod replies;
mod state;
#[cfg(test)]
mod tests;
mod watch;

pub(crate) use hosted::Hosted;
pub(crate) use mirror::sync;
pub use watch::wake;
pub(crate) use watch::watch;

#[cfg(doc)]
use state::Ctx;

use mainloop_forge::{Forge, RepoRef};
use std::sync::Arc;
use std::time::Duration;

/// Appended to every comment mainloop posts, so its own words are never read back as a
/// human's answer or feedback.
pub const MARKER: &str = "<!-- mainloop -->";

/// How the runtime reaches the forge, and its timings.
#[derive(Clone, Debug)]
pub struct ForgeSettings {
    pub forge: Arc<dyn Forge>,
    /// The web host repository URLs name (`github.com`).
    pub web_host: String,
    /// Clone/push URL template with `{owner}` and `{name}`.
    pub git_url: String,
    pub label: String,
    /// The handle a comment mentions to ask for changes (`@mainloop`).
    pub mention: String,
    pub poll_interval: Duration,
    pub ci_pending_timeout: Duration,
    pub ci_appear_timeout: Duration,
    /// Bytes of each failing job's log sent to the agent.
    pub log_tail_bytes: usize,
    /// Logins whose replies count besides the token's own account.
    pub trusted_users: Vec<String>,
}

impl ForgeSettings {
    /// The clone and push URL of a repository.
    #[must_use]
    pub fn git_url_for(&self, repo: &RepoRef) -> String {
        self.git_url
            .replace("{owner}", &repo.owner)
            .replace("{name}", &repo.name)
    }
}

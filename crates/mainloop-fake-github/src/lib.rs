//! A fake GitHub for end-to-end tests: the REST API (version 2022-11-28) and the one
//! GraphQL mutation mainloop uses, in GitHub's own wire format (paths, field names,
//! status codes, `ETag`/`Link`/rate-limit headers, signed webhooks), over real bare git
//! repositories that clients push to and clone from with `file://` URLs. Test-control
//! endpoints under `/_fake` (and the same operations on [`FakeGithub`]) create
//! repositories, attach job logs, and simulate rate limits, outages and hangs.

mod checks;
mod control;
mod faults;
mod git;
mod graphql;
mod http;
mod issues;
mod pulls;
mod render;
mod reviews;
mod state;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The subject of the commit a merge race lands on the base branch first (see
/// [`FakeGithub::race_next_merges`]).
pub const RACE_COMMIT_SUBJECT: &str = "Merge another pull request";

pub use faults::{Hang, Outage, RateLimit, SecondaryLimit, Stats};

/// Everything that can go wrong, in the fake itself or as an answer to a client (the
/// `Api` variant is rendered as GitHub would render it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("git: {0}")]
    Git(String),
    #[error("{status}: {message}")]
    Api {
        status: u16,
        message: String,
        /// GitHub's `errors` array on validation failures.
        errors: Option<serde_json::Value>,
    },
}

impl Error {
    pub(crate) fn not_found() -> Self {
        Self::api(404, "Not Found")
    }

    pub(crate) fn api(status: u16, message: impl Into<String>) -> Self {
        Self::Api {
            status,
            message: message.into(),
            errors: None,
        }
    }

    /// A 422 with GitHub's `errors` array.
    pub(crate) fn validation(errors: serde_json::Value) -> Self {
        Self::Api {
            status: 422,
            message: "Validation Failed".to_owned(),
            errors: Some(errors),
        }
    }
}

/// How to run the fake.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where the bare repositories live, as `<root>/<owner>/<name>.git`.
    pub root: PathBuf,
    /// Accepted tokens and the login each one authenticates as.
    pub tokens: Vec<(String, String)>,
}

impl Config {
    /// Loopback on a free port, with the given root and tokens.
    #[must_use]
    pub fn new(root: impl Into<PathBuf>, tokens: &[(&str, &str)]) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            root: root.into(),
            tokens: tokens
                .iter()
                .map(|(t, l)| ((*t).to_owned(), (*l).to_owned()))
                .collect(),
        }
    }
}

/// A running fake. Dropping it stops the server too; [`FakeGithub::shutdown`] also
/// waits for it.
#[derive(Debug)]
pub struct FakeGithub {
    addr: SocketAddr,
    shared: Arc<state::Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl FakeGithub {
    /// Binds and starts serving.
    ///
    /// # Errors
    /// When the address cannot be bound or the root cannot be created.
    pub async fn start(config: Config) -> Result<Self, Error> {
        tokio::fs::create_dir_all(&config.root).await?;
        let root = tokio::fs::canonicalize(&config.root).await?;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shared = state::Shared::new(format!("http://{addr}"), root, &config.tokens);
        let app = http::router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "fake github server failed");
            }
        });
        Ok(Self {
            addr,
            shared,
            shutdown: Some(tx),
            server: Some(server),
        })
    }

    #[must_use]
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the API root (what `api.github.com` is for GitHub).
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bare repository's path, `<root>/<owner>/<name>.git`.
    #[must_use]
    pub fn repo_path(&self, owner: &str, name: &str) -> PathBuf {
        self.shared.repo_path(owner, name)
    }

    /// `file://<root>/<owner>/<name>.git`, for `git clone` and `git push`.
    #[must_use]
    pub fn clone_url(&self, owner: &str, name: &str) -> String {
        format!("file://{}", self.repo_path(owner, name).display())
    }

    /// Creates a repository with a README commit on its default branch; returns its
    /// REST representation.
    ///
    /// # Errors
    /// When it exists already (422) or git fails.
    pub async fn create_repo(
        &self,
        owner: &str,
        name: &str,
        default_branch: &str,
    ) -> Result<serde_json::Value, Error> {
        self.shared.create_repo(owner, name, default_branch).await
    }

    /// Attaches an Actions job log to a check run (whose id becomes the job id).
    ///
    /// # Errors
    /// When there is no such repository or check run (404).
    pub fn attach_job_log(
        &self,
        owner: &str,
        repo: &str,
        check_run_id: u64,
        log: &str,
    ) -> Result<(), Error> {
        self.shared.attach_log(owner, repo, check_run_id, log)
    }

    /// Sets the primary rate limit for every user: `remaining` requests until `reset`.
    pub fn set_rate_limit(&self, limit: RateLimit) {
        self.shared.set_rate_limit(limit);
    }

    /// Answers 429 with `retry-after` for a while (a secondary rate limit).
    pub fn set_secondary_limit(&self, limit: SecondaryLimit) {
        self.shared.set_secondary_limit(limit);
    }

    /// Answers every API request with a status, for some requests or until cleared.
    pub fn set_outage(&self, outage: Option<Outage>) {
        self.shared.set_outage(outage);
    }

    /// Makes requests hang (see [`Hang`]), for some requests or until cleared.
    pub fn set_hang(&self, hang: Option<Hang>) {
        self.shared.set_hangs(hang.into_iter().collect());
    }

    /// Queues hangs: each request takes the first one that matches it, so a test can
    /// lay out a whole sequence of faults before the requests come, however fast.
    pub fn set_hangs(&self, hangs: Vec<Hang>) {
        self.shared.set_hangs(hangs);
    }

    /// Makes the next `merges` merges lose a race on their base branch: another commit
    /// lands on the base between the merge's check and its update, and GitHub answers
    /// `409 Base branch was modified. Review and try the merge again.` (counted as
    /// `merge race`).
    pub fn race_next_merges(&self, merges: u64) {
        self.shared.set_merge_races(merges);
    }

    /// Registers a webhook receiver for every repository.
    pub fn add_webhook(&self, url: &str, secret: &str) -> u64 {
        self.shared.add_webhook(url, secret)
    }

    #[must_use]
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    pub fn reset_stats(&self) {
        self.shared.reset_stats();
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

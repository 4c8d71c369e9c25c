//! Task workspaces on a runner, prepared and saved at the server's request: `prepare`
//! brings `<data>/tasks/<task>/work` to the task branch plus the server's snapshot over
//! git from the runner's own server, `save` sends the work back as a snapshot, and
//! `release` kills the task's processes and removes `<data>/tasks/<task>`. The agent's
//! sessions travel with the work (`agent_state.rs`): `save` stores them on the server
//! after the snapshot, `prepare` puts the kept ones into this runner's home for the task.
//! Each request runs in a task of its own, never holding up the connection; requests for
//! one task run in the order they came, across connections.

use super::agent_state::{self, MAX_ARCHIVE};
use super::exec::{Processes, STOP_WAIT};
use mainloop_domain::TaskId;
use mainloop_domain::runner::{
    Prepare, RunnerMessage, Save, ServerMessage, check_server_message, fit_reason,
    parse_runner_message,
};
use mainloop_git::{Git, GitError};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

/// The longest one transfer of an agent's state may take: the server gives up on a
/// `save` after as long.
const STATE_TIMEOUT: Duration = mainloop_engine::SAVE_TIMEOUT;

/// The runner's workspaces and the git that fills them.
#[derive(Debug)]
pub struct Workspaces {
    data_dir: PathBuf,
    /// The server's base URL for git (`http(s)://host[/prefix]`).
    base: String,
    /// Carries the runner token in its environment, never on a command line, and never
    /// into an agent's environment.
    git: Git,
    /// Carries the agents' state to and from the server, never following a redirect
    /// (the token goes with every request).
    http: reqwest::Client,
    token: SecretString,
    /// Each task's latest request, which the next one for the task waits for.
    order: Mutex<HashMap<TaskId, JoinHandle<()>>>,
    /// The tasks it holds a workspace for, and how many it released.
    activity: tokio::sync::watch::Sender<Activity>,
}

/// What a runner is doing with tasks, for the ways it exits by itself (`--once`,
/// `--idle-exit`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    pub held: std::collections::BTreeSet<TaskId>,
    pub released: u64,
}

/// A task's directories on the runner.
struct Dirs {
    root: PathBuf,
    work: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
}

impl Dirs {
    fn of(data_dir: &Path, task: TaskId) -> Self {
        let root = data_dir.join("tasks").join(task.to_string());
        Self {
            work: root.join("work"),
            home: root.join("home"),
            tmp: root.join("tmp"),
            root,
        }
    }
}

impl Workspaces {
    /// Workspaces under `data_dir`, fetched from and sent to `base` (the server's
    /// http(s) URL) with `token`.
    ///
    /// # Errors
    /// The HTTP client cannot be made (no TLS backend).
    pub fn new(data_dir: &Path, base: String, token: &str) -> Result<Self, String> {
        let git_dir = data_dir.join("git");
        let git = Git::new(git_dir.join("cache"), git_dir.join("worktrees"))
            .with_env("GIT_CONFIG_COUNT", "2")
            .with_env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .with_env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Bearer {token}"),
            )
            // The header goes with every request git makes: never to wherever a
            // redirect points.
            .with_env("GIT_CONFIG_KEY_1", "http.followRedirects")
            .with_env("GIT_CONFIG_VALUE_1", "false");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .timeout(STATE_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            base,
            git,
            http,
            token: SecretString::from(token.to_owned()),
            order: Mutex::new(HashMap::new()),
            activity: tokio::sync::watch::Sender::new(Activity::default()),
        })
    }

    /// Follows what the runner holds.
    pub fn activity(&self) -> tokio::sync::watch::Receiver<Activity> {
        self.activity.subscribe()
    }

    /// Takes one of the server's workspace messages: the answer to send at once (a
    /// request out of bounds), or none while the work goes on in the background and
    /// answers through `procs`' outbox.
    pub fn handle(
        self: &Arc<Self>,
        msg: ServerMessage,
        procs: &mut Processes,
    ) -> Option<RunnerMessage> {
        if let Err(e) = check_server_message(&msg) {
            return match msg {
                ServerMessage::Prepare(Prepare { request, .. })
                | ServerMessage::Save(Save { request, .. }) => {
                    Some(failed(request, &e.to_string()))
                }
                _ => None,
            };
        }
        let out = procs.out().clone();
        match msg {
            ServerMessage::Prepare(p) => {
                self.activity.send_modify(|a| {
                    a.held.insert(p.task);
                });
                let this = Arc::clone(self);
                self.queue(p.task, async move {
                    let answer = this.prepare(&p).await;
                    let _ = out.send(answer).await;
                });
            }
            ServerMessage::Save(s) => {
                let this = Arc::clone(self);
                self.queue(s.task, async move {
                    let answer = this.save(&s).await;
                    let _ = out.send(answer).await;
                });
            }
            ServerMessage::Release { task } => {
                let killed = procs.kill_task(task);
                let root = Dirs::of(&self.data_dir, task).root;
                let activity = self.activity.clone();
                self.queue(task, async move {
                    // Reaped first, so that nothing writes while the directory goes.
                    let _ = tokio::time::timeout(STOP_WAIT, futures::future::join_all(killed))
                        .await;
                    match tokio::fs::remove_dir_all(&root).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(dir = %root.display(), error = %e, "could not remove a released task's directory");
                        }
                    }
                    activity.send_modify(|a| {
                        a.held.remove(&task);
                        a.released += 1;
                    });
                });
            }
            _ => {}
        }
        None
    }

    /// Runs `work` once every earlier request for `task` has finished.
    fn queue(&self, task: TaskId, work: impl Future<Output = ()> + Send + 'static) {
        let mut order = self
            .order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        order.retain(|_, h| !h.is_finished());
        let before = order.remove(&task);
        let handle = tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            work.await;
        });
        order.insert(task, handle);
    }

    fn url(&self, git_path: &str) -> String {
        format!("{}{git_path}", self.base)
    }

    async fn prepare(&self, p: &Prepare) -> RunnerMessage {
        let dirs = Dirs::of(&self.data_dir, p.task);
        let result = async {
            for dir in [&dirs.home, &dirs.tmp] {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let fresh = !dirs.work.join(".git").exists();
            let copied = self
                .git
                .checkout_copy(
                    &dirs.work,
                    &self.url(&p.git_path),
                    &p.branch,
                    p.snapshot.as_deref(),
                )
                .await;
            if let Err(e) = copied {
                // A first copy that failed leaves no empty repository behind, so that a
                // save finds no workspace rather than one without a commit.
                if fresh {
                    let _ = std::fs::remove_dir_all(dirs.work.join(".git"));
                }
                return Err(explain(&e));
            }
            let (work, home) = (absolute(&dirs.work)?, absolute(&dirs.home)?);
            self.restore_state(p.task, &dirs, &work).await?;
            Ok::<_, String>((work, home))
        }
        .await;
        match result {
            Ok((workspace, home)) => checked(RunnerMessage::Prepared {
                request: p.request,
                workspace,
                home,
            }),
            Err(reason) => failed(p.request, &reason),
        }
    }

    async fn save(&self, s: &Save) -> RunnerMessage {
        let dirs = Dirs::of(&self.data_dir, s.task);
        let work = &dirs.work;
        if !work.join(".git").exists() {
            return failed(
                s.request,
                &format!(
                    "task {} has no workspace on this runner; prepare it first",
                    s.task
                ),
            );
        }
        let snap = match self
            .git
            .send_snapshot(work, &self.url(&s.git_path), &s.snapshot_ref)
            .await
        {
            Ok(snap) => snap,
            Err(e) => return failed(s.request, &explain(&e)),
        };
        // After the work: a save whose work could not be sent keeps no session either,
        // so the session kept is never newer than the work kept but by this moment.
        if let Err(reason) = self.keep_state(s.task, &dirs).await {
            return failed(s.request, &reason);
        }
        checked(RunnerMessage::Saved {
            request: s.request,
            commit: snap.commit,
            clean: snap.clean,
        })
    }

    /// `/api/runners/state/<task>` on the runner's own server: nothing the server says
    /// can send the token elsewhere.
    fn state_url(&self, task: TaskId) -> String {
        format!("{}/api/runners/state/{task}", self.base)
    }

    /// Packs the agents' sessions in the task's home and stores them on the server;
    /// nothing is sent when there are none (an agent that keeps its sessions elsewhere).
    async fn keep_state(&self, task: TaskId, dirs: &Dirs) -> Result<(), String> {
        let cwd = absolute(&dirs.work)?;
        let out = dirs.root.join("state-out.tar.gz");
        let (home, archive) = (dirs.home.clone(), out.clone());
        let packed = tokio::task::spawn_blocking(move || agent_state::pack(&home, &cwd, &archive))
            .await
            .map_err(|e| format!("packing the agent's session failed: {e}"))?;
        let result = match packed {
            Ok(0) => Ok(()),
            Ok(_) => self.upload_state(task, &out).await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&out).await;
        result
    }

    async fn upload_state(&self, task: TaskId, archive: &Path) -> Result<(), String> {
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(|e| format!("cannot read {}: {e}", archive.display()))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| format!("cannot read {}: {e}", archive.display()))?
            .len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let answer = self
            .http
            .put(self.state_url(task))
            .bearer_auth(self.token.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("could not send the agent's session to the server: {e}"))?;
        if answer.status().is_success() {
            return Ok(());
        }
        Err(format!(
            "the server did not keep the agent's session: {}",
            refusal(answer).await
        ))
    }

    /// Puts the agents' sessions the server keeps for `task` into its home here, for an
    /// agent working in `cwd`; none kept is not an error.
    async fn restore_state(&self, task: TaskId, dirs: &Dirs, cwd: &str) -> Result<(), String> {
        let archive = dirs.root.join("state-in.tar.gz");
        let result = match self.download_state(task, &archive).await {
            Ok(false) => Ok(()),
            Ok(true) => {
                let (home, cwd) = (dirs.home.clone(), cwd.to_owned());
                let (from, staging) = (archive.clone(), dirs.root.join("state-in"));
                tokio::task::spawn_blocking(move || {
                    agent_state::unpack(&from, &staging, &home, &cwd)
                })
                .await
                .map_err(|e| format!("unpacking the agent's session failed: {e}"))?
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&archive).await;
        result
    }

    /// Fetches the task's kept state into `to`; false when there is none.
    async fn download_state(&self, task: TaskId, to: &Path) -> Result<bool, String> {
        let fetching =
            |e: reqwest::Error| format!("could not fetch the agent's session from the server: {e}");
        let mut answer = self
            .http
            .get(self.state_url(task))
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(fetching)?;
        match answer.status() {
            reqwest::StatusCode::NOT_FOUND => return Ok(false),
            s if s.is_success() => {}
            _ => {
                return Err(format!(
                    "the server did not give the agent's session: {}",
                    refusal(answer).await
                ));
            }
        }
        let writing = |e: std::io::Error| format!("cannot write {}: {e}", to.display());
        let mut file = tokio::fs::File::create(to).await.map_err(writing)?;
        let mut total: u64 = 0;
        while let Some(chunk) = answer.chunk().await.map_err(fetching)? {
            total = total.saturating_add(chunk.len() as u64);
            if total > MAX_ARCHIVE {
                return Err(format!(
                    "the agent's session the server sent is larger than {MAX_ARCHIVE} bytes"
                ));
            }
            file.write_all(&chunk).await.map_err(writing)?;
        }
        file.flush().await.map_err(writing)?;
        Ok(true)
    }
}

/// A refusal's status and the server's message, if it sent one.
async fn refusal(answer: reqwest::Response) -> String {
    let status = answer.status();
    let message = answer
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
    match message {
        Some(m) => format!("HTTP {status}: {m}"),
        None => format!("HTTP {status}"),
    }
}

fn failed(request: u64, reason: &str) -> RunnerMessage {
    RunnerMessage::RequestFailed {
        request,
        reason: fit_reason(reason),
    }
}

/// `msg` if the server will accept it, else a failure saying why: a message the server
/// refuses would end the connection, and every process with it.
fn checked(msg: RunnerMessage) -> RunnerMessage {
    let request = match &msg {
        RunnerMessage::Prepared { request, .. } | RunnerMessage::Saved { request, .. } => *request,
        _ => return msg,
    };
    let verdict = serde_json::to_string(&msg)
        .map_err(|e| e.to_string())
        .and_then(|text| parse_runner_message(&text).map_err(|e| e.to_string()));
    match verdict {
        Ok(_) => msg,
        Err(why) => failed(request, &why),
    }
}

/// `dir` as an absolute path in UTF-8 (the protocol's strings are UTF-8).
fn absolute(dir: &Path) -> Result<String, String> {
    let path = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    path.into_os_string()
        .into_string()
        .map_err(|p| format!("{} is not UTF-8", PathBuf::from(p).display()))
}

/// A git failure in words for the server: a missing `git` named as such.
fn explain(e: &GitError) -> String {
    match e {
        GitError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            "git is not installed on this runner (or not on its PATH); install git".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mainloop_domain::Timestamp;
    use mainloop_domain::runner::git_path;
    use tokio::sync::mpsc;

    fn task() -> TaskId {
        TaskId::new_v7(Timestamp::from_millis(1_700_000_000_000))
    }

    fn procs(dir: &Path) -> (Processes, mpsc::Receiver<RunnerMessage>) {
        let (tx, rx) = mpsc::channel(8);
        let config = super::super::exec::Config {
            data_dir: dir.to_path_buf(),
            agents: std::collections::BTreeMap::new(),
            path: "/usr/bin:/bin".into(),
            slots: 1,
            sandbox: None,
        };
        (Processes::new(Arc::new(config), tx), rx)
    }

    #[tokio::test]
    async fn a_request_for_another_repository_is_refused_and_nothing_is_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let work =
            Arc::new(Workspaces::new(dir.path(), "http://127.0.0.1:9".into(), "mlr_t").unwrap());
        let (mut procs, _rx) = procs(dir.path());
        let t = task();
        let answer = work.handle(
            ServerMessage::Prepare(Prepare {
                request: 3,
                task: t,
                git_path: "/api/runners/git/../../evil".into(),
                branch: "main".into(),
                snapshot: None,
            }),
            &mut procs,
        );
        assert!(
            matches!(&answer, Some(RunnerMessage::RequestFailed { request: 3, reason }) if reason.contains("git_path")),
            "{answer:?}"
        );
        let answer = work.handle(
            ServerMessage::Save(Save {
                request: 4,
                task: t,
                git_path: git_path(t),
                snapshot_ref: "HEAD".into(),
            }),
            &mut procs,
        );
        assert!(
            matches!(
                &answer,
                Some(RunnerMessage::RequestFailed { request: 4, .. })
            ),
            "{answer:?}"
        );
        assert!(!dir.path().join("tasks").exists(), "nothing was made");
    }

    #[tokio::test]
    async fn saving_a_workspace_never_prepared_fails_and_release_removes_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let work =
            Arc::new(Workspaces::new(dir.path(), "http://127.0.0.1:9".into(), "mlr_t").unwrap());
        let (mut procs, mut rx) = procs(dir.path());
        let t = task();
        let save = ServerMessage::Save(Save {
            request: 5,
            task: t,
            git_path: git_path(t),
            snapshot_ref: format!("refs/mainloop/snapshots/{t}"),
        });
        assert!(work.handle(save, &mut procs).is_none());
        let answer = rx.recv().await.unwrap();
        assert!(
            matches!(&answer, RunnerMessage::RequestFailed { request: 5, reason } if reason.contains("prepare it first")),
            "{answer:?}"
        );
        let root = dir.path().join("tasks").join(t.to_string());
        std::fs::create_dir_all(root.join("work/sub")).unwrap();
        std::fs::write(root.join("work/sub/f"), "x").unwrap();
        assert!(
            work.handle(ServerMessage::Release { task: t }, &mut procs)
                .is_none()
        );
        // Queued behind the release, so it runs after it.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        work.queue(t, async move {
            let _ = done_tx.send(());
        });
        done_rx.await.unwrap();
        assert!(!root.exists(), "the task's directory is gone");
    }

    #[test]
    fn what_the_server_would_refuse_is_never_sent() {
        let bad = checked(RunnerMessage::Prepared {
            request: 9,
            workspace: "relative/work".into(),
            home: "/h".into(),
        });
        assert!(
            matches!(&bad, RunnerMessage::RequestFailed { request: 9, reason } if reason.contains("absolute")),
            "{bad:?}"
        );
        let ok = RunnerMessage::Saved {
            request: 9,
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            clean: true,
        };
        assert_eq!(checked(ok.clone()), ok);
        let missing = GitError::Spawn {
            command: "git fetch".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(explain(&missing).contains("git is not installed"));
    }
}

//! Runners: their tokens (created once, stored hashed, revoked), the list with each
//! one's state, and the in-memory registry of live connections — a connection holds a
//! [`RunnerLease`] that says when it must end and why (revoked, or replaced by a newer
//! connection with the same token), and that takes the runner offline when dropped.
//! Each connection carries an outbox, a table of its processes
//! (`runner_processes.rs`) and its unanswered workspace requests
//! (`runner_workspaces.rs`), which end with it.

use crate::auth::new_token;
use crate::runner_processes::Connection;
use crate::{Engine, EngineError, Result, hash_token, now};
use mainloop_domain::runner::{Hello, Offer, RunnerMessage, ServerMessage, check_runner_name};
use mainloop_domain::{RunnerId, TaskId, Timestamp, UserId};
pub use mainloop_store::RunnerRow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What every runner token starts with, so a leaked one is recognisable.
pub const RUNNER_TOKEN_PREFIX: &str = "mlr_";

/// How often at most a heartbeat writes `last_seen_at`: the list needs minutes, not
/// seconds, and every write is a transaction.
pub const LAST_SEEN_WRITE_EVERY: Duration = Duration::from_secs(30);

/// Whether a runner can take work now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerState {
    /// Its token is revoked; it never connects again.
    Revoked,
    /// It holds a live connection.
    Connected,
    /// Not connected now.
    Offline,
}

impl RunnerState {
    /// The state's name in the API.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Connected => "connected",
            Self::Offline => "offline",
        }
    }
}

/// A runner as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerInfo {
    pub id: RunnerId,
    pub name: String,
    pub state: RunnerState,
    pub created_at: Timestamp,
    pub last_seen_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// The version and offer of its last accepted `hello`.
    pub version: Option<String>,
    pub offer: Option<Offer>,
    /// Slots busy, while connected.
    pub busy: Option<u16>,
    /// The task it is bound to, if it is a launched task's runner.
    pub task_id: Option<TaskId>,
}

/// The state a runner is in: revocation wins over a connection that has not ended yet.
#[must_use]
pub const fn runner_state(revoked: bool, connected: bool) -> RunnerState {
    match (revoked, connected) {
        (true, _) => RunnerState::Revoked,
        (false, true) => RunnerState::Connected,
        (false, false) => RunnerState::Offline,
    }
}

/// Whether a heartbeat at `now` should write `last_seen_at`, last written at `written`.
#[must_use]
pub fn last_seen_due(written: Instant, now: Instant) -> bool {
    now.saturating_duration_since(written) >= LAST_SEEN_WRITE_EVERY
}

/// Why a live connection must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The runner's token was revoked.
    Revoked,
    /// Another connection with the same token took its place.
    Replaced,
}

#[derive(Debug)]
struct Live {
    serial: u64,
    cancel: CancellationToken,
    ending: Arc<Mutex<Option<Ending>>>,
    version: String,
    offer: Offer,
    busy: u16,
    conn: Arc<Connection>,
}

/// The live runner connections of this server process.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    live: Mutex<HashMap<RunnerId, Live>>,
    serials: AtomicU64,
    /// Process numbers, unique across this server's connections so that one can never
    /// be mistaken for another connection's.
    processes: AtomicU64,
    /// Workspace request numbers, unique likewise.
    requests: AtomicU64,
}

impl Registry {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<RunnerId, Live>) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        let mut map = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut map)
    }

    /// Ends the live connection of `id`, if any, for `why`.
    fn end(&self, id: RunnerId, why: Ending) {
        self.with(|map| {
            if let Some(live) = map.remove(&id) {
                finish(&live, why);
            }
        });
    }

    /// The live connection of `id`, if any.
    pub(crate) fn connection(&self, id: RunnerId) -> Option<Arc<Connection>> {
        self.with(|map| map.get(&id).map(|l| Arc::clone(&l.conn)))
    }

    /// A process number never handed out before by this server process.
    pub(crate) fn next_process(&self) -> u64 {
        self.processes.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A workspace request number never handed out before by this server process.
    pub(crate) fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn remove(&self, id: RunnerId, serial: u64) -> bool {
        self.with(|map| {
            if map.get(&id).is_some_and(|l| l.serial == serial) {
                map.remove(&id);
                true
            } else {
                false
            }
        })
    }
}

fn finish(live: &Live, why: Ending) {
    if let Ok(mut ending) = live.ending.lock() {
        ending.get_or_insert(why);
    }
    live.cancel.cancel();
    // Its processes end now, not when its socket has finished closing.
    live.conn.close();
}

/// One runner's live connection. It ends when [`RunnerLease::ended`] resolves; dropping
/// it takes the runner offline (unless a newer connection replaced it).
#[derive(Debug)]
pub struct RunnerLease {
    engine: Engine,
    runner: RunnerId,
    serial: u64,
    cancel: CancellationToken,
    ending: Arc<Mutex<Option<Ending>>>,
    last_written: Mutex<Instant>,
    conn: Arc<Connection>,
    outbox: Option<mpsc::Receiver<ServerMessage>>,
}

impl RunnerLease {
    /// What the server has to send this runner (spawns, stdin, kills), in order; the
    /// connection's socket takes it once and sends each message.
    pub fn take_outbox(&mut self) -> Option<mpsc::Receiver<ServerMessage>> {
        self.outbox.take()
    }

    /// Applies a runner's `started`, `spawn_failed`, `output` or `exited` to the
    /// process it names — only one this connection started and that has not ended —
    /// and its `prepared`, `saved` or `request_failed` to the request it names — only
    /// one this connection was sent and that is still unanswered; anything else is
    /// ignored with a warning.
    pub fn deliver(&self, msg: RunnerMessage) {
        self.conn.deliver(msg);
    }

    /// The runner this connection is.
    #[must_use]
    pub const fn runner(&self) -> RunnerId {
        self.runner
    }

    /// Resolves when the connection must end, with why.
    pub async fn ended(&self) -> Ending {
        self.cancel.cancelled().await;
        self.ending
            .lock()
            .ok()
            .and_then(|e| *e)
            .unwrap_or(Ending::Replaced)
    }

    /// Records a heartbeat: how many slots are busy (kept in memory), and the runner
    /// seen now (written at most every [`LAST_SEEN_WRITE_EVERY`]).
    ///
    /// # Errors
    /// `busy` beyond the runner's slots ([`EngineError::Invalid`]); storage failures.
    pub async fn heartbeat(&self, busy: u16) -> Result<()> {
        let within = self.engine.inner.runners.with(|map| {
            map.get_mut(&self.runner)
                .filter(|l| l.serial == self.serial)
                .map(|live| {
                    let ok = busy <= live.offer.slots;
                    if ok {
                        live.busy = busy;
                    }
                    (ok, live.offer.slots)
                })
        });
        if let Some((false, slots)) = within {
            return Err(EngineError::Invalid(format!(
                "busy {busy} exceeds this runner's {slots} slots"
            )));
        }
        let instant = Instant::now();
        let due = self.last_written.lock().is_ok_and(|mut written| {
            let due = last_seen_due(*written, instant);
            if due {
                *written = instant;
            }
            due
        });
        if due {
            self.engine.store().runner_seen(self.runner, now()).await?;
        }
        Ok(())
    }
}

impl Drop for RunnerLease {
    fn drop(&mut self) {
        self.engine.inner.runners.remove(self.runner, self.serial);
        self.conn.close();
        // The disconnect's time is worth keeping, but a drop cannot wait for a write.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (engine, runner) = (self.engine.clone(), self.runner);
            handle.spawn(async move {
                if let Err(e) = engine.store().runner_seen(runner, now()).await {
                    tracing::warn!(%runner, error = %e, "could not record when a runner left");
                }
            });
        }
    }
}

impl Engine {
    /// Creates a runner and its token, returned only now (it is stored hashed).
    ///
    /// # Errors
    /// A bad name ([`EngineError::Invalid`]); a name already used by one of the user's
    /// runners that is not revoked ([`EngineError::Conflict`]); storage failures.
    pub async fn create_runner(&self, user: UserId, name: &str) -> Result<(RunnerInfo, String)> {
        check_runner_name(name).map_err(EngineError::Invalid)?;
        let token = new_token(RUNNER_TOKEN_PREFIX);
        let row = self
            .store()
            .insert_runner(user, name, &hash_token(&token), now())
            .await
            .map_err(|e| match EngineError::from(e) {
                EngineError::Conflict(_) => {
                    EngineError::Conflict(format!("you already have a runner named {name:?}"))
                }
                other => other,
            })?;
        Ok((self.runner_info(row), token))
    }

    /// The token of the runner bound to `task`, which the one-shot runners a launcher
    /// starts for the task's runs connect with: the runner is made on first need, and
    /// given a new token after (the old one no longer connects).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn task_runner_token(&self, user: UserId, task: TaskId) -> Result<String> {
        let token = new_token(RUNNER_TOKEN_PREFIX);
        match self.store().task_runner(task).await? {
            Some(runner) => {
                self.store()
                    .set_runner_token(runner.id, &hash_token(&token))
                    .await?;
            }
            None => {
                let name = format!("task-{task}");
                self.store()
                    .insert_bound_runner(user, Some(task), &name, &hash_token(&token), now())
                    .await?;
            }
        }
        Ok(token)
    }

    /// Revokes the runner bound to `task`, if any: the task is over.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn revoke_task_runner(&self, task: TaskId) -> Result<()> {
        if let Some(runner) = self.store().task_runner(task).await? {
            self.revoke_runner(runner.user_id, runner.id).await?;
        }
        Ok(())
    }

    /// The user's runners, newest first, each with its state now.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn runners(&self, user: UserId) -> Result<Vec<RunnerInfo>> {
        let rows = self.store().runners(user).await?;
        Ok(rows.into_iter().map(|r| self.runner_info(r)).collect())
    }

    /// Revokes one of the user's runners; a live connection of it ends at once.
    ///
    /// # Errors
    /// Another user's or an unknown runner; storage failures.
    pub async fn revoke_runner(&self, user: UserId, id: RunnerId) -> Result<RunnerInfo> {
        let row = self
            .store()
            .revoke_runner(user, id, now())
            .await?
            .ok_or(EngineError::NotFound("runner"))?;
        // After the write: a connection registering now either is ended here or sees
        // the revocation when it records its hello.
        self.inner.runners.end(id, Ending::Revoked);
        Ok(self.runner_info(row))
    }

    /// The runner a token belongs to, if it is a runner token that is not revoked.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn authenticate_runner(&self, token: &str) -> Result<Option<RunnerRow>> {
        if !token.starts_with(RUNNER_TOKEN_PREFIX) {
            return Ok(None);
        }
        let row = self.store().runner_by_token(&hash_token(token)).await?;
        Ok(row.filter(|r| r.revoked_at.is_none()))
    }

    /// Registers a runner's live connection after its accepted `hello` (already
    /// checked by `parse_runner_message`), ending any earlier connection of the same
    /// runner, and records the offer.
    ///
    /// # Errors
    /// The runner was revoked meanwhile ([`EngineError::NotFound`]); storage failures.
    pub async fn connect_runner(&self, runner: RunnerId, hello: &Hello) -> Result<RunnerLease> {
        let registry = &self.inner.runners;
        let serial = registry.serials.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let ending = Arc::new(Mutex::new(None));
        let (conn, outbox) = Connection::new(runner);
        registry.with(|map| {
            let old = map.insert(
                runner,
                Live {
                    serial,
                    cancel: cancel.clone(),
                    ending: Arc::clone(&ending),
                    version: hello.version.clone(),
                    offer: hello.offer.clone(),
                    busy: 0,
                    conn: Arc::clone(&conn),
                },
            );
            if let Some(old) = old {
                finish(&old, Ending::Replaced);
            }
        });
        let lease = RunnerLease {
            engine: self.clone(),
            runner,
            serial,
            cancel,
            ending,
            last_written: Mutex::new(Instant::now()),
            conn,
            outbox: Some(outbox),
        };
        // Registered before this write, so a revocation committed before it finds the
        // write refused, and one committed after it finds the connection to end.
        let live = self
            .store()
            .runner_hello(runner, &hello.version, &hello.offer, now())
            .await?;
        if !live {
            return Err(EngineError::NotFound("runner"));
        }
        Ok(lease)
    }

    fn runner_info(&self, row: RunnerRow) -> RunnerInfo {
        let live = self.inner.runners.with(|map| {
            map.get(&row.id)
                .map(|l| (l.version.clone(), l.offer.clone(), l.busy))
        });
        let state = runner_state(row.revoked_at.is_some(), live.is_some());
        let (version, offer, busy) = match live {
            Some((version, offer, busy)) if state == RunnerState::Connected => {
                (Some(version), Some(offer), Some(busy))
            }
            _ => (row.version, row.offer, None),
        };
        RunnerInfo {
            id: row.id,
            name: row.name,
            state,
            created_at: row.created_at,
            last_seen_at: row.last_seen_at,
            revoked_at: row.revoked_at,
            version,
            offer,
            busy,
            task_id: row.task_id,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn revocation_wins_over_a_live_connection() {
        assert_eq!(runner_state(true, true), RunnerState::Revoked);
        assert_eq!(runner_state(true, false), RunnerState::Revoked);
        assert_eq!(runner_state(false, true), RunnerState::Connected);
        assert_eq!(runner_state(false, false), RunnerState::Offline);
    }

    #[test]
    fn last_seen_is_written_at_most_every_thirty_seconds() {
        let t0 = Instant::now();
        assert!(!last_seen_due(t0, t0));
        assert!(!last_seen_due(t0, t0 + Duration::from_secs(29)));
        assert!(last_seen_due(t0, t0 + LAST_SEEN_WRITE_EVERY));
        // A clock read earlier than the last write never underflows.
        assert!(!last_seen_due(t0 + Duration::from_secs(5), t0));
    }
}

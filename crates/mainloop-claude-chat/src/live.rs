//! One user's `claude` process: started (or resumed) when a turn needs it, kept warm
//! between turns, killed when it misbehaves. A turn writes one user line and reads
//! until the turn's `result`.

use crate::ClaudeChatConfig;
use crate::protocol::{self, Failure, Line, TOKEN_VAR};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use mainloop_agent::{LocalProcess, Placed, PlacedProcess, Placement};
use mainloop_domain::Timestamp;
use mainloop_domain::chat::{ContentBlock, Role};
use mainloop_model::{ModelError, SessionEvent, SessionTurn, TurnUsage};
use mainloop_sandbox::Scope;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedMutexGuard, mpsc};

/// A stdout line over this is dropped (a huge tool result must not grow memory).
const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// A running process and the session it holds.
pub(crate) struct Live {
    session: String,
    token: String,
    /// A turn was cut off midway (its stream dropped): the rest of its output would be
    /// read as the next turn's, so the process is not reused.
    busy: bool,
    /// When its last turn ended.
    idle_since: std::time::Instant,
    stdin: Pin<Box<dyn AsyncWrite + Send>>,
    lines: mpsc::Receiver<String>,
    tail: Arc<Mutex<VecDeque<String>>>,
    process: Box<dyn PlacedProcess>,
    record: PathBuf,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("session", &self.session)
            .field("busy", &self.busy)
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl Live {
    fn kill(&mut self) {
        self.process.kill_tree();
        let _ = std::fs::remove_file(&self.record);
    }

    fn stderr(&self) -> String {
        let tail = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates `dir` for the server user only (sessions and credentials live there).
fn private_dir(dir: &Path) -> Result<(), ModelError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| ModelError::Transport(format!("could not create {}: {e}", dir.display())))
}

fn spawn(cfg: &ClaudeChatConfig, turn: &SessionTurn) -> Result<Live, ModelError> {
    let (session, resume) = match &turn.resume {
        Some(id) => (id.clone(), true),
        None => (uuid::Uuid::new_v4().to_string(), false),
    };
    let base = cfg.root.join(&turn.user);
    let work = base.join("work");
    private_dir(&work)?;
    let mut env: Vec<(String, String)> = cfg
        .env
        .iter()
        .filter(|(k, _)| k != TOKEN_VAR)
        .cloned()
        .collect();
    env.push((TOKEN_VAR.to_owned(), turn.mcp_token.clone()));
    // A private home either way: the session's files stay out of the user's own
    // `~/.claude`, and nothing of theirs (settings, hooks, memory) reaches the thread.
    let home = base.join("home");
    private_dir(&home.join(".claude"))?;
    let login = crate::login_file(&env);
    env.retain(|(k, _)| !matches!(k.as_str(), "HOME" | "XDG_CONFIG_HOME"));
    env.push(("HOME".to_owned(), home.display().to_string()));
    let prefix = match &cfg.sandbox {
        None => {
            // Unconfined, the login is linked in (a refreshed token is written through).
            if let Some(login) = login.filter(|f| f.is_file()) {
                let link = home.join(".claude").join(".credentials.json");
                let _ = std::fs::remove_file(&link);
                if let Err(e) = std::os::unix::fs::symlink(&login, &link) {
                    tracing::warn!(error = %e, "could not link the claude login into the main thread's home");
                }
            }
            Vec::new()
        }
        Some(sandbox) => {
            env.retain(|(k, _)| k != "TMPDIR");
            env.push(("TMPDIR".to_owned(), "/tmp".to_owned()));
            let scope = Scope {
                cwd: work.clone(),
                home: home.clone(),
                read_only: Vec::new(),
                read_write: Vec::new(),
                files: sandbox
                    .home_files
                    .iter()
                    .filter(|(outside, _)| outside.is_file())
                    .map(|(outside, inside)| (outside.clone(), home.join(inside)))
                    .collect(),
            };
            sandbox
                .bwrap
                .command_prefix(&scope)
                .map_err(|e| ModelError::Transport(format!("could not set up the sandbox: {e}")))?
        }
    };
    let Some((program, leading)) = cfg.command.split_first() else {
        return Err(ModelError::Transport("no `claude` command".to_owned()));
    };
    let mut args = leading.to_vec();
    args.extend(protocol::args(&protocol::Args {
        session: &session,
        resume,
        system: &turn.system,
        mcp_url: &cfg.mcp_url,
        model: cfg.model.as_deref(),
    }));
    let launch = mainloop_agent::Launch {
        program: program.clone(),
        args,
        cwd: work,
        env,
    };
    let Placed {
        stdin,
        stdout,
        stderr,
        process,
    } = LocalProcess::sandboxed(prefix)
        .spawn(launch)
        .map_err(|e| ModelError::Transport(format!("could not start Claude Code: {e}")))?;
    let record = cfg.pid_dir.join(format!("main-thread-{}", turn.user));
    if let Some(pid) = process.pid()
        && let Some(start) = mainloop_agent::process_start_time(pid)
        && let Err(e) = std::fs::create_dir_all(&cfg.pid_dir)
            .and_then(|()| std::fs::write(&record, format!("{pid} {start}\n")))
    {
        tracing::warn!(error = %e, "could not record the main thread's pid");
    }
    Ok(Live {
        session,
        token: turn.mcp_token.clone(),
        busy: false,
        idle_since: std::time::Instant::now(),
        stdin,
        lines: mainloop_agent::line_reader(stdout, MAX_LINE_BYTES),
        tail: mainloop_agent::stderr_tail(stderr),
        process,
        record,
    })
}

type Sender = futures::channel::mpsc::Sender<Result<SessionEvent, ModelError>>;

/// Runs one turn on the user's process (started or replaced as needed).
pub(crate) fn turn(
    cfg: Arc<ClaudeChatConfig>,
    slot: Arc<tokio::sync::Mutex<Option<Live>>>,
    turn: SessionTurn,
) -> BoxStream<'static, Result<SessionEvent, ModelError>> {
    let (mut tx, rx) = futures::channel::mpsc::channel(64);
    tokio::spawn(async move {
        let mut guard = Arc::clone(&slot).lock_owned().await;
        let outcome = drive(&cfg, &mut guard, &turn, &mut tx).await;
        drop(guard);
        if let Err(e) = outcome {
            let _ = tx.send(Err(e)).await;
        }
        drop(tx);
        stop_when_idle(slot, cfg.idle_timeout).await;
    });
    rx.boxed()
}

/// Stops the process once it has been idle for `idle` (a later turn resumes its
/// session in a new one): an idle `claude` holds a few hundred MiB.
async fn stop_when_idle(slot: Arc<tokio::sync::Mutex<Option<Live>>>, idle: std::time::Duration) {
    tokio::time::sleep(idle).await;
    let mut guard = slot.lock().await;
    if guard
        .as_ref()
        .is_some_and(|l| !l.busy && l.idle_since.elapsed() >= idle)
    {
        *guard = None;
    }
}

async fn send(tx: &mut Sender, event: SessionEvent) -> Result<(), ModelError> {
    // The engine stopped listening (its job was cancelled): the turn is cut off.
    tx.send(Ok(event))
        .await
        .map_err(|_| ModelError::Transport("the turn was abandoned".to_owned()))
}

async fn drive(
    cfg: &ClaudeChatConfig,
    slot: &mut OwnedMutexGuard<Option<Live>>,
    turn: &SessionTurn,
    tx: &mut Sender,
) -> Result<(), ModelError> {
    let reusable = slot.as_ref().is_some_and(|l| {
        !l.busy
            && l.token == turn.mcp_token
            && turn.resume.as_deref() == Some(l.session.as_str())
            && !l.lines.is_closed()
    });
    if !reusable {
        **slot = None; // kills the old process, if any
        **slot = Some(spawn(cfg, turn)?);
    }
    let Some(live) = slot.as_mut() else {
        return Err(ModelError::Transport("no process".to_owned()));
    };
    send(tx, SessionEvent::Session(live.session.clone())).await?;
    live.busy = true;
    let mut line = protocol::user_line(&turn.input);
    line.push('\n');
    if let Err(e) = live.stdin.write_all(line.as_bytes()).await {
        let why = format!("could not write to Claude Code: {e}; {}", live.stderr());
        **slot = None;
        return Err(ModelError::Transport(why));
    }
    let _ = live.stdin.flush().await;
    let mut pending: Option<(String, Vec<ContentBlock>)> = None;
    let mut resets_at = None;
    loop {
        let next = tokio::time::timeout(cfg.silence_timeout, live.lines.recv()).await;
        let Ok(next) = next else {
            **slot = None;
            return Err(ModelError::Transport(format!(
                "Claude Code wrote nothing for {}s",
                cfg.silence_timeout.as_secs()
            )));
        };
        let Some(raw) = next else {
            let stderr = live.stderr();
            **slot = None;
            if stderr.contains("No conversation found") {
                return send(tx, SessionEvent::Lost).await;
            }
            return Err(ModelError::Transport(format!(
                "Claude Code exited before answering: {}",
                last_lines(&stderr)
            )));
        };
        match protocol::parse(&raw) {
            Line::Init {
                session_id, tools, ..
            } => {
                if let Err(why) = tools {
                    // It would carry on without its tools; the turn must not.
                    **slot = None;
                    return Err(ModelError::ToolsUnavailable(why));
                }
                if !session_id.is_empty() && session_id != live.session {
                    live.session.clone_from(&session_id);
                    send(tx, SessionEvent::Session(session_id)).await?;
                }
            }
            Line::Delta(text) => send(tx, SessionEvent::TextDelta(text)).await?,
            Line::Assistant { id, content } => match &mut pending {
                Some((p, blocks)) if *p == id => blocks.extend(content),
                _ => {
                    flush(tx, &mut pending).await?;
                    pending = Some((id, content));
                }
            },
            Line::ToolResults(results) => {
                flush(tx, &mut pending).await?;
                send(
                    tx,
                    SessionEvent::Message {
                        role: Role::User,
                        content: results,
                    },
                )
                .await?;
            }
            Line::Done {
                model,
                usage,
                cost_usd,
            } => {
                flush(tx, &mut pending).await?;
                live.busy = false;
                live.idle_since = std::time::Instant::now();
                return send(
                    tx,
                    SessionEvent::Done(TurnUsage {
                        model,
                        usage,
                        cost_usd,
                    }),
                )
                .await;
            }
            Line::Failed(Failure::SessionMissing) => {
                **slot = None;
                return send(tx, SessionEvent::Lost).await;
            }
            Line::Failed(Failure::Model(e)) => {
                live.busy = false;
                return Err(protocol::with_reset(e, resets_at));
            }
            Line::RateLimit { windows, refused } => {
                if let Some(at) = refused {
                    resets_at = at.or(resets_at);
                }
                if !windows.is_empty() {
                    let windows = protocol::quota_windows(windows, now());
                    send(tx, SessionEvent::Quota(windows)).await?;
                }
            }
            Line::Other => {}
        }
    }
}

async fn flush(
    tx: &mut Sender,
    pending: &mut Option<(String, Vec<ContentBlock>)>,
) -> Result<(), ModelError> {
    match pending.take() {
        Some((_, content)) if !content.is_empty() => {
            send(
                tx,
                SessionEvent::Message {
                    role: Role::Assistant,
                    content,
                },
            )
            .await
        }
        _ => Ok(()),
    }
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    Timestamp::from_millis(ms)
}

fn last_lines(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

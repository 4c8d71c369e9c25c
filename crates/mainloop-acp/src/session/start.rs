//! How an ACP session starts: `initialize`, then a new, resumed or loaded session (with
//! the waits particular agents need around a load), put in the mode asked for; and the
//! mode switch a running session makes later.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use agent_client_protocol::Agent as AcpRole;
use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    ClientCapabilities, ElicitationCapabilities, ElicitationFormCapabilities,
    FileSystemCapabilities, Implementation, InitializeRequest, LoadSessionRequest,
    NewSessionRequest, ResumeSessionRequest, SessionId,
};
use mainloop_agent::{AgentFailure, AgentMode, RunSpec, SessionRef};

use super::{Ctx, lock};
use crate::modes::{self, ModeSwitch};
use crate::quirks;

/// `initialize`, then a new, resumed or loaded session in the mode asked for.
pub(super) async fn setup(
    ctx: &Ctx,
    cx: &ConnectionTo<AcpRole>,
    spec: &RunSpec,
) -> Result<(SessionId, String), AgentFailure> {
    let other = |e: agent_client_protocol::Error| AgentFailure::Other {
        reason: e.to_string(),
    };
    let init = cx
        .send_request(
            InitializeRequest::new(ProtocolVersion::V1)
                .client_capabilities(
                    ClientCapabilities::new()
                        // Gemini reads a file it is about to create and takes any error
                        // for a failure, so reads are not offered; OpenCode writes
                        // through the client whatever is offered. An agent on another
                        // machine writes its own files.
                        .fs(FileSystemCapabilities::new()
                            .read_text_file(false)
                            .write_text_file(ctx.local))
                        .terminal(false)
                        .elicitation(
                            ElicitationCapabilities::new().form(ElicitationFormCapabilities::new()),
                        ),
                )
                .client_info(Implementation::new("mainloop", env!("CARGO_PKG_VERSION"))),
        )
        .block_task()
        .await
        .map_err(other)?;
    let cwd = ctx.worktree.path().to_path_buf();
    let missing = |e: agent_client_protocol::Error| {
        tracing::info!(error = %e, "the agent could not restore the session");
        AgentFailure::SessionMissing
    };
    let started = match &spec.session {
        SessionRef::New(_) => {
            let r = cx
                .send_request(NewSessionRequest::new(cwd))
                .block_task()
                .await
                .map_err(other)?;
            modes::Started::new(r.session_id, r.modes, r.config_options)
        }
        SessionRef::Resume(id) => {
            let id = SessionId::new(id.clone());
            if modes::can_resume(&init) {
                let r = cx
                    .send_request(ResumeSessionRequest::new(id.clone(), cwd))
                    .block_task()
                    .await
                    .map_err(missing)?;
                modes::Started::new(id, r.modes, r.config_options)
            } else if init.agent_capabilities.load_session {
                // The agent's home on this machine, when it is here: on another
                // machine its chat files cannot be looked at (nor tidied) from here.
                let home = spec
                    .env
                    .iter()
                    .find(|(k, _)| k == "HOME" && ctx.local)
                    .map(|(_, h)| h);
                let chats: Vec<String> = home
                    .map(|h| quirks::chat_files(Path::new(h)))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(_, name)| name)
                    .collect();
                tokio::time::sleep(quirks::load_delay(&init, &chats, &id.0, SystemTime::now()))
                    .await;
                let r = cx
                    .send_request(LoadSessionRequest::new(id.clone(), cwd))
                    .block_task()
                    .await
                    .map_err(missing)?;
                settle_replay(ctx).await;
                if let Some(home) = home {
                    quirks::remove_stray_chats(&init, Path::new(home), &id.0);
                }
                modes::Started::new(id, r.modes, r.config_options)
            } else {
                return Err(AgentFailure::Other {
                    reason: "the agent can neither resume nor load a session".to_owned(),
                });
            }
        }
    };
    let mut started = started;
    if let Err(e) = switch(cx, &mut started, spec.mode).await {
        // The worker's read-only policy still applies.
        tracing::warn!(error = %e, mode = ?spec.mode, "the agent refused the mode switch");
    }
    *lock(&ctx.control.started) = Some(started.clone());
    let model = spec.model.clone().unwrap_or_else(|| started.model());
    Ok((started.session_id, model))
}

/// Puts the session in `mode`, as the agent offers it (a mode, or a config option).
pub(super) async fn switch(
    cx: &ConnectionTo<AcpRole>,
    started: &mut modes::Started,
    mode: AgentMode,
) -> Result<(), agent_client_protocol::Error> {
    let switch = started.switch_for(mode);
    match &switch {
        ModeSwitch::None => {}
        ModeSwitch::Mode(id) => {
            cx.send_request(modes::set_mode(&started.session_id, id.clone()))
                .block_task()
                .await?;
        }
        ModeSwitch::Config { config_id, value } => {
            cx.send_request(modes::set_config(
                &started.session_id,
                config_id.clone(),
                value,
            ))
            .block_task()
            .await?;
        }
    }
    started.switched(&switch);
    Ok(())
}

/// Waits until a loaded session's history has stopped arriving (see
/// [`quirks::REPLAY_QUIET`]); what arrives meanwhile is dropped, outside any turn.
async fn settle_replay(ctx: &Ctx) {
    let since = Instant::now();
    while !quirks::replay_over(*lock(&ctx.last_update), since, Instant::now()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

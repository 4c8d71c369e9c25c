//! A chat turn answered by a session provider (Claude Code): the provider keeps its own
//! conversation and calls mainloop's tools itself over MCP, so a turn sends only what
//! the session has not been told — the worker updates and the user's message since the
//! last turn, or, for a new session, the thread so far — and stores what comes back
//! exactly as a turn of the Messages API is stored. A replayed turn (after a crash)
//! resends the message with a note, and its `spawn_task` finds the first call's result.

use crate::chat::{
    Reply, finish_with_text, insert_results, model_failure, not_configured, record_delta, storage,
    store_reply, system_prompt, to_i64,
};
use crate::dispatcher::{JobContext, JobError};
use crate::{Engine, Result, now};
use futures::StreamExt;
use mainloop_domain::UserId;
use mainloop_domain::chat::{Block, ContentBlock, EVENT_PREFIX, Role, display_text};
use mainloop_domain::records::{ChatMessage, MessageKind};
use mainloop_model::{ModelError, SessionEvent, SessionProvider, SessionTurn};
use mainloop_store::TurnUsageRow;

/// Said before a message whose earlier answer was cut off.
const REPLAYED: &str = "[mainloop: your answer to the next message was interrupted (the server \
restarted). Continue it; if you already did something it asked for, do not do it again — \
the tools return what they did the first time.]";

/// Said before the thread when a session starts on a conversation that already has one.
const CONTINUED: &str = "[mainloop: this conversation started before this session. Here is \
what came before, then the new message.]";

/// The most of the earlier thread a new session is told, in characters.
const PRIMER_CHARS: usize = 60_000;

/// What a session is sent for a turn. `told` is how far into the thread the session has
/// been told (`None`: it is new); `messages` is the thread up to the turn's message.
pub(crate) fn input(
    summary: Option<&str>,
    messages: &[ChatMessage],
    told: Option<i64>,
    trigger: &ChatMessage,
) -> String {
    let line = |m: &ChatMessage| -> Option<String> {
        let text = display_text(&m.content);
        match (m.role, m.kind) {
            (Role::User, MessageKind::Text) => Some(text),
            (Role::Event, _) if text.starts_with(EVENT_PREFIX) => Some(text),
            (Role::Event, _) => Some(format!("{EVENT_PREFIX}{text}")),
            _ => None,
        }
    };
    match told {
        Some(pos) if pos >= trigger.thread_pos => {
            format!("{REPLAYED}\n\n{}", display_text(&trigger.content))
        }
        Some(pos) => messages
            .iter()
            .filter(|m| m.thread_pos > pos)
            .filter_map(line)
            .collect::<Vec<_>>()
            .join("\n\n"),
        None => {
            let earlier: Vec<String> = messages
                .iter()
                .filter(|m| m.id != trigger.id)
                .filter_map(|m| {
                    let text = display_text(&m.content);
                    match (m.role, m.kind) {
                        (Role::Assistant, _) if !text.is_empty() => Some(format!("[you] {text}")),
                        (Role::User, MessageKind::Text) => Some(format!("[user] {text}")),
                        (Role::Event, _) => line(m),
                        _ => None,
                    }
                })
                .collect();
            // The newest of it, within the budget.
            let mut kept = Vec::new();
            let mut chars = 0;
            for m in earlier.iter().rev() {
                chars += m.chars().count();
                if chars > PRIMER_CHARS {
                    break;
                }
                kept.push(m.as_str());
            }
            kept.reverse();
            let new = display_text(&trigger.content);
            if kept.is_empty() && summary.is_none() {
                return new;
            }
            let mut out = format!("{CONTINUED}\n\n");
            if let Some(s) = summary {
                out.push_str(&format!("<summary>\n{s}\n</summary>\n\n"));
            }
            out.push_str(&format!(
                "<earlier>\n{}\n</earlier>\n\n{new}",
                kept.join("\n\n")
            ));
            out
        }
    }
}

/// Answers `trigger` through `provider`.
pub(crate) async fn run(
    ctx: &JobContext,
    user: UserId,
    trigger: &ChatMessage,
    provider: &dyn SessionProvider,
) -> std::result::Result<(), JobError> {
    let engine = &ctx.engine;
    let done_before = engine
        .store()
        .turn_messages(user, trigger.id)
        .await
        .map_err(storage)?;
    if done_before.last().is_some_and(|m| {
        m.role == Role::Assistant && m.content.iter().all(|b| b.as_tool_use().is_none())
    }) {
        // Already answered; only the job's completion was missing.
        return Ok(());
    }
    let status = provider.status();
    if !status.ready {
        return finish_with_text(ctx, user, trigger, &not_configured(&status.reason)).await;
    }
    seal_interrupted(engine, user, trigger, &done_before)
        .await
        .map_err(storage)?;
    let name = provider.name().to_owned();
    let session = engine
        .store()
        .main_session(user, &name)
        .await
        .map_err(storage)?
        .filter(|s| s.session_id.is_some());
    let messages = engine
        .store()
        .context_messages(user, trigger.thread_pos)
        .await
        .map_err(storage)?;
    let summary = match &session {
        Some(_) => None,
        None => engine.store().latest_summary(user).await.map_err(storage)?,
    };
    let mut text = input(
        summary.as_ref().map(|s| s.text.as_str()),
        &messages,
        session.as_ref().map(|s| s.delivered_pos),
        trigger,
    );
    let notes = crate::notes::session_notes(engine, user, &name, session.is_none())
        .await
        .map_err(storage)?;
    let memory = crate::digests::session_memory(engine, user, &name, session.is_none())
        .await
        .map_err(storage)?;
    // Said in the context's order: notes, then digests, then the conversation.
    if let Some((say, _)) = &memory {
        text = format!("{say}\n\n{text}");
    }
    if let Some((say, _)) = &notes {
        text = format!("{say}\n\n{text}");
    }
    let turn = SessionTurn {
        user: user.to_string(),
        resume: session.and_then(|s| s.session_id),
        system: system_prompt(engine, user).await.map_err(storage)?,
        input: text,
        mcp_token: engine.main_thread_token(user),
    };
    // Told, from here on: a crash now means a replay, which says so.
    told(engine, user, &name, None, trigger.thread_pos)
        .await
        .map_err(storage)?;
    if let Some((_, section)) = &notes {
        crate::notes::told_notes(engine, user, &name, section)
            .await
            .map_err(storage)?;
    }
    if let Some((_, section)) = &memory {
        let key = crate::digests::memory_key(&name);
        crate::notes::told_notes(engine, user, &key, section)
            .await
            .map_err(storage)?;
    }
    engine.begin_session_turn(user, trigger.id);
    let outcome = drive(ctx, user, trigger, &name, provider.turn(turn)).await;
    engine.end_session_turn(user);
    outcome
}

async fn told(
    engine: &Engine,
    user: UserId,
    provider: &str,
    id: Option<&str>,
    pos: i64,
) -> Result<()> {
    let mut tx = engine.store().begin().await?;
    tx.put_main_session(user, provider, id, pos, now()).await?;
    tx.commit().await?;
    Ok(())
}

async fn drive(
    ctx: &JobContext,
    user: UserId,
    trigger: &ChatMessage,
    name: &str,
    mut stream: futures::stream::BoxStream<'static, std::result::Result<SessionEvent, ModelError>>,
) -> std::result::Result<(), JobError> {
    let engine = &ctx.engine;
    let mut pending: Option<Vec<ContentBlock>> = None;
    let step = Reply {
        last: false,
        usage: None,
        session: None,
    };
    while let Some(item) = stream.next().await {
        tracing::debug!(turn = %trigger.id, ?item, "main thread session event");
        let event = match item {
            Ok(e) => e,
            Err(e) => {
                // Tool calls are kept (their side effects happened; the replay seals
                // them); a partial answer is not, or the replay would take it as final.
                if let Some(content) = pending
                    .take()
                    .filter(|c| c.iter().any(|b| b.as_tool_use().is_some()))
                {
                    store_reply(ctx, user, trigger, content, &step).await?;
                }
                return model_failure(ctx, user, trigger, &e).await;
            }
        };
        match event {
            SessionEvent::Session(id) => {
                told(engine, user, name, Some(&id), trigger.thread_pos)
                    .await
                    .map_err(storage)?;
            }
            SessionEvent::TextDelta(text) => record_delta(engine, user, trigger, &text).await,
            SessionEvent::Quota(windows) => {
                // Only shown in the usage view: the turn goes on without it.
                if let Err(e) = engine.record_quota(user, &windows).await {
                    tracing::warn!(error = %e, "could not keep the main thread's quota windows");
                }
            }
            SessionEvent::Message {
                role: Role::Assistant,
                content,
            } => {
                if let Some(earlier) = pending.replace(content) {
                    store_reply(ctx, user, trigger, earlier, &step).await?;
                }
            }
            SessionEvent::Message { content, .. } => {
                if let Some(earlier) = pending.take() {
                    store_reply(ctx, user, trigger, earlier, &step).await?;
                }
                store_results(engine, user, trigger, content)
                    .await
                    .map_err(storage)?;
            }
            SessionEvent::Done(used) => {
                let content = pending
                    .take()
                    .unwrap_or_else(|| vec![ContentBlock::text("(no reply)")]);
                let usage = TurnUsageRow {
                    provider: name.to_owned(),
                    model: used.model,
                    input_tokens: to_i64(used.usage.input_tokens),
                    output_tokens: to_i64(used.usage.output_tokens),
                    cache_read_tokens: to_i64(used.usage.cache_read_input_tokens),
                    cache_write_tokens: to_i64(used.usage.cache_creation_input_tokens),
                    cost_usd: used.cost_usd,
                };
                let end = Reply {
                    last: true,
                    usage: Some(&usage),
                    session: Some(name),
                };
                return store_reply(ctx, user, trigger, content, &end).await;
            }
            SessionEvent::Lost => {
                let mut tx = engine.store().begin().await.map_err(storage)?;
                tx.forget_main_session(user, name).await.map_err(storage)?;
                tx.commit().await.map_err(storage)?;
                return Err(JobError::retry(
                    "the main thread's session could not be resumed; starting a new one",
                ));
            }
        }
    }
    let e = ModelError::Protocol("the reply ended without completing".to_owned());
    model_failure(ctx, user, trigger, &e).await
}

async fn store_results(
    engine: &Engine,
    user: UserId,
    trigger: &ChatMessage,
    content: Vec<ContentBlock>,
) -> Result<()> {
    let mut tx = engine.store().begin().await?;
    insert_results(&mut tx, user, trigger, content, now()).await?;
    tx.commit().await?;
    Ok(())
}

/// A turn cut off after the model called tools but before their results were stored
/// leaves calls without results, which no model accepts in a thread: each gets the
/// result it recorded, or says it was interrupted.
async fn seal_interrupted(
    engine: &Engine,
    user: UserId,
    trigger: &ChatMessage,
    done_before: &[ChatMessage],
) -> Result<()> {
    let Some(last) = done_before.last().filter(|m| m.role == Role::Assistant) else {
        return Ok(());
    };
    let mut tx = engine.store().begin().await?;
    let mut results = Vec::new();
    for block in &last.content {
        if let ContentBlock::Known(Block::ToolUse { id, .. }) = block {
            let (text, is_error) = match tx.tool_call(user, id).await? {
                Some(recorded) => recorded,
                None => ("interrupted before it ran".to_owned(), true),
            };
            results.push(ContentBlock::tool_result(id, text, is_error));
        }
    }
    if results.is_empty() {
        return Ok(());
    }
    insert_results(&mut tx, user, trigger, results, now()).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests;

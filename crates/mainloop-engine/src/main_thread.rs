//! What answers the main thread and what it may do meanwhile: the provider chosen at
//! start (and why), the in-memory credential a session provider's MCP client presents
//! (scoped to one user, never stored), the turn each user's session is in (so a
//! replayed turn's `spawn_task` is recognised), and the status the API reports.

use crate::auth::hash_token;
use crate::{Engine, Result};
use mainloop_domain::{MessageId, UserId};
use mainloop_model::SessionProvider;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Prefix of main-thread credentials (never stored; valid while this process runs).
const MAIN_TOKEN_PREFIX: &str = "mlm_";

/// Which provider answers the chat, and why; set once by the composition root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MainChoice {
    /// `anthropic`, `claude-code`, or none.
    pub provider: Option<String>,
    /// Why this one (or why none), for the log, `print-config` and the settings page.
    pub reason: String,
}

/// The main thread's status, for `GET /api/model`.
#[derive(Clone, Debug, PartialEq)]
pub struct MainStatus {
    pub provider: Option<String>,
    pub ready: bool,
    pub model: Option<String>,
    pub reason: String,
    /// What to do when it cannot answer.
    pub help: Option<String>,
    pub turns: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// The two ways out when nothing can answer.
pub const HELP: &str = "Either sign Claude Code in as the user running mainloop \
(`claude login`, or CLAUDE_CODE_OAUTH_TOKEN in its environment) and make sure `claude` is \
on its PATH, or set an Anthropic API key (ANTHROPIC_API_KEY, or model.api_key in \
mainloop.toml). Then restart `mainloop serve`; `mainloop print-config` shows which one \
answers and why.";

#[derive(Debug, Default)]
pub(crate) struct MainThread {
    choice: RwLock<MainChoice>,
    session: RwLock<Option<Arc<dyn SessionProvider>>>,
    /// User → (their credential, its hash).
    tokens: Mutex<HashMap<UserId, (String, String)>>,
    /// User → the turn their session is answering.
    turns: Mutex<HashMap<UserId, MessageId>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engine {
    /// Records which provider answers the chat and why; with a session provider, the
    /// chat's turns go to it.
    pub fn set_main_thread(&self, choice: MainChoice, session: Option<Arc<dyn SessionProvider>>) {
        let main = &self.inner.main;
        *main
            .choice
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = choice;
        *main
            .session
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = session;
    }

    /// Why the provider was chosen, or why none can answer.
    pub(crate) fn main_choice_reason(&self) -> String {
        self.inner
            .main
            .choice
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .reason
            .clone()
    }

    pub(crate) fn session_provider(&self) -> Option<Arc<dyn SessionProvider>> {
        self.inner
            .main
            .session
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The credential `user`'s main-thread session presents to the MCP server: made once
    /// per process and user, kept in memory only.
    pub(crate) fn main_thread_token(&self, user: UserId) -> String {
        let mut tokens = lock(&self.inner.main.tokens);
        tokens
            .entry(user)
            .or_insert_with(|| {
                let token = crate::auth::new_token(MAIN_TOKEN_PREFIX);
                let hash = hash_token(&token);
                (token, hash)
            })
            .0
            .clone()
    }

    /// The user a main-thread credential belongs to.
    pub(crate) fn main_thread_user(&self, token: &str) -> Option<UserId> {
        if !token.starts_with(MAIN_TOKEN_PREFIX) {
            return None;
        }
        let hash = hash_token(token);
        lock(&self.inner.main.tokens)
            .iter()
            .find(|(_, (_, h))| *h == hash)
            .map(|(u, _)| *u)
    }

    pub(crate) fn begin_session_turn(&self, user: UserId, turn: MessageId) {
        lock(&self.inner.main.turns).insert(user, turn);
    }

    pub(crate) fn end_session_turn(&self, user: UserId) {
        lock(&self.inner.main.turns).remove(&user);
    }

    /// A key that names a `spawn_task` call by its turn and input, for a call made while
    /// `user`'s session answers a turn: a replayed turn (after a crash) calls it again
    /// under a new tool_use id, and must get the first call's result.
    pub(crate) fn turn_call_key(&self, user: UserId, name: &str, input: &Value) -> Option<String> {
        if !matches!(name, "spawn_task" | "remember") {
            return None;
        }
        let turn = *lock(&self.inner.main.turns).get(&user)?;
        Some(format!(
            "turn:{turn}:{name}:{}",
            hash_token(&input.to_string())
        ))
    }

    /// Which provider answers `user`'s chat, whether it can now, and what their turns used.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn main_thread_status(&self, user: UserId) -> Result<MainStatus> {
        let choice = self
            .inner
            .main
            .choice
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let totals = self.store().usage_totals(user).await?;
        let (ready, model, reason) = if let Some(session) = self.session_provider() {
            let status = session.status();
            let reason = if status.ready {
                format!("{} {}", choice.reason, status.reason)
            } else {
                status.reason
            };
            (status.ready, None, reason.trim().to_owned())
        } else if let Some(model) = self.model() {
            (true, Some(model.model().to_owned()), choice.reason.clone())
        } else {
            (false, None, choice.reason.clone())
        };
        Ok(MainStatus {
            provider: choice.provider,
            ready,
            model,
            reason,
            help: (!ready).then(|| HELP.to_owned()),
            turns: totals.turns,
            input_tokens: totals.input_tokens,
            output_tokens: totals.output_tokens,
            cost_usd: totals.cost_usd,
        })
    }
}

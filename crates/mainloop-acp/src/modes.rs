//! A session's start and mode as the agent offers them: which mode switch puts it in
//! the port's [`AgentMode`] (Gemini's `plan` mode, OpenCode's `mode` config option),
//! whether it can resume, and the usage a prompt reports. Pure, over schema types.

use agent_client_protocol::v1::schema::{
    InitializeResponse, PromptResponse, SessionConfigKind, SessionConfigOption,
    SessionConfigSelectOptions, SessionConfigValueId, SessionId, SessionModeId, SessionModeState,
    SetSessionConfigOptionRequest, SetSessionModeRequest,
};
use mainloop_agent::AgentMode;

/// The request that puts a session in the mode asked for, if any is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeSwitch {
    /// Already there, or the agent offers no such mode (the worker's read-only
    /// policy then applies alone).
    None,
    /// `session/set_mode`.
    Mode(String),
    /// `session/set_config_option`.
    Config { config_id: String, value: String },
}

/// Mode ids meaning read-only planning, and the normal working mode, by preference.
const PLAN_MODES: &[&str] = &["plan"];
const WORK_MODES: &[&str] = &["build", "default", "code"];

/// A started (new, resumed or loaded) session and what it offers.
#[derive(Debug, Clone)]
pub struct Started {
    pub session_id: SessionId,
    modes: Option<SessionModeState>,
    config: Vec<SessionConfigOption>,
}

impl Started {
    #[must_use]
    pub fn new(
        session_id: SessionId,
        modes: Option<SessionModeState>,
        config: Option<Vec<SessionConfigOption>>,
    ) -> Self {
        Self {
            session_id,
            modes,
            config: config.unwrap_or_default(),
        }
    }

    /// What to send so that the session is in `mode`.
    #[must_use]
    pub fn switch_for(&self, mode: AgentMode) -> ModeSwitch {
        let wanted = match mode {
            AgentMode::Plan => PLAN_MODES,
            AgentMode::Implement => WORK_MODES,
        };
        if let Some(modes) = &self.modes {
            let ids: Vec<&str> = modes.available_modes.iter().map(|m| &*m.id.0).collect();
            return pick(wanted, &modes.current_mode_id.0, &ids)
                .map_or(ModeSwitch::None, |id| ModeSwitch::Mode(id.to_owned()));
        }
        if let Some((current, values)) = self.select("mode") {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            if let Some(value) = pick(wanted, &current, &values) {
                return ModeSwitch::Config {
                    config_id: "mode".to_owned(),
                    value: value.to_owned(),
                };
            }
        }
        ModeSwitch::None
    }

    /// Records that `switch` was carried out, so the next `switch_for` starts from it.
    pub fn switched(&mut self, switch: &ModeSwitch) {
        match switch {
            ModeSwitch::None => {}
            ModeSwitch::Mode(id) => {
                if let Some(modes) = &mut self.modes {
                    modes.current_mode_id = SessionModeId::new(id.clone());
                }
            }
            ModeSwitch::Config { config_id, value } => {
                let option = self.config.iter_mut().find(|o| &*o.id.0 == config_id);
                if let Some(SessionConfigKind::Select(select)) = option.map(|o| &mut o.kind) {
                    select.current_value = SessionConfigValueId::new(value.clone());
                }
            }
        }
    }

    /// The model the agent will use, from its `model` config option; empty if unsaid.
    #[must_use]
    pub fn model(&self) -> String {
        self.select("model")
            .map(|(current, _)| current)
            .unwrap_or_default()
    }

    /// The current value and the choices of the select option `id`.
    fn select(&self, id: &str) -> Option<(String, Vec<String>)> {
        let option = self.config.iter().find(|o| &*o.id.0 == id)?;
        let SessionConfigKind::Select(select) = &option.kind else {
            return None;
        };
        let values = match &select.options {
            SessionConfigSelectOptions::Ungrouped(options) => {
                options.iter().map(|o| o.value.0.to_string()).collect()
            }
            SessionConfigSelectOptions::Grouped(groups) => groups
                .iter()
                .flat_map(|g| g.options.iter().map(|o| o.value.0.to_string()))
                .collect(),
            _ => Vec::new(),
        };
        Some((select.current_value.0.to_string(), values))
    }
}

/// The first of `wanted` the agent offers, unless the current one is already wanted.
fn pick<'a>(wanted: &[&str], current: &str, offered: &[&'a str]) -> Option<&'a str> {
    if wanted.contains(&current) {
        return None;
    }
    wanted
        .iter()
        .find_map(|w| offered.iter().find(|o| **o == *w).copied())
}

/// Whether the agent offers `session/resume` (no history replay), else `session/load`
/// is the way back into a session.
#[must_use]
pub fn can_resume(init: &InitializeResponse) -> bool {
    init.agent_capabilities
        .session_capabilities
        .resume
        .is_some()
}

#[must_use]
pub fn set_mode(session: &SessionId, mode: String) -> SetSessionModeRequest {
    SetSessionModeRequest::new(session.clone(), mode)
}

#[must_use]
pub fn set_config(
    session: &SessionId,
    config_id: String,
    value: &str,
) -> SetSessionConfigOptionRequest {
    SetSessionConfigOptionRequest::new(session.clone(), config_id, value)
}

/// Input tokens (with cache reads and writes) and output tokens a prompt reports: its
/// `usage`, else Gemini CLI's `_meta.quota.token_count`.
#[must_use]
pub fn usage(response: &PromptResponse) -> (u64, u64) {
    if let Some(u) = &response.usage {
        let cached = u.cached_read_tokens.unwrap_or(0) + u.cached_write_tokens.unwrap_or(0);
        return (u.input_tokens + cached, u.output_tokens);
    }
    let count = response
        .meta
        .as_ref()
        .and_then(|m| m.get("quota")?.get("token_count"));
    let field = |key: &str| count.and_then(|c| c.get(key)?.as_u64()).unwrap_or(0);
    (field("input_tokens"), field("output_tokens"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn started(response: serde_json::Value) -> Started {
        let r: agent_client_protocol::v1::schema::NewSessionResponse =
            serde_json::from_value(response).unwrap();
        Started::new(r.session_id, r.modes, r.config_options)
    }

    #[test]
    fn a_switch_carried_out_is_where_the_next_one_starts() {
        let mut s = Started::new(
            SessionId::new("s"),
            Some(
                serde_json::from_value(json!({
                    "currentModeId": "default",
                    "availableModes": [{"id": "default", "name": "Default"},
                                       {"id": "plan", "name": "Plan"}]
                }))
                .unwrap(),
            ),
            None,
        );
        let to_plan = s.switch_for(AgentMode::Plan);
        assert_eq!(to_plan, ModeSwitch::Mode("plan".into()));
        s.switched(&to_plan);
        assert_eq!(s.switch_for(AgentMode::Plan), ModeSwitch::None);
        assert_eq!(
            s.switch_for(AgentMode::Implement),
            ModeSwitch::Mode("default".into())
        );
    }

    #[test]
    fn gemini_switches_by_mode() {
        let s = started(
            json!({"sessionId": "g1", "modes": {"currentModeId": "default",
            "availableModes": [{"id": "default", "name": "Default"}, {"id": "autoEdit", "name": "Auto"},
                               {"id": "yolo", "name": "YOLO"}, {"id": "plan", "name": "Plan"}]}}),
        );
        assert_eq!(
            s.switch_for(AgentMode::Plan),
            ModeSwitch::Mode("plan".into())
        );
        assert_eq!(s.switch_for(AgentMode::Implement), ModeSwitch::None);
        assert_eq!(s.model(), "");
    }

    #[test]
    fn opencode_switches_by_config_option() {
        let s = started(json!({"sessionId": "ses_1", "configOptions": [
            {"id": "model", "name": "Model", "type": "select", "currentValue": "anthropic/claude-sonnet-4-5",
             "options": [{"value": "anthropic/claude-sonnet-4-5", "name": "Sonnet"}]},
            {"id": "mode", "name": "Mode", "type": "select", "currentValue": "build",
             "options": [{"value": "build", "name": "Build"}, {"value": "plan", "name": "Plan"}]}]}));
        assert_eq!(
            s.switch_for(AgentMode::Plan),
            ModeSwitch::Config {
                config_id: "mode".into(),
                value: "plan".into()
            }
        );
        assert_eq!(s.switch_for(AgentMode::Implement), ModeSwitch::None);
        assert_eq!(s.model(), "anthropic/claude-sonnet-4-5");
    }

    #[test]
    fn a_planning_session_goes_back_to_work_and_no_modes_means_no_switch() {
        let s = started(json!({"sessionId": "g1", "modes": {"currentModeId": "plan",
            "availableModes": [{"id": "default", "name": "Default"}, {"id": "plan", "name": "Plan"}]}}));
        assert_eq!(
            s.switch_for(AgentMode::Implement),
            ModeSwitch::Mode("default".into())
        );
        let bare = started(json!({"sessionId": "x"}));
        assert_eq!(bare.switch_for(AgentMode::Plan), ModeSwitch::None);
    }

    #[test]
    fn usage_counts_cache_as_input() {
        let r: PromptResponse = serde_json::from_value(json!({"stopReason": "end_turn",
            "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15, "cachedReadTokens": 3}}))
        .unwrap();
        assert_eq!(usage(&r), (13, 5));
        let r: PromptResponse = serde_json::from_value(json!({"stopReason": "end_turn"})).unwrap();
        assert_eq!(usage(&r), (0, 0));
        // Gemini CLI 0.61.0 reports its usage in `_meta` only.
        let r: PromptResponse = serde_json::from_value(json!({"stopReason": "end_turn",
            "_meta": {"quota": {"token_count": {"input_tokens": 31475, "output_tokens": 80},
                "model_usage": [{"model": "gemini-3.8-flash", "token_count": {"input_tokens": 10382, "output_tokens": 33}}]}}}))
        .unwrap();
        assert_eq!(usage(&r), (31475, 80));
        let r: PromptResponse = serde_json::from_value(json!({"stopReason": "end_turn",
            "_meta": {"quota": {"token_count": "garbage"}}}))
        .unwrap();
        assert_eq!(usage(&r), (0, 0));
    }
}

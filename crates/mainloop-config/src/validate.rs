//! Checks on the merged configuration that types alone cannot express.

use crate::{Config, ConfigError, ModelProviderKind};

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

fn positive(key: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

fn http_url(key: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be an http:// or https:// URL, got {value:?}"),
        ))
    }
}

impl Config {
    /// Rejects settings that would only fail later, at a worse moment (first request, first
    /// retry), with a message naming the key.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "data_dir",
                "is not set and no per-user data directory could be determined (no $HOME?); \
                 set MAINLOOP_DATA_DIR or data_dir",
            ));
        }
        if let Some(url) = &self.database_url {
            // The value itself is not quoted: it may contain a password.
            let url = url.expose();
            let known = ["sqlite:", "postgres://", "postgresql://"];
            if !known.iter().any(|scheme| url.starts_with(scheme)) {
                return Err(invalid(
                    "database_url",
                    "must start with sqlite:, postgres:// or postgresql://",
                ));
            }
        }
        if let Some(url) = &self.public_url {
            http_url("public_url", url)?;
        }

        positive("auth.session_ttl_hours", self.auth.session_ttl_hours)?;
        if jiff::tz::TimeZone::get(self.chat.time_zone.trim()).is_err() {
            return Err(invalid(
                "chat.time_zone",
                "is not a known time zone: use an IANA name such as Europe/Paris or UTC",
            ));
        }

        let model = &self.model;
        if model.provider != Some(ModelProviderKind::None) {
            http_url("model.base_url", &model.base_url)?;
            if model.name.trim().is_empty() {
                return Err(invalid("model.name", "must not be empty"));
            }
        }
        if model
            .claude_code_model
            .as_ref()
            .is_some_and(|m| m.trim().is_empty() || m.starts_with('-'))
        {
            return Err(invalid(
                "model.claude_code_model",
                "must be a model name (not empty, not starting with '-')",
            ));
        }
        if model
            .api_key
            .as_ref()
            .is_some_and(|k| k.expose().trim().is_empty())
        {
            return Err(invalid(
                "model.api_key",
                "is empty; remove it to leave it unset",
            ));
        }
        positive("model.max_tokens", u64::from(model.max_tokens))?;
        positive(
            "model.context_budget_tokens",
            model.context_budget_tokens as u64,
        )?;
        if model.context_budget_tokens <= model.max_tokens as usize {
            return Err(invalid(
                "model.context_budget_tokens",
                format!(
                    "must be larger than model.max_tokens ({}), or no history fits",
                    model.max_tokens
                ),
            ));
        }
        positive("model.request_timeout_secs", model.request_timeout_secs)?;

        let workers = &self.workers;
        positive("workers.max_agents", workers.max_agents as u64)?;
        positive("workers.idle_timeout_secs", workers.idle_timeout_secs)?;
        positive(
            "workers.inactivity_timeout_secs",
            workers.inactivity_timeout_secs,
        )?;
        positive("workers.check_timeout_secs", workers.check_timeout_secs)?;
        workers
            .port_range_bounds()
            .map_err(|m| invalid("workers.port_range", m))?;
        for (key, value, max) in [
            (
                "workers.retention_merged_hours",
                workers.retention_merged_hours,
                24 * 3650,
            ),
            (
                "workers.retention_failed_days",
                workers.retention_failed_days,
                3650,
            ),
            (
                "workers.retention_cancelled_days",
                workers.retention_cancelled_days,
                3650,
            ),
        ] {
            if value > max {
                return Err(invalid(key, format!("must be at most {max} (ten years)")));
            }
        }
        if let Some(url) = &workers.task_database_url
            && !["postgres://", "postgresql://"]
                .iter()
                .any(|scheme| url.expose().starts_with(scheme))
        {
            return Err(invalid(
                "workers.task_database_url",
                "must start with postgres:// or postgresql://",
            ));
        }
        let previews = &self.previews;
        positive("previews.idle_timeout_secs", previews.idle_timeout_secs)?;
        positive("previews.start_timeout_secs", previews.start_timeout_secs)?;
        let domain = previews.domain.trim_matches('.');
        let label_ok =
            |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if domain.is_empty() || !domain.split('.').all(label_ok) {
            return Err(invalid(
                "previews.domain",
                "must be a domain name such as \"localhost\" or \"preview.example.com\"",
            ));
        }
        if workers.claude_command.trim().is_empty() {
            return Err(invalid("workers.claude_command", "must not be empty"));
        }
        self.resolve_agents()?;
        let dispatcher = &self.dispatcher;
        positive("dispatcher.concurrency", dispatcher.concurrency as u64)?;
        positive("dispatcher.lease_secs", dispatcher.lease_secs)?;
        positive(
            "dispatcher.max_attempts",
            u64::from(dispatcher.max_attempts),
        )?;
        positive("dispatcher.backoff_base_ms", dispatcher.backoff_base_ms)?;
        if dispatcher.backoff_max_ms < dispatcher.backoff_base_ms {
            return Err(invalid(
                "dispatcher.backoff_max_ms",
                format!(
                    "must be at least dispatcher.backoff_base_ms ({})",
                    dispatcher.backoff_base_ms
                ),
            ));
        }

        if self.workers.runtime == crate::WorkersRuntime::Kubernetes {
            let k = &self.kubernetes;
            if k.image.trim().is_empty() {
                return Err(invalid(
                    "kubernetes.image",
                    "is required with workers.runtime = \"kubernetes\" (the agent image)",
                ));
            }
            http_url("kubernetes.server_url", &k.server_url)?;
            if k.namespace_prefix.len() > 31 {
                return Err(invalid("kubernetes.namespace_prefix", "is longer than 31"));
            }
            k.egress_rules()
                .map_err(|m| invalid("kubernetes.egress", &m))?;
        }
        let pool = &self.database;
        positive("database.max_connections", u64::from(pool.max_connections))?;
        if pool.max_connections > 1000 {
            return Err(invalid("database.max_connections", "must be at most 1000"));
        }
        if pool.min_connections > pool.max_connections {
            return Err(invalid(
                "database.min_connections",
                "must be at most database.max_connections",
            ));
        }
        positive("limits.max_body_bytes", self.limits.max_body_bytes as u64)?;
        positive("limits.max_chat_chars", self.limits.max_chat_chars as u64)?;

        let subject = &self.notifications.vapid_subject;
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            return Err(invalid(
                "notifications.vapid_subject",
                format!("must be a mailto: or https: URI, got {subject:?}"),
            ));
        }

        let gh = &self.github;
        if !(gh.api_url.starts_with("https://") || gh.api_url.starts_with("http://")) {
            return Err(invalid(
                "github.api_url",
                format!("must be an http(s) URL, got {:?}", gh.api_url),
            ));
        }
        if !(gh.git_url.contains("{owner}") && gh.git_url.contains("{name}")) {
            return Err(invalid("github.git_url", "must contain {owner} and {name}"));
        }
        if gh.web_host.is_empty() || gh.web_host.contains('/') {
            return Err(invalid(
                "github.web_host",
                "must be a host name such as github.com",
            ));
        }
        positive("github.poll_interval_secs", gh.poll_interval_secs)?;
        positive("github.ci_pending_timeout_secs", gh.ci_pending_timeout_secs)?;
        positive("github.label", gh.label.trim().len() as u64)?;

        if self.log.filter.trim().is_empty() {
            return Err(invalid("log.filter", "must not be empty (try \"info\")"));
        }
        Ok(())
    }
}

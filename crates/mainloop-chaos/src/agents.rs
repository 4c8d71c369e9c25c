//! Which agent each task runs (Claude Code, or Codex for a seeded share of them), and
//! the configuration that declares Codex to the server: the pinned CLI pointed at the
//! fake model's Responses API.

use crate::rng::Rng;
use std::path::Path;

/// Which of `n` tasks run on Codex: `percent` of them (rounded), chosen by `rng`.
pub fn codex_tasks(rng: &mut Rng, n: usize, percent: u64) -> Vec<bool> {
    let percent = usize::try_from(percent.min(100)).unwrap_or(100);
    let mut left = (n * percent + 50) / 100;
    // Selection sampling: each task is picked with the chance left / remaining.
    (0..n)
        .map(|i| {
            let remaining = u64::try_from(n - i).unwrap_or(1);
            let pick = rng.below(remaining) < u64::try_from(left).unwrap_or(0);
            if pick {
                left -= 1;
            }
            pick
        })
        .collect()
}

/// The configuration file that declares the `codex` agent: the pinned CLI pointed at the
/// fake model's Responses API (the key it sends comes from the server's environment).
pub fn codex_config(codex: &Path, model: &str) -> String {
    let provider = format!(
        "model_providers.fake={{name=\"Fake\",base_url=\"{model}/v1\",wire_api=\"responses\",\
         env_key=\"{CODEX_KEY_VAR}\",request_max_retries=0,stream_max_retries=0}}"
    );
    let command = [
        codex.display().to_string(),
        "-c".to_owned(),
        "model_provider=fake".to_owned(),
        "-c".to_owned(),
        provider,
        "-c".to_owned(),
        "model=gpt-5.5".to_owned(),
        "app-server".to_owned(),
    ];
    format!("[agents.codex]\ncommand = {command:?}\npass_env = [{CODEX_KEY_VAR:?}]\n")
}

/// The variable Codex's fake provider reads its key from.
pub const CODEX_KEY_VAR: &str = "FAKE_API_KEY";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_codex_share_is_whole_tasks_spread_by_the_seed() {
        for (n, percent, want) in [(4, 50, 2), (4, 0, 0), (4, 100, 4), (3, 50, 2), (5, 10, 1)] {
            for seed in 0..50 {
                let picked = codex_tasks(&mut Rng::new(seed), n, percent);
                assert_eq!(picked.len(), n);
                assert_eq!(picked.iter().filter(|c| **c).count(), want, "{n} {percent}");
            }
        }
        let firsts: BTreeSet<bool> = (0..50)
            .map(|seed| codex_tasks(&mut Rng::new(seed), 4, 50)[0])
            .collect();
        assert_eq!(
            firsts.len(),
            2,
            "the first task is sometimes on Codex, sometimes not"
        );
    }

    #[test]
    fn the_codex_agent_is_configured_as_a_toml_table() {
        let text = codex_config(Path::new("/w/codex"), "http://127.0.0.1:9");
        assert!(
            text.starts_with("[agents.codex]\ncommand = [\"/w/codex\", \"-c\""),
            "{text}"
        );
        assert!(
            text.contains(r#"base_url=\"http://127.0.0.1:9/v1\""#),
            "{text}"
        );
        assert!(text.ends_with("pass_env = [\"FAKE_API_KEY\"]\n"), "{text}");
    }
}

//! Known agent and setup failures, read from their raw text and turned into one-line
//! instructions: what to do, as which user, with which command. The raw text is the
//! caller's to keep; unknown text gets no instruction.

/// The one-line instruction for a task failure's raw text (`raw`), addressed to
/// `user`, the account mainloop and its agents run as; `None` when the text is not a
/// known failure.
#[must_use]
pub fn instruction(raw: &str, user: &str) -> Option<String> {
    let user = if user.trim().is_empty() {
        "the user running mainloop"
    } else {
        user.trim()
    };
    // ASCII-only lowering keeps byte offsets, so positions found in `lower` index `raw`.
    let lower = raw.to_ascii_lowercase();
    if let Some(resets) = usage_limit(raw, &lower) {
        let when = resets.map_or_else(String::new, |r| format!(" (resets {r})"));
        return Some(format!(
            "The Claude usage limit of {user} is reached{when}: retry then, or sign in to \
             another account by running `claude` as {user} and typing /login."
        ));
    }
    if lower.contains("invalid api key") {
        return Some(format!(
            "Claude refused its API key: run `claude` as {user} on the server and type \
             /login (or set a valid ANTHROPIC_API_KEY for mainloop), then retry."
        ));
    }
    if lower.contains("not logged in") || lower.contains("please run /login") {
        return Some(format!(
            "Claude is not logged in for {user}: run `claude` as {user} on the server and \
             type /login, then retry."
        ));
    }
    if let Some(command) = missing_command(raw, &lower) {
        return Some(format!(
            "The agent command `{command}` was not found for {user}: install Claude Code \
             (`npm install -g @anthropic-ai/claude-code`) or set workers.claude_command to \
             its full path, then retry."
        ));
    }
    if let Some(path) = not_a_repository(raw) {
        return Some(format!(
            "{path} is not a git repository: run `git init {path}` as {user} or give the \
             task a repository's path, then retry."
        ));
    }
    if let Some(repo) = remote_not_found(raw, &lower) {
        return Some(format!(
            "The repository {repo} was not found: check its address and that {user} can \
             run `git ls-remote {repo}`, then retry."
        ));
    }
    None
}

/// `Some(resets)` when `raw` says the usage limit is reached, with the reset time the
/// text gives ("You've hit your 5-hour limit · resets 3pm (Europe/Berlin)").
fn usage_limit<'a>(raw: &'a str, lower: &str) -> Option<Option<&'a str>> {
    let hit = lower.contains("hit your") && lower.contains("limit")
        || lower.contains("usage limit reached")
        || lower.contains("usage_limit_reached");
    if !hit {
        return None;
    }
    let resets = lower
        .find("resets ")
        .and_then(|i| raw.get(i + "resets ".len()..))
        .map(|rest| {
            rest.lines()
                .next()
                .unwrap_or(rest)
                .trim()
                .trim_end_matches('.')
        })
        .filter(|r| !r.is_empty());
    Some(resets)
}

/// The program the agent could not be started with, when it does not exist
/// ("could not start the agent: /usr/bin/claude: No such file or directory (os error 2)").
fn missing_command<'a>(raw: &'a str, lower: &str) -> Option<&'a str> {
    const START: &str = "could not start the agent: ";
    let at = lower.find(START)?;
    if !lower.contains("no such file") && !lower.contains("not found") {
        return None;
    }
    let rest = raw.get(at + START.len()..)?;
    let command = rest.split(": ").next().unwrap_or(rest).trim();
    Some(if command.is_empty() {
        "claude"
    } else {
        command
    })
}

/// The local path that is not a git repository ("/srv/app is not a git repository …").
fn not_a_repository(raw: &str) -> Option<&str> {
    const NOT: &str = " is not a git repository";
    let at = raw.find(NOT)?;
    let before = &raw[..at];
    // The path is the last word before the phrase (after a "…: " prefix, if any).
    let path = before
        .rsplit(": ")
        .next()
        .unwrap_or(before)
        .split_whitespace()
        .last()?;
    Some(path)
}

/// The remote repository git could not find, as git named it ("repository
/// 'https://…' not found", "'…' does not appear to be a git repository").
fn remote_not_found<'a>(raw: &'a str, lower: &str) -> Option<&'a str> {
    let known = lower.contains("repository not found")
        || (lower.contains("repository '") && lower.contains("' not found"))
        || lower.contains("does not appear to be a git repository");
    if !known {
        return None;
    }
    let quoted = |marker: &str| {
        let start = lower.find(marker)? + marker.len();
        let len = raw.get(start..)?.find('\'')?;
        raw.get(start..start + len).filter(|s| !s.is_empty())
    };
    Some(
        quoted("repository '")
            .or_else(|| quoted("fatal: '"))
            .unwrap_or("of this task"),
    )
}

#[cfg(test)]
mod tests {
    use super::instruction;

    fn says(raw: &str) -> String {
        instruction(raw, "alice").unwrap_or_else(|| panic!("no instruction for {raw:?}"))
    }

    #[test]
    fn not_logged_in_names_the_user_and_the_login_command() {
        let i = says("Not logged in · Please run /login");
        assert!(
            i.contains("alice") && i.contains("`claude`") && i.contains("/login"),
            "{i}"
        );
        assert!(!i.contains('\n'));
    }

    #[test]
    fn an_invalid_api_key_says_how_to_log_in_again() {
        let i = says("the agent failed: Invalid API key · Please run /login");
        assert!(i.starts_with("Claude refused its API key"), "{i}");
        assert!(i.contains("alice") && i.contains("/login"), "{i}");
    }

    #[test]
    fn a_missing_agent_command_is_named() {
        let i = says(
            "could not start the agent: /opt/bin/claude: No such file or directory (os error 2)",
        );
        assert!(
            i.contains("`/opt/bin/claude`") && i.contains("alice"),
            "{i}"
        );
        assert!(i.contains("workers.claude_command"), "{i}");
    }

    #[test]
    fn a_path_that_is_not_a_repository_is_named() {
        let i = says(
            "could not prepare the workspace: /home/alice/app is not a git repository \
             (No such file or directory (os error 2))",
        );
        assert!(
            i.starts_with("/home/alice/app is not a git repository"),
            "{i}"
        );
        assert!(
            i.contains("`git init /home/alice/app`") && i.contains("as alice"),
            "{i}"
        );
    }

    #[test]
    fn a_remote_repository_that_is_not_found_is_named() {
        let i = says(
            "workspace unavailable: `git clone --bare https://example.com/x.git` failed \
             (exit 128): remote: Repository not found.\nfatal: repository \
             'https://example.com/x.git/' not found",
        );
        assert!(i.contains("https://example.com/x.git/"), "{i}");
        assert!(
            i.contains("`git ls-remote https://example.com/x.git/`"),
            "{i}"
        );
        let i = says("fatal: 'origin' does not appear to be a git repository");
        assert!(i.contains("origin") && i.contains("alice"), "{i}");
    }

    #[test]
    fn a_usage_limit_gives_the_reset_time() {
        let i = says("You've hit your 5-hour limit · resets 3pm (Europe/Berlin)");
        assert!(i.contains("(resets 3pm (Europe/Berlin))"), "{i}");
        assert!(i.contains("alice") && i.contains("/login"), "{i}");
        let i = says("Überlastet — You've hit your 5-hour limit · resets 3pm");
        assert!(i.contains("(resets 3pm)"), "{i}");
        let i = says("You've hit your weekly limit");
        assert!(i.contains("usage limit of alice is reached:"), "{i}");
    }

    #[test]
    fn unknown_text_gets_no_instruction() {
        for raw in [
            "",
            "the agent exited unexpectedly (exit 1): dead",
            "checks still failing after 2 fix rounds",
            "could not start the agent: permission denied",
            "merge failed: branch main kept changing during the merge; try again",
        ] {
            assert_eq!(instruction(raw, "alice"), None, "{raw:?}");
        }
    }

    #[test]
    fn without_a_user_name_the_account_is_described() {
        let i = instruction("Not logged in · Please run /login", " ").unwrap();
        assert!(i.contains("the user running mainloop"), "{i}");
    }
}

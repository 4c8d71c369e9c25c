//! What a worker's agent may do, by phase: read-only while planning (except its own
//! plan file), edits and commands inside its worktree while implementing. Pure.

use mainloop_domain::task::AgentPhase;
use serde_json::Value;
use std::path::{Component, Path, PathBuf};

/// The answer to an agent's permission request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

/// Tools that only read.
const READ_ONLY: &[&str] = &[
    "Read",
    "Glob",
    "Grep",
    "LS",
    "NotebookRead",
    "TodoWrite",
    "WebSearch",
    "WebFetch",
];
/// Tools that write a file named by `file_path` / `notebook_path`.
const FILE_WRITERS: &[&str] = &["Write", "Edit", "MultiEdit", "NotebookEdit"];

/// Lexically normalises `path` against `base` (no filesystem access, so a path into a
/// not-yet-existing directory still resolves).
fn normalise(base: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn file_path(input: &Value) -> Option<&str> {
    input
        .get("file_path")
        .or_else(|| input.get("notebook_path"))
        .and_then(Value::as_str)
}

/// The other files one request writes (a patch over several files names the first in
/// `file_path` and all of them in `files`); a non-string entry counts as outside.
fn other_files(input: &Value) -> Vec<Option<&str>> {
    input
        .get("files")
        .and_then(Value::as_array)
        .map(|fs| fs.iter().map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Decides a permission request from the agent.
#[must_use]
pub fn decide(
    phase: AgentPhase,
    tool: &str,
    input: &Value,
    worktree: &Path,
    plans_dir: &Path,
) -> Decision {
    if READ_ONLY.contains(&tool) {
        return Decision::Allow;
    }
    let target = file_path(input).map(|p| normalise(worktree, Path::new(p)));
    match phase {
        AgentPhase::Plan => match (FILE_WRITERS.contains(&tool), target) {
            (true, Some(t)) if t.starts_with(plans_dir) => Decision::Allow,
            _ => Decision::Deny(
                "Planning is read-only: explore and write your plan, then call ExitPlanMode."
                    .into(),
            ),
        },
        AgentPhase::Implement => {
            if FILE_WRITERS.contains(&tool) {
                let outside = other_files(input).into_iter().find(|f| {
                    !f.is_some_and(|f| normalise(worktree, Path::new(f)).starts_with(worktree))
                });
                if let Some(f) = outside {
                    return Decision::Deny(format!(
                        "{} is outside this task's worktree ({}); only edit files inside it.",
                        f.unwrap_or("a file the request does not name"),
                        worktree.display()
                    ));
                }
                match target {
                    Some(t) if t.starts_with(worktree) => Decision::Allow,
                    Some(t) => Decision::Deny(format!(
                        "{} is outside this task's worktree ({}); only edit files inside it.",
                        t.display(),
                        worktree.display()
                    )),
                    None => Decision::Deny("the edit names no file".into()),
                }
            } else {
                // Commands run with the worktree as working directory; isolation beyond
                // that is the sandbox's job.
                Decision::Allow
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WT: &str = "/data/worktrees/abc";
    const PLANS: &str = "/home/u/.claude/plans";

    fn d(phase: AgentPhase, tool: &str, input: &Value) -> Decision {
        decide(phase, tool, input, Path::new(WT), Path::new(PLANS))
    }

    #[test]
    fn a_patch_over_several_files_is_allowed_only_if_all_are_inside_the_worktree() {
        let inside = json!({"file_path": "/data/worktrees/abc/a.rs", "files": ["/data/worktrees/abc/a.rs", "b/c.rs"]});
        assert_eq!(d(AgentPhase::Implement, "Write", &inside), Decision::Allow);
        for files in [
            json!(["/data/worktrees/abc/a.rs", "/etc/passwd"]),
            json!(["../../escape.rs"]),
            json!([7]),
        ] {
            let input = json!({"file_path": "/data/worktrees/abc/a.rs", "files": files});
            assert!(
                matches!(d(AgentPhase::Implement, "Write", &input), Decision::Deny(_)),
                "{input}"
            );
        }
    }

    #[test]
    fn planning_is_read_only_except_the_plan_file() {
        assert_eq!(
            d(
                AgentPhase::Plan,
                "Read",
                &json!({"file_path": "/etc/passwd"})
            ),
            Decision::Allow
        );
        assert_eq!(
            d(
                AgentPhase::Plan,
                "Write",
                &json!({"file_path": "/home/u/.claude/plans/x.md"})
            ),
            Decision::Allow
        );
        assert!(matches!(
            d(
                AgentPhase::Plan,
                "Write",
                &json!({"file_path": "/data/worktrees/abc/a.rs"})
            ),
            Decision::Deny(_)
        ));
        assert!(matches!(
            d(AgentPhase::Plan, "Bash", &json!({"command": "rm -rf /"})),
            Decision::Deny(_)
        ));
        assert!(matches!(
            d(
                AgentPhase::Plan,
                "Write",
                &json!({"file_path": "/home/u/.claude/plans/../../.bashrc"})
            ),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn implementing_edits_stay_inside_the_worktree() {
        assert_eq!(
            d(
                AgentPhase::Implement,
                "Edit",
                &json!({"file_path": "/data/worktrees/abc/src/a.rs"})
            ),
            Decision::Allow
        );
        assert_eq!(
            d(
                AgentPhase::Implement,
                "Write",
                &json!({"file_path": "src/new.rs"})
            ),
            Decision::Allow
        );
        assert!(matches!(
            d(
                AgentPhase::Implement,
                "Write",
                &json!({"file_path": "/data/worktrees/abc/../other/x"})
            ),
            Decision::Deny(_)
        ));
        assert!(matches!(
            d(
                AgentPhase::Implement,
                "Edit",
                &json!({"file_path": "/data/worktrees/abcd/x"})
            ),
            Decision::Deny(_)
        ));
        assert!(matches!(
            d(AgentPhase::Implement, "Edit", &json!({})),
            Decision::Deny(_)
        ));
        assert_eq!(
            d(
                AgentPhase::Implement,
                "Bash",
                &json!({"command": "cargo test"})
            ),
            Decision::Allow
        );
    }
}

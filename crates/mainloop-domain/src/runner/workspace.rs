//! A task's workspace on a runner, prepared and saved at the server's request: the
//! shapes of `prepare`, `save` and `release` and of their answers (`prepared`, `saved`,
//! `request_failed`), and the bounds each is held to — ref names git would accept,
//! absolute paths, an object id, and a `git_path` that can only name the task's own
//! repository on the server the runner is connected to.

use serde::{Deserialize, Serialize};
use std::path::Path;
use utoipa::ToSchema;

use super::ProtocolError;
use super::process::MAX_PATH_BYTES;
use crate::TaskId;

/// The longest branch or ref name a `prepare` or `save` names, in bytes.
pub const MAX_REF_BYTES: usize = 255;

/// Where the server serves `task`'s repository to the runner holding its lease, as a
/// path under the server's base URL. The one `git_path` a runner accepts for `task`.
#[must_use]
pub fn git_path(task: TaskId) -> String {
    format!("/api/runners/git/{task}")
}

/// Make the task's workspace the task branch's tip, with the work of `snapshot` (a ref
/// in the task's repository on the server) uncommitted on top; answered by `prepared`
/// or `request_failed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Prepare {
    /// The server's number for this request, echoed by the answer.
    pub request: u64,
    pub task: TaskId,
    /// Exactly `/api/runners/git/<task>`: the runner fetches from its own `--server`
    /// URL plus this path, never from anywhere else.
    pub git_path: String,
    /// The task branch (a short name: `mainloop/…`).
    pub branch: String,
    /// The ref holding the server's uncommitted work (`refs/mainloop/snapshots/<task>`),
    /// if there is any.
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// Send the workspace's state (committed or not) as a snapshot commit under
/// `snapshot_ref` in the task's repository on the server; answered by `saved` or
/// `request_failed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Save {
    pub request: u64,
    pub task: TaskId,
    /// Exactly `/api/runners/git/<task>`.
    pub git_path: String,
    /// The full ref name the snapshot is pushed to (`refs/…`).
    pub snapshot_ref: String,
}

/// Checks a `prepare` as the server does before sending it and the runner before
/// acting on it.
///
/// # Errors
/// The first bound it breaks, in words.
pub fn check_prepare(p: &Prepare) -> Result<(), ProtocolError> {
    check_git_path(p.task, &p.git_path)?;
    check_ref_name("branch", &p.branch, false)?;
    if let Some(snapshot) = &p.snapshot {
        check_ref_name("snapshot", snapshot, true)?;
    }
    Ok(())
}

/// Checks a `save` as the server does before sending it and the runner before acting
/// on it.
///
/// # Errors
/// The first bound it breaks, in words.
pub fn check_save(s: &Save) -> Result<(), ProtocolError> {
    check_git_path(s.task, &s.git_path)?;
    check_ref_name("snapshot_ref", &s.snapshot_ref, true)
}

fn bad<T>(message: String) -> Result<T, ProtocolError> {
    Err(ProtocolError::Workspace(message))
}

fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A `git_path` other than the task's own would let a server point the runner's token
/// (and its fetches) somewhere else.
fn check_git_path(task: TaskId, path: &str) -> Result<(), ProtocolError> {
    if path == git_path(task) {
        Ok(())
    } else {
        bad(format!(
            "git_path {:?} is not this task's repository ({})",
            shown(path),
            git_path(task)
        ))
    }
}

/// A branch (`full` false) or a full ref name (`full`: under `refs/`) as git would
/// accept it (`git check-ref-format`'s rules), at most [`MAX_REF_BYTES`]: nothing that
/// could read as an option, a refspec or a revision expression.
///
/// # Errors
/// What is wrong with it, naming the field.
pub fn check_ref_name(what: &str, name: &str, full: bool) -> Result<(), ProtocolError> {
    let invalid = |why: &str| {
        bad(format!(
            "{what} {:?} is not a ref name git accepts: {why}",
            shown(name)
        ))
    };
    if name.is_empty() || name.len() > MAX_REF_BYTES {
        return bad(format!("{what} is 1 to {MAX_REF_BYTES} bytes"));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return invalid("no spaces, control characters or any of ~^:?*[\\");
    }
    if name.contains("..") || name.contains("@{") || name == "@" {
        return invalid("no '..' or '@{'");
    }
    if name.starts_with('-') || name.ends_with('.') || name.ends_with(".lock") {
        return invalid("it may not start with '-' or end with '.' or '.lock'");
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part.starts_with('.') || part.ends_with(".lock"))
    {
        return invalid("no empty part, and no part starting with '.' or ending with '.lock'");
    }
    if full && !name.starts_with("refs/") {
        return invalid("a full ref name starts with refs/");
    }
    Ok(())
}

/// Checks a path a runner reports: absolute, at most [`MAX_PATH_BYTES`], no NUL.
pub(super) fn check_absolute_path(what: &str, path: &str) -> Result<(), ProtocolError> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES || path.contains('\0') {
        return bad(format!("{what} is 1 to {MAX_PATH_BYTES} bytes without NUL"));
    }
    if !Path::new(path).is_absolute() {
        return bad(format!("{what} {:?} is not an absolute path", shown(path)));
    }
    Ok(())
}

/// Checks a commit id a runner reports: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub(super) fn check_commit(commit: &str) -> Result<(), ProtocolError> {
    let hex = commit
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex && matches!(commit.len(), 40 | 64) {
        Ok(())
    } else {
        bad(format!(
            "commit {:?} is not an object id (40 or 64 lowercase hex digits)",
            shown(commit)
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::runner::{RunnerMessage, ServerMessage, check_server_message, parse_runner_message};
    use crate::{TaskId, Timestamp};

    fn task() -> TaskId {
        TaskId::new_v7(Timestamp::from_millis(1_700_000_000_000))
    }

    fn prepare(task: TaskId) -> Prepare {
        Prepare {
            request: 4,
            task,
            git_path: git_path(task),
            branch: "mainloop/0193a2b4-fix-login".into(),
            snapshot: Some(format!("refs/mainloop/snapshots/{task}")),
        }
    }

    fn save(task: TaskId) -> Save {
        Save {
            request: 5,
            task,
            git_path: git_path(task),
            snapshot_ref: format!("refs/mainloop/snapshots/{task}"),
        }
    }

    #[test]
    fn the_servers_workspace_messages_have_one_shape_each() {
        let t = task();
        let shapes = [
            (
                ServerMessage::Prepare(prepare(t)),
                serde_json::json!({"type": "prepare", "request": 4, "task": t,
                    "git_path": format!("/api/runners/git/{t}"),
                    "branch": "mainloop/0193a2b4-fix-login",
                    "snapshot": format!("refs/mainloop/snapshots/{t}")}),
            ),
            (
                ServerMessage::Save(save(t)),
                serde_json::json!({"type": "save", "request": 5, "task": t,
                    "git_path": format!("/api/runners/git/{t}"),
                    "snapshot_ref": format!("refs/mainloop/snapshots/{t}")}),
            ),
            (
                ServerMessage::Release { task: t },
                serde_json::json!({"type": "release", "task": t}),
            ),
        ];
        for (msg, json) in shapes {
            assert_eq!(serde_json::to_value(&msg).unwrap(), json);
            assert_eq!(serde_json::from_value::<ServerMessage>(json).unwrap(), msg);
            assert!(check_server_message(&msg).is_ok(), "{msg:?}");
        }
        // No snapshot: null or left out.
        let bare = serde_json::json!({"type": "prepare", "request": 1, "task": t,
            "git_path": git_path(t), "branch": "b"});
        let ServerMessage::Prepare(p) = serde_json::from_value(bare).unwrap() else {
            panic!("not a prepare")
        };
        assert_eq!(p.snapshot, None);
    }

    #[test]
    fn a_runners_answers_are_read_whole() {
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        let sha256 = "0123456789abcdef".repeat(4);
        let cases = [
            (
                r#"{"type":"prepared","request":4,"workspace":"/data/tasks/t/work","home":"/data/tasks/t/home"}"#.to_owned(),
                RunnerMessage::Prepared {
                    request: 4,
                    workspace: "/data/tasks/t/work".into(),
                    home: "/data/tasks/t/home".into(),
                },
            ),
            (
                format!(r#"{{"type":"saved","request":5,"commit":"{sha1}","clean":false}}"#),
                RunnerMessage::Saved {
                    request: 5,
                    commit: sha1.into(),
                    clean: false,
                },
            ),
            (
                format!(r#"{{"type":"saved","request":5,"commit":"{sha256}","clean":true}}"#),
                RunnerMessage::Saved {
                    request: 5,
                    commit: sha256,
                    clean: true,
                },
            ),
            (
                r#"{"type":"request_failed","request":6,"reason":"git is not installed"}"#
                    .to_owned(),
                RunnerMessage::RequestFailed {
                    request: 6,
                    reason: "git is not installed".into(),
                },
            ),
        ];
        for (text, msg) in cases {
            assert_eq!(parse_runner_message(&text).unwrap(), msg, "{text}");
        }
    }

    #[test]
    fn every_hostile_answer_is_refused_with_a_reason() {
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        let cases: Vec<(String, &str)> = vec![
            (
                r#"{"type":"prepared","request":1,"workspace":"work","home":"/h"}"#.into(),
                "absolute",
            ),
            (
                r#"{"type":"prepared","request":1,"workspace":"/w","home":""}"#.into(),
                "home",
            ),
            (
                r#"{"type":"prepared","request":1,"workspace":"/w\u0000x","home":"/h"}"#.into(),
                "nul",
            ),
            (
                format!(r#"{{"type":"prepared","request":1,"workspace":"{long}","home":"/h"}}"#),
                "workspace",
            ),
            (
                r#"{"type":"prepared","request":1,"workspace":"/w"}"#.into(),
                "malformed",
            ),
            (
                r#"{"type":"prepared","request":1,"workspace":"/w","home":"/h","token":"x"}"#
                    .into(),
                "malformed",
            ),
            (
                r#"{"type":"saved","request":1,"commit":"not-an-oid","clean":true}"#.into(),
                "object id",
            ),
            (
                format!(
                    r#"{{"type":"saved","request":1,"commit":"{}","clean":true}}"#,
                    "A".repeat(40)
                ),
                "object id",
            ),
            (
                format!(
                    r#"{{"type":"saved","request":1,"commit":"{}","clean":true}}"#,
                    "a".repeat(41)
                ),
                "object id",
            ),
            (
                r#"{"type":"saved","request":1,"commit":"","clean":true}"#.into(),
                "object id",
            ),
            (
                r#"{"type":"saved","request":-1,"commit":"","clean":true}"#.into(),
                "malformed",
            ),
            (
                r#"{"type":"request_failed","request":1,"reason":""}"#.into(),
                "reason",
            ),
            (
                r#"{"type":"request_failed","request":1,"reason":"a\nb"}"#.into(),
                "reason",
            ),
            (
                format!(
                    r#"{{"type":"request_failed","request":1,"reason":"{}"}}"#,
                    "x".repeat(1025)
                ),
                "reason",
            ),
        ];
        for (text, why) in cases {
            let err =
                parse_runner_message(&text).expect_err(&text.chars().take(120).collect::<String>());
            let said = err.to_string();
            assert!(
                said.to_lowercase().contains(why),
                "{said:?} should mention {why:?} for {}",
                text.chars().take(120).collect::<String>()
            );
            assert!(said.len() < 400, "{said}");
        }
    }

    #[test]
    fn a_request_out_of_bounds_is_refused_by_both_sides() {
        let other = TaskId::new_v7(Timestamp::from_millis(1_700_000_000_001));
        type Change = Box<dyn Fn(&mut Prepare)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(move |p| p.git_path = git_path(other)), "git_path"),
            (
                Box::new(|p| p.git_path = format!("https://evil.example{}", git_path(p.task))),
                "git_path",
            ),
            (
                Box::new(|p| p.git_path = format!("{}/../../x", git_path(p.task))),
                "git_path",
            ),
            (Box::new(|p| p.git_path = String::new()), "git_path"),
            (Box::new(|p| p.branch = String::new()), "branch"),
            (Box::new(|p| p.branch = "b".repeat(256)), "255"),
            (Box::new(|p| p.branch = "-upload-pack=x".into()), "branch"),
            (Box::new(|p| p.branch = "a b".into()), "branch"),
            (Box::new(|p| p.branch = "a\u{7}".into()), "branch"),
            (Box::new(|p| p.branch = "main:refs/x".into()), "branch"),
            (Box::new(|p| p.branch = "a/../b".into()), "branch"),
            (Box::new(|p| p.branch = "HEAD@{1}".into()), "branch"),
            (Box::new(|p| p.branch = "a//b".into()), "branch"),
            (Box::new(|p| p.branch = "x.lock".into()), "branch"),
            (Box::new(|p| p.branch = ".hidden".into()), "branch"),
            (
                Box::new(|p| p.snapshot = Some("mainloop/snap".into())),
                "refs/",
            ),
            (
                Box::new(|p| p.snapshot = Some("+refs/x:refs/y".into())),
                "snapshot",
            ),
        ];
        for (change, why) in cases {
            let mut p = prepare(task());
            change(&mut p);
            let said = check_server_message(&ServerMessage::Prepare(p.clone()))
                .expect_err(&format!("{p:?}"))
                .to_string();
            assert!(said.contains(why), "{said:?} for {p:?}");
        }
        let mut s = save(task());
        s.git_path = git_path(other);
        assert!(check_server_message(&ServerMessage::Save(s)).is_err());
        let mut s = save(task());
        s.snapshot_ref = "refs/heads/main lock".into();
        assert!(check_server_message(&ServerMessage::Save(s)).is_err());
        let mut s = save(task());
        s.snapshot_ref = "snapshots/x".into();
        assert!(check_server_message(&ServerMessage::Save(s)).is_err());
        // What git itself names refs with passes.
        for ok in ["main", "mainloop/0193-fix", "feature/a.b_c-d", "v1.2"] {
            assert!(check_ref_name("branch", ok, false).is_ok(), "{ok}");
        }
    }
}

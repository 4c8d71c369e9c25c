//! Task ids as people type them: the full id, a unique start of it, or a unique start of
//! the eight-digit short id the tables show (the id's random tail, also in branch names).

use super::http::{Api, ClientError};
use super::views::{TaskView, read};

/// How many of the newest tasks a short id is looked up among.
const LOOKUP_LIMIT: usize = 1000;

/// Which of `ids` the typed `wanted` names.
///
/// # Errors
/// `NotFound` when none does, `Usage` when several do (naming them).
pub fn pick<'a>(wanted: &str, ids: &[&'a str]) -> Result<&'a str, ClientError> {
    let w: String = wanted.trim().to_ascii_lowercase();
    let bare: String = w.chars().filter(|c| *c != '-').collect();
    if bare.is_empty() || !bare.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ClientError::Usage(format!(
            "'{wanted}' is not a task id (hex digits, as `mainloop tasks` shows them)"
        )));
    }
    let mut matches: Vec<&'a str> = ids
        .iter()
        .copied()
        .filter(|id| {
            let id = id.to_ascii_lowercase();
            let hex: String = id.chars().filter(|c| *c != '-').collect();
            let tail = &hex[hex.len().saturating_sub(8)..];
            id.starts_with(&w) || hex.starts_with(&bare) || tail.starts_with(&bare)
        })
        .collect();
    matches.dedup();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(ClientError::NotFound(format!(
            "no task matches '{wanted}'; list them with `mainloop tasks`"
        ))),
        many => Err(ClientError::Usage(format!(
            "'{wanted}' matches {} tasks ({}); type more of the id",
            many.len(),
            many.iter()
                .take(5)
                .map(|id| super::render::short_id(id))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The full id of the task `wanted` names, asking the server for the user's tasks unless
/// it already is a full id.
///
/// # Errors
/// No such task, an ambiguous prefix, or the request's error.
pub async fn resolve(api: &Api, wanted: &str) -> Result<String, ClientError> {
    let w = wanted.trim();
    if w.len() == 36 && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Ok(w.to_ascii_lowercase());
    }
    let list = api
        .get("/api/tasks", &[("limit", LOOKUP_LIMIT.to_string())])
        .await?;
    let tasks: Vec<TaskView> = list["tasks"]
        .as_array()
        .map(|a| a.iter().map(read).collect())
        .unwrap_or_default();
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    pick(w, &ids).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b";
    const B: &str = "0193a2b4-5c6e-7000-8000-00000000beef";

    #[test]
    fn full_ids_starts_and_short_ids() {
        let ids = [A, B];
        assert_eq!(pick(A, &ids).unwrap(), A);
        assert_eq!(pick("0193a2b4-5c6d", &ids).unwrap(), A);
        assert_eq!(
            pick("0193A2B45C6E", &ids).unwrap(),
            B,
            "dashes and case do not matter"
        );
        assert_eq!(
            pick("3e4f5a6b", &ids).unwrap(),
            A,
            "the short id of the tables"
        );
        assert_eq!(pick("0000be", &ids).unwrap(), B, "a start of the short id");
    }

    #[test]
    fn ambiguous_unknown_and_malformed_are_told_apart() {
        let ids = [A, B];
        let e = pick("0193", &ids).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .contains("matches 2 tasks (3e4f5a6b, 0000beef)"),
            "{e}"
        );
        let e = pick("abcabc", &ids).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("mainloop tasks"), "{e}");
        assert_eq!(pick("", &ids).unwrap_err().exit_code(), 2);
        assert_eq!(pick("not-an-id", &ids).unwrap_err().exit_code(), 2);
    }
}

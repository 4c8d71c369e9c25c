//! `mainloop runner-token add|list|revoke`: the runner tokens a user creates so that
//! `mainloop runner` processes on other machines can connect, the runners as the server
//! last saw them, and revocation (a connected runner stops at once).

use super::Ctx;
use super::http::ClientError;
use super::render::{ago, table};
use clap::Subcommand;
use mainloop_domain::runner::check_runner_name;
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// What to do with runner tokens.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Create a token for a new runner; prints it once, with the command that starts a
    /// runner with it.
    Add {
        /// The runner's name: letters, digits, '-', '_' or '.'.
        name: String,
    },
    /// The runners: state, busy/slots, labels, agents, when last seen.
    List,
    /// Revoke a runner's token: a runner connected with it stops at once.
    Revoke {
        /// The runner's name, or its id (or a unique start of it).
        runner: String,
    },
}

/// Runs one `runner-token` command.
pub async fn run(ctx: &Ctx, action: Action) -> Result<(), ClientError> {
    match action {
        Action::Add { name } => add(ctx, &name).await,
        Action::List => {
            let body = ctx.api.get("/api/runners", &[]).await?;
            ctx.show(&body, || list(&body, OffsetDateTime::now_utc()))
        }
        Action::Revoke { runner } => revoke(ctx, &runner).await,
    }
}

async fn add(ctx: &Ctx, name: &str) -> Result<(), ClientError> {
    check_runner_name(name).map_err(ClientError::Usage)?;
    let body = ctx
        .api
        .post("/api/runners", Some(&json!({"name": name})))
        .await?;
    ctx.show(&body, || created(&body, ctx.api.base()))
}

async fn revoke(ctx: &Ctx, wanted: &str) -> Result<(), ClientError> {
    let body = ctx.api.get("/api/runners", &[]).await?;
    let runners = body["runners"].as_array().cloned().unwrap_or_default();
    let runner = find(&runners, wanted)?;
    let id = runner["id"].as_str().unwrap_or_default();
    let request = ctx
        .api
        .request(Method::DELETE, &format!("/api/runners/{id}"));
    ctx.api.send(request, false).await?;
    let name = plain(runner["name"].as_str().unwrap_or_default());
    let done = json!({"id": id, "name": name, "revoked": true});
    ctx.show(&done, || {
        format!("Revoked the token of runner {name}; a runner connected with it stops now.\n")
    })
}

/// The runner `wanted` names: its exact id, the name of a runner not yet revoked, or a
/// unique start of an id.
fn find<'a>(runners: &'a [Value], wanted: &str) -> Result<&'a Value, ClientError> {
    let wanted = wanted.trim();
    let id = |r: &Value| r["id"].as_str().unwrap_or_default().to_owned();
    let live = |r: &&Value| r["state"].as_str() != Some("revoked");
    if let Some(r) = runners.iter().find(|r| id(r) == wanted) {
        return Ok(r);
    }
    let named = |r: &&Value| r["name"].as_str() == Some(wanted);
    if let Some(r) = runners.iter().filter(live).find(named) {
        return Ok(r);
    }
    if runners.iter().any(|r| named(&r)) {
        return Err(ClientError::Refused(format!(
            "runner '{}' is already revoked",
            plain(wanted)
        )));
    }
    let starts: Vec<&Value> = if wanted.len() >= 4 {
        runners
            .iter()
            .filter(|r| id(r).starts_with(wanted))
            .collect()
    } else {
        Vec::new()
    };
    match starts.as_slice() {
        [one] => Ok(one),
        [] => Err(ClientError::NotFound(format!(
            "no runner '{}'; `mainloop runner-token list` shows them",
            plain(wanted)
        ))),
        _ => Err(ClientError::Usage(format!(
            "'{}' starts several runners' ids; give more of it",
            plain(wanted)
        ))),
    }
}

/// The new token, once, and how to start a runner with it.
fn created(body: &Value, base: &str) -> String {
    let name = plain(body["runner"]["name"].as_str().unwrap_or_default());
    let token = plain(body["token"].as_str().unwrap_or_default());
    format!(
        "Created runner {name}. Its token (shown only now; keep it secret):\n\
         {token}\n\n\
         Start the runner on the machine that will run agents, with the token in the\n\
         environment (never as an argument, which `ps` would show):\n  \
         MAINLOOP_RUNNER_TOKEN={token} mainloop runner --server {base}\n\
         or in a file only you can read:\n  \
         mainloop runner --server {base} --token-file ~/.config/mainloop/runner-token\n"
    )
}

/// One line per runner.
fn list(body: &Value, now: OffsetDateTime) -> String {
    let runners = body["runners"].as_array().cloned().unwrap_or_default();
    if runners.is_empty() {
        return "No runners yet; `mainloop runner-token add NAME` creates one.\n".to_owned();
    }
    let words = |v: &Value| {
        let items: Vec<String> = v
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(plain).collect())
            .unwrap_or_default();
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(",")
        }
    };
    let rows: Vec<Vec<String>> = runners
        .iter()
        .map(|r| {
            let text = |k: &str| plain(r[k].as_str().unwrap_or("-"));
            let load = match (r["busy"].as_u64(), r["slots"].as_u64()) {
                (Some(busy), Some(slots)) => format!("{busy}/{slots}"),
                (None, Some(slots)) => format!("-/{slots}"),
                _ => "-".to_owned(),
            };
            let seen = r["last_seen_at"]
                .as_str()
                .map_or_else(|| "never".to_owned(), |at| ago(at, now));
            vec![
                text("name"),
                text("state"),
                load,
                words(&r["labels"]),
                words(&r["agents"]),
                seen,
                text("id"),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "BUSY/SLOTS",
            "LABELS",
            "AGENTS",
            "LAST SEEN",
            "ID",
        ],
        &rows,
    )
}

/// Text from the server on one line that cannot drive the terminal.
fn plain(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(id: &str, name: &str, state: &str) -> Value {
        json!({"id": id, "name": name, "state": state, "created_at": "2026-12-06T10:00:00Z",
               "last_seen_at": null, "revoked_at": null, "version": null, "slots": null,
               "busy": null, "labels": [], "agents": []})
    }

    #[test]
    fn runners_read_as_a_table() {
        let now = OffsetDateTime::parse(
            "2026-12-06T12:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let mut on = runner("0193-aaaa", "build-box", "connected");
        on["busy"] = json!(0);
        on["slots"] = json!(4);
        on["labels"] = json!(["gpu", "linux-x64"]);
        on["agents"] = json!(["claude", "codex"]);
        on["last_seen_at"] = json!("2026-12-06T11:55:00Z");
        let text = list(
            &json!({"runners": [on, runner("0193-bbbb", "old\u{1b}box", "revoked")]}),
            now,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        for cell in [
            "build-box",
            "connected",
            "0/4",
            "gpu,linux-x64",
            "claude,codex",
            "5 min ago",
        ] {
            assert!(lines[1].contains(cell), "{cell}: {text}");
        }
        assert!(
            lines[2].contains("old box") && lines[2].contains("never"),
            "{text}"
        );
        assert_eq!(
            list(&json!({"runners": []}), now),
            "No runners yet; `mainloop runner-token add NAME` creates one.\n"
        );
    }

    #[test]
    fn a_runner_is_found_by_id_live_name_or_id_start() {
        let all = [
            runner("0193-aaaa", "box", "revoked"),
            runner("0193-bbbb", "box", "offline"),
            runner("0194-cccc", "gone", "revoked"),
        ];
        assert_eq!(
            find(&all, "box").unwrap()["id"],
            "0193-bbbb",
            "the live one"
        );
        assert_eq!(find(&all, "0193-aaaa").unwrap()["id"], "0193-aaaa");
        assert_eq!(find(&all, "0194").unwrap()["id"], "0194-cccc");
        assert_eq!(find(&all, "0193").unwrap_err().exit_code(), 2);
        assert_eq!(find(&all, "gone").unwrap_err().exit_code(), 1);
        assert_eq!(find(&all, "nope").unwrap_err().exit_code(), 3);
        assert_eq!(find(&all, "019").unwrap_err().exit_code(), 3, "too short");
    }

    #[test]
    fn the_new_token_comes_with_the_command_to_use_it() {
        let text = created(
            &json!({"runner": {"name": "build-box"}, "token": "mlr_secret"}),
            "https://m.example.com",
        );
        assert!(text.contains("\nmlr_secret\n"), "{text}");
        assert!(
            text.contains(
                "MAINLOOP_RUNNER_TOKEN=mlr_secret mainloop runner --server https://m.example.com"
            ),
            "{text}"
        );
    }
}

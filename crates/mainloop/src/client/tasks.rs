//! Reading tasks: the list, one task with its transcript (followed live with
//! `--follow`), the inbox; and starting a task without the chat.

use super::http::ClientError;
use super::sse::Events;
use super::views::{EntryView, InboxView, TaskView, is_final, read};
use super::{Ctx, ids, print, print_json, render};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Transcript entries per request (the API's most).
const PAGE: i64 = 1000;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// `mainloop tasks`.
pub async fn list(ctx: &Ctx, states: &[String], limit: Option<u32>) -> Result<(), ClientError> {
    let mut query: Vec<(&str, String)> = states.iter().map(|s| ("state", s.clone())).collect();
    if let Some(n) = limit {
        query.push(("limit", n.to_string()));
    }
    let body = ctx.api.get("/api/tasks", &query).await?;
    ctx.show(&body, || {
        let tasks: Vec<TaskView> = body["tasks"]
            .as_array()
            .map(|a| a.iter().map(read).collect())
            .unwrap_or_default();
        render::tasks(&tasks, now())
    })
}

/// The task `id` names, as the API returns it.
pub async fn fetch(ctx: &Ctx, id: &str) -> Result<Value, ClientError> {
    ctx.api
        .get(&format!("/api/tasks/{id}"), &[])
        .await
        .map_err(|e| match e {
            ClientError::NotFound(_) => {
                ClientError::NotFound(format!("no task {id}; list them with `mainloop tasks`"))
            }
            other => other,
        })
}

/// Every transcript entry after position `after`.
async fn transcript(ctx: &Ctx, id: &str, mut after: i64) -> Result<Vec<Value>, ClientError> {
    let mut all = Vec::new();
    loop {
        let page = ctx
            .api
            .get(
                &format!("/api/tasks/{id}/transcript"),
                &[("after", after.to_string()), ("limit", PAGE.to_string())],
            )
            .await?;
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        let next = page["next_after"].as_i64().unwrap_or(after);
        let done = entries.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) || next <= after;
        all.extend(entries);
        after = next;
        if done {
            return Ok(all);
        }
    }
}

/// `mainloop task ID [--follow]`.
pub async fn show(ctx: &Ctx, wanted: &str, follow: bool) -> Result<(), ClientError> {
    let id = ids::resolve(&ctx.api, wanted).await?;
    // Listening before reading means no entry falls between the two.
    let events = if follow {
        Some(Events::open(&ctx.api).await?)
    } else {
        None
    };
    let task = fetch(ctx, &id).await?;
    let entries = transcript(ctx, &id, 0).await?;
    if ctx.json && !follow {
        return print_json(&json!({"task": task, "transcript": entries}));
    }
    let view: TaskView = read(&task);
    let mut last_seq = 0;
    if ctx.json {
        // Followed, the output is JSON lines: the task, then records and task updates.
        print(&format!("{}\n", json!({"task": task})))?;
    } else {
        print(&render::task(&view, now()))?;
        print(if entries.is_empty() {
            "\nTranscript: nothing yet.\n"
        } else {
            "\nTranscript:\n"
        })?;
    }
    for e in &entries {
        last_seq = last_seq.max(print_entry(ctx, e)?);
    }
    let Some(mut events) = events else {
        return Ok(());
    };
    let mut state = view.state;
    while !is_final(&state) {
        let event = events.next().await?;
        if event.data["task_id"] != id.as_str() && event.data["id"] != id.as_str() {
            continue;
        }
        match event.name.as_str() {
            "task.output" if event.data["seq"].as_i64().unwrap_or(0) > last_seq => {
                last_seq = print_entry(ctx, &event.data)?;
            }
            "task.updated" if event.data["id"] == id.as_str() => {
                let next: TaskView = read(&event.data);
                if next.state != state {
                    if ctx.json {
                        print(&format!("{}\n", json!({"task": event.data})))?;
                    } else {
                        print(&render::state_change(&next, now()))?;
                    }
                    state = next.state;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Prints one transcript record; returns its position.
fn print_entry(ctx: &Ctx, record: &Value) -> Result<i64, ClientError> {
    let e: EntryView = read(record);
    if ctx.json {
        print(&format!("{record}\n"))?;
    } else {
        print(&format!("{}\n", render::entry(&e)))?;
    }
    Ok(e.seq)
}

/// `mainloop inbox`.
pub async fn inbox(ctx: &Ctx) -> Result<(), ClientError> {
    let body = ctx
        .api
        .get("/api/inbox", &[("resolved", "0".into())])
        .await?;
    ctx.show(&body, || {
        let items: Vec<InboxView> = body["items"]
            .as_array()
            .map(|a| a.iter().map(read).collect())
            .unwrap_or_default();
        render::inbox(&items, body["needs_you"].as_i64().unwrap_or(0), now())
    })
}

/// `mainloop new --repo REPO [--skip-plan] [--agent NAME] [--label L]... DESCRIPTION`.
pub async fn create(
    ctx: &Ctx,
    repo: &str,
    skip_plan: bool,
    agent: Option<&str>,
    labels: &[String],
    description: &str,
) -> Result<(), ClientError> {
    let mut body = json!({"description": description, "repo": repo, "skip_plan": skip_plan});
    if let Some(agent) = agent {
        body["agent"] = json!(agent);
    }
    // The server checks them and names a bad one; an older server ignores the field.
    if !labels.is_empty() {
        body["runner_labels"] = json!(labels);
    }
    let task = ctx.api.post("/api/tasks", Some(&body)).await?;
    ctx.show(&task, || {
        let t: TaskView = read(&task);
        format!(
            "Created task {} ({}): {}\nFollow it with `mainloop task {} --follow`.\n",
            render::short_id(&t.id),
            render::state_words(&t.state),
            render::one_line(&t.description, 70),
            render::short_id(&t.id)
        )
    })
}

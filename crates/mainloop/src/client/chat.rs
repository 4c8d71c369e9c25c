//! `mainloop chat`: one message and its reply streamed as it is written, or an
//! interactive session over the same thread, its recent history shown first.

use super::http::ClientError;
use super::sse::Events;
use super::views::{MessageView, read};
use super::{Ctx, print, render};
use serde_json::{Value, json};
use std::io::Write;
use tokio::io::AsyncBufReadExt;

/// Messages of history the interactive session shows first.
const HISTORY: usize = 20;

/// A line on standard error: notes that are not the command's output.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Posts `text`; returns the id of the stored message (the turn's id).
async fn post(ctx: &Ctx, text: &str) -> Result<String, ClientError> {
    let posted = ctx
        .api
        .post("/api/chat", Some(&json!({ "text": text })))
        .await?;
    posted["message_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Server("the server did not say which message it stored".into()))
}

/// Follows turn `turn` to its end: prints each `chat.delta` (in text mode) as it
/// arrives, and returns the stored message that ends the turn.
async fn follow_turn(ctx: &Ctx, events: &mut Events, turn: &str) -> Result<Value, ClientError> {
    let mut streamed = String::new();
    loop {
        let e = events.next().await?;
        if e.data["turn_id"] != turn {
            continue;
        }
        match e.name.as_str() {
            "chat.delta" => {
                let piece = e.data["text"].as_str().unwrap_or_default();
                if !ctx.json {
                    print(piece)?;
                }
                streamed.push_str(piece);
            }
            "chat.message" => {
                let m: MessageView = read(&e.data);
                if m.ends_turn(turn) {
                    if !ctx.json {
                        // Nothing streamed (a turn resumed elsewhere): the stored text.
                        if streamed.is_empty() {
                            print(&m.text)?;
                            streamed.clone_from(&m.text);
                        }
                        if !streamed.ends_with('\n') {
                            print("\n")?;
                        }
                    }
                    return Ok(e.data);
                }
                // A step that called tools: what follows starts on its own line.
                if m.role == "assistant" && !streamed.is_empty() && !streamed.ends_with('\n') {
                    if !ctx.json {
                        print("\n")?;
                    }
                    streamed.push('\n');
                }
            }
            "chat.error" => {
                let message = e.data["message"].as_str().unwrap_or("unknown error");
                if e.data["retrying"] == true {
                    note(&format!(
                        "(the reply failed: {message}; the server tries again)"
                    ));
                } else {
                    return Err(ClientError::Server(format!(
                        "the main thread could not answer: {message}"
                    )));
                }
            }
            _ => {}
        }
    }
}

/// `mainloop chat TEXT`.
pub async fn once(ctx: &Ctx, text: &str) -> Result<(), ClientError> {
    let mut events = Events::open(&ctx.api).await?;
    let turn = post(ctx, text).await?;
    let reply = follow_turn(ctx, &mut events, &turn).await?;
    if ctx.json {
        super::print_json(&reply)?;
    }
    Ok(())
}

/// `mainloop chat`: the recent thread, then a prompt; each line is sent and its reply
/// streamed; end of input (Ctrl-D) ends the session.
pub async fn interactive(ctx: &Ctx) -> Result<(), ClientError> {
    let mut events = Events::open(&ctx.api).await?;
    let page = ctx
        .api
        .get("/api/chat/messages", &[("limit", HISTORY.to_string())])
        .await?;
    let history: Vec<MessageView> = page["messages"]
        .as_array()
        .map(|a| a.iter().map(read).collect())
        .unwrap_or_default();
    if !ctx.json {
        for line in history.iter().filter_map(render::message) {
            print(&format!("{line}\n"))?;
        }
        note("Type a message and press Enter; Ctrl-D ends the session.");
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        if !ctx.json {
            print("> ")?;
        }
        let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| ClientError::local("reading standard input", e))?
        else {
            if !ctx.json {
                print("\n")?;
            }
            return Ok(());
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let turn = post(ctx, text).await?;
        if !ctx.json {
            print("mainloop: ")?;
        }
        let reply = follow_turn(ctx, &mut events, &turn).await?;
        if ctx.json {
            print(&format!("{reply}\n"))?;
        }
    }
}

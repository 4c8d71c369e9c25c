//! The mainloop HTTP API as a client that rides out crashes: reads wait until the server
//! answers again; writes report "unreachable" so the caller can find out whether the
//! server stored them before it died (and never blindly send a write twice).

use anyhow::{Result, bail};
use serde_json::Value;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// The answer to a write.
#[derive(Debug)]
pub enum Sent {
    Answered(u16, Value),
    /// The connection failed (refused, reset, timed out): the write may or may not have
    /// been stored.
    Unreachable,
}

/// How long a read waits for the server to come back.
const DOWN_FOR: Duration = Duration::from_secs(120);

impl Api {
    pub fn new(http: reqwest::Client, base: String, token: String) -> Self {
        Self { http, base, token }
    }

    /// GET, retried while the server is down (connection refused → try again).
    pub async fn get(&self, path: &str) -> Result<Value> {
        let started = Instant::now();
        loop {
            let r = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(v) => return Ok(v),
                    // Cut off mid-body by a kill.
                    Err(_) if started.elapsed() < DOWN_FOR => {}
                    Err(e) => return Err(e.into()),
                },
                Ok(r) if r.status().is_server_error() && started.elapsed() < DOWN_FOR => {}
                Ok(r) => bail!("GET {path}: {}", r.status()),
                Err(_) if started.elapsed() < DOWN_FOR => {}
                Err(e) => bail!("GET {path}: the server stayed unreachable: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POST once.
    pub async fn post(&self, path: &str, body: &Value) -> Sent {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await;
        match r {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(b) => Sent::Answered(status, serde_json::from_slice(&b).unwrap_or_default()),
                    Err(_) => Sent::Unreachable,
                }
            }
            Err(_) => Sent::Unreachable,
        }
    }

    pub async fn task(&self, id: &str) -> Result<Value> {
        self.get(&format!("/api/tasks/{id}")).await
    }

    pub async fn tasks(&self) -> Result<Vec<Value>> {
        Ok(self.get("/api/tasks?limit=1000").await?["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The whole main thread, oldest first, tool results included.
    pub async fn messages(&self) -> Result<Vec<Value>> {
        let mut all: Vec<Value> = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let mut path = "/api/chat/messages?limit=500&include_tool_results=true".to_owned();
            if let Some(b) = &before {
                path.push_str(&format!("&before={b}"));
            }
            let page = self.get(&path).await?;
            let msgs = page["messages"].as_array().cloned().unwrap_or_default();
            let more = page["has_more"].as_bool().unwrap_or(false);
            before = msgs
                .first()
                .and_then(|m| m["id"].as_str())
                .map(str::to_owned);
            let mut older = msgs;
            older.append(&mut all);
            all = older;
            if !more || before.is_none() {
                return Ok(all);
            }
        }
    }
}

//! A live client on `/api/events`, as the web app is: it reconnects after every crash
//! with `Last-Event-ID` and records the id of every event it is sent, so the run can
//! check that a resuming client gets each event exactly once, in order.

use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The ids received, in arrival order, and how many connections it took.
#[derive(Debug, Default)]
pub struct Seen {
    pub ids: Vec<i64>,
    pub connections: u32,
}

/// A running follower.
#[derive(Debug)]
pub struct Follower {
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    pub fn start(http: reqwest::Client, base: String, token: String) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(http, base, token, Arc::clone(&seen), stop.clone()));
        Self { seen, stop, task }
    }

    /// Stops following and returns what was seen.
    pub async fn finish(self) -> Seen {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.seen
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

async fn follow(
    http: reqwest::Client,
    base: String,
    token: String,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
) {
    let mut last = 0_i64;
    while !stop.is_cancelled() {
        let r = http
            .get(format!("{base}/api/events"))
            .bearer_auth(&token)
            .header("last-event-id", last.to_string())
            .send()
            .await;
        let Ok(r) = r.and_then(reqwest::Response::error_for_status) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if let Ok(mut s) = seen.lock() {
            s.connections += 1;
        }
        let mut body = r.bytes_stream();
        let mut buf = String::new();
        loop {
            let chunk = tokio::select! {
                c = body.next() => c,
                () = stop.cancelled() => return,
            };
            let Some(Ok(chunk)) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            // One event per blank-line-terminated block; only its `id:` matters here.
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let id = block
                    .lines()
                    .find_map(|l| l.strip_prefix("id:"))
                    .and_then(|v| v.trim().parse::<i64>().ok());
                if let Some(id) = id {
                    last = id;
                    if let Ok(mut s) = seen.lock() {
                        s.ids.push(id);
                    }
                }
            }
        }
    }
}

//! The bench's clients while the agents stream: an API prober (every `probe_ms`,
//! alternately `GET /api/tasks` and `GET /api/inbox`) and one SSE client on
//! `/api/events` counting the agents' `task.output` events.

use super::procfs::wall_ms;
use super::transcripts::AGENT_KINDS;
use crate::sse;
use mainloop_domain::Timestamp;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug)]
pub(super) struct Probe {
    pub tasks: bool,
    pub at_ms: f64,
    pub took: Duration,
    pub ok: bool,
    pub bytes: usize,
}

pub(super) async fn probe(
    http: reqwest::Client,
    base: String,
    token: String,
    every: Duration,
    epoch: Instant,
    stop: CancellationToken,
) -> Vec<Probe> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let url = if tasks {
            format!("{base}/api/tasks")
        } else {
            format!("{base}/api/inbox")
        };
        let at = epoch.elapsed();
        let started = Instant::now();
        let res = async {
            let resp = http
                .get(&url)
                .bearer_auth(&token)
                .timeout(Duration::from_secs(10))
                .send()
                .await?;
            let ok = resp.status().is_success();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((ok, body.len()))
        }
        .await;
        let took = started.elapsed();
        let (ok, bytes) = res.unwrap_or((false, 0));
        out.push(Probe {
            tasks,
            at_ms: at.as_secs_f64() * 1000.0,
            took,
            ok,
            bytes,
        });
        tasks = !tasks;
    }
    out
}

#[derive(Debug, Default)]
pub(super) struct SseReport {
    /// `task.output` events of the agent kinds.
    pub agent_events: u64,
    /// All `task.output` events.
    pub outputs: u64,
    /// Receipt − the event's `created_at`, ms (wall clock, ms resolution).
    pub lags_ms: Vec<i64>,
    pub caught_up: bool,
    pub error: Option<String>,
}

pub(super) async fn count_sse(
    mut reader: sse::SseReader,
    mut expected: watch::Receiver<Option<u64>>,
) -> SseReport {
    let mut r = SseReport::default();
    loop {
        if expected.borrow().is_some_and(|n| r.agent_events >= n) {
            r.caught_up = true;
            return r;
        }
        tokio::select! {
            changed = expected.changed() => {
                if changed.is_err() {
                    return r;
                }
            }
            ev = reader.next() => match ev {
                Ok(Some(ev)) if ev.event == "task.output" => {
                    r.outputs += 1;
                    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else { continue };
                    let kind = v["kind"].as_str().unwrap_or_default();
                    if AGENT_KINDS.contains(&kind) {
                        r.agent_events += 1;
                        if let Some(at) = v["created_at"]
                            .as_str()
                            .and_then(|s| Timestamp::parse_rfc3339(s).ok())
                        {
                            r.lags_ms.push(wall_ms() - at.as_millis());
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    r.error = Some("the server closed the event stream".into());
                    return r;
                }
                Err(e) => {
                    r.error = Some(format!("{e:#}"));
                    return r;
                }
            }
        }
    }
}

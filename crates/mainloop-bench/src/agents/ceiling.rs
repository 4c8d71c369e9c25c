//! The store's write ceiling: what the agents' write path can do without agents, from
//! concurrent writers, one event per transaction, relaxed, and batched.

use super::procfs::proc_stat;
use crate::harness::Server;
use crate::stats::{Summary, round3};
use anyhow::Result;
use mainloop_domain::event::EventName;
use mainloop_domain::transcript::{TranscriptEntry, TranscriptRecord};
use mainloop_domain::{TaskId, UserId};
use mainloop_engine::{CreateTask, Engine, EngineConfig};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum WriteMode {
    /// `Engine::record_transcript` with one entry, as the worker runtime records a
    /// lone agent event.
    Engine,
    /// The same transaction through `Store::begin_relaxed` (no flush at commit).
    Relaxed,
    /// `n` events (transcript row + event each) per `Store::begin` transaction.
    Batched(usize),
}

impl WriteMode {
    fn name(self) -> String {
        match self {
            Self::Engine => "record_transcript (1 event per tx, synchronous=FULL)".to_owned(),
            Self::Relaxed => "the same tx via begin_relaxed (synchronous=NORMAL)".to_owned(),
            Self::Batched(n) => format!("{n} events per tx (synchronous=FULL)"),
        }
    }
}

/// One write of `mode`; returns the events written.
async fn write_once(
    engine: &Engine,
    user: UserId,
    task: TaskId,
    mode: WriteMode,
    step: u64,
) -> Result<u64> {
    let entry = TranscriptEntry::text_entry(format!("Working on step {step}."));
    let (mut tx, n) = match mode {
        WriteMode::Engine => {
            engine
                .record_transcript(user, task, std::slice::from_ref(&entry))
                .await?;
            return Ok(1);
        }
        WriteMode::Relaxed => (engine.store_for_tests().begin_relaxed().await?, 1),
        WriteMode::Batched(n) => (engine.store_for_tests().begin().await?, n),
    };
    let payload = entry.payload();
    for _ in 0..n {
        let at = mainloop_engine::now();
        let seq = tx
            .append_transcript(task, entry.kind(), &payload, at)
            .await?;
        // The event as the engine streams it: the stored record.
        let record = TranscriptRecord {
            task_id: task,
            seq,
            entry: entry.clone(),
            created_at: at,
        };
        tx.append_event(
            user,
            EventName::TaskOutput,
            &serde_json::to_value(&record)?,
            at,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(n as u64)
}

#[allow(clippy::cast_precision_loss)]
pub(super) async fn write_ceiling(
    writers: usize,
    duration: Duration,
    tick_hz: f64,
) -> Result<Value> {
    let server = Server::start(None, EngineConfig::default()).await?;
    // Tasks to write to; without a worker runtime they stay queued.
    let mut tasks = Vec::with_capacity(writers);
    for i in 0..writers {
        let t = server
            .engine()
            .create_task(
                server.user(),
                &CreateTask {
                    description: format!("ceiling {i}"),
                    repo: "/nonexistent".into(),
                    skip_plan: true,
                    model: None,
                    agent: None,
                    budget_usd: None,
                },
            )
            .await?;
        tasks.push(t.id);
    }
    let mut rows = Vec::new();
    for mode in [
        WriteMode::Engine,
        WriteMode::Relaxed,
        WriteMode::Batched(10),
    ] {
        let started = Instant::now();
        let cpu0 = proc_stat(Path::new("/proc/self/stat")).unwrap_or_default();
        let mut handles = Vec::with_capacity(writers);
        for task in &tasks {
            let engine = server.engine().clone();
            let (user, task) = (server.user(), *task);
            handles.push(tokio::spawn(async move {
                let mut calls = Vec::new();
                let mut written = 0_u64;
                let mut error = None;
                while started.elapsed() < duration {
                    let t = Instant::now();
                    match write_once(&engine, user, task, mode, written).await {
                        Ok(k) => written += k,
                        Err(e) => {
                            error = Some(format!("{e:#}"));
                            break;
                        }
                    }
                    calls.push(t.elapsed());
                }
                (written, calls, error)
            }));
        }
        let (mut written, mut calls, mut errors) = (0, Vec::new(), Vec::new());
        for h in handles {
            let (w, mut c, e) = h.await?;
            written += w;
            calls.append(&mut c);
            errors.extend(e);
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu1 = proc_stat(Path::new("/proc/self/stat")).unwrap_or_default();
        let cpu = ((cpu1.utime + cpu1.stime) - (cpu0.utime + cpu0.stime)) as f64 / tick_hz;
        let calls = Summary::of(calls);
        rows.push(json!({
            "variant": mode.name(),
            "writers": writers,
            "events": written,
            "events_per_s": round3(written as f64 / wall),
            "cpu_pct_core": round3(cpu / wall * 100.0),
            "call_ms": calls.json(),
            "call_line": calls.line(),
            "errors": errors.len(),
            "first_error": errors.first(),
        }));
    }
    server.stop().await;
    Ok(Value::Array(rows))
}

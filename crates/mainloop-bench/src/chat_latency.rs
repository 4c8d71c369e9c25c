//! Chat latency through the real HTTP API: `POST /api/chat` → first `chat.delta` of the
//! turn on `/api/events` → the turn's stored assistant `chat.message`. The model is the
//! scripted fake, replying at once; its own round trip is measured separately so the
//! server's overhead can be told apart.

use crate::harness::{Server, client};
use crate::sse::{self, SseEvent};
use crate::stats::{Summary, round3};
use anyhow::{Context, Result, bail};
use futures::StreamExt;
use futures::stream::BoxStream;
use mainloop_domain::chat::{ContentBlock, ModelMessage, ModelRole};
use mainloop_engine::EngineConfig;
use mainloop_fake_anthropic::{FakeAnthropic, Script};
use mainloop_model::{ModelError, ModelProvider, ModelRequest, StreamEvent};
use mainloop_test_support::try_model_provider;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured chat messages (after warm-up).
    #[arg(long, default_value_t = 200)]
    pub n: usize,
    /// Unmeasured chat messages first.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Bare round trips to the fake model, for the baseline.
    #[arg(long, default_value_t = 100)]
    pub baseline: usize,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            n: 200,
            warmup: 10,
            baseline: 100,
        }
    }
}

/// A short answer, no delay: two text deltas (the fake streams text in two chunks).
const SCRIPT: &str = r#"
rules:
  - name: answer
    reply: [{text: "Sure - here is a short answer."}]
"#;

const TURN_TIMEOUT: Duration = Duration::from_secs(15);

/// One model call as the engine made it.
#[derive(Clone, Copy, Debug)]
struct Call {
    started: Instant,
    first_delta: Option<Instant>,
}

/// Wraps the real provider to record when the engine calls the model and when the
/// first text arrives, so a turn's latency splits into engine work before the call,
/// the model round trip, and delivery of the delta.
#[derive(Debug)]
struct TimedProvider {
    inner: Arc<dyn ModelProvider>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl ModelProvider for TimedProvider {
    fn model(&self) -> &str {
        self.inner.model()
    }

    fn stream(&self, request: ModelRequest) -> BoxStream<'static, Result<StreamEvent, ModelError>> {
        let started = Instant::now();
        let calls = Arc::clone(&self.calls);
        let index = {
            let mut log = calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            log.push(Call {
                started,
                first_delta: None,
            });
            log.len() - 1
        };
        self.inner
            .stream(request)
            .inspect(move |item| {
                if matches!(item, Ok(StreamEvent::TextDelta(_))) {
                    let mut log = calls
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Some(call) = log.get_mut(index) {
                        call.first_delta.get_or_insert_with(Instant::now);
                    }
                }
            })
            .boxed()
    }
}

/// The event's payload: the `data` JSON itself, or its `payload` field when the API
/// sends whole event records.
fn payload(data: &Value) -> &Value {
    match data.get("payload") {
        Some(p) if data.get("name").is_some() || data.get("id").is_some() => p,
        _ => data,
    }
}

fn event_name<'a>(ev: &'a SseEvent, data: &'a Value) -> &'a str {
    if ev.event.is_empty() {
        data.get("name").and_then(Value::as_str).unwrap_or_default()
    } else {
        &ev.event
    }
}

/// Bare round trips to the fake: raw HTTP (time to the first text delta bytes, and to
/// the end of the stream) and through our Anthropic client (first `TextDelta`, `Done`).
async fn baseline(
    fake: &FakeAnthropic,
    model: &Arc<dyn ModelProvider>,
    n: usize,
) -> Result<(Summary, Summary, Summary, Summary)> {
    let http = client()?;
    let url = format!("{}/v1/messages", fake.base_url());
    let body = json!({
        "model": "claude-bench",
        "max_tokens": 256,
        "stream": true,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let (mut raw_first, mut raw_total) = (Vec::new(), Vec::new());
    for i in 0..n + 5 {
        let t0 = Instant::now();
        let resp = http
            .post(&url)
            .header("x-api-key", "sk-bench")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("the fake answered {}", resp.status());
        }
        let mut stream = resp.bytes_stream();
        let mut seen = String::new();
        let mut first = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if first.is_none() {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains("text_delta") {
                    first = Some(t0.elapsed());
                }
            }
        }
        if i >= 5 {
            raw_first.push(first.context("the fake streamed no text delta")?);
            raw_total.push(t0.elapsed());
        }
    }
    let (mut client_first, mut client_total) = (Vec::new(), Vec::new());
    for i in 0..n + 5 {
        let request = ModelRequest {
            system: "You are a benchmark.".into(),
            messages: vec![ModelMessage {
                role: ModelRole::User,
                content: vec![ContentBlock::text("hello")],
            }],
            tools: Vec::new(),
            max_tokens: 256,
        };
        let t0 = Instant::now();
        let mut stream = model.stream(request);
        let mut first = None;
        let mut done = None;
        while let Some(item) = stream.next().await {
            match item? {
                StreamEvent::TextDelta(_) => {
                    if first.is_none() {
                        first = Some(t0.elapsed());
                    }
                }
                StreamEvent::Done(_) => done = Some(t0.elapsed()),
            }
        }
        if i >= 5 {
            client_first.push(first.context("no TextDelta")?);
            client_total.push(done.context("no Done")?);
        }
    }
    Ok((
        Summary::of(raw_first),
        Summary::of(raw_total),
        Summary::of(client_first),
        Summary::of(client_total),
    ))
}

struct Turn {
    post: Duration,
    first_delta: Duration,
    reply: Duration,
    deltas: usize,
    /// POST sent → the engine calls the model.
    before_model: Duration,
    /// The model call → its first text delta, inside the engine.
    model_first: Duration,
    /// The model's first delta → the `chat.delta` event reaching the SSE client.
    delivery: Duration,
}

async fn one_turn(
    http: &reqwest::Client,
    server: &Server,
    calls: &Mutex<Vec<Call>>,
    events: &mut mpsc::UnboundedReceiver<(SseEvent, Instant)>,
    text: &str,
) -> Result<Turn> {
    // Anything still queued belongs to earlier turns.
    while events.try_recv().is_ok() {}
    let t0 = Instant::now();
    let resp = http
        .post(format!("{}/api/chat", server.base))
        .bearer_auth(server.token())
        .json(&json!({ "text": text }))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .context("reading the POST /api/chat reply")?;
    let post = t0.elapsed();
    if status.as_u16() != 202 {
        bail!("POST /api/chat answered {status}: {body}");
    }
    let message_id = body
        .get("message_id")
        .and_then(Value::as_str)
        .context("no message_id in the POST /api/chat reply")?
        .to_owned();
    let mut first_delta = None;
    let mut deltas = 0;
    let deadline = tokio::time::Instant::now() + TURN_TIMEOUT;
    loop {
        let Ok(received) = tokio::time::timeout_at(deadline, events.recv()).await else {
            bail!("no assistant reply for {message_id} within {TURN_TIMEOUT:?}");
        };
        let (ev, at) = received.context("the event stream ended")?;
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            continue;
        };
        let p = payload(&data);
        if p.get("turn_id").and_then(Value::as_str) != Some(message_id.as_str()) {
            continue;
        }
        match event_name(&ev, &data) {
            "chat.delta" => {
                deltas += 1;
                if first_delta.is_none() {
                    first_delta = Some(at.duration_since(t0));
                }
            }
            "chat.message" if p.get("role").and_then(Value::as_str) == Some("assistant") => {
                let reply = at.duration_since(t0);
                let first_delta = first_delta.with_context(|| {
                    format!("the reply to {message_id} arrived before any chat.delta")
                })?;
                let call = calls
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .rev()
                    .find(|c| c.started >= t0 && c.first_delta.is_some())
                    .copied()
                    .context("the engine made no model call for this turn")?;
                let model_at = call.first_delta.unwrap_or(call.started);
                return Ok(Turn {
                    post,
                    first_delta,
                    reply,
                    deltas,
                    before_model: call.started.duration_since(t0),
                    model_first: model_at.duration_since(call.started),
                    delivery: (t0 + first_delta).saturating_duration_since(model_at),
                });
            }
            "chat.error" => bail!("chat.error for {message_id}: {}", ev.data),
            _ => {}
        }
    }
}

pub async fn run(args: &Args) -> Result<()> {
    println!(
        "== chat-latency: {} sequential chat messages through the API (SQLite, fake model)",
        args.n
    );
    let fake = FakeAnthropic::start(Script::from_yaml(SCRIPT)?).await?;
    let model = try_model_provider(&fake)?;
    let (raw_first, raw_total, client_first, client_total) =
        baseline(&fake, &model, args.baseline).await?;
    fake.reset();

    let calls = Arc::new(Mutex::new(Vec::new()));
    let timed: Arc<dyn ModelProvider> = Arc::new(TimedProvider {
        inner: Arc::clone(&model),
        calls: Arc::clone(&calls),
    });
    let server = Server::start(Some(timed), EngineConfig::default()).await?;
    let http = client()?;
    let mut reader = sse::connect(&http, &server.base, server.token(), None).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        while let Ok(Some(ev)) = reader.next().await {
            if tx.send((ev, Instant::now())).is_err() {
                return;
            }
        }
    });

    for i in 0..args.warmup {
        one_turn(
            &http,
            &server,
            &calls,
            &mut rx,
            &format!("warm-up message {i}"),
        )
        .await?;
    }
    let started = Instant::now();
    let (mut post, mut first, mut reply) = (Vec::new(), Vec::new(), Vec::new());
    let (mut before_model, mut model_first, mut delivery) = (Vec::new(), Vec::new(), Vec::new());
    let mut overhead = Vec::new();
    let mut deltas = 0;
    for i in 0..args.n {
        let turn = one_turn(
            &http,
            &server,
            &calls,
            &mut rx,
            &format!("question {i}: what is the status?"),
        )
        .await?;
        post.push(turn.post);
        first.push(turn.first_delta);
        reply.push(turn.reply);
        before_model.push(turn.before_model);
        model_first.push(turn.model_first);
        delivery.push(turn.delivery);
        overhead.push(turn.first_delta.saturating_sub(turn.model_first));
        deltas += turn.deltas;
    }
    let elapsed = started.elapsed();
    pump.abort();
    drop(rx);
    let model_requests = fake.message_requests().len();
    server.stop().await;

    // Does latency grow with the thread? Compare the first and last quarter of turns.
    let quarter = (args.n / 4).max(1);
    let early = Summary::of(first[..quarter.min(first.len())].to_vec());
    let late = Summary::of(first[first.len().saturating_sub(quarter)..].to_vec());
    let early_before = Summary::of(before_model[..quarter.min(before_model.len())].to_vec());
    let late_before =
        Summary::of(before_model[before_model.len().saturating_sub(quarter)..].to_vec());
    let post = Summary::of(post);
    let first = Summary::of(first);
    let reply = Summary::of(reply);
    let before_model = Summary::of(before_model);
    let model_first = Summary::of(model_first);
    let delivery = Summary::of(delivery);
    // Per turn: first-delta latency minus what the engine itself waited for the model.
    let overhead = Summary::of(overhead);
    println!(
        "  fake model bare round trip (raw HTTP):     first delta {}",
        raw_first.line()
    );
    println!(
        "                                              whole stream {}",
        raw_total.line()
    );
    println!(
        "  fake model via our Anthropic client:       first delta {}",
        client_first.line()
    );
    println!(
        "                                              done        {}",
        client_total.line()
    );
    println!(
        "  POST /api/chat → 202:                      {}",
        post.line()
    );
    println!(
        "  POST → first chat.delta on SSE:            {}",
        first.line()
    );
    println!(
        "  POST → assistant chat.message on SSE:      {}",
        reply.line()
    );
    println!(
        "    of which POST → engine calls the model: {}",
        before_model.line()
    );
    println!(
        "             model call → first delta:     {}",
        model_first.line()
    );
    println!(
        "             model delta → SSE client:     {}",
        delivery.line()
    );
    println!(
        "    POST → model call, first {quarter} turns: p50 {:.2} ms; last {quarter} turns: p50 {:.2} ms",
        early_before.p50, late_before.p50
    );
    println!(
        "    first delta, first {quarter} turns: p50 {:.2} ms; last {quarter} turns: p50 {:.2} ms (thread of {} messages at the end)",
        early.p50,
        late.p50,
        2 * (args.n + args.warmup)
    );
    println!(
        "  server overhead to first delta (latency minus the model's own time): {} — target p50 < 5 ms: {}",
        overhead.line(),
        if overhead.p50 < 5.0 { "met" } else { "MISSED" }
    );
    #[allow(clippy::cast_precision_loss)]
    let per_s = args.n as f64 / elapsed.as_secs_f64();
    println!(
        "  {} turns in {:.1} s ({per_s:.0} turns/s sequential), {deltas} deltas, {model_requests} model requests",
        args.n,
        elapsed.as_secs_f64()
    );
    println!(
        "{}",
        json!({
            "bench": "chat-latency",
            "n": args.n,
            "post_ms": post.json(),
            "first_delta_ms": first.json(),
            "reply_ms": reply.json(),
            "before_model_call_ms": before_model.json(),
            "model_first_delta_in_engine_ms": model_first.json(),
            "delta_delivery_ms": delivery.json(),
            "fake_raw_first_delta_ms": raw_first.json(),
            "fake_raw_total_ms": raw_total.json(),
            "fake_client_first_delta_ms": client_first.json(),
            "fake_client_done_ms": client_total.json(),
            "overhead_first_delta_ms": overhead.json(),
            "turns_per_s": round3(per_s),
            "first_delta_first_quarter_p50_ms": round3(early.p50),
            "first_delta_last_quarter_p50_ms": round3(late.p50),
        })
    );
    Ok(())
}

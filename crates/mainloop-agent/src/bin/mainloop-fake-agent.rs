//! A stand-in for the `claude` CLI for load tests: it speaks the same stream-json
//! protocol but has no model behind it. It reads the `initialize` request and one user
//! message on stdin, then writes `system/init`, `--events N` assistant text / tool_use /
//! tool_result lines at `--rate R` per second (0 = as fast as possible), and a `result`
//! line, and exits 0. Like a real agent it leaves work behind: it writes
//! `fake-agent.txt` (the session and the events) in its working directory, so the task
//! has a change to review. The claude flags `ClaudeCode` passes are accepted and ignored,
//! except `--session-id` / `--resume` (reported back as the session id) and `--model`.
//!
//! Usage: `mainloop-fake-agent [--events N] [--rate R] [claude flags…]`

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Options {
    events: u64,
    rate: f64,
    session_id: String,
    model: String,
}

/// claude flags that take a value, so that the value is not mistaken for a flag.
const VALUE_FLAGS: &[&str] = &[
    "--input-format",
    "--output-format",
    "--permission-prompt-tool",
    "--permission-mode",
    "--append-system-prompt",
    "--system-prompt",
    "--allowedTools",
    "--disallowedTools",
    "--max-turns",
    "--add-dir",
    "--mcp-config",
    "--settings",
];

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        events: 10,
        rate: 100.0,
        session_id: uuid::Uuid::new_v4().to_string(),
        model: "fake-agent".to_owned(),
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--events" => {
                options.events = value("--events")?
                    .parse()
                    .map_err(|e| format!("--events: {e}"))?;
            }
            "--rate" => {
                options.rate = value("--rate")?
                    .parse()
                    .map_err(|e| format!("--rate: {e}"))?;
            }
            "--session-id" | "--resume" => options.session_id = value(&arg)?,
            "--model" => options.model = value("--model")?,
            flag if VALUE_FLAGS.contains(&flag) => {
                value(flag)?;
            }
            _ => {}
        }
    }
    Ok(options)
}

fn emit(out: &mut impl Write, line: &Value) -> io::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()
}

/// The `i`-th progress line: a cycle of text, tool call and its result, like a real turn.
fn progress_line(i: u64, session_id: &str) -> Value {
    let tool_id = format!("toolu_fake_agent_{}", i / 3);
    match i % 3 {
        0 => json!({"type": "assistant", "session_id": session_id, "parent_tool_use_id": null,
                    "message": {"id": format!("msg_fake_agent_{i}"), "role": "assistant",
                                "content": [{"type": "text", "text": format!("Working on step {i}.")}]}}),
        1 => json!({"type": "assistant", "session_id": session_id, "parent_tool_use_id": null,
                    "message": {"id": format!("msg_fake_agent_{i}"), "role": "assistant",
                                "content": [{"type": "tool_use", "id": tool_id, "name": "Bash",
                                             "input": {"command": format!("echo step {i}")}}]}}),
        _ => json!({"type": "user", "session_id": session_id, "parent_tool_use_id": null,
                    "message": {"role": "user", "content": [{"type": "tool_result",
                                "tool_use_id": tool_id, "content": format!("step {}", i - 1),
                                "is_error": false}]}}),
    }
}

fn run(options: &Options) -> io::Result<()> {
    let stdin = io::stdin();
    let mut out = io::stdout().lock();
    let mut prompt = None;
    for line in stdin.lock().lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match msg["type"].as_str() {
            Some("control_request") => emit(
                &mut out,
                &json!({"type": "control_response", "response": {"subtype": "success",
                        "request_id": msg["request_id"], "response": {}}}),
            )?,
            Some("user") => {
                prompt = Some(msg);
                break;
            }
            _ => {}
        }
    }
    if prompt.is_none() {
        // stdin closed before any prompt: like the CLI, nothing to do.
        return Ok(());
    }
    let sid = options.session_id.as_str();
    emit(
        &mut out,
        &json!({"type": "system", "subtype": "init", "session_id": sid, "model": options.model,
                "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
                "tools": ["Bash"], "permissionMode": "default"}),
    )?;
    let started = Instant::now();
    let interval = (options.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / options.rate));
    for i in 0..options.events {
        if let Some(interval) = interval {
            // Paced against the start, so slow writes do not lower the rate.
            let due = interval.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        emit(&mut out, &progress_line(i, sid))?;
    }
    // The turn's work: a change in the worktree (a run that changes nothing fails).
    std::fs::write(
        "fake-agent.txt",
        format!("session {sid}: {} events\n", options.events),
    )?;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    emit(
        &mut out,
        &json!({"type": "result", "subtype": "success", "is_error": false,
                "result": format!("Fake agent finished {} events.", options.events),
                "duration_ms": elapsed_ms, "num_turns": 1, "session_id": sid,
                "total_cost_usd": 0.001,
                "usage": {"input_tokens": 100, "output_tokens": options.events * 10}}),
    )
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(io::stderr(), "mainloop-fake-agent: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        // The host closed our stdout: it no longer listens, which is not our failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "mainloop-fake-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

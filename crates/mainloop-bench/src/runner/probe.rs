//! The probe agent: `mainloop-bench probe-agent …`, a stand-in for the `claude` CLI like
//! `mainloop-fake-agent`, but one that says when it wrote each line. The runner benches
//! run it locally and on a runner (where it is the runner's `claude`, a link to this
//! executable), so that where a line was written and where it was stored are compared
//! on one clock (the machine's wall clock, in µs).
//!
//! After the prompt it writes `--events N` lines at `--rate R` a second (text, a `Bash`
//! call, its result, in turn), each carrying `[probe I T]` (its number and the time just
//! before the write); then asks `--questions Q` questions one after another through
//! `AskUserQuestion`'s control request, each followed, once the answer is on its stdin,
//! by a text line `[answer K ASKED GOT]` (when it asked, when it read the answer); then
//! leaves a file behind (the task's work) and writes its `result`.

use serde_json::{Value, json};
use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The subcommand that runs the probe agent (not listed in `--help`).
pub const SUBCOMMAND: &str = "probe-agent";

#[derive(Debug)]
struct Options {
    events: u64,
    rate: f64,
    questions: u64,
    session_id: String,
}

/// The machine's wall clock in µs: both processes read the same one.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The claude flags `ClaudeCode` passes are skipped, but for the session id, which the
/// run records and expects back.
fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        events: 0,
        rate: 100.0,
        questions: 0,
        session_id: "probe-session".to_owned(),
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--events" => {
                options.events = value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?;
            }
            "--rate" => options.rate = value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?,
            "--questions" => {
                options.questions = value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?;
            }
            "--session-id" | "--resume" => options.session_id = value(&arg)?,
            _ => {}
        }
    }
    Ok(options)
}

fn emit(out: &mut impl Write, line: &Value) -> io::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()
}

/// Line `i` of the stream, written at `at` µs.
fn event_line(i: u64, at: i64, sid: &str) -> Value {
    let mark = format!("[probe {i} {at}]");
    let tool_id = format!("toolu_probe_{}", i / 3);
    match i % 3 {
        0 => json!({"type": "assistant", "session_id": sid, "parent_tool_use_id": null,
                    "message": {"id": format!("msg_probe_{i}"), "role": "assistant",
                                "content": [{"type": "text", "text": format!("Working on step {i} {mark}")}]}}),
        1 => json!({"type": "assistant", "session_id": sid, "parent_tool_use_id": null,
                    "message": {"id": format!("msg_probe_{i}"), "role": "assistant",
                                "content": [{"type": "tool_use", "id": tool_id, "name": "Bash",
                                             "input": {"command": format!("echo {mark}")}}]}}),
        _ => json!({"type": "user", "session_id": sid, "parent_tool_use_id": null,
                    "message": {"role": "user", "content": [{"type": "tool_result",
                                "tool_use_id": tool_id, "content": format!("step {i} {mark}"),
                                "is_error": false}]}}),
    }
}

fn text_line(text: &str, sid: &str, id: &str) -> Value {
    json!({"type": "assistant", "session_id": sid, "parent_tool_use_id": null,
           "message": {"id": id, "role": "assistant",
                       "content": [{"type": "text", "text": text}]}})
}

/// `AskUserQuestion` as Claude Code asks it: a `can_use_tool` control request.
fn question_line(k: u64) -> Value {
    json!({"type": "control_request", "request_id": format!("probe_q_{k}"),
           "request": {"subtype": "can_use_tool", "tool_name": "AskUserQuestion",
                       "input": {"questions": [{
                           "question": format!("Probe question {k}: go on?"),
                           "header": "Probe",
                           "options": [{"label": "Yes", "description": "go on"},
                                       {"label": "No", "description": "go on anyway"}],
                           "multiSelect": false}]}}})
}

/// Reads stdin until the control response to `request_id`, answering any control
/// request meanwhile (the CLI answers `initialize`); false when stdin ended first.
fn await_response(
    lines: &mut impl Iterator<Item = io::Result<String>>,
    out: &mut impl Write,
    request_id: &str,
) -> io::Result<bool> {
    for line in lines {
        let Ok(msg) = serde_json::from_str::<Value>(&line?) else {
            continue;
        };
        match msg["type"].as_str() {
            Some("control_response")
                if msg["response"]["request_id"].as_str() == Some(request_id) =>
            {
                return Ok(true);
            }
            Some("control_request") => emit(
                out,
                &json!({"type": "control_response", "response": {"subtype": "success",
                        "request_id": msg["request_id"], "response": {}}}),
            )?,
            _ => {}
        }
    }
    Ok(false)
}

fn run(options: &Options) -> io::Result<()> {
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = io::stdout().lock();
    // `initialize` is answered; the first user message is the prompt.
    let mut prompted = false;
    for line in lines.by_ref() {
        let Ok(msg) = serde_json::from_str::<Value>(&line?) else {
            continue;
        };
        match msg["type"].as_str() {
            Some("control_request") => emit(
                &mut out,
                &json!({"type": "control_response", "response": {"subtype": "success",
                        "request_id": msg["request_id"], "response": {}}}),
            )?,
            Some("user") => {
                prompted = true;
                break;
            }
            _ => {}
        }
    }
    if !prompted {
        return Ok(());
    }
    let sid = options.session_id.as_str();
    emit(
        &mut out,
        &json!({"type": "system", "subtype": "init", "session_id": sid, "model": "probe",
                "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
                "tools": ["Bash"], "permissionMode": "default"}),
    )?;
    let started = Instant::now();
    let interval = (options.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / options.rate));
    for i in 0..options.events {
        if let Some(interval) = interval {
            // Paced against the start, so that a slow write does not lower the rate.
            let due = interval.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        emit(&mut out, &event_line(i, now_us(), sid))?;
    }
    for k in 0..options.questions {
        let asked = now_us();
        emit(&mut out, &question_line(k))?;
        if !await_response(&mut lines, &mut out, &format!("probe_q_{k}"))? {
            // The host went away without answering: nothing left to report.
            return Ok(());
        }
        let got = now_us();
        emit(
            &mut out,
            &text_line(
                &format!("[answer {k} {asked} {got}]"),
                sid,
                &format!("msg_probe_answer_{k}"),
            ),
        )?;
    }
    // The turn's work: a run that changes nothing fails.
    std::fs::write("probe-agent.txt", format!("session {sid}\n"))?;
    emit(
        &mut out,
        &json!({"type": "result", "subtype": "success", "is_error": false,
                "result": "Probe agent finished.", "duration_ms": 1, "num_turns": 1,
                "session_id": sid, "total_cost_usd": 0.0,
                "usage": {"input_tokens": 1, "output_tokens": 1}}),
    )
}

/// Runs the probe agent with the arguments after the subcommand.
///
/// # Errors
/// A bad argument, or output that could not be written (but for a closed pipe: the host
/// no longer listens, which is not the agent's failure).
pub fn main(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let options = parse(args).map_err(|e| anyhow::anyhow!("probe-agent: {e}"))?;
    match run(&options) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_flags_are_skipped_and_the_session_kept() {
        let args = [
            "--events",
            "5",
            "--output-format",
            "stream-json",
            "--session-id",
            "s1",
            "--questions",
            "2",
            "--rate",
            "0",
        ];
        let o = parse(args.iter().map(|s| (*s).to_owned())).unwrap();
        assert_eq!((o.events, o.questions, o.session_id.as_str()), (5, 2, "s1"));
        assert!(o.rate.abs() < f64::EPSILON);
    }
}

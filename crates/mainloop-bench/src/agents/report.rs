//! The run's report: a short text, with the timeline on request, and one JSON line.

use super::config::Args;
use super::figures::{Cpu, Figures, Latency, Rss};
use super::procfs::{Machine, mib};
use super::stream::Measured;
use super::transcripts::Tally;
use crate::stats::round3;
use serde_json::{Value, json};

/// Prints the report of `m`, whose figures are `f`; `ceiling` and `claude` are the
/// measurements taken after the run, if any.
#[allow(clippy::too_many_lines, clippy::cast_precision_loss)]
pub(super) fn print(
    args: &Args,
    machine: &Machine,
    m: &Measured,
    f: &Figures,
    ceiling: Option<&Value>,
    claude: Option<&Value>,
) {
    let n = args.agents;
    let events = args.rate * args.seconds;
    let emitted_expected = events * n as u64;
    let (tick_hz, cores) = (machine.tick_hz, machine.cores);
    let Measured {
        create_at,
        create_ms,
        settled_ms,
        timed_out,
        ref states,
        max_implementing,
        ref errors,
        ref transcripts,
        ref sampled,
        baseline_rss,
        server_hwm,
        run_ms,
        ..
    } = *m;
    let Figures {
        tally:
            Tally {
                recorded,
                lost,
                backlog,
                extra,
                complete_tasks,
                finished_tasks,
            },
        window,
        throughput,
        ref per_second,
        cpu:
            Cpu {
                server_core: server_cpu_core,
                server_sys_core,
                children_s: child_cpu_s,
                switches_per_s,
                ms_per_event: cpu_per_event_ms,
                switches_per_event,
                agents_s: agents_cpu_s,
                agents_core: agents_cpu_core,
                children_total_s: total_child_s,
            },
        rss:
            Rss {
                all_live_n,
                all_live_median: rss_all_median,
                all_live_max: rss_all_max,
                peak: rss_peak,
                per_task: per_task_kib,
                agent_median: agent_rss_median_kib,
                agent_max: agent_rss_max_kib,
                agent_processes,
                max_live,
            },
        latency:
            Latency {
                tasks: tasks_lat,
                inbox: inbox_lat,
                tasks_idle,
                inbox_idle,
                errors: probe_errors,
                tasks_bytes,
            },
        sse_lost,
        lag,
    } = *f;
    let stream_s = window.seconds();
    let all_streaming_s = window.all_seconds();
    let rss_note = (baseline_rss > 40 * 1024).then_some(
        " (the heap was already grown by earlier work in this process, so the per-task figure is too low: run `agents` alone)",
    );
    if args.timeline {
        for w in sampled.samples.windows(6).step_by(5) {
            let (a, b) = (w[0], w[5]);
            let wall = (b.at_ms - a.at_ms) / 1000.0;
            println!(
                "    t={:5.1}s  cpu {:5.1} %  children {:6.1} %  rss {:6.1} MiB  agents alive {}",
                (b.at_ms - create_at) / 1000.0,
                (b.self_ticks - a.self_ticks) as f64 / tick_hz / wall * 100.0,
                (b.child_ticks - a.child_ticks) as f64 / tick_hz / wall * 100.0,
                mib(b.rss_kib as f64),
                b.live_agents
            );
        }
    }
    println!(
        "  {n} tasks created in {create_ms:.0} ms; {} after {:.1} s; states {states:?}; at most {max_implementing} implementing, {max_live} agent processes alive at once",
        if timed_out {
            "DEADLINE reached (not every task in review; the agents were stopped)"
        } else {
            "all settled"
        },
        settled_ms / 1000.0
    );
    if let Some(e) = errors.first() {
        println!("    failed ({}): {e}", errors.len());
    }
    println!(
        "  events: {recorded} recorded of {emitted_expected} (lost {lost}, repeated or wrong {extra} {}; not yet recorded at the deadline {backlog}); {complete_tasks}/{n} transcripts complete, {finished_tasks}/{n} with one `finished`",
        if lost == 0 && extra == 0 {
            "(ok)"
        } else {
            "(MUST BE 0)"
        }
    );
    println!(
        "  SSE client: {} agent task.output events of {recorded} rows (lost {sse_lost}{}); delivery lag p50 {} ms, p99 {} ms, max {} ms",
        m.sse.agent_events,
        m.sse
            .error
            .as_deref()
            .map(|e| format!(", {e}"))
            .unwrap_or_default(),
        lag[0],
        lag[1],
        lag[2]
    );
    println!(
        "  streaming window {stream_s:.1} s (all {n} streaming for {:.1} s): {throughput:.0} events/s recorded (target {} = {n} × {})",
        all_streaming_s,
        n as u64 * args.rate,
        args.rate
    );
    println!("    recorded per second: {per_second:?}");
    println!(
        "  server CPU (this process) over the window: {server_cpu_core:.1} % of one core ({server_sys_core:.1} % in the kernel) = {:.1} % of the {cores} cores; {cpu_per_event_ms:.3} ms CPU and {switches_per_event:.1} thread context switches per recorded event",
        server_cpu_core / cores
    );
    println!(
        "  fake agents' CPU: {agents_cpu_s:.2} s in all = {agents_cpu_core:.1} % of one core over the window; children (agents + git) {child_cpu_s:.2} s in the window, {total_child_s:.2} s in all"
    );
    println!(
        "  server RSS: {:.1} MiB before the tasks, {:.1} MiB median while all {n} agents are alive ({all_live_n} samples, max {:.1}), peak {:.1} MiB → {:.0} KiB per running task",
        mib(baseline_rss as f64),
        mib(rss_all_median as f64),
        mib(rss_all_max as f64),
        mib(rss_peak as f64),
        per_task_kib
    );
    if let Some(note) = rss_note {
        println!("   {note}");
    }
    println!(
        "  fake agent RSS: median {:.1} MiB, max {:.1} MiB (peak per process, {} processes)",
        mib(agent_rss_median_kib),
        mib(agent_rss_max_kib),
        agent_processes
    );
    if let Some(c) = claude {
        println!("  real claude CLI, idle in stream-json mode: {c}");
    }
    if let Some(Value::Array(rows)) = ceiling {
        println!("  store write ceiling without agents ({n} concurrent writers):");
        for r in rows {
            println!(
                "    {}: {:.0} events/s, server CPU {:.0} % of one core, per call {}",
                r["variant"].as_str().unwrap_or_default(),
                r["events_per_s"].as_f64().unwrap_or_default(),
                r["cpu_pct_core"].as_f64().unwrap_or_default(),
                r["call_line"].as_str().unwrap_or_default()
            );
        }
    }
    println!("  GET /api/tasks while streaming: {}", tasks_lat.line());
    println!("  GET /api/inbox while streaming: {}", inbox_lat.line());
    println!(
        "    idle before the tasks: tasks {}; inbox {}; errors {probe_errors}",
        tasks_idle.line(),
        inbox_idle.line()
    );
    let p99_ok = tasks_lat.p99 < 50.0 && inbox_lat.p99 < 50.0;
    println!(
        "  targets: lost 0 {}; p99 < 50 ms {}; {} events/s {}",
        if lost == 0 && sse_lost == 0 {
            "met"
        } else {
            "MISSED"
        },
        if p99_ok { "met" } else { "MISSED" },
        n as u64 * args.rate,
        if throughput >= 0.95 * (n as u64 * args.rate) as f64 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "{}",
        json!({
            "bench": "agents",
            "agents": n,
            "rate_per_agent": args.rate,
            "seconds": args.seconds,
            "events_per_agent": events,
            "run": {
                "timed_out": timed_out,
                "states": states,
                "failed": errors.len(),
                "create_ms": round3(create_ms),
                "settled_s": round3(settled_ms / 1000.0),
                "max_implementing": max_implementing,
                "max_live_agents": max_live,
                "run_s": round3(run_ms / 1000.0),
            },
            "events": {
                "emitted": emitted_expected,
                "recorded": recorded,
                "lost": lost,
                "repeated_or_wrong": extra,
                "gaps": transcripts.gaps,
                "backlog_at_deadline": backlog,
                "complete_transcripts": complete_tasks,
                "transcript_rows_total": transcripts.rows,
                "stream_window_s": round3(stream_s),
                "all_streaming_s": round3(all_streaming_s),
                "per_s": round3(throughput),
                "target_per_s": n as u64 * args.rate,
                "recorded_per_second": per_second,
            },
            "sse": {
                "agent_events": m.sse.agent_events,
                "task_outputs": m.sse.outputs,
                "lost": sse_lost,
                "error": m.sse.error,
                "lag_p50_ms": lag[0],
                "lag_p99_ms": lag[1],
                "lag_max_ms": lag[2],
            },
            "cpu": {
                "server_pct_core": round3(server_cpu_core),
                "server_pct_machine": round3(server_cpu_core / cores),
                "server_sys_pct_core": round3(server_sys_core),
                "server_ms_per_event": round3(cpu_per_event_ms),
                "server_context_switches_per_s": round3(switches_per_s),
                "server_context_switches_per_event": round3(switches_per_event),
                "cores": cores,
                "agents_s": round3(agents_cpu_s),
                "agents_pct_core": round3(agents_cpu_core),
                "children_s_window": round3(child_cpu_s),
                "children_s_total": round3(total_child_s),
            },
            "rss": {
                "server_before_mib": round3(mib(baseline_rss as f64)),
                "server_all_live_median_mib": round3(mib(rss_all_median as f64)),
                "server_all_live_max_mib": round3(mib(rss_all_max as f64)),
                "server_all_live_samples": all_live_n,
                "server_peak_mib": round3(mib(rss_peak as f64)),
                "server_hwm_mib": round3(mib(server_hwm as f64)),
                "server_per_task_kib": round3(per_task_kib),
                "fake_agent_median_mib": round3(mib(agent_rss_median_kib)),
                "fake_agent_max_mib": round3(mib(agent_rss_max_kib)),
                "claude_idle": claude,
            },
            "write_ceiling": ceiling,
            "latency": {
                "tasks_ms": tasks_lat.json(),
                "inbox_ms": inbox_lat.json(),
                "tasks_idle_ms": tasks_idle.json(),
                "inbox_idle_ms": inbox_idle.json(),
                "tasks_response_bytes": tasks_bytes,
                "errors": probe_errors,
            },
        })
    );
}

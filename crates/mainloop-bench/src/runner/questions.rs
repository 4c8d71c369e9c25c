//! `runner-questions`: what a runner adds to a question's round trip. The probe agent
//! asks questions one after another (`AskUserQuestion`, as Claude Code asks), in a task
//! placed here and in one on a real `mainloop runner`, alternately; the bench answers
//! each the moment the task's `waiting_answers` reaches it (through the engine, as the
//! answers route does), so no human time is in the figure. The agent says when it wrote
//! the question and when it read the answer on its stdin; the bench says when it saw the
//! question, which splits the round trip into the way to the human and the way back.

use super::probe::now_us;
use super::world::{Site, World, marks, settled};
use crate::stats::{Summary, round3};
use anyhow::{Context, Result, bail};
use mainloop_domain::TaskId;
use mainloop_domain::question::{Answer, Answers};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The `mainloop` binary whose `runner` runs the remote tasks.
    #[arg(long, default_value = "target/release/mainloop")]
    pub bin: PathBuf,
    /// Questions each task's agent asks, one after another.
    #[arg(long, default_value_t = 30)]
    pub questions: u64,
    /// Tasks per site, alternating local and runner.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Seconds a task may take to reach review.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// What the run says on a runner before it prepares the workspace there.
const PREPARING: &str = "preparing the workspace on its runner";

/// One question's times, µs of the wall clock: the agent asked, the bench saw the task
/// waiting and answered, (on a runner) the answer's run began preparing the runner's
/// copy of the workspace, the agent read the answer.
#[derive(Clone, Copy, Debug)]
struct Trip {
    asked: i64,
    seen: i64,
    prepare: Option<i64>,
    got: i64,
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// The answers a human would give at once: each question's first option.
fn first_options(task: &Value) -> Result<Answers> {
    let questions = task["questions"]
        .as_array()
        .context("a task waiting for answers without questions")?;
    questions
        .iter()
        .map(|q| {
            let id = q["id"].as_str().context("a question without an id")?;
            let label = q["options"][0]["label"]
                .as_str()
                .context("a question without options")?;
            Ok((id.to_owned(), Answer::Choices(vec![label.to_owned()])))
        })
        .collect()
}

/// Runs one task on `site` to its end, answering each question at once.
async fn one(world: &mut World, site: Site, n: usize, args: &Args) -> Result<Vec<Trip>> {
    let task: TaskId = world.create(site, n).await?;
    let id = task.to_string();
    let (engine, user) = (world.server.engine().clone(), world.server.user());
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    // When the bench saw each question (in order), and the agent's times by number.
    let mut seen_at = Vec::new();
    let mut prepare_at: Vec<Option<i64>> = Vec::new();
    let mut reported = std::collections::BTreeMap::new();
    let mut answered = false;
    loop {
        let Some(seen) = world.next(deadline).await else {
            bail!(
                "task {n} ({}) did not finish within {} s: {}",
                site.name(),
                args.timeout,
                world.describe(task).await
            );
        };
        if seen.output_task() == Some(id.as_str()) {
            for mark in marks(&seen.event.payload, "answer") {
                if let [k, asked, got] = mark[..] {
                    reported.insert(k, (asked, got));
                }
            }
            // The first prepare after an answer is that answer's (the task's first
            // run prepares before any question).
            if seen.event.payload["payload"]["text"].as_str() == Some(PREPARING)
                && let Some(slot @ None) = prepare_at.last_mut()
            {
                *slot = Some(seen.at_us);
            }
        }
        let Some((t, state)) = seen.task_state() else {
            continue;
        };
        if t != id {
            continue;
        }
        if state == "waiting_answers" {
            // Once per question: other updates may repeat the state.
            if !answered {
                answered = true;
                seen_at.push(seen.at_us);
                prepare_at.push(None);
                let answers = first_options(&seen.event.payload)?;
                engine.answer_questions(user, task, answers).await?;
            }
        } else {
            answered = false;
        }
        if settled(state) {
            if state != "review" {
                let error = world.error(task).await.unwrap_or_default();
                bail!("task {n} ({}) ended {state}: {error}", site.name());
            }
            world.check_site(task, site).await?;
            break;
        }
    }
    let trips: Vec<Trip> = seen_at
        .iter()
        .enumerate()
        .filter_map(|(k, &seen)| {
            let (asked, got) = reported.get(&i64::try_from(k).ok()?)?;
            Some(Trip {
                asked: *asked,
                seen,
                prepare: prepare_at.get(k).copied().flatten(),
                got: *got,
            })
        })
        .collect();
    let expected = usize::try_from(args.questions).unwrap_or(usize::MAX);
    if trips.len() != expected {
        bail!(
            "task {n} ({}): {} of {expected} questions went round ({} seen here)",
            site.name(),
            trips.len(),
            seen_at.len()
        );
    }
    Ok(trips)
}

/// The three parts' summaries: whole round trip, to the human, back to the agent.
fn parts(trips: &[Trip]) -> [Summary; 3] {
    let of = |f: fn(&Trip) -> i64| Summary::of(trips.iter().map(|t| micros(f(t))).collect());
    [
        of(|t| t.got - t.asked),
        of(|t| t.seen - t.asked),
        of(|t| t.got - t.seen),
    ]
}

fn summary_json(s: &Summary) -> Value {
    json!({"n": s.n, "p50_ms": round3(s.p50), "p99_ms": round3(s.p99), "max_ms": round3(s.max)})
}

pub async fn run(args: &Args) -> Result<()> {
    println!(
        "== runner-questions: {} questions per task, {} tasks here and {} on a runner ({}), alternately; answered at once",
        args.questions,
        args.rounds,
        args.rounds,
        args.bin.display()
    );
    let probe = [
        "--questions".to_owned(),
        args.questions.to_string(),
        "--rate".to_owned(),
        "0".to_owned(),
    ];
    let load_before = super::load();
    let mut world = World::start(&args.bin, &probe).await?;
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    let mut result = Ok(());
    'rounds: for round in 0..args.rounds {
        for site in [Site::Local, Site::Runner] {
            let started = now_us();
            match one(&mut world, site, round, args).await {
                Ok(trips) => {
                    let [whole, _, _] = parts(&trips);
                    println!(
                        "  {} task {round}: {} questions in {:.1} s; round trip {}",
                        site.name(),
                        trips.len(),
                        micros(now_us() - started).as_secs_f64(),
                        whole.line()
                    );
                    match site {
                        Site::Local => local.extend(trips),
                        Site::Runner => remote.extend(trips),
                    }
                }
                Err(e) => {
                    println!("  runner said: {}", world.runner.log().trim());
                    result = Err(e);
                    break 'rounds;
                }
            }
        }
    }
    world.stop().await;
    result?;
    let load_after = super::load();
    println!("  load average (1 min) {load_before:.1} before, {load_after:.1} after");
    let [l, l_in, l_out] = parts(&local);
    let [r, r_in, r_out] = parts(&remote);
    for (name, a, b) in [
        ("agent asks → the human's side sees it", &l_in, &r_in),
        ("answered → the agent reads it", &l_out, &r_out),
    ] {
        println!(
            "  {name}: local p50 {:.2} ms / p99 {:.2} ms; runner p50 {:.2} ms / p99 {:.2} ms",
            a.p50, a.p99, b.p50, b.p99
        );
    }
    // On the runner, the way back split where the answer's run starts preparing.
    let split: Vec<(i64, i64, i64)> = remote
        .iter()
        .filter_map(|t| Some((t.seen, t.prepare?, t.got)))
        .collect();
    let to_prepare = Summary::of(split.iter().map(|(s, p, _)| micros(p - s)).collect());
    let prepared = Summary::of(split.iter().map(|(_, p, g)| micros(g - p)).collect());
    println!(
        "  on the runner, answered → its run begins preparing the workspace: p50 {:.2} ms / p99 {:.2} ms; that prepare → the agent reads the answer: p50 {:.2} ms / p99 {:.2} ms (n={})",
        to_prepare.p50, to_prepare.p99, prepared.p50, prepared.p99, prepared.n
    );
    println!(
        "runner-questions: question round trip, agent asks → answer on its stdin (answered at once): local p50 {:.1} ms / p99 {:.1} ms; via runner p50 {:.1} ms / p99 {:.1} ms; the runner adds {:+.1} ms p50, {:+.1} ms p99 ({} questions each)",
        l.p50,
        l.p99,
        r.p50,
        r.p99,
        r.p50 - l.p50,
        r.p99 - l.p99,
        l.n.min(r.n)
    );
    println!(
        "{}",
        json!({
            "bench": "runner-questions",
            "questions_per_task": args.questions,
            "rounds": args.rounds,
            "load_before": load_before,
            "load_after": load_after,
            "local": {"round_trip": summary_json(&l), "to_human": summary_json(&l_in), "to_agent": summary_json(&l_out)},
            "runner": {"round_trip": summary_json(&r), "to_human": summary_json(&r_in), "to_agent": summary_json(&r_out)},
            "runner_answered_to_prepare": summary_json(&to_prepare),
            "runner_prepare_to_agent": summary_json(&prepared),
            "added_p50_ms": round3(r.p50 - l.p50),
            "added_p99_ms": round3(r.p99 - l.p99),
        })
    );
    Ok(())
}

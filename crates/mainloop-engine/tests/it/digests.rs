//! The temporal pyramid over both databases: a simulated five weeks of activity, driven
//! by a controllable clock, through restarts and days of downtime — one digest per day,
//! week and month, none queued or made twice, each saying what happened — and the
//! context the model is then given: notes, then the month's, the week's and the days'
//! digests, oldest first, within the budget.

use super::*;
use mainloop_domain::digest::{Digest, Period, Span, Zone, digest_tokens};
use mainloop_domain::notes::NoteKind;
use mainloop_domain::records::{Task, Workplace};
use mainloop_domain::{ProjectId, Timestamp};
use mainloop_engine::Clock;
use mainloop_store::NewTask;
use std::collections::HashMap;
use std::sync::atomic::AtomicI64;

both_backends!(
    a_simulated_month_makes_each_digest_once_and_the_context_carries_the_pyramid,
    a_session_is_told_the_digests_only_when_they_changed,
);

const ZONE: &str = "Europe/Paris";
const HOUR: i64 = 3_600_000;

fn day(n: i64) -> jiff::civil::Date {
    // Day 0 is Monday 2 March 2026; Paris moves its clocks on Sunday 29 March (day 27).
    jiff::civil::date(2026, 3, 2)
        .checked_add(jiff::Span::new().days(n))
        .unwrap()
}

fn at(n: i64, hour: i64) -> Timestamp {
    Zone::parse(ZONE)
        .unwrap()
        .start_of(day(n))
        .plus_millis(hour * HOUR)
}

/// An engine on `url` whose memory reads `clock`, with notes and digests budgets.
async fn engine_at(
    url: &str,
    fake: &FakeAnthropic,
    clock: &Arc<AtomicI64>,
    memory_budget_tokens: usize,
) -> (Engine, CancellationToken) {
    let c = clock.clone();
    let config = EngineConfig {
        clock: Clock::from_fn(move || Timestamp::from_millis(c.load(Ordering::SeqCst))),
        memory_budget_tokens,
        reclaim_all_at_start: url.starts_with("sqlite"),
        ..fast_config()
    };
    start(url, Some(fake), config).await
}

async fn idle(url: &str) {
    eventually("the digest jobs to finish", || async {
        mainloop_test_support::jobs_idle(url, Duration::ZERO)
            .await
            .then_some(())
    })
    .await;
}

/// One day of activity, written at its simulated times: a message every day; a task
/// spawned every third day, which plans, is approved the next day and merged two days
/// later — except every ninth day's, which fails; a decision on day 4.
async fn live_day(
    engine: &Engine,
    user: UserId,
    project: ProjectId,
    n: i64,
    tasks: &mut Vec<Task>,
) {
    let store = engine.store_for_tests();
    let mut tx = store.begin().await.unwrap();
    tx.insert_message(
        user,
        &NewMessage {
            role: Role::User,
            kind: MessageKind::Text,
            content: vec![ContentBlock::text(format!("day {n}: look at widget{n}"))],
            turn_id: None,
            task_id: None,
        },
        at(n, 10),
    )
    .await
    .unwrap();
    if n % 3 == 0 {
        let new = NewTask {
            description: format!("Widget {n} work\ndetails"),
            repo: "/src/app".into(),
            workplace: Workplace::Local,
            skip_plan: false,
            max_check_rounds: 3,
            model: None,
            agent: mainloop_domain::agents::AgentName::default(),
            origin_key: None,
            budget_usd: None,
        };
        let (task, _) = tx
            .insert_task(user, project, &new, at(n, 11))
            .await
            .unwrap();
        let mut task = task;
        task.core.state = TaskState::WaitingPlanReview;
        tasks.push(tx.save_task(&task, at(n, 12)).await.unwrap());
    }
    let moves: Vec<(usize, TaskState)> = tasks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let born = t
                .description
                .split_whitespace()
                .nth(1)?
                .parse::<i64>()
                .ok()?;
            let to = match n - born {
                1 => TaskState::Implementing,
                3 if born % 9 == 0 && born > 0 => TaskState::Failed,
                3 => TaskState::Merged,
                _ => return None,
            };
            Some((i, to))
        })
        .collect();
    for (i, to) in moves {
        let mut task = tasks[i].clone();
        task.core.state = to;
        if to == TaskState::Failed {
            task.error = Some("checks failed twice".into());
        }
        tasks[i] = tx.save_task(&task, at(n, 15)).await.unwrap();
    }
    if n == 4 {
        tx.insert_note(
            user,
            &mainloop_store::NewNote {
                kind: NoteKind::Decision,
                text: "Widgets ship behind a flag",
                source: mainloop_domain::notes::NoteSource::User,
                tool_use_id: None,
            },
            at(n, 16),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn a_simulated_month_makes_each_digest_once_and_the_context_carries_the_pyramid(
    backend: Backend,
) {
    let fake = FakeAnthropic::start(
        Script::from_yaml(
            "rules:\n  - name: any\n    match: {}\n    reply: [{text: \"Noted.\"}]\n",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let h = harness(backend, None, fast_config()).await;
    h.shutdown.cancel();
    let url = h.url.clone();
    let clock = Arc::new(AtomicI64::new(at(0, 9).as_millis()));
    let (mut engine, mut stop) = engine_at(&url, &fake, &clock, 100_000).await;

    // The user joins on day 0 at 09:00 and works in Paris time.
    let mut tx = engine.store_for_tests().begin().await.unwrap();
    let user = tx.create_user("sim", false, at(0, 9)).await.unwrap().id;
    let project = tx
        .upsert_project(user, "/src/app", at(0, 9))
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();
    assert_eq!(
        engine
            .set_time_zone(user, Some(ZONE))
            .await
            .unwrap()
            .time_zone,
        ZONE
    );

    let mut tasks = Vec::new();
    // 37 days: Monday 2 March to Tuesday 7 April. Down from the end of day 11 to the
    // morning of day 17 (nothing runs, nothing is written); restarted every 8 days.
    for n in 0..37 {
        if (12..17).contains(&n) {
            continue;
        }
        if n == 17 || n % 8 == 0 {
            stop.cancel();
            clock.store(at(n, 9).as_millis(), Ordering::SeqCst);
            // A start sweeps at once: a late start catches up every day it missed.
            (engine, stop) = engine_at(&url, &fake, &clock, 100_000).await;
            idle(&url).await;
            if n == 17 {
                // With no sweep of ours: the start makes every day it was down.
                let days = eventually("the days of the downtime", || async {
                    let days = engine
                        .digests(user, Some(Period::Day), None, 200)
                        .await
                        .unwrap();
                    (days.first().map(|d| d.start) == Some(day(16))).then_some(days)
                })
                .await;
                assert_eq!(days.len(), 17, "days 0 to 16");
                idle(&url).await;
            }
        }
        live_day(&engine, user, project, n, &mut tasks).await;
        // Just past midnight: the sweep (twice, as after a restart) queues what ended.
        clock.store(
            at(n + 1, 0).plus_millis(60_000).as_millis(),
            Ordering::SeqCst,
        );
        if n != 11 {
            let now = Timestamp::from_millis(clock.load(Ordering::SeqCst));
            engine.sweep_digests(now).await.unwrap();
            engine.sweep_digests(now).await.unwrap();
            idle(&url).await;
        }
    }

    let all = engine.digests(user, None, None, 200).await.unwrap();
    let mut seen: HashMap<(Period, jiff::civil::Date), usize> = HashMap::new();
    for d in &all {
        *seen.entry((d.period, d.start)).or_default() += 1;
    }
    let mut expected: Vec<(Period, jiff::civil::Date)> =
        (0..37).map(|n| (Period::Day, day(n))).collect();
    expected.extend((0..5).map(|w| (Period::Week, day(w * 7))));
    expected.push((Period::Month, jiff::civil::date(2026, 3, 1)));
    let mut got: Vec<_> = seen.keys().copied().collect();
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "one digest for each day, week and month that ended"
    );
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    // Each was queued once: one job per span, all done.
    let jobs = engine
        .store_for_tests()
        .count_unfinished(mainloop_engine::MakeDigest::KIND)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    let again = engine.make_digest(
        user,
        Span {
            period: Period::Day,
            start: day(3),
        },
        at(40, 0),
    );
    assert!(!again.await.unwrap(), "a made span is never made again");

    let find = |p: Period, start: jiff::civil::Date| -> &Digest {
        all.iter()
            .find(|d| d.period == p && d.start == start)
            .unwrap()
    };
    // Day 3 spawned a task and answered day 0's questions (the plan was approved on day 1).
    let d3 = find(Period::Day, day(3));
    assert!(
        d3.text.starts_with("Thursday 5 March 2026 (Europe/Paris)"),
        "{}",
        d3.text
    );
    assert!(
        d3.text.contains("\"day 3: look at widget3\""),
        "{}",
        d3.text
    );
    assert!(
        d3.text.contains("Spawned (1): Widget 3 work [task"),
        "{}",
        d3.text
    );
    assert!(d3.text.contains("Merged (1): Widget 0 work"), "{}", d3.text);
    let d1 = find(Period::Day, day(1));
    assert!(
        d1.text
            .contains("Decided (1): Approved the plan of \"Widget 0 work\""),
        "{}",
        d1.text
    );
    assert!(
        d1.text.contains("Still open (1): Widget 0 work [task"),
        "{}",
        d1.text
    );
    let d4 = find(Period::Day, day(4));
    assert!(
        d4.text.contains("Widgets ship behind a flag"),
        "{}",
        d4.text
    );
    // Day 9's task failed on day 12 — during the downtime, written by nobody: the
    // digest of day 12 is quiet, and the failure of day 18's task is on day 21.
    assert!(find(Period::Day, day(12)).quiet);
    assert!(
        find(Period::Day, day(21))
            .text
            .contains("Failed (1): Widget 18 work"),
        "{}",
        find(Period::Day, day(21)).text
    );
    // The long day of the clock change is one day, 23 hours long in Paris.
    let dst = Span {
        period: Period::Day,
        start: day(27),
    }
    .bounds(&Zone::parse(ZONE).unwrap());
    assert_eq!(dst.1.as_millis() - dst.0.as_millis(), 23 * HOUR);
    // A week gathers its days; the month its days.
    let w0 = find(Period::Week, day(0));
    assert_eq!(w0.facts.asked_total, 7);
    assert!(w0.title == "Week of 2 March 2026");
    let march = find(Period::Month, jiff::civil::date(2026, 3, 1));
    assert_eq!(
        march.facts.asked_total,
        30 - 5,
        "2–31 March, less five days down"
    );
    assert!(!march.facts.merged.is_empty() && !march.facts.failed.is_empty());

    // Search finds a digest by its words.
    let q =
        mainloop_engine::parse_search("widget18", &["digest".into()], None, None, None, None, None)
            .unwrap();
    let hits = engine.search(user, &q).await.unwrap();
    assert!(!hits.is_empty(), "a digest hit");

    // The context on Wednesday 8 April: the notes, then March, the week that ended in
    // April, then Monday and Tuesday — oldest first.
    engine
        .add_note(user, NoteKind::Fact, "The user likes short answers")
        .await
        .unwrap();
    clock.store(at(37, 10).as_millis(), Ordering::SeqCst);
    let system = system_of_next_turn(&engine, &fake, user, "what happened?").await;
    let order = [
        "<notes>",
        "<memory>",
        "<digest period=\"month\" start=\"2026-03-01\">",
        "<digest period=\"week\" start=\"2026-03-30\">",
        "<digest period=\"day\" start=\"2026-04-06\">",
        "<digest period=\"day\" start=\"2026-04-07\">",
    ];
    let at_pos: Vec<usize> = order
        .iter()
        .map(|s| {
            system
                .find(s)
                .unwrap_or_else(|| panic!("{s} missing from\n{system}"))
        })
        .collect();
    assert!(
        at_pos.windows(2).all(|w| w[0] < w[1]),
        "{at_pos:?}\n{system}"
    );
    assert_eq!(system.matches("<digest ").count(), 4, "{system}");

    // Within a budget for the last two days only, the oldest go first.
    let budget = [day(35), day(36)]
        .iter()
        .map(|d| digest_tokens(find(Period::Day, *d)))
        .sum::<usize>()
        + 5;
    stop.cancel();
    let (engine, stop) = engine_at(&url, &fake, &clock, budget).await;
    let system = system_of_next_turn(&engine, &fake, user, "and now?").await;
    assert_eq!(system.matches("<digest ").count(), 2, "{system}");
    assert!(system.contains("start=\"2026-04-06\"") && system.contains("start=\"2026-04-07\""));
    stop.cancel();
}

/// The system prompt of the model request answering `text`.
async fn system_of_next_turn(
    engine: &Engine,
    fake: &FakeAnthropic,
    user: UserId,
    text: &str,
) -> String {
    let msg = engine.post_chat(user, text).await.unwrap();
    reply_to(engine, user, &msg).await;
    let last = fake.message_requests().last().unwrap().body.clone();
    match &last["system"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

async fn a_session_is_told_the_digests_only_when_they_changed(backend: Backend) {
    // Wednesday 4 March 2026, noon (UTC, the default zone).
    let now = at(2, 13);
    let config = EngineConfig {
        clock: Clock::from_fn(move || now),
        ..fast_config()
    };
    let h = harness(backend, None, config).await;
    let (engine, user) = (&h.engine, h.user);
    let provider = Arc::new(super::notes::Greeter::default());
    engine.set_main_thread(
        mainloop_engine::MainChoice {
            provider: Some("greeter".into()),
            reason: String::new(),
        },
        Some(provider.clone()),
    );
    let said = |day_n: i64, text: &'static str| async move {
        let mut tx = engine.store_for_tests().begin().await.unwrap();
        tx.insert_message(
            user,
            &NewMessage {
                role: Role::User,
                kind: MessageKind::Text,
                content: vec![ContentBlock::text(text)],
                turn_id: None,
                task_id: None,
            },
            at(day_n, 10),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let span = Span {
            period: Period::Day,
            start: day(day_n),
        };
        assert!(engine.make_digest(user, span, now).await.unwrap());
    };
    let turn = async |text: &str| {
        let msg = engine.post_chat(user, text).await.unwrap();
        reply_to(engine, user, &msg).await;
        provider.inputs.lock().unwrap().last().unwrap().clone()
    };
    said(0, "monday's ask").await;
    let first = turn("one").await;
    assert!(
        first
            .input
            .starts_with("[mainloop: the digests of the user's earlier days")
            && first
                .input
                .contains("<digest period=\"day\" start=\"2026-03-02\">")
            && first.input.contains("\"monday's ask\"")
            && first.input.ends_with("one"),
        "{}",
        first.input
    );
    assert!(
        !first.system.contains("monday's ask"),
        "said, not in the system"
    );
    assert_eq!(
        turn("two").await.input,
        "two",
        "unchanged digests are not said again"
    );
    said(1, "tuesday's ask").await;
    let third = turn("three").await;
    assert!(
        third.input.contains("\"monday's ask\"") && third.input.contains("\"tuesday's ask\""),
        "{}",
        third.input
    );
    assert_eq!(turn("four").await.input, "four");
}

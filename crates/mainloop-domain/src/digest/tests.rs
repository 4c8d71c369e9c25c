use super::compose::first_line;
use super::*;
use crate::notes::NoteKind;
use crate::task::TaskState;
use crate::{DigestId, MessageId, NoteId, TaskId};
use jiff::civil::date;

fn paris() -> Zone {
    Zone::parse("Europe/Paris").expect("zone")
}

fn at(zone: &Zone, d: Date, hour: i64) -> Timestamp {
    zone.start_of(d).plus_millis(hour * 3_600_000)
}

fn id(n: u128) -> TaskId {
    TaskId(uuid::Uuid::from_u128(n))
}

#[test]
fn zones_are_iana_names_and_anything_else_is_refused() {
    assert_eq!(paris().name(), "Europe/Paris");
    assert_eq!(Zone::parse(" UTC ").expect("utc").name(), "UTC");
    for bad in [
        "",
        "Mars/Olympus",
        "Europe/../etc/passwd",
        "a\0b",
        &"x".repeat(100),
    ] {
        let e = Zone::parse(bad).expect_err(bad);
        assert!(e.contains("IANA"), "{e}");
    }
}

#[test]
fn weeks_start_on_monday_and_months_on_the_first() {
    let tue = date(2026, 11, 3);
    assert_eq!(Span::containing(Period::Week, tue).start, date(2026, 11, 2));
    assert_eq!(
        Span::containing(Period::Week, date(2026, 11, 8)).start,
        date(2026, 11, 2)
    );
    assert_eq!(Span::containing(Period::Week, tue).end(), date(2026, 11, 9));
    assert_eq!(
        Span::containing(Period::Month, tue).start,
        date(2026, 11, 1)
    );
    assert_eq!(
        Span::containing(Period::Month, date(2026, 12, 31)).end(),
        date(2027, 1, 1)
    );
    assert_eq!(
        Span::containing(Period::Day, tue).title(),
        "Tuesday 3 November 2026"
    );
    assert_eq!(
        Span::containing(Period::Week, tue).title(),
        "Week of 2 November 2026"
    );
    assert_eq!(
        Span::containing(Period::Month, tue).title(),
        "November 2026"
    );
}

#[test]
fn days_are_counted_in_the_zone_including_the_long_day_of_a_clock_change() {
    let z = paris();
    // 25 October 2026: clocks go back an hour in Paris.
    let (s, e) = Span::containing(Period::Day, date(2026, 10, 25)).bounds(&z);
    assert_eq!(e.as_millis() - s.as_millis(), 25 * 3_600_000);
    // 23:30 UTC on the 2nd is already the 3rd in Paris.
    let late = Timestamp::parse_rfc3339("2026-11-02T23:30:00Z").expect("ts");
    assert_eq!(z.date(late), date(2026, 11, 3));
    assert_eq!(Zone::utc().date(late), date(2026, 11, 2));
    assert_eq!(next_due(&z, late), z.start_of(date(2026, 11, 4)));
}

#[test]
fn due_lists_every_ended_span_not_made_days_then_weeks_then_months() {
    let z = paris();
    let since = at(&z, date(2026, 10, 28), 10);
    let now = at(&z, date(2026, 11, 10), 0);
    let due_now = due(&z, since, &HashSet::new(), now);
    let days: Vec<&Span> = due_now.iter().filter(|s| s.period == Period::Day).collect();
    assert_eq!(days.len(), 13, "28 October to 9 November");
    assert_eq!(days[0].start, date(2026, 10, 28));
    assert_eq!(days[12].start, date(2026, 11, 9));
    let rest: Vec<(Period, Date)> = due_now[13..].iter().map(|s| (s.period, s.start)).collect();
    assert_eq!(
        rest,
        vec![
            (Period::Week, date(2026, 10, 26)),
            (Period::Week, date(2026, 11, 2)),
            (Period::Month, date(2026, 10, 1)),
        ]
    );
    // A minute before midnight the 9th has not ended.
    let before = now.plus_millis(-60_000);
    assert!(
        !due(&z, since, &HashSet::new(), before)
            .iter()
            .any(|s| s.start == date(2026, 11, 9))
    );
    // What is made is never due again; a gap in the middle is.
    let made: HashSet<Span> = due_now
        .iter()
        .copied()
        .filter(|s| s.start != date(2026, 11, 4))
        .collect();
    assert_eq!(
        due(&z, since, &made, now),
        vec![Span {
            period: Period::Day,
            start: date(2026, 11, 4)
        }]
    );
}

fn transition(n: u128, from: Option<TaskState>, to: TaskState) -> Transition {
    Transition {
        task_id: id(n),
        title: format!("Task {n}\nmore words"),
        from,
        to,
        error: (to == TaskState::Failed).then(|| "checks failed twice".to_owned()),
    }
}

fn busy_day() -> DayRecords {
    DayRecords {
        asked: (0..12)
            .map(|i| (MessageId(uuid::Uuid::from_u128(i)), format!("ask {i}")))
            .collect(),
        spawned: vec![(id(1), "Fix the login redirect\nbecause".into())],
        notes: vec![(
            NoteId(uuid::Uuid::from_u128(9)),
            NoteKind::Decision,
            "Use SQLite in tests".into(),
        )],
        transitions: vec![
            transition(
                1,
                Some(TaskState::WaitingPlanReview),
                TaskState::Implementing,
            ),
            transition(2, Some(TaskState::Review), TaskState::Merged),
            transition(3, Some(TaskState::Checking), TaskState::Failed),
        ],
        still_open: vec![(
            id(1),
            "Fix the login redirect".into(),
            TaskState::Implementing,
        )],
        spent_usd: 1.234,
    }
}

#[test]
fn a_day_says_what_was_asked_spawned_decided_merged_failed_and_left_open() {
    let f = compose_day(&busy_day());
    assert_eq!(f.asked.len(), compose::ASKED_KEPT);
    assert_eq!(f.asked_total, 12);
    assert_eq!(f.spawned[0].title, "Fix the login redirect");
    assert_eq!(f.decided.len(), 2);
    assert_eq!(f.decided[0].text, "Use SQLite in tests");
    assert_eq!(f.decided[1].text, "Approved the plan of \"Task 1\"");
    assert_eq!(f.merged[0].task_id, id(2));
    assert_eq!(f.failed[0].detail.as_deref(), Some("checks failed twice"));
    assert_eq!(f.still_open[0].detail.as_deref(), Some("implementing"));
    let span = Span::containing(Period::Day, date(2026, 11, 3));
    let text = render(span, "Europe/Paris", &f);
    assert!(
        text.starts_with("Tuesday 3 November 2026 (Europe/Paris)\nAsked (12): \"ask 0\""),
        "{text}"
    );
    assert!(
        text.contains(&format!("Merged (1): Task 2 [task {}]", id(2))),
        "{text}"
    );
    assert!(text.contains("Failed (1): Task 3"), "{text}");
    assert!(
        text.contains("Still open (1): Fix the login redirect"),
        "{text}"
    );
    assert!(text.ends_with("Spent: $1.23"), "{text}");
}

#[test]
fn a_day_with_nothing_new_is_quiet() {
    let r = DayRecords {
        still_open: vec![(id(1), "Old".into(), TaskState::Review)],
        ..DayRecords::default()
    };
    let f = compose_day(&r);
    assert!(f.is_quiet());
    let text = render(Span::containing(Period::Day, date(2026, 11, 3)), "UTC", &f);
    assert!(
        text.contains("Nothing was asked, started or finished."),
        "{text}"
    );
    assert!(text.contains("Still open (1): Old"), "{text}");
}

#[test]
fn a_week_merges_its_days_and_keeps_the_last_days_open_tasks() {
    let monday = compose_day(&busy_day());
    let later = DayRecords {
        transitions: vec![transition(3, Some(TaskState::Failed), TaskState::Merged)],
        asked: vec![(MessageId(uuid::Uuid::from_u128(99)), "one more".into())],
        ..DayRecords::default()
    };
    let tuesday = compose_day(&later);
    let week = merge(&[&monday, &tuesday]);
    assert_eq!(week.asked_total, 13);
    assert_eq!(week.asked.len(), compose::ASKED_KEPT);
    assert!(week.failed.is_empty(), "task 3 was merged after it failed");
    assert_eq!(
        week.merged.iter().map(|l| l.task_id).collect::<Vec<_>>(),
        vec![id(2), id(3)]
    );
    assert!(week.still_open.is_empty(), "the last day's open list");
    assert!((week.spent_usd - 1.234).abs() < 1e-9);
}

#[test]
fn long_lists_are_cut_and_counted() {
    let r = DayRecords {
        spawned: (0..40).map(|i| (id(i), format!("T{i}"))).collect(),
        ..DayRecords::default()
    };
    let text = render(
        Span::containing(Period::Day, date(2026, 11, 3)),
        "UTC",
        &compose_day(&r),
    );
    assert!(text.contains("Spawned (40): T0 "), "{text}");
    assert!(text.contains("; and 25 more"), "{text}");
    let long = "word ".repeat(100);
    assert!(first_line(&long).chars().count() <= 120);
}

fn digest(period: Period, start: Date, text: &str) -> Digest {
    let span = Span { period, start };
    Digest {
        id: DigestId(uuid::Uuid::new_v4()),
        period,
        start,
        end: span.end(),
        title: span.title(),
        time_zone: "UTC".into(),
        quiet: text.is_empty(),
        text: text.to_owned(),
        facts: DigestFacts::default(),
        created_at: Timestamp::from_millis(0),
    }
}

#[test]
fn the_pyramid_carries_past_months_this_months_weeks_and_this_weeks_days_oldest_first() {
    let z = Zone::utc();
    let now = at(&z, date(2026, 11, 19), 9); // a Thursday
    let all = vec![
        digest(Period::Day, date(2026, 11, 18), "wed"),
        digest(Period::Day, date(2026, 11, 17), "tue"),
        digest(Period::Day, date(2026, 11, 16), ""), // quiet Monday
        digest(Period::Day, date(2026, 11, 13), "last friday"),
        digest(Period::Week, date(2026, 11, 9), "week 2"),
        digest(Period::Week, date(2026, 11, 2), "week 1"),
        digest(Period::Week, date(2026, 10, 26), "straddles"),
        digest(Period::Week, date(2026, 10, 19), "october week"),
        digest(Period::Month, date(2026, 10, 1), "october"),
        digest(Period::Month, date(2026, 9, 1), "september"),
    ];
    let texts = |c: Vec<&Digest>| c.iter().map(|d| d.text.clone()).collect::<Vec<_>>();
    assert_eq!(
        texts(pyramid(&all, &z, now, 10_000)),
        vec![
            "september",
            "october",
            "straddles",
            "week 1",
            "week 2",
            "tue",
            "wed"
        ]
    );
    let budget = all[..2].iter().map(digest_tokens).sum::<usize>() + digest_tokens(&all[4]);
    assert_eq!(
        texts(pyramid(&all, &z, now, budget)),
        vec!["week 2", "tue", "wed"]
    );
    assert!(pyramid(&all, &z, now, 0).is_empty());
    let section = memory_section("UTC", &pyramid(&all, &z, now, budget)).expect("section");
    assert!(section.starts_with("<memory>\n"), "{section}");
    assert!(section.contains("<digest period=\"week\" start=\"2026-11-09\">\nweek 2\n</digest>"));
    assert!(section.ends_with("</memory>"));
    assert!(memory_section("UTC", &[]).is_none());
}

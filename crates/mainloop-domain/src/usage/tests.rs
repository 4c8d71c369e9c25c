use super::*;

fn name(s: &str) -> AgentName {
    AgentName::parse(s).unwrap()
}

#[test]
fn the_first_cap_reached_stops_a_run_and_below_every_cap_it_goes() {
    let claude = name("claude");
    let mut budgets = Budgets {
        task_usd: Some(0.05),
        daily_usd: Some(5.0),
        ..Budgets::default()
    };
    budgets.set(BudgetScope::AgentWeek, &claude, 2.0);
    let spend = Spend {
        task: 0.04,
        day: 1.0,
        week: 1.9,
        agent_day: 0.5,
        agent_week: 1.9,
    };
    assert_eq!(reached(&budgets, None, &claude, &spend), None);
    let over = Spend {
        task: 0.05,
        ..spend
    };
    let r = reached(&budgets, None, &claude, &over).unwrap();
    assert_eq!(r.scope, BudgetScope::Task);
    assert_eq!(
        reason(&r, &claude),
        "This task's budget of $0.05 is reached ($0.05 spent): raise it, or continue once."
    );
    // The task's own cap, once raised, replaces the default.
    assert_eq!(reached(&budgets, Some(1.0), &claude, &over), None);
    let agent_over = Spend {
        agent_week: 2.5,
        ..spend
    };
    let r = reached(&budgets, None, &claude, &agent_over).unwrap();
    assert_eq!(r.scope, BudgetScope::AgentWeek);
    // Another agent's caps do not apply.
    assert_eq!(reached(&budgets, None, &name("codex"), &agent_over), None);
    // No budgets, no limit.
    assert_eq!(
        reached(&Budgets::default(), None, &claude, &agent_over),
        None
    );
}

#[test]
fn amounts_must_be_positive_finite_and_sane() {
    let mut b = Budgets::default();
    assert!(b.validate().is_ok());
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 2_000_000.0] {
        b.daily_usd = Some(bad);
        assert_eq!(b.validate(), Err(BadBudget("daily_usd".into())));
    }
    b.daily_usd = Some(0.01);
    b.agents.insert(
        name("codex"),
        AgentBudget {
            daily_usd: None,
            weekly_usd: Some(-2.0),
        },
    );
    assert_eq!(
        b.validate(),
        Err(BadBudget("agents.codex.weekly_usd".into()))
    );
    let unknown = serde_json::from_str::<Budgets>(r#"{"monthly_usd": 3}"#);
    assert!(unknown.is_err());
}

#[test]
fn days_start_at_utc_midnight_and_weeks_on_monday() {
    // 2026-12-06 15:34:47 UTC, a Sunday.
    let t = Timestamp::parse_rfc3339("2026-12-06T15:34:47Z").unwrap();
    assert_eq!(day_start(t).to_rfc3339(), "2026-12-06T00:00:00Z");
    assert_eq!(week_start(t).to_rfc3339(), "2026-11-30T00:00:00Z");
    let (day, week) = next_resets(t);
    assert_eq!(day.to_rfc3339(), "2026-12-07T00:00:00Z");
    assert_eq!(week.to_rfc3339(), "2026-12-07T00:00:00Z");
    let monday = Timestamp::parse_rfc3339("2026-12-07T00:00:00Z").unwrap();
    assert_eq!(week_start(monday), monday);
    assert_eq!(date_of(t), "2026-12-06");
    assert_eq!(date_of(day_at(day_number(t))), "2026-12-06");
    // Before the epoch too.
    let old = Timestamp::parse_rfc3339("1969-12-31T23:00:00Z").unwrap();
    assert_eq!(day_start(old).to_rfc3339(), "1969-12-31T00:00:00Z");
    assert_eq!(week_start(old).to_rfc3339(), "1969-12-29T00:00:00Z");
}

#[test]
fn dollars_read_as_money() {
    assert_eq!(dollars(0.05), "$0.05");
    assert_eq!(dollars(12.3), "$12.30");
    assert_eq!(dollars(0.0042), "$0.0042");
    assert_eq!(dollars(0.0001), "$0.0001");
    assert_eq!(dollars(0.005), "$0.005");
    assert_eq!(dollars(0.00001), "<$0.0001");
    assert_eq!(dollars(0.0), "$0.00");
}

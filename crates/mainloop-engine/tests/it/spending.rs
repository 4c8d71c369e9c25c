//! Budgets, the pause and the usage report over both databases: a run past a cap holds
//! its task with a needs-you item, "raise" and "continue once" answer it, a pause holds
//! and resume frees, and the report sums every run by day, source and task.

use super::*;
use mainloop_domain::records::Task;
use mainloop_domain::task::HoldKind;
use mainloop_domain::usage::{self, BudgetAnswer, BudgetScope, Budgets, QuotaWindow};
use mainloop_engine::Gate;

both_backends!(
    a_task_past_its_cap_holds_with_a_needs_you_item_until_raised_or_continued,
    a_daily_cap_counts_every_task_of_the_user,
    a_pause_holds_the_next_run_lasts_across_a_restart_and_resume_frees_it,
    the_usage_report_sums_runs_by_day_source_and_task,
    a_task_created_with_its_own_cap_holds_at_it
);

async fn planning_task(engine: &Engine, user: UserId, what: &str) -> Task {
    let task = engine
        .create_task(
            user,
            &CreateTask {
                description: what.into(),
                repo: "/src/app".into(),
                skip_plan: false,
                model: None,
                agent: None,
                budget_usd: None,
            },
        )
        .await
        .unwrap();
    engine
        .apply_task_event(None, task.id, TaskEvent::SlotGranted)
        .await
        .unwrap()
}

/// What the worker does at the start of a run: hold the task if the gate says so.
async fn start_run(engine: &Engine, user: UserId, task: &Task) -> Task {
    let task = engine.task(user, task.id).await.unwrap();
    let event = match engine.spending_gate(user, &task).await.unwrap() {
        None => return task,
        Some(Gate::Paused) => TaskEvent::Paused { input: None },
        Some(Gate::Budget(r)) => TaskEvent::BudgetReached {
            scope: r.scope,
            reason: usage::reason(&r, &task.agent),
            input: None,
        },
    };
    engine.apply_task_event(None, task.id, event).await.unwrap()
}

async fn a_task_past_its_cap_holds_with_a_needs_you_item_until_raised_or_continued(
    backend: Backend,
) {
    let h = harness(backend, None, fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let budgets = Budgets {
        task_usd: Some(0.05),
        ..Budgets::default()
    };
    engine.set_budgets(user, budgets.clone()).await.unwrap();
    assert_eq!(engine.budgets(user).await.unwrap(), budgets);
    let task = planning_task(engine, user, "Add dark mode").await;
    assert_eq!(
        start_run(engine, user, &task).await.state,
        TaskState::Planning
    );

    engine
        .add_task_usage(task.id, 0.06, 1000, 200)
        .await
        .unwrap();
    let held = start_run(engine, user, &task).await;
    assert_eq!(held.state, TaskState::OnHold);
    let hold = held.hold.clone().unwrap();
    assert_eq!(
        (hold.kind, hold.budget),
        (HoldKind::Budget, Some(BudgetScope::Task))
    );
    assert_eq!(
        hold.reason,
        "This task's budget of $0.05 is reached ($0.06 spent): raise it, or continue once."
    );
    let inbox = engine.inbox(user, 100, 100).await.unwrap();
    let item = inbox.iter().find(|i| i.task_id == Some(task.id)).unwrap();
    assert_eq!(item.kind, InboxKind::Budget);
    assert!(item.title.starts_with("Budget reached: "), "{}", item.title);

    // Not above what is spent: refused, nothing changes.
    let low = engine
        .answer_budget(user, task.id, BudgetAnswer::Raise { usd: 0.06 })
        .await;
    assert!(matches!(low, Err(EngineError::Invalid(_))), "{low:?}");
    assert_eq!(
        engine.task(user, task.id).await.unwrap().state,
        TaskState::OnHold
    );

    // Continue once: this run goes past the cap; the next is checked again.
    let once = engine
        .answer_budget(user, task.id, BudgetAnswer::ContinueOnce)
        .await
        .unwrap();
    assert_eq!(once.state, TaskState::Planning);
    assert_eq!(
        start_run(engine, user, &once).await.state,
        TaskState::Planning
    );
    let plan = engine
        .apply_task_event(None, task.id, TaskEvent::PlanProposed("p".into()))
        .await
        .unwrap();
    engine
        .plan_action(user, plan.id, PlanAction::Approve)
        .await
        .unwrap();
    let again = engine.task(user, task.id).await.unwrap();
    assert_eq!(
        start_run(engine, user, &again).await.state,
        TaskState::OnHold
    );

    // Raise: the task's own cap now, and it goes on where it was.
    let raised = engine
        .answer_budget(user, task.id, BudgetAnswer::Raise { usd: 0.5 })
        .await
        .unwrap();
    assert_eq!(raised.state, TaskState::Implementing);
    assert_eq!(raised.budget_usd, Some(0.5));
    assert_eq!(
        start_run(engine, user, &raised).await.state,
        TaskState::Implementing
    );
    assert!(
        engine
            .inbox(user, 100, 100)
            .await
            .unwrap()
            .iter()
            .all(|i| i.task_id != Some(task.id) || i.resolved_at.is_some())
    );
    // A task not on a budget hold cannot be answered.
    let wrong = engine
        .answer_budget(user, task.id, BudgetAnswer::ContinueOnce)
        .await;
    assert!(
        matches!(wrong, Err(EngineError::WrongState(_))),
        "{wrong:?}"
    );
    // Bad amounts are refused.
    let bad = Budgets {
        daily_usd: Some(-1.0),
        ..Budgets::default()
    };
    assert!(matches!(
        engine.set_budgets(user, bad).await,
        Err(EngineError::Invalid(_))
    ));
}

async fn a_daily_cap_counts_every_task_of_the_user(backend: Backend) {
    let h = harness(backend, None, fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let first = planning_task(engine, user, "First").await;
    engine.add_task_usage(first.id, 0.4, 10, 10).await.unwrap();
    engine
        .set_budgets(
            user,
            Budgets {
                daily_usd: Some(0.5),
                ..Budgets::default()
            },
        )
        .await
        .unwrap();
    let second = planning_task(engine, user, "Second").await;
    assert_eq!(
        start_run(engine, user, &second).await.state,
        TaskState::Planning
    );
    engine.add_task_usage(second.id, 0.2, 10, 10).await.unwrap();
    // The first task has spent little itself, but today's spending is past the cap.
    let held = start_run(engine, user, &first).await;
    assert_eq!(held.hold.unwrap().budget, Some(BudgetScope::Day));
    let held = start_run(engine, user, &second).await;
    assert_eq!(held.hold.unwrap().budget, Some(BudgetScope::Day));
    // Raising today's budget frees every task it held.
    engine
        .answer_budget(user, first.id, BudgetAnswer::Raise { usd: 1.0 })
        .await
        .unwrap();
    for t in [&first, &second] {
        assert_eq!(
            engine.task(user, t.id).await.unwrap().state,
            TaskState::Planning
        );
    }
    assert_eq!(engine.budgets(user).await.unwrap().daily_usd, Some(1.0));
}

async fn a_pause_holds_the_next_run_lasts_across_a_restart_and_resume_frees_it(backend: Backend) {
    let h = harness(backend, None, fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let task = planning_task(engine, user, "Paused work").await;
    let mut events = engine.subscribe(user, EventId(0));
    let state = engine.pause(user).await.unwrap();
    assert!(state.paused && state.since.is_some());
    // Pausing twice keeps the first start.
    assert_eq!(engine.pause(user).await.unwrap(), state);
    let updated = loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.name == EventName::UsageUpdated {
            break e.payload.clone();
        }
    };
    assert_eq!(updated["pause"]["paused"], true, "{updated}");
    let held = start_run(engine, user, &task).await;
    assert_eq!(held.hold.unwrap().kind, HoldKind::Paused);
    assert!(engine.paused_users().await.unwrap().contains(&user));

    // A restart keeps the pause.
    let (engine2, shutdown2) = start(&h.url, None, fast_config()).await;
    assert_eq!(engine2.pause_state(user).await.unwrap(), state);
    let resumed = engine2.resume(user).await.unwrap();
    assert!(!resumed.paused);
    assert_eq!(
        engine2.task(user, task.id).await.unwrap().state,
        TaskState::Planning
    );
    assert!(engine2.paused_users().await.unwrap().is_empty());
    shutdown2.cancel();
}

async fn the_usage_report_sums_runs_by_day_source_and_task(backend: Backend) {
    let h = harness(backend, None, fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let cheap = planning_task(engine, user, "Cheap task").await;
    let dear = planning_task(engine, user, "Dear task\nwith more lines").await;
    engine
        .add_task_usage(cheap.id, 0.01, 100, 10)
        .await
        .unwrap();
    engine
        .add_task_usage(dear.id, 0.5, 5000, 700)
        .await
        .unwrap();
    engine
        .add_task_usage(dear.id, 0.25, 2000, 300)
        .await
        .unwrap();
    let now = mainloop_engine::now();
    engine
        .record_quota(
            user,
            &[QuotaWindow {
                agent: "claude".parse().unwrap(),
                window: "five_hour".into(),
                used_percent: Some(42.0),
                resets_at: Some(now.plus_millis(3_600_000)),
                limited: false,
                observed_at: now,
            }],
        )
        .await
        .unwrap();
    let report = engine.usage(user, 7).await.unwrap();
    assert_eq!(report.days.len(), 7);
    assert_eq!(report.to, usage::date_of(now));
    let today = report.days.last().unwrap();
    assert!((today.totals.cost_usd - 0.76).abs() < 1e-9, "{today:?}");
    assert_eq!(today.totals.runs, 3);
    assert_eq!(today.sources[0].source, "claude");
    assert!(report.days[..6].iter().all(|d| d.totals.runs == 0));
    assert_eq!(report.today, today.totals);
    assert_eq!(report.week.runs, 3);
    assert_eq!(report.tasks.len(), 2);
    assert_eq!(report.tasks[0].title, "Dear task");
    assert_eq!(report.tasks[0].totals.runs, 2);
    assert_eq!(report.tasks[0].totals.input_tokens, 7000);
    assert_eq!(report.windows.len(), 1);
    assert_eq!(report.windows[0].used_percent, Some(42.0));
    assert!(!report.pause.paused);
    assert!(matches!(
        engine.usage(user, 0).await,
        Err(EngineError::Invalid(_))
    ));
    assert!(matches!(
        engine.usage(user, 367).await,
        Err(EngineError::Invalid(_))
    ));
}

async fn a_task_created_with_its_own_cap_holds_at_it(backend: Backend) {
    let h = harness(backend, None, fast_config()).await;
    let (engine, user) = (&h.engine, h.user);
    let create = |budget_usd| CreateTask {
        description: "Capped".into(),
        repo: "/src/app".into(),
        skip_plan: true,
        model: None,
        agent: None,
        budget_usd,
    };
    for bad in [0.0, -1.0, f64::NAN, 2e6] {
        let refused = engine.create_task(user, &create(Some(bad))).await;
        assert!(matches!(refused, Err(EngineError::Invalid(_))), "{bad}");
    }
    let task = engine.create_task(user, &create(Some(0.02))).await.unwrap();
    assert_eq!(task.budget_usd, Some(0.02));
    let task = engine
        .apply_task_event(None, task.id, TaskEvent::SlotGranted)
        .await
        .unwrap();
    engine.add_task_usage(task.id, 0.02, 10, 10).await.unwrap();
    let held = start_run(engine, user, &task).await;
    let hold = held.hold.unwrap();
    assert_eq!(hold.budget, Some(BudgetScope::Task));
    assert!(hold.reason.contains("$0.02"), "{}", hold.reason);
}

//! The command line for spending (`mainloop usage`, `pause`, `resume`, `budget`) run as
//! a user runs it against a real server: the budgets set, shown and cleared, a bad
//! amount refused, work paused and resumed, the usage report as JSON and as a chart.

use super::*;
use crate::cli::client::{Out, User};
use mainloop_domain::usage::Usage;

/// `mainloop ARGS` as a user on another machine runs it: its own home, the server and
/// token given as flags.
struct Cli {
    user: User,
    base: String,
    token: String,
}

impl Cli {
    async fn run(&self, args: &[&str]) -> Out {
        let flags = ["--server", &self.base, "--token", &self.token];
        let args: Vec<&str> = args.iter().copied().chain(flags).collect();
        self.user.run(&args).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_pause_and_usage_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let cli = Cli {
        user: User::new(),
        base: server.base.clone(),
        token: server.token.clone().unwrap(),
    };

    // No caps at first.
    assert_eq!(cli.run(&["budget", "--json"]).await.ok().json(), json!({}));
    let out = cli.run(&["budget"]).await.ok();
    assert!(out.stdout.starts_with("Each task:  no cap\n"), "{out:?}");

    // Set, added to, shown, partly cleared: each change keeps what it does not name.
    let out = cli
        .run(&["budget", "set", "--task", "$0.50", "--daily", "5"])
        .await
        .ok();
    assert!(
        out.stdout
            .starts_with("Budgets saved.\nEach task:  at most $0.50\nEach day:   at most $5.00"),
        "{out:?}"
    );
    let doc = cli
        .run(&[
            "budget", "set", "--agent", "claude", "--weekly", "3", "--json",
        ])
        .await
        .ok()
        .json();
    let all = json!({"task_usd": 0.5, "daily_usd": 5.0,
                     "agents": {"claude": {"weekly_usd": 3.0}}});
    assert_eq!(doc, all);
    assert_eq!(get(&cli.base, &cli.token, "/api/budgets").await, all);
    let out = cli.run(&["budget", "show"]).await.ok();
    assert!(
        out.stdout.contains("claude:     at most $3.00 a week\n"),
        "{out:?}"
    );
    cli.run(&["budget", "set", "--clear", "task", "--clear", "daily"])
        .await
        .ok();
    let kept = json!({"agents": {"claude": {"weekly_usd": 3.0}}});
    assert_eq!(cli.run(&["budget", "--json"]).await.ok().json(), kept);

    // Bad amounts: the server's reason (exit 1), or the client's for what is no number
    // (exit 2); nothing changes.
    cli.run(&["budget", "set", "--daily", "0"])
        .await
        .refused(1, "daily_usd must be a positive number of US dollars");
    cli.run(&["budget", "set", "--agent", "claude", "--daily", "-2"])
        .await
        .refused(1, "agents.claude.daily_usd must be a positive number");
    cli.run(&["budget", "set", "--weekly", "2000000"])
        .await
        .refused(1, "at most 1000000");
    cli.run(&["budget", "set", "--weekly", "lots"])
        .await
        .refused(2, "not an amount in US dollars");
    cli.run(&["budget", "set"])
        .await
        .refused(2, "nothing to change");
    assert_eq!(cli.run(&["budget", "--json"]).await.ok().json(), kept);

    // Answering a budget hold for a task that is not on one: the server's reason, and
    // where to look.
    let repo = tempfile::tempdir().unwrap();
    let repo = std::fs::canonicalize(repo.path()).unwrap();
    let task = cli
        .run(&["new", "--json", "--repo", repo.to_str().unwrap(), "fix it"])
        .await
        .ok()
        .json();
    let id = task["id"].as_str().unwrap().to_owned();
    wait_task_state(&cli.base, &cli.token, &id, "failed").await;
    cli.run(&["budget", "continue", &id])
        .await
        .refused(1, "mainloop task");
    cli.run(&["budget", "raise", &id, "2"])
        .await
        .refused(1, "wrong_state");
    cli.run(&[
        "budget",
        "raise",
        "01234567-89ab-7def-8123-456789abcdef",
        "2",
    ])
    .await
    .refused(3, "mainloop tasks");

    // Pause, shown everywhere, then resume; both twice, as they are idempotent.
    for _ in 0..2 {
        let out = cli.run(&["pause"]).await.ok();
        assert!(
            out.stdout.starts_with("All work is paused since "),
            "{out:?}"
        );
    }
    assert_eq!(
        get(&cli.base, &cli.token, "/api/pause").await["paused"],
        true
    );
    let out = cli.run(&["usage"]).await.ok();
    assert!(
        out.stdout.starts_with("All work is paused since "),
        "{out:?}"
    );
    let state = cli.run(&["resume", "--json"]).await.ok().json();
    assert_eq!(state, json!({"paused": false, "since": null}));
    let out = cli.run(&["resume"]).await.ok();
    assert!(out.stdout.starts_with("Resumed"), "{out:?}");

    // The report: the API's shape as JSON, every day of the period listed.
    let doc = cli
        .run(&["usage", "--days", "7", "--json"])
        .await
        .ok()
        .json();
    let usage: Usage = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("not a usage report ({e}): {doc}"));
    assert_eq!(usage.days.len(), 7, "{doc}");
    assert!(!usage.pause.paused);
    assert_eq!(usage.budgets.agents.len(), 1, "{doc}");

    // As text: one chart line per day, oldest first, then the totals and the budgets.
    let out = cli.run(&["usage", "--days", "3"]).await.ok();
    let text = &out.stdout;
    assert!(!text.contains("paused"), "{text}");
    let chart: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Spending per day, "))
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("In all:"))
        .collect();
    assert_eq!(chart.len(), 3, "{text}");
    let today = &usage.to;
    assert!(
        chart[2].starts_with(&format!("  {today}  ")) && chart[2].ends_with(" tokens"),
        "{text}"
    );
    assert!(text.contains("\nBudgets:\n  Today:  "), "{text}");
    assert!(
        text.contains("claude:     at most $3.00 a week\n"),
        "{text}"
    );
    cli.run(&["usage", "--days", "0"]).await.refused(2, "0");
}

/// Waits until task `id` is on hold at a budget.
async fn wait_budget_hold(base: &str, token: &str, id: &str) -> Value {
    wait_for(format!("task {id} to hold at its budget"), || async {
        let t = get(base, token, &format!("/api/tasks/{id}")).await;
        assert_ne!(t["state"], "failed", "{t}");
        (t["state"] == "on_hold" && t["hold"]["kind"] == "budget").then_some(t)
    })
    .await
}

/// A task cap of $0.0001 holds the task at its first new run after it spent; the hold is shown and
/// answered from the command line: continued once, then raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_hold_is_shown_continued_and_raised_from_the_command_line() {
    let Some(claude) = claude_path() else { return };
    let fake = FakeAnthropic::start(script("greeter")).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = start_with_workers(data.path(), &fake, &claude);
    let cli = Cli {
        user: User::new(),
        base: server.base.clone(),
        token: server.token.clone().unwrap(),
    };
    let (base, token) = (cli.base.as_str(), cli.token.as_str());
    cli.run(&["budget", "set", "--task", "0.0001"]).await.ok();
    let repo = super::faults::git_repo();
    let task = cli
        .run(&[
            "new",
            "--json",
            "--repo",
            repo.path().to_str().unwrap(),
            "build the greeter",
        ])
        .await
        .ok()
        .json();
    let id = task["id"].as_str().unwrap().to_owned();
    let short = id[id.len() - 8..].to_owned();

    // The first run is below the cap (the answers and the approval go into its live
    // session, which does the work); the run the changes asked for start is not.
    wait_task_state(base, token, &id, "waiting_answers").await;
    let (status, _) = post(
        base,
        token,
        &format!("/api/tasks/{id}/answers"),
        json!({"answers": {"q1": ["Rust"], "q2": ["Tests"]}}),
    )
    .await;
    assert_eq!(status, 200);
    wait_task_state(base, token, &id, "waiting_plan_review").await;
    cli.run(&["plan", &short, "approve"]).await.ok();
    wait_task_state(base, token, &id, "review").await;
    cli.run(&["review", &short, "changes", "say", "it", "twice"])
        .await
        .ok();
    let held = wait_budget_hold(base, token, &id).await;
    assert_eq!(held["hold"]["budget"], "task", "{held}");
    let out = cli.run(&["task", &short]).await.ok();
    assert!(
        out.stdout.contains("On hold: a budget is reached")
            && out.stdout.contains("This task's budget of $0.000")
            && out
                .stdout
                .contains(&format!("`mainloop budget continue {short}`")),
        "{out:?}"
    );
    let out = cli.run(&["tasks"]).await.ok();
    assert!(out.stdout.contains("on hold, budget reached"), "{out:?}");
    let out = cli.run(&["inbox"]).await.ok();
    assert!(out.stdout.contains("budget reached"), "{out:?}");

    // Continued once: the changes are made; the next ones meet the cap again.
    let out = cli.run(&["budget", "continue", &short]).await.ok();
    assert!(
        out.stdout.starts_with("Continuing once past the budget."),
        "{out:?}"
    );
    wait_task_state(base, token, &id, "review").await;
    cli.run(&["review", &short, "changes", "say", "it", "thrice"])
        .await
        .ok();
    wait_budget_hold(base, token, &id).await;

    // Raised: not to less than was spent, then enough to finish.
    cli.run(&["budget", "raise", &short, "0.00001"])
        .await
        .refused(1, "invalid");
    let out = cli.run(&["budget", "raise", &short, "$100"]).await.ok();
    assert!(
        out.stdout.starts_with("Budget raised to $100.00."),
        "{out:?}"
    );
    let done = wait_task_state(base, token, &id, "review").await;
    assert_eq!(done["budget_usd"], 100.0, "{done}");
    let out = cli.run(&["task", &short]).await.ok();
    assert!(
        out.stdout
            .contains("Budget:   $100.00 (this task's own cap)"),
        "{out:?}"
    );
}

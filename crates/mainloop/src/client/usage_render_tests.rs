//! How `mainloop usage` lays out the report: the chart, the totals, budgets and windows.

use super::*;
use crate::client::views::read;
use serde_json::json;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-12-06 12:00:00 UTC);

fn report() -> UsageView {
    read(&json!({
        "from": "2026-12-03", "to": "2026-12-06",
        "days": [
            {"date": "2026-12-03", "cost_usd": 2.0, "input_tokens": 40000,
             "output_tokens": 5200, "runs": 4, "sources": []},
            {"date": "2026-12-04", "cost_usd": 0.5, "input_tokens": 900,
             "output_tokens": 50, "runs": 1, "sources": []},
            {"date": "2026-12-05", "cost_usd": 0.0, "input_tokens": 0,
             "output_tokens": 0, "runs": 0, "sources": []},
            {"date": "2026-12-06", "cost_usd": 0.004, "input_tokens": 10,
             "output_tokens": 2, "runs": 1, "sources": []},
        ],
        "sources": [
            {"source": "claude", "cost_usd": 2.3, "input_tokens": 40000,
             "output_tokens": 5000, "runs": 4},
            {"source": "main_thread", "cost_usd": 0.204, "input_tokens": 910,
             "output_tokens": 252, "runs": 2},
        ],
        "tasks": [{"task_id": "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b",
                   "title": "build the greeter", "agent": "claude", "state": "on_hold",
                   "cost_usd": 2.3, "input_tokens": 40000, "output_tokens": 5000,
                   "runs": 4}],
        "today": {"cost_usd": 0.004, "input_tokens": 10, "output_tokens": 2, "runs": 1},
        "week": {"cost_usd": 2.504, "input_tokens": 40910, "output_tokens": 5252,
                 "runs": 6},
        "day_resets_at": "2026-12-07T00:00:00Z",
        "week_resets_at": "2026-12-07T00:00:00Z",
        "budgets": {"task_usd": 0.5, "daily_usd": 5.0, "weekly_usd": 2.0,
                    "agents": {"claude": {"daily_usd": 1.0}}},
        "pause": {"paused": false, "since": null},
        "windows": [
            {"agent": "claude", "window": "five_hour", "used_percent": 73.4,
             "resets_at": "2026-12-06T14:10:00Z", "limited": false,
             "observed_at": "2026-12-06T11:00:00Z"},
            {"agent": "claude", "window": "seven_day", "used_percent": null,
             "resets_at": "2026-12-09T16:00:00Z", "limited": true,
             "observed_at": "2026-12-06T11:00:00Z"},
        ],
    }))
}

#[test]
fn bars_scale_to_the_largest_in_eighths() {
    assert_eq!(bar(2.0, 2.0, 4), "████");
    assert_eq!(bar(1.0, 2.0, 4), "██");
    assert_eq!(bar(0.5625, 2.0, 4), "█▏");
    assert_eq!(bar(0.0001, 2.0, 4), "▏", "any spending shows");
    assert_eq!(bar(0.0, 2.0, 4), "");
    assert_eq!(bar(0.0, 0.0, 4), "");
    assert_eq!(bar(f64::NAN, 2.0, 4), "");
    assert_eq!(tokens(950), "950");
    assert_eq!(tokens(45_200), "45.2k");
    assert_eq!(tokens(4_500_000), "4.5M");
}

#[test]
fn the_report_charts_each_day_and_totals_the_period() {
    let out = usage(&report(), NOW);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "Spending per day, 2026-12-03 to 2026-12-06 (UTC):"
    );
    let full = "█".repeat(BAR_WIDTH);
    assert_eq!(
        lines[1],
        format!("  2026-12-03  {full}   $2.00  45.2k tokens")
    );
    assert_eq!(
        lines[2],
        format!(
            "  2026-12-04  {}{}   $0.50    950 tokens",
            "█".repeat(10),
            " ".repeat(30)
        )
    );
    assert_eq!(
        lines[3],
        format!(
            "  2026-12-05  {}   $0.00      0 tokens",
            " ".repeat(BAR_WIDTH)
        )
    );
    assert_eq!(
        lines[4],
        format!("  2026-12-06  ▏{}  $0.004     12 tokens", " ".repeat(39))
    );
    assert_eq!(lines[5], "  In all: $2.50, 46.2k tokens, 6 runs");
    assert!(
        out.contains(
            "\nBy source:\n  SOURCE       COST   TOKENS  RUNS\n  claude       $2.30  45.0k   4\n  \
             main thread  $0.20  1.2k    2\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "\nCostliest tasks:\n  TASK      COST   TOKENS  AGENT   STATE    TITLE\n  \
             3e4f5a6b  $2.30  45.0k   claude  on hold  build the greeter\n"
        ),
        "{out}"
    );
    assert!(!out.contains("paused"), "{out}");
}

#[test]
fn budgets_windows_and_the_pause_in_words() {
    let mut u = report();
    let out = usage(&u, NOW);
    assert!(
        out.contains(
            "\nBudgets:\n  Today:      $0.004 of $5.00 (0%); resets in 12 h\n  \
             This week:  $2.50 of $2.00 (125%, reached); resets in 12 h\n  \
             Each task:  at most $0.50\n  claude:     at most $1.00 a day\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "\nQuota windows:\n  AGENT   WINDOW  USED      RESET\n  \
             claude  5-hour  73% used  resets in 2 h 10 min\n  \
             claude  7-day   LIMITED   resets in 3 d 4 h\n"
        ),
        "{out}"
    );

    u.budgets = read(&json!({}));
    u.windows.clear();
    u.pause = read(&json!({"paused": true, "since": "2026-12-06T11:00:00Z"}));
    let out = usage(&u, NOW);
    assert!(
        out.starts_with(
            "All work is paused since 2026-12-06 11:00 UTC (1 h ago): no agent starts, \
             and running ones stop after their turn. `mainloop resume` goes on.\n\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("  Today:      $0.004 (no cap); resets in 12 h\n"),
        "{out}"
    );
    assert!(
        out.contains("\nQuota windows: none reported yet.\n"),
        "{out}"
    );
    assert_eq!(
        pause_words(&read(&json!({"paused": false})), NOW),
        "Work is not paused: agents start as usual.\n"
    );

    // An empty report (a server a version apart) still reads.
    let empty = usage(&UsageView::default(), NOW);
    assert!(empty.contains("In all: $0.00, 0 tokens, 0 runs"), "{empty}");
}

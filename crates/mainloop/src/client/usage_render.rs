//! `mainloop usage` as text: spend per day as a bar chart, per source, the costliest
//! tasks, today and this week against their budgets, the agents' quota windows, and the
//! pause. Pure functions of the usage report and the current time.

use super::render::{one_line, short_id, state_words, table, wait_words};
use super::views::{PauseView, TotalsView, UsageView, WindowView};
use mainloop_domain::usage::dollars;
use std::fmt::Write as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// The widest bar, in characters: the costliest day's.
pub const BAR_WIDTH: usize = 40;

/// Eighths of a block, for the bar's last character.
const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/// A bar of block characters `value / max` of `width` long, in eighths of a character;
/// any spending at all shows as at least a sliver.
#[must_use]
pub fn bar(value: f64, max: f64, width: usize) -> String {
    if !(value > 0.0 && max > 0.0) {
        return String::new();
    }
    let eighths_wide = width.saturating_mul(8);
    let ratio = (value / max).min(1.0);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let eighths = ((ratio * eighths_wide as f64).round() as usize).clamp(1, eighths_wide);
    let mut out = "█".repeat(eighths / 8);
    if let Some(&part) = EIGHTHS.get(eighths % 8).filter(|c| **c != ' ') {
        out.push(part);
    }
    out
}

/// A token count in a few characters: `950`, `12.3k`, `4.5M`.
#[must_use]
pub fn tokens(n: i64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    match n {
        ..1000 => n.to_string(),
        1000..1_000_000 => format!("{:.1}k", f / 1e3),
        _ => format!("{:.1}M", f / 1e6),
    }
}

fn parse(at: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(at, &Rfc3339).ok()
}

/// `2026-12-06 15:30 UTC`.
fn clock(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default()
}

/// "resets in 3 h 30 min", "has reset", or nothing when the time is unknown.
fn resets(at: Option<&str>, now: OffsetDateTime) -> Option<String> {
    let at = parse(at?)?;
    Some(if at > now {
        format!("resets in {}", wait_words(at - now))
    } else {
        "has reset".to_owned()
    })
}

/// A source's name in words.
fn source_words(source: &str) -> &str {
    if source == "main_thread" {
        "main thread"
    } else {
        source
    }
}

/// A quota window's name in words: `five_hour` is "5-hour", `seven_day` "7-day".
fn window_words(window: &str) -> String {
    match window {
        "five_hour" => "5-hour".to_owned(),
        "seven_day" => "7-day".to_owned(),
        other => other.replace("seven_day", "7-day").replace('_', " "),
    }
}

/// The pause, in words, with what ends it.
#[must_use]
pub fn pause_words(pause: &PauseView, now: OffsetDateTime) -> String {
    if !pause.paused {
        return "Work is not paused: agents start as usual.\n".to_owned();
    }
    let since = match pause.since.as_deref().and_then(parse) {
        Some(at) => format!(
            " since {} ({})",
            clock(at),
            super::render::ago(pause.since.as_deref().unwrap_or_default(), now)
        ),
        None => String::new(),
    };
    format!(
        "All work is paused{since}: no agent starts, and running ones stop after their \
         turn. `mainloop resume` goes on.\n"
    )
}

/// One line per day: date, bar, amount, tokens.
fn chart(u: &UsageView) -> String {
    let max = u.days.iter().map(|d| d.totals.cost_usd).fold(0.0, f64::max);
    let amounts: Vec<String> = u.days.iter().map(|d| dollars(d.totals.cost_usd)).collect();
    let counts: Vec<String> = u.days.iter().map(|d| tokens(d.totals.tokens())).collect();
    let aw = amounts.iter().map(String::len).max().unwrap_or(0);
    let tw = counts.iter().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for ((d, amount), count) in u.days.iter().zip(&amounts).zip(&counts) {
        let bar = bar(d.totals.cost_usd, max, BAR_WIDTH);
        let pad = BAR_WIDTH.saturating_sub(bar.chars().count());
        let _ = writeln!(
            out,
            "  {}  {bar}{}  {amount:>aw$}  {count:>tw$} tokens",
            d.date,
            " ".repeat(pad)
        );
    }
    out
}

/// Spent against a cap: "$0.42 of $5.00 (8%)", "$1.50 (no cap)", "… — reached".
fn against(spent: f64, cap: Option<f64>) -> String {
    match cap {
        Some(cap) if cap > 0.0 => {
            let share = (spent / cap * 100.0).round();
            let reached = if spent >= cap { ", reached" } else { "" };
            format!("{} of {} ({share}%{reached})", dollars(spent), dollars(cap))
        }
        _ => format!("{} (no cap)", dollars(spent)),
    }
}

/// Today and this week against their caps, with the time to each reset; the per-task
/// and per-agent caps.
fn budgets(u: &UsageView, now: OffsetDateTime) -> String {
    let (today, week, b) = (&u.today, &u.week, &u.budgets);
    let with_reset = |line: String, at: &str| match resets(Some(at), now) {
        Some(r) => format!("{line}; {r}"),
        None => line,
    };
    let mut rows = vec![
        [
            "Today:".to_owned(),
            with_reset(against(today.cost_usd, b.daily_usd), &u.day_resets_at),
        ],
        [
            "This week:".to_owned(),
            with_reset(against(week.cost_usd, b.weekly_usd), &u.week_resets_at),
        ],
    ];
    if let Some(cap) = b.task_usd {
        rows.push(["Each task:".to_owned(), format!("at most {}", dollars(cap))]);
    }
    for (name, a) in &b.agents {
        let caps: Vec<String> = [(a.daily_usd, "a day"), (a.weekly_usd, "a week")]
            .into_iter()
            .filter_map(|(cap, per)| cap.map(|c| format!("{} {per}", dollars(c))))
            .collect();
        if !caps.is_empty() {
            rows.push([format!("{name}:"), format!("at most {}", caps.join(", "))]);
        }
    }
    let width = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
    rows.iter()
        .map(|r| format!("  {:<width$}  {}\n", r[0], r[1]))
        .collect()
}

/// One line per quota window: agent, window, how much is used, when it resets.
fn windows(list: &[WindowView], now: OffsetDateTime) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            let used = match (w.limited, w.used_percent) {
                (true, _) => "LIMITED".to_owned(),
                (false, Some(p)) => format!("{p:.0}% used"),
                (false, None) => "in use".to_owned(),
            };
            vec![
                w.agent.clone(),
                window_words(&w.window),
                used,
                resets(w.resets_at.as_deref(), now).unwrap_or_default(),
            ]
        })
        .collect();
    indent(&table(&["AGENT", "WINDOW", "USED", "RESET"], &rows))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The whole report.
#[must_use]
pub fn usage(u: &UsageView, now: OffsetDateTime) -> String {
    let mut out = String::new();
    if u.pause.paused {
        out.push_str(&pause_words(&u.pause, now));
        out.push('\n');
    }
    let _ = writeln!(out, "Spending per day, {} to {} (UTC):", u.from, u.to);
    out.push_str(&chart(u));
    let mut total = TotalsView::default();
    for d in &u.days {
        total.cost_usd += d.totals.cost_usd;
        total.input_tokens += d.totals.input_tokens;
        total.output_tokens += d.totals.output_tokens;
        total.runs += d.totals.runs;
    }
    let _ = writeln!(
        out,
        "  In all: {}, {} tokens, {} runs",
        dollars(total.cost_usd),
        tokens(total.tokens()),
        total.runs
    );
    if !u.sources.is_empty() {
        let rows: Vec<Vec<String>> = u
            .sources
            .iter()
            .map(|s| {
                vec![
                    source_words(&s.source).to_owned(),
                    dollars(s.totals.cost_usd),
                    tokens(s.totals.tokens()),
                    s.totals.runs.to_string(),
                ]
            })
            .collect();
        out.push_str("\nBy source:\n");
        out.push_str(&indent(&table(
            &["SOURCE", "COST", "TOKENS", "RUNS"],
            &rows,
        )));
    }
    if !u.tasks.is_empty() {
        let rows: Vec<Vec<String>> = u
            .tasks
            .iter()
            .map(|t| {
                vec![
                    short_id(&t.task_id),
                    dollars(t.totals.cost_usd),
                    tokens(t.totals.tokens()),
                    t.agent.clone(),
                    state_words(&t.state).to_owned(),
                    one_line(&t.title, 50),
                ]
            })
            .collect();
        out.push_str("\nCostliest tasks:\n");
        out.push_str(&indent(&table(
            &["TASK", "COST", "TOKENS", "AGENT", "STATE", "TITLE"],
            &rows,
        )));
    }
    out.push_str("\nBudgets:\n");
    out.push_str(&budgets(u, now));
    if u.windows.is_empty() {
        out.push_str("\nQuota windows: none reported yet.\n");
    } else {
        out.push_str("\nQuota windows:\n");
        out.push_str(&windows(&u.windows, now));
    }
    out
}

#[cfg(test)]
#[path = "usage_render_tests.rs"]
mod tests;

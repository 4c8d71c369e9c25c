//! `mainloop budget`: the spending caps shown, and changed by reading them, changing the
//! ones named and putting the whole back (so the caps not named stay as they are).

use super::http::ClientError;
use super::views::{BudgetsView, read};
use super::{Ctx, print};
use clap::{Args, ValueEnum};
use mainloop_domain::usage::dollars;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;

/// A cap `--clear` removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Cap {
    Task,
    Daily,
    Weekly,
}

impl Cap {
    const fn key(self) -> &'static str {
        match self {
            Self::Task => "task_usd",
            Self::Daily => "daily_usd",
            Self::Weekly => "weekly_usd",
        }
    }

    const fn flag(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
        }
    }
}

/// What `mainloop budget set` changes.
#[derive(Debug, Default, Args)]
pub struct Change {
    /// The most one task may cost, in US dollars.
    #[arg(long, value_name = "USD", value_parser = amount, allow_negative_numbers = true)]
    pub task: Option<f64>,
    /// The most all work (or, with --agent, that agent's) may cost in a day (UTC).
    #[arg(long, value_name = "USD", value_parser = amount, allow_negative_numbers = true)]
    pub daily: Option<f64>,
    /// The most all work (or, with --agent, that agent's) may cost in a week (from
    /// Monday, UTC).
    #[arg(long, value_name = "USD", value_parser = amount, allow_negative_numbers = true)]
    pub weekly: Option<f64>,
    /// Change this agent's caps (`mainloop agents` lists them) instead of the user's.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Remove a cap (repeatable).
    #[arg(long, value_name = "CAP")]
    pub clear: Vec<Cap>,
}

/// An amount in US dollars as typed: `2.5`, `$2.50`. The server checks its range.
///
/// # Errors
/// Not a finite number.
pub fn amount(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let t = t.strip_prefix('$').unwrap_or(t);
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!(
            "{text:?} is not an amount in US dollars (e.g. 2.50)"
        )),
    }
}

/// `budgets` (the API's `Budgets`) with `change` made.
///
/// # Errors
/// A change that names nothing, a cap both set and cleared, or a task cap for an agent.
pub fn apply(budgets: &Value, change: &Change) -> Result<Value, ClientError> {
    let usage = |m: &str| Err(ClientError::Usage(m.to_owned()));
    let sets = [
        (Cap::Task, change.task),
        (Cap::Daily, change.daily),
        (Cap::Weekly, change.weekly),
    ];
    if sets.iter().all(|(_, v)| v.is_none()) && change.clear.is_empty() {
        return usage("nothing to change: give --task, --daily, --weekly or --clear");
    }
    if let Some((cap, _)) = sets
        .iter()
        .find(|(cap, v)| v.is_some() && change.clear.contains(cap))
    {
        return usage(&format!(
            "--{0} and --clear {0} together: set it or clear it",
            cap.flag()
        ));
    }
    if change.agent.is_some() && (change.task.is_some() || change.clear.contains(&Cap::Task)) {
        return usage("an agent has daily and weekly caps only; --task is per task");
    }
    let mut all = budgets.as_object().cloned().unwrap_or_default();
    let edit = |caps: &mut Map<String, Value>| {
        for (cap, v) in sets {
            if let Some(v) = v {
                caps.insert(cap.key().to_owned(), json!(v));
            }
        }
        for cap in &change.clear {
            caps.remove(cap.key());
        }
    };
    match &change.agent {
        None => edit(&mut all),
        Some(name) => {
            let mut agents = all
                .remove("agents")
                .and_then(|a| a.as_object().cloned())
                .unwrap_or_default();
            let mut own = agents
                .remove(name)
                .and_then(|a| a.as_object().cloned())
                .unwrap_or_default();
            edit(&mut own);
            if !own.is_empty() {
                agents.insert(name.clone(), Value::Object(own));
            }
            if !agents.is_empty() {
                all.insert("agents".to_owned(), Value::Object(agents));
            }
        }
    }
    Ok(Value::Object(all))
}

/// The caps in words.
#[must_use]
pub fn text(b: &BudgetsView) -> String {
    let cap = |v: Option<f64>| {
        v.map_or_else(
            || "no cap".to_owned(),
            |v| format!("at most {}", dollars(v)),
        )
    };
    let mut rows = vec![
        ("Each task:".to_owned(), cap(b.task_usd)),
        (
            "Each day:".to_owned(),
            format!("{} (UTC)", cap(b.daily_usd)),
        ),
        (
            "Each week:".to_owned(),
            format!("{} (from Monday, UTC)", cap(b.weekly_usd)),
        ),
    ];
    for (name, a) in &b.agents {
        let caps: Vec<String> = [(a.daily_usd, "a day"), (a.weekly_usd, "a week")]
            .into_iter()
            .filter_map(|(c, per)| c.map(|c| format!("{} {per}", dollars(c))))
            .collect();
        if !caps.is_empty() {
            rows.push((format!("{name}:"), format!("at most {}", caps.join(", "))));
        }
    }
    let width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let _ = writeln!(out, "{label:<width$}  {value}");
    }
    out.push_str("(change them with `mainloop budget set`)\n");
    out
}

/// `mainloop budget` / `mainloop budget show`.
pub async fn show(ctx: &Ctx) -> Result<(), ClientError> {
    let body = ctx.api.get("/api/budgets", &[]).await?;
    ctx.show(&body, || text(&read(&body)))
}

/// `mainloop budget set …`.
pub async fn set(ctx: &Ctx, change: &Change) -> Result<(), ClientError> {
    let current = ctx.api.get("/api/budgets", &[]).await?;
    let wanted = apply(&current, change)?;
    let body = ctx.api.put("/api/budgets", &wanted).await?;
    if ctx.json {
        return super::print_json(&body);
    }
    print(&format!("Budgets saved.\n{}", text(&read(&body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(f: impl FnOnce(&mut Change)) -> Change {
        let mut c = Change::default();
        f(&mut c);
        c
    }

    #[test]
    fn amounts_as_typed() {
        assert_eq!(amount("2.5"), Ok(2.5));
        assert_eq!(amount(" $0.05"), Ok(0.05));
        assert_eq!(amount("-1"), Ok(-1.0), "the server says why not");
        for bad in ["", "two", "inf", "NaN", "$"] {
            let e = amount(bad).unwrap_err();
            assert!(e.contains("not an amount in US dollars"), "{e}");
        }
    }

    #[test]
    fn changes_keep_what_they_do_not_name() {
        let now = json!({"task_usd": 0.5, "weekly_usd": 20.0,
                         "agents": {"codex": {"daily_usd": 1.0}}});
        let got = apply(&now, &change(|c| c.daily = Some(5.0))).unwrap();
        assert_eq!(
            got,
            json!({"task_usd": 0.5, "daily_usd": 5.0, "weekly_usd": 20.0,
                   "agents": {"codex": {"daily_usd": 1.0}}})
        );
        let got = apply(&got, &change(|c| c.clear = vec![Cap::Task, Cap::Daily])).unwrap();
        assert_eq!(
            got,
            json!({"weekly_usd": 20.0, "agents": {"codex": {"daily_usd": 1.0}}})
        );
        let got = apply(
            &got,
            &change(|c| {
                c.agent = Some("claude".into());
                c.weekly = Some(3.0);
            }),
        )
        .unwrap();
        assert_eq!(got["agents"]["claude"], json!({"weekly_usd": 3.0}));
        // An agent with no cap left is gone, and so is an empty map of agents.
        let got = apply(
            &json!({"agents": {"codex": {"daily_usd": 1.0}}}),
            &change(|c| {
                c.agent = Some("codex".into());
                c.clear = vec![Cap::Daily];
            }),
        )
        .unwrap();
        assert_eq!(got, json!({}));
        assert_eq!(
            apply(&Value::Null, &change(|c| c.task = Some(1.0))).unwrap(),
            json!({"task_usd": 1.0})
        );
    }

    #[test]
    fn changes_that_make_no_sense_are_usage_errors() {
        let none = apply(&json!({}), &Change::default()).unwrap_err();
        assert_eq!(none.exit_code(), 2);
        assert!(none.to_string().contains("nothing to change"), "{none}");
        let both = apply(
            &json!({}),
            &change(|c| {
                c.daily = Some(1.0);
                c.clear = vec![Cap::Daily];
            }),
        )
        .unwrap_err();
        assert!(both.to_string().contains("set it or clear it"), "{both}");
        let task = apply(
            &json!({}),
            &change(|c| {
                c.agent = Some("claude".into());
                c.task = Some(1.0);
            }),
        )
        .unwrap_err();
        assert!(
            task.to_string().contains("daily and weekly caps only"),
            "{task}"
        );
    }

    #[test]
    fn caps_in_words() {
        let b = read(&json!({"task_usd": 0.05, "daily_usd": 5.0,
                             "agents": {"claude": {"daily_usd": 1.0, "weekly_usd": 4.0}}}));
        assert_eq!(
            text(&b),
            "Each task:  at most $0.05\nEach day:   at most $5.00 (UTC)\n\
             Each week:  no cap (from Monday, UTC)\nclaude:     at most $1.00 a day, $4.00 a week\n\
             (change them with `mainloop budget set`)\n"
        );
    }
}

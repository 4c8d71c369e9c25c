//! The invariants on GitHub's side, checked after the run against the fake GitHub's
//! state: one issue and one pull request per task, each of mainloop's comments once.

use crate::check::{Checker, s};
use crate::gh::{self, Gh};
use anyhow::Result;
use serde_json::Value;
use std::collections::BTreeMap;

fn by_bot(comments: &[Value]) -> Vec<&Value> {
    comments
        .iter()
        .filter(|c| c["user"]["login"] == gh::BOT)
        .collect()
}

fn count(comments: &[&Value], needle: &str) -> usize {
    comments
        .iter()
        .filter(|c| s(&c["body"]).contains(needle))
        .count()
}

/// Each identical comment body once per thread.
fn no_repeats(c: &mut Checker, label: &str, comments: &[&Value]) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for x in comments {
        *seen.entry(s(&x["body"])).or_default() += 1;
    }
    for (body, n) in seen {
        c.check(n == 1, || format!("{label}: mainloop posted {n}× {body:?}"));
    }
}

/// A task on GitHub, and where the human decided.
#[derive(Debug)]
pub struct GhTask {
    pub id: String,
    pub title: String,
    pub branch: String,
    pub answers_on_github: bool,
    pub plan_on_github: bool,
}

/// GitHub: one issue and one pull request per task, each of mainloop's comments once.
///
/// The mirror brings GitHub up to the task's current state, so a step decided in the app
/// before the mirror got to it (quickly, or while a crash delayed the mirror) is never
/// posted, nor acknowledged: such a comment appears at most once. A step decided on
/// GitHub needs its comment, which then appears exactly once.
pub async fn github(
    c: &mut Checker,
    gh: &Gh,
    tasks: &[GhTask],
    rounds: &BTreeMap<String, usize>,
) -> Result<()> {
    let issues = gh.issues().await?;
    let pulls = gh.pulls().await?;
    let plain: Vec<&Value> = issues
        .iter()
        .filter(|i| i.get("pull_request").is_none())
        .collect();
    c.check(plain.len() == tasks.len(), || {
        format!(
            "GitHub has {} issues for {} tasks",
            plain.len(),
            tasks.len()
        )
    });
    c.check(pulls.len() == tasks.len(), || {
        format!(
            "GitHub has {} pull requests for {} tasks",
            pulls.len(),
            tasks.len()
        )
    });
    for t in tasks {
        let (id, title, branch) = (&t.id, &t.title, &t.branch);
        let mine: Vec<&&Value> = plain
            .iter()
            .filter(|i| i["title"] == title.as_str())
            .collect();
        c.check(mine.len() == 1, || {
            format!("task {id}: {} issues titled {title:?}", mine.len())
        });
        let prs: Vec<&Value> = pulls
            .iter()
            .filter(|p| p["head"]["ref"] == branch.as_str())
            .collect();
        c.check(prs.len() == 1, || {
            format!("task {id}: {} pull requests from {branch}", prs.len())
        });
        let (Some(issue), Some(pr)) = (mine.first(), prs.first()) else {
            continue;
        };
        let issue_no = issue["number"].as_u64().unwrap_or_default();
        let pr_no = pr["number"].as_u64().unwrap_or_default();
        c.check(issue["state"] == "closed", || {
            format!("task {id}: issue #{issue_no} is {}", issue["state"])
        });
        c.check(!pr["merged_at"].is_null(), || {
            format!("task {id}: pull request #{pr_no} is not merged")
        });
        c.check(
            s(&pr["body"]).contains(&format!("Closes #{issue_no}")),
            || format!("task {id}: pull request #{pr_no} does not close #{issue_no}"),
        );

        let on_issue = gh.comments(issue_no).await?;
        let bot = by_bot(&on_issue);
        let label = format!("task {id} issue #{issue_no}");
        let r = rounds.get(id).copied().unwrap_or(1);
        for (needle, want) in [
            ("Draft pull request", 1),
            ("already", 0),
            ("failed", 0),
            ("Cancelled", 0),
        ] {
            let n = count(&bot, needle);
            c.check(n == want, || {
                format!("{label}: {n} comments with {needle:?} ({want} expected)")
            });
        }
        let asked = count(&bot, "The worker has questions");
        let ok = if t.answers_on_github {
            asked == r
        } else {
            asked <= r
        };
        c.check(ok, || {
            format!(
                "{label}: {asked} rounds of questions posted, of {r} (all needed: {})",
                t.answers_on_github
            )
        });
        let plans = count(&bot, "The worker's plan");
        let ok = if t.plan_on_github {
            plans == 1
        } else {
            plans <= 1
        };
        c.check(ok, || {
            format!(
                "{label}: the plan posted {plans}× (once{})",
                if t.plan_on_github { "" } else { " at most" }
            )
        });
        let decided = count(&bot, "Plan approved");
        c.check(decided == plans, || {
            format!("{label}: the decision told {decided}×, the plan posted {plans}×")
        });
        let acks = count(&bot, "Thanks @") + count(&bot, "Answered in mainloop");
        let r = asked;
        c.check(acks == r, || {
            format!("{label}: answers acknowledged {acks}× (once per round posted: {r})")
        });
        no_repeats(c, &label, &bot);

        let on_pr = gh.comments(pr_no).await?;
        let bot = by_bot(&on_pr);
        let label = format!("task {id} pull request #{pr_no}");
        for (needle, want) in [("Ready for review", 1), ("Pushed", 0), ("failed", 0)] {
            let n = count(&bot, needle);
            c.check(n == want, || {
                format!("{label}: {n} comments with {needle:?} ({want} expected)")
            });
        }
        no_repeats(c, &label, &bot);
    }
    Ok(())
}

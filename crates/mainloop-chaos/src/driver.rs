//! The human: starts each task (in the chat, or over the API), answers its questions
//! (in the app or on the plan issue), approves its plan (button, `/approve`, or 👍),
//! reports CI for its pull request, and approves the work — whatever the server is
//! doing. Every decision is re-derived from the task's state as the server reports it,
//! so a decision lost in a crash is simply made again, and one that landed is not.

use crate::api::{Api, Sent};
use crate::gh::{self, Gh};
use crate::script::ChatSpawn;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How the plan gets approved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approve {
    App,
    Comment,
    ThumbsUp,
}

/// One task's script.
#[derive(Clone, Debug)]
pub struct Plan {
    pub index: usize,
    pub github: bool,
    pub description: String,
    /// The repository as the user names it.
    pub repo: String,
    /// Started by a chat message carrying this token (else over the API).
    pub chat: Option<ChatSpawn>,
    pub answer_on_github: bool,
    pub approve: Approve,
    pub start_after: Duration,
    /// The agent the task asks for (None: the server's default, Claude).
    pub agent: Option<String>,
    /// The runner labels it requires (`runner_labels`; none: it may run on the server).
    pub runner_labels: Vec<String>,
}

impl Plan {
    /// What the user writes in the chat to have the model spawn it.
    pub fn chat_text(&self) -> Option<String> {
        self.chat
            .as_ref()
            .map(|c| format!("Please start a worker for {} now.", c.token))
    }
}

/// How a task's drive ended.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// The task's id, once it existed.
    pub id: Option<String>,
    pub state: Option<String>,
    /// Why the drive stopped short of `merged`.
    pub problem: Option<String>,
    /// Observed states, in order, with the second they were seen at.
    pub timeline: Vec<(f64, String)>,
}

/// Posts a chat message exactly once, whatever the server does meanwhile: after a failed
/// send, the thread says whether it was stored.
pub async fn post_chat(api: &Api, text: &str) -> Result<()> {
    loop {
        match api.post("/api/chat", &json!({"text": text})).await {
            Sent::Answered(202, _) => return Ok(()),
            Sent::Answered(s, body) if s < 500 => bail!("POST /api/chat: {s} {body}"),
            Sent::Answered(..) | Sent::Unreachable => {}
        }
        let stored = api
            .messages()
            .await?
            .iter()
            .any(|m| m["role"] == "user" && m["text"] == text);
        if stored {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn find_task(api: &Api, description: &str) -> Result<Option<Value>> {
    Ok(api
        .tasks()
        .await?
        .into_iter()
        .find(|t| t["description"] == description))
}

/// Creates the task (once) and returns its id.
async fn create(api: &Api, plan: &Plan, deadline: &Deadline) -> Result<String> {
    if let Some(text) = plan.chat_text() {
        post_chat(api, &text).await?;
        // The model spawns it in the turn that answers.
        loop {
            if let Some(t) = find_task(api, &plan.description).await? {
                return Ok(t["id"].as_str().unwrap_or_default().to_owned());
            }
            if deadline.passed() {
                bail!("the chat never spawned the task ({})", deadline.why());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    loop {
        let mut body = json!({"description": plan.description, "repo": plan.repo});
        if let Some(agent) = &plan.agent {
            body["agent"] = json!(agent);
        }
        if !plan.runner_labels.is_empty() {
            body["runner_labels"] = json!(plan.runner_labels);
        }
        match api.post("/api/tasks", &body).await {
            Sent::Answered(201, t) => return Ok(t["id"].as_str().unwrap_or_default().to_owned()),
            Sent::Answered(s, b) if s < 500 => bail!("POST /api/tasks: {s} {b}"),
            Sent::Answered(..) | Sent::Unreachable => {}
        }
        if let Some(t) = find_task(api, &plan.description).await? {
            return Ok(t["id"].as_str().unwrap_or_default().to_owned());
        }
        if deadline.passed() {
            bail!("could not create the task ({})", deadline.why());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the human already did on GitHub (the fake keeps it; nothing to reconcile).
#[derive(Default)]
struct Done {
    issue: Option<u64>,
    answered: BTreeSet<u64>,
    approved: BTreeSet<u64>,
    ci: BTreeSet<String>,
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
}

/// The latest comment by mainloop on `number` containing `needle`.
async fn bot_comment(gh: &Gh, number: u64, needle: &str) -> Result<Option<u64>> {
    Ok(gh
        .comments(number)
        .await?
        .iter()
        .rev()
        .find(|c| {
            c["user"]["login"] == gh::BOT && c["body"].as_str().is_some_and(|b| b.contains(needle))
        })
        .and_then(|c| c["id"].as_u64()))
}

async fn issue_number(gh: &Gh, description: &str) -> Result<Option<u64>> {
    let title = first_line(description);
    Ok(gh
        .issues()
        .await?
        .iter()
        .find(|i| i.get("pull_request").is_none() && i["title"] == title.as_str())
        .and_then(|i| i["number"].as_u64()))
}

/// Each question's first option, as the app sends answers.
fn app_answers(task: &Value) -> Value {
    let mut answers = serde_json::Map::new();
    for q in task["questions"].as_array().into_iter().flatten() {
        if let (Some(id), Some(label)) = (q["id"].as_str(), q["options"][0]["label"].as_str()) {
            answers.insert(id.to_owned(), json!([label]));
        }
    }
    json!({ "answers": answers })
}

/// The same answers, as a comment on the issue.
fn issue_answers(task: &Value) -> String {
    let n = task["questions"].as_array().map_or(0, Vec::len);
    (1..=n)
        .map(|i| format!("{i}: 1"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// When the drives stop trying: at the run's time limit, or as soon as a job gave up
/// (the run has failed then, and waiting out the limit would only spend the budget).
#[derive(Clone, Debug)]
pub struct Deadline {
    pub at: Instant,
    pub gave_up: Arc<AtomicBool>,
}

impl Deadline {
    pub fn passed(&self) -> bool {
        Instant::now() > self.at || self.gave_up.load(Ordering::SeqCst)
    }

    pub fn why(&self) -> &'static str {
        if self.gave_up.load(Ordering::SeqCst) {
            "stopped early: a job gave up"
        } else {
            "the run's time was up"
        }
    }
}

/// Drives one task to `merged` (or until `deadline`).
pub async fn drive(api: Api, gh: Gh, plan: Plan, started: Instant, deadline: Deadline) -> Outcome {
    tokio::time::sleep(plan.start_after).await;
    let mut outcome = Outcome {
        plan: plan.clone(),
        id: None,
        state: None,
        problem: None,
        timeline: Vec::new(),
    };
    let id = match create(&api, &plan, &deadline).await {
        Ok(id) => id,
        Err(e) => {
            outcome.problem = Some(format!("{e:#}"));
            return outcome;
        }
    };
    outcome.id = Some(id.clone());
    let mut done = Done::default();
    loop {
        let step = step(&api, &gh, &plan, &id, &mut done).await;
        match step {
            Ok(state) => {
                if outcome.timeline.last().is_none_or(|(_, s)| *s != state) {
                    outcome
                        .timeline
                        .push((started.elapsed().as_secs_f64(), state.clone()));
                }
                outcome.state = Some(state.clone());
                match state.as_str() {
                    "merged" => return outcome,
                    "failed" | "cancelled" => {
                        let error = api
                            .task(&id)
                            .await
                            .map(|t| t["error"].to_string())
                            .unwrap_or_default();
                        outcome.problem = Some(format!("the task ended {state}: {error}"));
                        return outcome;
                    }
                    _ => {}
                }
            }
            Err(e) => {
                outcome.problem = Some(format!("{e:#}"));
                return outcome;
            }
        }
        if deadline.passed() {
            outcome.problem = Some(format!(
                "still {} ({})",
                outcome.state.as_deref().unwrap_or("unknown"),
                deadline.why()
            ));
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Looks at the task once and does what the human would; returns its state.
async fn step(api: &Api, gh: &Gh, plan: &Plan, id: &str, done: &mut Done) -> Result<String> {
    let task = api.task(id).await?;
    let state = task["state"].as_str().unwrap_or_default().to_owned();
    if plan.github && done.issue.is_none() {
        done.issue = issue_number(gh, &plan.description).await?;
    }
    match state.as_str() {
        "waiting_answers" if plan.answer_on_github => {
            if let Some(issue) = done.issue
                && let Some(c) = bot_comment(gh, issue, "The worker has questions").await?
                && done.answered.insert(c)
            {
                gh.comment(issue, &issue_answers(&task)).await?;
            }
        }
        "waiting_answers" => {
            send(
                api,
                &format!("/api/tasks/{id}/answers"),
                &app_answers(&task),
            )
            .await?;
        }
        "waiting_plan_review" => match plan.approve {
            Approve::App => {
                send(
                    api,
                    &format!("/api/tasks/{id}/plan"),
                    &json!({"action": "approve"}),
                )
                .await?;
            }
            Approve::Comment | Approve::ThumbsUp => {
                if let Some(issue) = done.issue
                    && let Some(c) = bot_comment(gh, issue, "The worker's plan").await?
                    && done.approved.insert(c)
                {
                    if plan.approve == Approve::Comment {
                        gh.comment(issue, "/approve").await?;
                    } else {
                        gh.thumbs_up(c).await?;
                    }
                }
            }
        },
        "checking" if plan.github => {
            if let Some(branch) = task["branch"].as_str() {
                let head = gh
                    .pulls()
                    .await?
                    .into_iter()
                    .find(|p| p["head"]["ref"] == branch)
                    .and_then(|p| p["head"]["sha"].as_str().map(str::to_owned));
                if let Some(sha) = head
                    && done.ci.insert(sha.clone())
                {
                    gh.ci_success(&sha).await.context("reporting CI")?;
                }
            }
        }
        "review" if task["core"]["merge_requested"] != true => {
            send(
                api,
                &format!("/api/tasks/{id}/review"),
                &json!({"action": "approve"}),
            )
            .await?;
        }
        _ => {}
    }
    Ok(state)
}

/// A decision in the app. Safe to repeat: the task's state machine refuses a second one
/// (409), and one lost to a crash is sent again on the next look.
async fn send(api: &Api, path: &str, body: &Value) -> Result<()> {
    match api.post(path, body).await {
        Sent::Answered(s, _) if s < 300 || s == 409 || s >= 500 => Ok(()),
        Sent::Answered(s, b) => bail!("POST {path}: {s} {b}"),
        Sent::Unreachable => Ok(()),
    }
}

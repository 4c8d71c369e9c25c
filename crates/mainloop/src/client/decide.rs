//! The human's decisions from the terminal: answering questions, deciding on a plan or
//! on finished work, answering a budget hold, cancelling and retrying.

use super::answer;
use super::http::ClientError;
use super::tasks::fetch;
use super::views::{TaskView, read};
use super::{Ctx, ids, render};
use serde_json::{Value, json};
use std::io::Write;

/// What the human reads after a decision: where the task is now.
fn after(task: &Value, done: &str) -> String {
    let t: TaskView = read(task);
    format!(
        "{done} Task {} is now {}.\n",
        render::short_id(&t.id),
        render::state_words(&t.state)
    )
}

/// `mainloop answer ID`: asks each pending question on the terminal (or reads the
/// answers, a line each, from a pipe) and sends them together.
pub async fn answer(ctx: &Ctx, wanted: &str) -> Result<(), ClientError> {
    let id = ids::resolve(&ctx.api, wanted).await?;
    let task: TaskView = read(&fetch(ctx, &id).await?);
    if task.state != "waiting_answers" || task.questions.is_empty() {
        return Err(ClientError::Refused(format!(
            "task {} is not waiting for answers (it is {}); see `mainloop task {}`",
            render::short_id(&id),
            render::state_words(&task.state),
            render::short_id(&id)
        )));
    }
    let answers = {
        let mut input = std::io::stdin().lock();
        // The questions go where the human looks; with --json, stdout is for the result.
        let mut out: Box<dyn Write> = if ctx.json {
            Box::new(std::io::stderr().lock())
        } else {
            Box::new(std::io::stdout().lock())
        };
        let answers = answer::ask(&task.questions, &mut input, &mut out)?;
        writeln!(out).map_err(|e| ClientError::local("writing to the terminal", e))?;
        answers
    };
    let body = json!({ "answers": answers });
    let updated = ctx
        .api
        .post(&format!("/api/tasks/{id}/answers"), Some(&body))
        .await?;
    ctx.show(&updated, || after(&updated, "Answers sent."))
}

/// `mainloop plan ID …` and `mainloop review ID …`: `what` is `plan` or `review`.
pub async fn decide(
    ctx: &Ctx,
    wanted: &str,
    what: &str,
    action: &str,
    feedback: Option<String>,
) -> Result<(), ClientError> {
    let id = ids::resolve(&ctx.api, wanted).await?;
    let body = json!({"action": action, "feedback": feedback});
    let task = ctx
        .api
        .post(&format!("/api/tasks/{id}/{what}"), Some(&body))
        .await
        .map_err(|e| explain(e, &id))?;
    let done = match (what, action) {
        ("plan", "approve") => "Plan approved.",
        ("plan", "revise") => "Revision requested.",
        ("plan", _) => "Cancelled.",
        (_, "approve") => "Work approved.",
        _ => "Changes requested.",
    };
    ctx.show(&task, || after(&task, done))
}

/// `mainloop cancel ID` and `mainloop retry ID`.
pub async fn simple(ctx: &Ctx, wanted: &str, action: &str) -> Result<(), ClientError> {
    let id = ids::resolve(&ctx.api, wanted).await?;
    let task = ctx
        .api
        .post(&format!("/api/tasks/{id}/{action}"), None)
        .await
        .map_err(|e| explain(e, &id))?;
    let done = if action == "cancel" {
        "Cancelled."
    } else {
        "Retrying."
    };
    ctx.show(&task, || after(&task, done))
}

/// `mainloop budget raise ID USD` (`usd` set) and `mainloop budget continue ID`: a task on
/// hold at a budget goes on, the budget raised or passed once.
pub async fn budget(ctx: &Ctx, wanted: &str, usd: Option<f64>) -> Result<(), ClientError> {
    let id = ids::resolve(&ctx.api, wanted).await?;
    let body = match usd {
        Some(usd) => json!({"action": "raise", "usd": usd}),
        None => json!({"action": "continue_once"}),
    };
    let task = ctx
        .api
        .post(&format!("/api/tasks/{id}/budget"), Some(&body))
        .await
        .map_err(|e| explain(e, &id))?;
    let done = match usd {
        Some(usd) => format!("Budget raised to {}.", mainloop_domain::usage::dollars(usd)),
        None => "Continuing once past the budget.".to_owned(),
    };
    ctx.show(&task, || after(&task, &done))
}

/// Adds what to do to the server's refusal.
fn explain(e: ClientError, id: &str) -> ClientError {
    match e {
        ClientError::Refused(m) => ClientError::Refused(format!(
            "{m}; see where the task stands with `mainloop task {}`",
            render::short_id(id)
        )),
        ClientError::NotFound(_) => {
            ClientError::NotFound(format!("no task {id}; list them with `mainloop tasks`"))
        }
        other => other,
    }
}

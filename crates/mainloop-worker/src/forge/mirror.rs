//! The outbound mirror: what the forge should show of a task in its current state — the
//! plan issue, the questions and the plan posted there, decisions made in the app told
//! there, the pull request marked ready, a failure told, issue and pull request closed
//! at the end. [`plan`] decides it, purely, as a list of [`Write`]s from the task and
//! the mirror record; [`sync`] (the `forge.sync` job) carries them out in order through
//! the write ledger, recording each one's outcome as it lands.

use super::error::FlowError;
use super::jobs::{finish, job_error, lock, schedule_watch};
use super::ledger::{Key, digest};
use super::state::{Ctx, Made, Mirror, Write as Once, context};
use crate::Runtime;
use crate::task::status;
use mainloop_domain::records::Task;
use mainloop_domain::task::TaskState;
use mainloop_engine::{ForgeSync, JobContext, JobError};
use mainloop_forge::replies::{plan_comment, questions_comment};
use mainloop_forge::{Cursor, PrState, PullRequest};

/// Where a comment goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Thread {
    Issue,
    Pull(u64),
}

/// One thing to do on the forge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Comment {
        on: Thread,
        key: Key,
        body: String,
    },
    MarkReady(PullRequest),
    ClosePull(u64),
    CloseIssue,
    /// Nothing on the forge: only the record changes.
    Record,
    /// Watch the forge for what the task waits on, from now.
    Watch,
}

/// What the record says once an action landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    QuestionsPosted(String),
    /// The plan comment's id comes from the comment made.
    PlanPosted(String),
    AnswersAcknowledged(String),
    PlanAcknowledged,
    ReadyMarked,
    Closed,
    FailurePosted(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Write {
    pub action: Action,
    pub then: Option<Change>,
}

fn write(action: Action, then: Option<Change>) -> Write {
    Write { action, then }
}

fn comment(on: Thread, key: Key, body: impl Into<String>, then: Option<Change>) -> Write {
    write(
        Action::Comment {
            on,
            key,
            body: body.into(),
        },
        then,
    )
}

/// The writes that bring the forge up to date with `task`, given what the record says
/// was done. The plan issue (`issue`) exists.
pub(crate) fn plan(task: &Task, m: &Mirror, issue: u64, mention: &str) -> Vec<Write> {
    let mut out = Vec::new();
    match task.state {
        TaskState::WaitingAnswers => {
            let sig = question_signature(task);
            let key = Key::Questions(digest(&sig));
            let posted = m.questions.questions_posted.as_deref();
            // Records from before keys were kept hold the signature itself.
            if posted != Some(key.to_string().as_str()) && posted != Some(sig.as_str()) {
                let then = Change::QuestionsPosted(key.to_string());
                out.push(comment(
                    Thread::Issue,
                    key,
                    questions_comment(&task.questions),
                    Some(then),
                ));
            }
            out.push(write(Action::Watch, None));
        }
        TaskState::WaitingPlanReview => {
            let text = task.plan.clone().unwrap_or_default();
            let sig = format!("{}:{}", task.version, text.len());
            let key = Key::Plan(digest(&sig));
            let posted = m.plan.plan_posted.as_deref();
            if posted != Some(key.to_string().as_str()) && posted != Some(sig.as_str()) {
                let then = Change::PlanPosted(key.to_string());
                out.push(comment(Thread::Issue, key, plan_comment(&text), Some(then)));
            }
            out.push(write(Action::Watch, None));
        }
        // The mirror may reach a task past the state a decision moved it to (a crash
        // delayed it): the decision is still told.
        TaskState::Planning | TaskState::Implementing | TaskState::OnHold | TaskState::Checking => {
            acknowledgements(task, m, &mut out);
        }
        TaskState::Review => {
            acknowledgements(task, m, &mut out);
            if let Some(pr) = &m.pull.pr {
                if !m.pull.ready_marked {
                    if pr.draft {
                        out.push(write(Action::MarkReady(pr.clone()), None));
                    }
                    out.push(ready_comment(
                        task,
                        m,
                        pr.number,
                        &format!("Request changes in a review, or mention @{mention} / start a comment with `/revise`, and the worker picks it up."),
                    ));
                }
                out.push(write(Action::Watch, None));
            }
        }
        TaskState::Cancelled if !m.issue.closed => match &m.pull.pr {
            Some(pr) if pr.state == PrState::Closed => {
                let why = format!(
                    "Pull request #{} was closed without merging, so the task was cancelled.",
                    pr.number
                );
                close_issue(issue, &why, &mut out);
            }
            pr => {
                let why = "Cancelled in mainloop.";
                if let Some(pr) = pr.as_ref().filter(|p| p.state == PrState::Open) {
                    let on = Thread::Pull(pr.number);
                    out.push(comment(on, Key::Closed(pr.number), why, None));
                    out.push(write(Action::ClosePull(pr.number), None));
                }
                close_issue(issue, why, &mut out);
            }
        },
        // A merged "Closes #n" pull request closes the issue on GitHub; closing again is
        // harmless and covers forges that do not. Closed first, then recorded: a crash
        // in between only closes it twice.
        TaskState::Merged => {
            // Approved in the app before the mirror announced the pull request (the merge
            // marked it ready itself): the record is still told, once.
            if let Some(pr) = &m.pull.pr
                && !m.pull.ready_marked
            {
                out.push(ready_comment(
                    task,
                    m,
                    pr.number,
                    "It was approved in mainloop before this was announced, and merged.",
                ));
            }
            if !m.issue.closed {
                out.push(write(Action::CloseIssue, Some(Change::Closed)));
            }
        }
        TaskState::Failed => {
            let reason = task.error.clone().unwrap_or_default();
            let told = format!("{}:{reason}", task.version);
            if m.failure_posted.as_deref() != Some(told.as_str()) {
                let on = m
                    .pull
                    .pr
                    .as_ref()
                    .map_or(Thread::Issue, |p| Thread::Pull(p.number));
                out.push(comment(
                    on,
                    Key::Failure(digest(&told)),
                    format!("**The worker failed:** {reason}\n\nRetry it in mainloop."),
                    Some(Change::FailurePosted(told)),
                ));
            }
        }
        TaskState::Cancelled | TaskState::Queued => {}
    }
    out
}

/// "Ready for review" on pull request `pr`: what CI said, the diff's summary, then `next`.
fn ready_comment(task: &Task, m: &Mirror, pr: u64, next: &str) -> Write {
    let ci = if m.ci.no_ci {
        "This repository has **no CI**: nothing checked this work."
    } else {
        "CI is green."
    };
    let summary = task.diffstat.clone().unwrap_or_default();
    comment(
        Thread::Pull(pr),
        Key::Ready(pr),
        format!("**Ready for review.** {ci}\n\n```\n{summary}\n```\n\n{next}"),
        Some(Change::ReadyMarked),
    )
}

fn close_issue(issue: u64, why: &str, out: &mut Vec<Write>) {
    out.push(comment(Thread::Issue, Key::Closed(issue), why, None));
    out.push(write(Action::CloseIssue, Some(Change::Closed)));
}

/// Decisions made in the app are told on the issue, so nobody answers twice.
fn acknowledgements(task: &Task, m: &Mirror, out: &mut Vec<Write>) {
    let q = &m.questions;
    if let (Some(posted), Some(answers)) = (&q.questions_posted, &task.answers)
        && q.answers_acknowledged.as_ref() != Some(posted)
    {
        let then = Some(Change::AnswersAcknowledged(posted.clone()));
        if q.answered_on_forge {
            out.push(write(Action::Record, then));
        } else {
            let mut text = String::from("**Answered in mainloop:**\n");
            for q in &task.questions {
                if let Some(a) = answers.get(&q.id) {
                    text.push_str(&format!("- {} → {}\n", q.question, a.as_text()));
                }
            }
            out.push(comment(
                Thread::Issue,
                Key::Answered(digest(posted)),
                text,
                then,
            ));
        }
    }
    let approved = matches!(
        task.state,
        TaskState::Implementing | TaskState::Checking | TaskState::Review
    );
    if let Some(id) = m.plan.plan_comment
        && approved
        && !m.plan.plan_acknowledged
    {
        let then = Some(Change::PlanAcknowledged);
        if m.plan.plan_decided_on_forge {
            out.push(write(Action::Record, then));
        } else {
            out.push(comment(
                Thread::Issue,
                Key::PlanApproved(id),
                "**Plan approved in mainloop**; the worker is implementing it.",
                then,
            ));
        }
    }
}

/// The record after `change` landed (`made`: the id of the comment it made, if any).
pub(crate) fn record(m: &mut Mirror, change: Change, made: Option<u64>) {
    match change {
        Change::QuestionsPosted(key) => {
            m.questions.questions_posted = Some(key);
            m.questions.answered_on_forge = false;
        }
        Change::PlanPosted(key) => {
            m.plan.plan_comment = made;
            m.plan.plan_posted = Some(key);
            m.plan.plan_decided_on_forge = false;
            m.plan.plan_acknowledged = false;
        }
        Change::AnswersAcknowledged(posted) => m.questions.answers_acknowledged = Some(posted),
        Change::PlanAcknowledged => m.plan.plan_acknowledged = true,
        Change::ReadyMarked => {
            m.pull.ready_marked = true;
            if let Some(p) = m.pull.pr.as_mut() {
                p.draft = false;
            }
        }
        Change::Closed => m.issue.closed = true,
        Change::FailurePosted(told) => m.failure_posted = Some(told),
    }
}

/// One round of questions: the transition that asked them (an agent may ask the same
/// questions again, after a restart lost its answers, and that round needs posting too)
/// and the questions themselves.
fn question_signature(task: &Task) -> String {
    let questions = task
        .questions
        .iter()
        .map(|q| format!("{}={}", q.id, q.question))
        .collect::<Vec<_>>()
        .join("|");
    format!("{}:{questions}", task.version)
}

/// `forge.sync`: makes the forge reflect the task's current state.
pub(crate) async fn sync(rt: &Runtime, ctx: &JobContext, p: ForgeSync) -> Result<(), JobError> {
    let guard = lock(rt, p.task_id).await;
    let Some(mut c) = context(rt, p.task_id).await.map_err(job_error)? else {
        return Ok(());
    };
    let result = sync_in(&mut c).await;
    finish(&mut c, ctx, guard, result).await
}

pub(crate) async fn sync_in(c: &mut Ctx<'_>) -> Result<(), FlowError> {
    if c.rec.issue_number.is_none() && c.task.state != TaskState::Cancelled {
        open_issue(c).await?;
    }
    let Some(issue) = c.issue() else {
        return Ok(());
    };
    settle_posts(c).await?;
    for w in plan(&c.task, &c.m, issue, &c.fs.mention) {
        let made = match w.action {
            Action::Comment { on, key, body } => {
                let number = match on {
                    Thread::Issue => issue,
                    Thread::Pull(n) => n,
                };
                Some(c.comment(number, key, &body).await?)
            }
            Action::MarkReady(pr) => {
                c.f().mark_ready_for_review(&c.repo, &pr).await?;
                None
            }
            Action::ClosePull(n) => {
                c.f().close_pull_request(&c.repo, n).await?;
                None
            }
            Action::CloseIssue => {
                c.f().close_issue(&c.repo, issue).await?;
                None
            }
            Action::Record => None,
            Action::Watch => {
                schedule_watch(c).await?;
                None
            }
        };
        if let Some(change) = w.then {
            record(&mut c.m, change, made);
            c.save().await?;
        }
    }
    Ok(())
}

/// Opens the plan issue, or finds the one an earlier attempt opened without recording.
async fn open_issue(c: &mut Ctx<'_>) -> Result<(), FlowError> {
    let tag = Key::issue_tag(c.task.id);
    let title = mainloop_domain::inbox::first_line(&c.task.description, 120);
    let body = format!(
        "{}\n\n---\nA mainloop worker is on this. Its questions and plan will appear here; \
         answer and decide here or in mainloop.",
        c.task.description.trim()
    );
    let write = Once::Issue {
        title: &title,
        body: &body,
        tag: &tag,
    };
    let Made::Issue(issue) = c.once(Key::Issue, write).await? else {
        return Err(FlowError::Fatal(
            "the plan issue came back as something else".into(),
        ));
    };
    c.rec.issue_number = i64::try_from(issue.number).ok();
    c.m.issue.issue_url = Some(issue.url.clone());
    c.save().await?;
    status(
        c.rt,
        c.user,
        c.task.id,
        &format!("plan issue: {}", issue.url),
    )
    .await;
    Ok(())
}

/// Questions and plans an attempt posted and died before recording, found on the issue
/// and recorded as posted before anything relies on them (acknowledging an app decision,
/// a 👍 on the plan, answers read back) — also when the task has moved past them, so
/// their own step will not run again. One not found was not posted, and is left to its
/// step.
pub(crate) async fn settle_posts(c: &mut Ctx<'_>) -> Result<(), FlowError> {
    let keys = c.ledger.recovering_posts();
    let Some(issue) = c.issue() else {
        return Ok(());
    };
    if keys.is_empty() {
        return Ok(());
    }
    let (all, _) = c
        .f()
        .comments_since(&c.repo, issue, &Cursor::default())
        .await?;
    for key in keys {
        let tag = key.tag();
        if let Some(found) = all.iter().find(|x| x.body.contains(&tag)) {
            let change = match &key {
                Key::Plan(_) => Change::PlanPosted(key.to_string()),
                _ => Change::QuestionsPosted(key.to_string()),
            };
            record(&mut c.m, change, Some(found.id));
        }
        c.ledger.done(&key);
    }
    c.save().await
}

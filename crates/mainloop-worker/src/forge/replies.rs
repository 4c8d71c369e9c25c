//! Reading replies: what the humans' new comments on the plan issue, a 👍 on the plan,
//! review feedback on the pull request and the pull request's own state mean for the
//! task — the event they decide, the comments that answer them, and what the record
//! notes — decided purely from the task and the replies. The watch (`watch.rs`) fetches
//! the replies and carries out the reading.

use super::ledger::Key;
use super::state::Mirror;
use mainloop_domain::records::Task;
use mainloop_domain::task::{TaskEvent, TaskState};
use mainloop_forge::replies::{
    ParsedAnswers, PlanReply, parse_answers, parse_plan_reply, review_feedback,
};
use mainloop_forge::{Comment, Feedback, PrState, PullRequest};

/// What a set of replies means.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    /// Comments to post in reply, in order.
    pub replies: Vec<(Key, String)>,
    /// The decision the replies made, if any.
    pub decided: Option<Decided>,
    pub event: Option<TaskEvent>,
}

/// Which decision was made on the forge (so the app's is not told there again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decided {
    Answers,
    Plan,
    /// The pull request was closed without merging.
    Closed,
    /// Review feedback: CI is watched afresh for the next push.
    Feedback,
}

impl Reading {
    fn reply(&mut self, key: Key, body: String) {
        self.replies.push((key, body));
    }

    fn decide(&mut self, decided: Decided, event: TaskEvent) {
        self.decided = Some(decided);
        self.event = Some(event);
    }
}

/// Whether a comment tries to answer the task's questions.
fn answers_something(task: &Task, body: &str) -> bool {
    !matches!(
        parse_answers(body, &task.questions),
        ParsedAnswers::NotAnAnswer
    )
}

/// The humans' new comments on the plan issue (trusted, not mainloop's own), oldest
/// first. The first that decides ends the reading.
pub(crate) fn read_issue(task: &Task, comments: &[Comment]) -> Reading {
    let mut r = Reading::default();
    for c in comments {
        match task.state {
            TaskState::WaitingAnswers => match parse_answers(&c.body, &task.questions) {
                ParsedAnswers::NotAnAnswer => {}
                ParsedAnswers::Invalid(why) => {
                    r.reply(Key::Invalid(c.id), format!("@{} {why}", c.author));
                }
                ParsedAnswers::Complete(answers) => {
                    r.reply(
                        Key::Thanks(c.id),
                        format!(
                            "Thanks @{}; the worker continues with your answers.",
                            c.author
                        ),
                    );
                    r.decide(Decided::Answers, TaskEvent::Answered(answers));
                    return r;
                }
            },
            TaskState::WaitingPlanReview => {
                let (event, said) = match parse_plan_reply(&c.body) {
                    None => {
                        if let Some(said) = late(task, c) {
                            r.reply(Key::Late(c.id), said);
                        }
                        continue;
                    }
                    Some(PlanReply::Invalid(why)) => {
                        r.reply(Key::Invalid(c.id), format!("@{} {why}", c.author));
                        continue;
                    }
                    Some(PlanReply::Approve) => (
                        TaskEvent::PlanApproved,
                        "approved; the worker is implementing it",
                    ),
                    Some(PlanReply::Revise(f)) => (
                        TaskEvent::PlanRevisionRequested(f),
                        "sent back for revision",
                    ),
                    Some(PlanReply::Cancel) => (TaskEvent::CancelRequested, "cancelled"),
                };
                r.reply(Key::Decided(c.id), format!("Plan {said} (@{}).", c.author));
                r.decide(Decided::Plan, event);
                return r;
            }
            // Answers or decisions posted after the app already decided: say so.
            _ => {
                if let Some(said) = late(task, c) {
                    r.reply(Key::Late(c.id), said);
                }
            }
        }
    }
    r
}

/// What a reply that came after the decision it tries to make is told (`None`: it tries
/// none). It depends on the reply, not on how far the task got before the watch read it:
/// an answer that comes after the app's is told the same whether the plan is posted yet
/// or not.
fn late(task: &Task, c: &Comment) -> Option<String> {
    if task.answers.is_some() && answers_something(task, &c.body) {
        // Answers to questions that were already answered (in the app, say).
        Some(too_late(c, "the questions were already answered"))
    } else if answers_something(task, &c.body) || parse_plan_reply(&c.body).is_some() {
        Some(too_late(c, "this was already answered or decided"))
    } else {
        None
    }
}

/// Tells a reply's author that the app decided first and nothing changed.
fn too_late(reply: &Comment, what: &str) -> String {
    format!("@{} {what} in mainloop; nothing changed.", reply.author)
}

/// A 👍 on the plan comment from a trusted login approves the plan.
pub(crate) fn read_thumbs_up(plan_comment: u64, fans: &[String]) -> Reading {
    let mut r = Reading::default();
    if let Some(who) = fans.first() {
        r.reply(
            Key::ThumbsUp(plan_comment),
            format!("Plan approved by @{who}'s 👍; the worker is implementing it."),
        );
        r.decide(Decided::Plan, TaskEvent::PlanApproved);
    }
    r
}

/// The pull request under review: merged or closed on the forge ends the task.
pub(crate) fn read_pull(now: &PullRequest) -> Reading {
    let mut r = Reading::default();
    match now.state {
        PrState::Merged => r.event = Some(TaskEvent::Merged),
        PrState::Closed => r.decide(Decided::Closed, TaskEvent::ClosedUnmerged),
        PrState::Open => {}
    }
    r
}

/// Review feedback (trusted, not mainloop's own) asking for changes sends the worker
/// back with it.
pub(crate) fn read_feedback(human: &[Feedback], mention: &str) -> Reading {
    let mut r = Reading::default();
    if let Some(feedback) = review_feedback(human, mention, "") {
        r.reply(
            Key::Feedback(human.iter().map(|f| f.id).max().unwrap_or_default()),
            "On it: the worker is addressing this feedback.".to_owned(),
        );
        r.decide(Decided::Feedback, TaskEvent::ChangesRequested(feedback));
    }
    r
}

/// The record once a decision made on the forge is acted on.
pub(crate) fn record(m: &mut Mirror, decided: Decided) {
    match decided {
        Decided::Answers => {
            m.questions.answered_on_forge = true;
            m.questions
                .answers_acknowledged
                .clone_from(&m.questions.questions_posted);
        }
        Decided::Plan => {
            m.plan.plan_decided_on_forge = true;
            m.plan.plan_acknowledged = true;
        }
        Decided::Closed => {
            if let Some(pr) = m.pull.pr.as_mut() {
                pr.state = PrState::Closed;
            }
        }
        Decided::Feedback => m.ci.ci_sha = None,
    }
}

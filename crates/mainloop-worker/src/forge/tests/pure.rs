//! The pure halves: the mirror's writes from a task and its record, and the reading of
//! replies, on tasks taken through the real state machine.

use super::super::ledger::Key;
use super::super::mirror::{Action, Thread, plan, record};
use super::super::replies::{Decided, read_issue, record as note};
use super::super::state::Mirror;
use super::*;
use mainloop_forge::{Comment, PrState};

fn comment(id: u64, body: &str) -> Comment {
    Comment {
        id,
        author: "alice".into(),
        body: body.into(),
        url: String::new(),
    }
}

/// Carries out `plan`'s writes on the record alone (as if each landed).
fn land(task: &mainloop_domain::records::Task, m: &mut Mirror) -> Vec<Action> {
    let writes = plan(task, m, 1, "mainloop");
    let mut done = Vec::new();
    for (n, w) in writes.into_iter().enumerate() {
        if let Some(change) = w.then {
            record(m, change, Some(100 + n as u64));
        }
        done.push(w.action);
    }
    done
}

#[tokio::test]
async fn the_mirror_writes_each_thing_once() {
    let w = world().await;
    w.apply(TaskEvent::SlotGranted).await;
    w.apply(TaskEvent::QuestionsAsked(questions())).await;
    let mut m = Mirror::default();
    let (_, task) = load(&w.rt, w.task).await.unwrap().unwrap();
    let first = land(&task, &mut m);
    assert!(matches!(
        &first[0],
        Action::Comment {
            on: Thread::Issue,
            key: Key::Questions(_),
            ..
        }
    ));
    assert_eq!(first.last(), Some(&Action::Watch));
    // Landed: only the watch remains.
    assert_eq!(land(&task, &mut m), vec![Action::Watch]);
    w.apply(answered()).await;
    let (_, task) = load(&w.rt, w.task).await.unwrap().unwrap();
    let told = land(&task, &mut m);
    assert!(
        matches!(
            &told[0],
            Action::Comment {
                key: Key::Answered(_),
                ..
            }
        ),
        "{told:?}"
    );
    assert!(land(&task, &mut m).is_empty());
}

#[tokio::test]
async fn a_pull_request_closed_on_the_forge_closes_the_issue_saying_so() {
    let w = world().await;
    w.apply(TaskEvent::SlotGranted).await;
    w.apply(TaskEvent::CancelRequested).await;
    let (_, task) = load(&w.rt, w.task).await.unwrap().unwrap();
    let mut m = Mirror::default();
    m.pull.pr = Some(pr(7, false));
    note(&mut m, Decided::Closed);
    assert_eq!(m.pull.pr.as_ref().map(|p| p.state), Some(PrState::Closed));
    let writes = land(&task, &mut m);
    assert!(
        matches!(&writes[0], Action::Comment { on: Thread::Issue, body, .. } if body.contains("#7 was closed without merging")),
        "{writes:?}"
    );
    assert_eq!(writes[1], Action::CloseIssue);
    assert_eq!(writes.len(), 2, "the closed pull request is left alone");
    assert!(m.issue.closed);
    // Cancelled in the app: the open pull request is told and closed too.
    let mut m = Mirror::default();
    m.pull.pr = Some(pr(7, false));
    let writes = land(&task, &mut m);
    assert!(writes.contains(&Action::ClosePull(7)), "{writes:?}");
}

#[tokio::test]
async fn replies_on_the_issue_read_as_answers_once_and_the_rest_are_answered() {
    let w = world().await;
    w.apply(TaskEvent::SlotGranted).await;
    w.apply(TaskEvent::QuestionsAsked(questions())).await;
    let (_, task) = load(&w.rt, w.task).await.unwrap().unwrap();
    let r = read_issue(
        &task,
        &[comment(5, "2: 1"), comment(6, "1: 1"), comment(7, "1: 1")],
    );
    assert_eq!(r.replies.len(), 2, "{r:?}");
    assert_eq!(r.replies[0].0, Key::Invalid(5));
    assert_eq!(r.replies[1].0, Key::Thanks(6));
    assert!(matches!(r.event, Some(TaskEvent::Answered(_))));
    assert_eq!(r.decided, Some(Decided::Answers));
    // Once answered in the app, an answer on the issue is told it came late.
    w.apply(answered()).await;
    let (_, task) = load(&w.rt, w.task).await.unwrap().unwrap();
    let r = read_issue(&task, &[comment(8, "1: 1"), comment(9, "thanks!")]);
    assert_eq!(r.replies.len(), 1);
    assert_eq!(r.replies[0].0, Key::Late(8));
    assert_eq!(r.event, None);
}

#[tokio::test]
async fn a_pull_request_approved_before_it_was_announced_is_announced_once_at_merge() {
    let w = world().await;
    w.apply(TaskEvent::SlotGranted).await;
    let (_, mut task) = load(&w.rt, w.task).await.unwrap().unwrap();
    // The merge marked the draft ready itself: the mirror never reached review.
    task.state = TaskState::Merged;
    let mut m = Mirror::default();
    m.pull.pr = Some(pr(7, false));
    let writes = land(&task, &mut m);
    assert!(
        matches!(
            &writes[0],
            Action::Comment { on: Thread::Pull(7), key: Key::Ready(7), body, .. }
                if body.contains("**Ready for review.**") && body.contains("approved in mainloop")
        ),
        "{writes:?}"
    );
    assert_eq!(writes[1..], [Action::CloseIssue]);
    assert!(land(&task, &mut m).is_empty());
    // Announced in review already: the merge only closes the issue.
    let mut m = Mirror::default();
    m.pull.pr = Some(pr(7, false));
    m.pull.ready_marked = true;
    assert_eq!(land(&task, &mut m), vec![Action::CloseIssue]);
}

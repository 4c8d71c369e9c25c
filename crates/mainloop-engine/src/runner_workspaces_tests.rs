#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use mainloop_domain::Timestamp;
use std::sync::Arc;
use tokio::sync::mpsc;

const OID: &str = "0123456789abcdef0123456789abcdef01234567";

fn runner() -> RunnerId {
    RunnerId::new_v7(Timestamp::from_millis(1_700_000_000_000))
}

fn task() -> TaskId {
    TaskId::new_v7(Timestamp::from_millis(1_700_000_000_000))
}

fn prepare(request: u64, task: TaskId) -> Prepare {
    Prepare {
        request,
        task,
        git_path: git_path(task),
        branch: "mainloop/abc-work".into(),
        snapshot: Some(crate::snapshot_ref(task)),
    }
}

fn save(request: u64, task: TaskId) -> Save {
    Save {
        request,
        task,
        git_path: git_path(task),
        snapshot_ref: crate::snapshot_ref(task),
    }
}

fn waiting(conn: &Connection) -> usize {
    conn.requests.state().waiting.len()
}

/// The next message the runner would be sent.
async fn sent(outbox: &mut mpsc::Receiver<ServerMessage>) -> ServerMessage {
    tokio::time::timeout(Duration::from_secs(5), outbox.recv())
        .await
        .expect("a message is queued")
        .expect("the outbox is open")
}

#[tokio::test]
async fn a_prepare_and_a_save_are_answered_by_the_replies_that_name_them() {
    let (conn, mut outbox) = Connection::new(runner());
    let t = task();
    let asked = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move { conn.prepare(prepare(11, t), PREPARE_TIMEOUT).await }
    });
    assert_eq!(
        sent(&mut outbox).await,
        ServerMessage::Prepare(prepare(11, t))
    );
    conn.deliver(RunnerMessage::Prepared {
        request: 11,
        workspace: "/data/tasks/t/work".into(),
        home: "/data/tasks/t/home".into(),
    });
    assert_eq!(
        asked.await.unwrap().unwrap(),
        PreparedWorkspace {
            work: "/data/tasks/t/work".into(),
            home: "/data/tasks/t/home".into()
        }
    );

    let asked = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move { conn.save(save(12, t), SAVE_TIMEOUT).await }
    });
    assert_eq!(sent(&mut outbox).await, ServerMessage::Save(save(12, t)));
    conn.deliver(RunnerMessage::Saved {
        request: 12,
        commit: OID.into(),
        clean: false,
    });
    assert_eq!(
        asked.await.unwrap().unwrap(),
        SavedWorkspace {
            commit: OID.into(),
            clean: false
        }
    );
    assert_eq!(waiting(&conn), 0, "nothing left waiting");
}

#[tokio::test]
async fn a_runner_cannot_answer_what_it_was_not_asked_nor_answer_twice() {
    let (conn, mut outbox) = Connection::new(runner());
    let t = task();
    let asked = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move { conn.save(save(21, t), SAVE_TIMEOUT).await }
    });
    let _ = sent(&mut outbox).await;
    // Answers to requests never sent: ignored, the real one still waits.
    for request in [0, 20, 22, u64::MAX] {
        conn.deliver(RunnerMessage::Saved {
            request,
            commit: OID.into(),
            clean: true,
        });
        conn.deliver(RunnerMessage::RequestFailed {
            request,
            reason: "no".into(),
        });
    }
    // Another connection's answers never reach this one's requests.
    let (other, _rx) = Connection::new(runner());
    other.deliver(RunnerMessage::Saved {
        request: 21,
        commit: OID.into(),
        clean: true,
    });
    assert!(!asked.is_finished());
    assert_eq!(waiting(&conn), 1);
    conn.deliver(RunnerMessage::Saved {
        request: 21,
        commit: OID.into(),
        clean: false,
    });
    // A second answer finds nothing to answer.
    conn.deliver(RunnerMessage::RequestFailed {
        request: 21,
        reason: "too late".into(),
    });
    assert!(!asked.await.unwrap().unwrap().clean);
    assert_eq!(conn.requests.state().ignored, 9);

    // The wrong kind of answer fails the request at once.
    let asked = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move { conn.prepare(prepare(23, t), PREPARE_TIMEOUT).await }
    });
    let _ = sent(&mut outbox).await;
    conn.deliver(RunnerMessage::Saved {
        request: 23,
        commit: OID.into(),
        clean: true,
    });
    let err = asked.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, EngineError::Invalid(m) if m.contains("another request")),
        "{err}"
    );
}

#[tokio::test]
async fn a_failed_request_says_why_in_the_runners_words() {
    let (conn, mut outbox) = Connection::new(runner());
    let t = task();
    let asked = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move { conn.prepare(prepare(31, t), PREPARE_TIMEOUT).await }
    });
    let _ = sent(&mut outbox).await;
    conn.deliver(RunnerMessage::RequestFailed {
        request: 31,
        reason: "git is not installed on this runner".into(),
    });
    let err = asked.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, EngineError::Invalid(m) if m.contains("could not prepare") && m.contains("git is not installed")),
        "{err}"
    );
}

#[tokio::test]
async fn requests_end_with_the_connection_and_none_start_after() {
    let (conn, mut outbox) = Connection::new(runner());
    let t = task();
    let asked = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move { conn.prepare(prepare(41, t), PREPARE_TIMEOUT).await }
    });
    let _ = sent(&mut outbox).await;
    conn.close();
    let err = asked.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, EngineError::RunnerLost(m) if m.contains("lost")),
        "{err}"
    );
    let err = conn.save(save(42, t), SAVE_TIMEOUT).await.unwrap_err();
    assert!(matches!(err, EngineError::RunnerLost(_)), "{err}");
    assert!(
        outbox.try_recv().is_err(),
        "nothing was sent after the close"
    );
    // An answer after the close is ignored.
    conn.deliver(RunnerMessage::Prepared {
        request: 41,
        workspace: "/w".into(),
        home: "/h".into(),
    });
}

#[tokio::test]
async fn a_runner_that_does_not_answer_in_time_is_given_up_on() {
    let (conn, mut outbox) = Connection::new(runner());
    let t = task();
    let err = conn
        .prepare(prepare(51, t), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::RunnerLost(m) if m.contains("did not prepare") && m.contains("within")),
        "{err}"
    );
    assert_eq!(waiting(&conn), 0, "forgotten");
    let _ = sent(&mut outbox).await;
    // Its late answer is ignored like any other.
    conn.deliver(RunnerMessage::Prepared {
        request: 51,
        workspace: "/w".into(),
        home: "/h".into(),
    });
    assert_eq!(conn.requests.state().ignored, 1);
    assert_eq!(minutes(PREPARE_TIMEOUT), "30 minutes");
    assert_eq!(minutes(SAVE_TIMEOUT), "10 minutes");

    // A caller that stops waiting forgets its request too.
    let asked = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move { conn.save(save(52, t), SAVE_TIMEOUT).await }
    });
    let _ = sent(&mut outbox).await;
    assert_eq!(waiting(&conn), 1);
    asked.abort();
    let _ = asked.await;
    assert_eq!(waiting(&conn), 0);
}

#[tokio::test]
async fn a_request_out_of_bounds_is_never_sent() {
    let (conn, mut outbox) = Connection::new(runner());
    let t = task();
    let mut p = prepare(61, t);
    p.branch = "--upload-pack=touch /tmp/x".into();
    let err = conn.prepare(p, PREPARE_TIMEOUT).await.unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)), "{err}");
    let mut s = save(62, t);
    s.git_path = git_path(TaskId::new_v7(Timestamp::from_millis(1)));
    let err = conn.save(s, SAVE_TIMEOUT).await.unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)), "{err}");
    assert!(outbox.try_recv().is_err(), "nothing was queued");
    assert_eq!(waiting(&conn), 0);
}

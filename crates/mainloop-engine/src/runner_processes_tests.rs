#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

fn runner() -> RunnerId {
    RunnerId::new_v7(mainloop_domain::Timestamp::from_millis(1_700_000_000_000))
}

fn spawn(process: u64, cwd: &str) -> Spawn {
    Spawn {
        process,
        task: TaskId::new_v7(mainloop_domain::Timestamp::from_millis(1_700_000_000_000)),
        program: Program::Path("sh".into()),
        args: vec!["-c".into(), "cat".into()],
        cwd: cwd.into(),
        env: vec![("LANG".into(), "C".into())],
    }
}

fn output(process: u64, stream: Which, data: &[u8]) -> RunnerMessage {
    RunnerMessage::Output {
        process,
        stream,
        data: Chunk(data.to_vec()),
    }
}

async fn all(out: RemoteOutput) -> Vec<u8> {
    out.collect::<Vec<Bytes>>().await.concat()
}

#[tokio::test]
async fn a_process_runs_from_spawn_to_exit() {
    let (conn, mut outbox) = Connection::new(runner());
    let mut p = conn.spawn(spawn(1, "")).unwrap();
    assert!(matches!(
        outbox.recv().await,
        Some(ServerMessage::Spawn(Spawn { process: 1, .. }))
    ));
    // Input is queued in order, split at the chunk bound; shutdown closes it.
    let big = vec![7u8; MAX_CHUNK_BYTES + 10];
    p.stdin.write_all(&big).await.unwrap();
    p.stdin.shutdown().await.unwrap();
    let mut sizes = Vec::new();
    for _ in 0..2 {
        match outbox.recv().await {
            Some(ServerMessage::Stdin { process: 1, data }) => sizes.push(data.0.len()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sizes, [MAX_CHUNK_BYTES, 10]);
    assert_eq!(
        outbox.recv().await,
        Some(ServerMessage::CloseStdin { process: 1 })
    );
    assert!(p.stdin.write_all(b"late").await.is_err(), "closed input");

    conn.deliver(RunnerMessage::Started {
        process: 1,
        pid: 99,
    });
    conn.deliver(output(1, Which::Stdout, b"got "));
    conn.deliver(output(1, Which::Stderr, b"oops"));
    conn.deliver(output(1, Which::Stdout, b"hi"));
    conn.deliver(RunnerMessage::Exited {
        process: 1,
        code: 3,
    });
    assert_eq!(all(p.stdout).await, b"got hi");
    assert_eq!(all(p.stderr).await, b"oops");
    assert_eq!(p.handle.wait().await.unwrap(), 3);
    assert_eq!(p.handle.wait().await.unwrap(), 3, "wait twice");
    assert!(p.handle.has_ended());
    // Killing an ended process sends nothing.
    p.handle.kill();
    drop(p.handle);
    assert!(outbox.try_recv().is_err());
}

#[tokio::test]
async fn a_runner_cannot_touch_what_it_was_not_given() {
    let (conn, mut outbox) = Connection::new(runner());
    let mut p = conn.spawn(spawn(5, "")).unwrap();
    let _ = outbox.recv().await;
    // Output before `started`, for an unknown process, `exited` for one never
    // started: all ignored.
    conn.deliver(output(5, Which::Stdout, b"early"));
    conn.deliver(output(6, Which::Stdout, b"other"));
    conn.deliver(RunnerMessage::Exited {
        process: 5,
        code: 0,
    });
    conn.deliver(RunnerMessage::Started {
        process: 5,
        pid: 10,
    });
    conn.deliver(RunnerMessage::Started {
        process: 5,
        pid: 11,
    });
    conn.deliver(RunnerMessage::SpawnFailed {
        process: 5,
        reason: "late".into(),
    });
    assert!(!p.handle.has_ended());
    conn.deliver(output(5, Which::Stdout, b"real"));
    conn.deliver(RunnerMessage::Exited {
        process: 5,
        code: 0,
    });
    // After exit, nothing more is taken.
    conn.deliver(output(5, Which::Stdout, b"after"));
    conn.deliver(RunnerMessage::Exited {
        process: 5,
        code: 9,
    });
    assert_eq!(all(p.stdout).await, b"real");
    assert_eq!(p.handle.wait().await.unwrap(), 0);
    // Another connection's messages never reach this one's processes.
    let (other, _rx) = Connection::new(runner());
    let mut q = conn.spawn(spawn(7, "")).unwrap();
    other.deliver(RunnerMessage::Started { process: 7, pid: 1 });
    other.deliver(RunnerMessage::Exited {
        process: 7,
        code: 0,
    });
    assert!(!q.handle.has_ended());
    conn.close();
    assert!(matches!(
        q.handle.wait().await,
        Err(EngineError::RunnerLost(_))
    ));
}

#[tokio::test]
async fn a_spawn_that_fails_ends_everything_with_the_reason() {
    let (conn, _outbox) = Connection::new(runner());
    let mut p = conn.spawn(spawn(2, "")).unwrap();
    conn.deliver(RunnerMessage::SpawnFailed {
        process: 2,
        reason: "sh: not found".into(),
    });
    assert!(all(p.stdout).await.is_empty());
    let err = p.handle.wait().await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Invalid(m) if m.contains("sh: not found")),
        "{err}"
    );
    assert!(p.stdin.write_all(b"x").await.is_err());
}

#[tokio::test]
async fn the_connection_ending_ends_every_process_and_refuses_new_ones() {
    let (conn, mut outbox) = Connection::new(runner());
    let mut a = conn.spawn(spawn(1, "")).unwrap();
    let mut b = conn.spawn(spawn(2, "")).unwrap();
    conn.deliver(RunnerMessage::Started { process: 1, pid: 3 });
    conn.deliver(output(1, Which::Stdout, b"partial"));
    conn.close();
    assert_eq!(all(a.stdout).await, b"partial", "what arrived is kept");
    for h in [&mut a.handle, &mut b.handle] {
        let err = h.wait().await.unwrap_err();
        assert!(
            matches!(&err, EngineError::RunnerLost(m) if m.contains("was lost")),
            "{err}"
        );
    }
    assert!(matches!(
        conn.spawn(spawn(3, "")),
        Err(EngineError::RunnerLost(_))
    ));
    // Nothing is sent for processes that are gone.
    drop((a.stdin, b.stdin, a.handle, b.handle));
    let mut kinds = Vec::new();
    while let Ok(m) = outbox.try_recv() {
        kinds.push(m);
    }
    assert_eq!(kinds.len(), 2, "only the two spawns: {kinds:?}");
}

#[tokio::test]
async fn dropping_a_running_process_kills_it_and_closes_its_input() {
    let (conn, mut outbox) = Connection::new(runner());
    let p = conn.spawn(spawn(4, "")).unwrap();
    let _ = outbox.recv().await;
    drop(p);
    let mut got = Vec::new();
    while let Ok(m) = outbox.try_recv() {
        got.push(m);
    }
    assert!(
        got.contains(&ServerMessage::CloseStdin { process: 4 }),
        "{got:?}"
    );
    assert!(got.contains(&ServerMessage::Kill { process: 4 }), "{got:?}");
}

#[tokio::test]
async fn output_left_unread_past_the_bound_kills_the_process() {
    let (conn, mut outbox) = Connection::new(runner());
    let mut p = conn.spawn(spawn(8, "")).unwrap();
    let _ = outbox.recv().await;
    conn.deliver(RunnerMessage::Started { process: 8, pid: 3 });
    let chunk = vec![0u8; MAX_CHUNK_BYTES];
    for _ in 0..=(MAX_UNREAD_OUTPUT / MAX_CHUNK_BYTES) {
        conn.deliver(output(8, Which::Stdout, &chunk));
    }
    let err = p.handle.wait().await.unwrap_err();
    assert!(err.to_string().contains("unread"), "{err}");
    assert_eq!(
        outbox.recv().await,
        Some(ServerMessage::Kill { process: 8 })
    );
    // What was accepted can still be read; the stream then ends.
    let read = all(p.stdout).await;
    assert_eq!(read.len(), MAX_UNREAD_OUTPUT);
}

#[tokio::test]
async fn output_for_a_reader_that_is_gone_is_dropped_without_counting() {
    let (conn, _outbox) = Connection::new(runner());
    let mut p = conn.spawn(spawn(9, "")).unwrap();
    conn.deliver(RunnerMessage::Started { process: 9, pid: 3 });
    drop(p.stderr);
    let chunk = vec![0u8; MAX_CHUNK_BYTES];
    for _ in 0..=(MAX_UNREAD_OUTPUT / MAX_CHUNK_BYTES) {
        conn.deliver(output(9, Which::Stderr, &chunk));
    }
    assert!(!p.handle.has_ended());
    conn.deliver(RunnerMessage::Exited {
        process: 9,
        code: 0,
    });
    assert_eq!(p.handle.wait().await.unwrap(), 0);
}

#[test]
fn a_spawn_out_of_bounds_is_never_sent() {
    let (conn, mut outbox) = Connection::new(runner());
    for cwd in ["../x", "/etc", "a/../../b"] {
        let err = conn.spawn(spawn(1, cwd)).unwrap_err();
        assert!(matches!(err, EngineError::Invalid(_)), "{cwd}: {err}");
    }
    let mut huge = spawn(1, "");
    huge.args = vec!["x".repeat(30_000); 3];
    let err = conn.spawn(huge).unwrap_err();
    assert!(err.to_string().contains("at most 65536"), "{err}");
    assert!(outbox.try_recv().is_err(), "nothing was queued");
}

#[test]
fn a_full_outbox_refuses_a_spawn_rather_than_wait() {
    let (conn, _outbox) = Connection::new(runner());
    let mut held = Vec::new();
    for i in 0..OUTBOX_CAPACITY {
        held.push(conn.spawn(spawn(i as u64, "")).unwrap());
    }
    let err = conn.spawn(spawn(1000, "")).unwrap_err();
    assert!(
        matches!(&err, EngineError::RunnerLost(m) if m.contains("backed up")),
        "{err}"
    );
    // Dropping handles outside a runtime neither panics nor blocks.
    drop(held);
}

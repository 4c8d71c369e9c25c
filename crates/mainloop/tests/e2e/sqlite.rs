//! SQLite locked by another process, and on a full disk.

use super::faults::*;
use super::*;

/// The longest an API write may wait while another process holds SQLite's write lock:
/// its turn among this process's writers (the pool's acquire timeout, 10 s) plus the
/// busy timeout (10 s), with slack for a loaded machine.
const SQLITE_WRITE_BOUND: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_process_gets_bounded_answers_and_loses_nothing() {
    let started = std::time::Instant::now();
    let fake = FakeAnthropic::start(frozen()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let (mut server, log) = spawn_logged(command(data.path(), Some(&fake.base_url())), data.path());
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let at = |path: &str| format!("{base}{path}");

    // A turn in flight when the lock is taken.
    let in_flight = try_chat(&base, &token, "chat question in flight")
        .await
        .unwrap();
    wait_rule(&fake, "chat").await;

    // Another process (a backup script's `BEGIN IMMEDIATE`, the sqlite3 shell) takes
    // the database's write lock and keeps it longer than the busy timeout.
    let db = format!("sqlite://{}/mainloop.db", data.path().display());
    let other = mainloop_store::Store::connect(&db, &mainloop_store::StoreOptions::default())
        .await
        .unwrap();
    let owner = other.owner().await.unwrap().unwrap();
    let mut lock = other.begin().await.unwrap();
    lock.append_event(
        owner.id,
        mainloop_domain::event::EventName::ChatMessage,
        &json!({"from": "another process"}),
        mainloop_domain::Timestamp::from_millis(1),
    )
    .await
    .unwrap();
    let locked_for = Duration::from_secs(12);
    let writes = {
        let (base, token) = (base.clone(), token.clone());
        tokio::spawn(async move {
            let bounded = |what, path: &str, body| {
                probe_within(
                    SQLITE_WRITE_BOUND,
                    what,
                    reqwest::Method::POST,
                    format!("{base}{path}"),
                    &token,
                    Some(body),
                )
            };
            let (a, b) = tokio::join!(
                bounded(
                    "POST /api/chat",
                    "/api/chat",
                    json!({"text": "probe question while locked"})
                ),
                bounded(
                    "POST /api/tasks",
                    "/api/tasks",
                    json!({"description": "a task while locked", "repo": std::env::temp_dir()}),
                ),
            );
            vec![a, b]
        })
    };
    // Reads go on meanwhile, at their usual speed.
    let mut reads = Vec::new();
    while started.elapsed() < locked_for {
        for (what, path) in [
            ("GET /api/tasks", "/api/tasks"),
            ("GET /api/chat/messages", "/api/chat/messages"),
            ("GET /api/health", "/api/health"),
        ] {
            reads.push(probe(what, reqwest::Method::GET, at(path), &token, None).await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for r in &reads {
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.elapsed < Duration::from_secs(2), "{r:?}");
    }
    let held = started.elapsed();
    drop(lock);
    let writes = writes.await.unwrap();
    for w in &writes {
        let accepted = w.status == 201 || w.status == 202;
        let refused = w.status == 503 && w.code == "unavailable" && !w.message.is_empty();
        assert!(accepted || refused, "{w:?}");
        assert!(w.elapsed < SQLITE_WRITE_BOUND, "{w:?}");
    }
    assert!(
        log_lines(&log, "database is locked") > 0,
        "background work met the lock"
    );

    // Writes work again; every stored message is answered once; nothing was given up.
    let (after, _) = until_accepted(|| {
        probe(
            "POST /api/chat",
            reqwest::Method::POST,
            at("/api/chat"),
            &token,
            Some(json!({"text": "probe question after the lock"})),
        )
    })
    .await;
    assert_eq!(after.status, 202);
    let thread = messages(&base, &token).await;
    let users: Vec<String> = thread
        .iter()
        .filter(|m| m["role"] == "user" && m["kind"] == "text")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let accepted_chat = usize::from(writes[0].status == 202);
    assert_eq!(users.len(), 2 + accepted_chat, "{thread:#?}");
    assert!(users.contains(&in_flight));
    for id in &users {
        wait_reply(&base, &token, id).await;
    }
    settle(&fake, &db).await;
    for id in &users {
        assert_eq!(replies(&base, &token, id).await.len(), 1, "answered once");
    }
    assert_eq!(
        other
            .count_jobs(mainloop_store::JobState::Failed)
            .await
            .unwrap(),
        0
    );
    assert_eq!(log_lines(&log, "job failed for good"), 0);
    assert_running(&mut server);
    eprintln!(
        "faults: SQLite write lock held by another process for {held:?}; API writes during it: \
         {:?}; {} reads served; background: {} lock refusals logged; {:?}",
        writes
            .iter()
            .map(|w| (w.what, w.status, w.elapsed))
            .collect::<Vec<_>>(),
        reads.len(),
        log_lines(&log, "database is locked"),
        started.elapsed()
    );
}

/// The process started as the only child of `parent` (bubblewrap's sandboxed process).
async fn only_child_of(parent: u32) -> u32 {
    wait_for(format!("a child of {parent}"), || async {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .find_map(|entry| {
                let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // "pid (comm) state ppid …": the name may hold spaces and parentheses.
                let ppid = stat
                    .rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                (ppid == Some(parent)).then_some(pid)
            })
    })
    .await
}

/// A disk that fills up under SQLite. The server runs in a mount namespace of its own
/// (bubblewrap) whose data directory is a small tmpfs; the test fills that disk through
/// `/proc/<pid>/root` — no root, loop device or real disk needed — and frees it later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_refuses_writes_clearly_keeps_reads_and_recovers() {
    const DATA: &str = "/tmp/mainloop-disk";
    let started = std::time::Instant::now();
    let bwrap = mainloop_sandbox::which("bwrap", std::env::var_os("PATH").as_deref())
        .expect("bubblewrap is needed (.ci/run installs it)");
    let fake = FakeAnthropic::start(frozen()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plain = command(Path::new(DATA), Some(&fake.base_url()));
    let mut cmd = Command::new(bwrap);
    cmd.env_clear()
        .envs(plain.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env("MAINLOOP_WORKERS__SANDBOX", "off")
        .args(["--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev"])
        .args(["--proc", "/proc", "--tmpfs", "/tmp", "--size"])
        .arg((24_u64 << 20).to_string())
        .args(["--tmpfs", DATA])
        // A clone under /tmp keeps the binary there, under the tmpfs just mounted.
        .args(["--ro-bind", BIN, BIN, "--", BIN]);
    let (mut server, log) = spawn_logged(cmd, &dir.path().join("data"));
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let at = |path: &str| format!("{base}{path}");
    let inner = only_child_of(server.child.id()).await;
    let disk = PathBuf::from(format!("/proc/{inner}/root{DATA}"));
    assert!(disk.join("mainloop.db").exists(), "{}", disk.display());

    let before = try_chat(&base, &token, "probe question before")
        .await
        .unwrap();
    wait_reply(&base, &token, &before).await;
    // A turn in flight when the disk fills: its reply cannot be stored until space is
    // back (meanwhile no job can even be claimed).
    let in_flight = try_chat(&base, &token, "chat question in flight")
        .await
        .unwrap();
    wait_rule(&fake, "chat").await;

    // Fill the disk to the last byte.
    let ballast = disk.join("ballast");
    let mut file = std::fs::File::create(&ballast).unwrap();
    let chunk = vec![0_u8; 1 << 16];
    let mut filled = 0_usize;
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {
        filled += chunk.len();
    }
    drop(file);

    // Writes are refused with a clear 503 (those that still fit in SQLite's log are
    // taken); reads go on.
    // Long messages, so what still fits in SQLite's log is used up in a few.
    let long = "x".repeat(90_000);
    let mut accepted = vec![before.clone(), in_flight.clone()];
    let mut refused = Vec::new();
    let mut reads = Vec::new();
    for n in 0..200 {
        match try_chat(
            &base,
            &token,
            &format!("probe question while full {n} {long}"),
        )
        .await
        {
            Ok(id) => accepted.push(id),
            Err(p) => refused.push(p),
        }
        for (what, path) in [
            ("GET /api/chat/messages", "/api/chat/messages"),
            ("GET /api/tasks", "/api/tasks"),
        ] {
            reads.push(probe(what, reqwest::Method::GET, at(path), &token, None).await);
        }
        if refused.len() >= 3 {
            break;
        }
    }
    assert!(
        refused.len() >= 3,
        "never refused: {} accepted",
        accepted.len()
    );
    assert!(
        accepted.len() < 40,
        "{} taken on a full disk",
        accepted.len()
    );
    assert_refused_cleanly(&refused);
    for p in &refused {
        assert_eq!(p.status, 503, "{p:?}");
        assert!(p.message.contains("disk is full"), "says why: {p:?}");
    }
    for r in &reads {
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_running(&mut server);

    // Full for a while: background work keeps meeting it (the model has answered every
    // turn that was taken, and each has tried to store its reply).
    settled(&fake).await;
    assert_running(&mut server);

    // Space comes back: writes are taken again without a restart, and every message
    // taken is stored once and answered once.
    std::fs::remove_file(&ballast).unwrap();
    let (after, refused_after) = until_accepted(|| {
        probe(
            "POST /api/chat",
            reqwest::Method::POST,
            at("/api/chat"),
            &token,
            Some(json!({"text": "probe question after the disk was freed"})),
        )
    })
    .await;
    assert_eq!(after.status, 202);
    let thread = messages(&base, &token).await;
    let users: Vec<&str> = thread
        .iter()
        .filter(|m| m["role"] == "user" && m["kind"] == "text")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        users.len(),
        accepted.len() + 1,
        "{} user messages; taken {accepted:?}; thread {thread:#?}",
        users.len()
    );
    for id in &accepted {
        assert_eq!(users.iter().filter(|u| *u == id).count(), 1, "{id}");
    }
    for id in &users {
        wait_reply(&base, &token, id).await;
    }
    settle_copy(&fake, &disk).await;
    for id in &users {
        assert_eq!(
            replies(&base, &token, id).await.len(),
            1,
            "{id} answered once"
        );
    }

    // Nothing is corrupt. SQLite resolves `/proc/<pid>/root` back to this namespace, so
    // the database and its log are copied out, with the server paused meanwhile.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &inner.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    for name in ["mainloop.db", "mainloop.db-wal"] {
        if disk.join(name).exists() {
            std::fs::copy(disk.join(name), copy.join(name)).unwrap();
        }
    }
    signal("-CONT");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(copy.join("mainloop.db")),
    )
    .await
    .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    assert_running(&mut server);
    eprintln!(
        "faults: a {} MiB disk filled ({} MiB of ballast): {} messages taken while full, {} \
         refused with 503 ({:?}), {} reads answered, {refused_after} refusals after it was \
         freed, the in-flight turn asked the model {} times, integrity ok, {} background \
         errors logged; {:?}",
        24,
        filled >> 20,
        accepted.len() - 2,
        refused.len(),
        refused.first().map(|p| p.message.clone()),
        reads.len(),
        fake.message_requests()
            .iter()
            .filter(|r| r.rule_name.as_deref() == Some("chat"))
            .count(),
        log_lines(&log, "full"),
        started.elapsed()
    );
}

/// [`settle`] for a database SQLite cannot open where it is (inside the server's mount
/// namespace, seen through `/proc/<pid>/root`, a link SQLite resolves in the test's own
/// namespace): reads a copy of it, taken afresh each time it looks.
async fn settle_copy(fake: &FakeAnthropic, dir: &Path) {
    let copy = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", copy.path().join("mainloop.db").display());
    wait_for("the job queue to be empty", || async {
        for name in ["mainloop.db", "mainloop.db-wal"] {
            let _ = std::fs::remove_file(copy.path().join(name));
            if dir.join(name).exists() {
                std::fs::copy(dir.join(name), copy.path().join(name)).ok()?;
            }
        }
        // A copy taken mid-write may not read back; the next one will.
        try_jobs_idle(&url, Duration::from_secs(3600))
            .await
            .filter(|idle| *idle)
            .map(|_| ())
    })
    .await;
    settled(fake).await;
}

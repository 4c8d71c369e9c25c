//! PostgreSQL restarted, and refusing writes, under a running server.

use super::faults::*;
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_a_running_server_loses_nothing() {
    let started = std::time::Instant::now();
    let cluster = mainloop_testpg::OwnCluster::start().await.unwrap();
    let url = cluster.fresh_database_url().await.unwrap();
    let fake = FakeAnthropic::start(Script::from_yaml(STEADY).unwrap())
        .await
        .unwrap();
    let claude = claude_path();
    let data = tempfile::tempdir().unwrap();
    let repo = git_repo();
    let (mut server, log) = spawn_logged(
        postgres_command(data.path(), &fake, &url, claude.as_deref()),
        data.path(),
    );
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let follower = EventFollower::start(&base, &token);

    // Work in flight: three chat turns (one lane, answered in turn, each streaming for
    // a second) and, with the CLI, a task whose agent talks to a slow model.
    let mut sent = Vec::new();
    for n in 1..=3 {
        sent.push(
            try_chat(&base, &token, &format!("question {n}"))
                .await
                .unwrap(),
        );
    }
    let task = if claude.is_some() {
        let (status, t) = post(
            &base,
            &token,
            "/api/tasks",
            json!({"description": "steady work", "repo": repo.path(), "skip_plan": true}),
        )
        .await;
        assert_eq!(status, 201, "{t}");
        Some(t["id"].as_str().unwrap().to_owned())
    } else {
        None
    };
    wait_rule(&fake, "chat").await;
    if task.is_some() {
        wait_for("the task's agent to call the model", || async {
            fake.message_requests()
                .iter()
                .any(|r| r.body.to_string().contains("steady work"))
                .then_some(())
        })
        .await;
    }

    // Restart PostgreSQL twice while requests keep coming: at once, then staying down
    // for two seconds (as a real server with a large cache or crash recovery does).
    let restarts = 2;
    let stop = stop_flag();
    let rounds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (base, token, stop, done) = (base.clone(), token.clone(), stop.clone(), rounds.clone());
        tokio::spawn(async move {
            let mut probes = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                probes.extend(probe_round(&base, &token, n).await);
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            probes
        })
    };
    // Each fault meets requests: the load has made more rounds before and after each.
    let rounds_beyond = |n: usize| {
        let rounds = rounds.clone();
        async move {
            let start = rounds.load(std::sync::atomic::Ordering::Relaxed);
            wait_for(format!("{n} more rounds of requests"), || async {
                (rounds.load(std::sync::atomic::Ordering::Relaxed) >= start + n).then_some(())
            })
            .await;
        }
    };
    rounds_beyond(2).await;
    cluster.restart().await.unwrap();
    rounds_beyond(2).await;
    cluster.outage(Duration::from_secs(2)).await.unwrap();
    rounds_beyond(2).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let probes = load.await.unwrap();
    assert_running(&mut server);
    assert_refused_cleanly(&probes);
    let refused = probes.iter().filter(|p| p.status == 503).count();
    // Requests made while the server was down were refused, or waited for it (the pool
    // reconnects within its acquire timeout): either way some met the outage.
    let waited = probes
        .iter()
        .filter(|p| p.status != 503 && p.elapsed >= Duration::from_secs(1))
        .count();
    assert!(refused + waited > 0, "nothing met the outage: {probes:?}");

    // Writes work again without anyone's help.
    let after = try_wait_for(Duration::from_secs(10), || async {
        match try_chat(&base, &token, "question after the restart").await {
            Ok(id) => Some(id),
            Err(p) => {
                assert_refused_cleanly(&[p]);
                None
            }
        }
    })
    .await;
    sent.push(after.expect("writes work again after the restart"));
    for p in probes.iter().filter(|p| p.what == "POST /api/chat") {
        assert!(p.status == 202 || p.status == 503, "{p:?}");
    }

    // Every stored message is answered exactly once, and only stored ones exist.
    let thread = messages(&base, &token).await;
    let stored_users: Vec<String> = thread
        .iter()
        .filter(|m| m["role"] == "user" && m["kind"] == "text")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let accepted = probes
        .iter()
        .filter(|p| p.what == "POST /api/chat" && p.status == 202)
        .count();
    assert_eq!(
        stored_users.len(),
        sent.len() + accepted,
        "a refused message left nothing"
    );
    for id in &stored_users {
        wait_reply(&base, &token, id).await;
    }
    if let Some(id) = &task {
        let t = wait_task_state(&base, &token, id, "review").await;
        assert!(t["error"].is_null(), "{t}");
    }
    // Quiet now: nothing more is pending, and nothing was answered twice.
    settle(&fake, &url).await;
    for id in &stored_users {
        assert_eq!(
            replies(&base, &token, id).await.len(),
            1,
            "answered once: {id}"
        );
    }

    // Event ids: strictly increasing for the live client across its reconnects, and it
    // was given every event the log holds.
    let all = all_event_ids(&base, &token).await;
    assert!(strictly_increasing(&all), "{all:?}");
    follower.wait_for(*all.last().unwrap()).await;
    let live = follower.ids();
    assert!(
        strictly_increasing(&live),
        "duplicated or reordered: {live:?}"
    );
    assert_eq!(live, all, "the live client missed events");
    let reconnects = follower
        .reconnects
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(log_lines(&log, "job failed for good"), 0);
    eprintln!(
        "faults: {restarts} PostgreSQL restarts; {} API requests during them, {refused} refused \
         with 503, {waited} waited for the server, max latency {:?}; background: {} job attempts and {} claims met the outage; \
         the event stream reconnected {reconnects} times; {} events; {:?}",
        probes.len(),
        probes.iter().map(|p| p.elapsed).max().unwrap_or_default(),
        log_lines(&log, "job attempt failed; will retry"),
        log_lines(&log, "could not claim jobs"),
        all.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusing_writes_gets_503s_keeps_reads_and_recovers_without_a_restart() {
    let started = std::time::Instant::now();
    let cluster = mainloop_testpg::OwnCluster::start().await.unwrap();
    let url = cluster.fresh_database_url().await.unwrap();
    let fake = FakeAnthropic::start(frozen()).await.unwrap();
    let claude = claude_path();
    let data = tempfile::tempdir().unwrap();
    let repo = git_repo();
    let mut cmd = postgres_command(data.path(), &fake, &url, claude.as_deref());
    // The default lease (60 s): a turn refused mid-way must not wait it out.
    cmd.env_remove("MAINLOOP_DISPATCHER__LEASE_SECS");
    let (mut server, log) = spawn_logged(cmd, data.path());
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let follower = EventFollower::start(&base, &token);
    let at = |path: &str| format!("{base}{path}");

    // A task waiting for an answer, with its inbox item (needs the claude CLI).
    let asking = if claude.is_some() {
        let (status, t) = post(
            &base,
            &token,
            "/api/tasks",
            json!({"description": "build the greeter", "repo": repo.path()}),
        )
        .await;
        assert_eq!(status, 201, "{t}");
        let id = t["id"].as_str().unwrap().to_owned();
        wait_task_state(&base, &token, &id, "waiting_answers").await;
        let inbox = get(&base, &token, "/api/inbox").await;
        let item = inbox["items"][0]["id"].as_str().unwrap().to_owned();
        Some((id, item))
    } else {
        None
    };
    // A chat turn in flight: its reply streams for a couple of seconds.
    let in_flight = try_chat(&base, &token, "chat question in flight")
        .await
        .unwrap();
    wait_rule(&fake, "chat").await;
    let tasks_before = count(&url, "SELECT count(*) FROM tasks").await;
    let messages_before = count(&url, "SELECT count(*) FROM messages").await;

    // The database is frozen for maintenance.
    let cut = cluster.refuse_writes(&url).await.unwrap();
    let mut refusals = 0;
    let mut writes = vec![
        probe(
            "POST /api/chat",
            reqwest::Method::POST,
            at("/api/chat"),
            &token,
            Some(json!({"text": "probe question while frozen"})),
        )
        .await,
        probe(
            "POST /api/tasks",
            reqwest::Method::POST,
            at("/api/tasks"),
            &token,
            Some(json!({"description": "a task while frozen", "repo": repo.path()})),
        )
        .await,
    ];
    if let Some((id, item)) = &asking {
        writes.push(
            probe(
                "POST /api/tasks/{id}/answers",
                reqwest::Method::POST,
                at(&format!("/api/tasks/{id}/answers")),
                &token,
                Some(json!({"answers": {"q1": ["Rust"], "q2": ["Tests"]}})),
            )
            .await,
        );
        writes.push(
            probe(
                "POST /api/inbox/{id}/read",
                reqwest::Method::POST,
                at(&format!("/api/inbox/{item}/read")),
                &token,
                Some(json!({"read": true})),
            )
            .await,
        );
    }
    for w in &writes {
        assert_eq!((w.status, w.code.as_str()), (503, "unavailable"), "{w:?}");
    }
    assert_refused_cleanly(&writes);
    refusals += writes.len();
    let mut reads = Vec::new();
    for (what, path) in [
        ("GET /api/tasks", "/api/tasks"),
        ("GET /api/chat/messages", "/api/chat/messages"),
        ("GET /api/inbox", "/api/inbox"),
        ("GET /api/health", "/api/health"),
    ] {
        reads.push(probe(what, reqwest::Method::GET, at(path), &token, None).await);
    }
    for r in &reads {
        assert_eq!(r.status, 200, "reads keep working: {r:?}");
    }
    // Let background work (the chat turn, job claims) meet the refusal too: the turn's
    // reply has streamed in full, and its attempt to store it was refused.
    settled(&fake).await;
    wait_for("background work to meet the refusal", || async {
        (log_lines(&log, "job attempt failed; will retry")
            + log_lines(&log, "could not record a job's outcome yet")
            + log_lines(&log, "could not claim jobs")
            > 0)
        .then_some(())
    })
    .await;
    assert_running(&mut server);
    assert_eq!(
        count(&url, "SELECT count(*) FROM tasks").await,
        tasks_before
    );
    assert_eq!(
        count(&url, "SELECT count(*) FROM messages").await,
        messages_before
    );
    assert_nothing_half_written(&url).await;
    assert!(
        replies(&base, &token, &in_flight).await.is_empty(),
        "the turn could not store its reply while frozen"
    );

    // Writes are allowed again: the same server takes the same requests.
    cluster.allow_writes(&url).await.unwrap();
    let (chat, r1) = until_accepted(|| {
        probe(
            "POST /api/chat",
            reqwest::Method::POST,
            at("/api/chat"),
            &token,
            Some(json!({"text": "probe question after the freeze"})),
        )
    })
    .await;
    let (_, r2) = until_accepted(|| {
        probe(
            "POST /api/tasks",
            reqwest::Method::POST,
            at("/api/tasks"),
            &token,
            Some(json!({"description": "a task after the freeze", "repo": std::env::temp_dir()})),
        )
    })
    .await;
    let mut after_refusals = r1 + r2;
    if let Some((id, item)) = &asking {
        let (_, r3) = until_accepted(|| {
            probe(
                "POST /api/tasks/{id}/answers",
                reqwest::Method::POST,
                at(&format!("/api/tasks/{id}/answers")),
                &token,
                Some(json!({"answers": {"q1": ["Rust"], "q2": ["Tests"]}})),
            )
        })
        .await;
        let (_, r4) = until_accepted(|| {
            probe(
                "POST /api/inbox/{id}/read",
                reqwest::Method::POST,
                at(&format!("/api/inbox/{item}/read")),
                &token,
                Some(json!({"read": true})),
            )
        })
        .await;
        after_refusals += r3 + r4;
        // The answer reached the agent: it planned on.
        wait_task_state(&base, &token, id, "waiting_plan_review").await;
    }
    assert!(chat.status == 202, "{chat:?}");

    // The turn refused mid-way is answered exactly once, and so is the new message.
    wait_reply(&base, &token, &in_flight).await;
    let thread = messages(&base, &token).await;
    let users: Vec<String> = thread
        .iter()
        .filter(|m| m["role"] == "user" && m["kind"] == "text")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        users.len(),
        2,
        "the refused message left nothing: {thread:#?}"
    );
    for id in &users {
        wait_reply(&base, &token, id).await;
    }
    settle(&fake, &url).await;
    for id in &users {
        assert_eq!(replies(&base, &token, id).await.len(), 1, "answered once");
    }
    assert_nothing_half_written(&url).await;
    assert_eq!(
        count(&url, "SELECT count(*) FROM jobs WHERE state = 'failed'").await,
        0,
        "no background job was given up on"
    );
    assert!(count(&url, "SELECT count(*) FROM messages WHERE role = 'user'").await >= 2);
    assert_running(&mut server);

    let all = all_event_ids(&base, &token).await;
    follower.wait_for(*all.last().unwrap()).await;
    assert!(strictly_increasing(&follower.ids()));
    assert_eq!(follower.ids(), all, "the live client missed events");
    assert_eq!(log_lines(&log, "job failed for good"), 0);
    eprintln!(
        "faults: writes refused once ({cut} sessions cut); {refusals} API writes refused with 503 \
         during it, {} reads served; background: {} job attempts, {} outcome records and {} \
         claims refused and retried; {after_refusals} refusals after writes returned; {:?}",
        reads.len(),
        log_lines(&log, "job attempt failed; will retry"),
        log_lines(&log, "could not record a job's outcome yet"),
        log_lines(&log, "could not claim jobs"),
        started.elapsed()
    );
}

//! GitHub: no CI, outages, closing, webhooks, restarts, CI re-checks and timeouts,
//! rate limits and errors; and planted secrets never reaching logs or transcripts.

use super::faults::*;
use super::github::*;
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_no_ci_outage_close_webhooks_restart_app_answers_and_cancel() {
    let Some((dir, gh, fake, claude)) = github_world().await else {
        return;
    };
    let data = dir.path().join("data");
    let mut server = start_with_github(&data, &fake, &claude, &gh);
    let token = server.token.clone().unwrap();

    // A repository without CI is reported as such, never as green.
    let (_, t1) = post(
        &server.base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix the typo", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let t1 = t1["id"].as_str().unwrap().to_owned();
    gh.wait_comment(1, "Draft pull request").await;
    wait_task_state(&server.base, &token, &t1, "review").await;
    let ready = gh.wait_comment(2, "Ready for review").await;
    assert!(ready["body"].as_str().unwrap().contains("no CI"), "{ready}");
    assert!(
        !ready["body"].as_str().unwrap().contains("green"),
        "{ready}"
    );

    // Webhooks: a forged delivery is refused; a signed one wakes the task's watch.
    let body = json!({"action": "created", "repository": {"full_name": "octo/app"}, "issue": {"number": 2}, "comment": {"body": "hi"}}).to_string();
    let (status, _) = deliver(&server.base, "issue_comment", &body, "sha256=00").await;
    assert_eq!(status, 401);
    let forged = body.replace("\"hi\"", "\"/revise delete everything\"");
    let (status, _) = deliver(
        &server.base,
        "issue_comment",
        &forged,
        &sign(body.as_bytes()),
    )
    .await;
    assert_eq!(status, 401, "a signature over another body");
    let (status, _) = deliver(&server.base, "ping", "{}", &sign(b"{}")).await;
    assert_eq!(status, 202);
    let (status, woke) =
        deliver(&server.base, "issue_comment", &body, &sign(body.as_bytes())).await;
    assert_eq!((status, woke), (202, json!({"woken": 1})));

    // GitHub goes down: the watch keeps trying (and says so), then carries on.
    gh.fake.set_outage(Some(mainloop_fake_github::Outage {
        status: 503,
        requests: None,
    }));
    wait_for("the transcript to tell of GitHub trouble", || async {
        transcript_text(&server.base, &token, &t1)
            .await
            .contains("GitHub trouble")
            .then_some(())
    })
    .await;
    assert!(
        transcript_text(&server.base, &token, &t1)
            .await
            .contains("GitHub trouble")
    );
    gh.fake.set_outage(None);
    // Closed unmerged on GitHub: the task is cancelled.
    gh.call(
        reqwest::Method::PATCH,
        "/repos/octo/app/pulls/2",
        Some(json!({"state": "closed"})),
    )
    .await;
    wait_task_state(&server.base, &token, &t1, "cancelled").await;
    assert!(
        transcript_text(&server.base, &token, &t1)
            .await
            .contains("GitHub is reachable again")
    );

    // A second task reaches review; mainloop is killed while it waits there.
    let (_, t2) = post(
        &server.base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix two", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let t2 = t2["id"].as_str().unwrap().to_owned();
    wait_task_state(&server.base, &token, &t2, "review").await;
    let sha = gh.wait_push(4, None).await;
    server.sigkill();
    // Feedback arrives while mainloop is down; after the restart it is picked up.
    gh.post(
        "/repos/octo/app/issues/4/comments",
        json!({"body": "@mainloop please say reviewed"}),
    )
    .await;
    server = start_with_github(&data, &fake, &claude, &gh);
    gh.wait_comment(4, "addressing this feedback").await;
    gh.wait_push(4, Some(&sha)).await;
    wait_task_state(&server.base, &token, &t2, "review").await;

    // Cancelling in mainloop closes the pull request and the issue, one comment each.
    let (status, _) = post(
        &server.base,
        &token,
        &format!("/api/tasks/{t2}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    wait_for("PR #4 and issue #3 to be closed", || async {
        (gh.pr(4).await["state"] == "closed"
            && gh.get("/repos/octo/app/issues/3").await["state"] == "closed")
            .then_some(())
    })
    .await;
    assert_eq!(gh.pr(4).await["state"], "closed");
    assert_eq!(gh.get("/repos/octo/app/issues/3").await["state"], "closed");
    for n in [3, 4] {
        let cancelled = gh
            .comments(n)
            .await
            .into_iter()
            .filter(|c| {
                c["body"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("Cancelled in mainloop")
            })
            .count();
        assert_eq!(cancelled, 1, "#{n}");
    }

    // Answered in the app first: the issue is told, and a late answer there is refused.
    let (_, t3) = post(
        &server.base,
        &token,
        "/api/tasks",
        json!({"description": "build the greeter", "repo": "octo/app"}),
    )
    .await;
    let t3 = t3["id"].as_str().unwrap().to_owned();
    wait_task_state(&server.base, &token, &t3, "waiting_answers").await;
    gh.wait_comment(5, "The worker has questions").await;
    let (status, _) = post(
        &server.base,
        &token,
        &format!("/api/tasks/{t3}/answers"),
        json!({"answers": {"q1": ["Go"], "q2": ["Docs"]}}),
    )
    .await;
    assert_eq!(status, 200);
    gh.wait_comment(5, "Answered in mainloop").await;
    gh.post(
        "/repos/octo/app/issues/5/comments",
        json!({"body": "1: Rust\n2: 1"}),
    )
    .await;
    gh.wait_comment(5, "already answered in mainloop").await;
    let t = get(&server.base, &token, &format!("/api/tasks/{t3}")).await;
    assert_eq!(t["answers"], json!({"q1": ["Go"], "q2": ["Docs"]}));
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_ci_is_rechecked_after_the_last_round_and_pending_times_out() {
    let Some((dir, gh, fake, claude)) = github_world().await else {
        return;
    };
    let server = start_with_github_env(
        &dir.path().join("data"),
        &fake,
        &claude,
        &gh,
        &[
            ("MAINLOOP_GITHUB__MAX_CI_ROUNDS", "1"),
            ("MAINLOOP_GITHUB__CI_PENDING_TIMEOUT_SECS", "4"),
        ],
    );
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());

    // One fix round allowed: the fix is pushed and checked again; red again fails the task.
    let (_, t) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix one", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    let sha = gh.wait_push(2, None).await;
    wait_task_state(&base, &token, &id, "checking").await;
    gh.ci(&sha, "failure").await;
    let fixed = gh.wait_push(2, Some(&sha)).await;
    gh.ci(&fixed, "failure").await;
    let failed = wait_task_state(&base, &token, &id, "failed").await;
    assert!(
        failed["error"].as_str().unwrap().contains("check"),
        "{failed}"
    );
    gh.wait_comment(2, "The worker failed").await;

    // CI that never finishes fails the task after the pending timeout.
    let (_, t) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix two", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    let sha = gh.wait_push(4, None).await;
    gh.post(
        "/repos/octo/app/check-runs",
        json!({"name": "build", "head_sha": sha, "status": "in_progress"}),
    )
    .await;
    let failed = wait_task_state(&base, &token, &id, "failed").await;
    assert!(
        failed["error"].as_str().unwrap().contains("did not finish"),
        "{failed}"
    );

    // GitHub is down when a task starts: mirroring waits it out, far beyond the
    // dispatcher's own retry budget (8 attempts within a second or two here), and then
    // catches up.
    gh.fake.set_outage(Some(mainloop_fake_github::Outage {
        status: 502,
        requests: None,
    }));
    let (_, t) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix three", "repo": "octo/app"}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    gh.fake.reset_stats();
    // Far beyond the dispatcher's retry budget: the outage answered many times over.
    wait_for("the outage to be met many times", || async {
        (gh.fake
            .stats()
            .injected
            .get("outage 502")
            .copied()
            .unwrap_or(0)
            >= 12)
            .then_some(())
    })
    .await;
    assert!(
        transcript_text(&base, &token, &id)
            .await
            .contains("GitHub trouble")
    );
    gh.fake.set_outage(None);
    // The plan issue appears once GitHub answers again.
    wait_for("the plan issue #5 to appear", || async {
        let r = client()
            .get(format!("{}/repos/octo/app/issues/5", gh.base))
            .header("authorization", format!("Bearer {ALICE}"))
            .header("user-agent", "e2e")
            .send()
            .await
            .unwrap();
        r.status().is_success().then_some(())
    })
    .await;
    let issue = gh.get("/repos/octo/app/issues/5").await;
    assert_eq!(issue["title"], "quick fix three");
    drop(server);
}

/// Planted secrets (the model API key, the GitHub token, the webhook secret, the owner's
/// API token) never reach the server's log, even at debug level, nor a task transcript
/// or the chat, through a chat turn and a whole GitHub task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_never_reach_logs_or_transcripts() {
    let Some((dir, gh, fake, claude)) = github_world().await else {
        return;
    };
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = github_command(&dir.path().join("data"), &fake, &claude, &gh, &[]);
    cmd.env("MAINLOOP_LOG__FILTER", "debug");
    let server = Server::spawn_logging_to(cmd, Stdio::from(log));
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());

    let (status, _) = post(&base, &token, "/api/chat", json!({"text": "hello there"})).await;
    assert_eq!(status, 202);
    let (_, t) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix the log", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    let reviewed = try_wait_for(Duration::from_secs(120), || async {
        let state = get(&base, &token, &format!("/api/tasks/{id}")).await["state"].clone();
        (state == "review").then_some(())
    })
    .await;
    if reviewed.is_none() {
        let state = get(&base, &token, &format!("/api/tasks/{id}")).await["state"].clone();
        // Say why, from the server's own account of it.
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let forge: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("forge") || l.contains("WARN") || l.contains("ERROR"))
            .collect();
        let tail = forge[forge.len().saturating_sub(60)..].join("\n");
        panic!(
            "the task is {state}, not in review; transcript: {}\nserver log:\n{tail}",
            transcript_text(&base, &token, &id).await
        );
    }
    let (status, _) = deliver(&base, "ping", "{}", &sign(b"{}")).await;
    assert_eq!(status, 202);
    let chat = messages(&base, &token).await;
    let transcript = transcript_text(&base, &token, &id).await;
    drop(server);

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.len() > 1000,
        "the debug log was written ({} bytes)",
        log.len()
    );
    for (name, secret) in [
        ("the model API key", "sk-planted-secret-4242"),
        ("the GitHub token", BOT),
        ("the webhook secret", HOOK_SECRET),
        ("the owner's API token", token.as_str()),
    ] {
        assert!(!log.contains(secret), "{name} is in the server log");
        assert!(!transcript.contains(secret), "{name} is in the transcript");
        assert!(
            !serde_json::to_string(&chat).unwrap().contains(secret),
            "{name} is in the chat"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_rate_limits_errors_and_timeouts_delay_a_task_but_duplicate_nothing() {
    use mainloop_fake_github::{Hang, Outage, SecondaryLimit};
    let Some((dir, gh, fake, claude)) = github_world().await else {
        return;
    };
    let started = std::time::Instant::now();
    let data = dir.path().join("data");
    // A short client timeout, so a GitHub that does not answer in time is met for real.
    let (mut server, log) = spawn_logged(
        github_command(
            &data,
            &fake,
            &claude,
            &gh,
            &[("MAINLOOP_GITHUB__REQUEST_TIMEOUT_SECS", "2")],
        ),
        &data,
    );
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());

    // The task's first GitHub calls meet a secondary rate limit (429, retry-after 2 s)
    // and errors (500), two of each. Then each step's write times out (504 after a
    // hang), most of them after GitHub made the change, so only the answer is lost: a
    // client that retries blindly duplicates the issue, the pull request or the
    // comment. One comment's connection is cut mid-answer instead, after GitHub posted
    // it. All are laid out before the task starts: each request takes the first hang
    // that matches it, however soon it comes.
    let mut hangs: Vec<Hang> = [
        ("POST /repos/{o}/{r}/issues", true),
        ("POST /repos/{o}/{r}/pulls", true),
        ("POST /repos/{o}/{r}/issues/{n}/comments", false),
    ]
    .into_iter()
    .map(|(route, applied)| timeout_on(route, applied))
    .collect();
    hangs.push(Hang {
        cut: true,
        ..timeout_on("POST /repos/{o}/{r}/issues/{n}/comments", true)
    });
    hangs.push(timeout_on("POST /graphql", true));
    gh.fake.set_hangs(hangs);
    gh.fake.set_secondary_limit(SecondaryLimit {
        retry_after_secs: 2,
        requests: Some(2),
    });
    gh.fake.set_outage(Some(Outage {
        status: 500,
        requests: Some(2),
    }));
    let (_, t) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "quick fix under a flaky GitHub", "repo": "octo/app", "skip_plan": true}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    gh.wait_injected("secondary 429", 2).await;
    gh.wait_injected("outage 500", 2).await;
    let timeouts = 4;
    gh.wait_injected("hang 504", timeouts).await;
    gh.wait_injected("hang cut", 1).await;
    wait_task_state(&base, &token, &id, "review").await;
    let (issues, pulls) = gh.issues_and_pulls().await;
    assert_eq!(issues.len(), 1, "one plan issue: {issues:#?}");
    assert_eq!(pulls.len(), 1, "one pull request: {pulls:#?}");
    let (issue, pr) = (
        issues[0]["number"].as_u64().unwrap(),
        pulls[0]["number"].as_u64().unwrap(),
    );
    gh.wait_comment(pr, "Ready for review").await;
    assert_eq!(gh.pr(pr).await["draft"], false);

    // A slow GitHub: the next two requests are answered 1.5 s late, within the client's
    // timeout; then two reads take longer than it (4 s against 2 s): mainloop gives up
    // on them and polls again later.
    gh.fake.set_hang(Some(Hang {
        delay_ms: 1500,
        status: None,
        applied: false,
        cut: false,
        method: None,
        route: None,
        requests: Some(2),
    }));
    gh.wait_injected("hang", 2).await;
    gh.fake.set_hang(Some(Hang {
        delay_ms: 4000,
        status: None,
        applied: false,
        cut: false,
        method: Some("GET".into()),
        route: None,
        requests: Some(2),
    }));
    gh.wait_injected("hang", 4).await;
    wait_log(&log, "unavailable: timed out").await;

    // Approved in the app; the merge's answer is lost after GitHub merged.
    gh.fake
        .set_hang(Some(timeout_on("PUT /repos/{o}/{r}/pulls/{n}/merge", true)));
    let (status, _) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/review"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200);
    gh.wait_injected("hang 504", timeouts + 1).await;
    wait_task_state(&base, &token, &id, "merged").await;
    assert_eq!(gh.pr(pr).await["merged"], true);

    // Nothing was posted twice, on the issue or the pull request.
    settle(&fake, &sqlite_url(&data)).await;
    let (issues, pulls) = gh.issues_and_pulls().await;
    assert_eq!((issues.len(), pulls.len()), (1, 1));
    for n in [issue, pr] {
        let comments = gh.comments(n).await;
        assert!(repeated(&comments).is_empty(), "#{n}: {comments:#?}");
    }
    assert_running(&mut server);
    let transcript = transcript_text(&base, &token, &id).await;
    assert!(
        transcript.contains("GitHub trouble"),
        "the outage was reported"
    );
    let injected = gh.fake.stats().injected;
    eprintln!(
        "faults: GitHub served {injected:?}; {} forge job attempts put off for later; {:?}",
        log_lines(&log, "GitHub call failed; trying again later"),
        started.elapsed()
    );
}

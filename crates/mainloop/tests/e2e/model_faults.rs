//! The model API misbehaving, for the main thread and for a worker's agent.

use super::faults::*;
use super::github::transcript_text;
use super::*;

/// The main thread's model misbehaves, one way per message: rate limited (429 with
/// `retry-after`), failing (500), overloaded (529), too slow, and refusing the key.
const MISBEHAVING: &str = r#"
rules:
  - name: limited
    match: {user_contains: "rate limited please", times: 2}
    status: 429
    retry_after: 1
  - name: failing
    match: {user_contains: "server error please", times: 2}
    status: 500
  - name: overloaded
    match: {user_contains: "overloaded please", times: 1}
    status: 529
  - name: slow
    match: {user_contains: "slow please", times: 1}
    delay_ms: 700
    reply: [{text: "This reply streams too slowly to arrive in time: one, two, three."}]
  - name: refused
    match: {user_contains: "bad key please"}
    status: 401
    error: {message: "invalid x-api-key"}
  - name: answer
    match: {system_contains: "You are mainloop"}
    reply: [{text: "Answered."}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_model_api_still_answers_each_message_once_and_says_so() {
    let started = std::time::Instant::now();
    let fake = FakeAnthropic::start(Script::from_yaml(MISBEHAVING).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cmd = command(data.path(), Some(&fake.base_url()));
    // A reply slower than this is cut off and tried again.
    cmd.env("MAINLOOP_MODEL__REQUEST_TIMEOUT_SECS", "2");
    let (mut server, _log) = spawn_logged(cmd, data.path());
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());

    // (message, faults the fake serves it, what the final reply must say)
    let cases = [
        ("rate limited please", 2, "Answered."),
        ("server error please", 2, "Answered."),
        ("overloaded please", 1, "Answered."),
        ("slow please", 1, "Answered."),
        ("bad key please", 1, "I could not reply"),
    ];
    let mut ids = Vec::new();
    let mut took = Vec::new();
    for (text, _, expected) in cases {
        let t = std::time::Instant::now();
        let id = try_chat(&base, &token, text).await.unwrap();
        let reply = wait_reply(&base, &token, &id).await;
        took.push(t.elapsed());
        assert!(
            reply["text"].as_str().unwrap().contains(expected),
            "{text}: {reply}"
        );
        ids.push(id);
    }
    settle(&fake, &sqlite_url(data.path())).await;
    for (id, (text, ..)) in ids.iter().zip(cases) {
        assert_eq!(
            replies(&base, &token, id).await.len(),
            1,
            "{text}: answered once"
        );
    }
    assert_running(&mut server);

    // Exactly one model call per fault plus the one that worked (none for the key the
    // provider refused: retrying cannot help).
    let log = fake.message_requests();
    let calls = |needle: &str| -> Vec<_> {
        log.iter()
            .filter(|r| {
                let messages = r.body["messages"].as_array().unwrap();
                messages.last().unwrap().to_string().contains(needle)
            })
            .cloned()
            .collect()
    };
    for (text, faults, _) in cases {
        let expected = if text == "bad key please" {
            1
        } else {
            faults + 1
        };
        assert_eq!(calls(text).len(), expected, "{text}");
    }
    // The rate limit's `retry-after: 1` was honoured before each new attempt.
    let limited = calls("rate limited please");
    for w in limited.windows(2) {
        assert!(
            w[1].at_ms - w[0].at_ms >= 1000,
            "retried {} ms after a 429",
            w[1].at_ms - w[0].at_ms
        );
    }
    // The slow reply was cut off at the timeout and tried again at once.
    let slow = calls("slow please");
    let cut_after = slow[1].at_ms - slow[0].at_ms;
    assert!(
        (2000..6000).contains(&cut_after),
        "retried {cut_after} ms after the slow start"
    );

    // The user was told each time: one `chat.error` per failed attempt, saying whether
    // it is being retried, and nothing else for the turn but its one reply.
    let events = all_events(&base, &token).await;
    let errors: Vec<&Value> = events
        .iter()
        .filter(|(_, name, _)| name == "chat.error")
        .map(|(_, _, data)| data)
        .collect();
    let retrying = errors.iter().filter(|e| e["retrying"] == true).count();
    let final_errors = errors.iter().filter(|e| e["retrying"] == false).count();
    assert_eq!((retrying, final_errors), (6, 1), "{errors:#?}");
    for e in &errors {
        assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
    }
    let served: usize = log.iter().filter(|r| r.status != 200).count();
    eprintln!(
        "faults: model API served {served} error responses (2×429 retry-after 1 s, 2×500, 1×529, \
         1×401) and 1 reply slower than the 2 s timeout; the user got {retrying} retry notices \
         and 1 final error; per message {took:?}; {:?}",
        started.elapsed()
    );
}

/// A worker's model calls fail: briefly for the first task (the claude CLI's own
/// retries ride it out), overloaded three times in a row for the second (the CLI gives
/// up; mainloop resumes it later), six times for the third (it gives up twice: more
/// than the one resume the test allows).
const FLAKY_WORKER_MODEL: &str = r##"
rules:
  - name: brief-500
    match: {user_contains: "briefly flaky work", times: 2}
    status: 500
  - name: brief-429
    match: {user_contains: "briefly flaky work", times: 1}
    status: 429
    retry_after: 1
  - name: brief-work
    match: {user_contains: "briefly flaky work"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'brief\\n' >> brief.txt", description: "Work"}}
  - name: down-529
    match: {user_contains: "long outage work", times: 3}
    status: 529
  - name: endless-529
    match: {user_contains: "endless outage work", times: 6}
    status: 529
  - name: endless-work
    match: {user_contains: "endless outage work"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'endless\\n' >> endless.txt", description: "Work"}}
  - name: down-continue
    match: {user_contains: "mainloop restarted"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'outage\\n' >> outage.txt", description: "Work"}}
  - name: down-work
    match: {user_contains: "long outage work"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'outage\\n' >> outage.txt", description: "Work"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Finished."}]
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_model_outages_are_ridden_out_and_a_longer_one_fails_the_task_until_retried() {
    let Some(claude) = claude_path() else { return };
    let started = std::time::Instant::now();
    let fake = FakeAnthropic::start(Script::from_yaml(FLAKY_WORKER_MODEL).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = git_repo();
    let mut cmd = command(data.path(), Some(&fake.base_url()));
    cmd.env("MAINLOOP_WORKERS__CLAUDE_COMMAND", &claude)
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("MAINLOOP_WORKERS__API_RETRIES", "1")
        .env("MAINLOOP_WORKERS__API_RETRY_DELAY_SECS", "1");
    let (mut server, _log) = spawn_logged(cmd, data.path());
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let create = |description: &'static str| {
        let (base, token, repo) = (base.clone(), token.clone(), repo.path().to_owned());
        async move {
            let (status, t) = post(
                &base,
                &token,
                "/api/tasks",
                json!({"description": description, "repo": repo, "skip_plan": true}),
            )
            .await;
            assert_eq!(status, 201, "{t}");
            t["id"].as_str().unwrap().to_owned()
        }
    };
    let rules = || -> Vec<(String, u16, u64)> {
        fake.message_requests()
            .into_iter()
            .map(|r| (r.rule_name.unwrap_or_default(), r.status, r.at_ms))
            .collect()
    };

    // Two 500s and a 429: the CLI retries by itself and the task never notices.
    let brief = create("briefly flaky work").await;
    wait_task_state(&base, &token, &brief, "review").await;
    let seen = rules();
    let brief_calls: Vec<_> = seen.iter().filter(|r| r.0.starts_with("brief")).collect();
    let statuses: Vec<u16> = brief_calls.iter().map(|r| r.1).collect();
    assert_eq!(statuses, [500, 500, 429, 200], "{seen:?}");
    // The CLI waited at least the `retry-after` second before its next call.
    assert!(brief_calls[3].2 - brief_calls[2].2 >= 1000, "{seen:?}");
    let diff = get(&base, &token, &format!("/api/tasks/{brief}/diff")).await;
    assert_eq!(
        diff["text"].as_str().unwrap().matches("+brief").count(),
        1,
        "the work ran once: {diff}"
    );

    // Three 529s in a row: the CLI gives up on an overloaded API after three, whatever
    // its retry setting. mainloop says so, waits, and resumes the session, which
    // finishes the work, once, with nobody's help.
    let outage = create("long outage work").await;
    wait_task_state(&base, &token, &outage, "review").await;
    let down: Vec<_> = rules().into_iter().filter(|r| r.0 == "down-529").collect();
    assert_eq!(down.len(), 3, "{:?}", rules());
    let transcript = transcript_text(&base, &token, &outage).await;
    assert!(
        transcript.contains("the model API is failing") && transcript.contains("1 of 1"),
        "{transcript}"
    );
    let diff = get(&base, &token, &format!("/api/tasks/{outage}/diff")).await;
    assert_eq!(
        diff["text"].as_str().unwrap().matches("+outage").count(),
        1,
        "the work ran once: {diff}"
    );
    let inbox = get(&base, &token, "/api/inbox").await;
    let kinds: Vec<&str> = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["task_id"] == outage.as_str())
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["review"],
        "only the review needs the human: {inbox}"
    );

    // An outage that outlasts the resumes (one here) fails the task, saying why; the
    // human's retry finishes the work, once.
    let endless = create("endless outage work").await;
    let failed = wait_task_state(&base, &token, &endless, "failed").await;
    let reason = failed["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("529") && reason.contains("still failing after 1 retry"),
        "{failed}"
    );
    let down: Vec<_> = rules()
        .into_iter()
        .filter(|r| r.0 == "endless-529")
        .collect();
    assert_eq!(down.len(), 6, "{:?}", rules());
    let (status, _) = post(
        &base,
        &token,
        &format!("/api/tasks/{endless}/retry"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    wait_task_state(&base, &token, &endless, "review").await;
    let diff = get(&base, &token, &format!("/api/tasks/{endless}/diff")).await;
    assert_eq!(
        diff["text"].as_str().unwrap().matches("+endless").count(),
        1,
        "the work ran once: {diff}"
    );
    assert_running(&mut server);
    let served = rules().iter().filter(|r| r.1 != 200).count();
    eprintln!(
        "faults: the worker's model served {served} errors (2×500 and 1×429 ridden out by the \
         CLI's own retries; 3×529 made the CLI give up and mainloop resumed it; 6×529 outlasted \
         the resume, failing the task with {reason:?}, and a retry finished it); {:?}",
        started.elapsed()
    );
}

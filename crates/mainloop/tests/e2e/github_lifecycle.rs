//! GitHub: plan issue, reactions, draft pull request, the CI loop, review and merge.

use super::github::*;
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_plan_issue_reaction_draft_pr_ci_loop_review_and_merge() {
    let Some((dir, gh, fake, claude)) = github_world().await else {
        return;
    };
    let data = dir.path().join("data");
    let server = start_with_github(&data, &fake, &claude, &gh);
    let token = server.token.clone().unwrap();
    let base = server.base.clone();

    // A task on octo/app gets a labelled plan issue, and its questions appear there.
    let (status, task) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "build the greeter", "repo": "https://github.com/octo/app"}),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    assert_eq!(task["repo"], "octo/app");
    let questions = gh.wait_comment(1, "The worker has questions").await;
    assert!(
        questions["body"]
            .as_str()
            .unwrap()
            .contains("*(choose any)*")
    );
    let issue = gh.get("/repos/octo/app/issues/1").await;
    assert_eq!(issue["labels"][0]["name"], "mainloop");
    assert_eq!(issue["title"], "build the greeter");

    // Answered on GitHub (one of them a multi-select); a bad attempt is explained first.
    gh.post(
        "/repos/octo/app/issues/1/comments",
        json!({"body": "1: Rust"}),
    )
    .await;
    gh.wait_comment(1, "missing: 2").await;
    gh.post(
        "/repos/octo/app/issues/1/comments",
        json!({"body": "Here you go:\n1: Rust\n2: 1, docs"}),
    )
    .await;
    gh.wait_comment(1, "Thanks @alice").await;
    let t = wait_task_state(&base, &token, &id, "waiting_plan_review").await;
    assert_eq!(
        t["answers"],
        json!({"q1": ["Rust"], "q2": ["Tests", "Docs"]})
    );

    // The plan is posted; a 👍 on it approves.
    let plan = gh.wait_comment(1, "The worker's plan").await;
    let plan_id = plan["id"].as_u64().unwrap();
    // A stranger cannot approve it, by comment or by reaction.
    gh.call_as(
        MALLORY,
        reqwest::Method::POST,
        "/repos/octo/app/issues/1/comments",
        Some(json!({"body": "/approve"})),
    )
    .await;
    gh.call_as(
        MALLORY,
        reqwest::Method::POST,
        &format!("/repos/octo/app/issues/comments/{plan_id}/reactions"),
        Some(json!({"content": "+1"})),
    )
    .await;
    gh.wait_polled().await;
    assert_eq!(
        get(&base, &token, &format!("/api/tasks/{id}")).await["state"],
        "waiting_plan_review"
    );
    gh.post(
        &format!("/repos/octo/app/issues/comments/{plan_id}/reactions"),
        json!({"content": "+1"}),
    )
    .await;
    gh.wait_comment(1, "approved by @alice's 👍").await;

    // Implemented, pushed, and a draft PR that closes the issue.
    gh.wait_comment(1, "Draft pull request").await;
    let pr = gh.pr(2).await;
    assert_eq!(pr["draft"], true);
    assert!(pr["body"].as_str().unwrap().contains("Closes #1"));
    let mut sha = gh.wait_push(2, None).await;
    wait_task_state(&base, &token, &id, "checking").await;

    // CI fails twice (the agent gets the log tail each time), then passes.
    for round in 1..=2 {
        gh.ci(&sha, "failure").await;
        gh.wait_comment(2, "CI failed").await;
        sha = gh.wait_push(2, Some(&sha)).await;
        let transcript = get(
            &base,
            &token,
            &format!("/api/tasks/{id}/transcript?limit=1000"),
        )
        .await;
        assert!(
            transcript.to_string().contains("mismatched types"),
            "round {round}: the failing job's log reached the agent: {transcript:#}"
        );
    }
    gh.ci(&sha, "success").await;
    wait_task_state(&base, &token, &id, "review").await;
    gh.wait_comment(2, "Ready for review").await;
    assert_eq!(
        gh.pr(2).await["draft"],
        false,
        "marked ready through GraphQL"
    );
    let inbox = get(&base, &token, "/api/inbox").await;
    let item = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "review" && i["resolved_at"].is_null())
        .cloned()
        .expect("a review item");
    let body = item["body"].as_str().unwrap();
    assert!(
        body.contains("Pull request: ") && body.contains("/pull/2"),
        "{body}"
    );
    assert!(body.contains("CI: green"), "{body}");

    // A review requesting changes goes back to the agent; its push is checked again.
    gh.post(
        "/repos/octo/app/pulls/2/reviews",
        json!({"event": "REQUEST_CHANGES", "body": "Make it friendlier.", "comments": [{"path": "greeting.txt", "line": 1, "body": "say reviewed"}]}),
    )
    .await;
    gh.wait_comment(2, "addressing this feedback").await;
    sha = gh.wait_push(2, Some(&sha)).await;
    wait_task_state(&base, &token, &id, "checking").await;
    gh.ci(&sha, "success").await;
    wait_task_state(&base, &token, &id, "review").await;

    // The projects view shows the open pull request and the default branch's commits.
    let projects = get(&base, &token, "/api/projects").await;
    let project = &projects["projects"][0];
    assert_eq!(project["repo"], "octo/app");
    assert_eq!(
        project["forge"]["open_pull_requests"][0]["number"], 2,
        "{project}"
    );
    assert!(
        !project["forge"]["recent_commits"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{project}"
    );
    let one = get(
        &base,
        &token,
        &format!("/api/projects/{}", project["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(one["forge"]["open_pull_requests"][0]["draft"], false);

    // Merged on GitHub: detected.
    gh.call(
        reqwest::Method::PUT,
        "/repos/octo/app/pulls/2/merge",
        Some(json!({})),
    )
    .await;
    let merged = wait_task_state(&base, &token, &id, "merged").await;
    // The task links to its plan issue and pull request on GitHub.
    let links = &merged["forge"];
    assert_eq!(links["repo"], "octo/app", "{merged}");
    assert_eq!(
        (&links["issue_number"], &links["pull_request_number"]),
        (&json!(1), &json!(2)),
        "{links}"
    );
    for (field, tail) in [
        ("issue_url", "/octo/app/issues/1"),
        ("pull_request_url", "/octo/app/pull/2"),
    ] {
        let url = links[field].as_str().unwrap_or_default();
        assert!(
            url.starts_with("http") && url.ends_with(tail),
            "{field}: {links}"
        );
    }
    // The merged work stays viewable.
    let diff = get(&base, &token, &format!("/api/tasks/{id}/diff")).await;
    assert!(diff["files"].to_string().contains("greeting.txt"), "{diff}");
    let bare = gh.fake.repo_path("octo", "app");
    let out = Command::new("git")
        .args([
            "--git-dir",
            bare.to_str().unwrap(),
            "show",
            "main:greeting.txt",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello, reviewed\n");

    // The token never reached git's configuration or the transcript.
    let transcript = get(
        &base,
        &token,
        &format!("/api/tasks/{id}/transcript?limit=1000"),
    )
    .await;
    assert!(!transcript.to_string().contains(BOT));
    drop(server);
}

//! `mainloop search` run as a user runs it against a real server: a hit with the words
//! found in brackets (the output is a pipe), the API's JSON, filters, and mistakes
//! refused with the server's reason.

use super::*;
use crate::cli::client::User;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let (status, _) = post(
        &base,
        &token,
        "/api/chat",
        json!({"text": "What about the zebrafish rollout?"}),
    )
    .await;
    assert_eq!(status, 202);
    let user = User::new();
    let run = |args: &'static [&'static str]| {
        let flags = ["--server", base.as_str(), "--token", token.as_str()];
        let args: Vec<&str> = args.iter().copied().chain(flags).collect();
        let user = &user;
        async move { user.run(&args).await }
    };

    let out = run(&["search", "zebrafish", "roll"]).await.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("message · You · 20"), "{out:?}");
    assert_eq!(
        lines[1], "  What about the [zebrafish] [rollout]?",
        "{out:?}"
    );
    assert_eq!(lines.len(), 2, "{out:?}");

    let doc = run(&["search", "ZEBRAFISH", "--json"]).await.ok().json();
    let hits = doc["results"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{doc}");
    assert_eq!(hits[0]["kind"], "message");

    let out = run(&["search", "zebrafish", "--kind", "task"]).await.ok();
    assert!(
        out.stdout.starts_with("Nothing found for 'zebrafish'"),
        "{out:?}"
    );
    run(&["search", "zebrafish", "--from", "2999-01-01"])
        .await
        .ok();

    run(&["search", "zebrafish", "--kind", "everything"])
        .await
        .refused(1, "kind 'everything' is not one of");
    run(&["search", "zebrafish", "--limit", "0"])
        .await
        .refused(1, "limit must be at least 1");
    run(&["search", "?!"])
        .await
        .refused(1, "q must not be empty");
    run(&["search", "zebrafish", "--task", "not-an-id"])
        .await
        .refused(2, "is not a task id");
}

//! A GitHub task's lifecycle on a runner: the runner, in a network namespace that reaches
//! only the server and the fake model (not GitHub), gets the work from the server's clone
//! and gives it back; the server pushes the branch, opens the pull request, follows CI
//! and sees the merge, as for a run on its own machine.

use super::github::*;
use super::*;
use crate::runner_run::{answer_first_options, gpu_runner};
use mainloop_test_support::netns;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_task_requiring_a_label_runs_on_the_runner_and_merges() {
    let Some((dir, gh, fake, claude)) = github_world().await else {
        return;
    };
    if !netns::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must give a network namespace"
        );
        eprintln!("skipping: no network namespace here (unshare -rn)");
        return;
    }
    let data = dir.path().join("data");
    let server = start_with_github(&data, &fake, &claude, &gh);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let (_ns, machine, _runner) = gpu_runner(&base, &token, &fake, &claude).await;

    let (status, task) = post(
        &base,
        &token,
        "/api/tasks",
        json!({"description": "build the greeter", "repo": "https://github.com/octo/app", "runner_labels": ["gpu"]}),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    answer_first_options(&base, &token, &id).await;
    wait_task_state(&base, &token, &id, "waiting_plan_review").await;
    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/plan"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The runner's work, pushed by the server, becomes the pull request; CI passes.
    let sha = gh.wait_push(2, None).await;
    wait_task_state(&base, &token, &id, "checking").await;
    gh.ci(&sha, "success").await;
    wait_task_state(&base, &token, &id, "review").await;
    let copy = machine.data().join("tasks").join(&id).join("work");
    assert_eq!(
        std::fs::read_to_string(copy.join("greeting.txt")).unwrap(),
        "hello\n",
        "the agent worked on the runner: {}",
        machine.log()
    );
    assert!(!data.join("agents").join(&id).exists());
    gh.wait_comment(2, "Ready for review").await;
    let (status, body) = post(
        &base,
        &token,
        &format!("/api/tasks/{id}/review"),
        json!({"action": "approve"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_task_state(&base, &token, &id, "merged").await;
    let main = git(
        &gh.fake.repo_path("octo", "app"),
        &["show", "main:greeting.txt"],
    );
    assert_eq!(
        main.trim_end(),
        "hello",
        "the runner's work is on GitHub's main"
    );
}

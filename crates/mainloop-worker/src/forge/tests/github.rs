//! The forge lifecycle's merge, close and fix-round paths against the fake GitHub (the
//! real wire format over real bare repositories), the steps driven one by one.

use super::*;
use mainloop_config::Secret;
use mainloop_fake_github::{Config, FakeGithub};
use mainloop_forge::{Forge, RepoRef};
use mainloop_github::{GithubConfig, GithubForge};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const BOT: &str = "bot-token-1234567890";

struct Hub {
    w: World,
    fake: FakeGithub,
    github: Arc<GithubForge>,
    repo: RepoRef,
    http: reqwest::Client,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Someone",
            "-c",
            "user.email=someone@example.com",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn hub() -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeGithub::start(Config::new(
        dir.path().join("github"),
        &[(BOT, "mainloop-bot")],
    ))
    .await
    .unwrap();
    fake.create_repo("octo", "app", "main").await.unwrap();
    let github = Arc::new(
        GithubForge::new(&GithubConfig {
            api_url: fake.base_url(),
            request_timeout: Duration::from_secs(30),
            ..GithubConfig::new(Secret::new(BOT))
        })
        .unwrap(),
    );
    let settings = ForgeSettings {
        forge: github.clone(),
        git_url: fake.clone_url("{owner}", "{name}"),
        // No check runs is "no CI" at once; a failing one is reported when it appears.
        ci_appear_timeout: Duration::ZERO,
        ..settings(github.clone())
    };
    let git = mainloop_git::Git::new(dir.path().join("repos"), dir.path().join("worktrees"))
        .with_allow_file_urls(true);
    let w = world_with(dir, settings, git).await;
    Hub {
        w,
        fake,
        github,
        repo: RepoRef {
            owner: "octo".into(),
            name: "app".into(),
        },
        http: reqwest::Client::new(),
    }
}

impl Hub {
    async fn task(&self) -> (mainloop_domain::UserId, mainloop_domain::records::Task) {
        load(&self.w.rt, self.w.task).await.unwrap().unwrap()
    }

    async fn hosted(&self) -> Hosted {
        Hosted::for_task(&self.w.rt, &self.task().await.1).unwrap()
    }

    /// The worktree, with `file` written as the agent would.
    async fn write(&self, file: &str, text: &str) -> mainloop_git::Worktree {
        let (_, task) = self.task().await;
        let source = self.hosted().await.source(&task);
        let wt = crate::task::worktree(&self.w.rt, &task, &source)
            .await
            .unwrap();
        std::fs::write(wt.path.join(file), text).unwrap();
        wt
    }

    /// `task.commit` and `task.checks` as the engine would run them after the agent.
    async fn commit_and_check(&self, wt: &mainloop_git::Worktree) {
        let rt = &self.w.rt;
        rt.inner.git.commit_all(wt, "mainloop: work").await.unwrap();
        let (user, task) = self.task().await;
        let hosted = self.hosted().await;
        let ctx = self.w.job("task.commit", json!({"task_id": self.w.task}));
        hosted.publish(rt, &ctx, &task, wt).await.unwrap();
        let ctx = self.w.job("task.checks", json!({"task_id": self.w.task}));
        hosted.check(rt, &ctx, user, &task).await.unwrap();
    }

    /// A task planned, implemented (`file`), published, checked (no CI) and approved.
    async fn approved(&self, file: &str) {
        self.reviewed(file).await;
        self.w.sync().await;
        self.w.apply(TaskEvent::ReviewApproved).await;
    }

    /// As [`Self::approved`], up to review, before the mirror marks the pull request
    /// ready.
    async fn reviewed(&self, file: &str) {
        self.w.apply(TaskEvent::SlotGranted).await;
        self.w.sync().await;
        self.w.apply(TaskEvent::PlanProposed("# Plan".into())).await;
        self.w.apply(TaskEvent::PlanApproved).await;
        let wt = self.write(file, "the task's work\n").await;
        self.w.apply(TaskEvent::AgentFinished).await;
        self.commit_and_check(&wt).await;
        self.w.watch().await;
        assert_eq!(self.w.state().await, TaskState::Review);
    }

    async fn merge(&self) {
        let (user, task) = self.task().await;
        let ctx = self.w.job("task.merge", json!({"task_id": self.w.task}));
        self.hosted()
            .await
            .merge(&self.w.rt, &ctx, user, &task)
            .await
            .unwrap();
    }

    /// Another change lands on `main` (pushed from a clone of the fake).
    fn land_on_main(&self, file: &str, text: &str) {
        let other = tempfile::tempdir().unwrap();
        let url = self.fake.clone_url("octo", "app");
        git(other.path(), &["clone", "--quiet", &url, "."]);
        std::fs::write(other.path().join(file), text).unwrap();
        git(other.path(), &["add", file]);
        git(
            other.path(),
            &["commit", "--quiet", "-m", "Someone else's change"],
        );
        git(other.path(), &["push", "--quiet", "origin", "main"]);
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.http
            .request(method, format!("{}{path}", self.fake.base_url()))
            .bearer_auth(BOT)
            .header("user-agent", "test")
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn comments(&self, number: u64) -> Vec<String> {
        let (all, _) = self
            .github
            .comments_since(&self.repo, number, &mainloop_forge::Cursor::default())
            .await
            .unwrap();
        all.into_iter().map(|c| c.body).collect()
    }

    async fn numbers(&self) -> (u64, u64) {
        let m = self.w.mirror().await;
        let rec = self
            .w
            .rt
            .inner
            .engine
            .store_for_tests()
            .task_forge(self.w.task)
            .await
            .unwrap()
            .unwrap();
        let issue = u64::try_from(rec.issue_number.unwrap()).unwrap();
        (issue, m.pull.pr.unwrap().number)
    }
}

#[tokio::test]
async fn a_merge_that_loses_a_race_on_its_base_is_tried_again_and_merges() {
    let h = hub().await;
    h.approved("note.txt").await;
    // Another pull request's merge lands first, again and again.
    h.fake.race_next_merges(4);
    h.merge().await;
    // Still racing after the tries at once: the job waits and tries again, never fails.
    assert_eq!(h.w.state().await, TaskState::Review);
    h.merge().await;
    assert_eq!(h.w.state().await, TaskState::Merged);
    assert_eq!(h.fake.stats().injected.get("merge race"), Some(&4));
}

#[tokio::test]
async fn a_pull_request_approved_while_still_a_draft_is_marked_ready_and_merged() {
    let h = hub().await;
    // Approved before the mirror marked it ready (a crash in between): still a draft.
    h.reviewed("note.txt").await;
    h.w.apply(TaskEvent::ReviewApproved).await;
    h.merge().await;
    let (_, task) = h.task().await;
    assert_eq!(task.state, TaskState::Merged, "{:?}", task.error);
    let (_, pr) = h.numbers().await;
    let comments = h.comments(pr).await;
    assert!(
        !comments.iter().any(|c| c.contains("base branch moved on")),
        "{comments:?}"
    );
}

#[tokio::test]
async fn a_pull_request_that_no_longer_merges_gets_its_base_and_goes_back_to_the_agent() {
    let h = hub().await;
    h.approved("note.txt").await;
    h.land_on_main("note.txt", "someone else's note\n");
    h.merge().await;
    let (_, task) = h.task().await;
    assert_eq!(task.state, TaskState::Implementing, "{:?}", task.error);
    // The base is merged into the task's branch, conflict markers left for the agent.
    let wt = h.write("unrelated.txt", "").await;
    let note = std::fs::read_to_string(wt.path.join("note.txt")).unwrap();
    assert!(note.contains("<<<<<<<"), "{note}");
}

#[tokio::test]
async fn a_pull_request_closed_unmerged_cancels_the_task_and_closes_its_issue_saying_why() {
    let h = hub().await;
    h.approved("note.txt").await;
    let (issue, pr) = h.numbers().await;
    h.github.close_pull_request(&h.repo, pr).await.unwrap();
    h.w.watch().await;
    assert_eq!(h.w.state().await, TaskState::Cancelled);
    h.w.sync().await;
    let got = h
        .api(
            reqwest::Method::GET,
            &format!("/repos/octo/app/issues/{issue}"),
            Value::Null,
        )
        .await;
    assert_eq!(got["state"], "closed", "{got}");
    let said = h.comments(issue).await;
    assert!(
        said.iter()
            .any(|c| c.contains(&format!("#{pr} was closed without merging"))),
        "{said:?}"
    );
}

#[tokio::test]
async fn a_fix_round_that_changes_nothing_fails_at_once_and_says_so() {
    let h = hub().await;
    h.w.apply(TaskEvent::SlotGranted).await;
    h.w.sync().await;
    h.w.apply(TaskEvent::PlanProposed("# Plan".into())).await;
    h.w.apply(TaskEvent::PlanApproved).await;
    let wt = h.write("note.txt", "broken\n").await;
    h.w.apply(TaskEvent::AgentFinished).await;
    h.commit_and_check(&wt).await;
    let sha = h.w.mirror().await.pull.pushed_sha.unwrap();
    h.api(
        reqwest::Method::POST,
        "/repos/octo/app/check-runs",
        json!({"name": "build", "head_sha": sha, "status": "completed", "conclusion": "failure"}),
    )
    .await;
    h.w.watch().await;
    let (_, task) = h.task().await;
    assert_eq!(task.state, TaskState::Implementing);
    assert_eq!(task.core.check_round, 1);
    // The agent's fix round changes nothing: the same commit is not waited on again.
    h.w.apply(TaskEvent::AgentFinished).await;
    h.commit_and_check(&wt).await;
    let (_, task) = h.task().await;
    assert_eq!(task.state, TaskState::Implementing);
    assert_eq!(task.core.check_round, 2);
    let (_, pr) = h.numbers().await;
    let said = h.comments(pr).await;
    assert_eq!(
        said.iter()
            .filter(|c| c.contains("changed nothing"))
            .count(),
        1,
        "{said:?}"
    );
    // Each round's "CI failed" has its own key: a later failure on the same commit is
    // told again, not swallowed.
    h.w.apply(TaskEvent::AgentFinished).await;
    let fixed = h.write("note.txt", "fixed\n").await;
    h.commit_and_check(&fixed).await;
    assert_eq!(h.w.state().await, TaskState::Checking);
}

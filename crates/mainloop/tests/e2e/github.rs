//! The fake GitHub (REST wire format, bare git remote) and a server started against
//! it with the real claude CLI and the fake model: what every GitHub test shares.

use super::*;

/// Rules of the GitHub tests' own, after the shared greeter script's.
pub(crate) const GH_RULES: &str = r##"
rules:
  - name: just-do-it
    match: {user_contains: "quick fix"}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'quick\\n' > quick.txt", description: "Quick fix"}}
"##;

pub(crate) const BOT: &str = "bot-token";
pub(crate) const ALICE: &str = "alice-token";
pub(crate) const MALLORY: &str = "mallory-token";
pub(crate) const HOOK_SECRET: &str = "hook-secret-31337";

pub(crate) struct Gh {
    pub(crate) fake: mainloop_fake_github::FakeGithub,
    pub(crate) base: String,
}

impl Gh {
    pub(crate) async fn start(root: &Path) -> Self {
        let fake = mainloop_fake_github::FakeGithub::start(mainloop_fake_github::Config::new(
            root,
            &[
                (BOT, "mainloop-bot"),
                (ALICE, "alice"),
                (MALLORY, "mallory"),
            ],
        ))
        .await
        .unwrap();
        fake.create_repo("octo", "app", "main").await.unwrap();
        let base = fake.base_url();
        Self { fake, base }
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        self.call_as(ALICE, method, path, body).await
    }

    pub(crate) async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut rb = client()
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("user-agent", "e2e");
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let v = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Comments on issue/PR `n` (none while it does not exist yet).
    pub(crate) async fn comments(&self, n: u64) -> Vec<Value> {
        let r = client()
            .get(format!(
                "{}/repos/octo/app/issues/{n}/comments?per_page=100",
                self.base
            ))
            .header("authorization", format!("Bearer {ALICE}"))
            .header("user-agent", "e2e")
            .send()
            .await
            .unwrap();
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Vec::new();
        }
        r.json::<Value>().await.unwrap().as_array().unwrap().clone()
    }

    /// Waits for a comment on issue/PR `n` containing `needle`; returns it.
    pub(crate) async fn wait_comment(&self, n: u64, needle: &str) -> Value {
        let found = try_wait_for(mainloop_test_support::TIMEOUT, || async {
            self.comments(n)
                .await
                .into_iter()
                .find(|c| c["body"].as_str().unwrap_or_default().contains(needle))
        })
        .await;
        match found {
            Some(c) => c,
            None => panic!(
                "no comment containing {needle:?} on #{n}: {:?}",
                self.comments(n).await
            ),
        }
    }

    pub(crate) async fn pr(&self, n: u64) -> Value {
        let r = client()
            .get(format!("{}/repos/octo/app/pulls/{n}", self.base))
            .header("authorization", format!("Bearer {ALICE}"))
            .header("user-agent", "e2e")
            .send()
            .await
            .unwrap();
        r.json().await.unwrap_or(Value::Null)
    }

    /// Waits until PR `n`'s head differs from `old`; returns the new head sha.
    pub(crate) async fn wait_push(&self, n: u64, old: Option<&str>) -> String {
        wait_for(format!("a push to PR #{n}"), || async {
            let sha = self.pr(n).await["head"]["sha"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (!sha.is_empty() && Some(sha.as_str()) != old).then_some(sha)
        })
        .await
    }

    /// GETs of comments the fake has served (the server reads them on every poll).
    pub(crate) fn comment_reads(&self) -> u64 {
        self.fake
            .stats()
            .by_route
            .iter()
            .filter(|(route, _)| route.starts_with("GET ") && route.contains("comments"))
            .map(|(_, n)| n)
            .sum()
    }

    /// Waits until the server has polled the comments twice more: whatever was on
    /// GitHub before has been read, and acted on, by then.
    pub(crate) async fn wait_polled(&self) {
        let before = self.comment_reads();
        wait_for("two more polls of GitHub", || async {
            (self.comment_reads() >= before + 2).then_some(())
        })
        .await;
    }

    /// Reports a completed check run on `sha`, with a job log when it failed.
    pub(crate) async fn ci(&self, sha: &str, conclusion: &str) {
        // As on GitHub, a job's log exists by the time its check run completes: the run
        // starts in progress and completes once the log is there, so a poll in between
        // never sees a failure without its log.
        let run = self
            .post(
                "/repos/octo/app/check-runs",
                json!({"name": "build", "head_sha": sha, "status": "in_progress"}),
            )
            .await;
        let id = run["id"].as_u64().unwrap();
        if conclusion == "failure" {
            self.fake
                .attach_job_log(
                    "octo",
                    "app",
                    id,
                    "compiling...\nerror[E0308]: mismatched types in src/main.rs\n",
                )
                .unwrap();
        }
        self.call(
            reqwest::Method::PATCH,
            &format!("/repos/octo/app/check-runs/{id}"),
            Some(json!({"status": "completed", "conclusion": conclusion})),
        )
        .await;
    }
}

/// What every GitHub test runs against: a temp dir, the fake GitHub with `octo/app`,
/// the fake model with [`GH_RULES`] and the greeter script, and the claude CLI (`None`: not installed here).
pub(crate) async fn github_world()
-> Option<(tempfile::TempDir, Gh, FakeAnthropic, std::path::PathBuf)> {
    let claude = claude_path()?;
    let dir = tempfile::tempdir().unwrap();
    let gh = Gh::start(&dir.path().join("github")).await;
    let fake = FakeAnthropic::bind(
        "127.0.0.1:0".parse().unwrap(),
        script("greeter").then(Script::from_yaml(GH_RULES).unwrap()),
    )
    .await
    .unwrap();
    Some((dir, gh, fake, claude))
}

pub(crate) fn start_with_github(
    data: &Path,
    fake: &FakeAnthropic,
    claude: &Path,
    gh: &Gh,
) -> Server {
    start_with_github_env(data, fake, claude, gh, &[])
}

pub(crate) fn start_with_github_env(
    data: &Path,
    fake: &FakeAnthropic,
    claude: &Path,
    gh: &Gh,
    extra: &[(&str, &str)],
) -> Server {
    Server::spawn(github_command(data, fake, claude, gh, extra))
}

pub(crate) fn github_command(
    data: &Path,
    fake: &FakeAnthropic,
    claude: &Path,
    gh: &Gh,
    extra: &[(&str, &str)],
) -> Command {
    let mut cmd = command(data, Some(&fake.base_url()));
    cmd.envs(extra.iter().copied());
    cmd.env("MAINLOOP_WORKERS__CLAUDE_COMMAND", claude)
        .env("MAINLOOP_WORKERS__ALLOW_FILE_URLS", "true")
        .env("GITHUB_TOKEN", BOT)
        .env("GITHUB_API_URL", &gh.base)
        .env(
            "MAINLOOP_GITHUB__GIT_URL",
            format!(
                "file://{}/{{owner}}/{{name}}.git",
                gh.fake
                    .repo_path("octo", "app")
                    .parent()
                    .unwrap()
                    .parent()
                    .unwrap()
                    .display()
            ),
        )
        .env("MAINLOOP_GITHUB__POLL_INTERVAL_SECS", "1")
        .env("MAINLOOP_GITHUB__CI_APPEAR_TIMEOUT_SECS", "3")
        .env("MAINLOOP_GITHUB__WEBHOOK_SECRET", HOOK_SECRET)
        .env("MAINLOOP_GITHUB__TRUSTED_USERS", "alice")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    cmd
}

pub(crate) fn sign(body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) async fn deliver(base: &str, event: &str, body: &str, signature: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{base}/api/webhooks/github"))
        .header("x-github-event", event)
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn transcript_text(base: &str, token: &str, id: &str) -> String {
    get(
        base,
        token,
        &format!("/api/tasks/{id}/transcript?limit=1000"),
    )
    .await
    .to_string()
}

impl Gh {
    /// Every issue (pull requests excluded) and every pull request of `octo/app`.
    pub(crate) async fn issues_and_pulls(&self) -> (Vec<Value>, Vec<Value>) {
        let all = self
            .get("/repos/octo/app/issues?state=all&per_page=100")
            .await;
        let issues = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i.get("pull_request").is_none())
            .cloned()
            .collect();
        let pulls = self
            .get("/repos/octo/app/pulls?state=all&per_page=100")
            .await
            .as_array()
            .unwrap()
            .clone();
        (issues, pulls)
    }

    /// Waits until the fake has served `n` faults of `kind` (see `Stats::injected`).
    pub(crate) async fn wait_injected(&self, kind: &str, n: u64) {
        wait_for(format!("{n} faults of kind {kind:?} served"), || async {
            (self.fake.stats().injected.get(kind).copied().unwrap_or(0) >= n).then_some(())
        })
        .await;
    }
}

/// Comment bodies that appear more than once (mainloop's own words twice is a
/// duplicated post).
pub(crate) fn repeated(comments: &[Value]) -> Vec<String> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for c in comments {
        *seen
            .entry(c["body"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(b, _)| b)
        .collect()
}

/// A request to `route` (as `Stats::by_route` names it) hangs for half a second and
/// then times out with a 504, once; `applied`: after GitHub made the change.
pub(crate) fn timeout_on(route: &str, applied: bool) -> mainloop_fake_github::Hang {
    mainloop_fake_github::Hang {
        delay_ms: 500,
        status: Some(504),
        applied,
        cut: false,
        method: None,
        route: Some(route.to_owned()),
        requests: Some(1),
    }
}

//! Live previews with the real binary: a task's `preview` command from a `.mainloop.toml`
//! with every environment key (`setup`, `copy`, `env`, `ports`, `preview`) starts in its
//! worktree with what setup made, the copied file and the task's variables, is served through mainloop on the
//! task's own host to its owner, and stops — its whole process group — on request,
//! when idle and when the task ends. A preview that exits before it listens is a clear
//! error carrying its output.

use super::*;
use crate::faults::spawn_logged;

const SCRIPT: &str = r#"
rules:
  - name: write
    match: {user_contains: "add the page", tool_offered: Bash}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'hello\\n' > page.txt", description: "Write the page"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done."}]
"#;

/// Serves `preview of <APP_NAME> on <PORT>: <page.txt>` and starts a child in its
/// group (`sleep`), marked by its environment, so that stopping must reach the group.
const SERVER: &str = r#"
const fs = require("fs");
const { spawn } = require("child_process");
spawn("sleep", ["1000"], { stdio: "ignore", env: { ...process.env, PREVIEW_CHILD_OF_PORT: process.env.PORT } });
require("http")
  .createServer((req, res) => res.end(`[${fs.readFileSync("built.txt", "utf8")} ${fs.readFileSync(".env", "utf8")}] preview of ${process.env.APP_NAME} on ${process.env.PORT}: ${fs.readFileSync("page.txt", "utf8")}`))
  .listen(Number(process.env.PORT), "127.0.0.1");
"#;

fn repo_with(spec: &str) -> GitRepo {
    let repo = GitRepo::new();
    std::fs::write(repo.path().join(".mainloop.toml"), spec).unwrap();
    std::fs::write(repo.path().join("server.js"), SERVER).unwrap();
    std::fs::write(repo.path().join(".gitignore"), ".env\nbuilt.txt\n").unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "preview"]);
    // Untracked in the checkout: only `copy` brings it to the task.
    std::fs::write(repo.path().join(".env"), "SECRET=copied").unwrap();
    repo
}

async fn create(base: &str, token: &str, repo: &Path) -> String {
    let body = json!({"description": "add the page", "repo": repo, "skip_plan": true});
    let (status, created) = post(base, token, "/api/tasks", body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// A browser on this machine: preview hosts resolve to the server, redirects are not
/// followed, cookies are kept by hand.
pub(super) fn browser(url: &str, server: &str) -> reqwest::Client {
    let host = reqwest::Url::parse(url).unwrap();
    let addr = reqwest::Url::parse(server).unwrap();
    reqwest::Client::builder()
        .resolve(
            host.host_str().unwrap(),
            format!("127.0.0.1:{}", addr.port().unwrap())
                .parse()
                .unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Opens the preview as its owner, as a browser following the link would: the page.
pub(super) async fn open(base: &str, token: &str, id: &str) -> String {
    let (status, body) = post(base, token, &format!("/api/tasks/{id}/preview"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let url = body["url"].as_str().unwrap();
    let b = browser(url, base);
    let signed = b.get(url).send().await.unwrap();
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let home = url.split("?").next().unwrap();
    let page = b.get(home).header("cookie", cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Whether the `sleep` the preview on `port` started still lives (found by its
/// environment: in a sandbox it has another pid of its own).
fn child_alive(port: u16) -> bool {
    let mark = format!("PREVIEW_CHILD_OF_PORT={port}\0");
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let dir = entry.path();
        let marked = std::fs::read(dir.join("environ"))
            .is_ok_and(|env| env.windows(mark.len()).any(|w| w == mark.as_bytes()));
        // A zombie was killed; only its parent has not reaped it yet.
        let zombie = std::fs::read_to_string(dir.join("stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        });
        marked && !zombie
    })
}

async fn wait_stopped(what: &str, port: u16) {
    wait_for(format!("the preview to stop {what}"), || async {
        (!listening(port) && !child_alive(port)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_runs_in_its_task_is_served_to_its_owner_and_stops() {
    let Some(claude) = claude_path() else { return };
    let fake = FakeAnthropic::start(Script::from_yaml(SCRIPT).unwrap())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    // Every key of a task's environment: the page needs what setup made and copy brought.
    let good = repo_with(
        "setup = [\"printf built > built.txt\"]\ncopy = [\".env\"]\nports = 1\npreview = \"node server.js\"\n\n[env]\nAPP_NAME = \"demo\"\n",
    );
    let broken = repo_with("ports = 1\npreview = \"echo no such server; exit 3\"\n");
    // Unsandboxed: stopping must find the group itself, and a crash leaves the preview
    // running (a sandboxed one dies with its server); the browser test runs sandboxed.
    let server_command = || {
        let mut cmd = worker_command(data.path(), &fake, &claude);
        cmd.env("MAINLOOP_PREVIEWS__IDLE_TIMEOUT_SECS", "3")
            .env("MAINLOOP_WORKERS__SANDBOX", "off");
        cmd
    };
    let cmd = server_command();
    let (server, _log) = spawn_logged(cmd, data.path());
    let (base, token) = (server.base.as_str(), server.token.clone().unwrap());
    let token = token.as_str();

    let one = create(base, token, good.path()).await;
    let two = create(base, token, good.path()).await;
    let bad = create(base, token, broken.path()).await;
    for id in [&one, &two, &bad] {
        wait_task_state(base, token, id, "review").await;
    }

    // It serves the task's worktree, with the task's variables and port.
    let full = open(base, token, &one).await;
    let page = full
        .strip_prefix("[built SECRET=copied] ")
        .unwrap_or_else(|| panic!("setup's and copy's files are served: {full}"));
    assert!(page.starts_with("preview of demo on "), "{page}");
    assert!(page.ends_with(": hello\n"), "{page}");
    let port: u16 = page["preview of demo on ".len()..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(listening(port) && child_alive(port));
    // Opened again while it runs: served at once.
    assert_eq!(open(base, token, &one).await, full);

    // Stopped on request, the sleeping child of its group too.
    let (status, _) = send(
        reqwest::Method::DELETE,
        base,
        token,
        &format!("/api/tasks/{one}/preview"),
        json!({}),
    )
    .await;
    assert_eq!(status, 204);
    wait_stopped("on request", port).await;

    // Stopped once idle.
    let page = open(base, token, &two).await;
    let idle_port: u16 = page["[built SECRET=copied] preview of demo on ".len()..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(idle_port, port, "each task its own port");
    wait_stopped("when idle", idle_port).await;

    // Stopped when the task ends.
    open(base, token, &one).await;
    let (status, body) = post(base, token, &format!("/api/tasks/{one}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_stopped("when the task ends", port).await;
    let (status, body) = post(base, token, &format!("/api/tasks/{one}/preview"), json!({})).await;
    assert_eq!(status, 422, "{body}");

    // A preview that exits before listening: why, with its output.
    let (status, body) = post(base, token, &format!("/api/tasks/{bad}/preview"), json!({})).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("exited (code 3)"), "{message}");
    assert!(message.contains("no such server"), "{message}");

    // A server killed outright leaves its preview running; the next one stops it.
    open(base, token, &two).await;
    assert!(listening(idle_port));
    server.sigkill();
    let (server, _log) = spawn_logged(server_command(), data.path());
    wait_stopped("after a crash", idle_port).await;
    drop(server);
}

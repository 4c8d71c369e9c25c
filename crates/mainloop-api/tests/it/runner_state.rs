//! The agent state a runner keeps on the server (`PUT`/`GET /api/runners/state/{task}`):
//! the runner holding the task's lease stores and reads it back byte for byte, and so
//! does the next holder once the lease moves; another runner gets a 404, a user's token
//! or none a 401; a body over the cap is a 413 that stores nothing, whether its length
//! was declared or not; the engine removes the state when the task is cleaned up.

use super::{App, Cred, Setup, app_from, assert_error, json_of};
use mainloop_domain::{RunnerId, TaskId};
use mainloop_engine::EngineConfig;
use mainloop_test_support::GitRepo;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::Path;

/// The cap these tests run with, so that "too large" is quick to send.
const CAP: u64 = 64 * 1024;

/// A server keeping runner state in `state`, a task with a branch leased to runner A,
/// and runner B.
struct World {
    app: App,
    task: TaskId,
    a: (RunnerId, String),
    b: (RunnerId, String),
    state: tempfile::TempDir,
    _repo: GitRepo,
}

impl World {
    async fn new() -> Self {
        let state = tempfile::tempdir().unwrap();
        let app = app_from(Setup {
            engine: EngineConfig {
                runner_state_dir: Some(state.path().to_path_buf()),
                runner_state_max_bytes: CAP,
                ..EngineConfig::default()
            },
            start: false,
            ..Setup::default()
        })
        .await;
        let repo = GitRepo::new();
        let (status, task) = app
            .post(
                "/api/tasks",
                json!({"description": "Work on a runner", "repo": repo.path().display().to_string(), "skip_plan": true}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let task: TaskId = task["id"].as_str().unwrap().parse().unwrap();
        app.engine
            .set_task_workspace(task, "mainloop/abc-work", "/nonexistent/worktree", "main")
            .await
            .unwrap();
        let a = runner(&app, "a").await;
        let b = runner(&app, "b").await;
        app.engine.lease_run(task, a.0).await.unwrap();
        Self {
            app,
            task,
            a,
            b,
            state,
            _repo: repo,
        }
    }

    fn path(&self) -> String {
        format!("/api/runners/state/{}", self.task)
    }

    async fn put(&self, cred: Cred<'_>, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
        let resp = self
            .app
            .request(cred, Method::PUT, &self.path())
            .header("content-type", "application/gzip")
            .body(body)
            .send()
            .await
            .unwrap();
        json_of(resp).await
    }

    /// The state's bytes, or the error's status and body.
    async fn get(&self, cred: Cred<'_>) -> Result<Vec<u8>, (StatusCode, serde_json::Value)> {
        let resp = self
            .app
            .request(cred, Method::GET, &self.path())
            .send()
            .await
            .unwrap();
        if resp.status() != StatusCode::OK {
            return Err(json_of(resp).await);
        }
        assert_eq!(resp.headers()["content-type"], "application/gzip");
        Ok(resp.bytes().await.unwrap().to_vec())
    }

    /// Every file in the state directory.
    fn files(&self) -> Vec<String> {
        listing(self.state.path())
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn runner(app: &App, name: &str) -> (RunnerId, String) {
    let (status, body) = app.post("/api/runners", json!({"name": name})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["runner"]["id"].as_str().unwrap().parse().unwrap(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

/// Bytes that are not all alike, so that a truncation or a mix-up shows.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_state_round_trips_for_the_lease_holder_and_follows_the_lease() {
    let w = World::new().await;
    let (a, b) = (w.a.1.clone(), w.b.1.clone());

    let (status, body) = w.get(Cred::Bearer(&a)).await.unwrap_err();
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let first = bytes(20_000, 1);
    let (status, body) = w.put(Cred::Bearer(&a), first.clone()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(w.get(Cred::Bearer(&a)).await.unwrap(), first);
    let second = bytes(CAP as usize, 2);
    let (status, body) = w.put(Cred::Bearer(&a), second.clone()).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "a state of exactly the cap: {body}"
    );
    assert_eq!(w.get(Cred::Bearer(&a)).await.unwrap(), second);
    assert_eq!(w.files(), [format!("{}.tar.gz", w.task)]);

    // Another runner, a user's token, no token, a wrong one: nothing read or written.
    let user = w.app.token.clone();
    for (cred, want, code) in [
        (Cred::Bearer(&b), StatusCode::NOT_FOUND, "not_found"),
        (
            Cred::Bearer(&user),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (Cred::None, StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            Cred::Bearer("mlr_not-a-token"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
    ] {
        let (status, body) = w.get(cred).await.unwrap_err();
        assert_error(status, &body, want, code);
        let (status, body) = w.put(cred, bytes(10, 3)).await;
        assert_error(status, &body, want, code);
    }
    let unknown = TaskId::new_v7(mainloop_domain::Timestamp::from_millis(1));
    let (status, body) = w
        .app
        .call(
            Cred::Bearer(&a),
            Method::GET,
            &format!("/api/runners/state/{unknown}"),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(w.get(Cred::Bearer(&a)).await.unwrap(), second);

    // The lease moves to B: B reads what A stored (the point of keeping it here), and
    // A is shut out.
    w.app.engine.lease_run(w.task, w.b.0).await.unwrap();
    assert_eq!(w.get(Cred::Bearer(&b)).await.unwrap(), second);
    let (status, body) = w.get(Cred::Bearer(&a)).await.unwrap_err();
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = w.put(Cred::Bearer(&a), bytes(10, 4)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(w.get(Cred::Bearer(&b)).await.unwrap(), second);

    // Cleaned up with the task.
    w.app.engine.remove_runner_state(w.task).await.unwrap();
    let (status, body) = w.get(Cred::Bearer(&b)).await.unwrap_err();
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert!(w.files().is_empty(), "{:?}", w.files());
    w.app.engine.remove_runner_state(w.task).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_state_over_the_cap_is_413_and_stores_nothing() {
    let w = World::new().await;
    let a = w.a.1.clone();
    let kept = bytes(1000, 5);
    let (status, body) = w.put(Cred::Bearer(&a), kept.clone()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Declared too long: refused before a byte is read.
    let (status, body) = w.put(Cred::Bearer(&a), bytes(CAP as usize + 1, 6)).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // Sent without a length: counted as it comes, and refused once past the cap. The
    // server answers without reading the rest, so a client still sending may see its
    // connection cut before it reads the 413.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|i| Ok(bytes(16 * 1024, 7 + i))).collect();
    // On a connection of its own: the one the server cuts must not go back to the
    // shared client's pool, where the next request would find it dead.
    let own = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let sent = own
        .put(format!("{}{}", w.app.base, w.path()))
        .bearer_auth(&a)
        .header("content-type", "application/gzip")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let (status, body) = json_of(resp).await;
            assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
        }
        Err(e) => assert!(e.is_request(), "{e:?}"),
    }
    // Not an archive by its type, or sent with an encoding: refused too.
    let resp = w
        .app
        .request(Cred::Bearer(&a), Method::PUT, &w.path())
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let resp = w
        .app
        .request(Cred::Bearer(&a), Method::PUT, &w.path())
        .header("content-type", "application/gzip")
        .header("content-encoding", "gzip")
        .body(bytes(10, 9))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    // The state kept before is whole, and no partial upload is left beside it.
    assert_eq!(w.get(Cred::Bearer(&a)).await.unwrap(), kept);
    assert_eq!(w.files(), [format!("{}.tar.gz", w.task)]);
}

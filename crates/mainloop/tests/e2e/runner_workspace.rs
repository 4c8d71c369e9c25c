//! Task workspaces on a runner, with the real `git` and a real `mainloop runner`: the
//! server's worktree holds uncommitted work, published as the task's snapshot; the
//! runner prepares its copy (the branch plus that work, uncommitted) over git from the
//! server, the work it adds there comes back as the task's snapshot and into the
//! server's worktree; a runner without the task's lease cannot fetch it; release kills
//! the task's processes and removes its directory; and a hostile runner cannot answer
//! requests it was never sent, nor send a commit that is not one.

use super::runner_exec::{Machine, connected, hostile, new_runner, read, send};
use super::*;
use mainloop_domain::TaskId;
use mainloop_domain::runner::Program;
use mainloop_engine::{EngineError, snapshot_ref};
use mainloop_git::Git;
use mainloop_test_support::TestApp;
use std::time::Instant;

const BRANCH: &str = "mainloop/abc-work";

/// A repository with a task on it whose server-side worktree (on [`BRANCH`], one commit
/// past `main`) holds uncommitted work. All work is paused first, so the task never
/// runs here: its workspace is the test's.
struct World {
    app: TestApp,
    repo: GitRepo,
    task: TaskId,
    worktree: PathBuf,
    git: Git,
    _dirs: tempfile::TempDir,
}

impl World {
    async fn new() -> Self {
        let app = TestApp::sqlite(None).await;
        let (status, body) = app.post("/api/pause", Value::Null).await;
        assert!(status.is_success(), "{body}");
        let repo = GitRepo::new();
        let (status, body) = app
            .post(
                "/api/tasks",
                json!({"description": "Work on a runner", "repo": repo.path().display().to_string(), "skip_plan": true}),
            )
            .await;
        assert!(status.is_success(), "{body}");
        let task: TaskId = body["id"].as_str().unwrap().parse().unwrap();
        app.wait_idle().await;

        let dirs = tempfile::tempdir().unwrap();
        let worktree = std::fs::canonicalize(dirs.path()).unwrap().join("wt");
        let wt = worktree.display().to_string();
        repo.git(&["worktree", "add", "-q", "-b", BRANCH, &wt, "main"]);
        std::fs::write(worktree.join("branch.txt"), "committed on the branch\n").unwrap();
        git(&worktree, &["add", "-A"]);
        git(&worktree, &["commit", "-q", "-m", "branch work"]);
        std::fs::write(worktree.join("README.md"), "changed, not committed\n").unwrap();
        std::fs::write(worktree.join("draft.txt"), "untracked draft\n").unwrap();
        app.engine()
            .set_task_workspace(task, BRANCH, &wt, "main")
            .await
            .unwrap();
        let git = Git::new(dirs.path().join("cache"), dirs.path().join("worktrees"));
        Self {
            app,
            repo,
            task,
            worktree,
            git,
            _dirs: dirs,
        }
    }

    fn rev(&self, name: &str) -> String {
        self.repo.git(&["rev-parse", name]).trim().to_owned()
    }
}

fn read_file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_prepares_and_saves_a_tasks_workspace_over_git() {
    let w = World::new().await;
    let engine = w.app.engine();
    let (runner, token) = new_runner(&w.app, "box").await;
    let machine = Machine::new();
    let mut child = machine.runner(&w.app.base, &token);
    connected(&w.app, "box").await;
    assert_eq!(engine.lease_run(w.task, runner).await.unwrap(), 1);

    // The server's uncommitted work, published as the task's snapshot, reaches the
    // runner's copy on top of the branch, still uncommitted.
    let refname = snapshot_ref(w.task);
    let published = w
        .git
        .publish_snapshot(&w.worktree, &refname)
        .await
        .unwrap()
        .expect("there is work to publish");
    let started = Instant::now();
    let prepared = engine
        .runner_prepare(runner, w.task, BRANCH, Some(&refname))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", machine.said()));
    let first = started.elapsed();
    let task_dir = std::fs::canonicalize(machine.data())
        .unwrap()
        .join("tasks")
        .join(w.task.to_string());
    let work = PathBuf::from(&prepared.work);
    assert_eq!(work, task_dir.join("work"));
    assert_eq!(PathBuf::from(&prepared.home), task_dir.join("home"));
    assert!(task_dir.join("home").is_dir() && task_dir.join("tmp").is_dir());
    assert_eq!(
        git(&work, &["rev-parse", "HEAD"]).trim(),
        w.rev(BRANCH),
        "the branch's tip"
    );
    assert_eq!(
        git(&work, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        BRANCH
    );
    assert_eq!(read_file(&work, "branch.txt"), "committed on the branch\n");
    assert_eq!(read_file(&work, "README.md"), "changed, not committed\n");
    assert_eq!(read_file(&work, "draft.txt"), "untracked draft\n");
    let status = git(&work, &["status", "--porcelain"]);
    assert!(
        status.contains(" M README.md") && status.contains("?? draft.txt"),
        "{status}"
    );

    // A second prepare (a resumed run) finds the copy already there.
    let started = Instant::now();
    engine
        .runner_prepare(runner, w.task, BRANCH, Some(&refname))
        .await
        .unwrap();
    let again = started.elapsed();

    // What the runner's agent does comes back as the task's snapshot.
    std::fs::write(work.join("runner.txt"), "written on the runner\n").unwrap();
    let started = Instant::now();
    let saved = engine.runner_save(runner, w.task).await.unwrap();
    let took = started.elapsed();
    assert!(!saved.clean);
    assert_ne!(saved.commit, published.commit);
    assert_eq!(w.rev(&refname), saved.commit);
    assert_eq!(w.rev(&format!("{refname}^1")), w.rev(BRANCH));
    eprintln!(
        "runner workspace: first prepare {first:?}, again {again:?}, save {took:?} (a small repository)"
    );
    // … and into the server's worktree, from a clean one.
    git(&w.worktree, &["reset", "-q", "--hard"]);
    git(&w.worktree, &["clean", "-q", "-f", "-d"]);
    w.git.restore_snapshot(&w.worktree, &refname).await.unwrap();
    assert_eq!(
        read_file(&w.worktree, "runner.txt"),
        "written on the runner\n"
    );
    assert_eq!(
        read_file(&w.worktree, "README.md"),
        "changed, not committed\n"
    );
    assert_eq!(read_file(&w.worktree, "draft.txt"), "untracked draft\n");
    let status = git(&w.worktree, &["status", "--porcelain"]);
    assert!(status.contains("?? runner.txt"), "uncommitted: {status}");

    // A runner without the task's lease cannot fetch it.
    let (other, other_token) = new_runner(&w.app, "other").await;
    let other_machine = Machine::new();
    let mut other_child = other_machine.runner(&w.app.base, &other_token);
    connected(&w.app, "other").await;
    let err = engine
        .runner_prepare(other, w.task, BRANCH, Some(&refname))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Invalid(m) if m.contains("not found")),
        "{err}"
    );
    assert!(!err.to_string().contains(&other_token), "no token in {err}");
    let err = engine.runner_save(other, w.task).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Invalid(m) if m.contains("prepare it first")),
        "{err}"
    );
    assert_eq!(w.rev(&refname), saved.commit, "nothing changed");

    // Release kills the task's processes and removes its directory.
    let mut sleeper = engine
        .runner_spawn(
            runner,
            w.task,
            Program::Path("sh".into()),
            vec!["-c".into(), "sleep 300".into()],
            String::new(),
            vec![],
        )
        .unwrap();
    engine.runner_release(runner, w.task);
    assert_eq!(sleeper.handle.wait().await.unwrap(), 137, "killed");
    wait_for("the released task's directory to go", || async {
        (!task_dir.exists()).then_some(())
    })
    .await;
    // Released while offline: nothing happens, nothing fails.
    let offline = mainloop_domain::RunnerId::new_v7(mainloop_domain::Timestamp::from_millis(1));
    engine.runner_release(offline, w.task);
    // And prepared afresh afterwards.
    let prepared = engine
        .runner_prepare(runner, w.task, BRANCH, None)
        .await
        .unwrap();
    assert_eq!(
        git(Path::new(&prepared.work), &["status", "--porcelain"]),
        "",
        "no snapshot: the branch alone"
    );
    assert!(!machine.said().contains("panicked"), "{}", machine.said());
    for c in [&mut child, &mut other_child] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_runner_cannot_answer_what_it_was_not_asked() {
    let w = World::new().await;
    let engine = w.app.engine().clone();
    let (bad, bad_token) = new_runner(&w.app, "bad").await;
    let mut ws = hostile(&w.app, &bad_token).await;
    let oid = "0123456789abcdef0123456789abcdef01234567";

    // Answers to requests never sent: ignored, the connection stays. (Numbers the
    // server will not reach here: these may still be on their way when it sends one.)
    for request in [0, u64::MAX - 1, u64::MAX] {
        send(
            &mut ws,
            &json!({"type": "prepared", "request": request, "workspace": "/etc", "home": "/root"}),
        )
        .await;
        send(
            &mut ws,
            &json!({"type": "saved", "request": request, "commit": oid, "clean": true}),
        )
        .await;
    }
    let task = w.task;
    let asked = tokio::spawn({
        let engine = engine.clone();
        async move {
            engine
                .runner_prepare(bad, task, BRANCH, Some(&snapshot_ref(task)))
                .await
        }
    });
    let msg = read(&mut ws).await.expect("the prepare");
    assert_eq!(msg["type"], "prepare", "{msg}");
    assert_eq!(msg["git_path"], format!("/api/runners/git/{task}"));
    assert_eq!(msg["branch"], BRANCH);
    assert_eq!(msg["snapshot"], snapshot_ref(task));
    let request = msg["request"].as_u64().unwrap();
    send(
        &mut ws,
        &json!({"type": "prepared", "request": request + 1, "workspace": "/x", "home": "/y"}),
    )
    .await;
    send(
        &mut ws,
        &json!({"type": "prepared", "request": request, "workspace": "/w", "home": "/h"}),
    )
    .await;
    let prepared = asked.await.unwrap().unwrap();
    assert_eq!(
        (prepared.work.as_str(), prepared.home.as_str()),
        ("/w", "/h")
    );
    // A second answer to it is ignored too.
    send(
        &mut ws,
        &json!({"type": "request_failed", "request": request, "reason": "again"}),
    )
    .await;

    // A `saved` whose commit is not an object id is refused, and the connection ends.
    let asked = tokio::spawn({
        let engine = engine.clone();
        async move { engine.runner_save(bad, task).await }
    });
    let msg = read(&mut ws).await.expect("the save");
    assert_eq!(msg["type"], "save", "{msg}");
    assert_eq!(msg["snapshot_ref"], snapshot_ref(task));
    let request = msg["request"].as_u64().unwrap();
    send(
        &mut ws,
        &json!({"type": "saved", "request": request, "commit": "HEAD~1; rm -rf /", "clean": true}),
    )
    .await;
    let refused = read(&mut ws).await.unwrap();
    assert_eq!(refused["type"], "refused", "{refused}");
    assert!(
        refused["reason"].as_str().unwrap().contains("object id"),
        "{refused}"
    );
    assert!(read(&mut ws).await.is_none(), "closed");
    let err = asked.await.unwrap().unwrap_err();
    assert!(matches!(err, EngineError::RunnerLost(_)), "{err}");
    assert!(
        w.repo
            .git(&["for-each-ref", "refs/mainloop/snapshots"])
            .is_empty(),
        "no snapshot was stored"
    );

    // The server is up and serves the next connection.
    let mut ws = hostile(&w.app, &bad_token).await;
    let asked = tokio::spawn(async move { engine.runner_save(bad, task).await });
    let msg = read(&mut ws).await.expect("the save");
    let request = msg["request"].as_u64().unwrap();
    send(
        &mut ws,
        &json!({"type": "request_failed", "request": request, "reason": "no workspace here"}),
    )
    .await;
    let err = asked.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, EngineError::Invalid(m) if m.contains("no workspace here")),
        "{err}"
    );
}

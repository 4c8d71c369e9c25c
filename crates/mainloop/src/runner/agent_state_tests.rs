use super::*;
use crate::runner::agent_places::base36;

/// A home with what an agent leaves in it, some of it not to be kept.
fn home_with_sessions(home: &Path, cwd: &str) {
    let project = home.join(".claude/projects").join(claude_project_name(cwd));
    std::fs::create_dir_all(project.join("sess-1/subagents")).unwrap();
    std::fs::write(
        project.join("sess-1.jsonl"),
        "{\"a\":1}\n{\"b\":2}\n{\"part",
    )
    .unwrap();
    std::fs::write(
        project.join("sess-1/subagents/agent-x.jsonl"),
        "{\"c\":3}\n",
    )
    .unwrap();
    std::fs::write(project.join("notes.json"), "{}").unwrap();
    let plans = home.join(".claude/plans");
    std::fs::create_dir_all(&plans).unwrap();
    std::fs::write(plans.join("a-slug.md"), "# Plan\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", project.join("link.jsonl")).unwrap();
    let sessions = home.join(".codex/sessions/2026/01/02");
    std::fs::create_dir_all(&sessions).unwrap();
    std::fs::write(
        sessions.join("rollout-2026-01-02T03-04-05-thread.jsonl"),
        "{}\n",
    )
    .unwrap();
    // Not sessions: logins, settings, another directory's sessions.
    std::fs::write(home.join(".claude/.credentials.json"), "secret").unwrap();
    std::fs::write(home.join(".codex/auth.json"), "secret").unwrap();
    let other = home.join(".claude/projects/-elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("s.jsonl"), "{}\n").unwrap();
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn claude_names_a_project_directory_as_the_cli_does() {
    // Both seen from the real CLI (2.1.330) run in these directories.
    assert_eq!(
        claude_project_name("/tmp/cc_probe/a b.c_d/é-x💡"),
        "-tmp-cc-probe-a-b-c-d---x--"
    );
    let long = format!("/tmp/cc_probe/{}/Ü", "abcdefghij".repeat(22));
    assert_eq!(
        claude_project_name(&long),
        format!("-tmp-cc-probe-{}abcdef-7cnohe", "abcdefghij".repeat(18))
    );
    assert_eq!(
        claude_project_name("/home/ci/.local/share/mainloop-runner/tasks/0193a2b4-5c6d/work"),
        "-home-ci--local-share-mainloop-runner-tasks-0193a2b4-5c6d-work"
    );
    assert_eq!(base36(0), "0");
    assert_eq!(base36(u32::MAX), "1z141z3");
}

#[test]
fn sessions_move_to_another_runners_home_under_its_own_directory_name() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (cwd_a, cwd_b) = ("/data/a/tasks/t/work", "/srv/runner b/tasks/t/work");
    home_with_sessions(&a, cwd_a);
    let archive = dir.path().join("state.tar.gz");
    assert_eq!(
        pack(&a, cwd_a, &archive).unwrap(),
        5,
        "the link is left out"
    );

    std::fs::create_dir_all(&b).unwrap();
    unpack(&archive, &dir.path().join("staging"), &b, cwd_b).unwrap();
    let name = claude_project_name(cwd_b);
    assert_eq!(
        files(&b),
        [
            ".claude/plans/a-slug.md".to_owned(),
            format!(".claude/projects/{name}/notes.json"),
            format!(".claude/projects/{name}/sess-1.jsonl"),
            format!(".claude/projects/{name}/sess-1/subagents/agent-x.jsonl"),
            ".codex/sessions/2026/01/02/rollout-2026-01-02T03-04-05-thread.jsonl".to_owned(),
        ]
    );
    // A log is taken up to its last whole line: the agent may be writing the next.
    let log = std::fs::read_to_string(b.join(".claude/projects").join(&name).join("sess-1.jsonl"));
    assert_eq!(log.unwrap(), "{\"a\":1}\n{\"b\":2}\n");
    assert!(!dir.path().join("staging").exists());

    // Nothing to keep: an empty archive, and the caller skips the upload.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        pack(empty.path(), cwd_a, &dir.path().join("e.tar.gz")).unwrap(),
        0
    );
}

#[test]
fn a_newer_copy_of_a_session_stays_and_an_older_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = "/w";
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let log = |home: &Path| home.join(".claude/projects/-w/s.jsonl");
    let write = |home: &Path, text: &str| {
        std::fs::create_dir_all(log(home).parent().unwrap()).unwrap();
        std::fs::write(log(home), text).unwrap();
    };
    write(&a, "1\n2\n");
    let archive = dir.path().join("s.tar.gz");
    pack(&a, cwd, &archive).unwrap();
    let staging = dir.path().join("staging");
    for (here, after) in [
        ("1\n2\n3\n", "1\n2\n3\n"), // this runner's, further along: kept
        ("1\n", "1\n2\n"),          // behind the kept one: replaced
        ("x\n2\n3\n", "1\n2\n"),    // another conversation: replaced
        ("1\n2\n", "1\n2\n"),
    ] {
        write(&b, here);
        unpack(&archive, &staging, &b, cwd).unwrap();
        assert_eq!(std::fs::read_to_string(log(&b)).unwrap(), after, "{here:?}");
    }
}

/// An archive entry as written: name, type, data.
type Raw<'a> = (&'a [u8], tar::EntryType, &'a [u8]);

/// A tar.gz of `entries` written as given, names included.
fn raw_archive(path: &Path, entries: &[Raw<'_>]) {
    let mut tar = tar::Builder::new(GzEncoder::new(
        File::create(path).unwrap(),
        Compression::fast(),
    ));
    for (name, kind, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        if kind.is_symlink() || kind.is_hard_link() {
            header.set_link_name("/etc/passwd").unwrap();
        }
        header.set_cksum();
        tar.append(&header, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn hostile_or_broken_archives_are_refused_and_write_nothing() {
    use tar::EntryType as T;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("tasks/t/home");
    std::fs::create_dir_all(&home).unwrap();
    let fine: Raw<'_> = (b"claude/project/s.jsonl", T::Regular, b"{}\n");
    let cases: Vec<(&str, Vec<Raw<'_>>)> = vec![
        ("absolute", vec![fine, (b"/tmp/evil", T::Regular, b"x")]),
        (
            "dot-dot",
            vec![fine, (b"claude/project/../../../../evil", T::Regular, b"x")],
        ),
        ("dot-dot first", vec![(b"../evil", T::Regular, b"x")]),
        (
            "symlink",
            vec![fine, (b"claude/project/l.jsonl", T::Symlink, b"")],
        ),
        (
            "hard link",
            vec![fine, (b"claude/project/h.jsonl", T::Link, b"")],
        ),
        (
            "char device",
            vec![fine, (b"claude/project/c", T::Char, b"")],
        ),
        (
            "block device",
            vec![fine, (b"codex/sessions/b", T::Block, b"")],
        ),
        ("fifo", vec![fine, (b"codex/sessions/f", T::Fifo, b"")]),
        (
            "not a session",
            vec![fine, (b".claude/.credentials.json", T::Regular, b"x")],
        ),
        (
            "a file for a place",
            vec![(b"codex/sessions", T::Regular, b"x")],
        ),
        ("twice", vec![fine, fine]),
        (
            "origin relative",
            vec![fine, (b"origin", T::Regular, b"tasks/t")],
        ),
        (
            "origin with a newline",
            vec![fine, (b"origin", T::Regular, b"/a\n/b")],
        ),
        (
            "origin a directory",
            vec![fine, (b"origin", T::Directory, b"")],
        ),
        (
            "workdir relative",
            vec![fine, (b"workdir", T::Regular, b"tasks/t/work")],
        ),
        (
            "gemini memory",
            vec![
                fine,
                (b"gemini/tmp/work/memory/MEMORY.md", T::Regular, b"x"),
            ],
        ),
        (
            "gemini project a file",
            vec![fine, (b"gemini/tmp/work", T::Regular, b"x")],
        ),
        (
            "gemini link",
            vec![fine, (b"gemini/tmp/work/chats/s.jsonl", T::Symlink, b"")],
        ),
        (
            "opencode login",
            vec![fine, (b"opencode/data/auth.json", T::Regular, b"x")],
        ),
        (
            "opencode link",
            vec![fine, (b"opencode/data/opencode.db", T::Symlink, b"")],
        ),
    ];
    for (what, entries) in cases {
        let archive = dir.path().join("in.tar.gz");
        raw_archive(&archive, &entries);
        let staging = dir.path().join("tasks/t/staging");
        let err = unpack(&archive, &staging, &home, "/w").unwrap_err();
        assert!(
            err.contains("unusable") || err.contains("cannot write"),
            "{what}: {err}"
        );
        assert!(files(&home).is_empty(), "{what}: {:?}", files(&home));
        assert!(!staging.exists(), "{what}");
        assert!(
            !dir.path().join("evil").exists() && !Path::new("/tmp/evil").exists(),
            "{what}"
        );
    }

    // A header claiming more than the cap is refused before its data is read.
    let archive = dir.path().join("big.tar.gz");
    let mut tar = tar::Builder::new(GzEncoder::new(
        File::create(&archive).unwrap(),
        Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_path("codex/sessions/big.jsonl").unwrap();
    header.set_entry_type(T::Regular);
    header.set_size(MAX_UNPACKED + 1);
    header.set_cksum();
    tar.append(&header, &b"short"[..]).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let err = unpack(&archive, &dir.path().join("s"), &home, "/w").unwrap_err();
    assert!(err.contains("more than 4 GiB"), "{err}");

    // Not gzip, or cut short: refused the same way.
    let archive = dir.path().join("junk.tar.gz");
    std::fs::write(&archive, b"this is not an archive").unwrap();
    let err = unpack(&archive, &dir.path().join("s"), &home, "/w").unwrap_err();
    assert!(err.contains("unusable"), "{err}");
    raw_archive(&archive, &[fine]);
    let whole = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &whole[..whole.len() / 2]).unwrap();
    assert!(unpack(&archive, &dir.path().join("s"), &home, "/w").is_err());
    assert!(files(&home).is_empty(), "{:?}", files(&home));
}

#[test]
fn a_link_in_the_home_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (home, outside) = (dir.path().join("home"), dir.path().join("outside"));
    std::fs::create_dir_all(home.join(".codex")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, home.join(".codex/sessions")).unwrap();
    let archive = dir.path().join("s.tar.gz");
    raw_archive(
        &archive,
        &[(b"codex/sessions/r.jsonl", tar::EntryType::Regular, b"{}\n")],
    );
    let err = unpack(&archive, &dir.path().join("staging"), &home, "/w").unwrap_err();
    assert!(err.contains("in the way"), "{err}");
    assert!(files(&outside).is_empty());

    // A link where the file goes is replaced, not written through.
    std::fs::remove_file(home.join(".codex/sessions")).unwrap();
    std::fs::create_dir_all(home.join(".codex/sessions")).unwrap();
    let target = outside.join("target");
    std::fs::write(&target, "untouched").unwrap();
    std::os::unix::fs::symlink(&target, home.join(".codex/sessions/r.jsonl")).unwrap();
    unpack(&archive, &dir.path().join("staging"), &home, "/w").unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    let placed = home.join(".codex/sessions/r.jsonl");
    assert!(std::fs::symlink_metadata(&placed).unwrap().is_file());
    assert_eq!(std::fs::read_to_string(placed).unwrap(), "{}\n");
}

#[test]
fn a_session_packed_on_one_runner_names_the_other_runners_paths_once_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let task = |runner: &str| dir.path().join(runner).join("tasks/t");
    let (a, b) = (task("a"), task("b"));
    let cwd = |t: &Path| t.join("work").display().to_string();
    let project = a
        .join("home/.claude/projects")
        .join(claude_project_name(&cwd(&a)));
    std::fs::create_dir_all(&project).unwrap();
    let plan = |t: &Path| t.join("home/.claude/plans/p.md").display().to_string();
    let log = |t: &Path| format!("{{\"cwd\":\"{}\",\"plan\":\"{}\"}}\n", cwd(t), plan(t));
    std::fs::write(project.join("s.jsonl"), log(&a)).unwrap();
    let archive = dir.path().join("state.tar.gz");
    assert_eq!(pack(&a.join("home"), &cwd(&a), &archive).unwrap(), 1);

    let home_b = b.join("home");
    std::fs::create_dir_all(&home_b).unwrap();
    unpack(&archive, &b.join("staging"), &home_b, &cwd(&b)).unwrap();
    let moved = home_b
        .join(".claude/projects")
        .join(claude_project_name(&cwd(&b)))
        .join("s.jsonl");
    assert_eq!(std::fs::read_to_string(moved).unwrap(), log(&b));
    assert_eq!(files(&home_b).len(), 1, "the origin stays out of the home");

    // Unpacked where it was packed, nothing is rewritten (and nothing else changes).
    let again = tempfile::tempdir().unwrap();
    unpack(&archive, &again.path().join("s"), &a.join("home"), &cwd(&a)).unwrap();
    assert_eq!(
        std::fs::read_to_string(project.join("s.jsonl")).unwrap(),
        log(&a)
    );
}

#[test]
fn replacing_a_path_in_a_log_replaces_every_one_and_nothing_else() {
    assert_eq!(
        replaced(b"x/a/y/a", b"/a", b"/bb"),
        Some(b"x/bb/y/bb".to_vec())
    );
    assert_eq!(replaced(b"none here", b"/a", b"/b"), None);
    assert_eq!(replaced(b"/a", b"/a", b""), Some(Vec::new()));
}

/// A task's directory on a runner under `root`, and its working directory.
fn task_on(root: &Path, runner: &str) -> (PathBuf, String) {
    let task = root.join(runner).join("tasks/t");
    let work = task.join("work").display().to_string();
    (task, work)
}

#[test]
fn gemini_projects_of_the_task_move_with_only_their_sessions_and_the_new_paths() {
    let dir = tempfile::tempdir().unwrap();
    let ((a, work_a), (b, work_b)) = (task_on(dir.path(), "a"), task_on(dir.path(), "runner-b"));
    let gemini = a.join("home/.gemini");
    let project = gemini.join("tmp/work");
    let session = "d3916f48-5059-41c1-9d93-3da3ac3357f0";
    let chat = "chats/session-2026-12-06T13-03-d3916f48.jsonl";
    for d in ["chats", &format!("{session}/plans"), "logs", "memory"] {
        std::fs::create_dir_all(project.join(d)).unwrap();
    }
    std::fs::write(project.join(".project_root"), &work_a).unwrap();
    let log = |work: &str| format!("{{\"sessionId\":\"{session}\"}}\n{{\"cwd\":\"{work}\"}}\n");
    std::fs::write(project.join(chat), format!("{}{{\"half", log(&work_a))).unwrap();
    std::fs::write(project.join(session).join("plans/plan.md"), "# Plan\n").unwrap();
    // Not sessions: the prompt log, memory, shell history, settings and logins, the
    // registry Gemini rebuilds, and a project outside the task.
    std::fs::write(project.join("logs/logs.json"), "[]").unwrap();
    std::fs::write(project.join("memory/MEMORY.md"), "x").unwrap();
    std::fs::write(project.join("shell_history"), "ls").unwrap();
    for f in ["projects.json", "settings.json", "oauth_creds.json"] {
        std::fs::write(gemini.join(f), "{}").unwrap();
    }
    let other = gemini.join("tmp/other");
    std::fs::create_dir_all(other.join("chats")).unwrap();
    std::fs::write(other.join(".project_root"), "/srv/elsewhere/work").unwrap();
    std::fs::write(other.join("chats/session-x.jsonl"), "{}\n").unwrap();
    // A project directory that is a link is not followed, even to one of the task's.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("chats")).unwrap();
    std::fs::write(outside.join(".project_root"), &work_a).unwrap();
    std::fs::write(outside.join("chats/session-y.jsonl"), "{}\n").unwrap();
    std::os::unix::fs::symlink(&outside, gemini.join("tmp/linked")).unwrap();

    let archive = dir.path().join("state.tar.gz");
    assert_eq!(pack(&a.join("home"), &work_a, &archive).unwrap(), 3);
    let home_b = b.join("home");
    std::fs::create_dir_all(&home_b).unwrap();
    unpack(&archive, &b.join("staging"), &home_b, &work_b).unwrap();
    assert_eq!(
        files(&home_b),
        [
            ".gemini/tmp/work/.project_root".to_owned(),
            format!(".gemini/tmp/work/{chat}"),
            format!(".gemini/tmp/work/{session}/plans/plan.md"),
        ]
    );
    // Gemini finds the project by its root file: it names runner b's copy now.
    let moved = home_b.join(".gemini/tmp/work");
    assert_eq!(
        std::fs::read_to_string(moved.join(".project_root")).unwrap(),
        work_b
    );
    assert_eq!(
        std::fs::read_to_string(moved.join(chat)).unwrap(),
        log(&work_b)
    );
}

/// OpenCode's data directory in `home`, with a database, its log and index, and what
/// is not a session; returns the bytes of the database and the log.
fn opencode_home(home: &Path, work: &str) -> (Vec<u8>, Vec<u8>) {
    let data = home.join(".local/share/opencode");
    std::fs::create_dir_all(data.join("log")).unwrap();
    let db = format!("SQLite format 3\0 records naming {work}").into_bytes();
    let wal = [
        vec![0x37, 0x7f, 0x06, 0x82],
        vec![7; 28],
        work.as_bytes().to_vec(),
    ]
    .concat();
    std::fs::write(data.join("opencode.db"), &db).unwrap();
    std::fs::write(data.join("opencode.db-wal"), &wal).unwrap();
    std::fs::write(data.join("opencode.db-shm"), [1u8; 64]).unwrap();
    std::fs::write(data.join("auth.json"), "{\"anthropic\":\"secret\"}").unwrap();
    std::fs::write(data.join("log/opencode.log"), "x").unwrap();
    (db, wal)
}

#[test]
fn opencode_s_database_is_restored_whole_only_where_its_paths_are_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let ((a, work), (b, work_b)) = (task_on(dir.path(), "a"), task_on(dir.path(), "b"));
    let home = a.join("home");
    let (db, wal) = opencode_home(&home, &work);
    let archive = dir.path().join("state.tar.gz");
    assert_eq!(
        pack(&home, &work, &archive).unwrap(),
        2,
        "the database and its log"
    );

    // Another machine with the same paths (or this one, its home lost): the database
    // as it was, byte for byte; a stale log and index of the home's are gone.
    std::fs::remove_dir_all(&home).unwrap();
    let data = home.join(".local/share/opencode");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("opencode.db-wal"), "stale").unwrap();
    std::fs::write(data.join("opencode.db-shm"), "stale").unwrap();
    unpack(&archive, &a.join("staging"), &home, &work).unwrap();
    assert_eq!(
        files(&home),
        [
            ".local/share/opencode/opencode.db",
            ".local/share/opencode/opencode.db-wal"
        ]
    );
    assert_eq!(std::fs::read(data.join("opencode.db")).unwrap(), db);
    assert_eq!(std::fs::read(data.join("opencode.db-wal")).unwrap(), wal);

    // Elsewhere its records would name a directory that is not there: it stays out, and
    // a database the home has is left alone.
    let home_b = b.join("home");
    let own = home_b.join(".local/share/opencode/opencode.db");
    std::fs::create_dir_all(own.parent().unwrap()).unwrap();
    std::fs::write(&own, "own").unwrap();
    unpack(&archive, &b.join("staging"), &home_b, &work_b).unwrap();
    assert_eq!(files(&home_b), [".local/share/opencode/opencode.db"]);
    assert_eq!(std::fs::read_to_string(&own).unwrap(), "own");
    // The same task directory with another working directory is elsewhere too.
    let moved = format!("{work}/sub");
    std::fs::remove_dir_all(&home).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    unpack(&archive, &a.join("staging"), &home, &moved).unwrap();
    assert!(files(&home).is_empty(), "{:?}", files(&home));

    // A database closed cleanly has no log: the home's stale one must still go.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("opencode.db"), &db).unwrap();
    let clean = dir.path().join("clean.tar.gz");
    assert_eq!(pack(&home, &work, &clean).unwrap(), 1);
    std::fs::write(data.join("opencode.db-wal"), "stale").unwrap();
    unpack(&clean, &a.join("staging"), &home, &work).unwrap();
    assert_eq!(files(&home), [".local/share/opencode/opencode.db"]);
}

#[test]
fn a_linked_opencode_database_or_directory_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (task, work) = task_on(dir.path(), "a");
    let (home, outside) = (task.join("home"), dir.path().join("outside"));
    let data = home.join(".local/share/opencode");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "the runner's").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), data.join("opencode.db")).unwrap();
    let archive = dir.path().join("s.tar.gz");
    assert_eq!(pack(&home, &work, &archive).unwrap(), 0);

    std::fs::remove_file(data.join("opencode.db")).unwrap();
    std::fs::write(data.join("opencode.db"), "db").unwrap();
    assert_eq!(pack(&home, &work, &archive).unwrap(), 1);
    std::fs::remove_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(&outside, &data).unwrap();
    let err = unpack(&archive, &task.join("staging"), &home, &work).unwrap_err();
    assert!(err.contains("in the way"), "{err}");
    assert_eq!(files(&outside), ["secret"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_copied_while_it_is_written_opens_whole_and_up_to_date() {
    use sqlx::Connection as _;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Checkpoints every few pages, so that copies meet them and the log's resets.
    let options = SqliteConnectOptions::new()
        .filename(data.join("opencode.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .pragma("wal_autocheckpoint", "16");
    let mut writer = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::query("CREATE TABLE part (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        .execute(&mut writer)
        .await
        .unwrap();
    let (stop, written) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicI64::new(0)),
    );
    let writing = {
        let (stop, written) = (stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                sqlx::query("INSERT INTO part (id, data) VALUES (?, ?)")
                    .bind(n)
                    .bind(format!("{n:>3000}"))
                    .execute(&mut writer)
                    .await
                    .unwrap();
                written.store(n, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
    };
    let mut with_log = 0;
    for round in 0..40 {
        let before = written.load(Ordering::SeqCst);
        let to = dir.path().join(format!("copy-{round}"));
        std::fs::create_dir_all(&to).unwrap();
        let (from, into) = (data.clone(), to.clone());
        let names = tokio::task::spawn_blocking(move || agent_places::copy_database(&from, &into))
            .await
            .unwrap()
            .unwrap();
        with_log += usize::from(names.len() == 2);
        let mut copy = SqliteConnection::connect_with(
            &SqliteConnectOptions::new().filename(to.join("opencode.db")),
        )
        .await
        .unwrap();
        let (check,): (String,) = sqlx::query_as("PRAGMA integrity_check")
            .fetch_one(&mut copy)
            .await
            .unwrap();
        assert_eq!(check, "ok", "copy {round}");
        let (rows, last): (i64, Option<i64>) = sqlx::query_as("SELECT count(*), max(id) FROM part")
            .fetch_one(&mut copy)
            .await
            .unwrap();
        assert!(rows >= before, "copy {round} lost rows: {rows} < {before}");
        // Rows are numbered from 1 without a gap: a torn copy would lose some.
        assert_eq!(last.unwrap_or(0), rows, "copy {round}");
        copy.close().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(7)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    assert!(with_log > 0, "the copies met a log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_and_a_new_log_between_the_two_copies_make_the_copy_start_again() {
    use sqlx::Connection as _;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};
    let dir = tempfile::tempdir().unwrap();
    let (data, to) = (dir.path().join("data"), dir.path().join("copy"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&to).unwrap();
    // No checkpoint but the test's own: what is written stays in the log.
    let options = SqliteConnectOptions::new()
        .filename(data.join("opencode.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .pragma("wal_autocheckpoint", "0");
    let mut db = SqliteConnection::connect_with(&options).await.unwrap();
    let insert = |from: i64, to: i64| {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {to}) \
             INSERT INTO part (id, data) SELECT i, printf('%.3000c', 'x') FROM n"
        )
    };
    sqlx::query("CREATE TABLE part (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query(&insert(1, 200)).execute(&mut db).await.unwrap();

    // Once, between the copy of the database and that of its log: everything goes into
    // the database, the log starts over, and more is written to the new one. The copied
    // database lacks the first rows, and the new log only has the last ones.
    let runtime = tokio::runtime::Handle::current();
    let (from, into) = (data.clone(), to.clone());
    let (names, db) = tokio::task::spawn_blocking(move || {
        let mut once = true;
        let names = agent_places::copy_database_between(&from, &into, &mut || {
            if std::mem::take(&mut once) {
                runtime.block_on(async {
                    for q in ["PRAGMA wal_checkpoint(TRUNCATE)", &insert(201, 260)] {
                        sqlx::query(q).execute(&mut db).await.unwrap();
                    }
                });
            }
        });
        (names, db)
    })
    .await
    .unwrap();
    assert_eq!(names.unwrap(), [OPENCODE_DB, OPENCODE_WAL]);
    db.close().await.unwrap();
    let mut copy =
        SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(to.join(OPENCODE_DB)))
            .await
            .unwrap();
    let (check,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&mut copy)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let (rows, last): (i64, i64) = sqlx::query_as("SELECT count(*), max(id) FROM part")
        .fetch_one(&mut copy)
        .await
        .unwrap();
    assert_eq!((rows, last), (260, 260));
}

//! Gemini CLI's quirks worked around on the runner, where the task's home is: the server
//! does so for agents on its own machine (`mainloop_acp::quirks`), but cannot see a
//! runner's disk. Before the CLI starts, the stray chat files earlier loads left are
//! removed, and a start in the minute a session of the task began waits for the minute
//! to turn.

use mainloop_acp::quirks;
use mainloop_agent::Launch;
use mainloop_domain::TaskId;
use mainloop_domain::agents::AgentName;
use mainloop_domain::runner::{Program, Spawn};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The shell a delayed start runs in, by its path: the sandbox shows the system (and so
/// `/bin/sh`) read-only, and a bare name would be looked up on the runner's `PATH`.
const SHELL: &str = "/bin/sh";
/// What it runs: `$0` is the seconds to sleep, the rest the program and its arguments,
/// which then replace the shell (the same process, so the same pid, group and pipes).
const SLEEP_THEN_EXEC: &str = "sleep \"$0\" && exec \"$@\"";

/// Whether the runner's agent `name`, run as `program`, is Gemini CLI: the agent named
/// `gemini`, or one whose program's file is named so.
fn is_gemini(name: &AgentName, program: &str) -> bool {
    name.as_str() == "gemini"
        || Path::new(program)
            .file_name()
            .is_some_and(|f| f == "gemini")
}

/// `launch` of `spawn` (its task's home `home`) at `now`; when it starts Gemini CLI,
/// made safe for the sessions there: the stray chat files removed first, then the start
/// held back until the minute has turned when a session's chat file is named by this
/// minute.
///
/// The runner cannot tell whether this start will load a session (the server decides
/// that over the protocol, after the start), so both are done for every session in the
/// home: removing strays never touches a session's earliest file, its history; and a
/// chat file of this minute is most likely the session this start loads (a turn's
/// process ended, the next one resumes it), whose history a load within that minute
/// would lose. Names alone sometimes make a start wait needlessly, a minute at most
/// (see [`quirks::start_delay`]).
pub(super) fn before_start(spawn: &Spawn, home: &Path, launch: Launch, now: SystemTime) -> Launch {
    match &spawn.program {
        Program::Agent(name) if is_gemini(name, &launch.program) => {}
        _ => return launch,
    }
    let task = spawn.task;
    remove_stray_chats(task, home);
    let names: Vec<String> = chat_files(home).into_iter().map(|(_, n)| n).collect();
    let delay = quirks::start_delay(&names, now);
    if delay.is_zero() {
        return launch;
    }
    let secs = whole_seconds(delay);
    tracing::info!(
        %task,
        secs,
        "Gemini CLI starts once the minute has turned: a session of this task began this \
         minute, and a load within it would lose the session's history"
    );
    delayed(launch, secs)
}

/// `delay` in whole seconds, rounded up: not every `sleep` takes fractions.
fn whole_seconds(delay: Duration) -> u64 {
    delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
}

/// `launch` run after `secs` seconds, through a shell that sleeps and then becomes the
/// program. The spawn itself is not held: the server writes `initialize` to the process
/// as soon as it has started, and that waits in the pipe meanwhile. Neither the ACP
/// adapter's `initialize` (`mainloop_acp::session::start`) nor anything else before the
/// session starts has a timeout; the worker's only limit is its inactivity timeout
/// (`workers.inactivity_timeout_secs`, 30 minutes by default), far above a minute.
fn delayed(launch: Launch, secs: u64) -> Launch {
    let mut args = vec![
        "-c".to_owned(),
        SLEEP_THEN_EXEC.to_owned(),
        secs.to_string(),
        launch.program,
    ];
    args.extend(launch.args);
    Launch {
        program: SHELL.to_owned(),
        args,
        ..launch
    }
}

/// Removes every chat file in `home` that [`quirks::stray_chat_files_of_all`] finds a
/// stray: Gemini CLI's next start would delete it, and with it every file of the same
/// session, its history too.
fn remove_stray_chats(task: TaskId, home: &Path) {
    let mut by_dir: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for (dir, name) in chat_files(home) {
        by_dir.entry(dir).or_default().push(name);
    }
    let mut removed = Vec::new();
    for (dir, names) in by_dir {
        for name in quirks::stray_chat_files_of_all(&names) {
            match std::fs::remove_file(dir.join(&name)) {
                Ok(()) => removed.push(name),
                Err(e) => {
                    tracing::warn!(%task, file = %name, error = %e, "could not remove a stray Gemini chat file");
                }
            }
        }
    }
    if !removed.is_empty() {
        tracing::info!(
            %task,
            files = ?removed,
            "removed the empty chat files Gemini CLI's loads left, lest its start delete \
             their sessions' history with them"
        );
    }
}

/// The names of the chat files in `home` (`.gemini/tmp/<project>/chats`) with the
/// directory each is in. Only real directories are followed: the agent writes its home,
/// and a link there must not make the runner remove files elsewhere.
fn chat_files(home: &Path) -> Vec<(PathBuf, String)> {
    let tmp = home.join(".gemini").join("tmp");
    if !is_real_dir(&home.join(".gemini")) || !is_real_dir(&tmp) {
        return Vec::new();
    }
    let Ok(projects) = std::fs::read_dir(&tmp) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for project in projects.flatten() {
        let chats = project.path().join("chats");
        if !is_real_dir(&project.path()) || !is_real_dir(&chats) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&chats) else {
            continue;
        };
        files.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .map(|name| (chats.clone(), name)),
        );
    }
    files
}

fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mainloop_domain::Timestamp;
    use std::time::UNIX_EPOCH;

    fn spawn(agent: &str) -> Spawn {
        Spawn {
            process: 1,
            task: TaskId::new_v7(Timestamp::from_millis(1_700_000_000_000)),
            program: Program::Agent(AgentName::parse(agent).unwrap()),
            args: vec![],
            cwd: String::new(),
            env: vec![],
        }
    }

    fn launch(program: &str, args: &[&str]) -> Launch {
        Launch {
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            cwd: PathBuf::from("/w"),
            env: vec![("HOME".into(), "/h".into())],
        }
    }

    /// The UTC minute as Gemini names chat files by, for `at`.
    fn minute_of(at: SystemTime) -> String {
        let secs = at.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap()).unwrap();
        format!(
            "{:04}-{:02}-{:02}T{:02}-{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn gemini_is_the_agent_named_so_or_a_program_named_so() {
        let name = |n: &str| AgentName::parse(n).unwrap();
        assert!(is_gemini(&name("gemini"), "/opt/bin/other"));
        assert!(is_gemini(&name("g"), "/opt/node_modules/.bin/gemini"));
        assert!(is_gemini(&name("g"), "gemini"));
        assert!(!is_gemini(&name("opencode"), "/opt/bin/opencode"));
        assert!(!is_gemini(&name("g"), "/opt/gemini/bin/cli"));
    }

    #[test]
    fn strays_are_removed_in_every_project_and_a_start_this_minute_waits() {
        let home = tempfile::tempdir().unwrap();
        let gemini = spawn("gemini");
        // 2027-01-15T08:00:10Z
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000 / 60 * 60 + 10);
        let this = minute_of(now);
        let before = minute_of(now - Duration::from_secs(120));
        let (a, b) = (
            home.path().join(".gemini/tmp/work/chats"),
            home.path().join(".gemini/tmp/other/chats"),
        );
        for dir in [&a, &b] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let write = |dir: &Path, name: &str| std::fs::write(dir.join(name), "{}").unwrap();
        // A session begun two minutes ago, loaded since (its stray is of this minute).
        write(&a, &format!("session-{before}-d3916f48.jsonl"));
        write(&a, &format!("session-{this}-d3916f48.jsonl"));
        write(&a, "logs.json");
        write(&b, &format!("session-{before}-f1a5e429.json"));

        // Another agent, or a program run by its path, is left alone.
        let opencode = launch("/opt/opencode", &["acp"]);
        assert_eq!(
            before_start(&spawn("opencode"), home.path(), opencode.clone(), now),
            opencode
        );
        let by_path = Spawn {
            program: Program::Path("gemini".into()),
            ..spawn("gemini")
        };
        let sh = launch("gemini", &[]);
        assert_eq!(before_start(&by_path, home.path(), sh.clone(), now), sh);
        assert_eq!(names(&a).len(), 3, "nothing was removed");

        // Its stray gone, nothing is named by this minute: the start goes ahead.
        let plain = launch("/opt/gemini", &["--acp"]);
        let after = before_start(&gemini, home.path(), plain.clone(), now);
        assert_eq!(after, plain);
        assert_eq!(
            names(&a),
            [
                "logs.json".into(),
                format!("session-{before}-d3916f48.jsonl")
            ]
        );
        assert_eq!(names(&b), [format!("session-{before}-f1a5e429.json")]);

        // A session begun this minute: its load would collide; the start waits.
        write(&b, &format!("session-{this}-0a1b2c3d.jsonl"));
        let held = before_start(&gemini, home.path(), plain.clone(), now);
        assert_eq!(held.program, "/bin/sh");
        assert_eq!(
            held.args,
            ["-c", SLEEP_THEN_EXEC, "51", "/opt/gemini", "--acp"]
        );
        assert_eq!((&held.cwd, &held.env), (&plain.cwd, &plain.env));
        assert_eq!(names(&b).len(), 2, "a session's only file is never a stray");
    }

    #[test]
    fn a_link_in_the_home_is_not_followed() {
        let home = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let files = [
            "session-2026-12-06T13-03-d3916f48.jsonl",
            "session-2026-12-06T13-04-d3916f48.jsonl",
        ];
        for name in files {
            std::fs::write(elsewhere.path().join(name), "{}").unwrap();
        }
        let project = home.path().join(".gemini/tmp/work");
        std::fs::create_dir_all(&project).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), project.join("chats")).unwrap();
        let gemini = launch("/opt/bin/gemini", &[]);
        before_start(&spawn("g"), home.path(), gemini, SystemTime::now());
        assert_eq!(names(elsewhere.path()), files);
    }

    #[test]
    fn the_delay_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(51_000)), 51);
        assert_eq!(whole_seconds(Duration::from_millis(1_001)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(999)), 1);
    }

    #[tokio::test]
    async fn the_delayed_start_runs_the_program_with_its_arguments_and_input() {
        use tokio::io::AsyncWriteExt;
        let held = delayed(launch("cat", &["-", "/dev/null"]), 0);
        let mut child = tokio::process::Command::new(&held.program)
            .args(&held.args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Written before the program runs: it waits in the pipe.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"initialize 'a b' $HOME\n").await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"initialize 'a b' $HOME\n");

        let quoted = delayed(launch("printf", &["%s|", "a b", "$HOME", "\"q\""]), 1);
        let started = std::time::Instant::now();
        let out = tokio::process::Command::new(&quoted.program)
            .args(&quoted.args)
            .output()
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a b|$HOME|\"q\"|");
    }
}

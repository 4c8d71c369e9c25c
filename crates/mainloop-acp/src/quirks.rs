//! What particular ACP agents do that the protocol does not say, and the work-arounds:
//! Gemini CLI's minute-named chat files (the wait before a load, the empty file a load
//! leaves behind; for a runner, which cannot tell what a start will load, the same for
//! every session in a home), and history replayed after `session/load` has already
//! answered.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_client_protocol::v1::schema::InitializeResponse;

/// How long updates must have stopped after a `session/load` before the first prompt:
/// an agent that replays the history after answering the load (Gemini CLI does) would
/// otherwise have it read as the new turn's output.
pub const REPLAY_QUIET: Duration = Duration::from_millis(500);
/// The longest wait for a replay to end.
pub const REPLAY_MAX: Duration = Duration::from_secs(10);

/// How long to wait before loading session `session_id` of the agent `init` describes,
/// at `now`, its chat files being named `chats` (see [`chat_files`]).
///
/// Gemini CLI (0.61) names a session's chat file by the UTC minute it was started, and
/// a load starts a new file named by the current minute: within the minute the
/// session's file was started the two collide, and the history is lost. Such a load
/// waits for the minute to turn (plus a second of slack for clocks read a moment
/// apart); any other goes ahead at once.
#[must_use]
pub fn load_delay(
    init: &InitializeResponse,
    chats: &[String],
    session_id: &str,
    now: SystemTime,
) -> Duration {
    if !is_gemini(init) {
        return Duration::ZERO;
    }
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let Some(short) = session_id.get(..8) else {
        return Duration::ZERO;
    };
    let minute = utc_minute(since_epoch.as_secs());
    let prefix = format!("session-{minute}-{short}.json");
    if !chats.iter().any(|name| name.starts_with(&prefix)) {
        return Duration::ZERO;
    }
    until_the_minute_turns(since_epoch)
}

/// How long to hold back a start of Gemini CLI, at `now`, in a home whose chat files are
/// named `chats` (see [`chat_files`]), by a host that cannot tell whether the start will
/// load a session, nor which (a runner: the server decides that, after the start).
///
/// A chat file named by the current minute is a session started this minute, and a
/// start now most likely loads it (a turn's process ended, the next one resumes): that
/// start waits for the minute to turn, as [`load_delay`] does, lest the load's new file
/// collide with the session's own. Any other start goes ahead at once.
///
/// By names alone a start may wait needlessly: a start of the CLI that loads a session
/// (0.61, in ACP mode) first begins a chat file of a throwaway session of its own, no
/// conversation in it, so the next start within that minute waits too. That costs a
/// minute at most, never a session's history.
#[must_use]
pub fn start_delay(chats: &[String], now: SystemTime) -> Duration {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let prefix = format!("session-{}-", utc_minute(since_epoch.as_secs()));
    if !chats
        .iter()
        .any(|name| name.starts_with(&prefix) && chat_short_id(name).is_some())
    {
        return Duration::ZERO;
    }
    until_the_minute_turns(since_epoch)
}

/// From `since_epoch` to a second past the start of the next UTC minute: the second is
/// slack for clocks read a moment apart.
fn until_the_minute_turns(since_epoch: Duration) -> Duration {
    let into_minute = u64::try_from(since_epoch.as_millis() % 60_000).unwrap_or(0);
    Duration::from_millis(60_000 - into_minute + 1_000)
}

/// The minute as Gemini CLI writes it in a chat file's name, `2026-12-06T13-05`.
fn utc_minute(unix_secs: u64) -> String {
    let at = i64::try_from(unix_secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// The names of the chat files Gemini CLI keeps under `home`
/// (`.gemini/tmp/<project>/chats`), with the directory each is in.
#[must_use]
pub fn chat_files(home: &Path) -> Vec<(std::path::PathBuf, String)> {
    let Ok(projects) = std::fs::read_dir(home.join(".gemini").join("tmp")) else {
        return Vec::new();
    };
    projects
        .flatten()
        .filter_map(|project| {
            let chats = project.path().join("chats");
            std::fs::read_dir(&chats)
                .ok()
                .map(|entries| (chats, entries))
        })
        .flat_map(|(chats, entries)| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .map(move |name| (chats.clone(), name))
        })
        .collect()
}

fn is_gemini(init: &InitializeResponse) -> bool {
    init.agent_info
        .as_ref()
        .is_some_and(|info| info.name == "gemini-cli")
}

/// The chat files among `names` that a load of session `session_id` left behind: all of
/// the session's `session-<minute>-<id8>.json(l)` files but the earliest, which holds
/// its history and is the one the loaded session goes on recording to.
///
/// Gemini CLI (0.61) starts a new, empty chat file named by the current minute while it
/// loads a session. Every later start of the CLI deletes chat files without a
/// conversation, and with each one every file of the same short id: the session's own
/// history too, so a second load finds nothing.
#[must_use]
pub fn stray_chat_files(names: &[String], session_id: &str) -> Vec<String> {
    let Some(short) = session_id.get(..8) else {
        return Vec::new();
    };
    let (jsonl, json) = (format!("-{short}.jsonl"), format!("-{short}.json"));
    let mut ours: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("session-") && (n.ends_with(&jsonl) || n.ends_with(&json)))
        .collect();
    // The minute in the name sorts as text.
    ours.sort();
    ours.into_iter().skip(1).cloned().collect()
}

/// The short id (`<id8>`, the first 8 characters of the session id) a Gemini CLI chat
/// file's name `session-<minute>-<id8>.json(l)` carries; `None` for any other file.
fn chat_short_id(name: &str) -> Option<&str> {
    let stem = name
        .strip_suffix(".jsonl")
        .or_else(|| name.strip_suffix(".json"))?;
    let (_, short) = stem.strip_prefix("session-")?.rsplit_once('-')?;
    (short.len() == 8 && short.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(short)
}

/// The stray chat files among `names` (the files of one `chats` directory) of every
/// session there: for each short id, all of its files but the earliest by name, as
/// [`stray_chat_files`] finds them for one session. For a host that cannot tell which
/// session a start of the CLI will load (a runner), before that start: the earliest
/// file of a session, its history, is never among them, and a session with one file
/// has no strays.
#[must_use]
pub fn stray_chat_files_of_all(names: &[String]) -> Vec<String> {
    let shorts: std::collections::BTreeSet<&str> =
        names.iter().filter_map(|n| chat_short_id(n)).collect();
    shorts
        .into_iter()
        .flat_map(|short| stray_chat_files(names, short))
        .collect()
}

/// Removes the empty chat files a Gemini CLI load of `session_id` left under `home`
/// (`.gemini/tmp/<project>/chats`), so that the next start of the CLI keeps the session.
pub fn remove_stray_chats(init: &InitializeResponse, home: &Path, session_id: &str) {
    if !is_gemini(init) {
        return;
    }
    let files = chat_files(home);
    let mut by_dir: std::collections::BTreeMap<&Path, Vec<String>> = Default::default();
    for (dir, name) in &files {
        by_dir.entry(dir.as_path()).or_default().push(name.clone());
    }
    for (dir, names) in by_dir {
        for name in stray_chat_files(&names, session_id) {
            if let Err(e) = std::fs::remove_file(dir.join(&name)) {
                tracing::warn!(file = %name, error = %e, "could not remove a stray chat file");
            }
        }
    }
}

/// Whether a replay that last sent an update at `last` has ended by `now`, having
/// waited since `since`.
#[must_use]
pub fn replay_over(last: Instant, since: Instant, now: Instant) -> bool {
    now.saturating_duration_since(last) >= REPLAY_QUIET
        || now.saturating_duration_since(since) >= REPLAY_MAX
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_client_protocol::schema::ProtocolVersion;
    use agent_client_protocol::v1::schema::Implementation;

    fn init(name: &str) -> InitializeResponse {
        InitializeResponse::new(ProtocolVersion::V1).agent_info(Implementation::new(name, "1"))
    }

    #[test]
    fn only_a_gemini_load_in_the_minute_its_file_was_started_waits_for_the_minute_to_turn() {
        // 2027-01-15T08:00:00Z
        let minute = 1_800_000_000 / 60 * 60;
        let at = |secs: u64, millis: u64| {
            UNIX_EPOCH + Duration::from_secs(minute + secs) + Duration::from_millis(millis)
        };
        let id = "d3916f48-5059-41c1-9d93-3da3ac3357f0";
        let name = format!("session-{}-d3916f48.jsonl", utc_minute(minute));
        let started_now = [name];
        let started_before = ["session-2020-01-01T00-00-d3916f48.jsonl".to_owned()];
        let gemini = init("gemini-cli");
        assert_eq!(
            load_delay(&init("opencode"), &started_now, id, at(10, 0)),
            Duration::ZERO
        );
        assert_eq!(
            load_delay(&gemini, &started_before, id, at(10, 0)),
            Duration::ZERO
        );
        assert_eq!(
            load_delay(&gemini, &started_now, id, at(10, 0)),
            Duration::from_secs(51)
        );
        assert_eq!(
            load_delay(&gemini, &started_now, id, at(59, 500)),
            Duration::from_millis(1_500)
        );
        assert_eq!(
            load_delay(&gemini, &started_now, "short", at(10, 0)),
            Duration::ZERO
        );
    }

    #[test]
    fn the_minute_reads_as_gemini_writes_it() {
        assert_eq!(utc_minute(1_796_529_488), "2026-12-06T03-58");
        assert_eq!(utc_minute(0), "1970-01-01T00-00");
    }

    #[test]
    fn a_load_leaves_every_chat_file_of_the_session_but_the_first_as_a_stray() {
        let id = "d3916f48-5059-41c1-9d93-3da3ac3357f0";
        let names: Vec<String> = [
            "session-2026-12-06T13-05-d3916f48.jsonl",
            "session-2026-12-06T13-03-d3916f48.jsonl",
            "session-2026-12-06T13-03-f1a5e429.jsonl",
            "session-2026-12-06T13-04-d3916f48.json",
            "notes-d3916f48.jsonl",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            stray_chat_files(&names, id),
            [
                "session-2026-12-06T13-04-d3916f48.json",
                "session-2026-12-06T13-05-d3916f48.jsonl"
            ]
        );
        assert!(stray_chat_files(&names[1..3], id).is_empty());
        assert!(stray_chat_files(&names, "short").is_empty());
    }

    #[test]
    fn a_start_waits_for_the_minute_to_turn_only_after_a_chat_file_of_this_minute() {
        // 2027-01-15T08:00:00Z
        let minute = 1_800_000_000 / 60 * 60;
        let at = |secs: u64, millis: u64| {
            UNIX_EPOCH + Duration::from_secs(minute + secs) + Duration::from_millis(millis)
        };
        let this_minute = format!("session-{}-d3916f48.jsonl", utc_minute(minute));
        let last_minute = format!("session-{}-f1a5e429.json", utc_minute(minute - 60));
        let next_minute = format!("session-{}-f1a5e429.json", utc_minute(minute + 60));
        let names = |n: &[&String]| n.iter().map(|s| (*s).clone()).collect::<Vec<_>>();

        assert_eq!(start_delay(&[], at(10, 0)), Duration::ZERO, "no files");
        let others = names(&[&last_minute, &next_minute]);
        assert_eq!(start_delay(&others, at(10, 0)), Duration::ZERO);
        let with = names(&[&last_minute, &this_minute]);
        assert_eq!(start_delay(&with, at(10, 0)), Duration::from_secs(51));
        // The minute's first and last moments.
        assert_eq!(start_delay(&with, at(0, 0)), Duration::from_secs(61));
        assert_eq!(
            start_delay(&with, at(59, 999)),
            Duration::from_millis(1_001)
        );
        // Once the minute has turned, the same files hold nothing back.
        assert_eq!(start_delay(&with, at(60, 0)), Duration::ZERO);
        let just_before = at(0, 0) - Duration::from_millis(1);
        assert_eq!(
            start_delay(&names(&[&this_minute]), just_before),
            Duration::ZERO
        );
        // The minute before's file, a millisecond before the minute turned.
        assert_eq!(
            start_delay(&with, just_before),
            Duration::from_millis(1_001)
        );
        // Only a chat file's name counts.
        let not_chats = [
            format!("session-{}-d3916f48.txt", utc_minute(minute)),
            format!("session-{}-toolong99.json", utc_minute(minute)),
            format!("notes-{}-d3916f48.json", utc_minute(minute)),
        ];
        assert_eq!(start_delay(&not_chats, at(10, 0)), Duration::ZERO);
    }

    #[test]
    fn every_sessions_files_but_its_earliest_are_strays() {
        let names: Vec<String> = [
            "session-2026-12-06T13-05-d3916f48.jsonl",
            "session-2026-12-06T13-03-d3916f48.jsonl",
            "session-2026-12-06T13-03-f1a5e429.jsonl",
            "session-2026-12-06T13-04-d3916f48.json",
            "session-2026-12-06T13-09-f1a5e429.json",
            "session-2026-12-06T13-07-0a1b2c3d.jsonl",
            "session-2026-12-06T13-08-notanid.jsonl",
            "notes-2026-12-06T13-09-0a1b2c3d.jsonl",
            "logs.json",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut strays = stray_chat_files_of_all(&names);
        strays.sort();
        assert_eq!(
            strays,
            [
                "session-2026-12-06T13-04-d3916f48.json",
                "session-2026-12-06T13-05-d3916f48.jsonl",
                "session-2026-12-06T13-09-f1a5e429.json",
            ]
        );
        // The earliest of each session stays; a session of one file has no strays.
        for kept in [
            "session-2026-12-06T13-03-d3916f48.jsonl",
            "session-2026-12-06T13-03-f1a5e429.jsonl",
            "session-2026-12-06T13-07-0a1b2c3d.jsonl",
        ] {
            assert!(!strays.iter().any(|s| s == kept), "{kept}");
        }
        assert!(stray_chat_files_of_all(&names[2..3]).is_empty());
        assert!(stray_chat_files_of_all(&[]).is_empty());
    }

    #[test]
    fn a_chat_files_short_id_is_read_from_its_name() {
        assert_eq!(
            chat_short_id("session-2026-12-06T13-05-d3916f48.jsonl"),
            Some("d3916f48")
        );
        assert_eq!(
            chat_short_id("session-2026-12-06T13-05-d3916f48.json"),
            Some("d3916f48")
        );
        for other in [
            "session-2026-12-06T13-05-d3916f48.txt",
            "session-2026-12-06T13-05-d3916f4.json",
            "session-d3916f48.json",
            "chat-2026-12-06T13-05-d3916f48.json",
            "session-2026-12-06T13-05-d3916f48.json.bak",
        ] {
            assert_eq!(chat_short_id(other), None, "{other}");
        }
    }

    #[test]
    fn only_gemini_chat_files_are_removed_and_the_history_is_kept() {
        let home = std::env::temp_dir().join(format!("quirks-{}", std::process::id()));
        let chats = home.join(".gemini/tmp/proj/chats");
        std::fs::create_dir_all(&chats).unwrap();
        let id = "d3916f48-5059-41c1-9d93-3da3ac3357f0";
        for name in [
            "session-2026-12-06T13-03-d3916f48.jsonl",
            "session-2026-12-06T13-04-d3916f48.jsonl",
        ] {
            std::fs::write(chats.join(name), "{}").unwrap();
        }
        remove_stray_chats(&init("opencode"), &home, id);
        assert_eq!(std::fs::read_dir(&chats).unwrap().count(), 2);
        remove_stray_chats(&init("gemini-cli"), &home, id);
        let left: Vec<String> = std::fs::read_dir(&chats)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["session-2026-12-06T13-03-d3916f48.jsonl"]);
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn a_replay_is_over_when_quiet_or_after_the_longest_wait() {
        let t0 = Instant::now();
        assert!(!replay_over(t0, t0, t0 + Duration::from_millis(100)));
        assert!(replay_over(t0, t0, t0 + REPLAY_QUIET));
        let busy = t0 + REPLAY_MAX;
        assert!(replay_over(busy, t0, busy));
    }
}

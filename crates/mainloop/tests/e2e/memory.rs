//! The temporal pyramid in the real binary: a server that ran ten days ago (its clock
//! moved back with libfaketime) and was killed, started again today, makes the digest
//! of every day, week and month since — each once, also across another restart — and
//! search finds them.

use super::*;
use mainloop_domain::Timestamp;
use mainloop_domain::digest::{Period, Zone, due};
use std::collections::HashSet;

const DAY_MS: i64 = 86_400_000;

/// `mainloop` started under `faketime` at `when` (its clock then ticks from there).
fn command_at(data: &Path, model_url: &str, when: &str) -> Option<Command> {
    let faketime = which("faketime")?;
    let plain = command(data, Some(model_url));
    let mut cmd = Command::new(faketime);
    cmd.env_clear();
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    // Timers (and the dispatcher's leases) keep real time; only the wall clock moves.
    cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .arg(when)
        .arg(BIN);
    Some(cmd)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

async fn digests(base: &str, token: &str) -> Vec<Value> {
    get(base, token, "/api/digests?limit=200").await["digests"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_of_downtime_are_digested_once_when_the_server_returns() {
    let fake = FakeAnthropic::start(
        Script::from_yaml(
            "rules:\n  - name: any\n    match: {}\n    reply: [{text: \"Noted.\"}]\n",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let now = Timestamp::from_millis(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    );
    let then = Zone::utc().date(now.plus_millis(-10 * DAY_MS));
    let Some(cmd) = command_at(data.path(), &fake.base_url(), &format!("{then} 10:00:00")) else {
        eprintln!("skipped: faketime is not installed (apt-get install faketime)");
        return;
    };
    let server = Server::spawn(cmd);
    let token = server.token.clone().unwrap();
    let (status, msg) = post(
        &server.base,
        &token,
        "/api/chat",
        json!({"text": "please look at the ocelot parser"}),
    )
    .await;
    assert!(status < 300, "{msg}");
    let (status, note) = post(
        &server.base,
        &token,
        "/api/notes",
        json!({"kind": "decision", "text": "Ocelots are parsed lazily"}),
    )
    .await;
    assert!(status < 300, "{note}");
    wait_for("the reply", || async {
        let page = get(&server.base, &token, "/api/chat/messages").await;
        page.to_string().contains("Noted.").then_some(())
    })
    .await;
    let joined = get(&server.base, &token, "/api/chat/messages").await["messages"][0]["created_at"]
        .as_str()
        .map(str::to_owned)
        .unwrap();
    assert!(
        joined.starts_with(&then.to_string()),
        "written in the past: {joined}"
    );
    // The wrapper forks the server and passes no signal on: kill the server itself.
    let wrapper = server.child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children")).unwrap();
    for pid in children.split_whitespace() {
        Command::new("kill").args(["-KILL", pid]).status().unwrap();
    }
    server.sigkill();

    // Today: every ended span since, once.
    let server = Server::start(data.path(), Some(&fake.base_url()));
    let since = Zone::utc().start_of(then).plus_millis(10 * 3_600_000);
    let now = Timestamp::from_millis(now.as_millis() + 1);
    let expected: HashSet<(String, String)> = due(&Zone::utc(), since, &HashSet::new(), now)
        .iter()
        .map(|s| (s.period.as_str().to_owned(), s.start.to_string()))
        .collect();
    assert_eq!(
        expected
            .iter()
            .filter(|(p, _)| p == Period::Day.as_str())
            .count(),
        10
    );
    let made = wait_for_within(
        Duration::from_secs(60),
        "the digests of the downtime",
        || async {
            let all = digests(&server.base, &token).await;
            (all.len() >= expected.len()).then_some(all)
        },
    )
    .await;
    let spans: Vec<(String, String)> = made
        .iter()
        .map(|d| {
            (
                d["period"].as_str().unwrap().to_owned(),
                d["start"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(spans.len(), expected.len(), "none twice: {spans:?}");
    assert_eq!(spans.iter().cloned().collect::<HashSet<_>>(), expected);
    let first = made
        .iter()
        .find(|d| d["period"] == "day" && d["start"] == then.to_string())
        .unwrap();
    let text = first["text"].as_str().unwrap();
    assert!(
        text.contains("\"please look at the ocelot parser\""),
        "{text}"
    );
    assert!(text.contains("Ocelots are parsed lazily"), "{text}");
    let hits = get(&server.base, &token, "/api/search?q=ocelot&kind=digest").await;
    assert!(!hits["results"].as_array().unwrap().is_empty(), "{hits}");

    // Another restart makes nothing more.
    drop(server);
    let server = Server::start(data.path(), Some(&fake.base_url()));
    let (status, _) = post(
        &server.base,
        &token,
        "/api/chat",
        json!({"text": "still there?"}),
    )
    .await;
    assert!(status < 300);
    settle(&fake, &sqlite_url(data.path())).await;
    assert_eq!(digests(&server.base, &token).await.len(), expected.len());
}

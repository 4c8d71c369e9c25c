//! `mainloop digests`, `digest` and `time-zone` run as a user runs them against a real
//! server: the time zone shown, set and reset, no digests before a day has ended, and
//! mistakes refused with the server's reason.

use super::*;
use crate::cli::client::User;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_and_the_time_zone_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None);
    let (base, token) = (server.base.clone(), server.token.clone().unwrap());
    let user = User::new();
    let run = |args: &'static [&'static str]| {
        let flags = ["--server", base.as_str(), "--token", token.as_str()];
        let args: Vec<&str> = args.iter().copied().chain(flags).collect();
        let user = &user;
        async move { user.run(&args).await }
    };

    let out = run(&["time-zone"]).await.ok();
    assert_eq!(
        out.stdout, "Time zone: UTC (the server's default)\n",
        "{out:?}"
    );
    let out = run(&["time-zone", "Europe/Paris"]).await.ok();
    assert_eq!(out.stdout, "Time zone: Europe/Paris\n", "{out:?}");
    let doc = run(&["time-zone", "--json"]).await.ok().json();
    assert_eq!(doc, json!({"time_zone": "Europe/Paris", "default": false}));

    // A fresh server has no day that ended since its user began.
    let out = run(&["digests"]).await.ok();
    assert!(
        out.stdout.starts_with("No digests yet.") && out.stdout.contains("(Europe/Paris)"),
        "{out:?}"
    );
    let doc = run(&["digests", "--period", "week", "--limit", "5", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(doc, json!({"digests": [], "time_zone": "Europe/Paris"}));

    run(&["time-zone", "Mars/Olympus_Mons"])
        .await
        .refused(1, "unknown time zone 'Mars/Olympus_Mons'");
    run(&["digests", "--period", "year"])
        .await
        .refused(1, "unknown period 'year'");
    run(&["digests", "--before", "yesterday"])
        .await
        .refused(1, "is not a date (YYYY-MM-DD)");
    run(&["digests", "--limit", "0"])
        .await
        .refused(1, "limit '0' is not a whole number from 1 to 200");
    run(&["digest", "../../auth/me"])
        .await
        .refused(2, "is not a digest id");
    run(&["digest", "0190a0a0-0000-7000-8000-000000000000"])
        .await
        .refused(3, "digest not found");
    run(&["time-zone", "UTC", "--default"]).await.refused(2, "");

    let out = run(&["time-zone", "--default"]).await.ok();
    assert_eq!(
        out.stdout, "Time zone: UTC (the server's default)\n",
        "{out:?}"
    );
}

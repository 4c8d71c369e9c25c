//! The command line: tokens, users, configuration, the embedded web app and the
//! safety checks at start; the client's commands against a running server in
//! [`client`].

use super::*;

mod client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_token_users_config_and_safety_checks() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = command(data.path(), Some("http://127.0.0.1:9"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, token, _) = run(&["token"]);
    assert!(ok);
    let token = token.trim().to_owned();
    assert!(token.starts_with("mlt_"));
    assert_eq!(run(&["token"]).1.trim(), token, "stable across calls");

    let (ok, out, _) = run(&["user", "add", "bob"]);
    assert!(ok, "{out}");
    let bob = out.lines().last().unwrap().trim().to_owned();
    assert!(!run(&["user", "add", "bob"]).0, "duplicate user refused");
    assert!(run(&["user", "list"]).1.contains("bob"));

    let (ok, config, _) = run(&["print-config"]);
    assert!(ok);
    assert!(config.contains("[redacted]"), "{config}");
    assert!(!config.contains("sk-planted-secret-4242"), "{config}");
    // It says what answers the chat, and why.
    assert!(
        config.contains("# The chat is answered by: anthropic. An API key is set"),
        "{config}"
    );

    assert!(run(&["migrate"]).0);

    // Bob's token works against a running server and sees nothing of the owner's.
    let server = Server::start(data.path(), None);
    let me = get(&server.base, &bob, "/api/auth/me").await;
    assert_eq!(me["name"], "bob");
    assert!(
        get(&server.base, &bob, "/api/tasks").await["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = client()
        .get(format!("{}/api/tasks", server.base))
        .bearer_auth("mlt_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The embedded web app: `/` is its HTML with the CSP, a client-side route falls back
    // to the same page, and `/api` keeps its JSON 404.
    let page = |path: &'static str| {
        let url = format!("{}{path}", server.base);
        async move { client().get(url).send().await.unwrap() }
    };
    let root = page("/").await;
    assert_eq!(root.status(), 200);
    assert!(
        root.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = root.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = root.text().await.unwrap();
    assert!(html.contains("<div id=\"app\">"), "{html}");
    let inbox = page("/inbox").await;
    assert_eq!(inbox.status(), 200);
    assert_eq!(inbox.text().await.unwrap(), html);
    let missing = page("/api/no-such-route").await;
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("\"not_found\""));

    // A second server on the same data directory is refused.
    let (ok, _, err) = {
        let out = command(data.path(), None)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::new(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(!ok);
    assert!(err.contains("another mainloop server"), "{err}");
    drop(server);

    // Listening beyond loopback without auth is refused.
    let out = command(data.path(), None)
        .env("MAINLOOP_AUTH__ENABLED", "false")
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing"));
}

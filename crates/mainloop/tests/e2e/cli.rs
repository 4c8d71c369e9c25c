//! The command line: tokens, users, configuration, the embedded web app and the
//! safety checks at start; the client's commands against a running server in
//! [`client`].

use super::*;

pub(crate) mod client;

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

/// The code of the first sign-in link in `stdout`, checking the link's shape.
fn link_code(stdout: &str, base: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("sign in as "))
        .unwrap_or_else(|| panic!("no sign-in link in {stdout:?}"));
    let (_, link) = line.rsplit_once(' ').unwrap();
    let code = link
        .strip_prefix(&format!("{base}/signin#"))
        .unwrap_or_else(|| panic!("{link}"));
    assert!(code.starts_with("mll_") && code.len() == 47, "{code}");
    code.to_owned()
}

async fn sign_in_with(base: &str, code: &str) -> (u16, Option<String>) {
    let r = client()
        .post(format!("{base}/api/auth/link"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|c| c.to_str().unwrap().to_owned());
    (r.status().as_u16(), cookie)
}

/// `mainloop serve` prints a sign-in link after its address, and `mainloop login-link`
/// prints a fresh one whether or not the server runs; each signs in once, and no code
/// reaches the server's log even at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_links_work_once_and_are_never_logged() {
    let data = tempfile::tempdir().unwrap();
    let public = "http://mainloop.test:8080";
    let login_link = |args: &[&str]| {
        command(data.path(), None)
            .env("MAINLOOP_PUBLIC_URL", public)
            .arg("login-link")
            .args(args)
            .output()
            .unwrap()
    };
    // Printed while no server runs; it works once the server does.
    let out = login_link(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("sign in as 'owner'"), "{stdout}");
    assert!(!stdout.contains('█'), "no QR code off a terminal: {stdout}");
    let offline_code = link_code(&stdout, public);
    let out = login_link(&["--user", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user 'nobody'"));

    let log_path = data.path().join("server.log");
    let mut server = command(data.path(), None)
        .env("MAINLOOP_PUBLIC_URL", public)
        .env("MAINLOOP_LOG__FILTER", "debug")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut base = None;
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("mainloop listening on ") {
            base = Some(addr.to_owned());
        } else if base.is_some() && line.starts_with("sign in as ") {
            seen = line;
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let base = base.expect("the server said where it listens");
    let served_code = link_code(&seen, public);

    for code in [&offline_code, &served_code] {
        let (status, cookie) = sign_in_with(&base, code).await;
        assert_eq!(status, 200);
        assert!(cookie.unwrap().starts_with("mainloop_session=mls_"));
        let (status, cookie) = sign_in_with(&base, code).await;
        assert_eq!(status, 401, "a link works once");
        assert!(cookie.is_none());
    }
    let (status, _) = sign_in_with(&base, "mll_wrong").await;
    assert_eq!(status, 401);

    let _ = server.kill();
    let _ = server.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("DEBUG"), "the log is at debug level: {log}");
    for code in [&offline_code, &served_code] {
        assert!(!log.contains(code.as_str()), "a code reached the log");
        assert!(!log.contains(&code[4..]), "a code reached the log");
    }
}

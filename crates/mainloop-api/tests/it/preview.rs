//! The preview proxy in front of the API and the web app: a one-time code becomes a
//! host-only cookie, requests with it reach the task's preview (headers minus the
//! hop-by-hop ones, bodies, upgraded connections both ways), and nobody else gets in.

use super::*;
use axum::body::Body;
use axum::extract::Request;
use hyper_util::rt::TokioIo;
use mainloop_engine::PreviewPort;
use std::collections::HashSet;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A preview runner whose every preview is one local test server.
#[derive(Debug)]
struct OneServer {
    port: u16,
    running: Mutex<HashSet<TaskId>>,
}

impl PreviewPort for OneServer {
    fn start(
        &self,
        task: TaskId,
    ) -> futures::future::BoxFuture<'static, Result<std::net::SocketAddr, String>> {
        self.running.lock().unwrap().insert(task);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        Box::pin(async move { Ok(addr) })
    }

    fn touch(&self, task: TaskId) -> Option<std::net::SocketAddr> {
        self.running
            .lock()
            .unwrap()
            .contains(&task)
            .then_some(std::net::SocketAddr::from(([127, 0, 0, 1], self.port)))
    }

    fn stop(&self, task: TaskId) -> futures::future::BoxFuture<'static, ()> {
        self.running.lock().unwrap().remove(&task);
        Box::pin(async {})
    }
}

/// Answers every request with what it received, and echoes upgraded connections.
async fn upstream(mut req: Request) -> axum::response::Response {
    if req.headers().get("upgrade").is_some() {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = TokioIo::new(on.await.unwrap());
            let mut buf = [0_u8; 1024];
            loop {
                let n = io.read(&mut buf).await.unwrap_or(0);
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        return axum::response::Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Body::empty())
            .unwrap();
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap())))
        .collect();
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

use axum::response::IntoResponse;

struct Previewed {
    app: App,
    runner: std::sync::Arc<OneServer>,
    port: u16,
}

async fn previewed() -> Previewed {
    let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream_listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(upstream_listener, axum::Router::new().fallback(upstream))
            .await
            .unwrap();
    });
    let database = Database::sqlite();
    let world = EngineWorld::new(database, None, EngineConfig::default()).await;
    let engine = world.engine.clone();
    let runner = std::sync::Arc::new(OneServer {
        port,
        running: Mutex::default(),
    });
    engine.set_previews(runner.clone(), "localhost");
    let routes = mainloop_api::preview::route_previews(
        router(engine.clone(), config()),
        engine.clone(),
        false,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = world.shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, routes)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    let app = App {
        base: format!("http://localhost:{}", addr.port()),
        host: format!("localhost:{}", addr.port()),
        client: Client::builder()
            .resolve("localhost", addr)
            .build()
            .unwrap(),
        engine,
        token: world.token.clone(),
        shutdown: world.shutdown.clone(),
        _world: world,
    };
    Previewed {
        app,
        runner,
        port: addr.port(),
    }
}

impl Previewed {
    fn get(&self, url: &str) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// A browser's request to `url`, its host resolved to the server, redirects not
    /// followed.
    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let host = reqwest::Url::parse(url).unwrap();
        let client = Client::builder()
            .resolve(
                host.host_str().unwrap(),
                format!("127.0.0.1:{}", self.port).parse().unwrap(),
            )
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        client.request(method, url)
    }

    fn host_of(&self, task: &Value) -> String {
        let id: TaskId = serde_json::from_value(task["id"].clone()).unwrap();
        format!("t-{}.localhost:{}", id.short(), self.port)
    }

    async fn open(&self, token: &str, task: &Value) -> (StatusCode, Value) {
        self.app
            .call(
                Cred::Bearer(token),
                Method::POST,
                &format!("/api/tasks/{}/preview", task["id"].as_str().unwrap()),
                None,
            )
            .await
    }

    /// Exchanges the link's code for the cookie, as a browser following it would.
    async fn sign_in(&self, url: &str) -> String {
        let resp = self.get(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()["location"], "/");
        let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(set.contains("HttpOnly"), "{set}");
        assert!(set.contains("SameSite=Lax"), "{set}");
        assert!(
            !set.to_ascii_lowercase().contains("domain="),
            "host-only: {set}"
        );
        set.split(';').next().unwrap().to_owned()
    }
}

#[tokio::test]
async fn only_the_owner_reaches_the_preview_and_everything_is_forwarded() {
    let p = previewed().await;
    let task = p.app.create_task("Preview me", false).await;
    let host = p.host_of(&task);

    // Without a cookie: a page saying where to open it, never the API or the web app.
    for path in ["/", "/api/health", "/api/tasks"] {
        let resp = p.get(&format!("http://{host}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(
            resp.text()
                .await
                .unwrap()
                .contains("Open it from the task in mainloop")
        );
    }

    let (status, body) = p.open(&p.app.token, &task).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("http://{host}/?preview_code=")),
        "{url}"
    );
    let cookie = p.sign_in(&url).await;
    // The code works once.
    let again = p.get(&url).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::FORBIDDEN);

    let echoed: Value = p
        .get(&format!("http://{host}/api/things?x=1&y=two"))
        .header("cookie", format!("theirs=1; {cookie}"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .header("keep-alive", "timeout=5")
        .header("x-app", "kept")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["method"], "GET");
    assert_eq!(echoed["path"], "/api/things", "the API never answers here");
    assert_eq!(echoed["query"], "x=1&y=two");
    let headers = &echoed["headers"];
    assert_eq!(headers["x-app"], "kept");
    assert_eq!(headers["cookie"], "theirs=1", "{headers}");
    assert_eq!(headers["host"], host.as_str());
    for gone in ["x-hop", "keep-alive"] {
        assert!(headers.get(gone).is_none(), "{gone} forwarded: {headers}");
    }

    let posted: Value = p
        .request(Method::POST, &format!("http://{host}/form"))
        .header("cookie", &cookie)
        .header("content-type", "text/plain")
        .body("a body of some length")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(posted["method"], "POST");
    assert_eq!(posted["body"], "a body of some length");

    // A WebSocket handshake through the proxy, then bytes both ways.
    let mut ws = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    ws.write_all(
        format!(
            "GET /socket HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        ws.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for message in [&b"hello through the proxy"[..], b"and back again"] {
        ws.write_all(message).await.unwrap();
        let mut echo = vec![0_u8; message.len()];
        ws.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, message);
    }

    // A preview that stopped by itself (idle): the owner is told to open it again.
    p.runner.running.lock().unwrap().clear();
    let resp = p
        .get(&format!("http://{host}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Open it again from mainloop")
    );

    // Stopped on request: its cookies are forgotten too.
    let (status, _) = p.open(&p.app.token, &task).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = p
        .app
        .call(
            Cred::Bearer(&p.app.token),
            Method::DELETE,
            &format!("/api/tasks/{}/preview", task["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let resp = p
        .get(&format!("http://{host}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "its cookies are forgotten"
    );
}

#[tokio::test]
async fn another_users_code_or_cookie_never_opens_a_preview() {
    let p = previewed().await;
    let task = p.app.create_task("Owner's preview", false).await;
    let (_, bob_token) = p.app.engine.create_user("bob", false).await.unwrap();
    let (status, body) = p
        .app
        .call(
            Cred::Bearer(&bob_token),
            Method::POST,
            "/api/tasks",
            Some(json!({"description": "Bob's preview", "repo": "acme/widgets"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let bobs = body;

    // Bob cannot open the owner's preview at all.
    let (status, _) = p.open(&bob_token, &task).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Bob's code, and the cookie it gives on his own host, do not open the owner's.
    let (status, body) = p.open(&bob_token, &bobs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bob_url = body["url"].as_str().unwrap().to_owned();
    let code = bob_url.split("preview_code=").nth(1).unwrap();
    let owners = p.host_of(&task);
    let resp = p
        .get(&format!("http://{owners}/?preview_code={code}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("set-cookie").is_none());
    // The code was spent by that attempt; a fresh one signs Bob in to his own host.
    let (_, body) = p.open(&bob_token, &bobs).await;
    let bob_cookie = p.sign_in(body["url"].as_str().unwrap()).await;
    let (status, _) = p.open(&p.app.token, &task).await;
    assert_eq!(status, StatusCode::OK);
    let resp = p
        .get(&format!("http://{owners}/"))
        .header("cookie", &bob_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let own = p
        .get(&format!("http://{}/", p.host_of(&bobs)))
        .header("cookie", &bob_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
}

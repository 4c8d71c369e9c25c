//! A pass-through proxy between mainloop and the fake GitHub that can crash the server
//! at the worst moment for a mirror: right after GitHub carried out a write (an issue,
//! a comment, a pull request, a merge) and before mainloop hears that it did. A server
//! that records what it posted only after posting it then posts it again on restart;
//! this is where such duplicates come from, so the proxy aims kills there.

use crate::rng::Rng;
use crate::server::Supervisor;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

#[derive(Debug)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    supervisor: Arc<Supervisor>,
    rng: Mutex<Rng>,
    /// Chance, in percent, that a successful write is followed by a kill.
    percent: u64,
    writes: AtomicU32,
    kills: AtomicU32,
}

/// What the proxy did.
#[derive(Debug)]
pub struct Handle {
    proxy: Arc<Proxy>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Writes forwarded, and kills that followed one.
    pub fn counts(&self) -> (u32, u32) {
        (
            self.proxy.writes.load(Ordering::SeqCst),
            self.proxy.kills.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes a loopback port for the proxy (mainloop must know it before it starts).
pub async fn bind() -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    Ok((listener, base))
}

/// Serves the proxy, forwarding to `upstream`.
pub fn serve(
    listener: TcpListener,
    upstream: String,
    supervisor: Arc<Supervisor>,
    rng: Rng,
    percent: u64,
) -> Handle {
    let http = reqwest::Client::builder()
        .no_proxy()
        // The job-log endpoint answers 302 to storage; mainloop follows it itself.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let proxy = Arc::new(Proxy {
        upstream,
        http,
        supervisor,
        rng: Mutex::new(rng),
        percent,
        writes: AtomicU32::new(0),
        kills: AtomicU32::new(0),
    });
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(Arc::clone(&proxy));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Handle { proxy, task }
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            to.append(k.clone(), v.clone());
        }
    }
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
    let mut upstream = p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.upstream))
        .body(body);
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers);
    upstream = upstream.headers(headers);
    let answer = match upstream.send().await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    copy_headers(answer.headers(), &mut headers);
    let Ok(bytes) = answer.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let write = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if write && status.is_success() {
        p.writes.fetch_add(1, Ordering::SeqCst);
        let roll = p
            .rng
            .lock()
            .map(|mut r| r.chance(p.percent))
            .unwrap_or(false);
        if roll
            && p.supervisor
                .crash(&format!(
                    "right after GitHub did {} {}",
                    parts.method,
                    parts.uri.path()
                ))
                .await
        {
            p.kills.fetch_add(1, Ordering::SeqCst);
            // The server that asked is gone; nobody reads this.
            return StatusCode::BAD_GATEWAY.into_response();
        }
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

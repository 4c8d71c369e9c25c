//! The host-routed preview proxy: a request whose `Host` is a preview host
//! (`t-<short id>.<previews domain>`) never reaches the API or the web app. Its
//! one-time code becomes a host-only cookie (then a redirect drops the code); with a
//! valid cookie it is forwarded to the task's preview (on loopback, or in the task's
//! pod) — method, path, query, headers without the hop-by-hop ones, the body streamed —
//! WebSocket and other upgrades included (both sides upgraded, then bytes copied both
//! ways); without one it gets a short 403 page.

use crate::auth::{cookie, cookie_pairs};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use mainloop_engine::{Engine, PreviewHost, PreviewTarget};
use std::net::SocketAddr;

/// The cookie that lets the task's owner into one preview host.
pub const PREVIEW_COOKIE: &str = "mainloop_preview";
/// The query parameter carrying a one-time code.
pub const CODE_PARAM: &str = "preview_code";

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

#[derive(Clone, Debug)]
struct Previews {
    engine: Engine,
    secure_cookies: bool,
}

/// `app` with preview hosts answered by the proxy before any of its routes.
pub fn route_previews(app: Router, engine: Engine, secure_cookies: bool) -> Router {
    let state = Previews {
        engine,
        secure_cookies,
    };
    Router::new()
        .fallback_service(app)
        .layer(axum::middleware::from_fn_with_state(state, by_host))
}

async fn by_host(State(p): State<Previews>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    match host.and_then(|h| p.engine.preview_for_host(&h)) {
        Some(preview) => serve(&p, &preview, req).await,
        None => next.run(req).await,
    }
}

async fn serve(p: &Previews, host: &PreviewHost, req: Request) -> Response {
    if let Some(code) = query_param(req.uri(), CODE_PARAM) {
        return match p.engine.redeem_preview_code(host, &code) {
            Some(cookie) => signed_in(req.uri(), &cookie, p.secure_cookies),
            None => page(
                StatusCode::FORBIDDEN,
                "This preview link was used already, has expired, or is not yours. Open the preview again from mainloop.",
            ),
        };
    }
    let cookie = cookie(req.headers(), PREVIEW_COOKIE);
    match p.engine.preview_target(host, cookie.as_deref()) {
        PreviewTarget::Refused => page(
            StatusCode::FORBIDDEN,
            "Only the task's owner can see this preview. Open it from the task in mainloop.",
        ),
        PreviewTarget::Stopped => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "This preview has stopped (it was idle, or the task ended). Open it again from mainloop.",
        ),
        PreviewTarget::At(addr) => forward(req, addr).await,
    }
}

/// Sets the host-only cookie and sends the browser to the same address without the code.
fn signed_in(uri: &Uri, cookie: &str, secure: bool) -> Response {
    let secure = if secure { "; Secure" } else { "" };
    let set = format!("{PREVIEW_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax{secure}");
    let location = without_param(uri, CODE_PARAM);
    let (Ok(set), Ok(location)) = (
        HeaderValue::from_str(&set),
        HeaderValue::from_str(&location),
    ) else {
        return page(
            StatusCode::BAD_REQUEST,
            "This preview address is malformed.",
        );
    };
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, set), (header::LOCATION, location)],
    )
        .into_response()
}

/// A short page saying what happened; previews are opened by people, in browsers.
fn page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\"><title>mainloop preview</title><p>{message}</p>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The path and query of `uri` without parameter `name`.
fn without_param(uri: &Uri, name: &str) -> String {
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
        .collect();
    // One leading slash: `//host/…` would send the browser to another site.
    let path = format!("/{}", uri.path().trim_start_matches('/'));
    if rest.is_empty() {
        path
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}

/// Whether the request asks to switch protocols (a WebSocket's handshake).
fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// `headers` without the hop-by-hop ones (those named by `Connection` too), the
/// preview's own cookie and `Upgrade`; what the next hop needs is added back by the
/// caller.
#[must_use]
pub fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || n == "upgrade" || named.iter().any(|x| x == n) {
            continue;
        }
        if name == header::COOKIE {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    // The preview's own cookie stays with mainloop: the previewed code never sees it.
    let cookies: Vec<String> = cookie_pairs(headers)
        .filter(|(n, _)| n != PREVIEW_COOKIE)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    if !cookies.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cookies.join("; "))
    {
        out.insert(header::COOKIE, v);
    }
    out
}

fn bad_gateway(addr: SocketAddr, e: &dyn std::fmt::Display) -> Response {
    tracing::info!(%addr, error = %e, "preview did not answer");
    page(
        StatusCode::BAD_GATEWAY,
        "The preview did not answer. It may still be starting, or it stopped; open it again from mainloop.",
    )
}

async fn forward(mut req: Request, addr: SocketAddr) -> Response {
    let upgrade = upgrade_of(req.headers());
    let client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut headers = forwarded_headers(&parts.headers);
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    if let Some(host) = parts.headers.get(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let mut out = match axum::http::Request::builder()
        .method(parts.method)
        .uri(path)
        .body(body)
    {
        Ok(r) => r,
        Err(e) => return bad_gateway(addr, &e),
    };
    *out.headers_mut() = headers;
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return bad_gateway(addr, &e),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => return bad_gateway(addr, &e),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "preview connection ended");
        }
    });
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(addr, &e),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_side) = client_side
    {
        let server_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match futures::future::try_join(client_side, server_side).await {
                Ok((client, server)) => {
                    let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                Err(e) => tracing::debug!(error = %e, "preview upgrade failed"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers = forwarded_headers(&parts.headers);
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_preview_cookie_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; mainloop_preview=abc; b=2"),
        );
        let out = forwarded_headers(&h);
        assert_eq!(
            out.get("x-kept").map(HeaderValue::as_bytes),
            Some(&b"yes"[..])
        );
        for gone in ["connection", "keep-alive", "x-secret", "te"] {
            assert!(out.get(gone).is_none(), "{gone} forwarded");
        }
        assert_eq!(
            out.get(header::COOKIE).map(HeaderValue::as_bytes),
            Some(&b"a=1; b=2"[..])
        );
    }

    #[test]
    fn the_code_leaves_the_address_and_nothing_else_does() {
        let uri: Uri = "/app/x?preview_code=abc&tab=2".parse().unwrap_or_default();
        assert_eq!(query_param(&uri, CODE_PARAM).as_deref(), Some("abc"));
        assert_eq!(without_param(&uri, CODE_PARAM), "/app/x?tab=2");
        let uri: Uri = "/?preview_code=abc".parse().unwrap_or_default();
        assert_eq!(without_param(&uri, CODE_PARAM), "/");
        let uri: Uri = "//evil.example/?preview_code=abc"
            .parse()
            .unwrap_or_default();
        assert_eq!(without_param(&uri, CODE_PARAM), "/evil.example/");
    }
}

//! The web app, embedded at build time (see `build.rs`), and serving it: exact files with
//! their cache policy, precompressed forms chosen by `Accept-Encoding`, `index.html` for
//! client-side routes, the API reference page (`docs.html`) for `/api/docs`, and the
//! security headers. No Node.js at runtime.

mod content_type;
mod encoding;

use axum::Router;
use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use axum::routing::{MethodRouter, any};

pub use content_type::{compressible, content_type};
use encoding::Coding;

/// A compressed form of an asset, with the validator of that representation.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: &'static [u8],
    /// Quoted strong ETag; differs from the raw file's, as the bytes differ.
    pub etag: &'static str,
}

/// One file of the built app.
#[derive(Debug)]
pub struct Asset {
    /// Relative to the app's root, without a leading slash (`assets/index-1a2b.js`).
    pub path: &'static str,
    pub content_type: &'static str,
    pub raw: &'static [u8],
    /// Quoted strong ETag: a hash of `raw`.
    pub etag: &'static str,
    /// Present only where it is smaller than `raw`.
    pub gzip: Option<Encoded>,
    pub brotli: Option<Encoded>,
}

/// The embedded app, sorted by path.
pub static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Vite's content-hashed output; a changed file gets a new name, so it never goes stale.
const IMMUTABLE_PREFIX: &str = "assets/";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else keeps its name across releases (`index.html`, `sw.js`, the manifest,
/// icons): the browser may keep it but must revalidate, which the ETag makes cheap.
const REVALIDATE: &str = "no-cache";
const INDEX: &str = "index.html";
/// The API reference page, a second entry of the web build.
const DOCS: &str = "docs.html";
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data: blob:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The app as a router with only a fallback, for the binary to merge beside `/api`.
/// Every path outside `/api` is answered from `ASSETS`.
pub fn router() -> Router {
    router_for(ASSETS)
}

/// Like [`router`], over another table (tests use small ones).
pub fn router_for(assets: &'static [Asset]) -> Router {
    Router::new().fallback(move |request: Request<Body>| async move {
        respond(
            assets,
            request.method(),
            request.uri().path(),
            request.headers(),
        )
    })
}

/// The API reference page, for the binary to route at `/api/docs`: that path is inside
/// the API's space, which the fallback of [`router`] never answers.
pub fn docs_page() -> MethodRouter {
    docs_page_for(ASSETS)
}

/// Like [`docs_page`], over another table (tests use small ones).
pub fn docs_page_for(assets: &'static [Asset]) -> MethodRouter {
    any(move |request: Request<Body>| async move {
        let response = if let Some(refused) = refuse_method(request.method()) {
            refused
        } else {
            match find(assets, DOCS) {
                Some(page) => file(page, request.method(), request.headers()),
                None => plain(StatusCode::NOT_FOUND, "not found\n"),
            }
        };
        secured(response)
    })
}

fn find(assets: &'static [Asset], path: &str) -> Option<&'static Asset> {
    assets
        .binary_search_by(|a| a.path.cmp(path))
        .ok()
        .and_then(|i| assets.get(i))
}

/// The whole policy, as a pure function of the request.
#[must_use]
pub fn respond(
    assets: &'static [Asset],
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let response = if let Some(refused) = refuse_method(method) {
        refused
    } else if path == "/api" || path.starts_with("/api/") {
        // The API router owns these; reaching here means it was not mounted.
        plain(StatusCode::NOT_FOUND, "not found\n")
    } else {
        let relative = path.trim_start_matches('/');
        match find(assets, relative) {
            Some(asset) => file(asset, method, headers),
            None if is_client_route(relative) => match find(assets, INDEX) {
                Some(index) => file(index, method, headers),
                None => plain(StatusCode::NOT_FOUND, "not found\n"),
            },
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    };
    secured(response)
}

/// A 405 for anything but reading.
fn refuse_method(method: &Method) -> Option<Response> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(r)
}

/// The headers every answer carries.
fn secured(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A path the app routes itself: no file extension in its last segment, and not under
/// the hashed-assets directory, where a missing file is simply missing.
fn is_client_route(relative: &str) -> bool {
    let last = relative.rsplit('/').next().unwrap_or(relative);
    !relative.starts_with(IMMUTABLE_PREFIX) && !last.contains('.')
}

fn file(asset: &'static Asset, method: &Method, headers: &HeaderMap) -> Response {
    let (coding, bytes, etag) =
        match encoding::choose(headers, asset.brotli.is_some(), asset.gzip.is_some()) {
            Coding::Brotli => encoded(asset.brotli.as_ref(), "br", asset),
            Coding::Gzip => encoded(asset.gzip.as_ref(), "gzip", asset),
            Coding::Identity => (None, asset.raw, asset.etag),
        };
    let cache = if asset.path.starts_with(IMMUTABLE_PREFIX) {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    let not_modified = if_none_match(headers, etag);
    let mut builder = Response::builder()
        .status(if not_modified {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        })
        .header(header::CACHE_CONTROL, cache)
        .header(header::ETAG, etag)
        .header(header::VARY, "Accept-Encoding");
    if !not_modified {
        builder = builder
            .header(header::CONTENT_TYPE, asset.content_type)
            .header(header::CONTENT_LENGTH, bytes.len());
        if let Some(coding) = coding {
            builder = builder.header(header::CONTENT_ENCODING, coding);
        }
    }
    if asset.content_type.starts_with("text/html") {
        builder = builder
            .header(header::CONTENT_SECURITY_POLICY, CSP)
            .header(header::X_FRAME_OPTIONS, "DENY");
    }
    let body = if not_modified || method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    builder
        .body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"))
}

/// The compressed form `choose` picked (it picks only forms that exist), or the raw file.
fn encoded(
    form: Option<&'static Encoded>,
    name: &'static str,
    asset: &'static Asset,
) -> (Option<&'static str>, &'static [u8], &'static str) {
    form.map_or((None, asset.raw, asset.etag), |f| {
        (Some(name), f.bytes, f.etag)
    })
}

/// `If-None-Match` (weak comparison, as RFC 9110 §13.1.2 asks): `*` or any listed tag.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::body::to_bytes;
    use tower::ServiceExt;

    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";

    /// A small app; sorted by path like the generated table.
    static TABLE: &[Asset] = &[
        Asset {
            path: "assets/index-1a2b.js",
            content_type: JS,
            raw: b"console.log('app')",
            etag: "\"js\"",
            gzip: Some(Encoded {
                bytes: b"gz-js",
                etag: "\"js.gz\"",
            }),
            brotli: Some(Encoded {
                bytes: b"br-js",
                etag: "\"js.br\"",
            }),
        },
        Asset {
            path: "docs.html",
            content_type: HTML,
            raw: b"<!doctype html><title>mainloop API</title>",
            etag: "\"docs\"",
            gzip: None,
            brotli: None,
        },
        Asset {
            path: "icon-192.png",
            content_type: "image/png",
            raw: b"\x89PNG",
            etag: "\"png\"",
            gzip: None,
            brotli: None,
        },
        Asset {
            path: "index.html",
            content_type: HTML,
            raw: b"<!doctype html><title>mainloop</title>",
            etag: "\"html\"",
            gzip: Some(Encoded {
                bytes: b"gz-html",
                etag: "\"html.gz\"",
            }),
            brotli: None,
        },
        Asset {
            path: "manifest.webmanifest",
            content_type: "application/manifest+json",
            raw: b"{}",
            etag: "\"manifest\"",
            gzip: None,
            brotli: None,
        },
        Asset {
            path: "sw.js",
            content_type: JS,
            raw: b"self.addEventListener('fetch', () => {})",
            etag: "\"sw\"",
            gzip: None,
            brotli: None,
        },
    ];

    async fn send(method: &str, path: &str, headers: &[(&str, &str)]) -> (Response, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router_for(TABLE)
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, usize::MAX).await.unwrap().to_vec();
        (Response::from_parts(parts, Body::empty()), bytes)
    }

    async fn get(path: &str, headers: &[(&str, &str)]) -> (Response, Vec<u8>) {
        send("GET", path, headers).await
    }

    fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    fn assert_common(response: &Response) {
        assert_eq!(header(response, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(response, "referrer-policy"), Some("no-referrer"));
    }

    fn assert_html(response: &Response) {
        assert_common(response);
        assert_eq!(header(response, "content-security-policy"), Some(CSP));
        assert!(CSP.contains("script-src 'self';") && CSP.contains("frame-ancestors 'none'"));
        assert_eq!(header(response, "x-frame-options"), Some("DENY"));
        assert_eq!(header(response, "cache-control"), Some("no-cache"));
    }

    #[tokio::test]
    async fn the_root_and_client_routes_serve_index_html() {
        let (root, root_body) = get("/", &[]).await;
        assert_eq!(root.status(), StatusCode::OK);
        assert_eq!(header(&root, "content-type"), Some(HTML));
        assert_eq!(header(&root, "etag"), Some("\"html\""));
        assert_eq!(header(&root, "content-encoding"), None);
        assert_html(&root);
        for path in [
            "/index.html",
            "/inbox",
            "/tasks/019a-7c2e-4b1d",
            "/login",
            "/settings",
            "/tasks/",
        ] {
            let (response, body) = get(path, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&response, "content-type"), Some(HTML), "{path}");
            assert_html(&response);
            assert_eq!(body, root_body, "{path}");
        }
    }

    #[tokio::test]
    async fn hashed_assets_are_immutable_and_others_revalidate() {
        let (js, _) = get("/assets/index-1a2b.js", &[]).await;
        assert_eq!(js.status(), StatusCode::OK);
        assert_eq!(header(&js, "content-type"), Some(JS));
        assert_eq!(
            header(&js, "cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_common(&js);
        // The CSP and frame options belong to documents, not scripts.
        assert_eq!(header(&js, "content-security-policy"), None);
        assert_eq!(header(&js, "x-frame-options"), None);

        for (path, content_type) in [
            ("/sw.js", JS),
            ("/manifest.webmanifest", "application/manifest+json"),
            ("/icon-192.png", "image/png"),
        ] {
            let (response, body) = get(path, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&response, "content-type"), Some(content_type));
            assert_eq!(
                header(&response, "cache-control"),
                Some("no-cache"),
                "{path}"
            );
            assert!(header(&response, "etag").is_some(), "{path}");
            assert_common(&response);
            let asset = find(TABLE, path.trim_start_matches('/')).unwrap();
            assert_eq!(body, asset.raw);
        }
    }

    #[tokio::test]
    async fn encodings_are_negotiated() {
        let path = "/assets/index-1a2b.js";
        let browser = [("accept-encoding", "gzip, deflate, br, zstd")];
        let (br, body) = get(path, &browser).await;
        assert_eq!(header(&br, "content-encoding"), Some("br"));
        assert_eq!(header(&br, "vary"), Some("Accept-Encoding"));
        assert_eq!(header(&br, "etag"), Some("\"js.br\""));
        assert_eq!(header(&br, "content-length"), Some("5"));
        assert_eq!(body, b"br-js");

        let (gz, body) = get(path, &[("accept-encoding", "gzip, br;q=0")]).await;
        assert_eq!(header(&gz, "content-encoding"), Some("gzip"));
        assert_eq!(header(&gz, "etag"), Some("\"js.gz\""));
        assert_eq!(body, b"gz-js");

        let (raw, body) = get(path, &[("accept-encoding", "identity")]).await;
        assert_eq!(header(&raw, "content-encoding"), None);
        assert_eq!(header(&raw, "vary"), Some("Accept-Encoding"));
        assert_eq!(body, b"console.log('app')");

        // index.html has gzip only; a brotli-first client gets it.
        let (html, body) = get("/inbox", &browser).await;
        assert_eq!(header(&html, "content-encoding"), Some("gzip"));
        assert_eq!(body, b"gz-html");

        // Nothing compressed exists for the PNG.
        let (png, _) = get("/icon-192.png", &browser).await;
        assert_eq!(header(&png, "content-encoding"), None);
    }

    #[tokio::test]
    async fn a_matching_etag_gets_304() {
        let (first, _) = get("/", &[]).await;
        let etag = header(&first, "etag").unwrap().to_owned();
        for value in [etag.clone(), format!("\"other\", W/{etag}"), "*".to_owned()] {
            let (response, body) = get("/", &[("if-none-match", &value)]).await;
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{value}");
            assert!(body.is_empty());
            assert_eq!(header(&response, "etag"), Some(etag.as_str()));
            assert_eq!(header(&response, "cache-control"), Some("no-cache"));
            assert_common(&response);
        }
        let (stale, body) = get("/", &[("if-none-match", "\"old\"")]).await;
        assert_eq!(stale.status(), StatusCode::OK);
        assert!(!body.is_empty());

        // The validator is per representation: the gzip tag revalidates the gzip form.
        let gzip = [
            ("accept-encoding", "gzip"),
            ("if-none-match", "\"html.gz\""),
        ];
        let (response, _) = get("/inbox", &gzip).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        let (response, _) = get("/inbox", &[("if-none-match", "\"html.gz\"")]).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn head_has_the_headers_without_a_body() {
        let (response, body) = send("HEAD", "/sw.js", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "content-type"), Some(JS));
        let len = find(TABLE, "sw.js").unwrap().raw.len().to_string();
        assert_eq!(header(&response, "content-length"), Some(len.as_str()));
        assert_eq!(header(&response, "cache-control"), Some("no-cache"));
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn other_methods_get_405() {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let (response, _) = send(method, "/", &[]).await;
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method}"
            );
            assert_eq!(header(&response, "allow"), Some("GET, HEAD"));
            assert_common(&response);
        }
    }

    #[tokio::test]
    async fn missing_files_and_api_paths_are_404() {
        for path in [
            "/missing.js",
            "/assets/index-0000.js",
            "/assets/gone",
            "/favicon.ico",
            "/api",
            "/api/nothing",
        ] {
            let (response, body) = get(path, &[]).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(
                header(&response, "content-type"),
                Some("text/plain; charset=utf-8")
            );
            assert_eq!(body, b"not found\n");
            assert_common(&response);
            assert_eq!(header(&response, "content-security-policy"), None);
        }
    }

    async fn docs(method: &str, headers: &[(&str, &str)]) -> (Response, Vec<u8>) {
        let mut request = Request::builder().method(method).uri("/api/docs");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let app = Router::new().route("/api/docs", docs_page_for(TABLE));
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, usize::MAX).await.unwrap().to_vec();
        (Response::from_parts(parts, Body::empty()), bytes)
    }

    #[tokio::test]
    async fn the_docs_page_is_served_as_a_document() {
        let (page, body) = docs("GET", &[]).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(header(&page, "content-type"), Some(HTML));
        assert_eq!(body, find(TABLE, DOCS).unwrap().raw);
        assert_html(&page);

        let (head, body) = docs("HEAD", &[]).await;
        assert_eq!(head.status(), StatusCode::OK);
        assert!(body.is_empty());
        let (cached, body) = docs("GET", &[("if-none-match", "\"docs\"")]).await;
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        let (post, _) = docs("POST", &[]).await;
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&post, "allow"), Some("GET, HEAD"));
        assert_common(&post);
    }

    #[tokio::test]
    async fn without_a_docs_page_the_route_is_404() {
        static NO_DOCS: &[Asset] = &[];
        let app = Router::new().route("/api/docs", docs_page_for(NO_DOCS));
        let request = Request::builder().uri("/api/docs").body(Body::empty());
        let response = app.oneshot(request.unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_common(&response);
    }

    #[test]
    fn the_embedded_table_is_sorted_and_has_the_app() {
        assert!(ASSETS.windows(2).all(|w| w[0].path < w[1].path));
        let index = find(ASSETS, INDEX).expect("the built app has index.html");
        assert_eq!(index.content_type, HTML);
        let docs = find(ASSETS, DOCS).expect("the built app has the API reference page");
        assert_eq!(docs.content_type, HTML);
        for asset in ASSETS {
            assert_eq!(
                asset.content_type,
                content_type(asset.path),
                "{}",
                asset.path
            );
            assert!(asset.etag.starts_with('"') && asset.etag.ends_with('"'));
            for form in [&asset.gzip, &asset.brotli].into_iter().flatten() {
                assert!(form.bytes.len() < asset.raw.len(), "{}", asset.path);
                assert_ne!(form.etag, asset.etag);
            }
        }
    }

    #[test]
    fn embedded_compressed_forms_decode_to_the_file() {
        use std::io::Read;
        for asset in ASSETS {
            if let Some(gz) = &asset.gzip {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(gz.bytes)
                    .read_to_end(&mut out)
                    .unwrap();
                assert_eq!(out, asset.raw, "{}", asset.path);
            }
            if let Some(br) = &asset.brotli {
                let mut out = Vec::new();
                brotli::Decompressor::new(br.bytes, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
                assert_eq!(out, asset.raw, "{}", asset.path);
            }
        }
    }
}

//! The HTTP edge: the route table, and what GitHub does around every API request —
//! authentication, outages, hangs, primary and secondary rate limits with their headers,
//! `ETag`/`If-None-Match` (a 304 is free), pagination with `Link` headers, GitHub's
//! error bodies, JSON bodies that fail the way GitHub's do, and request statistics.

use crate::state::{Bucket, Caller, Gate, Hang, Shared};
use crate::{Error, checks, control, graphql, issues, pulls, reviews};
use axum::Router;
use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::header::{
    AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LINK, RETRY_AFTER, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

const DOCS: &str = "https://docs.github.com/rest";

/// The login a request authenticated as, for handlers.
#[derive(Clone, Debug)]
pub(crate) struct Login(pub String);

pub(crate) fn router(s: Arc<Shared>) -> Router {
    let repo = "/repos/{o}/{r}";
    let api = Router::new()
        .route("/user", get(issues::get_user))
        .route(repo, get(issues::get_repo))
        .route(
            &format!("{repo}/issues"),
            post(issues::create_issue).get(issues::list_issues),
        )
        .route(
            &format!("{repo}/issues/{{n}}"),
            get(issues::get_issue).patch(issues::update_issue),
        )
        .route(
            &format!("{repo}/issues/{{n}}/comments"),
            post(issues::create_comment).get(issues::list_comments),
        )
        .route(
            &format!("{repo}/issues/comments/{{id}}"),
            get(issues::get_comment),
        )
        .route(
            &format!("{repo}/issues/comments/{{id}}/reactions"),
            post(issues::create_reaction).get(issues::list_reactions),
        )
        .route(
            &format!("{repo}/pulls"),
            post(pulls::create_pull).get(pulls::list_pulls),
        )
        .route(
            &format!("{repo}/pulls/{{n}}"),
            get(pulls::get_pull).patch(pulls::update_pull),
        )
        .route(
            &format!("{repo}/pulls/{{n}}/merge"),
            put(pulls::merge_pull).get(pulls::is_merged),
        )
        .route(
            &format!("{repo}/pulls/{{n}}/reviews"),
            post(reviews::create_review).get(reviews::list_reviews),
        )
        .route(
            &format!("{repo}/pulls/{{n}}/comments"),
            post(reviews::create_review_comment).get(reviews::list_review_comments),
        )
        .route(
            &format!("{repo}/check-runs"),
            post(checks::create_check_run),
        )
        .route(
            &format!("{repo}/check-runs/{{id}}"),
            get(checks::get_check_run).patch(checks::update_check_run),
        )
        .route(
            &format!("{repo}/commits/{{ref}}/check-runs"),
            get(checks::list_check_runs),
        )
        .route(&format!("{repo}/commits"), get(checks::list_commits))
        .route(
            &format!("{repo}/actions/jobs/{{id}}/logs"),
            get(checks::job_logs),
        )
        .route("/graphql", post(graphql::graphql))
        .fallback(|| async { Error::not_found() })
        .layer(middleware::from_fn_with_state(s.clone(), api_layer))
        .with_state(s.clone());
    control::router(s).merge(api)
}

/// `application/json; charset=utf-8`, as GitHub labels its JSON.
pub(crate) fn json(status: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(HttpBody::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Self::Api {
                status,
                message,
                errors,
            } => {
                let mut body = json!({
                    "message": message,
                    "documentation_url": DOCS,
                    "status": status.to_string(),
                });
                if let Some(errors) = errors {
                    body["errors"] = errors;
                }
                json(status, &body)
            }
            other => {
                tracing::error!(error = %other, "fake github failed a request");
                json(
                    500,
                    &json!({"message": "Server Error", "documentation_url": DOCS, "status": "500"}),
                )
            }
        }
    }
}

/// A JSON request body that fails like GitHub: not JSON → 400 "Problems parsing
/// JSON"; the wrong shape → 422. An empty body reads as `{}`.
#[derive(Debug)]
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| Error::api(400, "Problems parsing JSON"))?;
        let v: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(&bytes).map_err(|_| Error::api(400, "Problems parsing JSON"))?
        };
        serde_json::from_value(v)
            .map(Body)
            .map_err(|e| Error::api(422, format!("Invalid request.\n\n{e}")))
    }
}

/// A number in a path; anything else is a 404, as on GitHub.
pub(crate) fn num(s: &str) -> Result<u64, Error> {
    s.parse().map_err(|_| Error::not_found())
}

pub(crate) fn query(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

pub(crate) fn query_get(uri: &Uri, key: &str) -> Option<String> {
    query(uri)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// One page of a list, and the `Link` header that leads through the rest (absolute URLs
/// that keep every other query parameter).
pub(crate) fn paginate<T>(base: &str, uri: &Uri, items: Vec<T>) -> (Vec<T>, Option<String>) {
    let per_page = query_get(uri, "per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(30)
        .min(100);
    let page = query_get(uri, "page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let slice: Vec<T> = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    if last == 1 && page == 1 {
        return (slice, None);
    }
    let pairs = query(uri);
    let url_for = |p: usize| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        let mut placed = false;
        for (k, v) in &pairs {
            if k == "page" {
                if !placed {
                    ser.append_pair("page", &p.to_string());
                    placed = true;
                }
            } else {
                ser.append_pair(k, v);
            }
        }
        if !placed {
            ser.append_pair("page", &p.to_string());
        }
        format!("{base}{}?{}", uri.path(), ser.finish())
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url_for((page - 1).min(last))));
    }
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", url_for(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", url_for(last)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"first\"", url_for(1)));
    }
    (slice, (!links.is_empty()).then(|| links.join(", ")))
}

/// A JSON answer with an optional `Link` header.
pub(crate) fn listed(v: &Value, link: Option<String>) -> Response {
    let mut r = json(200, v);
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(LINK, link);
    }
    r
}

fn token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| rest.trim())
}

fn rate_headers(h: &mut HeaderMap, b: &Bucket, resource: &'static str) {
    let pairs = [
        ("x-ratelimit-limit", b.limit.to_string()),
        ("x-ratelimit-remaining", b.remaining().to_string()),
        ("x-ratelimit-used", b.used.to_string()),
        ("x-ratelimit-reset", b.reset.to_string()),
        ("x-ratelimit-resource", resource.to_owned()),
    ];
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
}

fn common_headers(h: &mut HeaderMap) {
    h.insert(
        "x-github-api-version-selected",
        HeaderValue::from_static("2022-11-28"),
    );
    h.insert(
        "x-github-media-type",
        HeaderValue::from_static("github.v3; format=json"),
    );
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string()) {
        h.insert("x-github-request-id", v);
    }
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |s: &str| s.trim().trim_start_matches("W/").to_owned();
    let want = strip(etag);
    if_none_match
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == want)
}

/// Everything GitHub does around an API request; handlers see only the `Login`.
async fn api_layer(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_owned(), |m| m.as_str().to_owned());
    let key = format!("{method} {route}");
    let hang = s.hang_hit(method.as_str(), &key);
    s.count_request(key);
    let resource = if route == "/graphql" {
        "graphql"
    } else {
        "core"
    };

    if let Some(h) = &hang {
        tokio::time::sleep(std::time::Duration::from_millis(h.delay_ms)).await;
        if !h.applied {
            if h.cut {
                return cut();
            }
            if let Some(status) = h.status {
                return timed_out(status);
            }
        }
    }
    let resp = handle(&s, req, next, &method, resource).await;
    match hang {
        // Carried out, but the answer is lost.
        Some(Hang { cut: true, .. }) => cut(),
        Some(Hang {
            status: Some(status),
            ..
        }) => timed_out(status),
        _ => resp,
    }
}

/// An answer whose connection drops mid-body: the client reads a 200's headers and the
/// start of a JSON body, then the stream fails and the server closes the connection.
fn cut() -> Response {
    let chunks = futures::stream::iter([
        Ok(Bytes::from_static(b"{\"message\":")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection cut by the fake",
        )),
    ]);
    let mut r = Response::new(HttpBody::from_stream(chunks));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    common_headers(r.headers_mut());
    r
}

/// What GitHub's front end answers when the request took too long.
fn timed_out(status: u16) -> Response {
    let mut r = json(
        status,
        &json!({"message": "We couldn't respond to your request in time. Sorry about that. \
            Please try resubmitting your request and contact us if the problem persists.",
            "documentation_url": DOCS}),
    );
    common_headers(r.headers_mut());
    r
}

async fn handle(
    s: &Arc<Shared>,
    mut req: Request,
    next: Next,
    method: &Method,
    resource: &'static str,
) -> Response {
    if let Some(status) = s.outage_hit() {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("Server Error");
        let mut r = json(
            status,
            &json!({"message": reason, "documentation_url": DOCS}),
        );
        common_headers(r.headers_mut());
        return r;
    }

    let login = token(req.headers()).and_then(|t| s.login_for(t).map(str::to_owned));
    let caller = Caller {
        login: login.clone(),
        resource,
    };
    let Some(login) = login else {
        let b = s.charge(&caller, true);
        let mut r = Error::api(401, "Bad credentials").into_response();
        rate_headers(r.headers_mut(), &b, resource);
        common_headers(r.headers_mut());
        return r;
    };

    match s.gate(&caller) {
        Gate::Pass => {}
        Gate::Secondary(retry) => {
            let b = s.charge(&caller, false);
            let mut r = Error::api(
                429,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            )
            .into_response();
            rate_headers(r.headers_mut(), &b, resource);
            if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
                r.headers_mut().insert(RETRY_AFTER, v);
            }
            common_headers(r.headers_mut());
            return r;
        }
        Gate::Primary(b) => {
            let mut r = Error::api(
                403,
                format!(
                    "API rate limit exceeded for user ID {}. If you reach out to GitHub Support for help, please include the request ID.",
                    s.user_id(&login)
                ),
            )
            .into_response();
            rate_headers(r.headers_mut(), &b, resource);
            common_headers(r.headers_mut());
            return r;
        }
    }

    let if_none_match = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    req.extensions_mut().insert(Login(login));
    let resp = next.run(req).await;

    let (mut resp, not_modified) = if method == Method::GET && resp.status() == StatusCode::OK {
        with_etag(resp, if_none_match.as_deref()).await
    } else {
        (resp, false)
    };
    if not_modified {
        s.count_not_modified();
    }
    // A 304 to an authorised conditional request costs no quota, as on GitHub.
    let b = s.charge(&caller, !not_modified);
    rate_headers(resp.headers_mut(), &b, resource);
    common_headers(resp.headers_mut());
    resp.headers_mut().insert(
        VARY,
        HeaderValue::from_static("Accept, Authorization, Cookie, X-GitHub-OTP"),
    );
    resp
}

/// Adds a weak `ETag` over the body (and its `Link`); answers 304 when it matches.
async fn with_etag(resp: Response, if_none_match: Option<&str>) -> (Response, bool) {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (Error::api(500, "Server Error").into_response(), false);
    };
    let mut hash = Sha256::new();
    hash.update(&bytes);
    if let Some(link) = parts.headers.get(LINK) {
        hash.update(link.as_bytes());
    }
    let etag = format!("W/\"{}\"", hex::encode(hash.finalize()));
    let Ok(etag_value) = HeaderValue::from_str(&etag) else {
        return (Response::from_parts(parts, HttpBody::from(bytes)), false);
    };
    if if_none_match.is_some_and(|inm| etag_matches(inm, &etag)) {
        let mut r = Response::new(HttpBody::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut().insert(ETAG, etag_value);
        return (r, true);
    }
    parts.headers.insert(ETAG, etag_value);
    parts.headers.insert(
        "cache-control",
        HeaderValue::from_static("private, max-age=60, s-maxage=60"),
    );
    (Response::from_parts(parts, HttpBody::from(bytes)), false)
}

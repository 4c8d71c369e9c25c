//! The HTTP core: GitHub's headers and auth, the conditional-request cache, `Link`
//! pagination, rate-limit bookkeeping, redirects, and log downloads from storage hosts.

use crate::GithubConfig;
use crate::error::{self, GithubError};
use crate::link;
use crate::ratelimit::{Limits, RateLimit};
use bytes::Bytes;
use futures::StreamExt as _;
use mainloop_config::{REDACTED, Secret};
use mainloop_forge::ForgeError;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH, LINK, LOCATION,
};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;
use url::Url;

/// Items per page; GitHub's maximum for the lists we read.
pub const PER_PAGE: usize = 100;
/// Lists longer than this many pages are refused rather than read forever.
pub const MAX_PAGES: usize = 50;
/// Cached bodies beyond this total are dropped (all at once: simple, and a dropped entry
/// costs one full request, not correctness).
const CACHE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Same-origin redirects (a renamed repository answers 301) followed per request.
const MAX_REDIRECTS: usize = 3;

const API_VERSION: &str = "2022-11-28";

/// A validated GET answer kept for `If-None-Match`: its validator, its body and where its
/// next page was.
struct Cached {
    etag: String,
    body: Bytes,
    next: Option<String>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, Cached>,
    bytes: usize,
}

impl Cache {
    fn insert(&mut self, url: String, entry: Cached) {
        if self.bytes + entry.body.len() > CACHE_MAX_BYTES {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += entry.body.len();
        if let Some(old) = self.entries.insert(url, entry) {
            self.bytes -= old.body.len();
        }
    }

    fn remove(&mut self, url: &str) {
        if let Some(old) = self.entries.remove(url) {
            self.bytes -= old.body.len();
        }
    }
}

/// One page of a GET.
enum Got {
    /// A body: fresh (200) or the cached one a 304 confirmed.
    Body {
        body: Bytes,
        etag: Option<String>,
        next: Option<String>,
        from_cache: bool,
    },
    /// 304 for a validator the caller brought (a persisted cursor); no body here.
    NotModified,
}

/// A whole list.
pub struct Listing {
    pub items: Vec<Value>,
    /// The first page answered 304 to the caller's validator and no body is cached: the
    /// list is as the caller last saw it.
    pub unchanged: bool,
    /// A validator the caller may persist: set only when the list was one page with room
    /// left, because only then does an unchanged first page mean an unchanged list (a new
    /// item would land on that page and change it).
    pub etag: Option<String>,
}

pub struct Api {
    http: reqwest::Client,
    /// For log downloads from storage hosts: never sees the token.
    storage: reqwest::Client,
    base: Url,
    graphql: Url,
    token: Secret,
    auth: HeaderValue,
    cache: Mutex<Cache>,
    pub limits: Limits,
    min_remaining: u64,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base.as_str())
            .field("graphql", &self.graphql.as_str())
            .field("token", &REDACTED)
            .field("min_remaining", &self.min_remaining)
            .finish_non_exhaustive()
    }
}

fn parse_base(what: &str, s: &str) -> Result<Url, GithubError> {
    let url = Url::parse(s.trim())
        .map_err(|e| GithubError::Config(format!("{what} {s:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(GithubError::Config(format!(
            "{what} {s:?} must be an http(s) URL"
        )));
    }
    Ok(url)
}

impl Api {
    pub fn new(config: &GithubConfig) -> Result<Self, GithubError> {
        let base = parse_base("api_url", &config.api_url)?;
        let graphql = parse_base("graphql_url", &config.graphql_url())?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.token.expose()))
            .map_err(|_| GithubError::Config("the token is not a valid header value".into()))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        let client = |redirects| {
            reqwest::Client::builder()
                .user_agent(config.user_agent.as_str())
                .connect_timeout(config.connect_timeout)
                .timeout(config.request_timeout)
                .redirect(redirects)
        };
        // Redirects are followed by hand: only same-origin ones keep the token.
        let http = client(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .map_err(|e| GithubError::Config(format!("cannot build the HTTP client: {e}")))?;
        let storage = client(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| GithubError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            storage,
            base,
            graphql,
            token: config.token.clone(),
            auth,
            cache: Mutex::new(Cache::default()),
            limits: Limits::default(),
            min_remaining: config.min_remaining,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `<api>/<segments…>?<query…>`, each segment percent-encoded.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // `parse_base` refused cannot-be-a-base URLs, so this always runs.
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// Removes the token from text that is about to become an error message.
    fn scrub(&self, e: ForgeError) -> ForgeError {
        let token = self.token.expose();
        if token.is_empty() {
            return e;
        }
        let clean = |s: String| s.replace(token, REDACTED);
        match e {
            ForgeError::Unavailable(s) => ForgeError::Unavailable(clean(s)),
            ForgeError::Unauthorized(s) => ForgeError::Unauthorized(clean(s)),
            ForgeError::NotFound(s) => ForgeError::NotFound(clean(s)),
            ForgeError::Rejected(s) => ForgeError::Rejected(clean(s)),
            ForgeError::Protocol(s) => ForgeError::Protocol(clean(s)),
            e @ ForgeError::RateLimited(_) => e,
        }
    }

    /// Sends one API request with the token; errors for every status from 400 up.
    async fn send(
        &self,
        method: Method,
        url: Url,
        json: Option<&Value>,
        if_none_match: Option<&str>,
        resource: &str,
    ) -> Result<Response, ForgeError> {
        self.send_with(method, url, json, if_none_match, resource, true)
            .await
    }

    /// Same-origin redirects of GETs (a renamed repository answers 301) are followed when
    /// `follow` is set; any other redirect is returned as is.
    async fn send_with(
        &self,
        method: Method,
        url: Url,
        json: Option<&Value>,
        if_none_match: Option<&str>,
        resource: &str,
        follow: bool,
    ) -> Result<Response, ForgeError> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            self.limits
                .check(resource, self.min_remaining, SystemTime::now())?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, self.auth.clone());
            if let Some(v) = if_none_match.and_then(|e| HeaderValue::from_str(e).ok()) {
                request = request.header(IF_NONE_MATCH, v);
            }
            if let Some(body) = json {
                request = request.json(body);
            }
            let response = request.send().await.map_err(error::transport)?;
            self.limits.record(response.headers());
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let target = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url.join(l).ok());
                match target {
                    Some(target)
                        if follow && self.same_origin(&target) && method == Method::GET =>
                    {
                        url = target;
                        continue;
                    }
                    _ => return Ok(response),
                }
            }
            if status.as_u16() >= 400 {
                let headers = response.headers().clone();
                let body = response.bytes().await.unwrap_or_default();
                let e = error::from_status(status.as_u16(), &headers, &body, SystemTime::now());
                tracing::debug!(%status, %url, error = %e, "GitHub refused a request");
                return Err(self.scrub(e));
            }
            return Ok(response);
        }
        Err(ForgeError::Protocol(format!(
            "more than {MAX_REDIRECTS} redirects from {}",
            url.path()
        )))
    }

    /// A write (`POST`, `PATCH`, `PUT`) with a JSON body; the answer's body.
    pub async fn write(&self, method: Method, url: Url, body: &Value) -> Result<Bytes, ForgeError> {
        let response = self.send(method, url, Some(body), None, "core").await?;
        if !response.status().is_success() {
            return Err(ForgeError::Protocol(format!(
                "unexpected HTTP {}",
                response.status()
            )));
        }
        response.bytes().await.map_err(error::transport)
    }

    /// One conditional GET: the cached validator (or the caller's, when nothing is
    /// cached) goes out as `If-None-Match`.
    async fn get_page(&self, url: &Url, hint: Option<&str>) -> Result<Got, ForgeError> {
        let key = url.as_str();
        let cached_etag = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .get(key)
            .map(|c| c.etag.clone());
        let validator = cached_etag.as_deref().or(hint);
        let response = self
            .send(Method::GET, url.clone(), None, validator, "core")
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            return match cache.entries.get(key) {
                Some(c) if Some(c.etag.as_str()) == validator => Ok(Got::Body {
                    body: c.body.clone(),
                    etag: Some(c.etag.clone()),
                    next: c.next.clone(),
                    from_cache: true,
                }),
                _ if hint.is_some() && validator == hint => Ok(Got::NotModified),
                _ => Err(ForgeError::Protocol(
                    "304 Not Modified without a cached answer".into(),
                )),
            };
        }
        if !status.is_success() {
            return Err(ForgeError::Protocol(format!("unexpected HTTP {status}")));
        }
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let next = response
            .headers()
            .get(LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(link::next);
        let body = response.bytes().await.map_err(error::transport)?;
        Ok(Got::Body {
            body,
            etag,
            next,
            from_cache: false,
        })
    }

    fn remember(&self, url: &Url, etag: Option<&str>, body: &Bytes, next: Option<&str>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match etag {
            Some(etag) => cache.insert(
                url.as_str().to_owned(),
                Cached {
                    etag: etag.to_owned(),
                    body: body.clone(),
                    next: next.map(str::to_owned),
                },
            ),
            None => cache.remove(url.as_str()),
        }
    }

    fn forget(&self, url: &Url) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(url.as_str());
    }

    /// A single resource, revalidated against the cache.
    pub async fn get(&self, url: Url) -> Result<Bytes, ForgeError> {
        match self.get_page(&url, None).await? {
            Got::Body {
                body,
                etag,
                from_cache,
                ..
            } => {
                if !from_cache {
                    self.remember(&url, etag.as_deref(), &body, None);
                }
                Ok(body)
            }
            Got::NotModified => Err(ForgeError::Protocol("304 without a validator".into())),
        }
    }

    /// Every page of a list (at most `max_items` items), following `rel="next"`.
    /// `items_key` names the array inside an envelope (`check_runs`); `None` for plain
    /// arrays. `hint` is a persisted validator for the first page.
    pub async fn list(
        &self,
        first: Url,
        items_key: Option<&str>,
        hint: Option<&str>,
        max_items: Option<usize>,
    ) -> Result<Listing, ForgeError> {
        let mut items = Vec::new();
        // GitHub's default page size is 30; callers ask for their own.
        let mut page_size = first
            .query_pairs()
            .find(|(k, _)| k == "per_page")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(30)
            .min(PER_PAGE);
        let mut url = first;
        let mut cursor_etag = None;
        for page in 0..MAX_PAGES {
            let got = self
                .get_page(&url, if page == 0 { hint } else { None })
                .await?;
            let (body, etag, next, from_cache) = match got {
                Got::NotModified => {
                    return Ok(Listing {
                        items: Vec::new(),
                        unchanged: true,
                        etag: hint.map(str::to_owned),
                    });
                }
                Got::Body {
                    body,
                    etag,
                    next,
                    from_cache,
                } => (body, etag, next, from_cache),
            };
            let value: Value =
                serde_json::from_slice(&body).map_err(|e| error::protocol("a list page", &e))?;
            let array = match items_key {
                Some(key) => value.get(key).cloned(),
                None => Some(value),
            };
            let Some(Value::Array(page_items)) = array else {
                return Err(ForgeError::Protocol(format!(
                    "expected a list{} from {}",
                    items_key.map(|k| format!(" in `{k}`")).unwrap_or_default(),
                    url.path()
                )));
            };
            // A server may page smaller than asked; a page with a next link shows its size.
            if next.is_some() && !page_items.is_empty() {
                page_size = page_size.min(page_items.len());
            }
            let full = page_items.len() >= page_size;
            if !from_cache {
                // A full last page can gain a next page without changing itself (so
                // without changing its ETag): its 304 would hide the new page.
                if next.is_some() || !full {
                    self.remember(&url, etag.as_deref(), &body, next.as_deref());
                } else {
                    self.forget(&url);
                }
            }
            if page == 0 && next.is_none() && !full {
                cursor_etag = etag;
            }
            items.extend(page_items);
            if max_items.is_some_and(|m| items.len() >= m) {
                break;
            }
            match next {
                None => {
                    return Ok(Listing {
                        items,
                        unchanged: false,
                        etag: cursor_etag,
                    });
                }
                Some(next) => {
                    let next = Url::parse(&next)
                        .map_err(|e| ForgeError::Protocol(format!("bad next link: {e}")))?;
                    if !self.same_origin(&next) {
                        return Err(ForgeError::Protocol(
                            "a next link points to another host".into(),
                        ));
                    }
                    url = next;
                }
            }
        }
        if max_items.is_some_and(|m| items.len() >= m) {
            return Ok(Listing {
                items,
                unchanged: false,
                etag: None,
            });
        }
        Err(ForgeError::Protocol(format!(
            "list longer than {MAX_PAGES} pages at {}",
            url.path()
        )))
    }

    /// A GraphQL request; the `data` of the answer. A non-empty `errors` array is an
    /// error even under HTTP 200.
    pub async fn graphql(&self, query: &str, variables: Value) -> Result<Value, ForgeError> {
        let body = serde_json::json!({ "query": query, "variables": variables });
        let response = self
            .send(
                Method::POST,
                self.graphql.clone(),
                Some(&body),
                None,
                "graphql",
            )
            .await?;
        if !response.status().is_success() {
            return Err(ForgeError::Protocol(format!(
                "unexpected HTTP {} from GraphQL",
                response.status()
            )));
        }
        let bytes = response.bytes().await.map_err(error::transport)?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| error::protocol("a GraphQL answer", &e))?;
        if let Some(errors) = value
            .get("errors")
            .and_then(Value::as_array)
            .filter(|e| !e.is_empty())
        {
            return Err(self.scrub(graphql_error(errors)));
        }
        Ok(value.get("data").cloned().unwrap_or(Value::Null))
    }

    /// The last `max_bytes` of a job's log. The API answers with a redirect to a storage
    /// host and a signed URL; that request carries no token.
    pub async fn log_tail(&self, url: Url, max_bytes: usize) -> Result<String, ForgeError> {
        // Not followed by `send`: the storage URL may share the API's origin (GitHub
        // Enterprise, the fake) and must still not receive the token.
        let response = self
            .send_with(Method::GET, url.clone(), None, None, "core", false)
            .await?;
        let status = response.status();
        let response = if status.is_redirection() {
            let target = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| ForgeError::Protocol(format!("HTTP {status} without a Location")))?;
            let response = self
                .storage
                .get(target)
                .send()
                .await
                .map_err(error::transport)?;
            let status = response.status();
            if !status.is_success() {
                let headers = response.headers().clone();
                let body = response.bytes().await.unwrap_or_default();
                return Err(self.scrub(error::from_status(
                    status.as_u16(),
                    &headers,
                    &body,
                    SystemTime::now(),
                )));
            }
            response
        } else if status.is_success() {
            response
        } else {
            return Err(ForgeError::Protocol(format!("unexpected HTTP {status}")));
        };
        let mut stream = response.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        // Keep a little more than asked, so the cut can move to a character boundary.
        let keep = max_bytes.saturating_add(4);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(error::transport)?;
            buf.extend_from_slice(&chunk);
            if buf.len() > keep.saturating_mul(2).max(64 * 1024) {
                let cut = buf.len() - keep;
                buf.drain(..cut);
            }
        }
        Ok(tail_utf8(&buf, max_bytes))
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.limits.last()
    }
}

/// The last `max` bytes of `bytes` as text, starting on a character boundary and at most
/// `max` bytes long even when invalid bytes had to be replaced.
#[must_use]
pub fn tail_utf8(bytes: &[u8], max: usize) -> String {
    let mut s = &bytes[bytes.len().saturating_sub(max)..];
    while let [b, rest @ ..] = s {
        if b & 0xC0 == 0x80 {
            s = rest;
        } else {
            break;
        }
    }
    let text = String::from_utf8_lossy(s);
    if text.len() <= max {
        return text.into_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

fn graphql_error(errors: &[Value]) -> ForgeError {
    let messages: Vec<&str> = errors
        .iter()
        .filter_map(|e| e.get("message").and_then(Value::as_str))
        .collect();
    let message = if messages.is_empty() {
        "GraphQL error".to_owned()
    } else {
        messages.join("; ")
    };
    let kinds: Vec<&str> = errors
        .iter()
        .filter_map(|e| e.get("type").and_then(Value::as_str))
        .collect();
    if kinds.contains(&"RATE_LIMITED") {
        ForgeError::RateLimited(std::time::Duration::from_secs(60))
    } else if kinds.contains(&"NOT_FOUND") {
        ForgeError::NotFound(message)
    } else {
        ForgeError::Rejected(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_cuts_on_character_boundaries() {
        assert_eq!(tail_utf8(b"hello world", 5), "world");
        assert_eq!(tail_utf8(b"hi", 5), "hi");
        assert_eq!(tail_utf8(b"", 5), "");
        assert_eq!(tail_utf8(b"abc", 0), "");
        // "é" is two bytes; cutting through it drops the orphaned half.
        assert_eq!(tail_utf8("aé".as_bytes(), 1), "");
        assert_eq!(tail_utf8("aéb".as_bytes(), 2), "b");
        assert_eq!(tail_utf8("aéb".as_bytes(), 3), "éb");
        assert_eq!(tail_utf8("x🦀".as_bytes(), 3), "");
        // Invalid bytes become U+FFFD without overflowing the limit.
        let out = tail_utf8(&[b'a', 0xff, 0xfe, b'z'], 3);
        assert!(out.len() <= 3, "{out:?}");
        assert!(out.ends_with('z'));
    }

    #[test]
    fn graphql_errors_map() {
        let e = graphql_error(&[
            serde_json::json!({"type": "NOT_FOUND", "message": "Could not resolve to a node"}),
        ]);
        assert!(matches!(e, ForgeError::NotFound(m) if m.contains("Could not resolve")));
        let e = graphql_error(&[serde_json::json!({"message": "Pull request is not a draft"})]);
        assert!(matches!(e, ForgeError::Rejected(m) if m == "Pull request is not a draft"));
        let e =
            graphql_error(&[serde_json::json!({"type": "RATE_LIMITED", "message": "slow down"})]);
        assert!(matches!(e, ForgeError::RateLimited(_)));
    }

    #[test]
    fn urls_encode_segments_and_keep_enterprise_prefixes() -> Result<(), GithubError> {
        let api = Api::new(&GithubConfig {
            api_url: "https://ghe.example/api/v3/".into(),
            ..GithubConfig::new(Secret::new("t"))
        })?;
        assert_eq!(
            api.url(&["repos", "o", "n", "commits"], &[("sha", "feature/x y")])
                .as_str(),
            "https://ghe.example/api/v3/repos/o/n/commits?sha=feature%2Fx+y"
        );
        assert_eq!(
            api.url(&["repos", "o", "a/b"], &[("content", "+1")])
                .as_str(),
            "https://ghe.example/api/v3/repos/o/a%2Fb?content=%2B1"
        );
        let public = Api::new(&GithubConfig::new(Secret::new("t")))?;
        assert_eq!(
            public.url(&["repos", "o", "n"], &[]).as_str(),
            "https://api.github.com/repos/o/n"
        );
        Ok(())
    }

    #[test]
    fn debug_never_shows_the_token() -> Result<(), GithubError> {
        let api = Api::new(&GithubConfig::new(Secret::new("ghp_topsecret")))?;
        let shown = format!("{api:?}");
        assert!(!shown.contains("ghp_topsecret"), "{shown}");
        let e = api.scrub(ForgeError::Rejected("echo ghp_topsecret back".into()));
        assert!(!e.to_string().contains("ghp_topsecret"), "{e}");
        Ok(())
    }
}

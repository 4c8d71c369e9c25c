//! Who is calling: the [`CurrentUser`] extractor (API token or session cookie, with the
//! CSRF origin check for cookies), and the login (by token or one-time link), logout and
//! `me` endpoints.

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiJson;
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use mainloop_domain::records::User;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use utoipa::ToSchema;

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "mainloop_session";

/// The authenticated user of a request. Handlers take it as their first argument so a
/// missing credential is reported before anything about the request's content.
#[derive(Clone, Debug)]
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let engine = &state.engine;
        if !state.config.auth_enabled {
            local_only(parts)?;
            let owner = engine
                .owner()
                .await?
                .ok_or_else(|| ApiError::unauthorized("there is no owner account yet"))?;
            return Ok(Self(owner));
        }
        // A bearer token is decisive even when a cookie is present too: a client that
        // sends a wrong token must hear so rather than silently act as whoever the
        // browser is signed in as. Other schemes (a reverse proxy's Basic auth) are not
        // ours to judge.
        if let Some(token) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(bearer_token)
        {
            let user = engine
                .authenticate_token(token)
                .await?
                .ok_or_else(|| ApiError::unauthorized("unknown or revoked API token"))?;
            return Ok(Self(user));
        }
        if let Some(session) = session_cookie(&parts.headers) {
            let user = engine
                .authenticate_session(&session)
                .await?
                .ok_or_else(|| {
                    ApiError::unauthorized("the session expired or was signed out; sign in again")
                })?;
            // Browsers attach cookies to cross-site requests too; only a matching
            // Origin proves the request came from our own pages.
            if changes_state(&parts.method) {
                require_same_origin(&parts.headers, &parts.uri)?;
            }
            return Ok(Self(user));
        }
        Err(ApiError::unauthorized(
            "sign in, or send `Authorization: Bearer <token>`",
        ))
    }
}

/// Without authentication the server listens on loopback only, but a web page can still
/// reach it through the browser: by DNS rebinding (a foreign host name resolving to
/// 127.0.0.1) or by a cross-site form. Refuse both.
fn local_only(parts: &Parts) -> ApiResult<()> {
    if let Some(host) = request_host(&parts.headers, &parts.uri)
        && !is_loopback_host(&host)
    {
        return Err(ApiError::forbidden(
            "authentication is off, so only requests to a loopback host name are served",
        ));
    }
    if changes_state(&parts.method) && parts.headers.contains_key(header::ORIGIN) {
        require_same_origin(&parts.headers, &parts.uri)?;
    }
    Ok(())
}

fn changes_state(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

pub(crate) fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The session token from the `Cookie` header(s), if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// Every `name=value` pair of the `Cookie` header(s).
pub(crate) fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (String, String)> + '_ {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
}

/// The non-empty value of cookie `name`, unquoted.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    cookie_pairs(headers)
        .find(|(n, value)| n == name && !value.is_empty())
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

/// The `Host` the client addressed (HTTP/2 carries it in the URI instead).
fn request_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
}

/// Requires an `Origin` whose host and port equal the request's `Host`.
fn require_same_origin(headers: &HeaderMap, uri: &Uri) -> ApiResult<()> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .ok_or_else(|| {
            ApiError::forbidden("a cookie-authenticated change needs an Origin header")
        })?;
    let host = request_host(headers, uri).ok_or_else(|| {
        ApiError::forbidden("the request has no Host to check its Origin against")
    })?;
    if same_origin(origin, &host) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "cross-origin request refused: the Origin does not match the Host",
        ))
    }
}

fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        80
    } else if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    match (
        split_host_port(authority, default_port),
        split_host_port(host, default_port),
    ) {
        (Some((oh, op)), Some((hh, hp))) => oh.eq_ignore_ascii_case(hh) && op == hp,
        _ => false,
    }
}

/// Splits `host[:port]` (IPv6 in brackets), filling in `default_port`.
fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => default_port,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((authority, default_port)),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let Some((name, _)) = split_host_port(host, 0) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Exchange an API token for a browser session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// An API token (`mlt_…`), as printed by `mainloop token`.
    #[schema(max_length = 1000)]
    pub token: String,
}

/// The signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub user: User,
}

fn session_cookie_header(value: &str, max_age_secs: u64, secure: bool) -> ApiResult<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}"
    ))
    .map_err(|e| ApiError::internal(&e))
}

/// Signs in with an API token and sets the `mainloop_session` cookie.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    operation_id = "login",
    tag = "auth",
    request_body = LoginRequest,
    security(()),
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = LoginResponse,
            headers(("set-cookie" = String, description = "`mainloop_session=…; HttpOnly; SameSite=Strict; Path=/; Max-Age=…`"))),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Wrong token", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens from this address; see `Retry-After`", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    uri: Uri,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let client = client.map(|c| c.0.0.ip());
    if let Some(refused) = admit(&state, client, &headers, &uri)? {
        return Ok(refused);
    }
    let Some((user, session, _expires)) = state.engine.login(body.token.trim()).await? else {
        state
            .logins
            .record_failure(client, std::time::Instant::now());
        return Err(ApiError::unauthorized("wrong token"));
    };
    state.logins.record_success(client);
    signed_in(&state, user, &session)
}

/// Exchange a one-time sign-in code for a browser session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkLoginRequest {
    /// The code after `#` in a sign-in link (`mll_…`), as printed by `mainloop serve`
    /// or `mainloop login-link`.
    #[schema(max_length = 1000)]
    pub code: String,
}

/// Signs in with a one-time link's code and sets the `mainloop_session` cookie. The code
/// works once, within minutes of being issued.
#[utoipa::path(
    post,
    path = "/api/auth/link",
    operation_id = "login_with_link",
    tag = "auth",
    request_body = LinkLoginRequest,
    security(()),
    responses(
        (status = 200, description = "Signed in; the session cookie is set; the code is spent", body = LoginResponse,
            headers(("set-cookie" = String, description = "`mainloop_session=…; HttpOnly; SameSite=Strict; Path=/; Max-Age=…`"))),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "The code is wrong, already used or expired", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens or codes from this address; see `Retry-After`", body = ErrorBody),
    )
)]
pub async fn login_with_link(
    State(state): State<AppState>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    uri: Uri,
    ApiJson(body): ApiJson<LinkLoginRequest>,
) -> ApiResult<Response> {
    let client = client.map(|c| c.0.0.ip());
    if let Some(refused) = admit(&state, client, &headers, &uri)? {
        return Ok(refused);
    }
    let Some((user, session, _expires)) = state.engine.sign_in_with_code(body.code.trim()).await?
    else {
        state
            .logins
            .record_failure(client, std::time::Instant::now());
        return Err(ApiError::unauthorized(
            "this sign-in link was already used, has expired or is wrong; \
             run `mainloop login-link` on the server for a new one, or sign in with a token",
        ));
    };
    state.logins.record_success(client);
    signed_in(&state, user, &session)
}

/// The checks before a sign-in attempt: same origin when the browser says where it is
/// (otherwise a foreign page could sign the browser into an account of its choosing),
/// and not too many failures from this address. `Some` is the refusal to send.
fn admit(
    state: &AppState,
    client: Option<IpAddr>,
    headers: &HeaderMap,
    uri: &Uri,
) -> ApiResult<Option<Response>> {
    if headers.contains_key(header::ORIGIN) {
        require_same_origin(headers, uri)?;
    }
    let Some(wait) = state.logins.blocked_for(client, std::time::Instant::now()) else {
        return Ok(None);
    };
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        "too many wrong tokens from this address; try again later",
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        err.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Ok(Some(err))
}

/// The reply to a successful sign-in: the user, with the session cookie.
fn signed_in(state: &AppState, user: User, session: &str) -> ApiResult<Response> {
    let max_age = state.engine.config().session_ttl.as_secs();
    let cookie = session_cookie_header(session, max_age, state.config.secure_cookies)?;
    let mut response = Json(LoginResponse { user }).into_response();
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, cookie);
    // The response carries a credential; no cache may keep it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Signs out: deletes the session and clears the cookie.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    operation_id = "logout",
    tag = "auth",
    responses(
        (status = 204, description = "Signed out; the cookie is cleared"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
    )
)]
pub async fn logout(
    _user: CurrentUser,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(session) = session_cookie(&headers) {
        state.engine.logout(&session).await?;
    }
    let cookie = session_cookie_header("", 0, state.config.secure_cookies)?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// The calling user.
#[utoipa::path(
    get,
    path = "/api/auth/me",
    operation_id = "me",
    tag = "auth",
    responses(
        (status = 200, description = "The calling user", body = User),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn me(CurrentUser(user): CurrentUser) -> Json<User> {
    Json(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_hosts_with_default_ports() {
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_origin("https://example.com", "example.com"));
        assert!(same_origin("https://example.com", "EXAMPLE.com:443"));
        assert!(same_origin("http://[::1]:3000", "[::1]:3000"));
        assert!(!same_origin("http://127.0.0.1:8081", "127.0.0.1:8080"));
        assert!(!same_origin("http://evil.example", "example.com"));
        assert!(!same_origin("null", "example.com"));
        assert!(!same_origin("ftp://example.com", "example.com"));
        assert!(!same_origin("http://a@example.com", "example.com"));
    }

    #[test]
    fn loopback_names() {
        for h in [
            "localhost:8080",
            "127.0.0.1",
            "127.1.2.3:9",
            "[::1]:80",
            "app.localhost",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["evil.example", "10.0.0.1:80", "localhost.evil.example", ""] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn credentials_are_parsed_strictly() {
        let v = HeaderValue::from_static("Bearer mlt_abc");
        assert_eq!(bearer_token(&v), Some("mlt_abc"));
        assert_eq!(bearer_token(&HeaderValue::from_static("Basic abc")), None);
        assert_eq!(bearer_token(&HeaderValue::from_static("Bearer ")), None);
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=b; mainloop_session=mls_x"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("mls_x"));
        let mut empty = HeaderMap::new();
        empty.append(
            header::COOKIE,
            HeaderValue::from_static("mainloop_session="),
        );
        assert_eq!(session_cookie(&empty), None);
    }
}

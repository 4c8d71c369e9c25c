//! One-time sign-in links (`POST /api/auth/link`): a code opens one session, once,
//! within its lifetime; wrong codes count toward the same limit as wrong tokens.

use super::{App, Cred, app, session_from};
use mainloop_engine::Engine;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

impl App {
    async fn sign_in_code(&self, ttl: Duration) -> String {
        let owner = self.engine.owner().await.unwrap().unwrap();
        self.engine.issue_sign_in_code(&owner, ttl).await.unwrap()
    }

    async fn post_link(&self, code: &str) -> Response {
        self.client
            .post(self.url("/api/auth/link"))
            .header("origin", self.origin())
            .json(&json!({ "code": code }))
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_sign_in_link_opens_one_session_once() {
    let app = app().await;
    let code = app.sign_in_code(Engine::SIGN_IN_LINK_TTL).await;
    assert!(code.starts_with("mll_") && code.len() == 4 + 43, "{code}");

    let first = app.post_link(&code).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["cache-control"], "no-store");
    let session = session_from(first.headers());
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["user"]["is_owner"], true);
    let (status, me) = app
        .call(Cred::Cookie(&session), Method::GET, "/api/auth/me", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["id"], body["user"]["id"]);

    let again = app.post_link(&code).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let err: Value = again.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unauthorized", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("already used"), "{message}");
    assert!(!message.contains(&code), "{message}");
    // The code is not an API token either.
    let (status, _) = app
        .call(Cred::Bearer(&code), Method::GET, "/api/auth/me", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn racing_uses_of_one_link_open_one_session() {
    let app = app().await;
    let code = app.sign_in_code(Engine::SIGN_IN_LINK_TTL).await;
    let statuses: Vec<StatusCode> = futures::future::join_all((0..4).map(|_| app.post_link(&code)))
        .await
        .iter()
        .map(Response::status)
        .collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn an_expired_link_is_refused() {
    let app = app().await;
    let code = app.sign_in_code(Duration::ZERO).await;
    let resp = app.post_link(&code).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_codes_count_toward_the_sign_in_limit() {
    let app = app().await;
    let good = app.sign_in_code(Engine::SIGN_IN_LINK_TTL).await;
    for _ in 0..mainloop_api::limit::MAX_FAILURES {
        let resp = app.post_link("mll_guess").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let refused = app.post_link(&good).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    // The limit is one per address, whichever way the attempts came.
    let by_token = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&json!({ "token": app.token }))
        .send()
        .await
        .unwrap();
    assert_eq!(by_token.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_link_from_another_origin_is_refused() {
    let app = app().await;
    let code = app.sign_in_code(Engine::SIGN_IN_LINK_TTL).await;
    let resp = app
        .client
        .post(app.url("/api/auth/link"))
        .header("origin", "https://evil.example")
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Refused before the code was looked at, so it still works from our own page.
    assert_eq!(app.post_link(&code).await.status(), StatusCode::OK);
}

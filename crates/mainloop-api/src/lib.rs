//! mainloop's public HTTP API: the router under `/api` (chat, tasks, inbox, notification
//! settings, projects, server-sent events, sign-in) and its OpenAPI document. Handlers
//! are thin: they authenticate, decode, call the [`Engine`] and shape the reply.

pub mod auth;
pub mod doc;
pub mod error;
pub mod extract;
pub mod limit;
pub mod mcp;
pub mod preview;
pub mod routes;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use mainloop_engine::Engine;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use auth::{CurrentUser, SESSION_COOKIE};
pub use error::{ApiError, ErrorBody};

/// `needs_you` in `GET /api/inbox` counts at most this many (clients show "999+").
pub const NEEDS_YOU_CAP: i64 = 1000;

/// Settings the binary passes in.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// When false every request acts as the owner (the binary allows that on loopback
    /// only).
    pub auth_enabled: bool,
    /// Largest accepted request body; larger ones get `413 too_large`.
    pub max_body_bytes: usize,
    /// Mark the session cookie `Secure` (the public URL is https).
    pub secure_cookies: bool,
    /// The server version, reported by `/api/health` and the OpenAPI document.
    pub version: String,
    /// How long a runner's connection may stay quiet.
    pub runner_timeouts: RunnerTimeouts,
}

/// How long a runner's connection may stay quiet before it is closed.
#[derive(Clone, Copy, Debug)]
pub struct RunnerTimeouts {
    /// For its `hello`, after the upgrade.
    pub hello: std::time::Duration,
    /// For any frame once connected (three missed heartbeats by default).
    pub silence: std::time::Duration,
}

impl Default for RunnerTimeouts {
    fn default() -> Self {
        Self {
            hello: std::time::Duration::from_secs(10),
            silence: std::time::Duration::from_secs(3 * mainloop_domain::runner::HEARTBEAT_SECS),
        }
    }
}

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub(crate) engine: Engine,
    pub(crate) config: Arc<ApiConfig>,
    /// Ends open event streams, so a graceful shutdown does not wait on them forever.
    pub(crate) shutdown: CancellationToken,
    /// Wrong sign-in tokens per client address.
    pub(crate) logins: Arc<limit::LoginLimiter>,
    openapi_json: Bytes,
}

/// The API's routes, all under `/api`, with their state. Event streams stay open until
/// the client leaves; see [`router_with_shutdown`] to end them on shutdown.
pub fn router(engine: Engine, config: ApiConfig) -> Router {
    router_with_shutdown(engine, config, CancellationToken::new())
}

/// Like [`router`], but open `/api/events` streams end when `shutdown` is cancelled
/// (axum's graceful shutdown waits for every open connection).
pub fn router_with_shutdown(
    engine: Engine,
    config: ApiConfig,
    shutdown: CancellationToken,
) -> Router {
    let mut doc = openapi();
    doc["info"]["version"] = config.version.clone().into();
    doc::set_max_chat_chars(&mut doc, engine.config().max_chat_chars);
    let openapi_json = match serde_json::to_vec(&doc) {
        Ok(json) => Bytes::from(json),
        Err(e) => {
            tracing::error!(error = %e, "could not render the OpenAPI document");
            Bytes::from_static(b"{}")
        }
    };
    let max_body_bytes = config.max_body_bytes;
    let state = AppState {
        engine,
        shutdown,
        openapi_json,
        logins: Arc::default(),
        config: Arc::new(config),
    };
    use routes::{chat, events, health, inbox, notifications, projects, tasks};
    let api = Router::new()
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi_json_handler))
        .route("/auth/login", post(auth::login))
        .route("/auth/link", post(auth::login_with_link))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route("/chat", post(chat::post_chat))
        .route("/chat/messages", get(chat::messages))
        .route("/model", get(routes::model::get))
        .route("/agents", get(routes::agents::list))
        .route("/system", get(routes::system::get))
        .route("/tasks", get(tasks::list).post(tasks::create))
        .route("/tasks/{id}", get(tasks::get))
        .route("/tasks/{id}/answers", post(tasks::answers))
        .route("/tasks/{id}/plan", post(tasks::plan))
        .route("/tasks/{id}/review", post(tasks::review))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/tasks/{id}/retry", post(tasks::retry))
        .route("/tasks/{id}/transcript", get(tasks::transcript))
        .route("/tasks/{id}/diff", get(tasks::diff))
        .route("/tasks/{id}/plans", get(tasks::plans))
        .route("/tasks/{id}/budget", post(routes::usage::answer_budget))
        .route(
            "/tasks/{id}/preview",
            post(routes::preview::open).delete(routes::preview::stop),
        )
        .route("/usage", get(routes::usage::usage))
        .route(
            "/budgets",
            get(routes::usage::get_budgets).put(routes::usage::set_budgets),
        )
        .route(
            "/pause",
            get(routes::usage::get_pause).post(routes::usage::pause),
        )
        .route("/resume", post(routes::usage::resume))
        .route("/inbox", get(inbox::list))
        .route("/inbox/{id}/read", post(inbox::mark_read))
        .route("/notifications", get(notifications::get))
        .route("/notifications/push", post(notifications::register_push))
        .route(
            "/notifications/push/{id}",
            delete(notifications::delete_push),
        )
        .route("/notifications/ntfy", put(notifications::set_ntfy))
        .route("/notifications/test", post(notifications::test))
        .route("/projects", get(projects::list))
        .route("/projects/{id}", get(projects::get))
        .route("/search", get(routes::search::search))
        .route(
            "/notes",
            get(routes::notes::list).post(routes::notes::create),
        )
        .route(
            "/notes/{id}",
            put(routes::notes::update).delete(routes::notes::delete),
        )
        .route(
            "/runners",
            get(routes::runners::list).post(routes::runners::create),
        )
        .route("/runners/connect", get(routes::runners::connect))
        .route("/runners/{id}", delete(routes::runners::revoke))
        // Git clients, not JSON ones: outside the OpenAPI document (docs/RUNNERS.md).
        .route(
            "/runners/git/{task_id}/info/refs",
            get(routes::runner_git::info_refs),
        )
        .route(
            "/runners/git/{task_id}/git-upload-pack",
            post(routes::runner_git::upload_pack),
        )
        .route(
            "/runners/git/{task_id}/git-receive-pack",
            post(routes::runner_git::receive_pack),
        )
        // The agent state a runner keeps here, for runners only: outside the OpenAPI
        // document like the git routes (docs/RUNNERS.md).
        .route(
            "/runners/state/{task_id}",
            get(routes::runner_state::get).put(routes::runner_state::put),
        )
        .route("/digests", get(routes::digests::list))
        .route("/digests/{id}", get(routes::digests::get))
        .route(
            "/settings/time-zone",
            get(routes::digests::get_time_zone).put(routes::digests::set_time_zone),
        )
        .route("/events", get(events::events))
        .route("/webhooks/github", post(routes::webhooks::github))
        .nest_service("/mcp", mcp::service(&state))
        // Nested, so the JSON 404 covers `/api/*` only and the binary stays free to
        // serve the web app from its own fallback.
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes));
    Router::new()
        .nest("/api", api)
        // The nested fallback misses `/api/` itself (where clients that normalise a
        // path like `/api/tasks/..` land); it gets the same JSON 404.
        .route("/api/", any(unknown_route))
        .with_state(state)
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("no such API route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi_document",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
async fn openapi_json_handler(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json,
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mainloop",
        description = "One conversation with an AI that runs parallel coding workers, and one inbox for what needs you.\n\nAuthenticate with `Authorization: Bearer <api token>`, or sign in (`POST /api/auth/login`) for the `mainloop_session` cookie; cookie-authenticated POSTs need an `Origin` matching the `Host`. Errors are `{\"error\":{\"code\",\"message\"}}`.\n\n`/api/mcp` is not a REST operation: it is an MCP server (Streamable HTTP, stateless) offering the same actions as tools to MCP clients, authenticated the same way; see docs/MCP.md."
    ),
    paths(
        routes::health::health,
        openapi_json_handler,
        auth::login,
        auth::login_with_link,
        auth::logout,
        auth::me,
        routes::chat::post_chat,
        routes::chat::messages,
        routes::model::get,
        routes::agents::list,
        routes::system::get,
        routes::tasks::list,
        routes::tasks::create,
        routes::tasks::get,
        routes::tasks::answers,
        routes::tasks::plan,
        routes::tasks::review,
        routes::tasks::cancel,
        routes::tasks::retry,
        routes::tasks::transcript,
        routes::tasks::diff,
        routes::tasks::plans,
        routes::usage::answer_budget,
        routes::preview::open,
        routes::preview::stop,
        routes::usage::usage,
        routes::usage::get_budgets,
        routes::usage::set_budgets,
        routes::usage::get_pause,
        routes::usage::pause,
        routes::usage::resume,
        routes::inbox::list,
        routes::inbox::mark_read,
        routes::notifications::get,
        routes::notifications::register_push,
        routes::notifications::delete_push,
        routes::notifications::set_ntfy,
        routes::notifications::test,
        routes::projects::list,
        routes::projects::get,
        routes::search::search,
        routes::notes::list,
        routes::notes::create,
        routes::notes::update,
        routes::notes::delete,
        routes::runners::list,
        routes::runners::create,
        routes::runners::revoke,
        routes::runners::connect,
        routes::digests::list,
        routes::digests::get,
        routes::digests::get_time_zone,
        routes::digests::set_time_zone,
        routes::events::events,
        routes::webhooks::github,
    ),
    components(schemas(
        ErrorBody,
        mainloop_domain::records::Event,
        mainloop_domain::event::EventName,
        mainloop_domain::records::ChatDelta,
        mainloop_domain::records::ChatError,
        mainloop_domain::records::ChatMessage,
        mainloop_domain::records::InboxItem,
        mainloop_domain::transcript::TranscriptRecord,
        routes::usage::UsageUpdated,
        routes::notes::NoteList,
        mainloop_domain::runner::RunnerMessage,
        mainloop_domain::runner::ServerMessage,
    )),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("cookie" = [])),
    tags(
        (name = "meta", description = "Health, what mainloop holds on disk, and this document"),
        (name = "auth", description = "Sign-in for browsers"),
        (name = "chat", description = "The main thread"),
        (name = "tasks", description = "Worker tasks and the human's decisions"),
        (name = "inbox", description = "What needs you"),
        (name = "usage", description = "Spending, budgets, and pausing all work"),
        (name = "notifications", description = "Web Push subscriptions and ntfy"),
        (name = "projects", description = "Repositories tasks work in"),
        (name = "search", description = "Searching the user's history"),
        (name = "notes", description = "Notes and decisions in every main-thread context"),
        (name = "runners", description = "Machines that connect out to this server to run agents, and their tokens"),
        (name = "digests", description = "Day, week and month digests, and the time zone whose midnights end the user's days"),
        (name = "events", description = "Live updates as server-sent events"),
        (name = "webhooks", description = "Deliveries from GitHub, verified by signature"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (`mlt_…`), from `mainloop token`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The browser session from `POST /api/auth/login`",
            ))),
        );
    }
}

/// The OpenAPI document served at `/api/openapi.json` (with the server's version and
/// limits filled in there).
#[must_use]
pub fn openapi() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    doc::refine(&mut doc);
    doc
}

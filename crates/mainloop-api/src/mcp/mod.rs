//! The MCP server at `/api/mcp` (Streamable HTTP, through the official Rust SDK `rmcp`):
//! mainloop's tools for any MCP client, each call authenticated like the rest of the API
//! and scoped to the calling user.
//!
//! It runs stateless: every POST stands alone (protocol `2026-07-28` clients start with
//! `server/discover`; older ones with `initialize`, which is answered without a session),
//! so a restarted server or several server processes serve a client without it having to
//! reconnect. A GET for a server-to-client stream gets 405, as the transport allows: the
//! server sends nothing unasked.

mod bounded;
mod calls;
pub mod catalog;

use crate::AppState;
use crate::auth::CurrentUser;
use axum::extract::Request;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use mainloop_domain::UserId;
use mainloop_engine::Engine;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use std::sync::Arc;
use tower::Layer;

/// The `_meta` key under which Claude Code passes the model's `tool_use` id.
pub const TOOL_USE_ID_META: &str = "claudecode/toolUseId";

const INSTRUCTIONS: &str = "mainloop runs coding workers for the user. Start one with \
    spawn_task once the user has confirmed; follow it with get_task, get_transcript and \
    get_diff; get_inbox says what needs the user (questions, plans, finished work), and \
    answer_questions, decide_plan and review_task carry out the user's decisions.";

/// The user a request authenticated as, put in the request's extensions by the auth layer.
#[derive(Clone, Copy, Debug)]
struct Caller(UserId);

/// The `/api/mcp` service: the auth layer (a missing or wrong credential is the API's
/// JSON 401 before any MCP processing) in front of the rmcp Streamable HTTP service.
pub(crate) fn service(
    state: &AppState,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let engine = state.engine.clone();
    let version = state.config.version.clone();
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(state.config.max_body_bytes)
        .with_cancellation_token(state.shutdown.child_token())
        // rmcp's Host check guards servers that trust whoever reaches them against DNS
        // rebinding: a foreign page whose name resolves to 127.0.0.1 gets the browser
        // to call the local server. Here every request must carry an API token (which
        // such a page does not have) or a session cookie with a same-origin check, and
        // with authentication off the auth layer refuses any non-loopback Host already.
        // The default loopback-only list would only break servers reached by a DNS
        // name or a non-loopback address.
        .disable_allowed_hosts();
    let mcp = StreamableHttpService::new(
        move || {
            Ok(McpServer {
                engine: engine.clone(),
                version: version.clone(),
            })
        },
        Arc::new(NeverSessionManager::default()),
        config,
    );
    from_fn_with_state(state.clone(), authenticate).layer(mcp)
}

async fn authenticate(
    CurrentUser(user): CurrentUser,
    mut request: Request,
    next: Next,
) -> Response {
    request.extensions_mut().insert(Caller(user.id));
    next.run(request).await
}

/// One request's MCP server (rmcp makes one per request in stateless mode).
#[derive(Clone, Debug)]
struct McpServer {
    engine: Engine,
    version: String,
}

impl McpServer {
    fn caller(context: &RequestContext<RoleServer>) -> Result<UserId, ErrorData> {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .map(|c| c.0)
            .ok_or_else(|| {
                tracing::error!("an MCP request reached the server without an authenticated user");
                ErrorData::internal_error("the request is not authenticated", None)
            })
    }
}

/// The caller's id for this call (Claude Code sends the model's `tool_use` id), from
/// the request's `_meta`; blank ids count as none.
fn tool_use_id<'a>(
    context: &'a RequestContext<RoleServer>,
    request: &'a CallToolRequestParams,
) -> Option<&'a str> {
    let from = |meta: &'a rmcp::model::RequestMetaObject| {
        meta.get(TOOL_USE_ID_META)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|id| !id.is_empty())
    };
    from(&context.meta).or_else(|| request.meta.as_ref().and_then(from))
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mainloop", &self.version).with_title("mainloop"))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(catalog::tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let user = Self::caller(&context)?;
        let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        let id = tool_use_id(&context, &request);
        let Some(outcome) = calls::call(&self.engine, user, id, &request.name, arguments).await
        else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool '{}'", request.name),
                None,
            ));
        };
        let content = vec![ContentBlock::text(outcome.text)];
        Ok(if outcome.is_error {
            CallToolResult::error(content)
        } else {
            CallToolResult::success(content)
        }
        .into())
    }
}

//! `mainloop mcp`: mainloop's MCP tools served on stdin/stdout for clients that only
//! speak stdio, forwarded to a server's `/api/mcp`.
//!
//! Two halves of the official SDK, back to back: an MCP server on stdio, whose tool
//! list and tool calls are those of an MCP client connected to the server over
//! Streamable HTTP. Each side negotiates its own protocol version and transport rules
//! (the stdio client may speak any version rmcp knows; the HTTP side uses the server's
//! newest), which a line-by-line relay of JSON-RPC would have to reimplement. A call's
//! own `_meta` (Claude Code's `claudecode/toolUseId`, which makes a replayed call read
//! back its first result) travels with it. Stdout carries MCP only; logs go to stderr.

use anyhow::Context as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig, Implementation,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, RequestMetaObject,
    ServerCapabilities, ServerConfig, ServerPeerInfo,
};
use rmcp::service::{Peer, RequestContext, RoleClient, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{
    ClientLifecycleMode, ClientServiceExt, ErrorData, RoleServer, ServerHandler, ServiceExt,
};
use tokio::io::{AsyncRead, AsyncWrite};

/// `_meta` keys of the protocol itself: each side of the bridge sends its own.
const PROTOCOL_META_PREFIX: &str = "io.modelcontextprotocol/";

/// Serves MCP on stdin/stdout for the server at `server` (its base URL, or its
/// `/api/mcp` URL), authenticating with the API token `token`.
///
/// # Errors
/// The server cannot be reached or refuses the token, or stdio fails.
pub async fn run(server: &str, token: &str) -> anyhow::Result<()> {
    let (stdin, stdout) = rmcp::transport::stdio();
    serve(server, token, stdin, stdout).await
}

/// [`run`] over any byte streams (tests use in-memory pipes).
///
/// # Errors
/// As [`run`].
pub async fn serve<R, W>(server: &str, token: &str, input: R, output: W) -> anyhow::Result<()>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    // reqwest is built without a crypto provider of its own; use the one the rest of
    // the binary's TLS already uses. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = endpoint(server)?;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.clone()).auth_header(token.trim()),
    );
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("mainloop-mcp", env!("CARGO_PKG_VERSION")),
    );
    let upstream = client
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Auto {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                legacy_version: Some(ProtocolVersion::V_2025_11_25),
            },
        )
        .await
        .with_context(|| {
            format!(
                "could not connect to {url}: check the server URL, and that the token is a \
                 valid API token (`mainloop token`)"
            )
        })?;
    tracing::info!(%url, "forwarding MCP from stdio");
    let info = upstream.peer().peer_info().map(|i| (*i).clone());
    let bridge = Bridge {
        upstream: upstream.peer().clone(),
        info,
    };
    let served = bridge
        .serve((input, output))
        .await
        .context("the MCP client on stdio did not complete its handshake")?;
    let ended = served.waiting().await;
    let _ = upstream.cancel().await;
    ended.context("serving MCP on stdio")?;
    Ok(())
}

/// The server's `/api/mcp` URL from what the user gave: a base URL (with or without a
/// trailing slash) or the endpoint itself.
fn endpoint(server: &str) -> anyhow::Result<String> {
    let base = server.trim().trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        anyhow::bail!("the server must be an http:// or https:// URL, not '{server}'");
    }
    Ok(if base.ends_with("/api/mcp") {
        base.to_owned()
    } else {
        format!("{base}/api/mcp")
    })
}

/// A call's `_meta` without the protocol's own keys and progress token (the HTTP side
/// sends its own; this side does not relay progress).
fn forwarded_meta(meta: &RequestMetaObject) -> Option<RequestMetaObject> {
    let mut kept = RequestMetaObject::new();
    for (key, value) in meta.iter() {
        if !key.starts_with(PROTOCOL_META_PREFIX) && key != "progressToken" {
            kept.0.insert(key.clone(), value.clone());
        }
    }
    (!kept.is_empty()).then_some(kept)
}

/// An upstream failure as the stdio client sees it: the server's own JSON-RPC errors
/// as they were, anything else as the server being out of reach.
fn upstream_error(e: ServiceError) -> ErrorData {
    match e {
        ServiceError::McpError(e) => e,
        other => {
            tracing::warn!(error = %other, "the mainloop server did not answer");
            ErrorData::internal_error(format!("the mainloop server did not answer: {other}"), None)
        }
    }
}

#[derive(Clone)]
struct Bridge {
    upstream: Peer<RoleClient>,
    /// What the server said about itself when the bridge connected.
    info: Option<ServerPeerInfo>,
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        let upstream = self.info.clone();
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mainloop", env!("CARGO_PKG_VERSION")));
        if let Some(upstream) = upstream {
            if let Some(server) = upstream.server_info {
                info = info.with_server_info(server);
            }
            if let Some(text) = upstream.instructions {
                info = info.with_instructions(text);
            }
        }
        info
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.upstream
            .list_tools(request)
            .await
            .map_err(upstream_error)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let mut call = CallToolRequestParams::new(request.name.clone());
        if let Some(arguments) = request.arguments.clone() {
            call = call.with_arguments(arguments);
        }
        call.meta = forwarded_meta(&context.meta)
            .or_else(|| request.meta.as_ref().and_then(forwarded_meta));
        self.upstream
            .call_tool(call)
            .await
            .map(Into::into)
            .map_err(upstream_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("http://h:1").unwrap(), "http://h:1/api/mcp");
        assert_eq!(endpoint(" https://h/ ").unwrap(), "https://h/api/mcp");
        assert_eq!(endpoint("https://h/api/mcp/").unwrap(), "https://h/api/mcp");
        assert!(endpoint("h:1").is_err());
    }

    #[test]
    fn only_the_callers_own_meta_is_forwarded() {
        let mut meta = RequestMetaObject::new();
        meta.0
            .insert("claudecode/toolUseId".into(), json!("toolu_1"));
        meta.0.insert(
            "io.modelcontextprotocol/protocolVersion".into(),
            json!("2026-07-28"),
        );
        meta.0.insert("progressToken".into(), json!(3));
        let kept = forwarded_meta(&meta).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept["claudecode/toolUseId"], "toolu_1");
        assert!(forwarded_meta(&RequestMetaObject::new()).is_none());
    }
}

//! The MCP front: Conductorio as an MCP server to AI applications, over Streamable HTTP at `/mcp` and
//! over stdio (`orchestrator --stdio`), with the official Rust SDK (`rmcp`). It translates MCP to the
//! gateway's one call path and back; it never decides or records anything itself.
//!
//! # Sessions, handles and workflows
//! An agent's calls belong to one workflow whatever protocol era its client speaks (SPEC §9.7).
//! The workflow starts, ad hoc, at the first `tools/call` (its caller is the identity the request's
//! bearer token proves, see `crate::auth`, with `clientInfo.name` and, in a session, a keyed hash of
//! the session as labels), so policies such as "process_data after validate_data" hold across calls.
//!
//! - **Session era** (`initialize`, `Mcp-Session-Id`): each session is one workflow; it belongs to
//!   the identity that opened it.
//! - **Session-free era** (2026-07-28): a call without a handle goes to its identity's current
//!   ad-hoc workflow (one per identity and client name, found in the state: `mcp.session_free_workflow`
//!   `identity`, or `per_call`); a call that passes a workflow handle (`handle`: sealed, bound to the
//!   identity, in the argument `conductorio_workflow` that every tool listed to such a client gains
//!   and that is removed before anything records or forwards the call) goes to the handle's
//!   workflow. Every result carries the handle in `_meta`, and a refusal says how to keep the
//!   workflow.
//! - **Binding to a template.** Call the tool `conductor_start_workflow` with `{"template": NAME,
//!   "input": {...}}`: it starts a workflow of that template (its tools then only in its order),
//!   bound to the session or reached by its handle. Without `template` it starts a fresh ad-hoc
//!   workflow. Either way the new workflow carries the flow labels of the workflow the caller was in:
//!   starting over sheds no label. `conductor_end_workflow` ends the caller's workflow.
//! - **Naming a workflow by id**, the older way: `_meta["io.conductorio/workflowId"]` (every result
//!   carries it) or the HTTP header `X-Conductor-Workflow`, for the workflow's owner.
//!
//! # Results
//! A refused call is a tool result with `isError: true`: its text names every blocking rule (id, kind,
//! message) and what to do first; `structuredContent` holds the violations. A tool's own failure is
//! `isError: true` with its code, message and details. A call at an approval gate waits; when the
//! request carries a `progressToken`, progress notifications give the approval id and the command
//! (`conductorctl approve <id>`) until a person decides, then the call returns.
//!
//! # Protocol eras
//! Both eras `rmcp` 3.11 serves: the `initialize` handshake (2024-11-05 … 2025-11-25; HTTP sessions
//! with `Mcp-Session-Id`, kept by this front itself so that an idle session costs a few hundred
//! bytes, see `streamable`) and the handshake-free 2026-07-28 era (`server/discover`, per-request
//! `_meta`, served by the SDK).
//!
//! # HTTP security
//! Every request is authenticated first (`crate::auth::http`: 401 with `WWW-Authenticate`, the RFC 9728
//! metadata at `/.well-known/oauth-protected-resource`, 400 for more than one `Authorization`
//! header). A session belongs to the identity that opened it and is kept, with that binding, in one
//! bounded table (`sessions`): past `listen.http_limits.max_sessions` (or an identity's
//! `max_sessions_per_identity`) a new `initialize` is refused, and a session, or an identity, holds
//! only so many standalone `GET` streams, so no caller can evict another's session or take the
//! listener's connections.
//! `Host` must be loopback or listed in `mcp.allowed_hosts` (DNS rebinding); a request with an `Origin`
//! that is neither loopback nor listed in `mcp.allowed_origins` gets 403 with the fix in the body.
//! A body that is not JSON gets a JSON-RPC `-32700` error, one that is not a JSON-RPC message `-32600`,
//! an unknown method `-32601`; none of them affects other sessions.
//!
//! # Desktop clients (stdio)
//! A desktop MCP client starts the orchestrator itself and talks over its stdin/stdout; logs go to
//! stderr. It still serves gRPC (for `conductorctl approve`) and HTTP on the configured addresses, so
//! give it its own addresses and audit directory when an orchestrator daemon also runs:
//!
//! ```json
//! {
//!   "mcpServers": {
//!     "conductorio": {
//!       "command": "/path/to/target/debug/orchestrator",
//!       "args": ["--stdio", "--config", "/path/to/config/config.json",
//!                "--listen", "127.0.0.1:50151", "--http", "127.0.0.1:8181",
//!                "--audit-dir", "/path/to/audit_logs_desktop"]
//!     }
//!   }
//! }
//! ```
//!
//! Clients that speak Streamable HTTP use `{"url": "http://127.0.0.1:8080/mcp"}` against the daemon.

mod answer;
mod fast;
mod frames;
mod handle;
mod handler;
mod offered;
mod origin;
mod reply;
mod sessions;
mod streamable;
mod waiting;

pub use handle::{HANDLE_ARGUMENT, HANDLE_META_KEY, HandleKey};
pub use handler::{
    ConductorMcp, END_WORKFLOW_TOOL, Front, FrontShared, START_WORKFLOW_TOOL, WORKFLOW_HEADER,
    WORKFLOW_META_KEY,
};
pub use origin::origin_allowed;
pub use reply::denial_text;

use crate::error::Error;
use crate::gateway::Gateway;
use axum::Router;
use rmcp::ErrorData;
use rmcp::ServiceExt;
use rmcp::model::ErrorCode;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use std::future::Future;
use std::sync::Arc;

/// The largest request body `/mcp` reads (the SDK's own limit; larger bodies get 413).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The header naming a request's session.
const SESSION_HEADER: &str = "mcp-session-id";
/// The header naming a request's protocol version.
const VERSION_HEADER: &str = "mcp-protocol-version";

/// `/mcp`: the Streamable HTTP front, behind the `Origin` check and authentication. Sessions (the
/// `initialize` eras) are served by `streamable`, each with its own handler, hence its own workflow;
/// the session-free era by the SDK's service. With a `forwarder` (a node on the PostgreSQL store),
/// a standby passes every request that passed the `Host` and `Origin` checks on to the active node.
pub fn router(
    gateway: Gateway,
    forwarder: Option<Arc<crate::cluster::forward::Forwarder>>,
) -> Router {
    let config = gateway.config();
    let hosts = Arc::new(crate::host::served_hosts(&config.mcp.allowed_hosts));
    // The SDK serves only what the session layer hands it, the session-free (2026-07-28) era, and
    // it can open no session of its own: legacy session mode off, and a session manager that
    // refuses every session. Every session is `streamable`'s, with its owner and its limits.
    // Session-free requests get a JSON answer when nothing precedes it.
    let settings = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts.iter().cloned())
        .with_legacy_session_mode(false)
        .with_json_response(true);
    let handlers = gateway.clone();
    let shared = FrontShared::new(gateway.inner.handle_key.clone());
    // The servers' resource updates, to the sessions subscribed to them.
    tokio::spawn(FrontShared::relay_updates(
        Arc::downgrade(&shared),
        gateway.inner.downstream.updates.subscribe(),
    ));
    let per_request = Arc::clone(&shared);
    let auth = crate::auth::http::HttpAuth::new(gateway.clone());
    // A session nobody talks to for `mcp.session_idle_timeout` ends as a DELETE would: its handler
    // is dropped, so its ad-hoc workflow completes and its approvals expire; memory stays bounded.
    let sessions = Arc::new(streamable::SessionFront {
        sessions: sessions::Sessions::start(
            gateway.clone(),
            config.listen.http_limits,
            config.mcp.session_idle_timeout,
        ),
        gateway: gateway.clone(),
        shared,
    });
    // Shared, not cloned: the SDK's service clones its whole configuration on every call, and each
    // middleware layer clones the service below it per request.
    let service = Arc::new(StreamableHttpService::new(
        move || {
            Ok(ConductorMcp::new(
                handlers.clone(),
                Front::Http,
                Arc::clone(&per_request),
            ))
        },
        Arc::new(NeverSessionManager::default()),
        settings,
    ));
    let mcp = axum::routing::any(move |request: axum::extract::Request| {
        let service = Arc::clone(&service);
        async move { service.handle(request).await }
    });
    let metadata = Router::new()
        .route(
            crate::auth::http::METADATA_PATH,
            axum::routing::get(crate::auth::http::metadata),
        )
        .route(
            &format!("{}/mcp", crate::auth::http::METADATA_PATH),
            axum::routing::get(crate::auth::http::metadata),
        )
        .with_state(auth.clone());
    Router::new()
        .route("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            streamable::serve,
        ))
        .layer(axum::middleware::from_fn_with_state(
            frames::body_limit(config.arguments.max_bytes),
            frames::json_rpc_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::http::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            forwarder,
            crate::cluster::forward::forward_mcp,
        ))
        .layer(axum::middleware::from_fn_with_state(
            gateway,
            origin::check_origin,
        ))
        .layer(axum::middleware::from_fn_with_state(
            hosts,
            crate::host::check_host,
        ))
        .merge(metadata)
}

/// Serves one MCP session over stdin/stdout until the client closes it or `shutdown` resolves.
pub async fn serve_stdio(
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> Result<(), std::io::Error> {
    let shared = FrontShared::new(gateway.inner.handle_key.clone());
    let handler = ConductorMcp::new(gateway, Front::Stdio, shared);
    tokio::pin!(shutdown);
    let running = tokio::select! {
        running = handler.serve(rmcp::transport::stdio()) => running.map_err(std::io::Error::other)?,
        () = &mut shutdown => return Ok(()),
    };
    let stop = running.cancellation_token();
    let ended = running.waiting();
    tokio::pin!(ended);
    tokio::select! {
        ended = &mut ended => {
            ended.map_err(std::io::Error::other)?;
        }
        () = &mut shutdown => {
            stop.cancel();
            let _ = ended.await;
        }
    }
    Ok(())
}

/// The one mapping from the orchestrator's errors to MCP protocol errors (JSON-RPC codes). Most call
/// errors reach the model as tool results instead (see `reply::error`).
impl From<Error> for ErrorData {
    fn from(error: Error) -> Self {
        // A server's own JSON-RPC error goes on as it gave it (the SDK maps a resource not found
        // to what the client's era says).
        if let Error::ServerError {
            code,
            message,
            data,
            ..
        } = error
        {
            return ErrorData::new(ErrorCode(code), message, data.map(|data| *data));
        }
        let code = match &error {
            Error::UnknownTool { .. }
            | Error::UnknownTemplate { .. }
            | Error::InvalidArgument(_)
            | Error::Config(_) => ErrorCode::INVALID_PARAMS,
            Error::WorkflowNotFound(_) | Error::ApprovalNotFound(_) => {
                ErrorCode::RESOURCE_NOT_FOUND
            }
            Error::WorkflowFinished { .. }
            | Error::ApprovalDecided { .. }
            | Error::ApprovalMismatch(_)
            | Error::Unauthenticated(_)
            | Error::PermissionDenied(_) => ErrorCode::INVALID_REQUEST,
            Error::Unavailable { .. }
            | Error::DeadlineExceeded { .. }
            | Error::Cancelled { .. }
            | Error::Downstream { .. }
            | Error::ServerError { .. }
            | Error::Audit(_)
            | Error::Internal(_)
            | Error::ShuttingDown => ErrorCode::INTERNAL_ERROR,
        };
        ErrorData::new(code, error.to_string(), None)
    }
}

//! The orchestrator's HTTP listener: Prometheus `/metrics`, a liveness probe (`/healthz`), and the MCP
//! Streamable HTTP front at `/mcp` (see [`crate::mcp`]).
//!
//! Nagle is turned off on every accepted connection: without it, small responses wait ~40 ms for the
//! peer's delayed ACK. On shutdown, open event streams (MCP's SSE) are ended, or a graceful shutdown
//! would wait for them forever.

use crate::gateway::Gateway;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use futures::StreamExt;
use std::future::Future;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The routes served on the HTTP listener.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(gateway.clone())
        .merge(crate::mcp::router(gateway))
}

async fn metrics(State(gateway): State<Gateway>) -> impl IntoResponse {
    let status = gateway.status(0);
    let extra = [
        (
            "conductor_workflows_active",
            "Workflows running or waiting for approval.",
            f64::from(status.active_workflows),
        ),
        (
            "conductor_approvals_pending",
            "Approval requests waiting for a decision.",
            f64::from(status.pending_approvals),
        ),
        (
            "conductor_audit_last_seq",
            "Sequence number of the last durable audit record.",
            status.last_seq as f64,
        ),
        (
            "conductor_audit_writable",
            "1 while the audit log can be written; 0 while it cannot (new calls are refused).",
            if status.audit.unwritable.is_none() {
                1.0
            } else {
                0.0
            },
        ),
        (
            "conductor_audit_queued",
            "Audit records queued and not yet durable (the backlog of a log that cannot be written).",
            status.audit.queued as f64,
        ),
    ];
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gateway.metrics().render_prometheus(&extra),
    )
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let stopping = CancellationToken::new();
    let router = router.layer(axum::middleware::map_response({
        let stopping = stopping.clone();
        move |response: Response| {
            let stopping = stopping.clone();
            async move { end_streams_on(stopping, response) }
        }
    }));
    let shutdown = async move {
        shutdown.await;
        stopping.cancel();
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Makes an event stream end when the server stops; other responses are left as they are.
fn end_streams_on(stopping: CancellationToken, response: Response) -> Response {
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_stream {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = Body::from_stream(
        body.into_data_stream()
            .take_until(stopping.cancelled_owned()),
    );
    Response::from_parts(parts, body)
}

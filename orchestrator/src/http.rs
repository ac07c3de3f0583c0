//! The orchestrator's HTTP listener: Prometheus `/metrics`, a liveness probe (`/healthz`), and the MCP
//! Streamable HTTP front at `/mcp` (see [`crate::mcp`]).
//!
//! The listener resists slow and abusive clients: a connection limit, header and body read time-outs,
//! an idle time-out and the 4 MiB body limit (see [`HttpLimits`]); `/metrics` and `/healthz` get the
//! same `Host` check as `/mcp` (DNS rebinding). Event streams outlive the idle time-out (they send
//! keep-alives), so the MCP front bounds how many one session and one identity may hold, below
//! `max_connections`: no one identity can take every connection and leave `/healthz` unanswered.
//!
//! With `listen.tls` every connection is TLS (the handshake in the connection's own task, bounded by
//! `crate::tls::HANDSHAKE_TIMEOUT`); a verified client certificate goes into each of the
//! connection's requests as a [`PeerCertificate`] for `crate::auth`.
//!
//! Nagle is turned off on every accepted connection: without it, small responses wait ~40 ms for the
//! peer's delayed ACK. On shutdown, open event streams (MCP's SSE) are ended, or a graceful shutdown
//! would wait for them forever.

use crate::cluster::forward::Forwarder;
use crate::config::HttpLimits;
use crate::gateway::Gateway;
use crate::tls::PeerCertificate;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The routes served on the HTTP listener; with a `forwarder` (a node on the PostgreSQL store),
/// `/mcp` goes to the active node while this node is a standby.
pub fn router(gateway: Gateway, forwarder: Option<Arc<Forwarder>>) -> Router {
    let mcp = crate::mcp::router(gateway.clone(), forwarder);
    Router::new()
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            crate::auth::http::metrics_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(crate::host::served_hosts(
                &gateway.config().mcp.allowed_hosts,
            )),
            crate::host::check_host,
        ))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(gateway.clone())
        .merge(crate::cluster::health::router(gateway))
        .merge(mcp)
}

async fn metrics(State(gateway): State<Gateway>) -> impl IntoResponse {
    let status = gateway.status(0);
    let standby = gateway.standby();
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
            "conductor_mcp_sessions",
            "Streamable HTTP MCP sessions open (each ends with a DELETE or after mcp.session_idle_timeout).",
            gateway.metrics().mcp_sessions() as f64,
        ),
        (
            "conductor_audit_queued",
            "Audit records queued and not yet durable (the backlog of a log that cannot be written).",
            status.audit.queued as f64,
        ),
        (
            "conductor_standby",
            "1 on a warm standby (it follows the active node and serves reads), 0 on the active node.",
            f64::from(u8::from(standby.is_some())),
        ),
        (
            "conductor_standby_lag_records",
            "On a standby, audit records the active node committed that are not yet applied here.",
            standby.as_ref().map_or(0.0, |s| s.lag_records as f64),
        ),
    ];
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = gateway.metrics().render_prometheus(&extra)
                + &crate::metrics::render_downstream(&status.downstream);
            gateway
                .metrics()
                .operation_durations
                .render_prometheus(&mut text);
            crate::telemetry::render_prometheus(&mut text);
            text
        },
    )
}

/// Serves `router` on `listener` until `shutdown` resolves, within `limits`: at most
/// `max_connections` at once (further ones wait in the kernel's backlog), headers and bodies that must
/// arrive in time, and idle connections closed. With `tls`, every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = CancellationToken::new();
    let router = router
        .layer(axum::middleware::map_response({
            let stopping = stopping.clone();
            move |response: Response| {
                let stopping = stopping.clone();
                async move { end_streams_on(stopping, response) }
            }
        }))
        .layer(axum::middleware::from_fn_with_state(
            limits.body_timeout,
            read_body_within,
        ));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    // Out of descriptors or similar: give the system a moment instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (io, activity) = Watched::new(tcp);
        let watcher = graceful.watcher();
        let (router, tls) = (router.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Some(acceptor) = tls else {
                return serve_connection(io, peer, router, None, &limits, watcher, activity).await;
            };
            let Some(io) = crate::tls::handshake(&acceptor, io, peer, "HTTP").await else {
                return;
            };
            let certificate = io
                .get_ref()
                .1
                .peer_certificates()
                .and_then(PeerCertificate::from_chain);
            let tls = Some(certificate);
            serve_connection(io, peer, router, tls, &limits, watcher, activity).await;
        });
    }
    drop(listener);
    stopping.cancel();
    graceful.shutdown().await;
    Ok(())
}

/// Serves one connection until it ends, is idle for `limits.idle_timeout`, or the server stops.
/// `tls` is `Some` for a TLS connection, with its verified client certificate if any: every
/// request then carries [`crate::tls::Secure`] and the certificate. When traces are exported, every
/// request carries the peer's address (`ConnectInfo`) for its span's `client.address`.
async fn serve_connection<IO>(
    io: IO,
    peer: std::net::SocketAddr,
    router: Router,
    tls: Option<Option<PeerCertificate>>,
    limits: &HttpLimits,
    watcher: Watcher,
    activity: Arc<Activity>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            if crate::telemetry::spans::enabled() {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
            }
            if let Some(certificate) = &tls {
                request.extensions_mut().insert(crate::tls::Secure);
                if let Some(certificate) = certificate {
                    request.extensions_mut().insert(certificate.clone());
                }
            }
            hyper::service::Service::call(&service, request)
        },
    );
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    let connection = watcher.watch(connection);
    tokio::select! {
        served = connection => if let Err(e) = served {
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        },
        () = activity.idle_for(limits.idle_timeout) => tracing::debug!("closed an idle HTTP connection"),
    }
}

/// Reads a request's body within `limit` (and the 4 MiB body limit): a client that sends its body
/// slowly is answered 408 and its connection closed instead of holding it.
async fn read_body_within(
    State(limit): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY_BYTES)).await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                [(header::CONNECTION, "close")],
                format!("Payload Too Large: the body exceeds {MAX_BODY_BYTES} bytes or could not be read: {e}\n"),
            )
                .into_response();
        }
        Err(_) => {
            return (
                axum::http::StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                format!("Request Timeout: the body did not arrive within {limit:?}\n"),
            )
                .into_response();
        }
    };
    next.run(axum::extract::Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The largest request body read.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A connection's socket, noting when a byte last went either way.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

/// When a connection last moved a byte, in milliseconds since it was accepted.
struct Activity {
    since: Instant,
    last_ms: AtomicU64,
}

impl Watched {
    fn new(tcp: TcpStream) -> (Self, Arc<Activity>) {
        let activity = Arc::new(Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        (
            Watched {
                tcp,
                activity: activity.clone(),
            },
            activity,
        )
    }
}

impl Activity {
    fn touch(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once no byte has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
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

//! Any node takes any request (issue 23, item 4): a warm standby forwards what would change the
//! record to the active node, whose addresses it reads from the lease row, so a load balancer or
//! a client may point at any node of a cluster.
//!
//! - **gRPC:** the calls that append (start, call, run, cancel, end, approve, deny, reload) are
//!   passed on whole, as HTTP/2 requests, to the active node's gRPC address; every read (status,
//!   workflows, audit, `watch`, pending approvals) is served by the standby from its own state.
//! - **MCP (`/mcp`):** every request is passed on, streams included, to the active node's HTTP
//!   address: sessions live on the active node, and a call's answer streams back as it comes.
//!
//! What is forwarded is the caller's request as it came (its credential, its `Host`, its
//! `Origin`): the active node authenticates and decides as if the caller had come to it, and
//! records it (write-ahead, SPEC §9.1). Nothing is decided or recorded on the standby, so a
//! standby never forwards a call without its record: the record is the active node's to write,
//! and its fence (SPEC §9.8) refuses a node that lost the lease. Two cases are refused instead,
//! naming the active node: a request another node already forwarded (two nodes that each think
//! the other active never pass a request back and forth), and a caller known only by its client
//! certificate (the certificate proves the connection to this node, not to the active one).
//!
//! The active node is reached over TLS when this node's listeners speak TLS (the nodes of a
//! cluster share their listeners' setup), verified with `store.postgres.forward_tls`.

use crate::gateway::Gateway;
use axum::body::Body as HttpBody;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use conductor_core::config::{Config, StoreSettings};
use futures::StreamExt as _;
use futures::future::{BoxFuture, Either};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body as GrpcBody;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt as _;

/// Marks a request a standby forwarded; a standby never forwards such a request again.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("conductor-forwarded-by");

/// How long a standby waits to connect to the active node before answering that it cannot.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The Orchestrator methods that append to the record: forwarded from a standby.
const GRPC_WRITES: [&str; 8] = [
    "StartWorkflow",
    "CallTool",
    "RunTemplate",
    "CancelWorkflow",
    "EndWorkflow",
    "Approve",
    "Deny",
    "ReloadConfig",
];

/// The Orchestrator service's path prefix.
const ORCHESTRATOR_PATH: &str = "/conductor.v1.Orchestrator/";

/// Whether the gRPC request at `path` appends to the record.
fn grpc_writes(path: &str) -> bool {
    path.strip_prefix(ORCHESTRATOR_PATH)
        .is_some_and(|method| GRPC_WRITES.contains(&method))
}

/// Passes a standby's requests on to the active node; nothing to do on the active node.
pub struct Forwarder {
    gateway: Gateway,
    /// `https` when the listeners speak TLS.
    scheme: &'static str,
    grpc_tls: Option<tonic::transport::ClientTlsConfig>,
    /// One channel, to the active node's gRPC address as last seen.
    grpc: Mutex<Option<(String, Channel)>>,
    http: reqwest::Client,
}

/// Why a forwarder cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("store.postgres.forward_tls: {0}")]
pub struct ForwardSetupError(String);

/// Where one request goes.
enum Route {
    /// Served here: this node is active (or alone), or the request only reads.
    Here,
    /// Passed on to the active node at this address.
    Active { node: String, address: String },
    /// Refused, for this reason (naming the active node).
    Refused(String),
}

impl Forwarder {
    /// The forwarder of a node on the PostgreSQL store; `None` for a node on files (never a
    /// standby).
    pub fn for_config(
        gateway: Gateway,
        config: &Config,
    ) -> Result<Option<Arc<Self>>, ForwardSetupError> {
        let StoreSettings::Postgres(pg) = &config.store else {
            return Ok(None);
        };
        let tls = config.listen.tls.is_some();
        let (grpc_tls, http) = if tls {
            let files = crate::tls::client_tls(&pg.forward_tls);
            let grpc_tls = files
                .tonic_config()
                .map_err(|e| ForwardSetupError(e.to_string()))?;
            let mut rustls = files
                .rustls_config()
                .map_err(|e| ForwardSetupError(e.to_string()))?;
            rustls.alpn_protocols = vec![b"http/1.1".to_vec()];
            (
                Some(grpc_tls),
                http_client().tls_backend_preconfigured(rustls),
            )
        } else {
            (None, http_client())
        };
        let http = http
            .build()
            .map_err(|e| ForwardSetupError(format!("cannot build the HTTP client: {e}")))?;
        Ok(Some(Arc::new(Forwarder {
            gateway,
            scheme: if tls { "https" } else { "http" },
            grpc_tls,
            grpc: Mutex::new(None),
            http,
        })))
    }

    /// Where a request goes: here unless this node is a standby; `forwarded` says another node
    /// already passed it on, `certificate_only` that its caller proved itself by a client
    /// certificate alone.
    fn route(&self, grpc: bool, forwarded: bool, certificate_only: bool) -> Route {
        let Some(view) = self.gateway.inner.cluster.get() else {
            return Route::Here;
        };
        if forwarded {
            return Route::Refused(format!(
                "{}; another node forwarded this request here, and a request is forwarded once only",
                view.refusal()
            ));
        }
        if certificate_only {
            return Route::Refused(format!(
                "{}; a caller known by its client certificate alone is served by the active node only (its certificate proves the connection to this node, not to that one)",
                view.refusal()
            ));
        }
        let address = if grpc {
            view.active_grpc.clone()
        } else {
            view.active_http.clone()
        };
        match address {
            Some(address) => Route::Active {
                node: view.active,
                address,
            },
            None => Route::Refused(view.refusal()),
        }
    }

    /// The channel to the active node's gRPC address (made again when the address changes).
    fn grpc_channel(&self, address: &str) -> Result<Channel, String> {
        let mut slot = self.grpc.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, channel)) = slot.as_ref()
            && known == address
        {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(format!("{}://{address}", self.scheme))
            .map_err(|e| format!("the active node's address {address:?} is not usable: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = &self.grpc_tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS to the active node at {address}: {e}"))?;
        }
        let channel = endpoint.connect_lazy();
        *slot = Some((address.to_owned(), channel.clone()));
        Ok(channel)
    }

    /// Passes one gRPC request on to the active node; its answer (or why it could not be had)
    /// goes back to the caller as it comes.
    async fn forward_grpc(
        &self,
        node: String,
        address: String,
        mut request: axum::http::Request<GrpcBody>,
    ) -> axum::http::Response<GrpcBody> {
        request
            .headers_mut()
            .insert(FORWARDED_BY, HeaderValue::from_static("standby"));
        let unreachable = |error: String| {
            tracing::warn!(active = %node, %address, %error, "cannot forward a gRPC request to the active node");
            tonic::Status::unavailable(format!(
                "this orchestrator is a standby and could not reach the active node {node} at {address} to forward the request ({error}); retry, or send it to the active node"
            ))
            .into_http()
        };
        let channel = match self.grpc_channel(&address) {
            Ok(channel) => channel,
            Err(error) => return unreachable(error),
        };
        match channel.oneshot(request).await {
            Ok(response) => response,
            Err(error) => unreachable(error.to_string()),
        }
    }

    /// Passes one HTTP request on to the active node, its body streamed both ways.
    async fn forward_http(&self, node: String, address: String, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
        let url = format!("{}://{address}{path}", self.scheme);
        let mut headers = end_to_end(&parts.headers);
        headers.insert(FORWARDED_BY, HeaderValue::from_static("standby"));
        let sent = self
            .http
            .request(parts.method, &url)
            .headers(headers)
            .body(reqwest::Body::wrap_stream(body.into_data_stream()))
            .send()
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(active = %node, %address, %error, "cannot forward an HTTP request to the active node");
                return refused(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "this orchestrator is a standby and could not reach the active node {node} at {address} to forward the request ({error}); retry, or send it to the active node"
                    ),
                );
            }
        };
        let status = answer.status();
        let headers = end_to_end(answer.headers());
        // A stream that outlives the caller's interest ends with it (dropping the body drops the
        // request to the active node); one that outlives this node ends at its shutdown.
        let shutdown = self.gateway.inner.shutdown.clone();
        let body = answer
            .bytes_stream()
            .take_until(async move { shutdown.cancelled().await });
        let mut response = Response::new(HttpBody::from_stream(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
}

/// `headers` without the hop-by-hop ones (RFC 9110 §7.6.1), which are this connection's own.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let hop = matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
        ) || named.iter().any(|n| n == name.as_str());
        if !hop {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// A refusal of an HTTP request, as JSON naming the reason.
fn refused(status: StatusCode, reason: String) -> Response {
    (status, axum::Json(serde_json::json!({"error": reason}))).into_response()
}

/// The `/mcp` routes' middleware, inside their `Host` and `Origin` checks (a request no node
/// would serve is refused here, whatever its form): on a standby, every request goes to the
/// active node.
pub async fn forward_mcp(
    State(forwarder): State<Option<Arc<Forwarder>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(forwarder) = forwarder else {
        return next.run(request).await;
    };
    let forwarded = request.headers().contains_key(FORWARDED_BY);
    let certificate_only = !request.headers().contains_key(header::AUTHORIZATION)
        && request
            .extensions()
            .get::<crate::tls::PeerCertificate>()
            .is_some();
    match forwarder.route(false, forwarded, certificate_only) {
        Route::Here => next.run(request).await,
        Route::Active { node, address } => forwarder.forward_http(node, address, request).await,
        Route::Refused(reason) => refused(StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// The gRPC server's layer: on a standby, the calls that append go to the active node.
#[derive(Clone)]
pub struct GrpcForwarding(pub Option<Arc<Forwarder>>);

impl<S> tower::Layer<S> for GrpcForwarding {
    type Service = ForwardGrpc<S>;

    fn layer(&self, inner: S) -> ForwardGrpc<S> {
        ForwardGrpc {
            inner,
            forwarder: self.0.clone(),
        }
    }
}

/// [`GrpcForwarding`]'s service.
#[derive(Clone)]
pub struct ForwardGrpc<S> {
    inner: S,
    forwarder: Option<Arc<Forwarder>>,
}

impl<S> tower::Service<axum::http::Request<GrpcBody>> for ForwardGrpc<S>
where
    S: tower::Service<axum::http::Request<GrpcBody>, Response = axum::http::Response<GrpcBody>>,
    S::Future: Send + 'static,
{
    type Response = axum::http::Response<GrpcBody>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<GrpcBody>) -> Self::Future {
        let Some(forwarder) = &self.forwarder else {
            return Either::Left(self.inner.call(request));
        };
        if !grpc_writes(request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        let forwarded = request.headers().contains_key(FORWARDED_BY);
        let certificate_only = !request.headers().contains_key(header::AUTHORIZATION)
            && request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs)
                .is_some_and(|chain| !chain.is_empty());
        match forwarder.route(true, forwarded, certificate_only) {
            Route::Here => Either::Left(self.inner.call(request)),
            Route::Active { node, address } => {
                let forwarder = forwarder.clone();
                Either::Right(Box::pin(async move {
                    Ok(forwarder.forward_grpc(node, address, request).await)
                }))
            }
            Route::Refused(reason) => Either::Right(Box::pin(async move {
                Ok(tonic::Status::unavailable(reason).into_http())
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_methods_that_append_are_forwarded() {
        for method in GRPC_WRITES {
            assert!(grpc_writes(&format!("{ORCHESTRATOR_PATH}{method}")));
        }
        for path in [
            "/conductor.v1.Orchestrator/Status",
            "/conductor.v1.Orchestrator/Watch",
            "/conductor.v1.Orchestrator/ListPendingApprovals",
            "/conductor.v1.Orchestrator/QueryAudit",
            "/grpc.health.v1.Health/Check",
            "/other.Service/CallTool",
            "CallTool",
        ] {
            assert!(!grpc_writes(path), "{path}");
        }
    }

    #[test]
    fn hop_by_hop_headers_stay_on_their_own_connection() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert("mcp-session-id", HeaderValue::from_static("abc"));
        let kept = end_to_end(&headers);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["host", "authorization", "mcp-session-id"]);
    }
}

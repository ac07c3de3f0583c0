//! The gRPC front's SERVER spans: a tower layer around every gRPC service, so each request (all
//! methods alike) gets its span from its path and the caller's metadata, and its handler runs in
//! it. Without an exporter it passes the request through untouched.

use futures::future::{BoxFuture, Either};
use std::task::{Context, Poll};

/// The layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTracing;

impl<S> tower::Layer<S> for GrpcTracing {
    type Service = TracedGrpc<S>;

    fn layer(&self, inner: S) -> TracedGrpc<S> {
        TracedGrpc { inner }
    }
}

/// [`GrpcTracing`]'s service.
#[derive(Debug, Clone)]
pub struct TracedGrpc<S> {
    inner: S,
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for TracedGrpc<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = axum::http::Response<R>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        if !super::spans::enabled() {
            return Either::Left(self.inner.call(request));
        }
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        let extensions = request.extensions();
        let client = extensions
            .get::<TcpConnectInfo>()
            .or_else(|| {
                extensions
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .map(TlsConnectInfo::get_ref)
            })
            .and_then(TcpConnectInfo::remote_addr);
        let span = super::spans::grpc_server(request.uri().path(), request.headers(), client);
        let answer = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let traced = span.clone();
        Either::Right(Box::pin(span.wrap(async move {
            let answer = answer.await;
            if let Ok(response) = &answer {
                // A unary error is answered trailers-only: its status is in the headers.
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                super::spans::grpc_status(&traced, code);
            }
            traced.end();
            answer
        })))
    }
}

//! The gRPC front's SERVER spans: a tower layer around every gRPC service, so each request (all
//! methods alike) gets its span from its path and the caller's metadata, and its handler runs in
//! it. Without an exporter it passes the request through untouched.

use futures::future::{BoxFuture, Either};
use std::task::{Context, Poll};
use tracing::Instrument;

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
        let span = super::spans::grpc_server(request.uri().path(), request.headers());
        if span.is_disabled() {
            return Either::Left(self.inner.call(request));
        }
        let answer = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Either::Right(Box::pin(
            async move {
                let answer = answer.await;
                if let Ok(response) = &answer {
                    // A unary error is answered trailers-only: its status is in the headers.
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    super::spans::grpc_status(&tracing::Span::current(), code);
                }
                answer
            }
            .instrument(span),
        ))
    }
}

//! One span per gRPC call served, continuing the caller's trace (`traceparent`), named and
//! attributed as OpenTelemetry's RPC conventions say: `{service}/{method}`, kind server,
//! `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`.
//!
//! Health checks and reflection get no span (probes would be most of every trace store),
//! and a path this server does not serve is named `unknown` rather than after whatever a
//! caller sent, so hostile paths cannot blow up span names.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing::Span;
use tracing::instrument::Instrumented;

use crate::grpc::PLUMBING_METHODS;
use crate::methods::MethodTable;

/// The gRPC codes that mean the server failed (OpenTelemetry marks a server span as an
/// error only for these; a caller's mistake, such as INVALID_ARGUMENT, is not one).
const SERVER_FAULT_CODES: [i32; 6] = [2, 4, 12, 13, 14, 15];

/// The layer; the outermost of the server, so the span covers every other layer.
#[derive(Clone, Debug)]
pub struct ServerSpanLayer {
    table: Arc<MethodTable>,
}

impl ServerSpanLayer {
    /// Spans named from the methods of `table`.
    pub fn new(table: Arc<MethodTable>) -> Self {
        Self { table }
    }
}

impl<S> Layer<S> for ServerSpanLayer {
    type Service = ServerSpan<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerSpan {
            inner,
            table: Arc::clone(&self.table),
        }
    }
}

/// The service made by [`ServerSpanLayer`].
#[derive(Clone, Debug)]
pub struct ServerSpan<S> {
    inner: S,
    table: Arc<MethodTable>,
}

impl<S> ServerSpan<S> {
    fn span_for<B>(&self, request: &Request<B>) -> Span {
        let path = request.uri().path();
        if PLUMBING_METHODS.contains(&path) {
            return Span::none();
        }
        let method = self.table.method(path);
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = method.map_or("unknown", |_| path.trim_start_matches('/')),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = method.map(|m| m.service.as_str()),
            rpc.method = method.map(|m| m.method.as_str()),
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        appstack_trace::set_parent_from_headers(&span, request.headers());
        span
    }
}

impl<S, B, ResBody> Service<Request<B>> for ServerSpan<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ServerSpanFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = self.span_for(&request);
        // Entered while the inner layers build their futures: the run-to-completion layer
        // spawns the handler and hands it this span.
        let future = span.in_scope(|| self.inner.call(request));
        ServerSpanFuture {
            inner: Box::pin(future.instrument(span)),
        }
    }
}

/// Records the call's gRPC status on its span when the answer's headers carry one (an
/// error, or any trailers-only answer); a stream's final status travels in trailers after
/// the span has ended and is not recorded.
pub struct ServerSpanFuture<F> {
    inner: Pin<Box<Instrumented<F>>>,
}

impl<F, ResBody, E> Future for ServerSpanFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let output = std::task::ready!(self.inner.as_mut().poll(cx));
        let span = self.inner.span();
        if let Ok(response) = &output {
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.parse::<i32>().ok())
                .unwrap_or(0);
            span.record("rpc.grpc.status_code", code);
            if SERVER_FAULT_CODES.contains(&code) {
                span.record("otel.status_code", "error");
            }
        } else {
            span.record("otel.status_code", "error");
        }
        Poll::Ready(output)
    }
}

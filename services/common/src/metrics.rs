//! Prometheus metrics: a shared registry and RED metrics (rate, errors, duration) for every
//! gRPC method, with the status taken from `grpc-status` (response headers for trailers-only
//! errors, the trailers otherwise), so streaming calls are measured to their end.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::Code;
use tower::{Layer, Service};

use crate::methods::MethodTable;
use crate::status::code_name;

/// The process's metric registry, shared by every component that registers metrics.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    inner: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRegistry")
    }
}

impl MetricsRegistry {
    /// Runs `register` with the registry (at start-up, while components are built).
    pub fn register(&self, register: impl FnOnce(&mut Registry)) {
        let mut registry = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        register(&mut registry);
    }

    /// The OpenMetrics text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let registry = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// Labels of one finished gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Fully qualified service, e.g. `appstack.auth.v1.AuthService`.
    pub service: String,
    /// Method, e.g. `Login`.
    pub method: String,
    /// gRPC status name, e.g. `OK`, `UNAUTHENTICATED`.
    pub code: String,
}

/// Labels of one gRPC method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// Fully qualified service.
    pub service: String,
    /// Method.
    pub method: String,
}

/// RED metrics of a gRPC server.
#[derive(Clone)]
pub struct GrpcMetrics {
    handled: Family<CallLabels, Counter>,
    duration: Family<MethodLabels, Histogram>,
    in_flight: Gauge,
}

impl GrpcMetrics {
    /// Registers `grpc_server_handled`, `grpc_server_handling_seconds` and
    /// `grpc_server_in_flight` in `registry`.
    pub fn new(registry: &MetricsRegistry) -> Self {
        let metrics = Self {
            handled: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            in_flight: Gauge::default(),
        };
        registry.register(|r| {
            r.register(
                "grpc_server_handled",
                "gRPC calls completed, by service, method and status code",
                metrics.handled.clone(),
            );
            r.register(
                "grpc_server_handling_seconds",
                "gRPC call duration until the last response byte, by service and method",
                metrics.duration.clone(),
            );
            r.register(
                "grpc_server_in_flight",
                "gRPC calls in progress",
                metrics.in_flight.clone(),
            );
        });
        metrics
    }

    /// Tower layer that records every call through it. Calls to paths that are not served
    /// methods of `methods` share the `unknown` labels, so clients sending made-up paths cannot
    /// grow the label set.
    pub fn layer(&self, methods: Arc<MethodTable>) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            metrics: self.clone(),
            methods,
        }
    }
}

/// Tower layer recording [`GrpcMetrics`].
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: GrpcMetrics,
    methods: Arc<MethodTable>,
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
            methods: self.methods.clone(),
        }
    }
}

/// Service made by [`GrpcMetricsLayer`].
#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
    methods: Arc<MethodTable>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let (service, method) = labels_for(path, &self.methods);
        let recorder = CallRecorder::start(self.metrics.clone(), service, method);
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let mut recorder = recorder;
            recorder.observe_headers(response.headers());
            Ok(response.map(|body| MeteredBody {
                inner: body,
                recorder,
            }))
        })
    }
}

/// Records one call when its response ends or is dropped.
struct CallRecorder {
    metrics: GrpcMetrics,
    service: String,
    method: String,
    started: Instant,
    code: Option<Code>,
    ended: bool,
}

impl CallRecorder {
    fn start(metrics: GrpcMetrics, service: String, method: String) -> Self {
        metrics.in_flight.inc();
        Self {
            metrics,
            service,
            method,
            started: Instant::now(),
            code: None,
            ended: false,
        }
    }

    fn observe_headers(&mut self, headers: &HeaderMap) {
        if let Some(code) = grpc_status(headers) {
            self.code = Some(code);
        }
    }
}

impl Drop for CallRecorder {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        // A body dropped before its end was cancelled by the client; one that ended without
        // a status broke the protocol.
        let code = self.code.unwrap_or(if self.ended {
            Code::Unknown
        } else {
            Code::Cancelled
        });
        let service = std::mem::take(&mut self.service);
        let method = std::mem::take(&mut self.method);
        self.metrics
            .duration
            .get_or_create(&MethodLabels {
                service: service.clone(),
                method: method.clone(),
            })
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics
            .handled
            .get_or_create(&CallLabels {
                service,
                method,
                code: code_name(code).to_owned(),
            })
            .inc();
    }
}

/// The service and method of a served method; `unknown` otherwise.
fn labels_for(path: &str, methods: &MethodTable) -> (String, String) {
    match methods.method(path) {
        Some(info) => (info.service.clone(), info.method.clone()),
        None => ("unknown".into(), "unknown".into()),
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(value))
}

pin_project_lite::pin_project! {
    /// A response body that reports the call's status and duration when it ends.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        recorder: CallRecorder,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.recorder.observe_headers(trailers);
                }
            }
            Poll::Ready(None) => this.recorder.ended = true,
            Poll::Ready(Some(Err(_))) => {
                this.recorder.ended = true;
                this.recorder.code.get_or_insert(Code::Internal);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        let known = MethodTable::new(
            &[appstack_proto::FILE_DESCRIPTOR_SET],
            &["appstack.auth.v1.AuthService"],
        );
        assert_eq!(
            labels_for("/appstack.auth.v1.AuthService/Login", &known),
            ("appstack.auth.v1.AuthService".into(), "Login".into())
        );
        assert_eq!(
            labels_for("/appstack.auth.v1.AuthService/Random", &known).0,
            "unknown"
        );
        assert_eq!(labels_for("garbage", &known).1, "unknown");
    }
}

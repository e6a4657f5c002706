//! The layer over a real tonic `Channel` (HTTP/2), against a hand-rolled gRPC server on
//! loopback that answers with the status codes it is told to, and records the
//! `grpc-timeout` each attempt carried.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appstack_resilience::layer::grpc_timeout::parse_grpc_timeout;
use appstack_resilience::retry::classify::{GrpcClassifier, code};
use appstack_resilience::{ReplayBody, ResilienceConfig, ResilienceError, ResilienceLayer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use http_body::Frame;
use http_body_util::StreamBody;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;

#[derive(Clone, Default)]
struct Server {
    /// Status codes to answer with, in order; `OK` once exhausted.
    codes: Arc<Mutex<VecDeque<i32>>>,
    /// The `grpc-timeout` of every request seen (`None`: absent).
    timeouts: Arc<Mutex<Vec<Option<Duration>>>>,
}

impl Server {
    fn hits(&self) -> usize {
        self.timeouts.lock().unwrap().len()
    }
}

async fn handle(State(server): State<Server>, headers: HeaderMap, _body: Bytes) -> Response {
    server.timeouts.lock().unwrap().push(
        headers
            .get("grpc-timeout")
            .map(|v| parse_grpc_timeout(v).expect("a well-formed grpc-timeout")),
    );
    let code = server.codes.lock().unwrap().pop_front().unwrap_or(code::OK);
    let status = HeaderValue::from_str(&code.to_string()).unwrap();
    let builder = Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    if code != code::OK {
        // Trailers-only: how a server answers an error at once.
        return builder
            .header("grpc-status", status)
            .body(axum::body::Body::empty())
            .unwrap();
    }
    // One empty message (uncompressed, length 0), then the OK trailers.
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", status);
    let frames = [
        Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0])),
        Frame::trailers(trailers),
    ];
    let body = StreamBody::new(futures_util::stream::iter(
        frames.map(Ok::<_, std::convert::Infallible>),
    ));
    builder.body(axum::body::Body::new(body)).unwrap()
}

async fn serve(codes: &[i32]) -> (Server, SocketAddr) {
    let server = Server::default();
    server.codes.lock().unwrap().extend(codes.iter().copied());
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(server.clone());
    (server, support::serve_on_loopback(app).await)
}

fn config() -> ResilienceConfig {
    let mut c = ResilienceConfig::default();
    c.timeout.per_attempt = Duration::from_secs(2);
    c.timeout.overall = Duration::from_secs(5);
    c.retry.max_attempts = 3;
    c.retry.initial_backoff = Duration::from_millis(1);
    c.retry.max_backoff = Duration::from_millis(5);
    c.validate().unwrap();
    c
}

/// Calls `/test.Echo/Call` with an empty message through the layer over a `Channel`.
async fn call(addr: SocketAddr, timeout: Option<Duration>) -> Result<(), tonic::Status> {
    let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let layer = ResilienceLayer::new("grpc-test", &config(), GrpcClassifier::new());
    let service = ServiceBuilder::new()
        .layer(layer)
        .map_request(|r: http::Request<ReplayBody<tonic::body::Body>>| {
            r.map(tonic::body::Body::new)
        })
        .service(channel);
    let mut grpc = tonic::client::Grpc::new(service);
    let mut request = tonic::Request::new(());
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    echo(&mut grpc, request).await
}

/// Sends `request` to `/test.Echo/Call` on `grpc`.
async fn echo<T>(
    grpc: &mut tonic::client::Grpc<T>,
    request: tonic::Request<()>,
) -> Result<(), tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    // The layer is always ready (readiness is awaited inside each attempt).
    let ready: Result<(), tonic::codegen::StdError> = grpc.ready().await.map_err(Into::into);
    ready.expect("the layered channel is ready");
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static("/test.Echo/Call"),
        tonic_prost::ProstCodec::<(), ()>::default(),
    )
    .await
    .map(drop)
}

#[tokio::test]
async fn unavailable_is_retried() {
    let (server, addr) = serve(&[code::UNAVAILABLE, code::UNAVAILABLE]).await;
    call(addr, None).await.unwrap();
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn unavailable_comes_back_when_attempts_run_out() {
    let (server, addr) = serve(&[code::UNAVAILABLE; 3]).await;
    let status = call(addr, None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn invalid_argument_is_not_retried() {
    let (server, addr) = serve(&[code::INVALID_ARGUMENT]).await;
    let status = call(addr, None).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn each_attempt_carries_its_remaining_time() {
    let (server, addr) = serve(&[code::UNAVAILABLE]).await;
    call(addr, None).await.unwrap();
    let timeouts = server.timeouts.lock().unwrap().clone();
    assert_eq!(timeouts.len(), 2);
    for t in timeouts {
        // The per-attempt timeout, 2 s, rounded up to the microsecond at most.
        let t = t.expect("every attempt carries grpc-timeout");
        assert!(t <= Duration::from_secs(2), "{t:?}");
        assert!(t > Duration::from_millis(1900), "{t:?}");
    }

    // The caller's own deadline, shorter, is what the server is told.
    let (server, addr) = serve(&[code::UNAVAILABLE]).await;
    call(addr, Some(Duration::from_millis(300))).await.unwrap();
    let timeouts = server.timeouts.lock().unwrap().clone();
    assert_eq!(timeouts.len(), 2);
    let (first, second) = (timeouts[0].unwrap(), timeouts[1].unwrap());
    assert!(first <= Duration::from_millis(300), "{first:?}");
    assert!(
        second < first,
        "{second:?} then {first:?}: the deadline did not shrink"
    );
}

#[tokio::test]
async fn connect_errors_are_retried_and_open_the_breaker() {
    // A port nobody listens on, and a channel that connects on first use.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut c = config();
    c.circuit_breaker.minimum_calls = 3;
    c.circuit_breaker.window.size = 3;
    let layer = ResilienceLayer::new("grpc-down", &c, GrpcClassifier::new());
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .map_request(|r: http::Request<ReplayBody<tonic::body::Body>>| {
            r.map(tonic::body::Body::new)
        })
        .service(channel);
    let mut grpc = tonic::client::Grpc::new(service);
    let status = echo(&mut grpc, tonic::Request::new(())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Three attempts, all failures: the breaker is open now.
    assert_eq!(
        layer.breaker().state(),
        appstack_resilience::breaker::State::Open
    );

    // The next call is refused without a connection attempt; tonic reports it as UNKNOWN
    // with the refusal as the status' source, where a caller finds when to come back.
    let status = echo(&mut grpc, tonic::Request::new(())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    let refusal = std::error::Error::source(&status)
        .and_then(|e| e.downcast_ref::<ResilienceError<tonic::transport::Error>>())
        .expect("the refusal is the status' source");
    assert!(refusal.is_rejection());
    assert!(refusal.next_probe_at().is_some());
    assert_eq!(refusal.grpc_code(), Some(code::UNAVAILABLE));
}

//! The layer over a real tonic `Channel` (HTTP/2) and tonic's client (what generated
//! clients call), against a hand-rolled gRPC server on loopback that answers as it is told
//! to — trailers-only, or with the status in the trailers of a normal response — and
//! records the `grpc-timeout` each attempt carried.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appstack_resilience::classify::{GrpcClassifier, code};
use appstack_resilience::layer::grpc_timeout::parse_grpc_timeout;
use appstack_resilience::{GrpcStatus, ReplayBody, ResilienceConfig, ResilienceLayer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use http_body::Frame;
use http_body_util::StreamBody;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;
use tower::ServiceBuilder;

/// How the server answers one call.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Trailers-only: the code in the head (how tonic and grpc-go answer an error).
    TrailersOnly(i32),
    /// A normal response: head 200, one message of `size` bytes, then the code in the
    /// trailers (how some servers and proxies answer an error).
    InTrailers { code: i32, size: usize },
    /// Sleeps this long, then answers OK.
    Slow(Duration),
}

impl Answer {
    const OK: Answer = Answer::InTrailers {
        code: code::OK,
        size: 0,
    };

    fn in_trailers(code: i32) -> Answer {
        Answer::InTrailers { code, size: 0 }
    }
}

#[derive(Clone, Default)]
struct Server {
    /// Answers, in order; OK once exhausted.
    answers: Arc<Mutex<VecDeque<Answer>>>,
    /// The `grpc-timeout` of every request seen (`None`: absent).
    timeouts: Arc<Mutex<Vec<Option<Duration>>>>,
}

impl Server {
    fn hits(&self) -> usize {
        self.timeouts.lock().unwrap().len()
    }
}

/// A gRPC message frame (uncompressed) of `size` bytes of valid protobuf: fields
/// `1: varint 1`, which the empty message `()` skips.
fn message(size: usize) -> Bytes {
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(size).unwrap().to_be_bytes());
    frame.extend(std::iter::repeat_n([0x08, 0x01], size / 2).flatten());
    Bytes::from(frame)
}

async fn handle(State(server): State<Server>, headers: HeaderMap, _body: Bytes) -> Response {
    server.timeouts.lock().unwrap().push(
        headers
            .get("grpc-timeout")
            .map(|v| parse_grpc_timeout(v).expect("a well-formed grpc-timeout")),
    );
    let answer = server
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::OK);
    let builder = Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    let (code, size) = match answer {
        Answer::TrailersOnly(code) => {
            return builder
                .header("grpc-status", code)
                .body(axum::body::Body::empty())
                .unwrap();
        }
        Answer::InTrailers { code, size } => (code, size),
        Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            (code::OK, 0)
        }
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code));
    let frames = [Frame::data(message(size)), Frame::trailers(trailers)];
    let body = StreamBody::new(futures_util::stream::iter(
        frames.map(Ok::<_, std::convert::Infallible>),
    ));
    builder.body(axum::body::Body::new(body)).unwrap()
}

async fn serve(answers: &[Answer]) -> (Server, SocketAddr) {
    let server = Server::default();
    server
        .answers
        .lock()
        .unwrap()
        .extend(answers.iter().copied());
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(server.clone());
    (server, support::serve_on_loopback(app).await)
}

fn trailers_only(codes: &[i32]) -> Vec<Answer> {
    codes.iter().map(|&c| Answer::TrailersOnly(c)).collect()
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

/// The layer over a `Channel`, as a tonic client.
type Client = tonic::client::Grpc<
    appstack_resilience::Resilience<
        tower::util::MapRequest<
            Channel,
            fn(http::Request<ReplayBody<tonic::body::Body>>) -> http::Request<tonic::body::Body>,
        >,
        GrpcClassifier,
    >,
>;

/// A tonic client of `layer` over a channel to `addr`, connected on first use.
fn client(layer: &ResilienceLayer<GrpcClassifier>, addr: SocketAddr) -> Client {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let to_tonic: fn(http::Request<ReplayBody<tonic::body::Body>>) -> _ =
        |r| r.map(tonic::body::Body::new);
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .map_request(to_tonic)
        .service(channel);
    tonic::client::Grpc::new(service)
}

/// Calls `/test.Echo/Call` with an empty message through the layer over a `Channel`.
async fn call(addr: SocketAddr, timeout: Option<Duration>) -> Result<(), tonic::Status> {
    let layer = ResilienceLayer::new("grpc-test", &config(), GrpcClassifier::new());
    let mut request = tonic::Request::new(());
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    echo(&mut client(&layer, addr), request).await
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
    let (server, addr) = serve(&trailers_only(&[code::UNAVAILABLE, code::UNAVAILABLE])).await;
    call(addr, None).await.unwrap();
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn unavailable_comes_back_when_attempts_run_out() {
    let (server, addr) = serve(&trailers_only(&[code::UNAVAILABLE; 3])).await;
    let status = call(addr, None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn invalid_argument_is_not_retried() {
    let (server, addr) = serve(&trailers_only(&[code::INVALID_ARGUMENT])).await;
    let status = call(addr, None).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn each_attempt_carries_its_remaining_time() {
    let (server, addr) = serve(&trailers_only(&[code::UNAVAILABLE])).await;
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
    let (server, addr) = serve(&trailers_only(&[code::UNAVAILABLE])).await;
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
    let mut c = config();
    c.circuit_breaker.minimum_calls = 3;
    c.circuit_breaker.window.size = 3;
    let layer = ResilienceLayer::new("grpc-down", &c, GrpcClassifier::new());
    let mut grpc = client(&layer, addr);
    let status = echo(&mut grpc, tonic::Request::new(())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Three attempts, all failures: the breaker is open now.
    assert_eq!(
        layer.breaker().state(),
        appstack_resilience::breaker::State::Open
    );

    // The next call is refused without a connection attempt, and the tonic client reads
    // the refusal as UNAVAILABLE (not UNKNOWN), with when to come back.
    let status = echo(&mut grpc, tonic::Request::new(())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("grpc-down: circuit breaker open: call rejected; next probe in "),
        "{}",
        status.message()
    );
    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 14_000 && pushback <= 15_000, "{pushback}");
    let details = status.get_error_details();
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "CIRCUIT_OPEN");
    assert_eq!(info.domain, GrpcStatus::DOMAIN);
    let retry = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a RetryInfo");
    assert!(
        retry > Duration::from_secs(14) && retry <= Duration::from_secs(15),
        "{retry:?}"
    );
}

#[tokio::test]
async fn an_error_in_the_trailers_is_retried() {
    let unavailable = Answer::in_trailers(code::UNAVAILABLE);
    let (server, addr) = serve(&[unavailable, unavailable]).await;
    let layer = ResilienceLayer::new("grpc-test", &config(), GrpcClassifier::new());
    echo(&mut client(&layer, addr), tonic::Request::new(()))
        .await
        .unwrap();
    assert_eq!(server.hits(), 3);
    let snapshot = layer.breaker().snapshot();
    assert_eq!(snapshot.calls, 3);
    assert!(
        (snapshot.failure_rate - 200.0 / 3.0).abs() < 1e-9,
        "{snapshot:?}"
    );
}

#[tokio::test]
async fn an_error_in_the_trailers_is_that_error() {
    let (server, addr) = serve(&[Answer::in_trailers(code::INVALID_ARGUMENT)]).await;
    let layer = ResilienceLayer::new("grpc-test", &config(), GrpcClassifier::new());
    let mut grpc = client(&layer, addr);
    let status = echo(&mut grpc, tonic::Request::new(())).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(server.hits(), 1, "permanent: not retried");
    assert_eq!(layer.breaker().snapshot().failure_rate, 0.0);

    // Retryable, every time: retried until the attempts run out, each a failure.
    let (server, addr) = serve(&[Answer::in_trailers(code::UNAVAILABLE); 3]).await;
    let layer = ResilienceLayer::new("grpc-test", &config(), GrpcClassifier::new());
    let status = echo(&mut client(&layer, addr), tonic::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(server.hits(), 3);
    let snapshot = layer.breaker().snapshot();
    assert_eq!((snapshot.calls, snapshot.failure_rate), (3, 100.0));
}

#[tokio::test]
async fn a_response_over_the_read_ahead_limit_is_judged_at_its_end() {
    let big = Answer::InTrailers {
        code: code::UNAVAILABLE,
        size: 1024,
    };
    let (server, addr) = serve(&[big]).await;
    let layer = ResilienceLayer::new("grpc-test", &config(), GrpcClassifier::new())
        .max_buffered_response(256);
    let status = echo(&mut client(&layer, addr), tonic::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    // Passed on as it streamed: not retried, but the breaker saw the failure at its end.
    assert_eq!(server.hits(), 1);
    let snapshot = layer.breaker().snapshot();
    assert_eq!((snapshot.calls, snapshot.failure_rate), (1, 100.0));
    assert_eq!(layer.pipeline().bulkhead().in_flight(), 0);
}

#[tokio::test]
async fn a_full_bulkhead_is_resource_exhausted() {
    let (_, addr) = serve(&[Answer::Slow(Duration::from_millis(500))]).await;
    let mut c = config();
    c.bulkhead.max_concurrent = 1;
    c.bulkhead.max_queue = 0;
    let layer = ResilienceLayer::new("grpc-busy", &c, GrpcClassifier::new());
    let mut first = client(&layer, addr);
    let busy = tokio::spawn(async move { echo(&mut first, tonic::Request::new(())).await });
    while layer.pipeline().bulkhead().in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = echo(&mut client(&layer, addr), tonic::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "grpc-busy: bulkhead full: call rejected");
    let details = status.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "BULKHEAD_FULL");
    assert!(details.retry_info().is_none());
    busy.await.unwrap().unwrap();
}

#[tokio::test]
async fn timeouts_are_deadline_exceeded() {
    let slow = Answer::Slow(Duration::from_secs(2));
    let (_, addr) = serve(&[slow, slow]).await;
    let mut c = config();
    c.timeout.per_attempt = Duration::from_millis(100);
    c.retry.max_attempts = 1;
    let layer = ResilienceLayer::new("grpc-slow", &c, GrpcClassifier::new());
    let mut grpc = client(&layer, addr);
    let status = echo(&mut grpc, tonic::Request::new(())).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "grpc-slow: attempt timed out");
    assert_eq!(
        status.get_error_details().error_info().unwrap().reason,
        "ATTEMPT_TIMEOUT"
    );

    // The caller's own deadline, shorter than the attempt's.
    let mut request = tonic::Request::new(());
    request.set_timeout(Duration::from_millis(50));
    let status = echo(&mut grpc, request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.get_error_details().error_info().unwrap().reason,
        "DEADLINE_EXCEEDED"
    );
}

//! The layer over a real hyper-util HTTP/1.1 client, against a real server on loopback that
//! fails on command. Real sockets: durations are real, and kept small.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appstack_resilience::breaker::State;
use appstack_resilience::classify::HttpClassifier;
use appstack_resilience::config::Jitter;
use appstack_resilience::{
    ReplayBody, Resilience, ResilienceConfig, ResilienceError, ResilienceLayer,
};
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

/// What the server does with one request.
#[derive(Debug, Clone, Copy)]
enum Step {
    Status(u16),
    /// `429` with `Retry-After: <seconds>`.
    TooMany(u64),
    /// `200` after this long.
    Slow(Duration),
    /// `200` at once, then its body (`x`) after this long.
    SlowBody(Duration),
}

#[derive(Default)]
struct Script {
    steps: VecDeque<Step>,
    /// Used when the script is exhausted.
    then: Option<Step>,
    bodies: Vec<Bytes>,
}

#[derive(Clone, Default)]
struct Server {
    script: Arc<Mutex<Script>>,
}

impl Server {
    fn hits(&self) -> usize {
        self.script.lock().unwrap().bodies.len()
    }
}

async fn handle(AxumState(server): AxumState<Server>, body: Bytes) -> Response {
    let step = {
        let mut script = server.script.lock().unwrap();
        script.bodies.push(body);
        let then = script.then.unwrap_or(Step::Status(200));
        script.steps.pop_front().unwrap_or(then)
    };
    match step {
        Step::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Step::TooMany(secs) => {
            let mut headers = HeaderMap::new();
            headers.insert("retry-after", secs.to_string().parse().unwrap());
            (StatusCode::TOO_MANY_REQUESTS, headers).into_response()
        }
        Step::Slow(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
        Step::SlowBody(d) => {
            let late = futures_util::stream::once(async move {
                tokio::time::sleep(d).await;
                Ok::<_, std::io::Error>(Bytes::from_static(b"x"))
            });
            axum::body::Body::from_stream(late).into_response()
        }
    }
}

/// A server on 127.0.0.1 following `steps`, then `then` (default `200`) for ever.
async fn serve(steps: &[Step], then: Option<Step>) -> (Server, SocketAddr) {
    let server = Server::default();
    {
        let mut script = server.script.lock().unwrap();
        script.steps = steps.iter().copied().collect();
        script.then = then;
    }
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(server.clone());
    (server, support::serve_on_loopback(app).await)
}

type Body = Full<Bytes>;
type HttpClient = Client<HttpConnector, ReplayBody<Body>>;

fn config() -> ResilienceConfig {
    let mut c = ResilienceConfig::default();
    c.timeout.per_attempt = Duration::from_millis(500);
    c.timeout.overall = Duration::from_secs(5);
    c.retry.max_attempts = 3;
    c.retry.initial_backoff = Duration::from_millis(1);
    c.retry.max_backoff = Duration::from_millis(5);
    c.circuit_breaker.minimum_calls = 5;
    c.circuit_breaker.window.size = 10;
    c.validate().unwrap();
    c
}

fn client(
    config: &ResilienceConfig,
) -> (
    ResilienceLayer<HttpClassifier>,
    Resilience<HttpClient, HttpClassifier>,
) {
    let layer = ResilienceLayer::new("http-test", config, HttpClassifier::new());
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    (layer.clone(), layer.layer(client))
}

fn post(addr: SocketAddr, body: &'static str) -> Request<Body> {
    Request::post(format!("http://{addr}/things"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn retries_then_succeeds_resending_the_body() {
    let (server, addr) = serve(&[Step::Status(503), Step::Status(502)], None).await;
    let (_, mut svc) = client(&config());
    let response = svc.call(post(addr, "hello")).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(server.hits(), 3);
    let bodies = server.script.lock().unwrap().bodies.clone();
    assert!(bodies.iter().all(|b| &b[..] == b"hello"), "{bodies:?}");
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let (server, addr) = serve(&[Step::Status(400)], None).await;
    let (_, mut svc) = client(&config());
    assert_eq!(svc.call(post(addr, "")).await.unwrap().status(), 400);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn unavailable_is_retried_with_backoff() {
    let (server, addr) = serve(&[Step::Status(503), Step::Status(503)], None).await;
    let mut c = config();
    c.retry.initial_backoff = Duration::from_millis(40);
    c.retry.max_backoff = Duration::from_millis(80);
    c.retry.jitter = Jitter::None;
    let (_, mut svc) = client(&c);
    let start = Instant::now();
    assert_eq!(svc.call(post(addr, "")).await.unwrap().status(), 200);
    // Backoffs of 40 ms then 80 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(120),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (server, addr) = serve(&[Step::TooMany(1)], None).await;
    let (_, mut svc) = client(&config());
    let start = Instant::now();
    assert_eq!(svc.call(post(addr, "")).await.unwrap().status(), 200);
    // The server's one second, not the 1–5 ms backoff.
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn the_breaker_opens_in_an_outage_and_rejects_fast() {
    let (server, addr) = serve(&[], Some(Step::Status(503))).await;
    let mut c = config();
    c.retry.max_attempts = 1;
    let (layer, mut svc) = client(&c);
    for _ in 0..5 {
        assert_eq!(svc.call(post(addr, "")).await.unwrap().status(), 503);
    }
    assert_eq!(layer.breaker().state(), State::Open);
    let start = Instant::now();
    let err = svc.call(post(addr, "")).await.unwrap_err();
    let took = start.elapsed();
    let next_probe_at = err
        .next_probe_at()
        .expect("an open breaker names its next probe");
    assert!(next_probe_at > Instant::now());
    assert!(took < Duration::from_millis(50), "{took:?}");
    assert_eq!(
        server.hits(),
        5,
        "the server saw a call while the breaker was open"
    );
}

#[tokio::test]
async fn the_deadline_is_respected() {
    let (server, addr) = serve(&[], Some(Step::Slow(Duration::from_secs(2)))).await;
    let mut c = config();
    c.timeout.per_attempt = Duration::from_millis(100);
    c.timeout.overall = Duration::from_millis(250);
    c.retry.max_attempts = 10;
    let (_, mut svc) = client(&c);
    let start = Instant::now();
    let err = svc.call(post(addr, "")).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(
            err,
            ResilienceError::DeadlineExceeded | ResilienceError::Timeout
        ),
        "{err}"
    );
    assert!(took >= Duration::from_millis(200), "{took:?}");
    // Well before the server's 2 s (the bound leaves room for a loaded CI machine).
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!((1..=3).contains(&server.hits()), "{}", server.hits());
}

#[tokio::test]
async fn connect_errors_are_retried_and_count_as_failures() {
    // A port nobody listens on.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (layer, mut svc) = client(&config());
    let err = svc.call(post(addr, "")).await.unwrap_err();
    let inner = err.into_inner().expect("the client's own error");
    assert!(inner.is_connect(), "{inner:?}");
    // Three attempts, each recorded by the breaker as a failure.
    let snapshot = layer.breaker().snapshot();
    assert_eq!(snapshot.calls, 3);
    assert_eq!(snapshot.failure_rate, 100.0);
}

#[tokio::test]
async fn the_retry_budget_caps_outage_amplification() {
    let (server, addr) = serve(&[], Some(Step::Status(503))).await;
    let mut c = config();
    c.circuit_breaker.mode = appstack_resilience::config::BreakerMode::Disabled;
    c.retry.max_attempts = 5;
    c.retry.budget.ratio = 0.2;
    c.retry.budget.min_retries_per_second = 1;
    c.retry.budget.ttl = Duration::from_secs(10);
    let (_, mut svc) = client(&c);
    let calls = 200;
    for _ in 0..calls {
        assert_eq!(svc.call(post(addr, "")).await.unwrap().status(), 503);
    }
    // Without the budget: 5 attempts a call. With it: 20% more, plus the floor of
    // 1 retry/s × 10 s.
    let amplification = server.hits() as f64 / f64::from(calls);
    println!("outage_amplification {amplification:.3}");
    assert!(amplification > 1.0, "{amplification}");
    assert!(
        amplification <= 1.2 + 10.0 / f64::from(calls),
        "{amplification}"
    );
}

#[tokio::test]
async fn the_slot_and_the_breakers_timing_end_with_the_body() {
    let (_, addr) = serve(&[Step::SlowBody(Duration::from_millis(300))], None).await;
    let mut c = config();
    c.circuit_breaker.slow_call_duration = Duration::from_millis(200);
    let (layer, mut svc) = client(&c);
    let start = Instant::now();
    let response = svc.call(post(addr, "")).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(250),
        "the head came late"
    );
    let bulkhead = layer.pipeline().bulkhead();
    assert_eq!(
        bulkhead.in_flight(),
        1,
        "the slot is held while the body streams"
    );
    assert_eq!(
        layer.breaker().snapshot().calls,
        0,
        "recorded at the end, not yet"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"x");
    assert_eq!(bulkhead.in_flight(), 0);
    // The head came at once, the body 300 ms later: a slow call (over 200 ms).
    let snapshot = layer.breaker().snapshot();
    assert_eq!(snapshot.calls, 1);
    assert_eq!(snapshot.slow_call_rate, 100.0);
    assert_eq!(snapshot.failure_rate, 0.0);
}

#[tokio::test]
async fn a_body_dropped_unread_gives_the_slot_back_and_counts_nothing() {
    let (_, addr) = serve(&[Step::SlowBody(Duration::from_secs(5))], None).await;
    let (layer, mut svc) = client(&config());
    let response = svc.call(post(addr, "")).await.unwrap();
    assert_eq!(layer.pipeline().bulkhead().in_flight(), 1);
    drop(response);
    assert_eq!(layer.pipeline().bulkhead().in_flight(), 0);
    assert_eq!(layer.breaker().snapshot().calls, 0, "as a cancelled call");
}

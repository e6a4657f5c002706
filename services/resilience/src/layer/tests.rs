//! The layer over a scripted in-memory service, in virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::Stream;
use http::HeaderValue;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};

use super::*;
use crate::breaker::State;
use crate::bulkhead::BulkheadRejected;
use crate::classify::{
    GrpcClassifier, HttpClassifier, TransportError, code, grpc_code, transport_error,
};
use crate::config::{BreakerMode, Jitter};

/// What the scripted service does on one call.
#[derive(Debug, Clone, Copy)]
enum Step {
    Status(u16),
    /// A trailers-only gRPC answer: the code in the head.
    Grpc(i32),
    /// A normal gRPC answer: head 200, `len` bytes of message, then the code in the
    /// trailers.
    GrpcTrailers {
        code: i32,
        len: usize,
    },
    /// A `status` head at once, then its body (one byte) after `after`.
    SlowBody {
        status: u16,
        after: Duration,
    },
    /// A `200` head, then a body that fails.
    BrokenBody,
    Sleep(Duration),
    Refused,
    Reset,
}

/// The calls it saw: headers and body.
#[derive(Default)]
struct Log {
    calls: Vec<(HeaderMap, Bytes)>,
}

#[derive(Clone)]
struct Scripted {
    steps: Arc<Mutex<VecDeque<Step>>>,
    log: Arc<Mutex<Log>>,
}

impl Scripted {
    fn new(steps: &[Step]) -> Self {
        Self {
            steps: Arc::new(Mutex::new(steps.iter().cloned().collect())),
            log: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.log.lock().unwrap().calls.len()
    }

    fn headers(&self, i: usize) -> HeaderMap {
        self.log.lock().unwrap().calls[i].0.clone()
    }
}

type Frames = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send>>;
/// The scripted service's response body: any sequence of frames, possibly delayed.
type TestBody = StreamBody<Frames>;

fn frames(frames: Vec<Result<Frame<Bytes>, std::io::Error>>) -> TestBody {
    StreamBody::new(Box::pin(futures_util::stream::iter(frames)))
}

fn grpc_status(code: i32) -> HeaderMap {
    let mut metadata = HeaderMap::new();
    metadata.insert("grpc-status", code.into());
    metadata
}

impl Service<Request<ReplayBody<Full<Bytes>>>> for Scripted {
    type Response = Response<TestBody>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<TestBody>, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReplayBody<Full<Bytes>>>) -> Self::Future {
        let step = self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Status(200));
        let log = Arc::clone(&self.log);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            log.lock().unwrap().calls.push((parts.headers, body));
            let response = |status: u16, body| Response::builder().status(status).body(body);
            match step {
                Step::Status(s) => Ok(response(s, frames(vec![])).unwrap()),
                Step::Grpc(code) => {
                    let mut r = response(200, frames(vec![])).unwrap();
                    r.headers_mut().extend(grpc_status(code));
                    Ok(r)
                }
                Step::GrpcTrailers { code, len } => {
                    let body = frames(vec![
                        Ok(Frame::data(Bytes::from(vec![0; len]))),
                        Ok(Frame::trailers(grpc_status(code))),
                    ]);
                    Ok(response(200, body).unwrap())
                }
                Step::SlowBody { status, after } => {
                    let late = futures_util::stream::once(async move {
                        tokio::time::sleep(after).await;
                        Ok(Frame::data(Bytes::from_static(b"x")))
                    });
                    Ok(response(status, StreamBody::new(Box::pin(late) as Frames)).unwrap())
                }
                Step::BrokenBody => {
                    let body = frames(vec![
                        Ok(Frame::data(Bytes::from_static(b"x"))),
                        Err(std::io::ErrorKind::ConnectionReset.into()),
                    ]);
                    Ok(response(200, body).unwrap())
                }
                Step::Sleep(d) => {
                    tokio::time::sleep(d).await;
                    Ok(response(200, frames(vec![])).unwrap())
                }
                Step::Refused => Err(std::io::ErrorKind::ConnectionRefused.into()),
                Step::Reset => Err(std::io::ErrorKind::ConnectionReset.into()),
            }
        })
    }
}

fn config() -> ResilienceConfig {
    let mut c = ResilienceConfig::default();
    c.timeout.per_attempt = Duration::from_millis(100);
    c.timeout.overall = Duration::from_secs(1);
    c.retry.max_attempts = 4;
    c.retry.initial_backoff = Duration::from_millis(10);
    c.retry.max_backoff = Duration::from_millis(40);
    c.retry.jitter = Jitter::None;
    c.circuit_breaker.minimum_calls = 4;
    c.circuit_breaker.window.size = 4;
    c.circuit_breaker.wait_in_open = Duration::from_secs(5);
    c.validate().unwrap();
    c
}

fn http_service(
    steps: &[Step],
    config: &ResilienceConfig,
) -> (Scripted, Resilience<Scripted, HttpClassifier>) {
    let scripted = Scripted::new(steps);
    let layer = ResilienceLayer::new("test", config, HttpClassifier::new());
    (scripted.clone(), layer.layer(scripted))
}

fn request(body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::post("http://svc/x")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

fn grpc_request() -> Request<Full<Bytes>> {
    Request::post("http://svc/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retries_with_backoff_then_succeeds_replaying_the_body() {
    let (scripted, mut svc) = http_service(
        &[Step::Status(503), Step::Refused, Step::Status(200)],
        &config(),
    );
    let start = Instant::now();
    let response = svc.call(request(b"payload")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(scripted.calls(), 3);
    // Backoffs of 10 ms and 20 ms (no jitter), no time in the calls themselves.
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    let log = scripted.log.lock().unwrap();
    assert!(log.calls.iter().all(|(_, body)| &body[..] == b"payload"));
}

#[tokio::test(start_paused = true)]
async fn permanent_outcomes_are_returned_at_once() {
    let (scripted, mut svc) = http_service(&[Step::Status(400)], &config());
    assert_eq!(svc.call(request(b"")).await.unwrap().status(), 400);
    assert_eq!(scripted.calls(), 1);
    // A broken connection after sending: not retried, the error is the inner one.
    let (scripted, mut svc) = http_service(&[Step::Reset], &config());
    let err = svc.call(request(b"")).await.unwrap_err();
    assert_eq!(
        err.into_inner().unwrap().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    assert_eq!(scripted.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_last_response_comes_back_when_attempts_run_out() {
    let (scripted, mut svc) = http_service(&[Step::Status(503); 4], &config());
    assert_eq!(svc.call(request(b"")).await.unwrap().status(), 503);
    assert_eq!(scripted.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn per_attempt_timeouts_are_retried_and_the_deadline_holds() {
    let hang = Step::Sleep(Duration::from_secs(60));
    let (scripted, mut svc) = http_service(&[hang, Step::Status(200)], &config());
    let start = Instant::now();
    assert_eq!(svc.call(request(b"")).await.unwrap().status(), 200);
    assert_eq!(start.elapsed(), Duration::from_millis(110));
    assert_eq!(scripted.calls(), 2);

    // Every attempt hangs: the overall deadline (250 ms) ends the call, never later.
    let mut c = config();
    c.timeout.overall = Duration::from_millis(250);
    c.retry.max_attempts = 10;
    let (scripted, mut svc) = http_service(&[hang; 10], &c);
    let start = Instant::now();
    let err = svc.call(request(b"")).await.unwrap_err();
    assert!(
        start.elapsed() <= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(
            err,
            ResilienceError::DeadlineExceeded | ResilienceError::Timeout
        ),
        "{err}"
    );
    // 100 + 10 + 100 + 20 = 230 ms; the third attempt gets the last 20 ms or none.
    assert!((2..=3).contains(&scripted.calls()), "{}", scripted.calls());
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_rejects_at_once_with_the_next_probe_time() {
    let mut c = config();
    c.retry.max_attempts = 1;
    let (scripted, mut svc) = http_service(&[Step::Status(503); 4], &c);
    for _ in 0..4 {
        assert_eq!(svc.call(request(b"")).await.unwrap().status(), 503);
    }
    let opened = Instant::now();
    let err = svc.call(request(b"")).await.unwrap_err();
    assert!(err.is_rejection());
    assert_eq!(
        err.next_probe_at(),
        Some(opened + Duration::from_secs(5)),
        "{err}"
    );
    assert_eq!(scripted.calls(), 4, "the open breaker let a call through");

    c.circuit_breaker.mode = BreakerMode::ForcedOpen;
    let (scripted, mut svc) = http_service(&[], &c);
    let err = svc.call(request(b"")).await.unwrap_err();
    assert!(matches!(
        err,
        ResilienceError::CircuitOpen {
            state: State::ForcedOpen,
            next_probe_at: None
        }
    ));
    assert_eq!(scripted.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_rejects() {
    let mut c = config();
    c.bulkhead.max_concurrent = 1;
    c.bulkhead.max_queue = 0;
    let (_, svc) = http_service(&[Step::Sleep(Duration::from_millis(50))], &c);
    let mut first = svc.clone();
    let busy = tokio::spawn(async move { first.call(request(b"")).await.map(|r| r.status()) });
    tokio::task::yield_now().await;
    let err = svc.clone().call(request(b"")).await.unwrap_err();
    assert!(matches!(
        err,
        ResilienceError::BulkheadFull {
            reason: BulkheadRejected::Full
        }
    ));
    assert_eq!(busy.await.unwrap().unwrap(), 200);
}

#[tokio::test(start_paused = true)]
async fn large_bodies_are_sent_once() {
    let scripted = Scripted::new(&[Step::Status(503), Step::Status(200)]);
    let layer = ResilienceLayer::new("test", &config(), HttpClassifier::new()).max_replay_body(4);
    let mut svc = layer.layer(scripted.clone());
    assert_eq!(
        svc.call(request(b"0123456789")).await.unwrap().status(),
        503
    );
    assert_eq!(scripted.calls(), 1);
    assert_eq!(&scripted.log.lock().unwrap().calls[0].1[..], b"0123456789");
}

#[tokio::test(start_paused = true)]
async fn grpc_codes_and_grpc_timeout() {
    let scripted = Scripted::new(&[
        Step::Grpc(code::UNAVAILABLE),
        Step::Grpc(code::OK),
        Step::Grpc(code::INVALID_ARGUMENT),
    ]);
    let layer = ResilienceLayer::new("grpc", &config(), GrpcClassifier::new());
    let mut svc = layer.layer(scripted.clone());
    let response = svc.call(grpc_request()).await.unwrap();
    assert_eq!(grpc_code(&response), code::OK);
    assert_eq!(scripted.calls(), 2);
    // Each attempt is told its time: the per-attempt timeout, 100 ms.
    assert_eq!(scripted.headers(0)[GRPC_TIMEOUT], "100000u");
    let response = svc.call(grpc_request()).await.unwrap();
    assert_eq!(grpc_code(&response), code::INVALID_ARGUMENT);
    assert_eq!(scripted.calls(), 3);

    // The caller's own grpc-timeout shortens the deadline, and is passed on.
    let mut request = grpc_request();
    request
        .headers_mut()
        .insert(GRPC_TIMEOUT, HeaderValue::from_static("30m"));
    svc.call(request).await.unwrap();
    assert_eq!(scripted.headers(3)[GRPC_TIMEOUT], "30000000n");
    // A caller whose time is up gets no attempt at all.
    let mut request = grpc_request();
    request
        .headers_mut()
        .insert(GRPC_TIMEOUT, HeaderValue::from_static("0m"));
    // (For gRPC, the layer's refusal is a trailers-only DEADLINE_EXCEEDED.)
    let response = svc.call(request).await.unwrap();
    assert_eq!(grpc_code(&response), code::DEADLINE_EXCEEDED);
    assert_eq!(scripted.calls(), 4);
}

#[test]
fn grpc_codes_from_http_statuses() {
    let r = |status: u16| {
        let body = ResponseBody::streaming(Full::new(Bytes::from_static(b"x")));
        Response::builder().status(status).body(body).unwrap()
    };
    assert_eq!(grpc_code(&r(200)), code::OK);
    assert_eq!(grpc_code(&r(503)), code::UNAVAILABLE);
    assert_eq!(grpc_code(&r(429)), code::UNAVAILABLE);
    assert_eq!(grpc_code(&r(404)), code::UNIMPLEMENTED);
    assert_eq!(grpc_code(&r(500)), code::UNKNOWN);
    let garbled = Response::builder()
        .header("grpc-status", "x")
        .body(ResponseBody::<Full<Bytes>>::empty())
        .unwrap();
    assert_eq!(grpc_code(&garbled), code::UNKNOWN);
    // A 200 whose body was read whole without a status: the status is missing.
    let missing = Response::new(ResponseBody::<Full<Bytes>>::empty());
    assert_eq!(grpc_code(&missing), code::UNKNOWN);
}

#[test]
fn transport_errors_are_found_in_the_source_chain() {
    #[derive(Debug, thiserror::Error)]
    #[error("client error")]
    struct Wrapper(#[source] std::io::Error);
    let refused = Wrapper(std::io::ErrorKind::ConnectionRefused.into());
    assert_eq!(transport_error(&refused), TransportError::Connect);
    let reset = Wrapper(std::io::ErrorKind::ConnectionReset.into());
    assert_eq!(transport_error(&reset), TransportError::Other);
    let timed_out = Wrapper(std::io::ErrorKind::TimedOut.into());
    assert_eq!(transport_error(&timed_out), TransportError::Timeout);
}

fn grpc_service(
    steps: &[Step],
    config: &ResilienceConfig,
) -> (Scripted, Resilience<Scripted, GrpcClassifier>) {
    let scripted = Scripted::new(steps);
    let layer = ResilienceLayer::new("grpc", config, GrpcClassifier::new());
    (scripted.clone(), layer.layer(scripted))
}

#[tokio::test(start_paused = true)]
async fn a_grpc_error_in_the_trailers_is_retried_like_a_trailers_only_one() {
    let unavailable = Step::GrpcTrailers {
        code: code::UNAVAILABLE,
        len: 5,
    };
    let ok = Step::GrpcTrailers {
        code: code::OK,
        len: 5,
    };
    let (scripted, mut svc) = grpc_service(&[unavailable, ok], &config());
    let response = svc.call(grpc_request()).await.unwrap();
    assert_eq!(grpc_code(&response), code::OK);
    assert_eq!(scripted.calls(), 2);
    let breaker = svc.layer.breaker().snapshot();
    assert_eq!(breaker.calls, 2, "both recorded: the body was read whole");
    assert_eq!(breaker.failure_rate, 50.0);
    // The caller reads the same body and trailers the callee sent.
    let body = response.into_body().collect().await.unwrap();
    assert_eq!(body.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(body.to_bytes().len(), 5);

    // A permanent code in the trailers is returned as it is, not retried, no failure.
    let invalid = Step::GrpcTrailers {
        code: code::INVALID_ARGUMENT,
        len: 5,
    };
    let (scripted, mut svc) = grpc_service(&[invalid], &config());
    let response = svc.call(grpc_request()).await.unwrap();
    assert_eq!(grpc_code(&response), code::INVALID_ARGUMENT);
    assert_eq!(scripted.calls(), 1);
    assert_eq!(svc.layer.breaker().snapshot().failure_rate, 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_grpc_body_over_the_limit_streams_and_its_trailers_count_at_its_end() {
    let unavailable = Step::GrpcTrailers {
        code: code::UNAVAILABLE,
        len: 100,
    };
    for layer in [
        ResilienceLayer::new("grpc", &config(), GrpcClassifier::new()).max_buffered_response(10),
        ResilienceLayer::new("grpc", &config(), GrpcClassifier::new()).max_buffered_response(0),
    ] {
        let scripted = Scripted::new(&[unavailable]);
        let mut svc = layer.layer(scripted.clone());
        let response = svc.call(grpc_request()).await.unwrap();
        // Passed on as it streams: not retried, its status still to come.
        assert_eq!(grpc_code(&response), code::OK);
        assert_eq!(scripted.calls(), 1);
        assert_eq!(
            layer.breaker().snapshot().calls,
            0,
            "not recorded before its end"
        );
        assert_eq!(
            layer.pipeline().bulkhead().in_flight(),
            1,
            "the slot is held"
        );
        let body = response.into_body().collect().await.unwrap();
        assert_eq!(body.trailers().unwrap()["grpc-status"], "14");
        assert_eq!(body.to_bytes().len(), 100);
        let breaker = layer.breaker().snapshot();
        assert_eq!((breaker.calls, breaker.failure_rate), (1, 100.0));
        assert_eq!(layer.pipeline().bulkhead().in_flight(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn the_slot_and_the_timing_end_with_the_body() {
    let mut c = config();
    c.circuit_breaker.slow_call_duration = Duration::from_millis(500);
    c.circuit_breaker.slow_call_rate_threshold = 100.0;
    c.circuit_breaker.minimum_calls = 1;
    c.circuit_breaker.window.size = 1;
    let slow = Step::SlowBody {
        status: 200,
        after: Duration::from_secs(1),
    };
    let (_, mut svc) = http_service(&[slow], &c);
    let response = svc.call(request(b"")).await.unwrap();
    let bulkhead = svc.layer.pipeline().bulkhead();
    assert_eq!(bulkhead.in_flight(), 1, "held while the body streams");
    assert_eq!(svc.layer.breaker().snapshot().calls, 0);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"x");
    assert_eq!(bulkhead.in_flight(), 0);
    // One second of body on a head that came at once: a slow call, which opens it.
    assert_eq!(svc.layer.breaker().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_early_counts_only_a_failure_already_known() {
    let slow = |status| Step::SlowBody {
        status,
        after: Duration::from_secs(1),
    };
    let (_, mut svc) = http_service(&[slow(200), slow(400)], &config());
    // A success whose body nobody reads: a cancelled call, nothing recorded.
    drop(svc.call(request(b"")).await.unwrap());
    assert_eq!(svc.layer.breaker().snapshot().calls, 0);
    assert_eq!(
        svc.layer.pipeline().bulkhead().in_flight(),
        0,
        "slot given back"
    );
    // The same for a permanent answer (a success for the breaker).
    drop(svc.call(request(b"")).await.unwrap());
    assert_eq!(svc.layer.breaker().snapshot().calls, 0);
    // A 503 that is not retried any more (one attempt) and whose body is dropped: the
    // failure counts.
    let mut once = config();
    once.retry.max_attempts = 1;
    let (_, mut svc) = http_service(&[slow(503)], &once);
    let response = svc.call(request(b"")).await.unwrap();
    assert_eq!(response.status(), 503);
    drop(response);
    let breaker = svc.layer.breaker().snapshot();
    assert_eq!((breaker.calls, breaker.failure_rate), (1, 100.0));
    assert_eq!(svc.layer.pipeline().bulkhead().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_fails_midway_is_a_failure() {
    let (_, mut svc) = http_service(&[Step::BrokenBody], &config());
    let response = svc.call(request(b"")).await.unwrap();
    assert_eq!(response.status(), 200);
    let error = response.into_body().collect().await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    let breaker = svc.layer.breaker().snapshot();
    assert_eq!((breaker.calls, breaker.failure_rate), (1, 100.0));
    assert_eq!(svc.layer.pipeline().bulkhead().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn grpc_refusals_are_answered_as_grpc_statuses() {
    // Breaker open: UNAVAILABLE, with the time to the next probe.
    let mut c = config();
    c.retry.max_attempts = 1;
    let (scripted, mut svc) = grpc_service(&[Step::Grpc(code::UNAVAILABLE); 4], &c);
    for _ in 0..4 {
        let response = svc.call(grpc_request()).await.unwrap();
        assert_eq!(grpc_code(&response), code::UNAVAILABLE);
    }
    let response = svc.call(grpc_request()).await.unwrap();
    assert_eq!(scripted.calls(), 4, "refused without a call");
    let headers = response.headers();
    assert_eq!(headers["grpc-status"], "14");
    assert_eq!(headers["grpc-retry-pushback-ms"], "5000");
    assert_eq!(
        headers["grpc-message"],
        "grpc: circuit breaker open: call rejected; next probe in 5s"
    );
    assert!(response.body().is_end_stream());

    // Bulkhead full: RESOURCE_EXHAUSTED.
    c.bulkhead.max_concurrent = 1;
    c.bulkhead.max_queue = 0;
    let (_, svc) = grpc_service(&[Step::Sleep(Duration::from_millis(50))], &c);
    let mut first = svc.clone();
    let busy = tokio::spawn(async move { first.call(grpc_request()).await.map(drop) });
    tokio::task::yield_now().await;
    let response = svc.clone().call(grpc_request()).await.unwrap();
    assert_eq!(grpc_code(&response), code::RESOURCE_EXHAUSTED);
    assert!(response.headers().get("grpc-retry-pushback-ms").is_none());
    busy.await.unwrap().unwrap();

    // The last attempt timed out: DEADLINE_EXCEEDED.
    let (_, mut svc) = grpc_service(&[Step::Sleep(Duration::from_secs(60))], &c);
    let response = svc.call(grpc_request()).await.unwrap();
    assert_eq!(grpc_code(&response), code::DEADLINE_EXCEEDED);
    assert_eq!(
        response.headers()["grpc-message"],
        "grpc: attempt timed out"
    );

    // A transport error stays an error, for the client to map.
    let (_, mut svc) = grpc_service(&[Step::Reset], &c);
    let err = svc.call(grpc_request()).await.unwrap_err();
    assert!(matches!(err, ResilienceError::Inner(_)), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_body_is_dropped_gives_its_probe_slot_back() {
    let mut c = config();
    c.retry.max_attempts = 1;
    c.circuit_breaker.half_open_probes = 1;
    let slow = Step::SlowBody {
        status: 200,
        after: Duration::from_secs(1),
    };
    let mut steps = vec![Step::Status(503); 4];
    steps.extend([slow, slow]);
    let (scripted, mut svc) = http_service(&steps, &c);
    for _ in 0..4 {
        assert_eq!(svc.call(request(b"")).await.unwrap().status(), 503);
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    // The one probe is in flight while its body streams: the next call is refused.
    let probe = svc.call(request(b"")).await.unwrap();
    let err = svc.call(request(b"")).await.unwrap_err();
    assert!(matches!(
        err,
        ResilienceError::CircuitOpen {
            state: State::HalfOpen,
            ..
        }
    ));
    // Dropped unread: a cancelled probe, its slot free for the next call.
    drop(probe);
    let probe = svc.call(request(b"")).await.unwrap();
    assert_eq!(scripted.calls(), 6);
    let _ = probe.into_body().collect().await.unwrap();
    assert_eq!(svc.layer.breaker().state(), State::Closed);
}

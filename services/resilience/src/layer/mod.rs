//! The tower layer: the whole pipeline around an HTTP or gRPC client.
//!
//! [`ResilienceLayer`] wraps any `Service<http::Request<ReplayBody<B>>>` answering
//! `http::Response<RB>` — a hyper-util `Client`, or a tonic `Channel` behind a
//! `map_request(|r| r.map(tonic::body::Body::new))` — into a
//! `Service<http::Request<B>>`. For each call, outermost first:
//!
//! 1. **Overall deadline**: `timeout.overall` from now, or sooner if the request carries a
//!    `grpc-timeout` header (the caller's own deadline). No attempt starts once it has
//!    passed; no retry starts without
//!    [`RetryPolicy::DEFAULT_MIN_ATTEMPT_TIME`](crate::retry::RetryPolicy::DEFAULT_MIN_ATTEMPT_TIME) left (after
//!    its backoff).
//! 2. **Retry** with the [`Retrier`] (backoff, jitter, pushback, budget). The request body
//!    is read into memory once, up to `max_replay_body` bytes ([`DEFAULT_MAX_REPLAY_BODY`]),
//!    and replayed on each attempt; a larger body is sent once, never retried.
//! 3. **Circuit breaker**: each attempt asks for a permit; an open breaker ends the call at
//!    once with [`ResilienceError::CircuitOpen`] (with `next_probe_at`).
//! 4. **Bulkhead**: each attempt takes a slot (waiting in the bounded line, never past the
//!    deadline); a refusal ends the call with [`ResilienceError::BulkheadFull`].
//! 5. **Per-attempt timeout**: `min(timeout.perAttempt, time to the deadline)`, covering the
//!    inner service's readiness and the wait for the response head (not the streaming of the
//!    response body). On a gRPC request (`content-type: application/grpc…`) the same time is
//!    sent in `grpc-timeout`, so the callee knows its deadline.
//!
//! Each attempt's outcome is classified by the classifier given to the layer, through the
//! [`Attempt`] it sees: [`HttpClassifier`] and [`GrpcClassifier`] implement it. The
//! breaker records it (the duration measured from the bulkhead slot to the response head).
//!
//! Which failures without a response are retried: a **connect error** (the request never
//! left: found as an `std::io::Error` of kind `ConnectionRefused`, `AddrNotAvailable`,
//! `NetworkUnreachable` or `HostUnreachable` in the error's `source()` chain, see
//! [`transport_error`]) and a **per-attempt timeout**. Any other transport error (the
//! request may have reached the server) is returned without a retry. All of them, and every
//! timeout, count as failures for the breaker.
//!
//! The response the caller gets is the last attempt's: a `503` after the retries ran out is
//! an `Ok` response, as the inner service gave it. Only what the layer itself decided is an
//! error: [`ResilienceError`].
//!
//! The bulkhead slot and the breaker's timing end with the response head: a response body
//! still streaming holds no slot, and its time is not part of the call's duration.
//!
//! Each call clones the inner service (as tower's own `Retry` does) and allocates its
//! future; [`Resilience::poll_ready`] is always ready, readiness of the inner service is
//! awaited inside each attempt, under its timeout.

mod body;
pub mod grpc_timeout;

use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use tokio::time::{Instant, timeout_at};
use tower_layer::Layer;
use tower_service::Service;

pub use body::ReplayBody;
use body::{Collected, collect};
use grpc_timeout::{GRPC_TIMEOUT, format_grpc_timeout, parse_grpc_timeout};

use crate::breaker::{CircuitBreaker, Outcome, State};
use crate::bulkhead::{Bulkhead, BulkheadRejected};
use crate::config::ResilienceConfig;
use crate::retry::classify::{
    GrpcClassifier, GrpcResponse, HttpClassifier, HttpResponse, TransportError, code,
};
use crate::retry::{Classification, Classify, Retried, Retrier, Stop};

/// Request bodies up to this size (64 KiB) are buffered for retries by default.
pub const DEFAULT_MAX_REPLAY_BODY: usize = 64 * 1024;

/// What the layer decided, or the inner service's error.
#[derive(Debug, thiserror::Error)]
pub enum ResilienceError<E> {
    /// The circuit breaker refused the call. Try again at `next_probe_at` (when known).
    #[error("circuit breaker {state}: call rejected")]
    CircuitOpen {
        /// The breaker's state: `Open`, `HalfOpen` (all probes in flight) or `ForcedOpen`.
        state: State,
        /// When the breaker will admit a probe: the end of its open wait. `None` while
        /// half-open (try again shortly) or forced open.
        next_probe_at: Option<Instant>,
    },
    /// The bulkhead had no slot (and no room, or no time, in its waiting line).
    #[error("{reason}: call rejected")]
    BulkheadFull {
        /// Full at once, or timed out in the line.
        reason: BulkheadRejected,
    },
    /// The caller's deadline passed: before an attempt could start, or during the last one.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The last attempt ran out of `timeout.perAttempt` and no retry was possible.
    #[error("attempt timed out")]
    Timeout,
    /// The inner service failed on the last attempt.
    #[error(transparent)]
    Inner(E),
}

impl<E> ResilienceError<E> {
    /// When the breaker will next admit a call, for a [`ResilienceError::CircuitOpen`].
    pub fn next_probe_at(&self) -> Option<Instant> {
        match self {
            ResilienceError::CircuitOpen { next_probe_at, .. } => *next_probe_at,
            _ => None,
        }
    }

    /// Whether the layer refused the call without the callee seeing it (breaker or
    /// bulkhead): the caller may reschedule it.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            ResilienceError::CircuitOpen { .. } | ResilienceError::BulkheadFull { .. }
        )
    }

    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            ResilienceError::Inner(e) => Some(e),
            _ => None,
        }
    }
}

/// One attempt's outcome, as a classifier sees it.
#[derive(Debug)]
pub enum Attempt<'a, B, E> {
    /// The response head arrived.
    Response(&'a Response<B>),
    /// The inner service failed.
    Error(&'a E),
    /// The attempt ran out of time (its own timeout, or the caller's deadline).
    Timeout,
}

/// Finds what kind of transport error `error` is: [`TransportError::Connect`] if its
/// `source()` chain holds an `std::io::Error` of kind `ConnectionRefused`,
/// `AddrNotAvailable`, `NetworkUnreachable` or `HostUnreachable` (hyper-util's and tonic's
/// connect errors do), [`TransportError::Timeout`] for kind `TimedOut`, otherwise
/// [`TransportError::Other`].
pub fn transport_error(error: &(dyn StdError + 'static)) -> TransportError {
    use std::io::ErrorKind;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::ConnectionRefused
                | ErrorKind::AddrNotAvailable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::HostUnreachable => return TransportError::Connect,
                ErrorKind::TimedOut => return TransportError::Timeout,
                _ => {}
            }
        }
        next = e.source();
    }
    TransportError::Other
}

impl<B, E: StdError + 'static> Classify<Attempt<'_, B, E>> for HttpClassifier {
    fn classify(&self, attempt: &Attempt<'_, B, E>) -> Classification {
        self.classify(&http_response(attempt))
    }

    fn outcome(&self, attempt: &Attempt<'_, B, E>) -> Outcome {
        self.outcome(&http_response(attempt))
    }
}

fn http_response<'a, B, E: StdError + 'static>(attempt: &Attempt<'a, B, E>) -> HttpResponse<'a> {
    match *attempt {
        Attempt::Response(r) => HttpResponse::Response {
            status: r.status(),
            headers: r.headers(),
        },
        Attempt::Error(e) => HttpResponse::Error(transport_error(e)),
        Attempt::Timeout => HttpResponse::Error(TransportError::Timeout),
    }
}

/// The gRPC status of a response head: its `grpc-status` header (a trailers-only response,
/// which is how servers answer an error at once); without one, `OK` for HTTP 200 (the
/// status then comes in the trailers, after the layer is done) and otherwise the status the
/// gRPC specification maps the HTTP status to (`UNAVAILABLE` for 429, 502, 503, 504, …).
pub fn grpc_code<B>(response: &Response<B>) -> i32 {
    if let Some(value) = response.headers().get("grpc-status") {
        return value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(code::UNKNOWN);
    }
    match response.status() {
        StatusCode::OK => code::OK,
        StatusCode::BAD_REQUEST => code::INTERNAL,
        StatusCode::UNAUTHORIZED => code::UNAUTHENTICATED,
        StatusCode::FORBIDDEN => code::PERMISSION_DENIED,
        StatusCode::NOT_FOUND => code::UNIMPLEMENTED,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

impl<B, E: StdError + 'static> Classify<Attempt<'_, B, E>> for GrpcClassifier {
    /// A response by its [`grpc_code`]; a connect error as `UNAVAILABLE` (retryable); any
    /// other transport error as permanent; a timeout as `DEADLINE_EXCEEDED`.
    fn classify(&self, attempt: &Attempt<'_, B, E>) -> Classification {
        match *attempt {
            Attempt::Response(r) => self.classify(&GrpcResponse {
                code: grpc_code(r),
                metadata: r.headers(),
            }),
            Attempt::Error(e) => match transport_error(e) {
                TransportError::Connect => self.classify(&GrpcResponse {
                    code: code::UNAVAILABLE,
                    metadata: &HeaderMap::new(),
                }),
                TransportError::Timeout | TransportError::Other => Classification::Permanent,
            },
            Attempt::Timeout => self.classify(&GrpcResponse {
                code: code::DEADLINE_EXCEEDED,
                metadata: &HeaderMap::new(),
            }),
        }
    }

    /// A response by its [`grpc_code`]; every transport error and timeout is a failure.
    fn outcome(&self, attempt: &Attempt<'_, B, E>) -> Outcome {
        match *attempt {
            Attempt::Response(r) => self.outcome(&GrpcResponse {
                code: grpc_code(r),
                metadata: r.headers(),
            }),
            Attempt::Error(_) | Attempt::Timeout => Outcome::Failure,
        }
    }
}

struct Shared<C> {
    breaker: Arc<CircuitBreaker>,
    retrier: Retrier,
    bulkhead: Bulkhead,
    per_attempt: Duration,
    overall: Duration,
    max_replay_body: usize,
    classifier: C,
}

/// The pipeline as a [`tower_layer::Layer`]. Build one per external service and apply it
/// to every client of that service: clones share the breaker, the retry budget and the
/// bulkhead.
pub struct ResilienceLayer<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for ResilienceLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> fmt::Debug for ResilienceLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayer")
            .field("breaker", &self.shared.breaker)
            .finish_non_exhaustive()
    }
}

impl<C> ResilienceLayer<C> {
    /// The pipeline of `config` (which should have passed
    /// [`ResilienceConfig::validate`]) for the service `name`, classifying attempts with
    /// `classifier` ([`HttpClassifier`] or [`GrpcClassifier`]).
    pub fn new(name: impl Into<String>, config: &ResilienceConfig, classifier: C) -> Self {
        Self::builder(name, config, classifier).build()
    }

    /// A builder, to share an existing breaker (with its observer) or change the replay limit.
    pub fn builder(
        name: impl Into<String>,
        config: &ResilienceConfig,
        classifier: C,
    ) -> ResilienceLayerBuilder<C> {
        ResilienceLayerBuilder {
            name: name.into(),
            config: config.clone(),
            classifier,
            breaker: None,
            retrier: None,
            max_replay_body: DEFAULT_MAX_REPLAY_BODY,
        }
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.shared.breaker
    }

    /// The retry policy and budget.
    pub fn retrier(&self) -> &Retrier {
        &self.shared.retrier
    }

    /// The bulkhead.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.shared.bulkhead
    }
}

/// Builds a [`ResilienceLayer`].
pub struct ResilienceLayerBuilder<C> {
    name: String,
    config: ResilienceConfig,
    classifier: C,
    breaker: Option<Arc<CircuitBreaker>>,
    retrier: Option<Retrier>,
    max_replay_body: usize,
}

impl<C> fmt::Debug for ResilienceLayerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayerBuilder")
            .field("name", &self.name)
            .field("max_replay_body", &self.max_replay_body)
            .finish_non_exhaustive()
    }
}

impl<C> ResilienceLayerBuilder<C> {
    /// Uses this breaker instead of a new one from `circuitBreaker` (to attach a
    /// [`crate::breaker::BreakerObserver`], or to share it).
    pub fn breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Uses this retrier instead of a new one from `retry` (to share a budget).
    pub fn retrier(mut self, retrier: Retrier) -> Self {
        self.retrier = Some(retrier);
        self
    }

    /// Request bodies up to `bytes` are buffered for retries; larger ones are sent once.
    /// `0` buffers only empty bodies.
    pub fn max_replay_body(mut self, bytes: usize) -> Self {
        self.max_replay_body = bytes;
        self
    }

    /// The layer.
    pub fn build(self) -> ResilienceLayer<C> {
        let config = self.config;
        let breaker = self
            .breaker
            .unwrap_or_else(|| Arc::new(CircuitBreaker::new(self.name, &config.circuit_breaker)));
        ResilienceLayer {
            shared: Arc::new(Shared {
                breaker,
                retrier: self.retrier.unwrap_or_else(|| Retrier::new(&config.retry)),
                bulkhead: Bulkhead::new(&config.bulkhead),
                per_attempt: config.timeout.per_attempt,
                overall: config.timeout.overall,
                max_replay_body: self.max_replay_body,
                classifier: self.classifier,
            }),
        }
    }
}

impl<S, C> Layer<S> for ResilienceLayer<C> {
    type Service = Resilience<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Resilience {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`ResilienceLayer`].
pub struct Resilience<S, C> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for Resilience<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Resilience<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilience")
            .field("inner", &self.inner)
            .field("breaker", &self.shared.breaker)
            .finish_non_exhaustive()
    }
}

type CallResult<RB, E> = Result<Response<RB>, ResilienceError<E>>;

impl<S, C, B, RB> Service<Request<B>> for Resilience<S, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Send,
    RB: Send + 'static,
    C: for<'a> Classify<Attempt<'a, RB, S::Error>> + Send + Sync + 'static,
{
    type Response = Response<RB>;
    type Error = ResilienceError<S::Error>;
    type Future = Pin<Box<dyn Future<Output = CallResult<RB, S::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { shared.call(inner, request).await.value })
    }
}

impl<C> Shared<C> {
    /// The whole call: deadline, body, attempts.
    async fn call<S, B, RB>(
        &self,
        inner: S,
        request: Request<B>,
    ) -> Retried<CallResult<RB, S::Error>>
    where
        S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone,
        B: Body<Data = Bytes> + Unpin,
        C: for<'a> Classify<Attempt<'a, RB, S::Error>>,
    {
        let start = Instant::now();
        let mut deadline = start + self.overall;
        if let Some(callers) = request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(parse_grpc_timeout)
        {
            deadline = deadline.min(start + callers);
        }
        let (parts, body) = request.into_parts();
        let collected = collect(body, self.max_replay_body).await;
        if Instant::now() >= deadline {
            return Retried {
                value: Err(ResilienceError::DeadlineExceeded),
                attempts: 0,
                stop: Stop::Deadline,
            };
        }
        let (data, trailers) = match collected {
            Collected::Buffered { data, trailers } => (data, trailers),
            Collected::Once(body) => {
                // Too large to replay: one attempt, no retry.
                let value = self
                    .attempt(inner, Request::from_parts(parts, body), deadline)
                    .await;
                let stop = match self.classify(&value) {
                    Classification::Success => Stop::Success,
                    _ => Stop::Permanent,
                };
                return Retried {
                    value,
                    attempts: 1,
                    stop,
                };
            }
        };
        let classify = |value: &CallResult<RB, S::Error>| self.classify(value);
        self.retrier
            .run(Some(deadline), &classify, move |_| {
                let mut request =
                    Request::new(ReplayBody::buffered(data.clone(), trailers.clone()));
                *request.method_mut() = parts.method.clone();
                *request.uri_mut() = parts.uri.clone();
                *request.version_mut() = parts.version;
                *request.headers_mut() = parts.headers.clone();
                *request.extensions_mut() = parts.extensions.clone();
                self.attempt(inner.clone(), request, deadline)
            })
            .await
    }

    /// One attempt: breaker, bulkhead, timeout, the inner service; records the outcome.
    async fn attempt<S, B, RB>(
        &self,
        mut inner: S,
        mut request: Request<ReplayBody<B>>,
        deadline: Instant,
    ) -> CallResult<RB, S::Error>
    where
        S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
        B: Body,
        C: for<'a> Classify<Attempt<'a, RB, S::Error>>,
    {
        let permit =
            self.breaker
                .try_acquire()
                .map_err(|rejected| ResilienceError::CircuitOpen {
                    state: rejected.state,
                    next_probe_at: rejected.next_probe_at,
                })?;
        let slot = match timeout_at(deadline, self.bulkhead.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(reason)) => return Err(ResilienceError::BulkheadFull { reason }),
            Err(_) => return Err(ResilienceError::DeadlineExceeded),
        };
        let started = Instant::now();
        let attempt_deadline = deadline.min(started + self.per_attempt);
        if is_grpc(request.headers()) {
            let left = attempt_deadline.saturating_duration_since(started);
            request
                .headers_mut()
                .insert(GRPC_TIMEOUT, format_grpc_timeout(left));
        }
        let result = timeout_at(attempt_deadline, async {
            poll_fn(|cx| inner.poll_ready(cx)).await?;
            inner.call(request).await
        })
        .await;
        let elapsed = started.elapsed();
        drop(slot);
        let (value, outcome) = match result {
            Ok(Ok(response)) => {
                let outcome = self.classifier.outcome(&Attempt::Response(&response));
                (Ok(response), outcome)
            }
            Ok(Err(error)) => {
                let outcome = self.classifier.outcome(&Attempt::<RB, _>::Error(&error));
                (Err(ResilienceError::Inner(error)), outcome)
            }
            Err(_) => {
                let outcome = self.classifier.outcome(&Attempt::<RB, S::Error>::Timeout);
                let error = if attempt_deadline < deadline {
                    ResilienceError::Timeout
                } else {
                    ResilienceError::DeadlineExceeded
                };
                (Err(error), outcome)
            }
        };
        permit.record(outcome, elapsed);
        value
    }

    /// Whether to retry after an attempt: the classifier's call for what the callee did;
    /// the layer's own refusals and the caller's deadline are final.
    fn classify<RB, E>(&self, value: &CallResult<RB, E>) -> Classification
    where
        C: for<'a> Classify<Attempt<'a, RB, E>>,
    {
        match value {
            Ok(response) => self.classifier.classify(&Attempt::Response(response)),
            Err(ResilienceError::Inner(error)) => {
                self.classifier.classify(&Attempt::<RB, E>::Error(error))
            }
            Err(ResilienceError::Timeout) => self.classifier.classify(&Attempt::<RB, E>::Timeout),
            Err(
                ResilienceError::CircuitOpen { .. }
                | ResilienceError::BulkheadFull { .. }
                | ResilienceError::DeadlineExceeded,
            ) => Classification::Permanent,
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests;

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
//! [`Attempt`] it sees: [`HttpClassifier`](crate::retry::classify::HttpClassifier) and
//! [`GrpcClassifier`](crate::retry::classify::GrpcClassifier) implement it. The
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
//! The layer is the [`Pipeline`] with the operation "send this request". What it adds per
//! call: its boxed future (one allocation), a copy of the request head for each attempt
//! (the request is consumed by the inner service; a retry needs another — tower's own
//! `Retry` clones it the same way) and a clone of the inner service per attempt.
//! [`Resilience::poll_ready`] is always ready: readiness of the inner service is awaited
//! inside each attempt, under its timeout.

mod body;
mod classify;
pub mod grpc_timeout;

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

pub use body::ReplayBody;
use body::{Collected, collect};
pub use classify::{grpc_code, transport_error};
use grpc_timeout::{GRPC_TIMEOUT, format_grpc_timeout, parse_grpc_timeout};

use crate::config::ResilienceConfig;
use crate::pipeline::{Attempt, AttemptContext, Executed, Pipeline, deadline};
use crate::retry::{Classify, Retried, Retrier, Stop};

pub use crate::pipeline::ResilienceError;

/// Request bodies up to this size (64 KiB) are buffered for retries by default.
pub const DEFAULT_MAX_REPLAY_BODY: usize = 64 * 1024;

/// The pipeline as a [`tower_layer::Layer`]. Build one per external service and apply it
/// to every client of that service: clones share the breaker, the retry budget and the
/// bulkhead.
pub struct ResilienceLayer<C> {
    pipeline: Arc<Pipeline<C>>,
    max_replay_body: usize,
    /// `grpc-timeout` for an attempt that has the whole `timeout.perAttempt`, made once.
    per_attempt_header: HeaderValue,
}

impl<C> Clone for ResilienceLayer<C> {
    fn clone(&self) -> Self {
        Self {
            pipeline: Arc::clone(&self.pipeline),
            max_replay_body: self.max_replay_body,
            per_attempt_header: self.per_attempt_header.clone(),
        }
    }
}

impl<C> fmt::Debug for ResilienceLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayer")
            .field("pipeline", &self.pipeline)
            .field("max_replay_body", &self.max_replay_body)
            .finish_non_exhaustive()
    }
}

impl<C> ResilienceLayer<C> {
    /// The pipeline of `config` (which should have passed
    /// [`ResilienceConfig::validate`]) for the service `name`, classifying attempts with
    /// `classifier` ([`HttpClassifier`](crate::retry::classify::HttpClassifier) or
    /// [`GrpcClassifier`](crate::retry::classify::GrpcClassifier)).
    pub fn new(name: impl Into<String>, config: &ResilienceConfig, classifier: C) -> Self {
        Self::from_pipeline(Arc::new(Pipeline::new(name, config, classifier)))
    }

    /// The layer of an existing pipeline: one built with [`Pipeline::builder`] (to attach a
    /// breaker observer or share a retry budget), or one shared with direct
    /// [`Pipeline::execute`] callers.
    pub fn from_pipeline(pipeline: Arc<Pipeline<C>>) -> Self {
        let per_attempt_header = format_grpc_timeout(pipeline.per_attempt());
        Self {
            pipeline,
            max_replay_body: DEFAULT_MAX_REPLAY_BODY,
            per_attempt_header,
        }
    }

    /// Request bodies up to `bytes` (default [`DEFAULT_MAX_REPLAY_BODY`]) are buffered for
    /// retries; larger ones are sent once. `0` buffers only empty bodies.
    pub fn max_replay_body(mut self, bytes: usize) -> Self {
        self.max_replay_body = bytes;
        self
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Arc<Pipeline<C>> {
        &self.pipeline
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &Arc<crate::CircuitBreaker> {
        self.pipeline.breaker()
    }

    /// The retry policy and budget.
    pub fn retrier(&self) -> &Retrier {
        self.pipeline.retrier()
    }

    /// The bulkhead.
    pub fn bulkhead(&self) -> &crate::Bulkhead {
        self.pipeline.bulkhead()
    }
}

impl<S, C> Layer<S> for ResilienceLayer<C> {
    type Service = Resilience<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Resilience {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`ResilienceLayer`].
pub struct Resilience<S, C> {
    inner: S,
    layer: ResilienceLayer<C>,
}

impl<S: Clone, C> Clone for Resilience<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Resilience<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilience")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
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
    C: for<'a> Classify<Attempt<'a, Response<RB>, S::Error>> + Send + Sync + 'static,
{
    type Response = Response<RB>;
    type Error = ResilienceError<S::Error>;
    type Future = Pin<Box<dyn Future<Output = CallResult<RB, S::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let layer = self.layer.clone();
        Box::pin(async move { layer.call(inner, request).await.value })
    }
}

impl<C> ResilienceLayer<C> {
    /// The whole call: deadline, body, attempts.
    async fn call<S, B, RB>(
        &self,
        inner: S,
        request: Request<B>,
    ) -> Executed<Response<RB>, S::Error>
    where
        S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone,
        B: Body<Data = Bytes> + Unpin,
        C: for<'a> Classify<Attempt<'a, Response<RB>, S::Error>>,
    {
        let now = Instant::now();
        let callers = request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(parse_grpc_timeout)
            .and_then(|left| now.checked_add(left));
        let deadline = self.pipeline.deadline_at(now, callers);
        let (mut parts, body) = request.into_parts();
        let grpc = is_grpc(&parts.headers);
        if grpc {
            // Make room for the header now, so the copies made for each attempt have it
            // and replacing its value does not grow them.
            parts
                .headers
                .insert(GRPC_TIMEOUT, self.per_attempt_header.clone());
        }
        let with_timeout = |mut request: Request<ReplayBody<B>>, context: AttemptContext| {
            if grpc {
                let value = if context.timeout == self.pipeline.per_attempt() {
                    self.per_attempt_header.clone()
                } else {
                    format_grpc_timeout(context.timeout)
                };
                request.headers_mut().insert(GRPC_TIMEOUT, value);
            }
            request
        };
        let collected = match deadline::until(deadline, collect(body, self.max_replay_body)).await {
            Ok(collected) => collected,
            Err(_) => {
                return Retried {
                    value: Err(ResilienceError::DeadlineExceeded),
                    attempts: 0,
                    stop: Stop::Deadline,
                };
            }
        };
        match collected {
            Collected::Buffered { data, trailers } => {
                self.pipeline
                    .execute_until(deadline, move |context| {
                        let mut request =
                            Request::new(ReplayBody::buffered(data.clone(), trailers.clone()));
                        *request.method_mut() = parts.method.clone();
                        *request.uri_mut() = parts.uri.clone();
                        *request.version_mut() = parts.version;
                        *request.headers_mut() = parts.headers.clone();
                        *request.extensions_mut() = parts.extensions.clone();
                        send(inner.clone(), with_timeout(request, context))
                    })
                    .await
            }
            // Too large to replay: one attempt, no retry.
            Collected::Once(body) => {
                self.pipeline
                    .execute_once(deadline, |context| {
                        let request = Request::from_parts(parts, body);
                        send(inner, with_timeout(request, context))
                    })
                    .await
            }
        }
    }
}

/// Waits for `inner` to be ready, then calls it.
async fn send<S, Q>(mut inner: S, request: Q) -> Result<S::Response, S::Error>
where
    S: Service<Q>,
{
    poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(request).await
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests;

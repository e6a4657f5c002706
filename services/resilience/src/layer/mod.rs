//! The tower layer: the whole pipeline around an HTTP or gRPC client.
//!
//! [`ResilienceLayer`] wraps any `Service<http::Request<ReplayBody<B>>>` answering
//! `http::Response<RB>` — a hyper-util `Client`, or a tonic `Channel` behind a
//! `map_request(|r| r.map(tonic::body::Body::new))` — into a `Service<http::Request<B>>`
//! answering `http::Response<ResponseBody<RB>>`. For each call, outermost first:
//!
//! 1. **Overall deadline**: `timeout.overall` from now, or sooner if the request carries a
//!    `grpc-timeout` header (the caller's own deadline). No attempt starts once it has
//!    passed; no retry starts without
//!    [`RetryPolicy::DEFAULT_MIN_ATTEMPT_TIME`](crate::retry::RetryPolicy::DEFAULT_MIN_ATTEMPT_TIME)
//!    left (after its backoff).
//! 2. **Retry** with the [`Retrier`](crate::Retrier) (backoff, jitter, pushback, budget).
//!    The request body is read into memory once, up to `max_replay_body` bytes
//!    ([`DEFAULT_MAX_REPLAY_BODY`]), and replayed on each attempt; a larger body is sent
//!    once, never retried.
//! 3. **Circuit breaker**: each attempt asks for a permit; an open breaker ends the call at
//!    once with [`ResilienceError::CircuitOpen`] (with `next_probe_at`).
//! 4. **Bulkhead**: each attempt takes a slot (waiting in the bounded line, never past the
//!    deadline); a refusal ends the call with [`ResilienceError::BulkheadFull`].
//! 5. **Per-attempt timeout**: `min(timeout.perAttempt, time to the deadline)`, covering the
//!    inner service's readiness, the wait for the response head and, for gRPC, reading the
//!    response body ahead (below). On a gRPC request (`content-type: application/grpc…`)
//!    the same time is sent in `grpc-timeout`, so the callee knows its deadline.
//!
//! # Building the clients
//!
//! One layer per external service (clones share its breaker, budget and bulkhead). Over
//! HTTP, a hyper-util `Client<_, ReplayBody<B>>` goes under it as it is:
//! `ResilienceLayer::new("inventory", &config, HttpClassifier::new()).layer(client)`. Over
//! gRPC, a tonic `Channel` goes under it behind one `map_request`, and a generated client
//! goes on top:
//!
//! ```no_run
//! use appstack_resilience::classify::GrpcClassifier;
//! use appstack_resilience::{ReplayBody, ResilienceConfig, ResilienceLayer};
//! use tonic_types::StatusExt;
//! use tower::ServiceBuilder;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ResilienceConfig::default();
//! let layer = ResilienceLayer::new("processor", &config, GrpcClassifier::new());
//! let channel =
//!     tonic::transport::Endpoint::from_static("http://processor:50051").connect_lazy();
//! let service = ServiceBuilder::new()
//!     .layer(layer.clone())
//!     .map_request(|r: http::Request<ReplayBody<tonic::body::Body>>| {
//!         r.map(tonic::body::Body::new)
//!     })
//!     .service(channel);
//! // `ProcessorClient::new(service)` for a generated client; here tonic's own.
//! let mut client = tonic::client::Grpc::new(service);
//! # client.ready().await?;
//! # let path = http::uri::PathAndQuery::from_static("/pkg.Processor/Process");
//! # let codec = tonic_prost::ProstCodec::<(), ()>::default();
//! match client.unary(tonic::Request::new(()), path, codec).await {
//!     Ok(_) => {}
//!     // A refusal by the layer: the code is right, and the details say which refusal.
//!     Err(status) => match status.get_error_details().error_info() {
//!         Some(info) if info.reason == "CIRCUIT_OPEN" || info.reason == "BULKHEAD_FULL" => {
//!             // Not seen by the callee: reschedule, after the RetryInfo's delay if any.
//!             let _wait = status.get_error_details().retry_info().and_then(|r| r.retry_delay);
//!         }
//!         _ => { /* the callee's answer, or our timeout (DEADLINE_EXCEEDED) */ }
//!     },
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # gRPC: the status in the trailers
//!
//! A gRPC server may send an error in the trailers of a normal response (head `200`
//! without `grpc-status`, then the trailers) instead of trailers-only. So that it counts as
//! that error — retried if retryable, a failure for the breaker — the layer reads a gRPC
//! response body ahead, into memory, before answering, up to `max_buffered_response` bytes
//! ([`DEFAULT_MAX_BUFFERED_RESPONSE`]): a unary response is then judged by its real status
//! ([`grpc_code`](crate::classify::grpc_code) reads the trailers) and, if retried, never
//! reaches the caller. A longer response is passed on as it streams after what was read;
//! it is no longer retried, and its trailers are judged at its end, for the breaker only
//! ([`StreamEnd`]). A server-streaming method goes through a layer of the same pipeline
//! with `max_buffered_response(0)` (no reading ahead: messages reach the caller as they
//! come, and the stream's end is judged the same way).
//!
//! # The slot and the breaker's timing end with the body
//!
//! An attempt's outcome is judged on its response head (and for gRPC what was read ahead).
//! A response that is retried is recorded then. The response the caller gets holds the
//! attempt's bulkhead slot and breaker permit in its [`ResponseBody`] until the callee's
//! part of the body ends: then the breaker records the call, timed from the slot to the
//! end (so a slow body is a slow call), a body that fails mid-way or a gRPC status in the
//! trailers making it a failure. A body already whole (read ahead, or empty) is recorded at
//! once. A body dropped before its end gives its slot back and records nothing, like a
//! cancelled call — unless its head already showed a failure (a `503` whose body nobody
//! reads), which is recorded.
//!
//! # Classification and errors
//!
//! Each attempt's outcome is classified by the classifier given to the layer, through the
//! [`Attempt`] it sees: [`HttpClassifier`](crate::classify::HttpClassifier) and
//! [`GrpcClassifier`](crate::classify::GrpcClassifier) implement it.
//!
//! Which failures without a response are retried: a **connect error** (the request never
//! left: found as an `std::io::Error` of kind `ConnectionRefused`, `AddrNotAvailable`,
//! `NetworkUnreachable` or `HostUnreachable` in the error's `source()` chain, see
//! [`transport_error`](crate::classify::transport_error)) and a **per-attempt timeout**. Any
//! other transport error (the request may have reached the server) is returned without a
//! retry. All of them, and every timeout, count as failures for the breaker.
//!
//! The response the caller gets is the last attempt's: a `503` after the retries ran out is
//! an `Ok` response, as the inner service gave it. What the layer itself decided is a
//! [`ResilienceError`] — for an HTTP request. For a gRPC request, the layer's own refusals
//! (breaker open, bulkhead full, deadline, attempt timeout) are answered as the gRPC
//! response a server would send: trailers-only, with the status of
//! [`ResilienceError::grpc_status`] (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`,
//! `DEADLINE_EXCEEDED`), a message naming the service, `grpc-retry-pushback-ms` and a
//! `google.rpc.RetryInfo` when the next probe's time is known, and a `google.rpc.ErrorInfo`
//! whose reason says which refusal it was. A tonic client then reads it as a `Status` with
//! that code (rather than `UNKNOWN`, its mapping of any service error). A transport error
//! of the last attempt stays an error ([`ResilienceError::Inner`]), which tonic maps.
//!
//! # Cost
//!
//! The layer is the [`Pipeline`] with the operation "send this request". What it adds per
//! call: its boxed future (one allocation), a copy of the request head for each attempt
//! (the request is consumed by the inner service; a retry needs another — tower's own
//! `Retry` clones it the same way), a clone of the inner service per attempt, and for a
//! response body still streaming, the references its slot and permit hold (two reference
//! counts, three for a gRPC body whose status is to come). [`Resilience::poll_ready`] is
//! always ready: readiness of the inner service is awaited inside each attempt, under its
//! timeout.

mod body;
pub mod grpc_timeout;
mod refusal;
mod response;

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
use grpc_timeout::{GRPC_TIMEOUT, format_grpc_timeout, parse_grpc_timeout};
pub use response::ResponseBody;
use response::{Guard, JudgeEnd};

use crate::classify::{Classify, GRPC_STATUS, StreamEnd};
use crate::config::ResilienceConfig;
use crate::pipeline::{Admission, Attempt, AttemptContext, Keep, Pipeline, deadline};

pub use crate::pipeline::ResilienceError;

/// Request bodies up to this size (64 KiB) are buffered for retries by default.
pub const DEFAULT_MAX_REPLAY_BODY: usize = 64 * 1024;

/// gRPC response bodies up to this size (64 KiB) are read ahead by default, so that a
/// status in their trailers is judged (and retried) before the layer answers.
pub const DEFAULT_MAX_BUFFERED_RESPONSE: usize = 64 * 1024;

/// The pipeline as a [`tower_layer::Layer`]. Build one per external service and apply it
/// to every client of that service: clones share the breaker, the retry budget and the
/// bulkhead.
pub struct ResilienceLayer<C> {
    pipeline: Arc<Pipeline<C>>,
    max_replay_body: usize,
    max_buffered_response: usize,
    /// `grpc-timeout` for an attempt that has the whole `timeout.perAttempt`, made once.
    per_attempt_header: HeaderValue,
}

impl<C> Clone for ResilienceLayer<C> {
    fn clone(&self) -> Self {
        Self {
            pipeline: Arc::clone(&self.pipeline),
            max_replay_body: self.max_replay_body,
            max_buffered_response: self.max_buffered_response,
            per_attempt_header: self.per_attempt_header.clone(),
        }
    }
}

impl<C> fmt::Debug for ResilienceLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayer")
            .field("pipeline", &self.pipeline)
            .field("max_replay_body", &self.max_replay_body)
            .field("max_buffered_response", &self.max_buffered_response)
            .finish_non_exhaustive()
    }
}

impl<C> ResilienceLayer<C> {
    /// The pipeline of `config` (which should have passed
    /// [`ResilienceConfig::validate`]) for the service `name`, classifying attempts with
    /// `classifier` ([`HttpClassifier`](crate::classify::HttpClassifier) or
    /// [`GrpcClassifier`](crate::classify::GrpcClassifier)).
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
            max_buffered_response: DEFAULT_MAX_BUFFERED_RESPONSE,
            per_attempt_header,
        }
    }

    /// Request bodies up to `bytes` (default [`DEFAULT_MAX_REPLAY_BODY`]) are buffered for
    /// retries; larger ones are sent once. `0` buffers only empty bodies.
    pub fn max_replay_body(mut self, bytes: usize) -> Self {
        self.max_replay_body = bytes;
        self
    }

    /// gRPC response bodies up to `bytes` (default [`DEFAULT_MAX_BUFFERED_RESPONSE`]) are
    /// read ahead before the layer answers, so that a status in their trailers is judged,
    /// and retried, like one in the head; a longer one is passed on as it streams, judged
    /// at its end for the breaker only. `0` reads nothing ahead: for server-streaming
    /// methods, whose messages must reach the caller as they come (use a layer of the same
    /// pipeline, [`Self::from_pipeline`], for them).
    pub fn max_buffered_response(mut self, bytes: usize) -> Self {
        self.max_buffered_response = bytes;
        self
    }

    /// The pipeline (its breaker, retrier and bulkhead).
    pub fn pipeline(&self) -> &Arc<Pipeline<C>> {
        &self.pipeline
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &Arc<crate::CircuitBreaker> {
        self.pipeline.breaker()
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

type CallResult<RB, E> = Result<Response<ResponseBody<RB>>, ResilienceError<E>>;

impl<S, C, B, RB> Service<Request<B>> for Resilience<S, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Send,
    RB: Body<Data = Bytes> + Unpin + Send + 'static,
    RB::Error: Send,
    C: for<'a> Classify<Attempt<'a, Response<ResponseBody<RB>>, S::Error>>
        + for<'a> Classify<StreamEnd<'a>>
        + Send
        + Sync
        + 'static,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = ResilienceError<S::Error>;
    type Future = Pin<Box<dyn Future<Output = CallResult<RB, S::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let layer = self.layer.clone();
        Box::pin(async move { layer.call(inner, request).await })
    }
}

impl<C> ResilienceLayer<C> {
    /// The whole call: deadline, body, attempts, and for gRPC the refusals as statuses.
    async fn call<S, B, RB>(&self, inner: S, request: Request<B>) -> CallResult<RB, S::Error>
    where
        S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone,
        B: Body<Data = Bytes> + Unpin,
        RB: Body<Data = Bytes> + Unpin,
        C: for<'a> Classify<Attempt<'a, Response<ResponseBody<RB>>, S::Error>>
            + for<'a> Classify<StreamEnd<'a>>
            + Send
            + Sync
            + 'static,
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
        let read_ahead = if grpc { self.max_buffered_response } else { 0 };
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
                let error = ResilienceError::DeadlineExceeded;
                return self.refusal(grpc, &error).ok_or(error);
            }
        };
        let executed = match collected {
            Collected::Buffered { data, trailers } => {
                let attempt = move |context| {
                    let mut request =
                        Request::new(ReplayBody::buffered(data.clone(), trailers.clone()));
                    *request.method_mut() = parts.method.clone();
                    *request.uri_mut() = parts.uri.clone();
                    *request.version_mut() = parts.version;
                    *request.headers_mut() = parts.headers.clone();
                    *request.extensions_mut() = parts.extensions.clone();
                    send(inner.clone(), with_timeout(request, context), read_ahead)
                };
                self.pipeline
                    .run(Instant::now(), deadline, attempt, Keep)
                    .await
            }
            // Too large to replay: one attempt, no retry.
            Collected::Once(body) => {
                let attempt = |context| {
                    let request = Request::from_parts(parts, body);
                    send(inner, with_timeout(request, context), read_ahead)
                };
                self.pipeline.once(deadline, attempt, Keep).await
            }
        };
        match executed.value {
            Ok((response, admission)) => Ok(self.settle(response, admission, grpc)),
            Err(error) => self.refusal(grpc, &error).ok_or(error),
        }
    }

    /// The answer the caller gets for `response`, the last attempt's: it holds the
    /// attempt's slot and permit until its body ends, unless the callee's part is over.
    fn settle<RB>(
        &self,
        mut response: Response<ResponseBody<RB>>,
        admission: Admission<'_>,
        grpc: bool,
    ) -> Response<ResponseBody<RB>>
    where
        RB: Body,
        C: for<'a> Classify<StreamEnd<'a>> + Send + Sync + 'static,
    {
        if response.body().received_all() {
            admission.record();
            return response;
        }
        // The gRPC status is still to come, in the trailers: the classifier judges them.
        let judge = (grpc && !response.headers().contains_key(GRPC_STATUS))
            .then(|| Arc::clone(&self.pipeline) as Arc<dyn JudgeEnd>);
        response
            .body_mut()
            .hold(Guard::new(self.pipeline.own(admission), judge));
        response
    }

    /// For a gRPC request, the layer's own decision `error` as the gRPC answer a client
    /// reads (`None` for an HTTP request, or the operation's own error).
    fn refusal<RB: Body, E>(
        &self,
        grpc: bool,
        error: &ResilienceError<E>,
    ) -> Option<Response<ResponseBody<RB>>> {
        if !grpc {
            return None;
        }
        let status = error.grpc_status(self.pipeline.breaker().name())?;
        Some(refusal::response(&status))
    }
}

/// Waits for `inner` to be ready, calls it, and for gRPC reads the response body ahead
/// (up to `read_ahead` bytes; `0`: not at all).
async fn send<S, Q, RB>(
    mut inner: S,
    request: Q,
    read_ahead: usize,
) -> Result<Response<ResponseBody<RB>>, S::Error>
where
    S: Service<Q, Response = Response<RB>>,
    RB: Body<Data = Bytes> + Unpin,
{
    poll_fn(|cx| inner.poll_ready(cx)).await?;
    let response = inner.call(request).await?;
    if read_ahead == 0 {
        return Ok(response.map(ResponseBody::streaming));
    }
    let (parts, body) = response.into_parts();
    let body = ResponseBody::read_ahead(body, read_ahead).await;
    Ok(Response::from_parts(parts, body))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests;

//! Resilience for outgoing calls: circuit breaker, retry with a budget, bulkhead, timeouts,
//! the tower layer that puts them around an HTTP or gRPC client, and the one configuration
//! type that drives them.
//!
//! Every call from an AppStack service to an external service goes through this pipeline.
//! The crate is transport-agnostic: it knows nothing of our services; its core is free of
//! I/O, and its layer speaks only the `http` crate's types, so it wraps a hyper-util
//! `Client` and a tonic `Channel` alike (without depending on either). Its parts are plain
//! values shared by all callers of one external service:
//!
//! - [`Pipeline`]: the whole pipeline around any async operation
//!   ([`Pipeline::execute`]): the overall deadline, retries, the breaker, the bulkhead and
//!   the per-attempt timeout, judged by a classifier, with a typed [`ResilienceError`]
//!   whose `CircuitOpen` names the next probe time. No allocation on the success path.
//! - [`layer::ResilienceLayer`]: the pipeline as a `tower` layer over any
//!   `Service<http::Request<_>>` answering `http::Response<_>`: it also takes the deadline
//!   from an incoming `grpc-timeout`, resends a buffered request body on retries
//!   ([`layer::ReplayBody`]), passes each attempt's time on in `grpc-timeout`, reads a gRPC
//!   response ahead so that a status in its trailers is judged (and retried) as that status,
//!   keeps the attempt's bulkhead slot and breaker timing until the response body ends
//!   ([`layer::ResponseBody`]), and answers its own refusals of a gRPC call as gRPC
//!   statuses ([`ResilienceError::grpc_status`]) that a tonic client reads with the right
//!   code.
//! - [`breaker::CircuitBreaker`]: a state machine over a sliding window of outcomes
//!   (count- or time-based). It opens when the failure rate or the slow-call rate reaches
//!   its threshold once `minimumCalls` are recorded, rejects at once while open (exposing
//!   [`breaker::CircuitBreaker::next_probe_at`], so a job can be rescheduled to it), lets
//!   `halfOpenProbes` probe calls through after `waitInOpen`, and closes when they all
//!   succeed or reopens when one fails. It can be forced open or disabled. Each transition
//!   is a `tracing` event and is reported to a [`breaker::BreakerObserver`]
//!   ([`breaker::PrometheusObserver`] counts them with prometheus-client).
//! - [`classify`]: the [`classify::Classify`] trait turning an attempt's outcome into
//!   `Success | Retryable { pushback } | Permanent | StopRetrying` and a breaker
//!   [`breaker::Outcome`], with classifiers for gRPC ([`classify::GrpcClassifier`], status
//!   codes as `i32`, `grpc-retry-pushback-ms`, the status in the head or the trailers) and
//!   HTTP ([`classify::HttpClassifier`], `Retry-After`).
//! - [`retry`]: a [`retry::RetryPolicy`] (exponential backoff with full jitter, the
//!   server's pushback overriding it, no attempt started that could not finish before the
//!   caller's deadline) and a [`retry::RetryBudget`] (a share of recent calls plus a small
//!   floor) capping the extra load in an outage, held together by a [`Retrier`]; the
//!   pipeline's loop drives them.
//! - [`bulkhead::Bulkhead`]: at most `maxConcurrent` calls in flight, at most `maxQueue`
//!   waiting for at most `queueTimeout`, everything beyond rejected at once.
//! - [`ResilienceConfig`]: their settings, one serde + schemars type used in the services'
//!   configuration files and in the `AppStack` custom resource (defined in the stack's
//!   configuration crate, `appstack_config::resilience`, and re-exported in [`config`]).
//!
//! The pieces compose in this order, outermost first (this is what [`layer::ResilienceLayer`]
//! does): overall deadline → retry → circuit breaker → bulkhead → per-attempt timeout → the
//! call. Each attempt asks the breaker, so a
//! breaker that opens mid-retry stops the retries; the bulkhead is inside, so a rejected
//! call does not hold a slot.
//!
//! # Where the ideas come from
//!
//! - The breaker follows resilience4j's `CircuitBreaker` (sliding windows with running
//!   aggregates, failure and slow-call rates, minimum calls, half-open probes, forced-open and
//!   disabled states). Its cost targets come from Polly v8's published figures (≈ 140 ns and
//!   no allocation per call): admission reads one atomic word, rejection while open adds a
//!   clock read, recording into a count window is lock-free (and write-free while the
//!   service is healthy), and the lock is taken only for transitions and half-open probes.
//! - Retry follows gRFC A6 ("gRPC retry design": `maxAttempts` counts the first attempt,
//!   `min(maxBackoff, initialBackoff × multiplier^(n-1))` with random jitter, the pushback
//!   header, retryable status codes) and the AWS "exponential backoff and jitter" analysis for
//!   full jitter.
//! - The budget is Finagle's `RetryBudget` as Linkerd uses it: deposits of `ratio` per call,
//!   one token per retry, a per-second floor, expiry after a time-to-live.
//!
//! # Configuration
//!
//! Field names are camelCase; durations are strings (`"250ms"`, `"2s"`, `"1m30s"`: integers
//! with units `ms`, `s`, `m`, `h`, `d`); unknown keys are errors;
//! [`ResilienceConfig::validate`] lists every broken rule, naming the field. An empty object
//! (`{}`) means all the defaults. This table is checked against `Default` by a test of
//! `appstack-config`.
//!
//! | field | unit | default | meaning |
//! |---|---|---|---|
//! | `timeout.perAttempt` | duration | `2s` | longest single attempt |
//! | `timeout.overall` | duration | `10s` | longest call, retries included |
//! | `retry.maxAttempts` | count 1–10 | `3` | attempts in total, the first included |
//! | `retry.initialBackoff` | duration | `100ms` | backoff ceiling before the first retry |
//! | `retry.maxBackoff` | duration | `2s` | largest backoff ceiling |
//! | `retry.multiplier` | factor 1–10 | `2.0` | ceiling growth per retry |
//! | `retry.jitter` | `full` \| `none` | `full` | delay uniform in `[0, ceiling]`, or the ceiling |
//! | `retry.budget.ratio` | ratio 0–1 | `0.2` | retries per original call over the last `ttl` |
//! | `retry.budget.minRetriesPerSecond` | count/s | `10` | retries always allowed |
//! | `retry.budget.ttl` | duration 1s–1h | `10s` | how long deposits and withdrawals count |
//! | `circuitBreaker.mode` | `enabled` \| `disabled` \| `forcedOpen` | `enabled` | |
//! | `circuitBreaker.window.type` | `count` \| `time` | `count` | kind of sliding window |
//! | `circuitBreaker.window.size` | count | `100` | calls kept by a count window |
//! | `circuitBreaker.window.duration` | whole seconds | `60s` | time kept by a time window |
//! | `circuitBreaker.failureRateThreshold` | percent | `50` | opens at this failure rate |
//! | `circuitBreaker.slowCallRateThreshold` | percent | `100` | opens at this slow-call rate |
//! | `circuitBreaker.slowCallDuration` | duration | `2s` | a call this long is slow |
//! | `circuitBreaker.minimumCalls` | count | `20` | calls in the window before rates count |
//! | `circuitBreaker.waitInOpen` | duration | `15s` | time open before probing |
//! | `circuitBreaker.halfOpenProbes` | count 1–1000 | `3` | probes that must all succeed |
//! | `bulkhead.maxConcurrent` | count | `64` | calls in flight at once |
//! | `bulkhead.maxQueue` | count | `64` | calls waiting for a slot (`0`: never wait) |
//! | `bulkhead.queueTimeout` | duration ≤ 1m | `100ms` | longest wait for a slot |
//!
//! Which outcomes are retryable and which count as failures for the breaker is not
//! configuration: it is the classifier's, chosen per protocol in code.
//!
//! # Example
//!
//! ```
//! use appstack_resilience::classify::Classification;
//! use appstack_resilience::{Attempt, Pipeline, ResilienceConfig, ResilienceError};
//!
//! /// How the payments service answers, as our client sees it.
//! #[derive(Debug)]
//! enum PaymentError {
//!     Unavailable,
//!     Declined,
//! }
//!
//! /// What is worth another attempt (the breaker counts what is retryable as a failure).
//! fn classify(attempt: &Attempt<'_, String, PaymentError>) -> Classification {
//!     match attempt {
//!         Attempt::Response(_) => Classification::Success,
//!         Attempt::Error(PaymentError::Unavailable) | Attempt::Timeout => {
//!             Classification::Retryable { pushback: None }
//!         }
//!         Attempt::Error(PaymentError::Declined) => Classification::Permanent,
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: ResilienceConfig =
//!     serde_json::from_str(r#"{ "retry": { "maxAttempts": 4, "initialBackoff": "1ms" } }"#)?;
//! config.validate()?;
//!
//! // One per external service, shared (in an `Arc`) by all its callers.
//! type Classifier = fn(&Attempt<'_, String, PaymentError>) -> Classification;
//! let payments = Pipeline::new("payments", &config, classify as Classifier);
//!
//! let executed = payments
//!     .execute(|attempt| async move {
//!         // The call itself, given `attempt.timeout` to finish; down for two attempts.
//!         if attempt.number < 3 {
//!             Err(PaymentError::Unavailable)
//!         } else {
//!             Ok(format!("charged in {} attempts", attempt.number))
//!         }
//!     })
//!     .await;
//! assert_eq!(executed.value.ok().as_deref(), Some("charged in 3 attempts"));
//! assert_eq!(payments.breaker().snapshot().calls, 3);
//!
//! // A refusal by the breaker says when to come back.
//! # payments.breaker().set_mode(appstack_resilience::config::BreakerMode::ForcedOpen);
//! match payments.execute(|_| async { Ok(String::new()) }).await.value {
//!     Err(ResilienceError::CircuitOpen { next_probe_at, .. }) => {
//!         // Reschedule the job at `next_probe_at` (None while forced open).
//!         assert!(next_probe_at.is_none());
//!     }
//!     other => panic!("expected a refusal, got {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The same as a tower layer, here over an in-memory service that fails twice (a
//! hyper-util `Client<_, ReplayBody<B>>` fits in its place as it is; a tonic `Channel`
//! behind `map_request(|r| r.map(tonic::body::Body::new))`, with a
//! [`classify::GrpcClassifier`]):
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! use appstack_resilience::classify::HttpClassifier;
//! use appstack_resilience::{ReplayBody, ResilienceConfig, ResilienceLayer};
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Empty, Full};
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut config = ResilienceConfig::default();
//! config.retry.initial_backoff = std::time::Duration::from_millis(1);
//! let layer = ResilienceLayer::new("inventory", &config, HttpClassifier::new());
//!
//! let calls = Arc::new(AtomicU32::new(0));
//! let inner = tower::service_fn({
//!     let calls = calls.clone();
//!     move |_request: Request<ReplayBody<Full<Bytes>>>| {
//!         let n = calls.fetch_add(1, Ordering::Relaxed);
//!         async move {
//!             let status = if n < 2 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!             let response = Response::builder().status(status).body(Empty::<Bytes>::new());
//!             Ok::<_, std::io::Error>(response.unwrap())
//!         }
//!     }
//! });
//! let mut client = layer.layer(inner);
//! let request = Request::post("http://inventory/items").body(Full::new(Bytes::from("{}"))).unwrap();
//! let response = client.ready().await.unwrap().call(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(calls.load(Ordering::Relaxed), 3);
//! // The body (a `ResponseBody`) was empty: the last attempt is recorded already, with
//! // the two before it. A body still streaming would be recorded at its end.
//! assert_eq!(layer.breaker().snapshot().calls, 3);
//! let _ = response.into_body().collect().await;
//! # }
//! ```

pub mod breaker;
pub mod bulkhead;
pub mod classify;
pub mod config;
pub mod layer;
mod pad;
pub mod pipeline;
pub mod retry;

pub use breaker::CircuitBreaker;
pub use bulkhead::Bulkhead;
pub use config::{InvalidConfig, ResilienceConfig};
pub use layer::{ReplayBody, Resilience, ResilienceLayer, ResponseBody};
pub use pipeline::{Attempt, AttemptContext, GrpcStatus, Pipeline, ResilienceError};
pub use retry::Retrier;

//! The pipeline: the overall deadline, retries, the circuit breaker, the bulkhead and the
//! per-attempt timeout around any async operation, in that order (outermost first).
//!
//! [`Pipeline::execute`] is the whole of it for one call. The operation is a closure called
//! once per attempt with an [`AttemptContext`] (the attempt's number and the time it has);
//! its `Result<R, E>` is classified by the pipeline's classifier through an [`Attempt`].
//! The tower layer ([`crate::layer`]) is this pipeline with the operation "send this HTTP
//! request".
//!
//! Each attempt asks the breaker first, so a breaker that opens mid-retry stops the
//! retries, and takes a bulkhead slot second, so a call the breaker rejects never holds a
//! slot. The breaker records the attempt's outcome and its duration, measured from the
//! moment the slot was taken (time spent waiting for a slot is not the callee's) to the
//! answer; the slot is given back then too. (The layer keeps both for the answer it returns
//! until the response body ends: see [`crate::layer`].)
//!
//! # Cost
//!
//! On the success path an execution reads the clock twice (start and end), loads the
//! breaker's state word, records into its window (lock-free, usually without a write),
//! deposits into the retry budget (one compare-and-swap on a per-thread shard) and takes a
//! bulkhead slot (one compare-and-swap), all without a heap allocation. A call refused by
//! an open breaker reads the clock once and the state word, and stops there. The slow
//! paths, waiting in the bulkhead's line and sleeping before a retry, box their timers:
//! one allocation each time, so that the future every call carries stays small. Timers are
//! built only when the operation (or the wait for a slot) is actually pending. The figures are in
//! `ARCHITECTURE.md` and come from `appstack-bench resilience` and the criterion benches.

mod admission;
pub(crate) mod deadline;
mod error;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use admission::{Admission, OwnedAdmission};
pub use error::{GrpcStatus, ResilienceError};

use crate::breaker::CircuitBreaker;
use crate::bulkhead::Bulkhead;
use crate::classify::{Classification, Classify};
use crate::config::ResilienceConfig;
use crate::retry::{Decision, Retried, Retrier, Stop};

/// One attempt's outcome, as a classifier sees it.
#[derive(Debug)]
pub enum Attempt<'a, R, E> {
    /// The operation answered (for the layer: the response head arrived, and for a gRPC
    /// call its body was read ahead, up to the layer's limit).
    Response(&'a R),
    /// The operation failed (for HTTP: a transport error).
    Error(&'a E),
    /// The attempt ran out of time (its own timeout, or the caller's deadline).
    Timeout,
}

/// What an attempt is told when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptContext {
    /// The attempt's number, from 1.
    pub number: u32,
    /// The time it has: `timeout.perAttempt`, or less when the call's deadline is nearer.
    /// A gRPC client passes it on in `grpc-timeout`.
    pub timeout: Duration,
}

/// The result of one execution: the last attempt's value, or the pipeline's refusal.
pub type Executed<R, E> = Retried<Result<R, ResilienceError<E>>>;

/// The breaker, retrier, bulkhead and timeouts of one external service, with the
/// classifier that judges its answers. Build one per external service and share it (in an
/// `Arc`) between all callers of that service.
pub struct Pipeline<C> {
    breaker: Arc<CircuitBreaker>,
    retrier: Retrier,
    bulkhead: Bulkhead,
    per_attempt: Duration,
    overall: Duration,
    classifier: C,
}

impl<C> fmt::Debug for Pipeline<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("breaker", &self.breaker)
            .field("retrier", &self.retrier)
            .field("bulkhead", &self.bulkhead)
            .field("per_attempt", &self.per_attempt)
            .field("overall", &self.overall)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Pipeline`].
pub struct PipelineBuilder<C> {
    name: String,
    config: ResilienceConfig,
    classifier: C,
    breaker: Option<Arc<CircuitBreaker>>,
}

impl<C> fmt::Debug for PipelineBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<C> PipelineBuilder<C> {
    /// Uses this breaker instead of a new one from `circuitBreaker` (to attach a
    /// [`crate::breaker::BreakerObserver`], or to share it).
    pub fn breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The pipeline.
    pub fn build(self) -> Pipeline<C> {
        let config = self.config;
        let breaker = self
            .breaker
            .unwrap_or_else(|| Arc::new(CircuitBreaker::new(self.name, &config.circuit_breaker)));
        Pipeline {
            breaker,
            retrier: Retrier::new(&config.retry),
            bulkhead: Bulkhead::new(&config.bulkhead),
            per_attempt: config.timeout.per_attempt,
            overall: config.timeout.overall,
            classifier: self.classifier,
        }
    }
}

/// `now + by`, or a day later than `now` if that overflows (it cannot for validated
/// settings), or `now` itself if even that does.
#[inline]
fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

impl<C> Pipeline<C> {
    /// The pipeline of `config` (which should have passed
    /// [`ResilienceConfig::validate`]) for the service `name`, judging attempts with
    /// `classifier` (for HTTP and gRPC: [`crate::classify::HttpClassifier`],
    /// [`crate::classify::GrpcClassifier`]).
    pub fn new(name: impl Into<String>, config: &ResilienceConfig, classifier: C) -> Self {
        Self::builder(name, config, classifier).build()
    }

    /// A builder, to use an existing breaker (with its observer).
    pub fn builder(
        name: impl Into<String>,
        config: &ResilienceConfig,
        classifier: C,
    ) -> PipelineBuilder<C> {
        PipelineBuilder {
            name: name.into(),
            config: config.clone(),
            classifier,
            breaker: None,
        }
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// The retry policy and budget.
    pub fn retrier(&self) -> &Retrier {
        &self.retrier
    }

    /// The bulkhead.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// The classifier.
    pub(crate) fn classifier(&self) -> &C {
        &self.classifier
    }

    /// `timeout.perAttempt`.
    pub fn per_attempt(&self) -> Duration {
        self.per_attempt
    }

    /// The deadline of a call starting now: `timeout.overall` from now, or the caller's
    /// own deadline if that is sooner.
    pub fn deadline(&self, callers: Option<Instant>) -> Instant {
        self.deadline_at(Instant::now(), callers)
    }

    /// [`Self::deadline`] of a call starting at `now`.
    pub fn deadline_at(&self, now: Instant, callers: Option<Instant>) -> Instant {
        let overall = later(now, self.overall);
        callers.map_or(overall, |callers| callers.min(overall))
    }

    /// Runs `op` through the pipeline until `timeout.overall` from now.
    pub async fn execute<R, E, F, Fut>(&self, op: F) -> Executed<R, E>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        C: for<'a> Classify<Attempt<'a, R, E>>,
    {
        let now = Instant::now();
        self.run(now, later(now, self.overall), op, RecordNow).await
    }

    /// Runs `op` through the pipeline until `deadline` (see [`Self::deadline`]): attempts
    /// until one succeeds, one fails permanently, the attempts or the budget are used up,
    /// the next attempt could not finish in time, or the breaker or bulkhead refuses one.
    /// The first attempt the breaker admits deposits into the retry budget (a call the
    /// breaker refuses puts no load on the callee, so it earns no retries).
    pub async fn execute_until<R, E, F, Fut>(&self, deadline: Instant, op: F) -> Executed<R, E>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        C: for<'a> Classify<Attempt<'a, R, E>>,
    {
        self.run(Instant::now(), deadline, op, RecordNow).await
    }

    /// Runs `op` through the pipeline once, without retries (for a request that cannot be
    /// repeated, such as one whose body is too large to keep). If admitted, it still
    /// deposits into the retry budget: it is an original call.
    pub async fn execute_once<R, E, F, Fut>(&self, deadline: Instant, op: F) -> Executed<R, E>
    where
        F: FnOnce(AttemptContext) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        C: for<'a> Classify<Attempt<'a, R, E>>,
    {
        self.once(deadline, op, RecordNow).await
    }

    /// The retry loop: attempts from `now` until `deadline`. Each answer is held as `H`
    /// says: recorded at once ([`RecordNow`]), or kept with its admission ([`Keep`]) — then
    /// an answer that is retried is recorded before the backoff, and the one returned is
    /// the caller's to settle.
    pub(crate) async fn run<'p, R, E, F, Fut, H>(
        &'p self,
        now: Instant,
        deadline: Instant,
        mut op: F,
        _: H,
    ) -> Executed<H::Held, E>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        C: for<'a> Classify<Attempt<'a, R, E>>,
        H: Hold<'p, R>,
    {
        let (mut attempts, mut now) = (0, now);
        loop {
            attempts += 1;
            // One await of `attempt` in the loop (not one for the first and one for the
            // rest): the future every call carries holds one attempt's state, not two.
            let answer = self
                .attempt::<R, E, _, _, H>(attempts, now, deadline, &mut op)
                .await;
            match self.retrier.after_attempt(
                attempts,
                self.classify::<R, E, H>(&answer),
                Some(deadline),
            ) {
                Decision::Retry { after } => {
                    match answer {
                        Ok(held) => H::retried(held),
                        Err(error) => drop(error),
                    }
                    // Boxed: the timer is large, and only retries need it.
                    Box::pin(tokio::time::sleep(after)).await;
                    now = Instant::now();
                }
                Decision::Stop(stop) => {
                    return Retried {
                        value: answer,
                        attempts,
                        stop,
                    };
                }
            }
        }
    }

    /// One attempt and no retry, its answer held as `H` says (see [`Self::run`]).
    pub(crate) async fn once<'p, R, E, F, Fut, H>(
        &'p self,
        deadline: Instant,
        op: F,
        _: H,
    ) -> Executed<H::Held, E>
    where
        F: FnOnce(AttemptContext) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        C: for<'a> Classify<Attempt<'a, R, E>>,
        H: Hold<'p, R>,
    {
        let answer = self
            .attempt::<R, E, _, _, H>(1, Instant::now(), deadline, op)
            .await;
        let stop = match self.classify::<R, E, H>(&answer) {
            Classification::Success => Stop::Success,
            _ => Stop::Permanent,
        };
        Retried {
            value: answer,
            attempts: 1,
            stop,
        }
    }

    /// `admission`, holding this pipeline's breaker and bulkhead instead of borrowing them.
    pub(crate) fn own(&self, admission: Admission<'_>) -> OwnedAdmission {
        admission.into_owned(&self.breaker, &self.bulkhead)
    }

    /// One attempt, starting at `now`: breaker, bulkhead, timeout, the operation. A failure
    /// or timeout is recorded at once; an answer is held as `H` says. The first attempt
    /// deposits into the retry budget once admitted.
    async fn attempt<'p, R, E, F, Fut, H>(
        &'p self,
        number: u32,
        now: Instant,
        deadline: Instant,
        op: F,
    ) -> Result<H::Held, ResilienceError<E>>
    where
        F: FnOnce(AttemptContext) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        C: for<'a> Classify<Attempt<'a, R, E>>,
        H: Hold<'p, R>,
    {
        if now >= deadline {
            // No attempt starts without time to run.
            return Err(ResilienceError::DeadlineExceeded);
        }
        let permit =
            self.breaker
                .try_acquire_at(now)
                .map_err(|rejected| ResilienceError::CircuitOpen {
                    state: rejected.state,
                    next_probe_at: rejected.next_probe_at,
                })?;
        if number == 1 {
            self.retrier.budget().deposit_at(now);
        }
        let (slot, started) = match self.bulkhead.try_acquire() {
            Ok(slot) => (slot, now),
            Err(_) => {
                // Boxed: waiting in line is the slow path, and its state (the line and
                // two timers) would triple the size of every call's future.
                let waiting = Box::pin(deadline::until(deadline, self.bulkhead.acquire()));
                let slot = match waiting.await {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(reason)) => return Err(ResilienceError::BulkheadFull { reason }),
                    Err(deadline::Elapsed) => return Err(ResilienceError::DeadlineExceeded),
                };
                let started = Instant::now();
                if started >= deadline {
                    return Err(ResilienceError::DeadlineExceeded);
                }
                (slot, started)
            }
        };
        let (attempt_deadline, timeout) = match started.checked_add(self.per_attempt) {
            Some(end) if end < deadline => (end, self.per_attempt),
            _ => (deadline, deadline.saturating_duration_since(started)),
        };
        let result =
            deadline::until(attempt_deadline, op(AttemptContext { number, timeout })).await;
        let (error, outcome) = match result {
            Ok(Ok(response)) => {
                let outcome = self.classifier.outcome(&Attempt::Response(&response));
                let admission = Admission {
                    permit,
                    slot,
                    started,
                    outcome,
                };
                return Ok(H::hold(response, admission));
            }
            Ok(Err(error)) => {
                let outcome = self.classifier.outcome(&Attempt::<R, _>::Error(&error));
                (ResilienceError::Inner(error), outcome)
            }
            Err(deadline::Elapsed) => {
                let outcome = self.classifier.outcome(&Attempt::<R, E>::Timeout);
                let error = if attempt_deadline < deadline {
                    ResilienceError::Timeout
                } else {
                    ResilienceError::DeadlineExceeded
                };
                (error, outcome)
            }
        };
        let elapsed = started.elapsed();
        drop(slot);
        permit.record(outcome, elapsed);
        Err(error)
    }

    /// Whether to retry after an attempt: the classifier's call for what the callee did;
    /// the pipeline's own refusals and the caller's deadline are final.
    fn classify<'p, R, E, H>(&self, answer: &Result<H::Held, ResilienceError<E>>) -> Classification
    where
        C: for<'a> Classify<Attempt<'a, R, E>>,
        H: Hold<'p, R>,
    {
        match answer {
            Ok(held) => self
                .classifier
                .classify(&Attempt::Response(H::response(held))),
            Err(ResilienceError::Inner(error)) => {
                self.classifier.classify(&Attempt::<R, E>::Error(error))
            }
            Err(ResilienceError::Timeout) => self.classifier.classify(&Attempt::<R, E>::Timeout),
            Err(
                ResilienceError::CircuitOpen { .. }
                | ResilienceError::BulkheadFull { .. }
                | ResilienceError::DeadlineExceeded,
            ) => Classification::Permanent,
        }
    }
}

/// How the pipeline holds an attempt's answer until the call is settled.
pub(crate) trait Hold<'p, R> {
    /// What an answer keeps.
    type Held;
    /// Right after the attempt answered.
    fn hold(response: R, admission: Admission<'p>) -> Self::Held;
    /// The answer, to classify.
    fn response(held: &Self::Held) -> &R;
    /// The answer is retried: it is over.
    fn retried(held: Self::Held);
}

/// [`Pipeline::execute`]'s way: the answer's outcome is recorded at once (before the retry
/// decision, which does not change it), and the answer alone is kept.
pub(crate) struct RecordNow;

impl<'p, R> Hold<'p, R> for RecordNow {
    type Held = R;

    #[inline]
    fn hold(response: R, admission: Admission<'p>) -> R {
        admission.record();
        response
    }

    #[inline]
    fn response(held: &R) -> &R {
        held
    }

    #[inline]
    fn retried(held: R) {
        drop(held);
    }
}

/// The layer's way: the answer keeps its admission (the slot, the permit), to be recorded
/// when its body ends — or at once if it is retried.
pub(crate) struct Keep;

impl<'p, R> Hold<'p, R> for Keep {
    type Held = (R, Admission<'p>);

    fn hold(response: R, admission: Admission<'p>) -> Self::Held {
        (response, admission)
    }

    fn response(held: &Self::Held) -> &R {
        &held.0
    }

    fn retried((response, admission): Self::Held) {
        admission.record();
        drop(response);
    }
}

#[cfg(test)]
mod tests;

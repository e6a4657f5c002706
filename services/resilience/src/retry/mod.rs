//! Retries: classification, backoff with jitter, deadlines and the retry budget.
//!
//! [`RetryPolicy::decide`] is the pure core: given the attempts made, the last outcome's
//! [`Classification`], the time, the caller's deadline and the [`RetryBudget`], it says
//! whether to retry and after how long. [`Retrier`] holds a policy with its budget; the one
//! retry loop that drives it is [`Pipeline`](crate::Pipeline)'s (which the tower layer is
//! built on).
//!
//! The order of the checks matters and is fixed: the outcome (success, permanent, stop),
//! then the attempt count, then the delay (the server's pushback, or the jittered backoff),
//! then the deadline, and only then the budget, so a token is withdrawn only for a retry
//! that really happens.

mod budget;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

pub use budget::RetryBudget;

use crate::classify::Classification;
use crate::config::{Jitter, RetryConfig};

/// Backoff, attempts and the deadline rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    jitter: Jitter,
    min_attempt_time: Duration,
}

/// Why no further attempt is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The last attempt succeeded.
    Success,
    /// The last outcome is not retryable.
    Permanent,
    /// The server asked not to retry.
    ServerSaidStop,
    /// `maxAttempts` attempts were made.
    AttemptsExhausted,
    /// The next attempt could not start (after its delay) with at least the minimum attempt
    /// time left before the caller's deadline.
    Deadline,
    /// The retry budget is empty.
    BudgetExhausted,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then make another attempt (a budget token has been withdrawn).
    Retry {
        /// The delay before the next attempt.
        after: Duration,
    },
    /// Return the last outcome to the caller.
    Stop(Stop),
}

impl RetryPolicy {
    /// The default minimum time an attempt must have before the deadline: `10ms`.
    pub const DEFAULT_MIN_ATTEMPT_TIME: Duration = Duration::from_millis(10);

    /// The policy of `config` (validated ranges assumed).
    pub fn new(config: &RetryConfig) -> Self {
        Self {
            max_attempts: config.max_attempts.max(1),
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff.max(config.initial_backoff),
            multiplier: if config.multiplier.is_finite() {
                config.multiplier.max(1.0)
            } else {
                1.0
            },
            jitter: config.jitter,
            min_attempt_time: Self::DEFAULT_MIN_ATTEMPT_TIME,
        }
    }

    /// Sets the least time worth starting an attempt with: no attempt starts with less than
    /// this left before the deadline (an attempt with 1 ms left would only time out).
    pub fn with_min_attempt_time(mut self, min: Duration) -> Self {
        self.min_attempt_time = min;
        self
    }

    /// The backoff ceiling before retry number `retry` (1 for the first retry):
    /// `min(maxBackoff, initialBackoff × multiplier^(retry-1))`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        if secs >= self.max_backoff.as_secs_f64() {
            self.max_backoff
        } else {
            Duration::try_from_secs_f64(secs).unwrap_or(self.max_backoff)
        }
    }

    /// The delay before retry number `retry`: uniform in `[0, ceiling]` with full jitter,
    /// the ceiling itself without.
    pub fn backoff<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let ceiling = self.backoff_ceiling(retry);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => {
                let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.gen_range(0..=nanos))
            }
        }
    }

    /// After `attempts` attempts (≥ 1) whose last ended as `classification` at `now`:
    /// retry (and after how long), or stop and why. A retry withdraws a token from
    /// `budget`.
    pub fn decide<R: Rng + ?Sized>(
        &self,
        attempts: u32,
        classification: Classification,
        now: Instant,
        deadline: Option<Instant>,
        budget: &RetryBudget,
        rng: &mut R,
    ) -> Decision {
        let pushback = match final_stop(classification) {
            Ok(stop) => return Decision::Stop(stop),
            Err(pushback) => pushback,
        };
        if attempts >= self.max_attempts {
            return Decision::Stop(Stop::AttemptsExhausted);
        }
        let after = pushback.unwrap_or_else(|| self.backoff(attempts, rng));
        if let Some(deadline) = deadline {
            let too_late = now
                .checked_add(after)
                .and_then(|t| t.checked_add(self.min_attempt_time))
                .is_none_or(|start| start > deadline);
            if too_late {
                return Decision::Stop(Stop::Deadline);
            }
        }
        if !budget.try_withdraw() {
            return Decision::Stop(Stop::BudgetExhausted);
        }
        Decision::Retry { after }
    }
}

/// Why an outcome ends the call whatever the time and budget (`Ok`), or the server's
/// pushback of a retryable one (`Err`).
fn final_stop(classification: Classification) -> Result<Stop, Option<Duration>> {
    match classification {
        Classification::Success => Ok(Stop::Success),
        Classification::Permanent => Ok(Stop::Permanent),
        Classification::StopRetrying => Ok(Stop::ServerSaidStop),
        Classification::Retryable { pushback } => Err(pushback),
    }
}

/// The result of an execution: the last attempt's outcome, and how it came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retried<T> {
    /// The last attempt's outcome.
    pub value: T,
    /// Attempts made.
    pub attempts: u32,
    /// Why there was no further attempt.
    pub stop: Stop,
}

/// A retry policy with its budget: one per external service, shared by all its callers.
#[derive(Debug, Clone)]
pub struct Retrier {
    policy: RetryPolicy,
    budget: Arc<RetryBudget>,
}

impl Retrier {
    /// The policy and a new budget from `config`.
    pub fn new(config: &RetryConfig) -> Self {
        Self {
            policy: RetryPolicy::new(config),
            budget: Arc::new(RetryBudget::new(&config.budget)),
        }
    }

    /// The budget.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// [`RetryPolicy::decide`] at the current time with this retrier's budget. A final
    /// outcome (success, permanent, stop) is answered without reading the clock or the
    /// random number generator: the success path stays cheap.
    #[inline]
    pub fn after_attempt(
        &self,
        attempts: u32,
        classification: Classification,
        deadline: Option<Instant>,
    ) -> Decision {
        if let Ok(stop) = final_stop(classification) {
            return Decision::Stop(stop);
        }
        self.policy.decide(
            attempts,
            classification,
            Instant::now(),
            deadline,
            &self.budget,
            &mut rand::thread_rng(),
        )
    }
}

#[cfg(test)]
mod tests;

//! What the worker does with an attempt's outcome: pure, so the rules are tested directly.
//!
//! - success → Succeeded;
//! - cancelled by its owner meanwhile → Cancelled, whatever the outcome (the result is
//!   discarded);
//! - permanent failure (HTTP 4xx but 408/429, gRPC INVALID_ARGUMENT, …) → Dead at once;
//! - retryable failure → Scheduled with jittered exponential backoff (or the server's
//!   `Retry-After`), until the route's attempts are spent → Dead;
//! - the external service was not called (its breaker is open, or its bulkhead full) →
//!   Scheduled for the breaker's next probe (or shortly), the attempt given back.
//!
//! These are *job redeliveries*, counted in the queue; the resilience pipeline's in-call
//! retries happen inside one attempt and are configured apart, so the two never multiply
//! unseen.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::state::Event;

/// The longest a server's `Retry-After` may push a job back.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Exponential backoff with full jitter between redeliveries of one job.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
    /// Ceiling growth per attempt (at least 1).
    pub multiplier: f64,
}

impl Backoff {
    /// The delay before the attempt after `attempts_spent` attempts: uniform in
    /// `[0, ceiling]` as `jitter` goes over `[0, 1]`, with the ceiling
    /// `min(max, initial × multiplier^(attempts_spent − 1))`.
    pub fn delay(&self, attempts_spent: u32, jitter: f64) -> Duration {
        let exponent = i32::try_from(attempts_spent.saturating_sub(1)).unwrap_or(i32::MAX);
        let growth = self.multiplier.max(1.0).powi(exponent);
        let ceiling = self.initial.as_secs_f64() * growth;
        let ceiling = if ceiling.is_finite() {
            ceiling.min(self.max.as_secs_f64())
        } else {
            self.max.as_secs_f64()
        };
        Duration::from_secs_f64(ceiling * jitter.clamp(0.0, 1.0))
    }
}

/// A route's redelivery rules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// How long a job waits when the service's bulkhead was full (jittered: ½ to 1×).
    pub bulkhead_wait: Duration,
}

/// How one attempt ended, as the worker saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The service answered with success.
    Succeeded,
    /// The service refused the request for good.
    Permanent {
        /// Why, for the dead letter.
        reason: String,
    },
    /// A failure worth retrying (5xx, UNAVAILABLE, timeout, connection error, …).
    Retryable {
        /// Why, for the record.
        reason: String,
        /// The server's `Retry-After` / `grpc-retry-pushback-ms`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Not called: the service's circuit breaker is open; it probes again in `probe_in`.
    BreakerOpen {
        /// Time until the breaker lets a probe through (from its monotonic clock).
        probe_in: Duration,
    },
    /// Not called: the service's bulkhead was full.
    BulkheadFull,
}

/// Why a job was given up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The service refused it for good.
    Permanent(String),
    /// The route's attempts are spent; the last failure's reason.
    AttemptsExhausted(String),
}

/// What to do with the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Record the result: Succeeded.
    Succeed,
    /// Discard the outcome: the owner cancelled meanwhile.
    Cancel,
    /// Dead letter.
    GiveUp(GiveUpReason),
    /// Try again at this time; the attempt stays spent.
    RetryAt(DateTime<Utc>),
    /// The call did not happen: run again at this time, the attempt given back.
    PostponeUntil(DateTime<Utc>),
}

impl Decision {
    /// The state-machine event this decision performs on a Running job.
    pub fn event(&self) -> Event {
        match self {
            Decision::Succeed => Event::Succeed,
            Decision::Cancel => Event::Cancel,
            Decision::GiveUp(_) => Event::GiveUp,
            Decision::RetryAt(_) => Event::RetryLater,
            Decision::PostponeUntil(_) => Event::Postpone,
        }
    }
}

/// Decides a Running job's fate after an attempt. `attempts_spent` counts this attempt;
/// `jitter` is a uniform sample of `[0, 1]` (the caller's random source, so tests choose).
pub fn decide(
    attempts_spent: u32,
    cancel_requested: bool,
    outcome: &Outcome,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
    jitter: f64,
) -> Decision {
    if cancel_requested {
        return Decision::Cancel;
    }
    let at =
        |delay: Duration| now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    match outcome {
        Outcome::Succeeded => Decision::Succeed,
        Outcome::Permanent { reason } => Decision::GiveUp(GiveUpReason::Permanent(reason.clone())),
        Outcome::Retryable {
            reason,
            retry_after,
        } => {
            if attempts_spent >= policy.max_attempts.max(1) {
                return Decision::GiveUp(GiveUpReason::AttemptsExhausted(reason.clone()));
            }
            let delay = match retry_after {
                Some(wait) => (*wait).min(MAX_RETRY_AFTER),
                None => policy.backoff.delay(attempts_spent, jitter),
            };
            Decision::RetryAt(at(delay))
        }
        Outcome::BreakerOpen { probe_in } => {
            // Spread the waiting jobs over the probe's first second, so they do not all
            // come back at the same instant and refill the half-open breaker's few probes.
            let spread = Duration::from_secs_f64(jitter.clamp(0.0, 1.0));
            Decision::PostponeUntil(at((*probe_in).saturating_add(spread)))
        }
        Outcome::BulkheadFull => {
            let factor = 0.5 + jitter.clamp(0.0, 1.0) / 2.0;
            Decision::PostponeUntil(at(policy.bulkhead_wait.mul_f64(factor)))
        }
    }
}

/// What the rescuer does with a job whose lease expired (its worker died mid-attempt): run
/// it again, or — when that was its last attempt — give it up, so a job that kills its
/// worker every time cannot loop forever.
pub fn rescue(attempts_spent: u32, policy: &RetryPolicy) -> Event {
    if attempts_spent >= policy.max_attempts.max(1) {
        Event::GiveUp
    } else {
        Event::LeaseExpired
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::state::{JobState, transition};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
                multiplier: 2.0,
            },
            bulkhead_wait: Duration::from_millis(200),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn retryable() -> Outcome {
        Outcome::Retryable {
            reason: "503".into(),
            retry_after: None,
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = policy().backoff;
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(b.delay(30, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(50));
    }

    #[test]
    fn retryable_failures_retry_until_attempts_are_spent() {
        let p = policy();
        assert_eq!(
            decide(1, false, &retryable(), &p, now(), 1.0),
            Decision::RetryAt(now() + chrono::Duration::milliseconds(100))
        );
        assert_eq!(
            decide(3, false, &retryable(), &p, now(), 1.0),
            Decision::GiveUp(GiveUpReason::AttemptsExhausted("503".into()))
        );
    }

    #[test]
    fn the_servers_retry_after_wins_and_is_bounded() {
        let outcome = |secs| Outcome::Retryable {
            reason: "429".into(),
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            decide(1, false, &outcome(7), &policy(), now(), 0.1),
            Decision::RetryAt(now() + chrono::Duration::seconds(7))
        );
        assert_eq!(
            decide(1, false, &outcome(999_999), &policy(), now(), 0.1),
            Decision::RetryAt(now() + chrono::Duration::seconds(3600))
        );
    }

    #[test]
    fn permanent_failures_die_at_once() {
        let outcome = Outcome::Permanent {
            reason: "400".into(),
        };
        assert_eq!(
            decide(1, false, &outcome, &policy(), now(), 0.5),
            Decision::GiveUp(GiveUpReason::Permanent("400".into()))
        );
    }

    #[test]
    fn an_open_breaker_postpones_to_its_probe_without_an_attempt() {
        let outcome = Outcome::BreakerOpen {
            probe_in: Duration::from_secs(15),
        };
        let decision = decide(3, false, &outcome, &policy(), now(), 0.0);
        assert_eq!(
            decision,
            Decision::PostponeUntil(now() + chrono::Duration::seconds(15))
        );
        // Even on the last attempt: no call happened, so nothing is exhausted.
        let t = transition(JobState::Running, decision.event()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.to, t.attempts_delta), (JobState::Scheduled, -1));
    }

    #[test]
    fn an_expired_lease_runs_the_job_again_until_its_last_attempt() {
        assert_eq!(rescue(1, &policy()), Event::LeaseExpired);
        assert_eq!(rescue(3, &policy()), Event::GiveUp);
        for attempts in 0..5 {
            assert!(transition(JobState::Running, rescue(attempts, &policy())).is_ok());
        }
    }

    #[test]
    fn a_cancel_discards_any_outcome() {
        for outcome in [Outcome::Succeeded, retryable(), Outcome::BulkheadFull] {
            assert_eq!(
                decide(1, true, &outcome, &policy(), now(), 0.5),
                Decision::Cancel
            );
        }
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Succeeded),
            Just(Outcome::Permanent { reason: "p".into() }),
            proptest::option::of(0u64..10_000_000).prop_map(|ms| Outcome::Retryable {
                reason: "r".into(),
                retry_after: ms.map(Duration::from_millis),
            }),
            (0u64..10_000_000).prop_map(|ms| Outcome::BreakerOpen {
                probe_in: Duration::from_millis(ms)
            }),
            Just(Outcome::BulkheadFull),
        ]
    }

    proptest! {
        /// Every decision is a legal transition from Running, never schedules into the
        /// past, and never retries past the route's attempts.
        #[test]
        fn decisions_are_legal_and_bounded(
            attempts in 1u32..10,
            cancel in any::<bool>(),
            outcome in outcome(),
            jitter in 0.0f64..=1.0,
        ) {
            let p = policy();
            let decision = decide(attempts, cancel, &outcome, &p, now(), jitter);
            prop_assert!(transition(JobState::Running, decision.event()).is_ok());
            match decision {
                Decision::RetryAt(at) => {
                    prop_assert!(at >= now());
                    prop_assert!(attempts < p.max_attempts);
                }
                Decision::PostponeUntil(at) => prop_assert!(at >= now()),
                _ => {}
            }
        }
    }
}

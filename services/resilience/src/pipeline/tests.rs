//! The pipeline over plain async operations, in virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;

use super::*;
use crate::breaker::State;
use crate::config::Jitter;

/// How a scripted attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    /// Worth another attempt.
    Transient,
    /// Not worth one.
    Fatal,
}

type Classifier = fn(&Attempt<'_, u32, Fail>) -> Classification;

fn classify(attempt: &Attempt<'_, u32, Fail>) -> Classification {
    match attempt {
        Attempt::Response(_) => Classification::Success,
        Attempt::Error(Fail::Transient) | Attempt::Timeout => {
            Classification::Retryable { pushback: None }
        }
        Attempt::Error(Fail::Fatal) => Classification::Permanent,
    }
}

fn config() -> ResilienceConfig {
    let mut c = ResilienceConfig::default();
    c.timeout.per_attempt = Duration::from_millis(100);
    c.timeout.overall = Duration::from_secs(1);
    c.retry.max_attempts = 3;
    c.retry.initial_backoff = Duration::from_millis(10);
    c.retry.max_backoff = Duration::from_millis(10);
    c.retry.jitter = Jitter::None;
    c.circuit_breaker.minimum_calls = 2;
    c.circuit_breaker.window.size = 2;
    c.bulkhead.max_concurrent = 1;
    c.bulkhead.max_queue = 0;
    c.validate().unwrap();
    c
}

fn pipeline(config: &ResilienceConfig) -> Pipeline<Classifier> {
    Pipeline::new("test", config, classify as Classifier)
}

/// Runs `script[n - 1]` as attempt `n` (after sleeping its delay), logging each context.
async fn scripted(
    pipeline: &Pipeline<Classifier>,
    script: &[(Duration, Result<u32, Fail>)],
) -> (Executed<u32, Fail>, Vec<AttemptContext>) {
    let seen = RefCell::new(Vec::new());
    let executed = pipeline
        .execute(|context| {
            seen.borrow_mut().push(context);
            let (delay, result) = script[context.number as usize - 1];
            async move {
                tokio::time::sleep(delay).await;
                result
            }
        })
        .await;
    (executed, seen.into_inner())
}

#[tokio::test(start_paused = true)]
async fn success_is_one_attempt_with_the_whole_per_attempt_time() {
    let p = pipeline(&config());
    let (executed, seen) = scripted(&p, &[(Duration::ZERO, Ok(7))]).await;
    assert_eq!(executed.value.unwrap(), 7);
    assert_eq!(executed.stop, Stop::Success);
    assert_eq!(
        seen,
        [AttemptContext {
            number: 1,
            timeout: Duration::from_millis(100)
        }]
    );
    assert_eq!(p.breaker().snapshot().calls, 1);
    assert_eq!(p.bulkhead().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_and_counted_by_the_breaker() {
    let mut c = config();
    c.circuit_breaker.minimum_calls = 10;
    c.circuit_breaker.window.size = 10;
    let p = pipeline(&c);
    let start = Instant::now();
    let script = [
        (Duration::ZERO, Err(Fail::Transient)),
        (Duration::ZERO, Err(Fail::Transient)),
        (Duration::ZERO, Ok(3)),
    ];
    let (executed, seen) = scripted(&p, &script).await;
    assert_eq!(executed.value.unwrap(), 3);
    assert_eq!(executed.attempts, 3);
    assert_eq!(seen.iter().map(|c| c.number).collect::<Vec<_>>(), [1, 2, 3]);
    // Two backoffs of exactly 10 ms (no jitter).
    assert_eq!(start.elapsed(), Duration::from_millis(20));
    let snapshot = p.breaker().snapshot();
    assert_eq!(snapshot.calls, 3);
    assert!((snapshot.failure_rate - 200.0 / 3.0).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_are_not_retried() {
    let p = pipeline(&config());
    let (executed, _) = scripted(&p, &[(Duration::ZERO, Err(Fail::Fatal))]).await;
    assert!(matches!(
        executed.value,
        Err(ResilienceError::Inner(Fail::Fatal))
    ));
    assert_eq!(executed.attempts, 1);
    assert_eq!(executed.stop, Stop::Permanent);
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out_and_is_retried() {
    let p = pipeline(&config());
    let script = [
        (Duration::from_secs(5), Ok(1)),
        (Duration::from_millis(50), Ok(2)),
    ];
    let start = Instant::now();
    let (executed, _) = scripted(&p, &script).await;
    assert_eq!(executed.value.unwrap(), 2);
    // 100 ms timeout, 10 ms backoff, 50 ms second attempt.
    assert_eq!(start.elapsed(), Duration::from_millis(160));
}

#[tokio::test(start_paused = true)]
async fn the_last_attempt_gets_only_the_time_left() {
    let mut c = config();
    c.timeout.overall = Duration::from_millis(250);
    c.retry.max_attempts = 5;
    c.circuit_breaker.mode = crate::config::BreakerMode::Disabled;
    let p = pipeline(&c);
    let slow = (Duration::from_secs(5), Ok(0));
    let (executed, seen) = scripted(&p, &[slow; 5]).await;
    // 0–100 first, 110–210 second, 220–250 third (30 ms: the deadline), then no time.
    assert!(matches!(
        executed.value,
        Err(ResilienceError::DeadlineExceeded)
    ));
    assert_eq!(executed.attempts, 3);
    assert_eq!(seen[2].timeout, Duration::from_millis(30));
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_after_the_deadline() {
    let p = pipeline(&config());
    let calls = RefCell::new(0);
    let executed = p
        .execute_until(Instant::now(), |_| {
            *calls.borrow_mut() += 1;
            async { Ok::<u32, Fail>(1) }
        })
        .await;
    assert!(matches!(
        executed.value,
        Err(ResilienceError::DeadlineExceeded)
    ));
    assert_eq!(*calls.borrow(), 0);
    assert_eq!(p.breaker().snapshot().calls, 0, "nothing recorded");
}

#[tokio::test(start_paused = true)]
async fn a_breaker_that_opens_mid_retry_stops_the_retries() {
    let p = pipeline(&config());
    let transient = (Duration::ZERO, Err(Fail::Transient));
    let (executed, seen) = scripted(&p, &[transient; 3]).await;
    // Two failures open the breaker (minimum 2 calls) at the second attempt, 10 ms in;
    // the third attempt, after another 10 ms, is refused.
    assert_eq!(seen.len(), 2);
    let error = executed.value.unwrap_err();
    assert!(error.is_rejection());
    let opened = Instant::now() - Duration::from_millis(10);
    assert_eq!(
        error.next_probe_at(),
        Some(opened + config().circuit_breaker.wait_in_open)
    );
    assert_eq!(p.breaker().state(), State::Open);
    assert_eq!(executed.stop, Stop::Permanent);
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_refuses_without_calling() {
    let p = pipeline(&config());
    let held = p.bulkhead().try_acquire().unwrap();
    let calls = RefCell::new(0);
    let executed = p
        .execute(|_| {
            *calls.borrow_mut() += 1;
            async { Ok::<u32, Fail>(1) }
        })
        .await;
    assert!(matches!(
        executed.value,
        Err(ResilienceError::BulkheadFull {
            reason: crate::bulkhead::BulkheadRejected::Full
        })
    ));
    assert_eq!(*calls.borrow(), 0);
    drop(held);
    assert_eq!(
        p.breaker().snapshot().calls,
        0,
        "a refused call is not recorded"
    );
}

#[tokio::test(start_paused = true)]
async fn execute_once_never_retries() {
    let p = pipeline(&config());
    let executed = p
        .execute_once(p.deadline(None), |context| async move {
            assert_eq!(context.number, 1);
            Err::<u32, Fail>(Fail::Transient)
        })
        .await;
    assert!(matches!(
        executed.value,
        Err(ResilienceError::Inner(Fail::Transient))
    ));
    assert_eq!(executed.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn the_callers_deadline_wins_when_sooner() {
    let p = pipeline(&config());
    let now = Instant::now();
    assert_eq!(p.deadline(None), now + Duration::from_secs(1));
    let soon = now + Duration::from_millis(30);
    assert_eq!(p.deadline(Some(soon)), soon);
    let later = now + Duration::from_secs(60);
    assert_eq!(p.deadline(Some(later)), now + Duration::from_secs(1));
}

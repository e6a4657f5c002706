#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The policy on its own, and driven by the pipeline's retry loop (breaker disabled, so
//! only the policy and the budget decide), in virtual time.

use std::cell::RefCell;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use super::*;
use crate::classify::{self, Classify, code};
use crate::config::{BreakerMode, ResilienceConfig, RetryBudgetConfig};
use crate::{Attempt, Pipeline};

const MS: Duration = Duration::from_millis(1);

fn config() -> RetryConfig {
    RetryConfig {
        max_attempts: 4,
        initial_backoff: 100 * MS,
        max_backoff: 1000 * MS,
        multiplier: 2.0,
        jitter: Jitter::Full,
        budget: RetryBudgetConfig {
            ratio: 0.2,
            min_retries_per_second: 100,
            ttl: Duration::from_secs(10),
        },
    }
}

const RETRY: Classification = Classification::Retryable { pushback: None };

/// Judges an attempt by what it answered: each scripted attempt answers with its own
/// classification.
struct AsAnswered;

impl Classify<Attempt<'_, Classification, ()>> for AsAnswered {
    fn classify(&self, attempt: &Attempt<'_, Classification, ()>) -> Classification {
        match attempt {
            Attempt::Response(answered) => **answered,
            Attempt::Error(()) | Attempt::Timeout => RETRY,
        }
    }
}

/// A pipeline in which only `retry` decides: the breaker disabled, room in the bulkhead,
/// a minute for the whole call.
fn pipeline(retry: RetryConfig) -> Pipeline<AsAnswered> {
    let mut c = ResilienceConfig {
        retry,
        ..ResilienceConfig::default()
    };
    c.timeout.overall = Duration::from_secs(60);
    c.circuit_breaker.mode = BreakerMode::Disabled;
    c.bulkhead.max_concurrent = 10_000;
    Pipeline::new("retry-test", &c, AsAnswered)
}

/// Runs calls whose every attempt answers `c`; returns (attempts, stop).
async fn always(p: &Pipeline<AsAnswered>, c: Classification) -> (u32, Stop) {
    let executed = p.execute(|_| async move { Ok::<_, ()>(c) }).await;
    (executed.attempts, executed.stop)
}

#[test]
fn backoff_ceiling_grows_and_caps() {
    let p = RetryPolicy::new(&RetryConfig {
        max_attempts: 10,
        max_backoff: 2000 * MS,
        ..config()
    });
    let ceilings: Vec<_> = (1..=7).map(|n| p.backoff_ceiling(n).as_millis()).collect();
    assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000]);
    assert_eq!(p.backoff_ceiling(u32::MAX), 2000 * MS);
    let p = RetryPolicy::new(&RetryConfig {
        multiplier: 1.5,
        ..config()
    });
    assert_eq!(p.backoff_ceiling(3), 225 * MS);
}

#[test]
fn full_jitter_is_uniform_below_the_ceiling() {
    let p = RetryPolicy::new(&config());
    let mut rng = StdRng::seed_from_u64(7);
    let n = 20_000;
    let ceiling = p.backoff_ceiling(3); // 400 ms
    let samples: Vec<f64> = (0..n)
        .map(|_| {
            let d = p.backoff(3, &mut rng);
            assert!(d <= ceiling, "{d:?} above {ceiling:?}");
            d.as_secs_f64() / ceiling.as_secs_f64()
        })
        .collect();
    let mean = samples.iter().sum::<f64>() / f64::from(n);
    // Uniform on [0, 1]: mean 0.5, standard error 0.29/sqrt(n) ≈ 0.002.
    assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    for quarter in 0..4 {
        let lo = f64::from(quarter) / 4.0;
        let share = samples
            .iter()
            .filter(|&&x| x >= lo && x < lo + 0.25)
            .count() as f64
            / f64::from(n);
        assert!((share - 0.25).abs() < 0.02, "quarter {quarter}: {share}");
    }
    let max = samples.iter().cloned().fold(0.0, f64::max);
    assert!(max > 0.99, "never near the ceiling: {max}");
}

#[test]
fn no_jitter_is_the_ceiling() {
    let p = RetryPolicy::new(&RetryConfig {
        jitter: Jitter::None,
        ..config()
    });
    let mut rng = StdRng::seed_from_u64(1);
    assert_eq!(p.backoff(2, &mut rng), 200 * MS);
}

#[tokio::test(start_paused = true)]
async fn retries_up_to_max_attempts_within_backoff_bounds() {
    let p = RetryPolicy::new(&config());
    let starts = RefCell::new(Vec::new());
    let result = pipeline(config())
        .execute(|context| {
            starts.borrow_mut().push((context.number, Instant::now()));
            async { Ok::<_, ()>(RETRY) }
        })
        .await;
    assert_eq!(result.attempts, 4);
    assert_eq!(result.stop, Stop::AttemptsExhausted);
    let starts = starts.into_inner();
    assert_eq!(starts.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for (retry, pair) in starts.windows(2).enumerate() {
        let gap = pair[1].1 - pair[0].1;
        let ceiling = p.backoff_ceiling(retry as u32 + 1);
        assert!(gap <= ceiling, "retry {}: {gap:?} > {ceiling:?}", retry + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn success_and_permanent_errors_are_not_retried() {
    let p = pipeline(config());
    assert_eq!(
        always(&p, Classification::Success).await,
        (1, Stop::Success)
    );
    assert_eq!(
        always(&p, Classification::Permanent).await,
        (1, Stop::Permanent)
    );
    // Succeeds on the third attempt.
    let result = p
        .execute(|context| async move {
            Ok::<_, ()>(if context.number < 3 {
                RETRY
            } else {
                Classification::Success
            })
        })
        .await;
    assert_eq!((result.attempts, result.stop), (3, Stop::Success));
}

#[tokio::test(start_paused = true)]
async fn pushback_replaces_the_backoff() {
    let starts = RefCell::new(Vec::new());
    let pushback = Classification::Retryable {
        pushback: Some(Duration::from_secs(3)),
    };
    let result = pipeline(config())
        .execute(|_| {
            starts.borrow_mut().push(Instant::now());
            async move { Ok::<_, ()>(pushback) }
        })
        .await;
    assert_eq!(result.attempts, 4);
    let starts = starts.into_inner();
    for pair in starts.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_secs(3));
    }
}

#[tokio::test(start_paused = true)]
async fn negative_pushback_stops() {
    let p = pipeline(config());
    assert_eq!(
        always(&p, Classification::StopRetrying).await,
        (1, Stop::ServerSaidStop)
    );
    // Through the gRPC classifier: UNAVAILABLE with `grpc-retry-pushback-ms: -1`.
    let mut metadata = http::HeaderMap::new();
    metadata.insert(
        classify::GRPC_RETRY_PUSHBACK_MS,
        http::HeaderValue::from_static("-1"),
    );
    let unavailable = classify::GrpcClassifier::new().classify(&classify::GrpcResponse {
        code: code::UNAVAILABLE,
        metadata: &metadata,
    });
    assert_eq!(always(&p, unavailable).await, (1, Stop::ServerSaidStop));
}

#[tokio::test(start_paused = true)]
async fn never_starts_an_attempt_past_the_deadline() {
    let p = pipeline(RetryConfig {
        jitter: Jitter::None,
        ..config()
    });
    let start = Instant::now();
    let deadline = start + 350 * MS;
    let starts = RefCell::new(Vec::new());
    let result = p
        .execute_until(deadline, |_| {
            starts.borrow_mut().push(Instant::now() - start);
            async { Ok::<_, ()>(RETRY) }
        })
        .await;
    // 0 ms, then 100 ms later (100), then 200 ms later (300); the next would start at 700.
    assert_eq!(starts.into_inner(), [Duration::ZERO, 100 * MS, 300 * MS]);
    assert_eq!(result.stop, Stop::Deadline);
    assert!(Instant::now() <= deadline);
}

#[tokio::test(start_paused = true)]
async fn the_minimum_attempt_time_counts_against_the_deadline() {
    let policy = RetryPolicy::new(&RetryConfig {
        jitter: Jitter::None,
        ..config()
    })
    .with_min_attempt_time(50 * MS);
    let budget = RetryBudget::new(&config().budget);
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(0);
    // The backoff (100 ms) ends before the deadline, but leaves only 40 ms.
    let d = policy.decide(1, RETRY, now, Some(now + 140 * MS), &budget, &mut rng);
    assert_eq!(d, Decision::Stop(Stop::Deadline));
    let d = policy.decide(1, RETRY, now, Some(now + 150 * MS), &budget, &mut rng);
    assert_eq!(d, Decision::Retry { after: 100 * MS });
    // A pushback past the deadline stops too.
    let far = Classification::Retryable {
        pushback: Some(Duration::from_secs(60)),
    };
    let d = policy.decide(
        1,
        far,
        now,
        Some(now + Duration::from_secs(10)),
        &budget,
        &mut rng,
    );
    assert_eq!(d, Decision::Stop(Stop::Deadline));
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries() {
    let p = pipeline(RetryConfig {
        budget: RetryBudgetConfig {
            ratio: 0.0,
            min_retries_per_second: 0,
            ttl: Duration::from_secs(10),
        },
        ..config()
    });
    assert_eq!(always(&p, RETRY).await, (1, Stop::BudgetExhausted));
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_not_spent_on_retries_that_do_not_happen() {
    let policy = RetryPolicy::new(&config());
    let budget = RetryBudget::new(&RetryBudgetConfig {
        ratio: 0.0,
        min_retries_per_second: 1,
        ttl: Duration::from_secs(1),
    });
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(0);
    for c in [Classification::Success, Classification::Permanent] {
        assert!(matches!(
            policy.decide(1, c, now, None, &budget, &mut rng),
            Decision::Stop(_)
        ));
    }
    assert_eq!(
        policy.decide(4, RETRY, now, None, &budget, &mut rng),
        Decision::Stop(Stop::AttemptsExhausted)
    );
    assert_eq!(
        policy.decide(1, RETRY, now, Some(now), &budget, &mut rng),
        Decision::Stop(Stop::Deadline)
    );
    assert_eq!(budget.balance(), 1.0);
    assert!(matches!(
        policy.decide(1, RETRY, now, None, &budget, &mut rng),
        Decision::Retry { .. }
    ));
    assert_eq!(
        policy.decide(1, RETRY, now, None, &budget, &mut rng),
        Decision::Stop(Stop::BudgetExhausted)
    );
}

/// A total outage: every attempt fails. The budget keeps attempts ÷ calls near
/// `1 + ratio`, plus the floor, although `maxAttempts` would allow 4. (Every call is
/// admitted, the breaker being disabled, so every call deposits.)
#[tokio::test(start_paused = true)]
async fn outage_amplification_is_bounded_by_the_budget() {
    let config = RetryConfig {
        budget: RetryBudgetConfig {
            ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Duration::from_secs(10),
        },
        ..config()
    };
    let p = std::sync::Arc::new(pipeline(config.clone()));
    let calls = 5_000u32;
    // 1000 calls a second for 5 s, all concurrent with the retries of earlier ones.
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                tokio::time::sleep(MS * i).await;
                always(&p, RETRY).await.0
            })
        })
        .collect();
    let mut attempts = 0;
    for t in tasks {
        attempts += t.await.unwrap();
    }
    let amplification = f64::from(attempts) / f64::from(calls);
    let floor = f64::from(config.budget.min_retries_per_second) * config.budget.ttl.as_secs_f64()
        / f64::from(calls);
    assert!(
        amplification <= 1.2 + floor + 0.01,
        "amplification {amplification}"
    );
    assert!(
        amplification > 1.1,
        "the budget should allow retries: {amplification}"
    );
}

proptest::proptest! {
    #[test]
    fn backoff_stays_within_its_ceiling(
        initial_ms in 1u64..1000,
        extra_ms in 0u64..60_000,
        multiplier in 1.0f64..10.0,
        seed in proptest::prelude::any::<u64>(),
    ) {
        let policy = RetryPolicy::new(&RetryConfig {
            max_attempts: 10,
            initial_backoff: MS * initial_ms as u32,
            max_backoff: MS * (initial_ms + extra_ms) as u32,
            multiplier,
            ..config()
        });
        let mut rng = StdRng::seed_from_u64(seed);
        let mut previous = Duration::ZERO;
        for retry in 1..=20 {
            let ceiling = policy.backoff_ceiling(retry);
            proptest::prop_assert!(ceiling >= previous);
            proptest::prop_assert!(ceiling <= MS * (initial_ms + extra_ms) as u32);
            proptest::prop_assert!(ceiling >= MS * initial_ms as u32);
            proptest::prop_assert!(policy.backoff(retry, &mut rng) <= ceiling);
            previous = ceiling;
        }
    }
}

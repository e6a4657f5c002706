#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, advance};

use super::*;
use crate::config::{CircuitBreakerConfig, WindowConfig, WindowKind};

const FAST: Duration = Duration::from_millis(1);
const WAIT: Duration = Duration::from_secs(10);

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        window: WindowConfig {
            kind: WindowKind::Count,
            size: 10,
            ..WindowConfig::default()
        },
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_duration: Duration::from_secs(1),
        minimum_calls: 5,
        wait_in_open: WAIT,
        half_open_probes: 3,
        ..CircuitBreakerConfig::default()
    }
}

fn call(b: &CircuitBreaker, outcome: Outcome, elapsed: Duration) {
    b.try_acquire().unwrap().record(outcome, elapsed);
}

fn open(b: &CircuitBreaker) {
    for _ in 0..5 {
        call(b, Outcome::Failure, FAST);
    }
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn opens_at_exactly_minimum_calls_under_full_failure() {
    let b = CircuitBreaker::new("svc", &config());
    for i in 0..4 {
        call(&b, Outcome::Failure, FAST);
        assert_eq!(b.state(), State::Closed, "opened after {} calls", i + 1);
        assert_eq!(b.next_probe_at(), None);
    }
    let now = Instant::now();
    call(&b, Outcome::Failure, FAST);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.next_probe_at(), Some(now + WAIT));
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_threshold() {
    let b = CircuitBreaker::new("svc", &config());
    // 4 failures in 10 calls: 40% < 50%.
    for i in 0..10 {
        let outcome = if i % 5 >= 3 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        call(&b, outcome, FAST);
    }
    assert_eq!(b.state(), State::Closed);
    let s = b.snapshot();
    assert_eq!(s.calls, 10);
    assert_eq!(s.failure_rate, 40.0);
    // The next failure makes it 5 in the last 10 (the oldest success left): 50% opens.
    call(&b, Outcome::Failure, FAST);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_it() {
    let b = CircuitBreaker::new(
        "svc",
        &CircuitBreakerConfig {
            slow_call_rate_threshold: 60.0,
            ..config()
        },
    );
    let slow = Duration::from_secs(1);
    call(&b, Outcome::Success, slow);
    call(&b, Outcome::Success, slow);
    call(&b, Outcome::Success, FAST);
    call(&b, Outcome::Success, slow);
    assert_eq!(b.state(), State::Closed);
    call(&b, Outcome::Success, FAST); // 3 of 5 slow: 60%
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn rejects_while_open_then_probes() {
    let b = CircuitBreaker::new("svc", &config());
    open(&b);
    let until = b.next_probe_at().unwrap();
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.state, State::Open);
    assert_eq!(rejected.next_probe_at, Some(until));
    assert!(rejected.to_string().contains("open"));

    advance(WAIT - Duration::from_millis(1)).await;
    assert!(b.try_acquire().is_err());
    advance(Duration::from_millis(1)).await;
    let probe = b.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.next_probe_at(), None);
    probe.record(Outcome::Success, FAST);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_n_probes_and_closes_when_all_succeed() {
    let b = CircuitBreaker::new("svc", &config());
    open(&b);
    advance(WAIT).await;
    let probes: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.state, State::HalfOpen);
    assert_eq!(rejected.next_probe_at, None);
    let mut probes = probes.into_iter();
    probes.next().unwrap().record(Outcome::Success, FAST);
    probes.next().unwrap().record(Outcome::Success, FAST);
    assert_eq!(b.state(), State::HalfOpen);
    // A finished probe does not free a slot: three probes in all.
    assert!(b.try_acquire().is_err());
    probes.next().unwrap().record(Outcome::Success, FAST);
    assert_eq!(b.state(), State::Closed);
    // The window starts empty: it takes minimumCalls again to open.
    assert_eq!(b.snapshot().calls, 0);
    for _ in 0..4 {
        call(&b, Outcome::Failure, FAST);
    }
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens() {
    let b = CircuitBreaker::new("svc", &config());
    open(&b);
    advance(WAIT).await;
    let first = b.try_acquire().unwrap();
    let second = b.try_acquire().unwrap();
    first.record(Outcome::Success, FAST);
    advance(Duration::from_secs(1)).await;
    let now = Instant::now();
    second.record(Outcome::Failure, FAST);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.next_probe_at(), Some(now + WAIT));
    assert!(b.try_acquire().is_err());
}

#[tokio::test(start_paused = true)]
async fn slow_probes_reopen() {
    let b = CircuitBreaker::new("svc", &config());
    open(&b);
    advance(WAIT).await;
    for _ in 0..3 {
        call(&b, Outcome::Success, Duration::from_secs(5));
    }
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_its_slot_back() {
    let b = CircuitBreaker::new("svc", &config());
    open(&b);
    advance(WAIT).await;
    let probes: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    assert!(b.try_acquire().is_err());
    drop(probes);
    assert_eq!(b.state(), State::HalfOpen);
    for _ in 0..3 {
        call(&b, Outcome::Success, FAST);
    }
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn outcomes_from_an_earlier_state_are_ignored() {
    let b = Arc::new(CircuitBreaker::new("svc", &config()));
    let late = b.try_acquire().unwrap();
    open(&b);
    let until = b.next_probe_at();
    late.record(Outcome::Failure, FAST);
    assert_eq!(b.next_probe_at(), until);
    // A permit from the half-open period, recorded after the breaker closed.
    advance(WAIT).await;
    let probes: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    let mut probes = probes.into_iter();
    let stale = probes.next().unwrap();
    drop(stale); // slot back
    for p in probes {
        p.record(Outcome::Success, FAST);
    }
    call(&b, Outcome::Success, FAST);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().calls, 0, "the window was reset when it closed");
}

#[tokio::test(start_paused = true)]
async fn cancelled_calls_are_not_counted() {
    let b = CircuitBreaker::new("svc", &config());
    for _ in 0..20 {
        drop(b.try_acquire().unwrap());
    }
    assert_eq!(b.snapshot().calls, 0);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn forced_open_rejects_everything() {
    let b = CircuitBreaker::new(
        "svc",
        &CircuitBreakerConfig {
            mode: BreakerMode::ForcedOpen,
            ..config()
        },
    );
    assert_eq!(b.state(), State::ForcedOpen);
    advance(Duration::from_secs(3600)).await;
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.state, State::ForcedOpen);
    assert_eq!(rejected.next_probe_at, None);
    b.set_mode(BreakerMode::Enabled);
    assert_eq!(b.state(), State::Closed);
    drop(b.try_acquire().unwrap());
    // Forcing an open breaker open, and back.
    open(&b);
    b.set_mode(BreakerMode::ForcedOpen);
    assert!(b.try_acquire().is_err());
    b.set_mode(BreakerMode::Enabled);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn disabled_admits_everything_and_records_nothing() {
    let b = CircuitBreaker::new(
        "svc",
        &CircuitBreakerConfig {
            mode: BreakerMode::Disabled,
            ..config()
        },
    );
    for _ in 0..100 {
        call(&b, Outcome::Failure, Duration::from_secs(60));
    }
    assert_eq!(b.state(), State::Disabled);
    assert_eq!(b.snapshot().calls, 0);
    b.set_mode(BreakerMode::Enabled);
    assert_eq!(b.state(), State::Closed);
    open(&b);
    b.set_mode(BreakerMode::Disabled);
    assert!(b.try_acquire().is_ok());
    // Enabling an enabled breaker changes nothing.
    b.set_mode(BreakerMode::Enabled);
    b.set_mode(BreakerMode::Enabled);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_outcomes() {
    let b = CircuitBreaker::new(
        "svc",
        &CircuitBreakerConfig {
            window: WindowConfig {
                kind: WindowKind::Time,
                duration: Duration::from_secs(10),
                ..WindowConfig::default()
            },
            ..config()
        },
    );
    for _ in 0..4 {
        call(&b, Outcome::Failure, FAST);
    }
    advance(Duration::from_secs(10)).await;
    assert_eq!(b.snapshot().calls, 0);
    call(&b, Outcome::Failure, FAST);
    assert_eq!(b.state(), State::Closed);
    for _ in 0..3 {
        advance(Duration::from_secs(2)).await;
        call(&b, Outcome::Failure, FAST);
    }
    assert_eq!(b.state(), State::Closed);
    advance(Duration::from_secs(2)).await;
    call(&b, Outcome::Failure, FAST); // five failures within the last 10 s
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn observer_sees_every_transition() {
    let observer = PrometheusObserver::new();
    let mut registry = prometheus_client::registry::Registry::default();
    observer.register(&mut registry);
    let b = CircuitBreaker::new("payments", &config()).with_observer(Arc::new(observer.clone()));
    open(&b);
    advance(WAIT).await;
    call(&b, Outcome::Failure, FAST);
    advance(WAIT).await;
    for _ in 0..3 {
        call(&b, Outcome::Success, FAST);
    }
    b.set_mode(BreakerMode::ForcedOpen);
    let count = |from, to| observer.transitions("payments", from, to);
    assert_eq!(count(State::Closed, State::Open), 1);
    assert_eq!(count(State::Open, State::HalfOpen), 2);
    assert_eq!(count(State::HalfOpen, State::Open), 1);
    assert_eq!(count(State::HalfOpen, State::Closed), 1);
    assert_eq!(count(State::Closed, State::ForcedOpen), 1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(
            r#"resilience_breaker_transitions_total{breaker="payments",from="closed",to="open"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"resilience_breaker_state{breaker="payments"} 3"#),
        "{text}"
    );
}

/// Many threads on one half-open breaker: never more than `halfOpenProbes` permits out.
#[test]
fn probes_are_capped_under_contention() {
    let b = Arc::new(CircuitBreaker::new(
        "svc",
        &CircuitBreakerConfig {
            wait_in_open: Duration::from_millis(1),
            half_open_probes: 2,
            ..config()
        },
    ));
    open(&b);
    std::thread::sleep(Duration::from_millis(2));
    let out = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let max = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (b, out, max) = (b.clone(), out.clone(), max.clone());
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    if let Ok(permit) = b.try_acquire() {
                        if permit.is_probe() {
                            let n = out.fetch_add(1, Ordering::SeqCst) + 1;
                            max.fetch_max(n, Ordering::SeqCst);
                            std::hint::spin_loop();
                            out.fetch_sub(1, Ordering::SeqCst);
                        }
                        // Dropped unrecorded: the slot comes back.
                        drop(permit);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(max.load(Ordering::SeqCst) <= 2);
    assert_eq!(b.state(), State::HalfOpen);
}

/// The naive reference model of the breaker, for sequential calls.
#[derive(Debug)]
struct Model {
    state: State,
    window: Vec<(bool, bool)>,
    open_until: Instant,
    probes_done: u32,
    probes_slow: u32,
}

#[derive(Debug, Clone)]
enum Op {
    Call { failure: bool, slow: bool },
    Advance(u64),
}

fn ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
    use proptest::prelude::*;
    proptest::collection::vec(
        prop_oneof![
            6 => (any::<bool>(), proptest::bool::weighted(0.2))
                .prop_map(|(failure, slow)| Op::Call { failure, slow }),
            1 => (0u64..15_000).prop_map(Op::Advance),
        ],
        0..200,
    )
}

proptest::proptest! {
    #[test]
    fn breaker_matches_reference_model(ops in ops(), size in 1u32..12, min in 1u32..12, probes in 1u32..4) {
        let config = CircuitBreakerConfig {
            window: WindowConfig { kind: WindowKind::Count, size, ..WindowConfig::default() },
            minimum_calls: min.min(size),
            half_open_probes: probes,
            slow_call_rate_threshold: 60.0,
            ..config()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let b = CircuitBreaker::new("model", &config);
            let mut m = Model {
                state: State::Closed,
                window: Vec::new(),
                open_until: Instant::now(),
                probes_done: 0,
                probes_slow: 0,
            };
            let rate = |part: usize, total: usize| part as f64 * 100.0 / total as f64;
            for op in ops {
                match op {
                    Op::Advance(ms) => advance(Duration::from_millis(ms)).await,
                    Op::Call { failure, slow } => {
                        let now = Instant::now();
                        if m.state == State::Open && now >= m.open_until {
                            m.state = State::HalfOpen;
                            m.probes_done = 0;
                            m.probes_slow = 0;
                        }
                        let admitted = match b.try_acquire() {
                            Ok(permit) => {
                                let elapsed = if slow { config.slow_call_duration } else { FAST };
                                let outcome = if failure { Outcome::Failure } else { Outcome::Success };
                                permit.record(outcome, elapsed);
                                true
                            }
                            Err(rejected) => {
                                assert_eq!(rejected.state, State::Open);
                                assert_eq!(rejected.next_probe_at, Some(m.open_until));
                                false
                            }
                        };
                        match m.state {
                            State::Closed => {
                                assert!(admitted);
                                m.window.push((failure, slow));
                                if m.window.len() > size as usize {
                                    m.window.remove(0);
                                }
                                let n = m.window.len();
                                let f = m.window.iter().filter(|c| c.0).count();
                                let s = m.window.iter().filter(|c| c.1).count();
                                if n >= config.minimum_calls as usize
                                    && (rate(f, n) >= config.failure_rate_threshold
                                        || rate(s, n) >= config.slow_call_rate_threshold)
                                {
                                    m.state = State::Open;
                                    m.open_until = now + config.wait_in_open;
                                }
                            }
                            State::Open => assert!(!admitted),
                            State::HalfOpen => {
                                assert!(admitted);
                                m.probes_done += 1;
                                m.probes_slow += u32::from(slow);
                                if failure {
                                    m.state = State::Open;
                                    m.open_until = now + config.wait_in_open;
                                } else if m.probes_done == probes {
                                    if rate(m.probes_slow as usize, probes as usize)
                                        >= config.slow_call_rate_threshold
                                    {
                                        m.state = State::Open;
                                        m.open_until = now + config.wait_in_open;
                                    } else {
                                        m.state = State::Closed;
                                        m.window.clear();
                                    }
                                }
                            }
                            State::ForcedOpen | State::Disabled => unreachable!(),
                        }
                        assert_eq!(b.state(), m.state);
                        if m.state == State::Closed {
                            assert_eq!(b.snapshot().calls as usize, m.window.len());
                        }
                    }
                }
            }
        });
    }
}

#[tokio::test(start_paused = true)]
async fn a_static_breaker_gives_static_permits() {
    let b: &'static CircuitBreaker = Box::leak(Box::new(CircuitBreaker::new("svc", &config())));
    let permit = b.try_acquire().unwrap();
    tokio::spawn(async move { permit.record(Outcome::Failure, FAST) })
        .await
        .unwrap();
    assert_eq!(b.snapshot().calls, 1);
}

//! Micro benchmarks of the resilience pipeline's parts, each beside its baseline.
//!
//! ```text
//! cargo bench -p appstack-resilience --bench pipeline
//! ```
//!
//! Operations that are ready at once are polled with a no-op waker, outside any runtime,
//! so only the pipeline's own work is timed. `appstack-bench resilience` prints the same
//! figures as JSON lines with allocation counts, contention and an outage.
#![allow(missing_docs, clippy::expect_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use appstack_resilience::breaker::Outcome;
use appstack_resilience::classify::Classification;
use appstack_resilience::classify::HttpClassifier;
use appstack_resilience::{
    Attempt, CircuitBreaker, Pipeline, ReplayBody, ResilienceConfig, ResilienceLayer,
};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{Empty, Full};
use tower::{Layer as _, Service as _};

/// Runs a future that is ready at once.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the benchmarked operation must be ready at once"),
    }
}

type Classifier = fn(&Attempt<'_, u64, ()>) -> Classification;

fn classify(attempt: &Attempt<'_, u64, ()>) -> Classification {
    match attempt {
        Attempt::Response(_) => Classification::Success,
        Attempt::Error(()) | Attempt::Timeout => Classification::Retryable { pushback: None },
    }
}

fn breaker(c: &mut Criterion) {
    let config = ResilienceConfig::default();
    let mut group = c.benchmark_group("breaker");
    let closed = CircuitBreaker::new("closed", &config.circuit_breaker);
    group.bench_function("acquire_record_closed", |b| {
        b.iter(|| {
            if let Ok(permit) = closed.try_acquire() {
                permit.record(Outcome::Success, black_box(Duration::from_micros(300)));
            }
        })
    });
    let open = CircuitBreaker::new("open", &config.circuit_breaker);
    for _ in 0..config.circuit_breaker.minimum_calls {
        if let Ok(permit) = open.try_acquire() {
            permit.record(Outcome::Failure, Duration::from_millis(1));
        }
    }
    group.bench_function("reject_open", |b| {
        b.iter(|| black_box(open.try_acquire().is_err()))
    });
    group.finish();
}

fn pipeline(c: &mut Criterion) {
    let config = ResilienceConfig::default();
    let p = Pipeline::new("bench", &config, classify as Classifier);
    let op = || async { Ok::<u64, ()>(black_box(1)) };
    let mut group = c.benchmark_group("pipeline");
    group.bench_function("bare", |b| b.iter(|| black_box(ready(op()))));
    group.bench_function("execute", |b| {
        b.iter(|| black_box(ready(p.execute(|_| op())).value.is_ok()))
    });
    let open = Pipeline::new("open", &config, classify as Classifier);
    for _ in 0..config.circuit_breaker.minimum_calls {
        if let Ok(permit) = open.breaker().try_acquire() {
            permit.record(Outcome::Failure, Duration::from_millis(1));
        }
    }
    group.bench_function("execute_rejected_open", |b| {
        b.iter(|| black_box(ready(open.execute(|_| op())).value.is_err()))
    });
    group.bench_function("budget_deposit", |b| {
        b.iter(|| p.retrier().budget().deposit())
    });
    group.finish();
}

fn layer(c: &mut Criterion) {
    let config = ResilienceConfig::default();
    let inner = tower::service_fn(|_: Request<ReplayBody<Full<Bytes>>>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
    });
    let body = Bytes::from_static(b"{\"sku\":42}");
    let request = || {
        Request::post("http://inventory.internal/items")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .expect("a valid request")
    };
    let mut group = c.benchmark_group("layer");
    let mut bare = inner;
    group.bench_function("bare", |b| {
        b.iter(|| {
            let (parts, _) = request().into_parts();
            let replay = ReplayBody::buffered(body.clone(), None);
            black_box(ready(bare.call(Request::from_parts(parts, replay))).is_ok())
        })
    });
    let mut layered = ResilienceLayer::new("bench", &config, HttpClassifier::new()).layer(inner);
    group.bench_function("call", |b| {
        b.iter(|| black_box(ready(layered.call(request())).is_ok()))
    });
    group.finish();
}

criterion_group!(benches, breaker, pipeline, layer);
criterion_main!(benches);

//! `resilience`: what the resilience pipeline costs per call, and what it does in an outage.
//!
//! Everything runs in this process on in-memory operations, so the figures are the
//! pipeline's own cost with nothing else to hide it:
//!
//! - `overhead_ns_p50`: [`Pipeline::execute`] (breaker closed, retry and bulkhead enabled,
//!   default settings) around an operation that answers at once, minus the bare operation,
//!   both timed in alternating batches of [`BATCH`] calls in the same run.
//!   `overhead_pending_ns_p50` is the same with an operation that is pending once (so the
//!   per-attempt timer is armed, as for every real network call); `layer_overhead_ns_p50`
//!   is the tower layer over an in-memory HTTP service (request head copied per attempt).
//! - `allocations_per_call`: heap allocations of a call through the pipeline minus those of
//!   the bare call, counted on the calling thread (`allocation-counter`).
//! - `open_reject_ns`: a call refused by an open breaker, through the whole pipeline.
//! - `contention_ratio`: the breaker shared by one thread per core (acquire + record), per
//!   thread, over the same loop on one thread. `pipeline_contention_ratio`: the same for
//!   whole executions.
//! - `grpc_loopback_overhead_ratio`: a unary call through a real tonic client and server
//!   on loopback with the layer, over the same call without it, sequential, same run.
//! - `outage_amplification`: attempts per original call while every attempt fails with a
//!   retryable error, breaker disabled so only the retry budget limits retries; the bound
//!   is `1 + ratio + minRetriesPerSecond × max(run, ttl) / calls`.
//!   `outage_with_breaker_attempts_per_call`: the same outage with the breaker enabled.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use appstack_proto::external::v1::processor_client::ProcessorClient;
use appstack_proto::external::v1::processor_server::{Processor, ProcessorServer};
use appstack_proto::external::v1::{ProcessRequest, ProcessResponse};
use appstack_resilience::breaker::Outcome;
use appstack_resilience::classify::Classification;
use appstack_resilience::classify::{GrpcClassifier, HttpClassifier};
use appstack_resilience::config::BreakerMode;
use appstack_resilience::{
    Attempt, CircuitBreaker, Pipeline, ReplayBody, ResilienceConfig, ResilienceLayer,
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use tonic::transport::Endpoint;
use tonic::transport::server::TcpIncoming;
use tower::{Layer as _, Service as _, ServiceBuilder};

use crate::measure::{Latencies, Report, cores, run_on_every_core, warmup_for};

/// Calls per timed batch: long enough that reading the clock is noise.
const BATCH: u32 = 1_000;

/// The goals.
const OVERHEAD_GOAL_NS: f64 = 150.0;
const OPEN_REJECT_GOAL_NS: f64 = 100.0;
const CONTENTION_GOAL: f64 = 0.5;
const AMPLIFICATION_GOAL: f64 = 1.2;

/// How the scripted operations fail.
#[derive(Debug, Clone, Copy)]
struct Unavailable;

type Classifier = fn(&Attempt<'_, u64, Unavailable>) -> Classification;

fn classify(attempt: &Attempt<'_, u64, Unavailable>) -> Classification {
    match attempt {
        Attempt::Response(_) => Classification::Success,
        Attempt::Error(Unavailable) | Attempt::Timeout => {
            Classification::Retryable { pushback: None }
        }
    }
}

fn pipeline(config: &ResilienceConfig) -> Pipeline<Classifier> {
    Pipeline::new("bench", config, classify as Classifier)
}

/// Polls `future` once with a no-op waker: for futures that are ready at once, this runs
/// them with no executor cost at all.
fn ready<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => Err(anyhow!("the operation was expected to be ready at once")),
    }
}

/// Yields once, then answers.
async fn pending_once(value: u64) -> Result<u64, Unavailable> {
    tokio::task::yield_now().await;
    Ok(value)
}

/// Times alternating batches of `bare` and `measured` for `seconds`; per-call nanoseconds.
fn paired(
    seconds: Duration,
    mut bare: impl FnMut() -> anyhow::Result<()>,
    mut measured: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Latencies, Latencies)> {
    let batch = |run: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<Duration> {
        let start = Instant::now();
        for _ in 0..BATCH {
            run()?;
        }
        Ok(start.elapsed() / BATCH)
    };
    let warmup = Instant::now() + warmup_for(seconds);
    while Instant::now() < warmup {
        batch(&mut bare)?;
        batch(&mut measured)?;
    }
    let (mut base, mut with) = (Latencies::new()?, Latencies::new()?);
    let end = Instant::now() + seconds;
    while Instant::now() < end {
        base.record(batch(&mut bare)?);
        with.record(batch(&mut measured)?);
    }
    Ok((base, with))
}

/// Allocations per call of `run` (which makes `calls` calls), on this thread.
fn allocations(calls: u64, run: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut result = Ok(());
    let info = allocation_counter::measure(|| result = run());
    result?;
    Ok(info.count_total as f64 / calls as f64)
}

/// Runs the scenario.
pub(crate) fn run(seconds: Duration) -> anyhow::Result<()> {
    let report = Report::new("resilience");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let _entered = runtime.enter();
    let config = ResilienceConfig::default();
    config.validate()?;

    overhead(&report, seconds, &config, &runtime)?;
    layer_overhead(&report, seconds, &config)?;
    open_reject(&report, seconds, &config)?;
    contention(&report, seconds, &config)?;
    runtime.block_on(grpc_loopback(&report, seconds, &config))?;
    runtime.block_on(outage(&report, seconds))?;
    Ok(())
}

/// The success path: ready and pending-once operations, time and allocations.
fn overhead(
    report: &Report,
    seconds: Duration,
    config: &ResilienceConfig,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let p = pipeline(config);
    let op = |_| async { Ok::<u64, Unavailable>(black_box(1)) };
    let bare = || ready(op(())).map(drop);
    let through = || ready(p.execute(|_| op(()))).map(drop);
    eprintln!("resilience: success path, ready operation ({seconds:?} per phase)");
    let (base, with) = paired(seconds, bare, through)?;
    let overhead = with.quantile_ns(0.5) as f64 - base.quantile_ns(0.5) as f64;
    // Context for the figure: the pipeline reads the clock twice per call.
    let (_, clock) = paired(
        warmup_for(seconds),
        || Ok(()),
        || {
            black_box(tokio::time::Instant::now());
            Ok(())
        },
    )?;
    report.real("clock_read_ns_p50", clock.quantile_ns(0.5) as f64, 1, "ns")?;
    report.real("bare_call_ns_p50", base.quantile_ns(0.5) as f64, 1, "ns")?;
    report.real(
        "pipeline_call_ns_p50",
        with.quantile_ns(0.5) as f64,
        1,
        "ns",
    )?;
    report.real(
        "pipeline_call_ns_p99",
        with.quantile_ns(0.99) as f64,
        1,
        "ns",
    )?;
    report.real("overhead_ns_p50", overhead, 1, "ns")?;

    let calls = 100_000u64;
    let bare_allocs = allocations(calls, || {
        for _ in 0..calls {
            black_box(ready(op(()))?.ok());
        }
        Ok(())
    })?;
    let with_allocs = allocations(calls, || {
        for _ in 0..calls {
            ready(p.execute(|_| op(())))?;
        }
        Ok(())
    })?;
    report.real(
        "allocations_per_call",
        with_allocs - bare_allocs,
        3,
        "allocations",
    )?;

    eprintln!("resilience: success path, operation pending once");
    let (base_pending, with_pending) = paired(
        seconds,
        || {
            runtime
                .block_on(pending_once(1))
                .map_err(|_| anyhow!("failed"))?;
            Ok(())
        },
        || {
            runtime
                .block_on(p.execute(|_| pending_once(1)))
                .value
                .map_err(|e| anyhow!("{e:?}"))?;
            Ok(())
        },
    )?;
    let pending_overhead =
        with_pending.quantile_ns(0.5) as f64 - base_pending.quantile_ns(0.5) as f64;
    report.real("overhead_pending_ns_p50", pending_overhead, 1, "ns")?;
    let pending_allocs = allocations(calls / 10, || {
        for _ in 0..calls / 10 {
            runtime
                .block_on(p.execute(|_| pending_once(1)))
                .value
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        Ok(())
    })? - allocations(calls / 10, || {
        for _ in 0..calls / 10 {
            runtime
                .block_on(pending_once(1))
                .map_err(|_| anyhow!("failed"))?;
        }
        Ok(())
    })?;
    report.real(
        "allocations_pending_per_call",
        pending_allocs,
        3,
        "allocations",
    )?;
    eprintln!(
        "resilience: goal overhead_ns_p50 <= {OVERHEAD_GOAL_NS} with 0 allocations: {} ({overhead:.1} ns, {with_allocs:.3} allocations)",
        if overhead <= OVERHEAD_GOAL_NS && with_allocs - bare_allocs <= 0.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

/// The tower layer over an in-memory HTTP service, against calling that service directly.
fn layer_overhead(
    report: &Report,
    seconds: Duration,
    config: &ResilienceConfig,
) -> anyhow::Result<()> {
    type Inner = Request<ReplayBody<Full<Bytes>>>;
    let inner = tower::service_fn(|_: Inner| async {
        Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
    });
    let layer = ResilienceLayer::new("bench-http", config, HttpClassifier::new());
    let request = || {
        Request::post("http://inventory.internal/items")
            .header("content-type", "application/json")
            .header("x-request-id", "5f0c6d4e")
            .body(Full::new(Bytes::from_static(b"{\"sku\":42}")))
    };
    let mut bare_service = inner;
    let mut layered = layer.layer(inner);
    eprintln!("resilience: tower layer over an in-memory HTTP service");
    let (base, with) = paired(
        seconds,
        || {
            let (parts, body) = request()?.into_parts();
            let replay = ReplayBody::buffered(Bytes::from_static(b"{\"sku\":42}"), None);
            drop(body);
            ready(bare_service.call(Request::from_parts(parts, replay)))?
                .map_err(|e| anyhow!("{e}"))?;
            Ok(())
        },
        || {
            ready(layered.call(request()?))?.map_err(|e| anyhow!("{e}"))?;
            Ok(())
        },
    )?;
    let overhead = with.quantile_ns(0.5) as f64 - base.quantile_ns(0.5) as f64;
    report.real(
        "layer_bare_call_ns_p50",
        base.quantile_ns(0.5) as f64,
        1,
        "ns",
    )?;
    report.real("layer_overhead_ns_p50", overhead, 1, "ns")?;
    let calls = 20_000;
    let bare_allocs = allocations(calls, || {
        for _ in 0..calls {
            let (parts, _) = request()?.into_parts();
            let replay = ReplayBody::buffered(Bytes::from_static(b"{\"sku\":42}"), None);
            ready(bare_service.call(Request::from_parts(parts, replay)))?
                .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    })?;
    let with_allocs = allocations(calls, || {
        for _ in 0..calls {
            ready(layered.call(request()?))?.map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    })?;
    report.real(
        "layer_allocations_per_call",
        with_allocs - bare_allocs,
        3,
        "allocations",
    )?;
    Ok(())
}

/// A call refused by an open breaker: through the pipeline, and the breaker alone.
fn open_reject(
    report: &Report,
    seconds: Duration,
    config: &ResilienceConfig,
) -> anyhow::Result<()> {
    let p = pipeline(config);
    // Open it the honest way: enough failures to cross the threshold.
    for _ in 0..config.circuit_breaker.minimum_calls {
        if let Ok(permit) = p.breaker().try_acquire() {
            permit.record(Outcome::Failure, Duration::from_millis(1));
        }
    }
    let state = p.breaker().state();
    if state != appstack_resilience::breaker::State::Open {
        return Err(anyhow!("the breaker did not open: {state}"));
    }
    let op = |_| async { Ok::<u64, Unavailable>(black_box(1)) };
    eprintln!("resilience: rejection while open");
    let (bare, through) = paired(
        seconds,
        || {
            black_box(p.breaker().try_acquire().is_err());
            Ok(())
        },
        || {
            let executed = ready(p.execute(|_| op(())))?;
            black_box(executed.value.is_err());
            Ok(())
        },
    )?;
    let reject = through.quantile_ns(0.5) as f64;
    report.real("breaker_reject_ns", bare.quantile_ns(0.5) as f64, 1, "ns")?;
    report.real("open_reject_ns", reject, 1, "ns")?;
    let calls = 100_000;
    let allocs = allocations(calls, || {
        for _ in 0..calls {
            black_box(ready(p.execute(|_| op(())))?.value.is_err());
        }
        Ok(())
    })?;
    report.real("open_reject_allocations_per_call", allocs, 3, "allocations")?;
    eprintln!(
        "resilience: goal open_reject_ns <= {OPEN_REJECT_GOAL_NS} with 0 allocations: {} ({reject:.1} ns, {allocs:.3} allocations)",
        if reject <= OPEN_REJECT_GOAL_NS && allocs <= 0.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

/// Calls per second per thread of `batch` (which makes [`BATCH`] calls) on `threads`
/// threads started together.
fn per_thread_rate(
    threads: usize,
    seconds: Duration,
    batch: &(dyn Fn() -> anyhow::Result<()> + Sync),
) -> anyhow::Result<f64> {
    let (batches_per_sec, _) = run_on_every_core(threads, seconds, batch)?;
    Ok(batches_per_sec * f64::from(BATCH) / threads as f64)
}

/// The shared breaker (and the shared pipeline) on every core against one thread.
fn contention(report: &Report, seconds: Duration, config: &ResilienceConfig) -> anyhow::Result<()> {
    let threads = cores();
    let breaker = CircuitBreaker::new("bench-shared", &config.circuit_breaker);
    let breaker_batch = || -> anyhow::Result<()> {
        for _ in 0..BATCH {
            let permit = breaker
                .try_acquire()
                .map_err(|e| anyhow!("rejected: {e:?}"))?;
            permit.record(Outcome::Success, Duration::from_micros(300));
        }
        Ok(())
    };
    let p = pipeline(config);
    let pipeline_batch = || -> anyhow::Result<()> {
        for _ in 0..BATCH {
            ready(p.execute(|_| async { Ok::<u64, Unavailable>(black_box(1)) }))?
                .value
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        Ok(())
    };
    eprintln!("resilience: contention, 1 thread then {threads} threads");
    per_thread_rate(1, warmup_for(seconds), &breaker_batch)?;
    let single = per_thread_rate(1, seconds, &breaker_batch)?;
    let shared = per_thread_rate(threads, seconds, &breaker_batch)?;
    let ratio = shared / single;
    report.real("breaker_calls_per_sec_single", single, 0, "calls/s")?;
    report.real(
        "breaker_calls_per_sec_per_thread_shared",
        shared,
        0,
        "calls/s",
    )?;
    report.count("threads", threads as u64, "threads")?;
    report.real("contention_ratio", ratio, 3, "ratio")?;
    let single = per_thread_rate(1, seconds, &pipeline_batch)?;
    let shared = per_thread_rate(threads, seconds, &pipeline_batch)?;
    report.real("pipeline_calls_per_sec_single", single, 0, "calls/s")?;
    report.real("pipeline_contention_ratio", shared / single, 3, "ratio")?;
    eprintln!(
        "resilience: goal contention_ratio >= {CONTENTION_GOAL}: {} ({ratio:.3})",
        if ratio >= CONTENTION_GOAL {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

/// What callers did during a simulated outage.
struct OutageRun {
    calls: f64,
    attempts: f64,
    seconds: f64,
}

/// A total outage: every attempt fails after 200 µs with a retryable error, while
/// `callers` tasks each make a call every millisecond for `seconds`.
async fn simulate_outage(
    p: Arc<Pipeline<Classifier>>,
    callers: usize,
    seconds: Duration,
) -> anyhow::Result<OutageRun> {
    let attempts = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let begun = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (p, attempts, calls) = (p.clone(), attempts.clone(), calls.clone());
            tokio::spawn(async move {
                let mut pace = tokio::time::interval(Duration::from_millis(1));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while begun.elapsed() < seconds {
                    pace.tick().await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    let executed = p
                        .execute(|_| {
                            attempts.fetch_add(1, Ordering::Relaxed);
                            async {
                                // A failure takes a little time, as a refused request would.
                                tokio::time::sleep(Duration::from_micros(200)).await;
                                Err::<u64, Unavailable>(Unavailable)
                            }
                        })
                        .await;
                    black_box(executed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.context("an outage caller failed")?;
    }
    Ok(OutageRun {
        calls: calls.load(Ordering::Relaxed) as f64,
        attempts: attempts.load(Ordering::Relaxed) as f64,
        seconds: begun.elapsed().as_secs_f64(),
    })
}

/// Attempts per call in a total outage: with the breaker disabled, only the retry budget
/// holds retries back (the bound); with it enabled, it stops nearly all of them.
async fn outage(report: &Report, seconds: Duration) -> anyhow::Result<()> {
    let callers = 64;
    let mut config = ResilienceConfig::default();
    config.retry.initial_backoff = Duration::from_millis(1);
    config.retry.max_backoff = Duration::from_millis(2);
    config.circuit_breaker.mode = BreakerMode::Disabled;
    config.validate()?;
    eprintln!("resilience: outage, {callers} callers at 1 call/ms each, breaker disabled");
    let run = simulate_outage(Arc::new(pipeline(&config)), callers, seconds).await?;
    let budget = &config.retry.budget;
    let floor = f64::from(budget.min_retries_per_second)
        * run.seconds.max(budget.ttl.as_secs_f64())
        / run.calls;
    let bound = 1.0 + budget.ratio + floor;
    let amplification = run.attempts / run.calls;
    report.real("outage_calls", run.calls, 0, "calls")?;
    report.real("outage_attempts", run.attempts, 0, "attempts")?;
    report.real("outage_amplification", amplification, 4, "attempts/call")?;
    report.real("outage_amplification_bound", bound, 4, "attempts/call")?;
    eprintln!(
        "resilience: goal outage_amplification <= {AMPLIFICATION_GOAL} + floor ({bound:.4}): {} ({amplification:.4}; maxAttempts alone would allow {})",
        if amplification <= bound {
            "met"
        } else {
            "NOT met"
        },
        config.retry.max_attempts
    );

    config.circuit_breaker.mode = BreakerMode::Enabled;
    config.circuit_breaker.wait_in_open = Duration::from_millis(500);
    config.validate()?;
    eprintln!("resilience: the same outage, breaker enabled (waitInOpen 500ms)");
    let run = simulate_outage(Arc::new(pipeline(&config)), callers, seconds).await?;
    report.real("outage_with_breaker_calls", run.calls, 0, "calls")?;
    report.real("outage_with_breaker_attempts", run.attempts, 0, "attempts")?;
    report.real(
        "outage_with_breaker_attempts_per_call",
        run.attempts / run.calls,
        5,
        "attempts/call",
    )?;
    Ok(())
}

/// Answers every call at once.
struct Echo;

#[tonic::async_trait]
impl Processor for Echo {
    async fn process(
        &self,
        request: tonic::Request<ProcessRequest>,
    ) -> Result<tonic::Response<ProcessResponse>, tonic::Status> {
        Ok(tonic::Response::new(ProcessResponse {
            result: request.into_inner().id,
        }))
    }
}

/// Sequential unary calls over loopback for `seconds`, timing each.
async fn time_calls<T>(
    client: &mut ProcessorClient<T>,
    seconds: Duration,
) -> anyhow::Result<Latencies>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut latencies = Latencies::new()?;
    let end = Instant::now() + seconds;
    while Instant::now() < end {
        let request = ProcessRequest {
            id: "job-1".into(),
            kind: "echo".into(),
            payload: "{}".into(),
            idempotency_key: "key-1".into(),
            attempt: 1,
        };
        let started = Instant::now();
        client
            .process(request)
            .await
            .map_err(|status| anyhow!("process: {status}"))?;
        latencies.record(started.elapsed());
    }
    Ok(latencies)
}

/// The layer over a real tonic channel, against the bare channel, on loopback.
async fn grpc_loopback(
    report: &Report,
    seconds: Duration,
    config: &ResilienceConfig,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding loopback")?;
    let address = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ProcessorServer::new(Echo))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connecting over loopback")?;
    let layer = ResilienceLayer::new("bench-grpc", config, GrpcClassifier::new());
    let layered = ServiceBuilder::new()
        .layer(layer)
        .map_request(|r: Request<ReplayBody<tonic::body::Body>>| r.map(tonic::body::Body::new))
        .service(channel.clone());
    let mut bare = ProcessorClient::new(channel);
    let mut with = ProcessorClient::new(layered);
    eprintln!("resilience: unary gRPC over loopback, with and without the layer");
    time_calls(&mut bare, warmup_for(seconds)).await?;
    time_calls(&mut with, warmup_for(seconds)).await?;
    // Alternate short phases so drift in the machine hits both alike.
    let (mut base, mut layered) = (Latencies::new()?, Latencies::new()?);
    let phase = seconds / 10;
    for _ in 0..10 {
        base.merge(&time_calls(&mut bare, phase).await?)?;
        layered.merge(&time_calls(&mut with, phase).await?)?;
    }
    let (b, l) = (
        base.quantile_ns(0.5) as f64,
        layered.quantile_ns(0.5) as f64,
    );
    report.real("grpc_loopback_bare_us_p50", b / 1e3, 1, "us")?;
    report.real("grpc_loopback_layer_us_p50", l / 1e3, 1, "us")?;
    report.real("grpc_loopback_overhead_ratio", l / b, 3, "ratio")?;
    let _ = stop.send(());
    server
        .await
        .context("the loopback server task")?
        .context("the loopback server")?;
    Ok(())
}

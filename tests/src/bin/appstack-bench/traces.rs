//! `traces`: what tracing costs a request. The whole stack in this process (auth, main and
//! worker, the simulator at zero latency), 16 callers submitting ASYNC requests as fast as
//! they go, in three phases of `--seconds`: traces off, on (every span exported over
//! OTLP/gRPC to a real receiver on loopback, as in production with a collector beside the
//! pod), off again. The baseline is the mean of the two untraced phases, so the table's
//! growth over the run does not count as tracing's cost.
//!
//! Figures: `submits_per_sec_untraced`, `submits_per_sec_traced`, `traced_to_untraced_ratio`,
//! the submit latency p50/p99 of both, and `spans_per_request` (what the collector receives
//! per request: Submit, the worker's `process`, the external call).
//!
//! The trace layer's filter is switched with a reload handle (OFF, then INFO as in
//! `appstack_common::telemetry`) over one global subscriber: the same
//! process, the same connections, the same database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use appstack_tests::otlp::OtlpReceiver;
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::reload;

use crate::end_to_end::{start_stack, submit};
use crate::measure::{Latencies, Report};

const CLIENTS: usize = 16;

pub(crate) fn run(seconds: Duration) -> anyhow::Result<()> {
    crate::measure::runtime()?.block_on(measure(seconds))
}

/// Submits from `CLIENTS` callers for `seconds`: submits per second and their latencies.
async fn phase(
    client: &appstack_tests::stack_server::Requests,
    seconds: Duration,
    first: u64,
) -> anyhow::Result<(f64, Latencies)> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut callers = Vec::new();
    for lane in 0..CLIENTS as u64 {
        let (mut client, stop) = (client.clone(), Arc::clone(&stop));
        callers.push(tokio::spawn(async move {
            let mut latencies = Latencies::new()?;
            let mut n = first + (lane << 32);
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                client
                    .submit(submit(n))
                    .await
                    .map_err(|s| anyhow::anyhow!("a submit failed: {s}"))?;
                latencies.record(at.elapsed());
                n += 1;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut all = Latencies::new()?;
    for caller in callers {
        all.merge(&caller.await??)?;
    }
    Ok((all.samples() as f64 / elapsed.as_secs_f64(), all))
}

async fn measure(seconds: Duration) -> anyhow::Result<()> {
    let report = Report::new("traces");
    let receiver = OtlpReceiver::start().await?;
    // The endpoint from the builder, not the environment: nothing global changes but the
    // subscriber.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(receiver.endpoint())
        .build()
        .context("building the OTLP exporter")?;
    use opentelemetry_otlp::WithExportConfig as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("appstack-bench")
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    // Off: every callsite disabled, as in a process that exports nothing. (A reloaded
    // filter is supported; a reloaded filtered layer is not.)
    let (filter, switch) = reload::Layer::new(LevelFilter::OFF);
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("appstack"))
                .with_filter(filter),
        )
        .try_init()
        .context("installing the subscriber")?;

    let stack = start_stack().await?;
    let token = stack.user_token("bench@example.com").await?;
    let client = stack.requests(&token).await?;
    // Warm the connections and the statement caches.
    phase(&client, Duration::from_secs(1), 0).await?;

    let (off_1, lat_off_1) = phase(&client, seconds, 1 << 40).await?;
    switch
        .reload(LevelFilter::INFO)
        .context("turning traces on")?;
    let spans_before = receiver.spans().len();
    let (on, lat_on) = phase(&client, seconds, 2 << 40).await?;
    switch
        .reload(LevelFilter::OFF)
        .context("turning traces off")?;
    provider
        .force_flush()
        .map_err(|e| anyhow::anyhow!("flushing spans: {e}"))?;
    // The worker's spans of the traced phase's last requests end a little later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = provider.force_flush();
    let spans = receiver.spans().len() - spans_before;
    let (off_2, lat_off_2) = phase(&client, seconds, 3 << 40).await?;

    let off = (off_1 + off_2) / 2.0;
    let mut lat_off = lat_off_1;
    lat_off.merge(&lat_off_2)?;
    report.real("submits_per_sec_untraced", off, 0, "1/s")?;
    report.real("submits_per_sec_traced", on, 0, "1/s")?;
    report.real("traced_to_untraced_ratio", on / off, 3, "ratio")?;
    report.real("submit_p50_ms_untraced", lat_off.quantile_ms(0.5), 3, "ms")?;
    report.real("submit_p50_ms_traced", lat_on.quantile_ms(0.5), 3, "ms")?;
    report.real("submit_p99_ms_untraced", lat_off.quantile_ms(0.99), 3, "ms")?;
    report.real("submit_p99_ms_traced", lat_on.quantile_ms(0.99), 3, "ms")?;
    report.real(
        "spans_per_request",
        spans as f64 / lat_on.samples().max(1) as f64,
        2,
        "spans",
    )?;
    stack.stop().await?;
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    Ok(())
}

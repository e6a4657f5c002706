//! What every scenario shares: printing figures, latency histograms, timed loops.

use std::io::Write as _;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use hdrhistogram::Histogram;
use serde::Serialize;

/// The multi-threaded tokio runtime a scenario runs its async phases on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

/// One printed figure.
#[derive(Debug, Serialize)]
pub(crate) struct Figure<'a> {
    bench: &'a str,
    metric: &'a str,
    value: serde_json::Value,
    unit: &'a str,
}

/// Prints a scenario's figures, one JSON line each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Report {
    bench: &'static str,
}

impl Report {
    pub(crate) fn new(bench: &'static str) -> Self {
        Self { bench }
    }

    /// Prints an integer figure.
    pub(crate) fn count(&self, metric: &str, value: u64, unit: &str) -> anyhow::Result<()> {
        self.print(metric, serde_json::Value::from(value), unit)
    }

    /// Prints a real figure rounded to `decimals` places.
    pub(crate) fn real(
        &self,
        metric: &str,
        value: f64,
        decimals: i32,
        unit: &str,
    ) -> anyhow::Result<()> {
        let scale = 10f64.powi(decimals);
        let rounded = (value * scale).round() / scale;
        // Not finite (a phase that completed nothing): JSON null.
        let value =
            serde_json::Number::from_f64(rounded).map_or(serde_json::Value::Null, Into::into);
        self.print(metric, value, unit)
    }

    pub(crate) fn print(
        &self,
        metric: &str,
        value: serde_json::Value,
        unit: &str,
    ) -> anyhow::Result<()> {
        let line = serde_json::to_string(&Figure {
            bench: self.bench,
            metric,
            value,
            unit,
        })?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").context("writing to stdout")?;
        out.flush().context("writing to stdout")
    }
}

/// A latency histogram in nanoseconds (1 ns to 1 h, 3 significant digits).
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self(Histogram::new_with_bounds(1, 3_600_000_000_000, 3)?))
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        self.0
            .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub(crate) fn merge(&mut self, other: &Self) -> anyhow::Result<()> {
        self.0
            .add(&other.0)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))
    }

    pub(crate) fn samples(&self) -> u64 {
        self.0.len()
    }

    /// The latency at `quantile` (0..=1), in nanoseconds.
    pub(crate) fn quantile_ns(&self, quantile: f64) -> u64 {
        self.0.value_at_quantile(quantile)
    }

    /// The latency at `quantile` (0..=1), in milliseconds.
    pub(crate) fn quantile_ms(&self, quantile: f64) -> f64 {
        self.quantile_ns(quantile) as f64 / 1e6
    }
}

/// Operations completed in a timed phase, and how long the phase took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throughput {
    pub(crate) operations: u64,
    pub(crate) elapsed: Duration,
}

impl Throughput {
    pub(crate) fn per_sec(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }
}

/// Calls `operation` in a loop on the calling thread until `duration` has passed.
pub(crate) fn run_for(
    duration: Duration,
    mut operation: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Throughput> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut operations = 0u64;
    while Instant::now() < deadline {
        operation()?;
        operations += 1;
    }
    Ok(Throughput {
        operations,
        elapsed: start.elapsed(),
    })
}

/// Runs `operation` in a loop on one thread per core for `duration` (after a common start);
/// the aggregate rate is the sum of the threads' rates.
pub(crate) fn run_on_every_core(
    threads: usize,
    duration: Duration,
    operation: impl Fn() -> anyhow::Result<()> + Sync,
) -> anyhow::Result<(f64, Vec<Throughput>)> {
    let start = Barrier::new(threads);
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    run_for(duration, &operation)
                })
            })
            .collect();
        join_all(handles)
    });
    let per_thread = results?;
    let total = per_thread.iter().map(Throughput::per_sec).sum();
    Ok((total, per_thread))
}

/// Waits for every benchmark thread: their results, or the first error (a panic is one).
pub(crate) fn join_all<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>>,
) -> anyhow::Result<Vec<T>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow!("a benchmark thread panicked")))
        })
        .collect()
}

/// The cores this process may use.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A warm-up before a measured phase: a fifth of it, at most one second.
pub(crate) fn warmup_for(duration: Duration) -> Duration {
    (duration / 5).min(Duration::from_secs(1))
}

//! The worker's metrics: the queue's depth (what a queue-depth autoscaler reads) and the jobs
//! it runs.

use std::collections::HashSet;
use std::sync::Mutex;

use appstack_queue::store::Stats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepthLabels {
    kind: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    kind: String,
    outcome: &'static str,
}

/// - `appstack_queue_depth{kind, state}`: live jobs (queued, scheduled, running), a gauge;
/// - `appstack_queue_oldest_ready_age_seconds`: how long the oldest ready job has waited;
/// - `appstack_worker_jobs_started_total{kind}`;
/// - `appstack_worker_jobs_finished_total{kind, outcome}` (`succeeded`, `retried`,
///   `postponed`, `dead`, `released`, `cancelled`, `lost`);
/// - `appstack_worker_jobs_in_flight`;
/// - `appstack_worker_enqueue_to_start_seconds`: submit to claim.
#[derive(Debug)]
pub struct WorkerMetrics {
    depth: Family<DepthLabels, Gauge>,
    oldest_ready_age: Gauge<f64, AtomicU64>,
    started: Family<KindLabels, Counter>,
    finished: Family<OutcomeLabels, Counter>,
    in_flight: Gauge,
    enqueue_to_start: Histogram,
    seen_depths: Mutex<HashSet<DepthLabels>>,
}

impl WorkerMetrics {
    /// New metrics registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            depth: Family::default(),
            oldest_ready_age: Gauge::default(),
            started: Family::default(),
            finished: Family::default(),
            in_flight: Gauge::default(),
            enqueue_to_start: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            seen_depths: Mutex::default(),
        };
        registry.register(
            "appstack_queue_depth",
            "Live jobs per kind and state",
            metrics.depth.clone(),
        );
        registry.register(
            "appstack_queue_oldest_ready_age_seconds",
            "How long the oldest job ready to run has waited",
            metrics.oldest_ready_age.clone(),
        );
        registry.register(
            "appstack_worker_jobs_started",
            "Jobs this worker started, per kind",
            metrics.started.clone(),
        );
        registry.register(
            "appstack_worker_jobs_finished",
            "Executions this worker ended, per kind and outcome",
            metrics.finished.clone(),
        );
        registry.register(
            "appstack_worker_jobs_in_flight",
            "Executions in flight in this worker",
            metrics.in_flight.clone(),
        );
        registry.register(
            "appstack_worker_enqueue_to_start_seconds",
            "Time from submit to the start of the first execution",
            metrics.enqueue_to_start.clone(),
        );
        metrics
    }

    pub(crate) fn started(&self, kind: &str, waited: Option<f64>) {
        self.started
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
        self.in_flight.inc();
        if let Some(waited) = waited {
            self.enqueue_to_start.observe(waited);
        }
    }

    pub(crate) fn finished(&self, kind: &str, outcome: &'static str) {
        self.finished
            .get_or_create(&OutcomeLabels {
                kind: kind.into(),
                outcome,
            })
            .inc();
        self.in_flight.dec();
    }

    pub(crate) fn set_depth(&self, stats: &Stats) {
        let mut seen = self
            .seen_depths
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now: HashSet<DepthLabels> = stats
            .counts
            .iter()
            .map(|c| DepthLabels {
                kind: c.kind.clone(),
                state: c.state.as_str(),
            })
            .collect();
        // A kind and state that emptied reads 0, not its last value.
        for gone in seen.difference(&now) {
            self.depth.get_or_create(gone).set(0);
        }
        for count in &stats.counts {
            self.depth
                .get_or_create(&DepthLabels {
                    kind: count.kind.clone(),
                    state: count.state.as_str(),
                })
                .set(count.count);
        }
        seen.extend(now);
        self.oldest_ready_age
            .set(stats.oldest_ready_age.as_secs_f64());
    }
}

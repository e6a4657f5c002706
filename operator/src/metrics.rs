//! The operator's metrics: reconciles, failures by reason, and how long each took.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A failure's reason label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Cheap to clone; every clone counts into the same registry.
#[derive(Clone)]
pub struct Metrics {
    reconciles: Counter,
    writes: Counter,
    failures: Family<Reason, Counter>,
    duration: Histogram,
    leader: Gauge,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Counter::default();
        let writes = Counter::default();
        let failures = Family::<Reason, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let leader = Gauge::default();
        let mut registry = Registry::with_prefix("appstack_operator");
        registry.register("reconciles", "Reconciles of AppStacks", reconciles.clone());
        registry.register(
            "api_writes",
            "Writes to the API server: children applied or deleted, statuses written",
            writes.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciles, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile took",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the Lease and runs the controller, else 0",
            leader.clone(),
        );
        Self {
            reconciles,
            writes,
            failures,
            duration,
            leader,
            registry: Arc::new(registry),
        }
    }
}

impl Metrics {
    /// This replica leads (runs the controller) or stopped leading.
    pub fn set_leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// A reconcile starts.
    pub fn start(&self) -> Instant {
        Instant::now()
    }

    /// A reconcile that started at `started` ended, failing for `failure` if any.
    pub fn finish(&self, started: Instant, failure: Option<&'static str>) {
        self.reconciles.inc();
        self.duration.observe(started.elapsed().as_secs_f64());
        if let Some(reason) = failure {
            self.failures.get_or_create(&Reason { reason }).inc();
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The operator wrote to the API server (an apply, a delete, a status).
    pub fn wrote(&self) {
        self.writes.inc();
    }

    /// Writes so far.
    pub fn writes(&self) -> u64 {
        self.writes.get()
    }

    /// Failed reconciles so far, every reason.
    pub fn failures(&self) -> u64 {
        crate::controller::ReconcileError::METRIC_LABELS
            .into_iter()
            .map(|reason| self.failures.get_or_create(&Reason { reason }).get())
            .sum()
    }

    /// Reconciles so far.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.get()
    }
}

//! Hooks for circuit-breaker transitions: metrics without forcing a registry on users.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::State;

/// Told of every state transition of the breakers it is attached to.
///
/// Called after the breaker's lock is released, on the thread of the call that caused the
/// transition; transitions are rare, but an observer should still be quick.
pub trait BreakerObserver: Send + Sync {
    /// `breaker` went from `from` to `to`.
    fn on_transition(&self, breaker: &str, from: State, to: State);
}

/// An observer that does nothing (the default; the tracing event is still emitted).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl BreakerObserver for NoopObserver {
    fn on_transition(&self, _breaker: &str, _from: State, _to: State) {}
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    breaker: String,
    from: &'static str,
    to: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    breaker: String,
}

/// Prometheus metrics for breakers, with prometheus-client:
///
/// - `resilience_breaker_transitions_total{breaker, from, to}`: transitions, a counter;
/// - `resilience_breaker_state{breaker}`: the current state, a gauge (`0` closed, `1` open,
///   `2` half-open, `3` forced open, `4` disabled), set on each transition.
///
/// One observer serves any number of breakers (the label is the breaker's name, a bounded
/// set: one per external service). Cloning shares the metrics.
#[derive(Debug, Clone, Default)]
pub struct PrometheusObserver {
    transitions: Family<TransitionLabels, Counter>,
    state: Family<BreakerLabels, Gauge>,
}

impl PrometheusObserver {
    /// New metrics, not yet registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the metrics (with the `resilience_breaker_` prefix) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "resilience_breaker_transitions",
            "Circuit breaker state transitions",
            self.transitions.clone(),
        );
        registry.register(
            "resilience_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled",
            self.state.clone(),
        );
    }

    /// Transitions counted so far for `breaker` from `from` to `to` (for tests and tools).
    pub fn transitions(&self, breaker: &str, from: State, to: State) -> u64 {
        self.transitions
            .get_or_create(&TransitionLabels {
                breaker: breaker.to_owned(),
                from: from.as_str(),
                to: to.as_str(),
            })
            .get()
    }
}

impl BreakerObserver for PrometheusObserver {
    fn on_transition(&self, breaker: &str, from: State, to: State) {
        self.transitions
            .get_or_create(&TransitionLabels {
                breaker: breaker.to_owned(),
                from: from.as_str(),
                to: to.as_str(),
            })
            .inc();
        self.state
            .get_or_create(&BreakerLabels {
                breaker: breaker.to_owned(),
            })
            .set(i64::from(to.code()));
    }
}

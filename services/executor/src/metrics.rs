//! The executor's metrics: calls and their attempts per external service, and the breakers.

use std::time::Duration;

use appstack_queue::decide::Outcome;
use appstack_resilience::breaker::PrometheusObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::{Execution, Route};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

/// Counters of external calls, per service (a bounded label set: the configured services).
///
/// - `appstack_external_executions_total{service, outcome}`: executions by outcome
///   (`succeeded`, `retryable`, `permanent`, `circuit_open`, `bulkhead_full`);
/// - `appstack_external_calls_total{service}`: calls made, in-call retries included (their
///   ratio to executions is the retry amplification);
/// - `appstack_external_execution_duration_seconds{service}`;
/// - `appstack_external_retry_budget_exhausted_total{service}`;
/// - the breakers' `resilience_breaker_state` and `resilience_breaker_transitions_total`.
#[derive(Clone, Debug)]
pub struct ExecutorMetrics {
    executions: Family<CallLabels, Counter>,
    calls: Family<ServiceLabels, Counter>,
    duration: Family<ServiceLabels, Histogram>,
    budget_exhausted: Family<ServiceLabels, Counter>,
    pub(crate) breakers: PrometheusObserver,
}

impl Default for ExecutorMetrics {
    fn default() -> Self {
        Self {
            executions: Family::default(),
            calls: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            budget_exhausted: Family::default(),
            breakers: PrometheusObserver::new(),
        }
    }
}

impl ExecutorMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "appstack_external_executions",
            "Executions of requests against external services, by outcome",
            self.executions.clone(),
        );
        registry.register(
            "appstack_external_calls",
            "Calls made to external services, in-call retries included",
            self.calls.clone(),
        );
        registry.register(
            "appstack_external_execution_duration_seconds",
            "Time of one execution against an external service, retries included",
            self.duration.clone(),
        );
        registry.register(
            "appstack_external_retry_budget_exhausted",
            "Executions whose in-call retries stopped because the retry budget was spent",
            self.budget_exhausted.clone(),
        );
        self.breakers.register(registry);
    }

    pub(crate) fn record(
        &self,
        route: &Route,
        execution: &Execution,
        took: Duration,
        budget_spent: bool,
    ) {
        let calls = execution.calls;
        let service = route.service().to_owned();
        let outcome = match &execution.outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Retryable { .. } => "retryable",
            Outcome::Permanent { .. } => "permanent",
            Outcome::BreakerOpen { .. } => "circuit_open",
            Outcome::BulkheadFull => "bulkhead_full",
        };
        self.executions
            .get_or_create(&CallLabels {
                service: service.clone(),
                outcome,
            })
            .inc();
        let labels = ServiceLabels { service };
        if calls > 0 {
            self.calls.get_or_create(&labels).inc_by(u64::from(calls));
            self.duration
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
        }
        if budget_spent {
            self.budget_exhausted.get_or_create(&labels).inc();
        }
    }
}

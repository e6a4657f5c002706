//! Executes one request against the external service its route names, through that
//! service's resilience pipeline — the one path for SYNC requests (in main, inside the
//! caller's deadline) and queued ones (in the worker).
//!
//! - [`Executor`]: built once per process from the stack configuration: one client and one
//!   [`Pipeline`] (breaker, retry budget, bulkhead) per
//!   external service, shared by every caller; the routes by kind.
//! - [`Executor::execute`] makes the call (HTTP: `POST {endpoint}` with the payload and an
//!   `Idempotency-Key`; gRPC: `Processor/Process`), and turns what happened into the
//!   queue's [`Outcome`] plus the result or the [`Failure`] to record.
//! - [`json`]: the checks on payloads and results (JSON, object, size, storable as JSONB).
//!
//! The idempotency key sent is the request id: it is the same for every attempt and every
//! redelivery of one request, and unlike the caller's own key it is unique across callers.

pub mod json;

mod execution;
mod metrics;
mod reply;
mod transport;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use appstack_config::{Protocol, StackConfig};
use appstack_queue::decide::{Backoff, RetryPolicy};
use appstack_resilience::{CircuitBreaker, Pipeline, breaker::State};
use prometheus_client::registry::Registry;

pub use execution::{Call, Execution};
pub use metrics::ExecutorMetrics;
pub use transport::{IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_METADATA, TransportError};

pub use appstack_queue::decide::Outcome;
pub use appstack_queue::store::Failure;

use crate::reply::ExternalClassifier;
use crate::transport::Transport;

/// One external service: its client and its pipeline.
#[derive(Debug)]
pub(crate) struct ExternalService {
    pub(crate) name: String,
    pub(crate) transport: Transport,
    pub(crate) pipeline: Pipeline<ExternalClassifier>,
}

/// One external service's breaker, as [`Executor::service_health`] reports it.
#[derive(Debug, Clone)]
pub struct ServiceHealth {
    /// The service's name.
    pub name: String,
    /// Its breaker's state and window.
    pub breaker: appstack_resilience::breaker::Snapshot,
    /// The kinds routed to it, sorted.
    pub kinds: Vec<String>,
}

/// Where requests of one kind go.
#[derive(Debug, Clone)]
pub struct Route {
    service: Arc<ExternalService>,
    timeout: Duration,
    policy: RetryPolicy,
    ordering_key: Option<String>,
}

impl Route {
    /// The external service's name.
    pub fn service(&self) -> &str {
        &self.service.name
    }

    /// Longest time of one execution, in-call retries included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The redelivery rules of queued requests of this kind.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The JSON pointer whose value orders requests of this kind, if any.
    pub fn ordering_key(&self) -> Option<&str> {
        self.ordering_key.as_deref()
    }
}

/// An executor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// An external service's client could not be built.
    #[error("externalServices.{service}: {source}")]
    Transport {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// A route names a service that is not declared (the configuration's validation
    /// reports this first).
    #[error("routes.{kind}.service: names no declared external service {service:?}")]
    UnknownService {
        /// The route.
        kind: String,
        /// The name.
        service: String,
    },
}

/// The routes and external services of a stack. Cheap to clone; clones share the clients,
/// breakers, budgets and bulkheads.
#[derive(Debug, Clone)]
pub struct Executor {
    routes: Arc<HashMap<String, Route>>,
    services: Arc<Vec<Arc<ExternalService>>>,
    metrics: ExecutorMetrics,
    max_result_bytes: usize,
}

impl Executor {
    /// The executor of `config`'s external services and routes (a validated
    /// configuration), registering its metrics (and the breakers') in `registry`.
    pub fn new(config: &StackConfig, registry: &mut Registry) -> Result<Self, ExecutorError> {
        let metrics = ExecutorMetrics::default();
        metrics.register(registry);
        let max_result_bytes = config.requests.max_result_bytes;
        // Enough idle connections for every worker slot to reuse one.
        let idle_per_host = usize::try_from(config.worker.concurrency).unwrap_or(64);
        let mut by_name = HashMap::new();
        for (name, service) in &config.external_services {
            let transport = match service.protocol {
                Protocol::Http => {
                    Transport::http(&service.endpoint, max_result_bytes, idle_per_host)
                }
                Protocol::Grpc => Transport::grpc(&service.endpoint, max_result_bytes),
            }
            .map_err(|source| ExecutorError::Transport {
                service: name.clone(),
                source,
            })?;
            let resilience = &service.resilience;
            let breaker = CircuitBreaker::new(name.clone(), &resilience.circuit_breaker)
                .with_observer(Arc::new(metrics.breakers.clone()));
            let pipeline =
                Pipeline::builder(name.clone(), resilience, ExternalClassifier::default())
                    .breaker(Arc::new(breaker))
                    .build();
            by_name.insert(
                name.clone(),
                Arc::new(ExternalService {
                    name: name.clone(),
                    transport,
                    pipeline,
                }),
            );
        }
        let mut routes = HashMap::new();
        for (kind, route) in &config.routes {
            let service = by_name.get(&route.service).cloned().ok_or_else(|| {
                ExecutorError::UnknownService {
                    kind: kind.clone(),
                    service: route.service.clone(),
                }
            })?;
            let policy = RetryPolicy {
                max_attempts: route.max_job_attempts,
                backoff: Backoff {
                    initial: route.job_backoff.initial,
                    max: route.job_backoff.max,
                    multiplier: route.job_backoff.multiplier,
                },
                // A full bulkhead frees within about one call's time.
                bulkhead_wait: service
                    .pipeline
                    .per_attempt()
                    .clamp(Duration::from_millis(50), Duration::from_secs(5)),
            };
            routes.insert(
                kind.clone(),
                Route {
                    service,
                    timeout: route.timeout,
                    policy,
                    ordering_key: route.ordering_key.clone(),
                },
            );
        }
        Ok(Self {
            routes: Arc::new(routes),
            services: Arc::new(by_name.into_values().collect()),
            metrics,
            max_result_bytes,
        })
    }

    /// The route of `kind`, if one is configured.
    pub fn route(&self, kind: &str) -> Option<&Route> {
        self.routes.get(kind)
    }

    /// Every routed kind.
    pub fn kinds(&self) -> Vec<String> {
        self.routes.keys().cloned().collect()
    }

    /// The redelivery rules of `kind` (the defaults' for a kind no longer routed, so its
    /// queued requests still end).
    pub fn policy_of(&self, kind: &str) -> RetryPolicy {
        self.routes.get(kind).map_or(
            RetryPolicy {
                max_attempts: 1,
                backoff: Backoff {
                    initial: Duration::from_secs(1),
                    max: Duration::from_secs(1),
                    multiplier: 1.0,
                },
                bulkhead_wait: Duration::from_secs(1),
            },
            |route| route.policy,
        )
    }

    /// Kinds whose service refuses calls now (breaker open or forced open): claiming them
    /// would only postpone them again.
    pub fn unavailable_kinds(&self) -> Vec<String> {
        let down: Vec<&str> = self
            .services
            .iter()
            .filter(|s| {
                let breaker = s.pipeline.breaker();
                match breaker.state() {
                    State::ForcedOpen => true,
                    // Open and still waiting: a probe would be refused too.
                    State::Open => breaker
                        .next_probe_at()
                        .is_some_and(|at| at > tokio::time::Instant::now()),
                    _ => false,
                }
            })
            .map(|s| s.name.as_str())
            .collect();
        if down.is_empty() {
            return Vec::new();
        }
        self.routes
            .iter()
            .filter(|(_, route)| down.contains(&route.service.name.as_str()))
            .map(|(kind, _)| kind.clone())
            .collect()
    }

    /// Every external service's breaker now and the kinds routed to it, by name.
    pub fn service_health(&self) -> Vec<ServiceHealth> {
        let mut health: Vec<ServiceHealth> = self
            .services
            .iter()
            .map(|service| {
                let mut kinds: Vec<String> = self
                    .routes
                    .iter()
                    .filter(|(_, route)| route.service.name == service.name)
                    .map(|(kind, _)| kind.clone())
                    .collect();
                kinds.sort();
                ServiceHealth {
                    name: service.name.clone(),
                    breaker: service.pipeline.breaker().snapshot(),
                    kinds,
                }
            })
            .collect();
        health.sort_by(|a, b| a.name.cmp(&b.name));
        health
    }

    /// The metrics.
    pub fn metrics(&self) -> &ExecutorMetrics {
        &self.metrics
    }
}

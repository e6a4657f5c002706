//! `externalServices` and `routes`: the microservices requests are sent to, and which
//! request kind goes where, how often and in what order.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resilience::ResilienceConfig;
use crate::rules::{is_absolute_http_url, json_pointer_problem};
use crate::{Problems, Validate};

/// One external microservice (an entry of `externalServices`, keyed by its name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalServiceConfig {
    /// Where it is reached: an absolute `http` or `https` URL, for either protocol (e.g.
    /// `http://payments.billing.svc:8080`). Required.
    pub endpoint: String,
    /// `http` (JSON over HTTP, `POST`) or `grpc` (`appstack.external.v1.Processor`).
    /// Default `http`.
    pub protocol: Protocol,
    /// Timeouts, in-call retries, circuit breaker and bulkhead of the calls to it. `{}`
    /// means all defaults.
    pub resilience: ResilienceConfig,
}

impl Validate for ExternalServiceConfig {
    fn check(&self, p: &mut Problems) {
        if self.endpoint.is_empty() {
            p.push("endpoint", "is required (an absolute http(s) URL)");
        } else if !is_absolute_http_url(&self.endpoint) {
            p.push(
                "endpoint",
                "must be an absolute http(s) URL such as http://payments.billing.svc:8080",
            );
        }
        p.field("resilience", |p| self.resilience.check(p));
    }
}

/// How an external service is called: `http` (JSON over HTTP) or `grpc`
/// (`appstack.external.v1.Processor`).
// The variants carry no doc comments on purpose: schemars then describes the enum as a plain
// `enum` of strings, which a Kubernetes structural schema accepts (a `oneOf` it would not).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    #[default]
    Http,
    Grpc,
}

/// Where requests of one kind go (an entry of `routes`, keyed by the request kind).
///
/// One request is executed at most `maxJobAttempts` times (redeliveries of the queued
/// job); each execution may call the service up to the service's
/// `resilience.retry.maxAttempts` times (in-call retries), so a request reaches the service
/// at most `maxJobAttempts × retry.maxAttempts` times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteConfig {
    /// The external service that executes this kind: a key of `externalServices`.
    /// Required.
    pub service: String,
    /// Executions of one queued request, the first included; in-call retries are not
    /// counted here (see the service's `resilience.retry.maxAttempts`). After the last
    /// failed execution the request is dead. Count, `1..=100`; default `5`.
    pub max_job_attempts: u32,
    /// The delay before the queue executes a failed request again.
    pub job_backoff: JobBackoffConfig,
    /// Longest time of one execution, in-call retries included. Duration, `1ms..=1h`, at
    /// least the service's `resilience.timeout.perAttempt`; default `30s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub timeout: Duration,
    /// A JSON pointer (RFC 6901) into the request payload, e.g. `/accountId`: requests of
    /// this kind whose payloads hold the same value there run one at a time, in the order
    /// they were submitted. Unset: no ordering, requests run in parallel.
    pub ordering_key: Option<String>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            service: String::new(),
            max_job_attempts: 5,
            job_backoff: JobBackoffConfig::default(),
            timeout: Duration::from_secs(30),
            ordering_key: None,
        }
    }
}

impl Validate for RouteConfig {
    /// The rules of the route alone; whether `service` is declared is checked by the whole
    /// configuration ([`crate::StackConfig`]).
    fn check(&self, p: &mut Problems) {
        if self.service.is_empty() {
            p.push("service", "is required (a key of externalServices)");
        }
        if !(1..=100).contains(&self.max_job_attempts) {
            p.push(
                "maxJobAttempts",
                format_args!("must be between 1 and 100, got {}", self.max_job_attempts),
            );
        }
        p.field("jobBackoff", |p| self.job_backoff.check(p));
        if !(Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&self.timeout) {
            p.push("timeout", "must be between 1ms and 1h");
        }
        if let Some(problem) = self.ordering_key.as_deref().and_then(json_pointer_problem) {
            p.push("orderingKey", problem);
        }
    }
}

/// Exponential backoff between executions of a queued request: the delay before execution
/// `n + 1` is `min(max, initial × multiplier^(n-1))`, jittered; a `Retry-After` from the
/// service replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct JobBackoffConfig {
    /// Delay before the second execution. Duration, above `0s`; default `1s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub initial: Duration,
    /// Largest delay. Duration, from `initial` to `1h`; default `5m`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub max: Duration,
    /// Growth per execution. Factor, `1.0..=10.0`; default `2.0`.
    pub multiplier: f64,
}

impl Default for JobBackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            multiplier: 2.0,
        }
    }
}

impl Validate for JobBackoffConfig {
    fn check(&self, p: &mut Problems) {
        if self.initial.is_zero() {
            p.push("initial", "must be greater than 0s");
        }
        if self.max < self.initial {
            p.push(
                "max",
                format_args!(
                    "must be at least initial ({})",
                    crate::duration::format(self.initial)
                ),
            );
        }
        if self.max > Duration::from_secs(3600) {
            p.push("max", "must be at most 1h");
        }
        if !(1.0..=10.0).contains(&self.multiplier) {
            p.push(
                "multiplier",
                format_args!("must be between 1.0 and 10.0, got {}", self.multiplier),
            );
        }
    }
}

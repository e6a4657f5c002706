//! The resilience settings of calls to one external service (`appstack-resilience` runs
//! them).
//!
//! [`ResilienceConfig`] appears in the services' configuration files (under
//! `externalServices.<name>.resilience`) and in the `AppStack` custom resource, so its
//! field names (camelCase), units and defaults are part of the product. Durations are
//! strings of [the grammar](crate::duration) (`"250ms"`, `"2s"`, `"1m30s"`); rates are
//! percentages in `0..=100` or plain ratios where stated.
//!
//! Every struct is `deny_unknown_fields`: a misspelt key is an error naming the key, not a
//! silently ignored setting. [`ResilienceConfig::validate`] checks the ranges and the
//! cross-field rules and reports every broken rule at once, each message starting with the
//! field's camelCase path (`retry.maxBackoff: …`, or the full path from the root when
//! checked inside a whole configuration).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::format as show;
use crate::{InvalidConfig, Problems, Validate};

/// Timeouts, retry, circuit breaker and bulkhead for calls to one external service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ResilienceConfig {
    /// Time limits per attempt and for the whole call (retries included).
    pub timeout: TimeoutConfig,
    /// When and how often a failed attempt is tried again.
    pub retry: RetryConfig,
    /// Stops calling a failing service for a while, then probes it.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Caps the calls in flight to the service.
    pub bulkhead: BulkheadConfig,
}

/// Time limits. The remaining time is passed on to the callee (gRPC `grpc-timeout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeoutConfig {
    /// Longest time one attempt may take; a slower attempt is cancelled and counts as a
    /// retryable failure. Duration string; default `2s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub per_attempt: Duration,
    /// Longest time the whole call may take, all attempts and backoffs included; no attempt
    /// is started that could not finish before it. A shorter deadline set by the caller
    /// wins. Duration string; default `10s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub overall: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            per_attempt: Duration::from_secs(2),
            overall: Duration::from_secs(10),
        }
    }
}

/// Retry policy: exponential backoff with jitter, capped by a retry budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryConfig {
    /// Attempts in total, the first one included (as in gRFC A6); `1` disables retries.
    /// Count, `1..=10`; default `3`.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry. Duration string; default `100ms`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub initial_backoff: Duration,
    /// Largest backoff ceiling, however many retries came before. Duration string; default `2s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub max_backoff: Duration,
    /// Growth of the backoff ceiling per retry: the ceiling before retry `n` is
    /// `min(maxBackoff, initialBackoff × multiplier^(n-1))`. Factor, `1.0..=10.0`; default `2.0`.
    pub multiplier: f64,
    /// How the actual delay is drawn below the ceiling. Default `full`.
    pub jitter: Jitter,
    /// Caps retries to a share of recent traffic, so an outage is not amplified.
    pub budget: RetryBudgetConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: Jitter::Full,
            budget: RetryBudgetConfig::default(),
        }
    }
}

/// How the retry delay is drawn from the backoff ceiling: `full` (uniform in `[0, ceiling]`,
/// "full jitter", which spreads the retries of many clients apart) or `none` (exactly the
/// ceiling; only for tests and tools, as synchronised clients retry in waves).
// The variants carry no doc comments on purpose: schemars then describes the enum as a plain
// `enum` of strings, which a Kubernetes structural schema accepts (a `oneOf` it would not).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum Jitter {
    #[default]
    Full,
    None,
}

/// Retry budget, as in Finagle and Linkerd: each original call deposits `ratio` tokens,
/// each retry withdraws one, deposits and withdrawals expire after `ttl`, and
/// `minRetriesPerSecond` retries per second are always allowed on top.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryBudgetConfig {
    /// Retries allowed per original call over the last `ttl`. Ratio, `0.0..=1.0`
    /// (`0.2` = at most 20% extra load); default `0.2`.
    pub ratio: f64,
    /// Retries per second always allowed, whatever the traffic (so a quiet client can still
    /// retry). Count per second, `0..=100000`; default `10`.
    pub min_retries_per_second: u32,
    /// How long a deposit or withdrawal counts. Duration string, `1s..=1h`; default `10s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// Circuit breaker: opens when too many recent calls failed or were slow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreakerConfig {
    /// `enabled` (normal operation), `disabled` (every call passes, nothing is recorded) or
    /// `forcedOpen` (every call is rejected). Default `enabled`.
    pub mode: BreakerMode,
    /// Which recent calls the rates are computed over.
    pub window: WindowConfig,
    /// The breaker opens when at least this share of the calls in the window failed.
    /// Percent, `0 < x ≤ 100`; default `50`.
    pub failure_rate_threshold: f64,
    /// The breaker opens when at least this share of the calls in the window were slow.
    /// Percent, `0 < x ≤ 100`; default `100` (only when every call is slow).
    pub slow_call_rate_threshold: f64,
    /// A call taking at least this long is slow, whether it succeeded or not.
    /// Duration string; default `2s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub slow_call_duration: Duration,
    /// Calls that must be in the window before the rates are evaluated at all.
    /// Count, `1..=`window size for a count window; default `20`.
    pub minimum_calls: u32,
    /// How long the breaker stays open before it lets probes through.
    /// Duration string, `> 0`; default `15s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub wait_in_open: Duration,
    /// Probe calls let through once the wait is over; all must succeed (and not be too
    /// slow) to close the breaker, one failure reopens it. At most this many are in flight
    /// at once. Count, `1..=1000`; default `3`.
    pub half_open_probes: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            mode: BreakerMode::Enabled,
            window: WindowConfig::default(),
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(2),
            minimum_calls: 20,
            wait_in_open: Duration::from_secs(15),
            half_open_probes: 3,
        }
    }
}

/// Operating mode of a circuit breaker: `enabled` (normal operation: closed, open and
/// half-open as the calls decide), `disabled` (every call passes and nothing is recorded) or
/// `forcedOpen` (every call is rejected until the mode is changed: an operator's kill switch).
// No doc comments on the variants: see `Jitter`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum BreakerMode {
    #[default]
    Enabled,
    Disabled,
    ForcedOpen,
}

/// The sliding window of a circuit breaker. A flat object with a `type` discriminator (like
/// Kubernetes' `strategy.type`) rather than a one-of, so the CRD schema stays structural.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct WindowConfig {
    /// `count` (the last `size` calls) or `time` (the calls of the last `duration`).
    /// Default `count`.
    #[serde(rename = "type")]
    pub kind: WindowKind,
    /// For a `count` window: how many of the most recent calls are kept.
    /// Count, `1..=100000`; default `100`. Ignored by a `time` window.
    pub size: u32,
    /// For a `time` window: how far back calls are kept, in whole seconds (one bucket per
    /// second). Duration string, `1s..=1h`; default `60s`. Ignored by a `count` window.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub duration: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            kind: WindowKind::Count,
            size: 100,
            duration: Duration::from_secs(60),
        }
    }
}

/// Kind of sliding window: `count` (the last `size` calls) or `time` (the calls of the last
/// `duration`).
// No doc comments on the variants: see `Jitter`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum WindowKind {
    #[default]
    Count,
    Time,
}

/// Bulkhead: a cap on the calls in flight to one service, with a bounded waiting line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkheadConfig {
    /// Calls in flight at once. Count, `1..=100000`; default `64`.
    pub max_concurrent: u32,
    /// Calls that may wait for a slot when all are taken; beyond that a call is rejected at
    /// once. Count, `0..=100000` (`0` = never wait); default `64`.
    pub max_queue: u32,
    /// Longest wait for a slot; a call still waiting then is rejected.
    /// Duration string; default `100ms`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub queue_timeout: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            max_queue: 64,
            queue_timeout: Duration::from_millis(100),
        }
    }
}

const MAX_WINDOW_SIZE: u32 = 100_000;
const MAX_WINDOW_DURATION: Duration = Duration::from_secs(3600);
const MAX_ATTEMPTS: u32 = 10;
/// Waiting longer than this for a slot is a stuck caller, not a queue.
const MAX_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

impl ResilienceConfig {
    /// Checks ranges and cross-field rules; reports every broken rule at once (the same as
    /// [`Validate::validate`], callable without the trait in scope).
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] listing every broken rule.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        Validate::validate(self)
    }
}

impl Validate for ResilienceConfig {
    fn check(&self, p: &mut Problems) {
        p.field("timeout", |p| self.timeout.check(p));
        p.field("retry", |p| self.retry.check(p));
        p.field("circuitBreaker", |p| self.circuit_breaker.check(p));
        p.field("bulkhead", |p| self.bulkhead.check(p));
    }
}

impl Validate for TimeoutConfig {
    fn check(&self, p: &mut Problems) {
        if self.per_attempt.is_zero() {
            p.push("perAttempt", "must be greater than 0s");
        }
        if self.overall.is_zero() {
            p.push("overall", "must be greater than 0s");
        }
        if self.overall < self.per_attempt {
            p.push(
                "overall",
                format_args!("must be at least perAttempt ({})", show(self.per_attempt)),
            );
        }
    }
}

impl Validate for RetryConfig {
    fn check(&self, p: &mut Problems) {
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            p.push(
                "maxAttempts",
                format_args!(
                    "must be between 1 and {MAX_ATTEMPTS}, got {}",
                    self.max_attempts
                ),
            );
        }
        if self.initial_backoff.is_zero() {
            p.push("initialBackoff", "must be greater than 0s");
        }
        if self.max_backoff < self.initial_backoff {
            p.push(
                "maxBackoff",
                format_args!(
                    "must be at least initialBackoff ({})",
                    show(self.initial_backoff)
                ),
            );
        }
        if !(1.0..=10.0).contains(&self.multiplier) {
            p.push(
                "multiplier",
                format_args!("must be between 1.0 and 10.0, got {}", self.multiplier),
            );
        }
        p.field("budget", |p| self.budget.check(p));
    }
}

impl Validate for RetryBudgetConfig {
    fn check(&self, p: &mut Problems) {
        if !(0.0..=1.0).contains(&self.ratio) {
            p.push(
                "ratio",
                format_args!("must be between 0.0 and 1.0, got {}", self.ratio),
            );
        }
        if self.min_retries_per_second > 100_000 {
            p.push(
                "minRetriesPerSecond",
                format_args!(
                    "must be at most 100000, got {}",
                    self.min_retries_per_second
                ),
            );
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(3600) {
            p.push(
                "ttl",
                format_args!("must be between 1s and 1h, got {}", show(self.ttl)),
            );
        }
    }
}

fn is_percent(x: f64) -> bool {
    x > 0.0 && x <= 100.0
}

impl Validate for CircuitBreakerConfig {
    fn check(&self, p: &mut Problems) {
        let window = &self.window;
        match window.kind {
            WindowKind::Count => {
                if !(1..=MAX_WINDOW_SIZE).contains(&window.size) {
                    p.field("window", |p| {
                        p.push(
                            "size",
                            format_args!(
                                "must be between 1 and {MAX_WINDOW_SIZE}, got {}",
                                window.size
                            ),
                        );
                    });
                } else if self.minimum_calls > window.size {
                    p.push(
                        "minimumCalls",
                        format_args!(
                            "must be at most window.size ({}), got {}; the breaker could never open",
                            window.size, self.minimum_calls
                        ),
                    );
                }
            }
            WindowKind::Time => {
                let d = window.duration;
                if d < Duration::from_secs(1) || d > MAX_WINDOW_DURATION || d.subsec_nanos() != 0 {
                    p.field("window", |p| {
                        p.push(
                            "duration",
                            format_args!(
                                "must be a whole number of seconds between 1s and 1h, got {}",
                                show(d)
                            ),
                        );
                    });
                }
            }
        }
        if !is_percent(self.failure_rate_threshold) {
            p.push(
                "failureRateThreshold",
                format_args!(
                    "must be a percentage above 0 and at most 100, got {}",
                    self.failure_rate_threshold
                ),
            );
        }
        if !is_percent(self.slow_call_rate_threshold) {
            p.push(
                "slowCallRateThreshold",
                format_args!(
                    "must be a percentage above 0 and at most 100, got {}",
                    self.slow_call_rate_threshold
                ),
            );
        }
        if self.slow_call_duration.is_zero() {
            p.push("slowCallDuration", "must be greater than 0s");
        }
        if self.minimum_calls == 0 {
            p.push("minimumCalls", "must be at least 1");
        }
        if self.wait_in_open.is_zero() {
            p.push("waitInOpen", "must be greater than 0s");
        }
        if !(1..=1000).contains(&self.half_open_probes) {
            p.push(
                "halfOpenProbes",
                format_args!("must be between 1 and 1000, got {}", self.half_open_probes),
            );
        }
    }
}

impl Validate for BulkheadConfig {
    fn check(&self, p: &mut Problems) {
        if !(1..=100_000).contains(&self.max_concurrent) {
            p.push(
                "maxConcurrent",
                format_args!("must be between 1 and 100000, got {}", self.max_concurrent),
            );
        }
        if self.max_queue > 100_000 {
            p.push(
                "maxQueue",
                format_args!("must be at most 100000, got {}", self.max_queue),
            );
        }
        if self.max_queue > 0 && self.queue_timeout.is_zero() {
            p.push(
                "queueTimeout",
                "must be greater than 0s when maxQueue is above 0",
            );
        }
        if self.queue_timeout > MAX_QUEUE_TIMEOUT {
            p.push(
                "queueTimeout",
                format_args!("must be at most {}", show(MAX_QUEUE_TIMEOUT)),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let config = ResilienceConfig::default();
        config.validate().unwrap();
        let json = serde_json::to_string(&config).unwrap();
        let back: ResilienceConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        // An empty object is the defaults.
        let empty: ResilienceConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, config);
    }

    #[test]
    fn serialises_camel_case_and_duration_strings() {
        let value = serde_json::to_value(ResilienceConfig::default()).unwrap();
        assert_eq!(value["timeout"]["perAttempt"], "2s");
        assert_eq!(value["retry"]["initialBackoff"], "100ms");
        assert_eq!(value["retry"]["budget"]["minRetriesPerSecond"], 10);
        assert_eq!(value["circuitBreaker"]["mode"], "enabled");
        assert_eq!(value["circuitBreaker"]["window"]["type"], "count");
        assert_eq!(value["circuitBreaker"]["waitInOpen"], "15s");
        assert_eq!(value["bulkhead"]["queueTimeout"], "100ms");
    }

    #[test]
    fn parses_camel_case_json() {
        let json = r#"{
            "timeout": { "perAttempt": "250ms", "overall": "3s" },
            "retry": {
                "maxAttempts": 4, "initialBackoff": "50ms", "maxBackoff": "1s",
                "multiplier": 1.5, "jitter": "none",
                "budget": { "ratio": 0.1, "minRetriesPerSecond": 5, "ttl": "30s" }
            },
            "circuitBreaker": {
                "mode": "forcedOpen",
                "window": { "type": "time", "duration": "30s" },
                "failureRateThreshold": 25, "slowCallRateThreshold": 80,
                "slowCallDuration": "500ms", "minimumCalls": 10,
                "waitInOpen": "1m", "halfOpenProbes": 5
            },
            "bulkhead": { "maxConcurrent": 8, "maxQueue": 0, "queueTimeout": "10ms" }
        }"#;
        let c: ResilienceConfig = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        assert_eq!(c.timeout.per_attempt, Duration::from_millis(250));
        assert_eq!(c.timeout.overall, Duration::from_secs(3));
        assert_eq!(c.retry.max_attempts, 4);
        assert_eq!(c.retry.jitter, Jitter::None);
        assert_eq!(c.retry.budget.ttl, Duration::from_secs(30));
        assert_eq!(c.retry.budget.min_retries_per_second, 5);
        assert_eq!(c.circuit_breaker.mode, BreakerMode::ForcedOpen);
        assert_eq!(c.circuit_breaker.window.kind, WindowKind::Time);
        assert_eq!(c.circuit_breaker.window.duration, Duration::from_secs(30));
        // Unset fields keep their defaults.
        assert_eq!(c.circuit_breaker.window.size, 100);
        assert_eq!(c.circuit_breaker.wait_in_open, Duration::from_secs(60));
        assert_eq!(c.circuit_breaker.half_open_probes, 5);
        assert_eq!(c.bulkhead.max_queue, 0);
    }

    #[test]
    fn unknown_and_snake_case_keys_are_errors() {
        let err = serde_json::from_str::<ResilienceConfig>(r#"{"retry":{"max_attempts":3}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_attempts"), "{err}");
        let err = serde_json::from_str::<ResilienceConfig>(r#"{"timeout":{"perAttempt":"fast"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a duration"), "{err}");
        // The humantime forms the grammar leaves out.
        for wider in ["1m 30s", "1.5s", "2 seconds", "1us"] {
            let json = format!(r#"{{"timeout":{{"perAttempt":"{wider}"}}}}"#);
            assert!(
                serde_json::from_str::<ResilienceConfig>(&json).is_err(),
                "{wider}"
            );
        }
    }

    #[test]
    fn validation_names_every_broken_field() {
        let mut c = ResilienceConfig::default();
        c.timeout.per_attempt = Duration::from_secs(5);
        c.timeout.overall = Duration::from_secs(1);
        c.retry.max_attempts = 0;
        c.retry.max_backoff = Duration::from_millis(10);
        c.retry.multiplier = 0.5;
        c.retry.budget.ratio = 2.0;
        c.retry.budget.ttl = Duration::from_millis(10);
        c.circuit_breaker.failure_rate_threshold = 0.0;
        c.circuit_breaker.slow_call_rate_threshold = 101.0;
        c.circuit_breaker.minimum_calls = 200;
        c.circuit_breaker.wait_in_open = Duration::ZERO;
        c.circuit_breaker.half_open_probes = 0;
        c.bulkhead.max_concurrent = 0;
        c.bulkhead.queue_timeout = Duration::from_secs(3600);
        let errors = c.validate().unwrap_err().problems;
        let expected = [
            "timeout.overall:",
            "retry.maxAttempts:",
            "retry.maxBackoff:",
            "retry.multiplier:",
            "retry.budget.ratio:",
            "retry.budget.ttl:",
            "circuitBreaker.minimumCalls:",
            "circuitBreaker.failureRateThreshold:",
            "circuitBreaker.slowCallRateThreshold:",
            "circuitBreaker.waitInOpen:",
            "circuitBreaker.halfOpenProbes:",
            "bulkhead.maxConcurrent:",
            "bulkhead.queueTimeout:",
        ];
        for prefix in expected {
            assert!(
                errors.iter().any(|e| e.starts_with(prefix)),
                "no error for {prefix}: {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }

    #[test]
    fn time_window_needs_whole_seconds() {
        let mut c = ResilienceConfig::default();
        c.circuit_breaker.window.kind = WindowKind::Time;
        c.circuit_breaker.window.duration = Duration::from_millis(1500);
        let errors = c.validate().unwrap_err().problems;
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("circuitBreaker.window.duration:"));
        // minimumCalls is not bounded by `size` for a time window.
        c.circuit_breaker.window.duration = Duration::from_secs(10);
        c.circuit_breaker.minimum_calls = 1000;
        c.validate().unwrap();
    }

    #[test]
    fn schema_uses_camel_case_and_string_durations() {
        let schema = schemars::schema_for!(ResilienceConfig);
        let value = serde_json::to_value(&schema).unwrap();
        let text = value.to_string();
        assert!(text.contains("circuitBreaker"));
        assert!(text.contains("minRetriesPerSecond"));
        assert!(!text.contains("per_attempt"));
        let defs = &value["$defs"];
        assert_eq!(
            defs["TimeoutConfig"]["properties"]["perAttempt"]["type"],
            "string"
        );
        assert_eq!(
            defs["RetryBudgetConfig"]["properties"]["ttl"]["type"],
            "string"
        );
        assert_eq!(
            defs["RetryBudgetConfig"]["properties"]["ttl"]["pattern"],
            crate::duration::PATTERN
        );
        // The product documentation travels with the schema.
        let doc = defs["TimeoutConfig"]["properties"]["perAttempt"]["description"]
            .as_str()
            .unwrap();
        assert!(doc.contains("default `2s`"), "{doc}");
        assert_eq!(
            defs["TimeoutConfig"]["properties"]["perAttempt"]["default"],
            "2s"
        );
        // Plain string enums: a Kubernetes structural schema refuses types inside `oneOf`.
        assert!(!text.contains("oneOf"), "{text}");
        assert_eq!(defs["BreakerMode"]["type"], "string");
        assert_eq!(
            defs["BreakerMode"]["enum"],
            serde_json::json!(["enabled", "disabled", "forcedOpen"])
        );
    }
}

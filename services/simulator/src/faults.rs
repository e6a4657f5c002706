//! What the simulator does with one call, decided from the fault plan, the time since the
//! simulator started and random samples the caller draws. Pure, so every fault is tested
//! without a clock or a network.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The faults to inject; every field is optional in JSON (`{}` is a healthy service).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultPlan {
    /// Added to every call.
    pub latency: Latency,
    /// Fraction (0–1) of calls answered with `error`.
    pub error_rate: f64,
    /// The error answered.
    pub error: ErrorAnswer,
    /// Fraction (0–1) of calls answered 429 / RESOURCE_EXHAUSTED with `retryAfter`.
    pub throttle_rate: f64,
    /// The `Retry-After` (HTTP, whole seconds, rounded up) or `grpc-retry-pushback-ms` sent
    /// with a throttled answer.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Fraction (0–1) of calls whose connection is dropped without an answer.
    pub drop_rate: f64,
    /// Windows, from the simulator's start (or the plan's last change), during which every
    /// call fails with `error` (an outage).
    pub outages: Vec<Outage>,
    /// When set, a successful HTTP answer's body is sent in two parts this far apart.
    #[serde(with = "humantime_serde::option")]
    pub slow_body: Option<Duration>,
}

/// Latency: `base`, plus uniform jitter in `[0, jitter]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Latency {
    /// Always added.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Up to this much more, uniformly.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
}

/// An error answer, in both protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ErrorAnswer {
    /// The HTTP status (400–599).
    pub http_status: u16,
    /// The gRPC status code (1–16).
    pub grpc_code: i32,
}

impl Default for ErrorAnswer {
    fn default() -> Self {
        Self {
            http_status: 503,
            grpc_code: 14,
        }
    }
}

/// A scripted outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Outage {
    /// When it starts, after the plan took effect.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// How long it lasts.
    #[serde(with = "humantime_serde")]
    pub lasting: Duration,
}

/// A plan that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault plan: {}", .0.join("; "))]
pub struct InvalidPlan(pub Vec<String>);

impl FaultPlan {
    /// Checks every rule; all broken ones are reported at once.
    pub fn validate(&self) -> Result<(), InvalidPlan> {
        let mut problems = Vec::new();
        for (name, rate) in [
            ("errorRate", self.error_rate),
            ("throttleRate", self.throttle_rate),
            ("dropRate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                problems.push(format!("{name} must be between 0 and 1"));
            }
        }
        if self.error_rate + self.throttle_rate + self.drop_rate > 1.0 {
            problems.push("errorRate + throttleRate + dropRate must not exceed 1".into());
        }
        if !(400..=599).contains(&self.error.http_status) {
            problems.push("error.httpStatus must be between 400 and 599".into());
        }
        if !(1..=16).contains(&self.error.grpc_code) {
            problems.push("error.grpcCode must be between 1 and 16".into());
        }
        if self.latency.base + self.latency.jitter > Duration::from_secs(300) {
            problems.push("latency.base + latency.jitter must be at most 300s".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidPlan(problems))
        }
    }

    /// What to do with a call arriving `since_start` after the plan took effect, given two
    /// uniform samples of `[0, 1)`: `pick` chooses the fault, `spread` the latency jitter.
    pub fn decide(&self, since_start: Duration, pick: f64, spread: f64) -> Action {
        let delay = self.latency.base + self.latency.jitter.mul_f64(spread.clamp(0.0, 1.0));
        let in_outage = self
            .outages
            .iter()
            .any(|o| since_start >= o.after && since_start < o.after.saturating_add(o.lasting));
        if in_outage {
            return Action::Fail {
                delay,
                answer: self.error,
            };
        }
        let mut threshold = self.drop_rate;
        if pick < threshold {
            return Action::Drop { delay };
        }
        threshold += self.throttle_rate;
        if pick < threshold {
            return Action::Throttle {
                delay,
                retry_after: self.retry_after,
            };
        }
        threshold += self.error_rate;
        if pick < threshold {
            return Action::Fail {
                delay,
                answer: self.error,
            };
        }
        Action::Succeed {
            delay,
            slow_body: self.slow_body,
        }
    }
}

/// What to do with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer with the echo after `delay`.
    Succeed {
        /// Wait before answering.
        delay: Duration,
        /// Split the HTTP body this far apart.
        slow_body: Option<Duration>,
    },
    /// Answer the error after `delay`.
    Fail {
        /// Wait before answering.
        delay: Duration,
        /// The error.
        answer: ErrorAnswer,
    },
    /// Answer 429 / RESOURCE_EXHAUSTED with a retry hint.
    Throttle {
        /// Wait before answering.
        delay: Duration,
        /// The hint.
        retry_after: Duration,
    },
    /// Close the connection without answering.
    Drop {
        /// Wait before closing.
        delay: Duration,
    },
}

impl Action {
    /// How long to wait before answering (or dropping).
    pub fn delay(&self) -> Duration {
        match *self {
            Action::Succeed { delay, .. }
            | Action::Fail { delay, .. }
            | Action::Throttle { delay, .. }
            | Action::Drop { delay } => delay,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_healthy_plan_succeeds_with_its_latency() {
        let plan = FaultPlan {
            latency: Latency {
                base: Duration::from_millis(10),
                jitter: Duration::from_millis(10),
            },
            ..FaultPlan::default()
        };
        assert_eq!(
            plan.decide(Duration::ZERO, 0.99, 0.5),
            Action::Succeed {
                delay: Duration::from_millis(15),
                slow_body: None
            }
        );
    }

    #[test]
    fn outages_fail_every_call_inside_their_window_only() {
        let plan = FaultPlan {
            outages: vec![Outage {
                after: Duration::from_secs(1),
                lasting: Duration::from_secs(2),
            }],
            ..FaultPlan::default()
        };
        let at = |secs: f64| plan.decide(Duration::from_secs_f64(secs), 0.99, 0.0);
        assert!(matches!(at(0.5), Action::Succeed { .. }));
        assert!(matches!(at(1.0), Action::Fail { .. }));
        assert!(matches!(at(2.9), Action::Fail { .. }));
        assert!(matches!(at(3.0), Action::Succeed { .. }));
    }

    #[test]
    fn rates_partition_the_picks() {
        let plan = FaultPlan {
            drop_rate: 0.1,
            throttle_rate: 0.2,
            error_rate: 0.3,
            retry_after: Duration::from_secs(2),
            ..FaultPlan::default()
        };
        let at = |pick| plan.decide(Duration::ZERO, pick, 0.0);
        assert!(matches!(at(0.05), Action::Drop { .. }));
        assert!(matches!(at(0.25), Action::Throttle { .. }));
        assert!(matches!(at(0.55), Action::Fail { .. }));
        assert!(matches!(at(0.65), Action::Succeed { .. }));
    }

    #[test]
    fn bad_plans_name_every_problem_and_unknown_keys_are_refused() {
        let plan = FaultPlan {
            error_rate: 2.0,
            error: ErrorAnswer {
                http_status: 200,
                grpc_code: 0,
            },
            ..FaultPlan::default()
        };
        let problems = plan.validate().unwrap_err().0;
        assert_eq!(problems.len(), 4, "{problems:?}");
        let parsed: Result<FaultPlan, _> = serde_json::from_str(r#"{"errorRat": 0.5}"#);
        assert!(parsed.is_err());
        let parsed: FaultPlan =
            serde_json::from_str(r#"{"errorRate": 0.5, "latency": {"base": "5ms"}}"#).unwrap();
        assert_eq!(parsed.latency.base, Duration::from_millis(5));
    }

    proptest! {
        #[test]
        fn observed_fault_shares_follow_the_rates(
            drop in 0.0f64..0.3, throttle in 0.0f64..0.3, error in 0.0f64..0.3,
        ) {
            let plan = FaultPlan {
                drop_rate: drop,
                throttle_rate: throttle,
                error_rate: error,
                ..FaultPlan::default()
            };
            prop_assert!(plan.validate().is_ok());
            // Evenly spread picks: the shares are exact up to one step.
            let n = 10_000;
            let mut counts = [0usize; 4];
            for i in 0..n {
                let pick = (i as f64 + 0.5) / n as f64;
                counts[match plan.decide(Duration::ZERO, pick, 0.0) {
                    Action::Drop { .. } => 0,
                    Action::Throttle { .. } => 1,
                    Action::Fail { .. } => 2,
                    Action::Succeed { .. } => 3,
                }] += 1;
            }
            let share = |c: usize| c as f64 / n as f64;
            prop_assert!((share(counts[0]) - drop).abs() <= 1.0 / n as f64 + 1e-9);
            prop_assert!((share(counts[1]) - throttle).abs() <= 1.0 / n as f64 + 1e-9);
            prop_assert!((share(counts[2]) - error).abs() <= 1.0 / n as f64 + 1e-9);
        }
    }
}

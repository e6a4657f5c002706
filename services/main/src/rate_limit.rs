//! Per-caller submit rate limits (API Gateway's usage plans): a token bucket per caller, its
//! size and rate given by the caller's role (`requests.submitRate`), kept by `governor`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use appstack_config::{DEFAULT_RATE_KEY, RateLimitConfig};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// One role's limit and the buckets of its callers.
struct Plan {
    limit: RateLimitConfig,
    buckets: DefaultKeyedRateLimiter<String>,
}

/// The submit limits of every role.
pub struct SubmitRates {
    plans: BTreeMap<String, Plan>,
    clock: DefaultClock,
}

impl std::fmt::Debug for SubmitRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitRates")
            .field("roles", &self.plans.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A caller over its limit; it may try again after `retry_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverLimit {
    /// When a token is next available.
    pub retry_after: Duration,
    /// The limit applied.
    pub per_second: u32,
}

impl SubmitRates {
    /// The plans of `rates` (a validated `requests.submitRate`).
    pub fn new(rates: &BTreeMap<String, RateLimitConfig>) -> Self {
        let plans = rates
            .iter()
            .map(|(role, limit)| {
                let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::per_second(per_second).allow_burst(burst);
                (
                    role.clone(),
                    Plan {
                        limit: limit.clone(),
                        buckets: RateLimiter::keyed(quota),
                    },
                )
            })
            .collect();
        Self {
            plans,
            clock: DefaultClock::default(),
        }
    }

    /// Takes one submit from `caller`'s bucket. The plan is the most generous of the
    /// caller's roles that have one, else `default`; without either, no limit.
    pub fn take(&self, caller: &str, roles: &[String]) -> Result<(), OverLimit> {
        let plan = roles
            .iter()
            .filter_map(|role| self.plans.get(role))
            .max_by_key(|plan| (plan.limit.per_second, plan.limit.burst))
            .or_else(|| self.plans.get(DEFAULT_RATE_KEY));
        let Some(plan) = plan else {
            return Ok(());
        };
        plan.buckets
            .check_key(&caller.to_owned())
            .map_err(|not_until| OverLimit {
                retry_after: not_until.wait_time_from(self.clock.now()),
                per_second: plan.limit.per_second,
            })
    }

    /// Forgets the buckets of callers that are full again (idle), so memory follows the
    /// active callers, not every caller ever seen.
    pub fn forget_idle(&self) {
        for plan in self.plans.values() {
            plan.buckets.retain_recent();
            plan.buckets.shrink_to_fit();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rates(entries: &[(&str, u32, u32)]) -> SubmitRates {
        SubmitRates::new(
            &entries
                .iter()
                .map(|(role, per_second, burst)| {
                    (
                        (*role).to_owned(),
                        RateLimitConfig {
                            per_second: *per_second,
                            burst: *burst,
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn a_caller_gets_its_burst_then_waits_and_callers_are_apart() {
        let limits = rates(&[("default", 1, 3)]);
        for _ in 0..3 {
            limits.take("alice", &[]).unwrap();
        }
        let over = limits.take("alice", &[]).unwrap_err();
        assert!(over.retry_after > Duration::ZERO && over.retry_after <= Duration::from_secs(1));
        limits.take("bob", &[]).unwrap();
    }

    #[test]
    fn the_most_generous_role_applies_and_unlisted_roles_fall_back_to_default() {
        let limits = rates(&[("default", 1, 1), ("partner", 1, 5)]);
        let partner = ["user".to_owned(), "partner".to_owned()];
        for _ in 0..5 {
            limits.take("p", &partner).unwrap();
        }
        assert!(limits.take("p", &partner).is_err());
        limits.take("u", &["user".to_owned()]).unwrap();
        assert!(limits.take("u", &["user".to_owned()]).is_err());
        // No default entry: callers without a listed role are not limited.
        let open = rates(&[("partner", 1, 1)]);
        for _ in 0..100 {
            open.take("anyone", &[]).unwrap();
        }
    }
}

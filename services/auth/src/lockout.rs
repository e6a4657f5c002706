//! The brute-force policy: pure, so it is tested without a database.
//!
//! Every attempt is counted as a failure *before* the password is checked (and forgiven on
//! success). With the account row locked while deciding, parallel attempts cannot all slip
//! through before the first failure is recorded: at most `threshold` guesses are ever checked
//! before a lockout.

use std::time::Duration;

use chrono::{DateTime, Utc};

use appstack_config::LockoutConfig;

/// What to do with one login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptDecision {
    /// Check the password; record `failures` and `locked_until` now (as if it were wrong).
    Allowed {
        /// The failure count to store.
        failures: u32,
        /// The lockout end to store, when this attempt reaches the threshold.
        locked_until: Option<DateTime<Utc>>,
    },
    /// Refuse without checking the password.
    Locked {
        /// When the lockout ends.
        until: DateTime<Utc>,
    },
}

/// The lockout policy.
#[derive(Debug, Clone)]
pub struct LockoutPolicy {
    config: LockoutConfig,
}

impl LockoutPolicy {
    /// The policy of `config`.
    pub fn new(config: LockoutConfig) -> Self {
        Self { config }
    }

    /// The failure count at which an account is locked.
    pub fn threshold(&self) -> u32 {
        self.config.threshold
    }

    /// How long an account is locked after `failures` consecutive failures: nothing below
    /// the threshold, then `base`, doubling per further failure, capped at `max`.
    pub fn lock_duration(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.config.threshold)?;
        let factor = 1u32.checked_shl(over.min(31)).unwrap_or(u32::MAX);
        Some(self.config.base.saturating_mul(factor).min(self.config.max))
    }

    /// Decides an attempt on an account with `failures` recorded and `locked_until`.
    pub fn decide(
        &self,
        failures: u32,
        locked_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> AttemptDecision {
        if let Some(until) = locked_until
            && until > now
        {
            return AttemptDecision::Locked { until };
        }
        let failures = failures.saturating_add(1);
        let locked_until = self
            .lock_duration(failures)
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| now + d);
        AttemptDecision::Allowed {
            failures,
            locked_until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy::new(LockoutConfig {
            threshold: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(900),
        })
    }

    #[test]
    fn locks_at_the_threshold_and_doubles() {
        let p = policy();
        assert_eq!(p.lock_duration(4), None);
        assert_eq!(p.lock_duration(5), Some(Duration::from_secs(1)));
        assert_eq!(p.lock_duration(6), Some(Duration::from_secs(2)));
        assert_eq!(p.lock_duration(9), Some(Duration::from_secs(16)));
        assert_eq!(p.lock_duration(40), Some(Duration::from_secs(900)));
        assert_eq!(p.lock_duration(u32::MAX), Some(Duration::from_secs(900)));
    }

    #[test]
    fn locked_accounts_refuse_until_the_end() {
        let p = policy();
        let now = Utc::now();
        let until = now + chrono::Duration::seconds(3);
        assert_eq!(
            p.decide(5, Some(until), now),
            AttemptDecision::Locked { until }
        );
        match p.decide(5, Some(until), until) {
            AttemptDecision::Allowed {
                failures: 6,
                locked_until: Some(end),
            } => {
                assert_eq!(end, until + chrono::Duration::seconds(2));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_fifth_attempt_reserves_the_lock() {
        let now = Utc::now();
        match policy().decide(4, None, now) {
            AttemptDecision::Allowed {
                failures: 5,
                locked_until: Some(_),
            } => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn lock_duration_is_monotonic_and_capped(a in 0u32..200, b in 0u32..200) {
            let p = policy();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(p.lock_duration(lo) <= p.lock_duration(hi));
            prop_assert!(p.lock_duration(hi).unwrap_or_default() <= Duration::from_secs(900));
        }
    }
}

//! Every call the simulator received, by idempotency key, so tests and benchmarks count
//! duplicates (an at-least-once queue's repeats must carry the same key).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

/// The `traceparent`s kept per idempotency key.
const TRACEPARENTS_KEPT_PER_KEY: usize = 8;

/// Calls so far.
#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    by_key: HashMap<String, u64>,
    traceparents: HashMap<String, Vec<String>>,
    calls: u64,
    without_key: u64,
    outcomes: Outcomes,
}

/// How many calls ended each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcomes {
    /// Answered with success.
    pub succeeded: u64,
    /// Answered with the injected error (outage or error rate).
    pub failed: u64,
    /// Answered 429 / RESOURCE_EXHAUSTED.
    pub throttled: u64,
    /// Dropped without an answer.
    pub dropped: u64,
}

/// A summary of the calls so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallStats {
    /// Calls received.
    pub calls: u64,
    /// Calls without an idempotency key.
    pub without_key: u64,
    /// Distinct idempotency keys seen.
    pub distinct_keys: u64,
    /// Calls beyond the first for their key.
    pub duplicate_calls: u64,
    /// The most calls any one key received.
    pub max_calls_per_key: u64,
    /// How they ended.
    pub outcomes: Outcomes,
}

/// How one call ended, for the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Success.
    Succeeded,
    /// Injected error.
    Failed,
    /// Throttled.
    Throttled,
    /// Dropped.
    Dropped,
}

impl Ended {
    /// How a call given `action` ends.
    pub fn of(action: &crate::faults::Action) -> Self {
        use crate::faults::Action;
        match action {
            Action::Succeed { .. } => Ended::Succeeded,
            Action::Fail { .. } => Ended::Failed,
            Action::Throttle { .. } => Ended::Throttled,
            Action::Drop { .. } => Ended::Dropped,
        }
    }
}

impl Ledger {
    /// Records a call with `key` (empty: none) that ended `ended`.
    pub fn record(&self, key: &str, ended: Ended) {
        let mut counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        counts.calls += 1;
        if key.is_empty() {
            counts.without_key += 1;
        } else if let Some(n) = counts.by_key.get_mut(key) {
            *n += 1;
        } else {
            counts.by_key.insert(key.to_owned(), 1);
        }
        let outcome = match ended {
            Ended::Succeeded => &mut counts.outcomes.succeeded,
            Ended::Failed => &mut counts.outcomes.failed,
            Ended::Throttled => &mut counts.outcomes.throttled,
            Ended::Dropped => &mut counts.outcomes.dropped,
        };
        *outcome += 1;
    }

    /// Records the W3C `traceparent` a call with `key` carried, so a test can check the
    /// caller's trace reached the service. The last few per key are kept.
    pub fn saw_traceparent(&self, key: &str, traceparent: &str) {
        if key.is_empty() {
            return;
        }
        let mut counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let seen = counts.traceparents.entry(key.to_owned()).or_default();
        if seen.len() == TRACEPARENTS_KEPT_PER_KEY {
            seen.remove(0);
        }
        seen.push(traceparent.to_owned());
    }

    /// The `traceparent`s received with `key`, oldest first.
    pub fn traceparents_for(&self, key: &str) -> Vec<String> {
        let counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        counts.traceparents.get(key).cloned().unwrap_or_default()
    }

    /// Calls received with `key`.
    pub fn calls_for(&self, key: &str) -> u64 {
        let counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        counts.by_key.get(key).copied().unwrap_or(0)
    }

    /// The summary.
    pub fn stats(&self) -> CallStats {
        let counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let keyed: u64 = counts.by_key.values().sum();
        CallStats {
            calls: counts.calls,
            without_key: counts.without_key,
            distinct_keys: counts.by_key.len() as u64,
            duplicate_calls: keyed - counts.by_key.len() as u64,
            max_calls_per_key: counts.by_key.values().copied().max().unwrap_or(0),
            outcomes: counts.outcomes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_counted_per_key() {
        let ledger = Ledger::default();
        ledger.record("a", Ended::Failed);
        ledger.record("a", Ended::Succeeded);
        ledger.record("b", Ended::Succeeded);
        ledger.record("", Ended::Dropped);
        let stats = ledger.stats();
        assert_eq!(stats.calls, 4);
        assert_eq!(stats.distinct_keys, 2);
        assert_eq!(stats.duplicate_calls, 1);
        assert_eq!(stats.max_calls_per_key, 2);
        assert_eq!(stats.without_key, 1);
        assert_eq!(stats.outcomes.succeeded, 2);
        for i in 0..10 {
            ledger.saw_traceparent("a", &i.to_string());
        }
        ledger.saw_traceparent("", "ignored");
        assert_eq!(
            ledger.traceparents_for("a"),
            ["2", "3", "4", "5", "6", "7", "8", "9"]
        );
        assert!(ledger.traceparents_for("").is_empty());
        assert_eq!(ledger.calls_for("a"), 2);
    }
}

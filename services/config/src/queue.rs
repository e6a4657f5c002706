//! `queue` and `worker`: the durable queue's timings and the worker's appetite.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::format as show;
use crate::{Problems, Validate};

/// The durable queue: leases, the rescuer and retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct QueueConfig {
    /// How long a claimed request stays its worker's without a heartbeat; then the rescuer
    /// gives it to another worker (the execution counts as an attempt). Duration,
    /// `1s..=1h`, at least twice `heartbeat`; default `30s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub lease: Duration,
    /// How often a worker renews the leases of the requests it is executing. Duration,
    /// above `0s`, at most half of `lease`; default `10s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub heartbeat: Duration,
    /// How often an idle worker looks for due requests when no notification arrives
    /// (scheduled retries become due without one). Duration, `1ms..=1m`; default `1s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub poll_interval: Duration,
    /// How often expired leases are looked for. Duration, `1ms..=1h`; default `5s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub rescuer_interval: Duration,
    /// How long finished requests (succeeded, dead, failed, cancelled) and their results
    /// are kept before they are purged. Duration, `1s..=366d`; default `7d`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub retention: Duration,
    /// How often the purge runs. Duration, `1s..=1d`; default `1m`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub purge_interval: Duration,
    /// Requests deleted per purge statement (short transactions). Count, `1..=100000`;
    /// default `1000`.
    pub purge_batch: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            rescuer_interval: Duration::from_secs(5),
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(60),
            purge_batch: 1000,
        }
    }
}

/// `Ok` when `value` is within `min..=max`, else a message stating the range.
fn within(value: Duration, min: Duration, max: Duration) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "must be between {} and {}, got {}",
            show(min),
            show(max),
            show(value)
        ))
    }
}

impl Validate for QueueConfig {
    fn check(&self, p: &mut Problems) {
        const MS: Duration = Duration::from_millis(1);
        const S: Duration = Duration::from_secs(1);
        let ranges = [
            ("lease", self.lease, S, Duration::from_secs(3600)),
            (
                "pollInterval",
                self.poll_interval,
                MS,
                Duration::from_secs(60),
            ),
            (
                "rescuerInterval",
                self.rescuer_interval,
                MS,
                Duration::from_secs(3600),
            ),
            (
                "retention",
                self.retention,
                S,
                Duration::from_secs(366 * 24 * 3600),
            ),
            (
                "purgeInterval",
                self.purge_interval,
                S,
                Duration::from_secs(24 * 3600),
            ),
        ];
        for (name, value, min, max) in ranges {
            if let Err(message) = within(value, min, max) {
                p.push(name, message);
            }
        }
        if self.heartbeat.is_zero() {
            p.push("heartbeat", "must be greater than 0s");
        } else if self.heartbeat.saturating_mul(2) > self.lease {
            p.push(
                "heartbeat",
                format_args!(
                    "must be at most half of lease ({}), so one missed heartbeat does not lose the lease",
                    show(self.lease)
                ),
            );
        }
        if !(1..=100_000).contains(&self.purge_batch) {
            p.push(
                "purgeBatch",
                format_args!("must be between 1 and 100000, got {}", self.purge_batch),
            );
        }
    }
}

/// The worker: how many requests it executes at once and claims at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkerConfig {
    /// Requests executed at once by one worker process. Count, `1..=10000`; default `64`.
    pub concurrency: u32,
    /// Most requests claimed in one statement. Count, `1..=1000`, at most `concurrency`;
    /// default `32`.
    pub claim_batch: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            claim_batch: 32,
        }
    }
}

impl Validate for WorkerConfig {
    fn check(&self, p: &mut Problems) {
        if !(1..=10_000).contains(&self.concurrency) {
            p.push(
                "concurrency",
                format_args!("must be between 1 and 10000, got {}", self.concurrency),
            );
        }
        if !(1..=1000).contains(&self.claim_batch) {
            p.push(
                "claimBatch",
                format_args!("must be between 1 and 1000, got {}", self.claim_batch),
            );
        } else if self.claim_batch > self.concurrency {
            p.push(
                "claimBatch",
                format_args!("must be at most concurrency ({})", self.concurrency),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        QueueConfig::default().validate().unwrap();
        WorkerConfig::default().validate().unwrap();
    }

    #[test]
    fn queue_rules() {
        let config = QueueConfig {
            lease: Duration::from_secs(10),
            heartbeat: Duration::from_secs(6),
            poll_interval: Duration::ZERO,
            purge_batch: 0,
            ..QueueConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().problems,
            [
                "pollInterval: must be between 1ms and 1m, got 0s",
                "heartbeat: must be at most half of lease (10s), so one missed heartbeat does not lose the lease",
                "purgeBatch: must be between 1 and 100000, got 0",
            ]
        );
        let huge = QueueConfig {
            heartbeat: Duration::MAX,
            ..QueueConfig::default()
        };
        assert!(huge.validate().is_err());
    }

    #[test]
    fn worker_rules() {
        let config = WorkerConfig {
            concurrency: 8,
            claim_batch: 16,
        };
        assert_eq!(
            config.validate().unwrap_err().problems,
            ["claimBatch: must be at most concurrency (8)"]
        );
    }
}

//! The worker's settings, taken from the `queue` and `worker` sections.

use std::time::Duration;

use appstack_config::StackConfig;

/// What the worker's loops need of the configuration.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) concurrency: usize,
    pub(crate) claim_batch: usize,
    pub(crate) lease: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) rescuer_interval: Duration,
    pub(crate) retention: Duration,
    pub(crate) purge_interval: Duration,
    pub(crate) purge_batch: u32,
}

impl Settings {
    pub(crate) fn of(config: &StackConfig) -> Self {
        Self {
            concurrency: usize::try_from(config.worker.concurrency)
                .unwrap_or(1)
                .max(1),
            claim_batch: usize::try_from(config.worker.claim_batch)
                .unwrap_or(1)
                .max(1),
            lease: config.queue.lease,
            heartbeat: config.queue.heartbeat,
            poll_interval: config.queue.poll_interval,
            rescuer_interval: config.queue.rescuer_interval,
            retention: config.queue.retention,
            purge_interval: config.queue.purge_interval,
            purge_batch: config.queue.purge_batch,
        }
    }
}

//! The queue's housekeeping, run by every worker (each step is safe to run concurrently):
//! rescue expired leases, give up requests past their deadline, purge old history, and
//! refresh the depth gauges.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::runner::Runner;

/// Jobs rescued or expired per statement.
const MAINTENANCE_BATCH: u32 = 500;
/// How often the depth gauges are refreshed.
const DEPTH_INTERVAL: Duration = Duration::from_secs(5);

impl Runner {
    /// Runs the housekeeping loops until `stop`.
    pub(crate) async fn maintain(self: Arc<Self>, stop: CancellationToken) {
        let mut rescue = tokio::time::interval(self.settings.rescuer_interval);
        let mut purge = tokio::time::interval(self.settings.purge_interval);
        let mut depth = tokio::time::interval(DEPTH_INTERVAL);
        for ticks in [&mut rescue, &mut purge, &mut depth] {
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = rescue.tick() => self.rescue().await,
                _ = purge.tick() => self.purge().await,
                _ = depth.tick() => self.refresh_depth().await,
            }
        }
    }

    async fn rescue(&self) {
        let policy_of = |kind: &str| self.executor.policy_of(kind);
        match self
            .queue
            .rescue_expired(MAINTENANCE_BATCH, &policy_of)
            .await
        {
            Ok(rescued) => {
                if rescued.requeued > 0 || rescued.dead > 0 || rescued.abandoned > 0 {
                    tracing::info!(
                        requeued = rescued.requeued,
                        dead = rescued.dead,
                        abandoned = rescued.abandoned,
                        "rescued jobs whose lease expired"
                    );
                    self.notifier.jobs_ready();
                    self.notifier.events_written();
                }
            }
            Err(error) => tracing::warn!(%error, "rescuing expired leases failed"),
        }
        match self.queue.expire_deadlines(MAINTENANCE_BATCH).await {
            Ok(0) => {}
            Ok(expired) => {
                tracing::info!(
                    expired,
                    "requests past their deadline before starting: dead"
                );
                self.notifier.events_written();
                self.notifier.jobs_ready();
            }
            Err(error) => tracing::warn!(%error, "expiring deadlines failed"),
        }
    }

    async fn purge(&self) {
        // A few batches per tick: a backlog of history drains without one long statement.
        for _ in 0..10 {
            match self
                .queue
                .purge_finished(self.settings.retention, self.settings.purge_batch)
                .await
            {
                Ok(purged) if purged < u64::from(self.settings.purge_batch) => return,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "purging finished requests failed");
                    return;
                }
            }
        }
    }

    async fn refresh_depth(&self) {
        match self.queue.stats(None, false).await {
            Ok(stats) => self.metrics.set_depth(&stats),
            Err(error) => tracing::debug!(%error, "reading the queue depth failed"),
        }
    }
}

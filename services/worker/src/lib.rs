//! The worker: executes queued requests.
//!
//! A [`Worker`] claims ready jobs in batches (`FOR UPDATE SKIP LOCKED`, skipping the kinds
//! whose service's breaker is open), executes each through the shared
//! [`Executor`] — the same routing and resilience pipeline
//! main uses for SYNC requests — decides its fate with the queue's pure rules
//! ([`appstack_queue::decide`](mod@appstack_queue::decide)) and records the outcomes in batches. A heartbeat keeps the
//! leases of running executions, and stops those whose lease was lost or whose request was
//! cancelled. LISTEN/NOTIFY wakes it when work arrives; it polls as a fallback.
//!
//! On shutdown it stops claiming, lets running executions finish within the grace period,
//! then releases the rest (their attempts given back) and records every outcome. Killed
//! instead, its leases expire and the rescuer (run by every worker) queues the jobs again:
//! at-least-once, with the same idempotency key.
//!
//! [`WorkerAdminApi`] serves `appstack.worker.v1.WorkerAdmin` to admins.

mod admin;
mod in_flight;
mod maintenance;
mod metrics;
mod outcome;
mod runner;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use appstack_config::StackConfig;
use appstack_executor::Executor;
use appstack_queue::store::{Notifier, Queue};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub use admin::{ADMIN_ROLE, WorkerAdminApi};
pub use metrics::WorkerMetrics;
pub use outcome::{completion_action, deadline_instant, sync_completion_action};

use crate::in_flight::InFlight;
use crate::runner::Runner;
use crate::settings::Settings;

/// A worker process's job loop. Build one, then [`Worker::run`] it.
pub struct Worker {
    runner: Arc<Runner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.runner.id)
            .finish()
    }
}

impl Worker {
    /// A worker named `id` (unique per process: it labels the leases it holds) over `queue`,
    /// executing with `executor`, configured by `config`'s `queue` and `worker` sections.
    pub fn new(
        id: impl Into<String>,
        queue: Queue,
        executor: Executor,
        notifier: Notifier,
        config: &StackConfig,
        registry: &mut Registry,
    ) -> Self {
        Self {
            runner: Arc::new(Runner {
                id: id.into(),
                queue,
                executor,
                notifier,
                settings: Settings::of(config),
                metrics: Arc::new(WorkerMetrics::new(registry)),
                in_flight: InFlight::default(),
            }),
        }
    }

    /// Runs until `shutdown`, then drains within `grace` (see the crate docs). The
    /// housekeeping runs alongside until the drain is over.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let housekeeping = CancellationToken::new();
        let maintain = tokio::spawn(Arc::clone(&self.runner).maintain(housekeeping.clone()));
        Arc::clone(&self.runner).run(shutdown, grace).await;
        housekeeping.cancel();
        let _ = maintain.await;
    }
}

//! The leases of the SYNC requests this process is executing: extended by a heartbeat, so a
//! SYNC request whose process dies is found by the rescuer (and failed as abandoned) within
//! one lease, while a live one is never taken for dead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appstack_queue::store::Queue;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// SYNC executions in flight: request id → claim.
#[derive(Clone, Debug, Default)]
pub(crate) struct SyncLeases {
    held: Arc<Mutex<HashMap<Uuid, i32>>>,
}

impl SyncLeases {
    pub(crate) fn hold(&self, id: Uuid, claim: i32) {
        self.lock().insert(id, claim);
    }

    pub(crate) fn release(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, i32>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Extends the held leases by `lease` every `every`, until `stop`.
    pub(crate) async fn keep(
        self,
        queue: Queue,
        lease: Duration,
        every: Duration,
        stop: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let held: Vec<(Uuid, i32)> = self.lock().iter().map(|(id, c)| (*id, *c)).collect();
            if held.is_empty() {
                continue;
            }
            if let Err(error) = queue.heartbeat(&held, lease).await {
                tracing::warn!(%error, "extending SYNC request leases failed");
            }
        }
    }
}

//! The executions a worker holds: their claims (for heartbeats) and how to stop them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why an execution was stopped before it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum StopReason {
    /// Running.
    None = 0,
    /// The claim is no longer held (the lease expired and the job was rescued): record
    /// nothing.
    Lost = 1,
    /// Its owner cancelled the request: the outcome is discarded.
    Cancelled = 2,
    /// The worker is shutting down past its grace period: released, attempt given back.
    Shutdown = 3,
}

/// One execution in flight.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) claim: i32,
    stop: CancellationToken,
    reason: Arc<AtomicU8>,
}

impl Held {
    /// Stops the execution (the first reason given wins).
    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self.reason.compare_exchange(
            StopReason::None as u8,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.stop.cancel();
    }

    /// Resolves when the execution is asked to stop.
    pub(crate) fn stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// Why it was stopped.
    pub(crate) fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::Acquire) {
            1 => StopReason::Lost,
            2 => StopReason::Cancelled,
            3 => StopReason::Shutdown,
            _ => StopReason::None,
        }
    }
}

/// The executions in flight, by request id.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    held: Mutex<HashMap<Uuid, Held>>,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Held>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an execution.
    pub(crate) fn start(&self, id: Uuid, claim: i32) -> Held {
        let held = Held {
            claim,
            stop: CancellationToken::new(),
            reason: Arc::new(AtomicU8::new(StopReason::None as u8)),
        };
        self.lock().insert(id, held.clone());
        held
    }

    /// Forgets an execution that ended.
    pub(crate) fn end(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    /// The claims held, for a heartbeat.
    pub(crate) fn claims(&self) -> Vec<(Uuid, i32)> {
        self.lock().iter().map(|(id, h)| (*id, h.claim)).collect()
    }

    /// Stops one execution, if it is still held under `claim`.
    pub(crate) fn stop(&self, id: Uuid, reason: StopReason) {
        if let Some(held) = self.lock().get(&id) {
            held.stop(reason);
        }
    }

    /// Stops every execution.
    pub(crate) fn stop_all(&self, reason: StopReason) {
        for held in self.lock().values() {
            held.stop(reason);
        }
    }

    /// How many are in flight.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

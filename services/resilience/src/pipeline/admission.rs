//! An attempt that was let through and answered, until its outcome is recorded: the
//! breaker's permit, the bulkhead slot, when it started and what its answer said.
//!
//! [`Pipeline::execute`](super::Pipeline::execute) records it as soon as the attempt
//! answers ([`RecordNow`](super::RecordNow)). The tower layer keeps it with the answer
//! ([`Keep`](super::Keep)): recorded at the retry decision if the answer is retried, else
//! made owned and kept in the response body until the body ends.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::breaker::{CircuitBreaker, Outcome, OwnedPermit, Permit};
use crate::bulkhead::{Bulkhead, BulkheadPermit, OwnedBulkheadPermit};

/// An admitted attempt that answered, borrowing the pipeline's breaker and bulkhead.
pub(crate) struct Admission<'p> {
    pub(super) permit: Permit<'p>,
    pub(super) slot: BulkheadPermit<'p>,
    /// When the slot was taken: the breaker's duration runs from here.
    pub(super) started: Instant,
    /// The classifier's outcome for the answer.
    pub(super) outcome: Outcome,
}

impl fmt::Debug for Admission<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("started", &self.started)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl Admission<'_> {
    /// Records the answer's outcome, timed now, and gives the slot back.
    #[inline]
    pub(crate) fn record(self) {
        let elapsed = self.started.elapsed();
        drop(self.slot);
        self.permit.record(self.outcome, elapsed);
    }

    /// The same admission holding `breaker` and `bulkhead` (the pipeline's own) instead of
    /// borrowing them.
    pub(crate) fn into_owned(
        self,
        breaker: &Arc<CircuitBreaker>,
        bulkhead: &Bulkhead,
    ) -> OwnedAdmission {
        OwnedAdmission {
            permit: self.permit.into_owned(breaker),
            slot: self.slot.into_owned(bulkhead),
            started: self.started,
            outcome: self.outcome,
        }
    }
}

/// An [`Admission`] that owns its references: dropped unrecorded, it gives the slot back
/// and records nothing (as a cancelled call).
#[derive(Debug)]
pub(crate) struct OwnedAdmission {
    permit: OwnedPermit,
    slot: OwnedBulkheadPermit,
    started: Instant,
    outcome: Outcome,
}

impl OwnedAdmission {
    /// The classifier's outcome for the answer's head.
    pub(crate) fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Records `outcome`, timed now, and gives the slot back.
    pub(crate) fn record(self, outcome: Outcome) {
        let elapsed = self.started.elapsed();
        drop(self.slot);
        self.permit.record(outcome, elapsed);
    }
}

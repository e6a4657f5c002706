//! The job state machine.
//!
//! ```text
//!            claim                succeed
//! Queued ─────────────┐     ┌─────────────────▶ Succeeded
//!   ▲  ▲              ▼     │  fail (sync)
//!   │  │ ready     Running ─┼─────────────────▶ Failed
//!   │  └─ Scheduled ◀───────┤  retry later / breaker open / bulkhead full
//!   │        │ cancel       │  give up (permanent, attempts exhausted)
//!   │        ▼              ├─────────────────▶ Dead ──requeue──▶ Queued
//!   │    Cancelled ◀────────┤  cancelled while running (result discarded)
//!   │                       │  lease expired (the worker died): Queued, attempt kept spent
//!   └───────────────────────┘  released at shutdown: Queued, attempt given back
//! ```
//!
//! An attempt is spent when a job is claimed. Only a release at shutdown and a reschedule
//! that never reached the external service (breaker open, bulkhead full) give it back, so a
//! job cannot loop forever on a worker that keeps dying, and an outage costs no attempts.

/// Where a job is in its life (the `status` of its request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Ready to be claimed.
    Queued,
    /// Waiting until its `run_at` (retry backoff or an open breaker).
    Scheduled,
    /// Claimed by a worker, under a lease.
    Running,
    /// Done. Terminal.
    Succeeded,
    /// Failed, for a SYNC request (ASYNC ones retry or die). Terminal.
    Failed,
    /// Attempts exhausted or a permanent error: a dead letter. Terminal until requeued.
    Dead,
    /// Cancelled by its owner. Terminal.
    Cancelled,
}

impl JobState {
    /// Every state, for exhaustive checks.
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Scheduled,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// True when nothing more happens to the job by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Dead | JobState::Cancelled
        )
    }

    /// The name stored in the database and shown in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// Something that happens to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A scheduled job's `run_at` has come.
    Ready,
    /// A worker (or a SYNC call) claims it: an attempt starts.
    Claim,
    /// The attempt succeeded.
    Succeed,
    /// The attempt failed and will be tried again later.
    RetryLater,
    /// The external service was not called (breaker open, bulkhead full): try again later
    /// without spending the attempt.
    Postpone,
    /// The attempt failed for good (permanent error or attempts exhausted).
    GiveUp,
    /// A SYNC request's attempt failed (SYNC requests do not retry in the queue).
    FailSync,
    /// The owner cancels it.
    Cancel,
    /// The worker's lease expired (it died or stalled): the job runs again.
    LeaseExpired,
    /// The worker shuts down before starting the call: handed back unspent.
    Release,
    /// An admin requeues a dead letter.
    Requeue,
}

impl Event {
    /// Every event, for exhaustive checks.
    pub const ALL: [Event; 11] = [
        Event::Ready,
        Event::Claim,
        Event::Succeed,
        Event::RetryLater,
        Event::Postpone,
        Event::GiveUp,
        Event::FailSync,
        Event::Cancel,
        Event::LeaseExpired,
        Event::Release,
        Event::Requeue,
    ];
}

/// What an allowed event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state after the event.
    pub to: JobState,
    /// Change to the attempts spent: +1 when an attempt starts, −1 when one is given back.
    pub attempts_delta: i8,
    /// True when the attempt count starts over (a requeued dead letter).
    pub reset_attempts: bool,
}

/// An event that is not allowed in the job's state; the queue refuses it (a late result of
/// a job whose lease expired, a cancel of a finished request, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {} job cannot {event:?}", from.as_str())]
pub struct IllegalTransition {
    /// The job's state.
    pub from: JobState,
    /// The refused event.
    pub event: Event,
}

/// The transition `event` makes from `from`, or why it is refused.
pub fn transition(from: JobState, event: Event) -> Result<Transition, IllegalTransition> {
    use Event as E;
    use JobState as S;
    let to = |to| Transition {
        to,
        attempts_delta: 0,
        reset_attempts: false,
    };
    Ok(match (from, event) {
        (S::Scheduled, E::Ready) => to(S::Queued),
        (S::Queued, E::Claim) => Transition {
            attempts_delta: 1,
            ..to(S::Running)
        },
        (S::Running, E::Succeed) => to(S::Succeeded),
        (S::Running, E::RetryLater) => to(S::Scheduled),
        (S::Running, E::Postpone) => Transition {
            attempts_delta: -1,
            ..to(S::Scheduled)
        },
        (S::Running, E::GiveUp) => to(S::Dead),
        (S::Running, E::FailSync) => to(S::Failed),
        (S::Queued | S::Scheduled | S::Running, E::Cancel) => to(S::Cancelled),
        (S::Running, E::LeaseExpired) => to(S::Queued),
        (S::Running, E::Release) => Transition {
            attempts_delta: -1,
            ..to(S::Queued)
        },
        (S::Dead, E::Requeue) => Transition {
            reset_attempts: true,
            ..to(S::Queued)
        },
        (from, event) => return Err(IllegalTransition { from, event }),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn terminal_states_only_leave_by_requeue() {
        for from in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in Event::ALL {
                if let Ok(t) = transition(from, event) {
                    assert_eq!(
                        (from, event, t.to),
                        (JobState::Dead, Event::Requeue, JobState::Queued)
                    );
                }
            }
        }
    }

    #[test]
    fn only_a_claim_spends_an_attempt_and_only_unstarted_calls_give_it_back() {
        for from in JobState::ALL {
            for event in Event::ALL {
                let Ok(t) = transition(from, event) else {
                    continue;
                };
                match t.attempts_delta {
                    1 => assert_eq!(event, Event::Claim),
                    -1 => assert!(matches!(event, Event::Postpone | Event::Release)),
                    0 => {}
                    other => panic!("delta {other}"),
                }
            }
        }
    }

    #[test]
    fn a_late_result_after_the_lease_expired_is_refused() {
        let requeued = transition(JobState::Running, Event::LeaseExpired).map(|t| t.to);
        assert_eq!(requeued, Ok(JobState::Queued));
        for late in [Event::Succeed, Event::RetryLater, Event::GiveUp] {
            assert!(transition(JobState::Queued, late).is_err());
        }
    }

    fn event() -> impl Strategy<Value = Event> {
        proptest::sample::select(Event::ALL.to_vec())
    }

    proptest! {
        /// Any sequence of events, applying the allowed ones: the attempt count never goes
        /// negative, a job is Running exactly when an attempt is open, and no attempt is
        /// spent outside a claim.
        #[test]
        fn random_histories_keep_the_books(events in proptest::collection::vec(event(), 0..200)) {
            let mut state = JobState::Queued;
            let mut attempts: i64 = 0;
            let mut claims: i64 = 0;
            for event in events {
                match transition(state, event) {
                    Ok(t) => {
                        if t.reset_attempts {
                            attempts = 0;
                        }
                        attempts += i64::from(t.attempts_delta);
                        if event == Event::Claim {
                            claims += 1;
                        }
                        prop_assert!(attempts >= 0);
                        prop_assert!(attempts <= claims);
                        state = t.to;
                    }
                    Err(refused) => {
                        prop_assert_eq!(refused.from, state);
                        prop_assert_eq!(refused.event, event);
                    }
                }
            }
        }
    }
}

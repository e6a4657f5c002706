//! AppStack's durable request queue.
//!
//! - [`state`]: the job state machine — which transitions are legal, and what each does to
//!   the attempt count — as a pure function, so every transition the queue's SQL performs is
//!   one this module allows (property-tested).
//! - [`decide`](mod@decide): what the worker does with an attempt's outcome (succeeded, permanent or
//!   retryable failure, breaker open, bulkhead full, cancelled meanwhile): pure, given the
//!   job, the route's retry policy, the wall-clock time and a jitter sample.
//! - [`watermark`]: where a worker's next claim starts reading the ready jobs, so a held
//!   snapshot's dead entries are not walked by every claim (pure).
//! - [`store`]: the PostgreSQL queue that performs them — submit, claim (`FOR UPDATE SKIP
//!   LOCKED`, batched), heartbeat, complete (batched), cancel, rescue, requeue, purge — and
//!   the LISTEN/NOTIFY wake-ups.
//!
//! Times here are wall-clock (`DateTime<Utc>`): they are stored in PostgreSQL and compared
//! across processes. The resilience pipeline's monotonic instants are converted once, at
//! the worker's edge, into the durations these functions take.

pub mod decide;
pub mod page_token;
pub mod state;
pub mod store;
pub mod watermark;

pub use decide::{Backoff, Decision, GiveUpReason, Outcome, RetryPolicy, decide, rescue};
pub use state::{Event, IllegalTransition, JobState, Transition, transition};
pub use watermark::ClaimWatermark;

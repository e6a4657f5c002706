//! The PostgreSQL queue: every query of requests, jobs and their events.
//!
//! The pure rules live beside this module ([`state`](crate::state),
//! [`decide`](mod@crate::decide)); this module performs them in SQL. Each change of a request's
//! status updates the request row, appends its event and changes (or deletes) its job row in
//! one statement or one transaction, so the three never disagree.
//!
//! Locks are always taken in one order, job row first, then request row, so claims,
//! completions, cancels and the rescuer cannot deadlock one another.

mod cancel;
mod claim;
mod complete;
mod get_batch;
mod groups;
mod maintain;
mod notify;
mod ordering;
mod read;
mod submit;
mod submit_batch;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use uuid::Uuid;

pub use cancel::CancelOutcome;
pub use claim::{ClaimFilter, ClaimedJob, HeartbeatReport};
pub use complete::{CompleteReport, Completion, CompletionAction, Finish, Reschedule};
pub use get_batch::{GET_BATCHES_IN_FLIGHT, GetBatcher, MAX_GET_BATCH};
pub use maintain::Rescued;
pub use notify::{EVENTS_CHANNEL, JOBS_CHANNEL, NOTIFY_SPACING, Notifier};
pub use read::{DeadLetter, ListFilter, Page, StateCount, Stats};
pub use submit::{NewRequest, SubmitOutcome};
pub use submit_batch::{MAX_SUBMIT_BATCH, SUBMIT_BATCHES_IN_FLIGHT, SubmitBatcher};

use crate::state::JobState;

/// How a request is executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Executed while the caller waits.
    Sync,
    /// Queued; a worker executes it.
    Async,
}

impl Mode {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "sync" => Ok(Mode::Sync),
            "async" => Ok(Mode::Async),
            other => Err(StoreError::Corrupt(format!("unknown mode `{other}`"))),
        }
    }
}

/// Parses a status stored by this module.
pub(crate) fn parse_state(text: &str) -> Result<JobState, StoreError> {
    JobState::ALL
        .into_iter()
        .find(|state| state.as_str() == text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown status `{text}`")))
}

/// A failure as recorded on a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Short machine-readable reason (`http_503`, `timeout`, `circuit_open`, …).
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// Whether the failure was retryable.
    pub retryable: bool,
}

/// A request as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    /// UUID v7.
    pub id: Uuid,
    /// The caller's token subject.
    pub owner: String,
    /// The kind (routes to an external service).
    pub kind: String,
    /// SYNC or ASYNC.
    pub mode: Mode,
    /// Current status.
    pub status: JobState,
    /// The payload, as PostgreSQL's JSONB text (keys in its canonical order).
    pub payload: String,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Executions started.
    pub attempts: u32,
    /// The result, once succeeded (JSON text).
    pub result: Option<String>,
    /// The last failure, if any.
    pub last_failure: Option<Failure>,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// Last status change.
    pub updated_at: DateTime<Utc>,
    /// The caller's deadline, if any.
    pub deadline: Option<DateTime<Utc>>,
    /// The sequence number of its last event.
    pub last_sequence: i32,
}

/// The columns [`RequestRecord`] is read from, for every query that returns requests (a
/// macro, so statements are `concat!`ed into `&'static str` at compile time).
macro_rules! request_columns {
    () => {
        "id, owner, kind, mode, status, payload::text AS payload, idempotency_key, attempts, \
         result::text AS result, failure_reason, failure_message, failure_retryable, \
         created_at, updated_at, deadline, last_sequence"
    };
}
pub(crate) use request_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct RequestRow {
    id: Uuid,
    owner: String,
    kind: String,
    mode: String,
    status: String,
    payload: String,
    idempotency_key: Option<String>,
    attempts: i32,
    result: Option<String>,
    failure_reason: Option<String>,
    failure_message: Option<String>,
    failure_retryable: Option<bool>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    last_sequence: i32,
}

impl TryFrom<RequestRow> for RequestRecord {
    type Error = StoreError;

    fn try_from(row: RequestRow) -> Result<Self, StoreError> {
        let last_failure = row.failure_reason.map(|reason| Failure {
            reason,
            message: row.failure_message.unwrap_or_default(),
            retryable: row.failure_retryable.unwrap_or(false),
        });
        Ok(Self {
            id: row.id,
            owner: row.owner,
            kind: row.kind,
            mode: Mode::parse(&row.mode)?,
            status: parse_state(&row.status)?,
            payload: row.payload,
            idempotency_key: row.idempotency_key,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            result: row.result,
            last_failure,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deadline: row.deadline,
            last_sequence: row.last_sequence,
        })
    }
}

/// One status transition of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// The request.
    pub request_id: Uuid,
    /// Position in the request's log, from 1.
    pub sequence: i32,
    /// Status before; `None` for the first event.
    pub from: Option<JobState>,
    /// Status after.
    pub to: JobState,
    /// The attempt it belongs to (0 before the first).
    pub attempt: u32,
    /// Why (a failure's reason and message), or empty.
    pub detail: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Who asks: an owner sees only their own requests; an admin sees all.
#[derive(Clone, Copy, Debug)]
pub enum Viewer<'a> {
    /// A caller, by token subject.
    Owner(&'a str),
    /// The `admin` role.
    Admin,
}

impl Viewer<'_> {
    /// The owner to filter on, or `None` for an admin.
    pub(crate) fn owner(&self) -> Option<&str> {
        match self {
            Viewer::Owner(owner) => Some(owner),
            Viewer::Admin => None,
        }
    }
}

/// A queue operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (unreachable, saturated, a statement error).
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored value this version cannot read (a newer version wrote it, or it was edited).
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
}

/// The queue: requests, jobs and events in PostgreSQL. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Queue {
    pool: PgPool,
}

impl Queue {
    /// A queue over `pool` (migrated with the stack's migrations).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A `std::time::Duration` as a PostgreSQL interval parameter, in whole microseconds.
pub(crate) fn micros(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

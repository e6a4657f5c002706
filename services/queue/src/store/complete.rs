//! Recording the outcomes of executions, many at once.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::ordering::{lock_keys, promote_next};
use super::{Failure, Queue, StoreError};

/// The outcome of one claimed execution, to record.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The request.
    pub request_id: Uuid,
    /// The claim it ran under ([`ClaimedJob::claim`](super::ClaimedJob::claim)); a claim no
    /// longer held is not recorded.
    pub claim: i32,
    /// The job's ordering key, if its route has one.
    pub ordering_key: Option<String>,
    /// What becomes of it.
    pub action: CompletionAction,
}

/// What becomes of a claimed job.
#[derive(Clone, Debug, PartialEq)]
pub enum CompletionAction {
    /// It is done: the job row goes.
    Finish(Finish),
    /// It runs again later: the job row stays.
    Reschedule(Reschedule),
}

/// A terminal outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum Finish {
    /// Succeeded with this result (JSON text).
    Succeeded(String),
    /// A SYNC request's execution failed.
    Failed(Failure),
    /// Given up: a dead letter.
    Dead(Failure),
}

/// A job that runs again.
#[derive(Clone, Debug, PartialEq)]
pub enum Reschedule {
    /// The execution failed; try again at `at` (the attempt stays spent).
    RetryAt {
        /// Not before.
        at: DateTime<Utc>,
        /// The execution's failure.
        failure: Failure,
    },
    /// The service was not called (breaker open, bulkhead full); run again at `at` and give
    /// the attempt back.
    PostponeUntil {
        /// Not before.
        at: DateTime<Utc>,
        /// Why (`circuit_open`, `bulkhead_full`), for the event log.
        reason: String,
    },
    /// The worker is shutting down before calling: queued again at once, attempt given back.
    Release,
    /// The execution's lease expired (its worker died or stalled): queued again at once,
    /// the attempt stays spent. The rescuer's outcome.
    LeaseExpired,
}

/// What [`Queue::complete`] recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompleteReport {
    /// Completions recorded (or, for a request cancelled meanwhile, discarded as asked).
    pub applied: Vec<Uuid>,
    /// Completions of claims no longer held (the lease expired and the job was rescued):
    /// nothing recorded.
    pub stale: Vec<Uuid>,
}

// One statement for the whole batch. `held` locks the jobs still under the named claims
// (joining only ids and claims: the locking join keeps a copy of each joined non-table row
// for rechecks, which with the results in it cost a tenth of the statement); `decided`
// adds the outcomes; terminal outcomes (and jobs whose request was cancelled meanwhile)
// delete the job row, the others move it back to waiting; the requests and their events
// follow.
//
// "Still running" is `lease_until IS NOT NULL` (the same by the table's CHECK), not
// `state = 'running'`: that matches the rescuer's partial index, and a planner whose
// statistics saw few running jobs then scans that whole index for the batch's ids instead of
// looking each up by key — which, while an old snapshot keeps every finished job's entry in
// it, walks them all (measured: most of a claim-and-complete cycle's time).
const COMPLETE: &str = "
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::text[],
                         $6::text[], $7::text[], $8::bool[])
        AS t(id, claim, outcome, run_at, result, reason, message, retryable)
), held AS (
    SELECT j.request_id, j.claims, j.attempts, r.status = 'cancelled' AS cancelled
    FROM unnest($1::uuid[], $2::int[]) AS k(id, claim)
    JOIN requests.jobs j ON j.request_id = k.id AND j.claims = k.claim AND j.lease_until IS NOT NULL
    JOIN requests.requests r ON r.id = k.id
    FOR UPDATE OF j
), decided AS (
    SELECT h.request_id, h.attempts, h.cancelled, i.outcome, i.run_at, i.result, i.reason,
           i.message, i.retryable
    FROM held h JOIN input i ON i.id = h.request_id AND i.claim = h.claims
), gone AS (
    DELETE FROM requests.jobs j USING decided h
    WHERE j.request_id = h.request_id
      AND (h.outcome IN ('succeeded', 'failed', 'dead') OR h.cancelled)
    RETURNING j.ordering_key
), moved AS (
    UPDATE requests.jobs j
    SET state = CASE WHEN h.outcome IN ('released', 'expired') THEN 'queued' ELSE 'scheduled' END,
        run_at = COALESCE(h.run_at, now()),
        attempts = CASE WHEN h.outcome IN ('postponed', 'released') THEN j.attempts - 1
                        ELSE j.attempts END,
        claimed_by = NULL, lease_until = NULL
    FROM decided h
    WHERE j.request_id = h.request_id AND NOT h.cancelled
      AND h.outcome IN ('scheduled', 'postponed', 'released', 'expired')
), req AS (
    UPDATE requests.requests r
    SET status = CASE h.outcome WHEN 'postponed' THEN 'scheduled' WHEN 'released' THEN 'queued'
                                WHEN 'expired' THEN 'queued' ELSE h.outcome END,
        attempts = CASE WHEN h.outcome IN ('postponed', 'released') THEN h.attempts - 1
                        ELSE h.attempts END,
        result = CASE WHEN h.outcome = 'succeeded' THEN h.result::jsonb ELSE r.result END,
        failure_reason = CASE WHEN h.outcome IN ('failed', 'dead', 'scheduled') THEN h.reason
                              ELSE r.failure_reason END,
        failure_message = CASE WHEN h.outcome IN ('failed', 'dead', 'scheduled') THEN h.message
                               ELSE r.failure_message END,
        failure_retryable = CASE WHEN h.outcome IN ('failed', 'dead', 'scheduled')
                                 THEN h.retryable ELSE r.failure_retryable END,
        finished_at = CASE WHEN h.outcome IN ('succeeded', 'failed', 'dead') THEN now() END,
        updated_at = now(),
        last_sequence = r.last_sequence + 1
    FROM decided h
    WHERE r.id = h.request_id AND NOT h.cancelled
    RETURNING r.id, r.last_sequence, r.status, h.attempts AS attempt, h.reason, h.message
), event AS (
    INSERT INTO requests.events (request_id, sequence, from_status, to_status, attempt, detail, at)
    SELECT id, last_sequence, 'running', status, attempt,
           CASE WHEN reason IS NULL THEN '' ELSE reason || ': ' || COALESCE(message, '') END,
           now()
    FROM req
)
SELECT (SELECT coalesce(array_agg(request_id), '{}') FROM held) AS applied,
       (SELECT coalesce(array_agg(DISTINCT ordering_key), '{}') FROM gone
        WHERE ordering_key IS NOT NULL) AS freed_keys";

/// The batch as column arrays, the shape `unnest` takes.
#[derive(Default)]
struct Columns {
    ids: Vec<Uuid>,
    claims: Vec<i32>,
    outcomes: Vec<&'static str>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    results: Vec<Option<String>>,
    reasons: Vec<Option<String>>,
    messages: Vec<Option<String>>,
    retryables: Vec<Option<bool>>,
}

impl Columns {
    fn push(&mut self, completion: &Completion) {
        let (outcome, run_at, result, failure, reason) = match &completion.action {
            CompletionAction::Finish(Finish::Succeeded(result)) => {
                ("succeeded", None, Some(result.clone()), None, None)
            }
            CompletionAction::Finish(Finish::Failed(failure)) => {
                ("failed", None, None, Some(failure), None)
            }
            CompletionAction::Finish(Finish::Dead(failure)) => {
                ("dead", None, None, Some(failure), None)
            }
            CompletionAction::Reschedule(Reschedule::RetryAt { at, failure }) => {
                ("scheduled", Some(*at), None, Some(failure), None)
            }
            CompletionAction::Reschedule(Reschedule::PostponeUntil { at, reason }) => {
                ("postponed", Some(*at), None, None, Some(reason.clone()))
            }
            CompletionAction::Reschedule(Reschedule::Release) => (
                "released",
                None,
                None,
                None,
                Some("released at shutdown".into()),
            ),
            CompletionAction::Reschedule(Reschedule::LeaseExpired) => {
                ("expired", None, None, None, Some("lease expired".into()))
            }
        };
        self.ids.push(completion.request_id);
        self.claims.push(completion.claim);
        self.outcomes.push(outcome);
        self.run_ats.push(run_at);
        self.results.push(result);
        self.reasons
            .push(failure.map(|f| f.reason.clone()).or(reason));
        self.messages.push(failure.map(|f| f.message.clone()));
        self.retryables.push(failure.map(|f| f.retryable));
    }
}

impl Queue {
    /// Records a batch of outcomes in one statement (one transaction with the ordering keys'
    /// locks when any job has one). A completion whose claim is no longer held is reported
    /// stale and changes nothing; one whose request was cancelled meanwhile removes the job
    /// and discards the outcome.
    pub async fn complete(&self, batch: &[Completion]) -> Result<CompleteReport, StoreError> {
        if batch.is_empty() {
            return Ok(CompleteReport::default());
        }
        let keys: Vec<&str> = batch
            .iter()
            .filter_map(|c| c.ordering_key.as_deref())
            .collect();
        if keys.is_empty() {
            let mut conn = self.pool.acquire().await?;
            return apply(&mut conn, batch).await;
        }
        let mut tx = appstack_db::begin(&self.pool).await?;
        lock_keys(&mut tx, &keys).await?;
        let report = apply(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(report)
    }
}

/// Records `batch` on `conn`; inside a transaction, the ordering keys of the batch must be
/// locked already ([`lock_keys`]), and the next job of every key whose head went is unblocked.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    batch: &[Completion],
) -> Result<CompleteReport, StoreError> {
    let mut columns = Columns::default();
    for completion in batch {
        columns.push(completion);
    }
    let (applied, freed): (Vec<Uuid>, Vec<String>) = sqlx::query_as(COMPLETE)
        .bind(&columns.ids)
        .bind(&columns.claims)
        .bind(&columns.outcomes)
        .bind(&columns.run_ats)
        .bind(&columns.results)
        .bind(&columns.reasons)
        .bind(&columns.messages)
        .bind(&columns.retryables)
        .fetch_one(&mut *conn)
        .await?;
    if !freed.is_empty() {
        let freed: Vec<&str> = freed.iter().map(String::as_str).collect();
        promote_next(conn, &freed).await?;
    }
    let applied_set: HashSet<Uuid> = applied.iter().copied().collect();
    let stale = columns
        .ids
        .iter()
        .filter(|id| !applied_set.contains(id))
        .copied()
        .collect();
    Ok(CompleteReport { applied, stale })
}
